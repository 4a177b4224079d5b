"""Task-suite generator: voices of each split respect the held-out lists; clips are generated reproducibly."""

from __future__ import annotations

import csv
import os
import shutil

import pytest
import soundfile as sf

from speechprompt.training import voices as V
from speechprompt.training.suite import SIZES, TASKS, _render, make_suite, plan_clip, variant_gender


def _variant(voice: str) -> str:
    return voice.split("+")[-1]


def _plans(name: str, split: str, n: int = 60):
    return [p for i in range(n) if (p := plan_clip(TASKS[name], split, i, seed=3)) is not None]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_split_voices_follow_the_held_out_lists(name):
    held_variants, held_mbrola = set(V.HELD_OUT_ESPEAK_VARIANTS), set(V.HELD_OUT_MBROLA)
    for split in ("train", "dev", "test_seen"):
        for p in _plans(name, split):
            assert p.engine != "flite"
            if p.engine == "espeak-ng":
                assert _variant(p.voice) not in held_variants
                if name != "accent-en":  # accents are that task's classes
                    assert p.voice.split("+")[0] not in V.HELD_OUT_ESPEAK_ACCENTS
            assert p.voice not in held_mbrola and p.voice not in V.HELD_OUT_FESTIVAL
    for p in _plans(name, "test"):
        assert p.engine in ("espeak-ng", "mbrola", "noise")
        if p.engine == "espeak-ng":
            assert _variant(p.voice) in held_variants
        if p.engine == "mbrola":
            assert p.voice in held_mbrola
    engine = _plans(name, "test_engine")
    assert all(p.engine in ("flite", "noise") for p in engine)
    assert bool(engine) == ((TASKS[name].lang == "en" and name != "accent-en") or name == "vad")


def test_plans_are_deterministic_and_balanced():
    a, b = _plans("intent", "train", 32), _plans("intent", "train", 32)
    assert a == b
    assert [p.label for p in a[:16]] == list(TASKS["intent"].labels)
    assert {p.text for p in _plans("question", "train", 40) if p.label == "question"} and all(
        p.text.endswith("?") == (p.label == "question") for p in _plans("question", "train", 40))


def test_gender_labels_match_the_voice():
    genders = variant_gender()
    for split in ("train", "test"):
        for p in _plans("gender", split):
            assert genders[_variant(p.voice)] == p.label
    assert {p.voice for p in _plans("gender", "test_engine") if p.label == "female"} == {"slt"}


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")), reason="needs espeak-ng and flite")
def test_generate_small_task(tmp_path):
    summary = make_suite(tmp_path, ["commands-en"], scale=0.05, seed=1, jobs=1)
    rows = list(csv.DictReader(open(tmp_path / "commands-en" / "manifest.csv")))
    counts = summary["tasks"]["commands-en"]["splits"]
    assert set(counts) == set(SIZES) and sum(counts.values()) == len(rows) == 12 * 5
    for r in rows:
        info = sf.info(tmp_path / "commands-en" / r["path"])
        assert info.samplerate == 16000 and info.channels == 1 and 0.3 < info.duration < 3.5
        assert (r["label"] == "_silence_") == (r["engine"] == "noise")
    for name in ("commands-en/manifest.csv", "suite.json"):  # written as new files: a hard-linked copy keeps its own
        os.link(tmp_path / name, tmp_path / (name.replace("/", "-") + ".copy"))
    inodes = {n: (tmp_path / n).stat().st_ino for n in ("commands-en/manifest.csv", "suite.json")}
    assert make_suite(tmp_path, ["commands-en"], scale=0.05, seed=1, jobs=1) == summary
    for name, inode in inodes.items():
        assert (tmp_path / name).stat().st_ino != inode
        assert (tmp_path / (name.replace("/", "-") + ".copy")).read_bytes() == (tmp_path / name).read_bytes()
    plan = plan_clip(TASKS["commands-en"], "train", 3, seed=1)  # re-render one clip: same bytes
    (rel,) = [rel for _, rel in _render(([plan], str(tmp_path / "again")))]
    assert (tmp_path / "again" / "commands-en" / rel).read_bytes() == \
        (tmp_path / "commands-en" / rel).read_bytes()


@pytest.mark.parametrize("name", ["rate", "emotion"])
def test_prosody_task_plans_follow_their_class_styles(name):
    from collections import Counter

    from speechprompt.training import suite_prosody as SP

    labels = TASKS[name].labels
    for split in SIZES:
        plans = _plans(name, split, 12 * len(labels))
        assert Counter(p.label for p in plans) == {lab: 12 for lab in labels}  # balanced in every split
        assert all(p.engine != "festival" for p in plans)  # its rendering path ignores rate and pitch
        if name == "emotion":
            assert all(p.voice in SP.FLITE_F0 for p in plans if p.engine == "flite")  # rms ignores F0 targets
        for p in plans:
            (r0, r1), (p0, p1), rng_pct, gain = SP.STYLES[name][p.label]
            assert r0 <= p.rate < r1 and p0 <= p.pitch < p1 and p.gain == gain
            assert (p.range_pct is None) if rng_pct is None else rng_pct[0] <= p.range_pct < rng_pct[1]
    plans = _plans(name, "train", 48 * len(labels))
    mean = {lab: {k: sum(getattr(p, k) or 0 for p in plans if p.label == lab) / 48 for k in ("rate", "pitch", "range_pct")}
            for lab in labels}
    if name == "rate":
        assert mean["slow"]["rate"] * 1.25 < mean["normal"]["rate"] < mean["fast"]["rate"] / 1.25
        assert max(m["pitch"] for m in mean.values()) - min(m["pitch"] for m in mean.values()) < 8  # no pitch cue
        assert len({p.text for p in plans}) > 0.9 * len(plans)  # random words: the text is no cue
    else:
        assert mean["sad"]["range_pct"] < mean["neutral"]["range_pct"] < mean["angry"]["range_pct"] < \
            mean["happy"]["range_pct"]
        assert mean["sad"]["pitch"] < mean["neutral"]["pitch"] < mean["happy"]["pitch"]
        assert mean["sad"]["rate"] < mean["neutral"]["rate"] < mean["angry"]["rate"]
        by_label = {lab: {p.text for p in plans if p.label == lab} for lab in labels}
        assert set.intersection(*by_label.values())  # the same sentences in every class


def test_pho_range_scaling_keeps_the_mean_log_f0():
    from speechprompt.training.suite_prosody import scale_pho_range

    pho = "; comment\n_ 50 0 100\nh 80 0 200 50 200\n@ 90 10 400\n_ 40\n"
    out = scale_pho_range(pho, 50).splitlines()
    assert out[0] == "; comment" and out[4] == "_ 40"
    assert out[1:4] == ["_ 50 0 141", "h 80 0 200 50 200", "@ 90 10 283"]  # log-mean 200 Hz, excursions halved


@pytest.mark.skipif(not all(shutil.which(t) for t in ("espeak-ng", "flite", "mbrola")), reason="needs TTS engines")
def test_rendered_prosody_differs_per_class_as_designed(tmp_path):
    """Same voice and text, the class's mid-range style: measured duration and YAAPT log-F0 spread (p90/p10)."""
    import dataclasses

    import numpy as np

    from speechprompt.prosody import ProsodyConfig, frame_f0
    from speechprompt.training import suite_prosody as SP

    def mid(name, label):
        (r0, r1), (p0, p1), rng_pct, _ = SP.STYLES[name][label]
        return (r0 + r1) // 2, (p0 + p1) // 2, None if rng_pct is None else sum(rng_pct) // 2

    text = "the train leaves at nine in the morning."
    for engine, voice in (("espeak-ng", "en-us+m3"), ("mbrola", "mb-us1"), ("flite", "kal")):
        base = plan_clip(TASKS["rate"], "train", 0, seed=3)
        secs, spread = {}, {}
        for name, labels in (("rate", ("slow", "normal", "fast")), ("emotion", ("sad", "happy"))):
            for lab in labels:
                rate, pitch, rng_pct = mid(name, lab)
                p = dataclasses.replace(base, task=name, label=lab, engine=engine, voice=voice, text=text, rate=rate,
                                        pitch=pitch, range_pct=rng_pct, snr_db=40.0)
                (_, rel), = _render(([p], str(tmp_path)))
                y, sr = sf.read(tmp_path / name / rel, dtype="float32")
                secs[lab] = len(y) / sr
                if name == "emotion":
                    f = frame_f0(y, ProsodyConfig())
                    spread[lab] = float(np.log(np.percentile(f[f > 0], 90) / np.percentile(f[f > 0], 10)))
        assert secs["slow"] > 1.2 * secs["normal"] > 1.44 * secs["fast"], (engine, secs)
        assert spread["happy"] > 2 * spread["sad"], (engine, spread)


def test_no_clip_reads_the_alsa_test_set(monkeypatch):
    """/usr/share/sounds/alsa is a test set (never trained on; docs/results.md): no suite noise, background or noise-class clip may read it.
    Every noise kind is rendered, a noise-only clip and a speech clip with background noise, with file reads watched."""
    import builtins

    import numpy as np

    from speechprompt.training import suite

    opened: list[str] = []
    real_open, real_read = builtins.open, sf.read
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    monkeypatch.setattr(sf, "read", lambda f, *a, **k: (opened.append(str(f)), real_read(f, *a, **k))[1])
    assert "alsa" not in suite.NOISE_KINDS
    for kind in suite.NOISE_KINDS:
        x = suite._noise(np.random.default_rng(0), kind, 16000)
        assert x.shape == (16000,) and 0.99 < float(np.max(np.abs(x))) <= 1.0
    noise_plans = [p for i in range(200) if (p := plan_clip(TASKS["commands-en"], "train", i, 0)) and p.engine == "noise"]
    assert {p.voice for p in noise_plans} == set(suite.NOISE_KINDS)  # every kind is drawn as a noise-class clip
    for p in noise_plans[:10]:
        assert suite._finish(p, None).ndim == 1
    assert not [f for f in opened if "sounds/alsa" in f]

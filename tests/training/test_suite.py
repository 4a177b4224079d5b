"""Task-suite generator: voices of each split respect the held-out lists; clips are generated reproducibly."""

from __future__ import annotations

import csv
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
    plan = plan_clip(TASKS["commands-en"], "train", 3, seed=1)  # re-render one clip: same bytes
    (rel,) = [rel for _, rel in _render(([plan], str(tmp_path / "again")))]
    assert (tmp_path / "again" / "commands-en" / rel).read_bytes() == \
        (tmp_path / "commands-en" / rel).read_bytes()

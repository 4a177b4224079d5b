"""Real-speech task building (speechprompt/training/real_tasks.py) and generated non-speech (nonspeech.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from speechprompt.training import nonspeech, real_tasks


def _row(path, speaker, language="", word="", kind="speech", source="asterisk-core-sounds-xx", gender=""):
    return {"path": path, "speaker": speaker, "language": language, "word": word, "kind": kind, "source": source,
            "gender": gender, "duration": 1.0}


def test_digits_task_keeps_speakers_apart_and_takes_only_single_digit_asterisk_prompts():
    rows = []
    for spk, lang in (("ast-es", "es"), ("ast-fr", "fr"), ("ast-it", "it"), ("ast-ru", "ru")):
        for w in ("0", "3", "9", "10", "20", "a"):
            rows.append(_row(f"{spk}/digits/{w}.wav", spk, lang, w))
    rows.append(_row("hw/one.wav", "hw-en", "en", "1", source="hedgewars-data"))  # not asterisk, not a listed language
    split = {"ast-es": "test", "ast-fr": "test", "ast-it": "train", "ast-ru": "train", "hw-en": "train"}
    digits = real_tasks.make_tasks(rows, split, "/c")["digits"]
    assert sorted({e.label for e in digits}) == ["0", "3", "9"]  # 10, 20 and letters are not digits
    assert {e.path.split("/")[2] for e in digits if e.split == "test"} == {"ast-es", "ast-fr"}
    assert {e.path.split("/")[2] for e in digits if e.split != "test"} == {"ast-it", "ast-ru"}
    assert len(digits) == 12 and not any("hw" in e.path for e in digits)
    assert set(real_tasks.DIGIT_WORDS) == {"es", "fr", "it", "ru"}
    assert all(len(words) == 10 for words in real_tasks.DIGIT_WORDS.values())


def test_vad_leaves_out_voiced_non_words_but_keeps_words_and_noise():
    rows = [_row("a/hello.wav", "a", "en", "hello"), _row("a/ooff.wav", "a", "en", "ooff"),
            _row("a/laugh.wav", "a", "en", "laugh"), _row("b/poisoncough.wav", "b", "en", "poisoncough"),
            _row("b/incoming.wav", "b", "en", "incoming"),
            _row("sfx/bang.wav", "", kind="nonspeech", source="game")]
    vad = real_tasks.make_tasks(rows, {"a": "train", "b": "test"}, "/c")["vad"]
    assert sorted(e.path.rsplit("/", 1)[1] for e in vad) == ["bang.wav", "hello.wav", "incoming.wav"]
    assert {e.label for e in vad} == {"speech", "noise"}
    assert "ooff" in real_tasks.VOCALISATIONS and "hello" not in real_tasks.VOCALISATIONS


@pytest.mark.parametrize("key", range(len(nonspeech.KINDS)))
def test_generated_nonspeech_is_deterministic_bounded_and_of_its_kind(key):
    kind, x = nonspeech.generate(3, key)
    kind2, y = nonspeech.generate(3, key)
    assert kind == kind2 == nonspeech.KINDS[key] and np.array_equal(x, y)
    assert x.dtype == np.float32 and 0.5 * 16000 <= len(x) <= 5.0 * 16000
    assert np.all(np.isfinite(x)) and 0.09 < np.max(np.abs(x)) < 0.91
    _, other = nonspeech.generate(4, key)
    assert len(other) != len(x) or not np.array_equal(other, x)


@pytest.mark.parametrize("seed", range(6))
def test_generated_tone_has_its_energy_near_one_frequency(seed):
    kind, x = nonspeech.generate(seed, nonspeech.KINDS.index("tone"))
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    f = freqs[int(power.argmax())]
    near = power[np.abs(freqs - f) <= 0.03 * f + 5].sum()  # vibrato (<= 2 %) and the fades spread the line
    assert kind == "tone" and 100 * 0.97 <= f <= 4000 * 1.03 and near / power.sum() > 0.9


def test_real_speech_eval_never_carries_cells_over_from_another_backbone():
    """A rebuilt default (new fingerprint) recomputes every cell of its column: before this, the prompts of the
    previous backbone were kept under the new fingerprint (and its package installed as the demo)."""
    from types import SimpleNamespace

    from tests.scripts import load_script

    script = load_script("real_speech_eval")
    reusable, made_by = script.reusable, script.made_by
    v7 = SimpleNamespace(fingerprint="aaa", units_key="aaa")
    cells = {"fingerprint": "aaa", "v2": {"test": {"accuracy": 0.4}}, "logreg_hist": {}}
    assert reusable(cells, v7) is cells
    other = SimpleNamespace(fingerprint="bbb", units_key="bbb")
    assert reusable(cells, other) == {} and reusable({}, other) == {}
    # v7's weights with a level floor: the same fingerprint, other units, so v7's cells are not its cells
    floored = SimpleNamespace(fingerprint="aaa", units_key="ccc")
    assert reusable(cells, floored) == {} and made_by(floored) == {"fingerprint": "aaa", "units_key": "ccc"}
    assert reusable(cells | made_by(floored), floored)["v2"] == cells["v2"] and made_by(v7) == {"fingerprint": "aaa"}


def test_speech_embedding_column_comes_from_a_speech_embedding_bundle(monkeypatch):
    """A new backbone on another dense model (Whisper) does not give the speech_embedding column: --se-backbone does."""
    from types import SimpleNamespace

    from tests.scripts import load_script

    ev = load_script("real_speech_eval")
    loaded = []
    monkeypatch.setattr(ev.Backbone, "load", staticmethod(lambda path: loaded.append(path) or "fallback"))
    se = SimpleNamespace(spec=SimpleNamespace(encoder=SimpleNamespace(type="speech_embedding")))
    whisper = SimpleNamespace(spec=SimpleNamespace(encoder=SimpleNamespace(type="whisper")))
    hubert = SimpleNamespace(spec=SimpleNamespace(encoder=SimpleNamespace()))  # HubertConfig has no type field
    assert ev.speech_embedding_bundle(se, Path("x")) is se and loaded == []
    assert [ev.speech_embedding_bundle(b, Path("x")) for b in (whisper, hubert, None)] == ["fallback"] * 3
    assert loaded == [Path("x")] * 3


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="needs espeak-ng")
def test_gender_tts_gives_both_genders_in_every_language_and_lower_voices_for_male(tmp_path):
    """The gender task's TTS rows: each language of GENDER_TTS_LANGS has voices of both genders (the variant's voice
    file says which), a rerun reuses the clips, and the male voices' median F0 (YIN) is below the female voices'."""
    import soundfile as sf
    import torch

    from speechprompt.pitch import PitchConfig, frame_segments, yin
    from speechprompt.training.real_augment import GENDER_TTS_LANGS, gender_tts

    rows = gender_tts(tmp_path, voices=2, seed=0, phrases=1)
    assert len(rows) == 2 * len(GENDER_TTS_LANGS)
    f0: dict[str, list[float]] = {"female": [], "male": []}
    for path, gender, split in rows:
        lang, g = path.split("/")[-1].split("-")[1:3]
        assert g == gender and lang in GENDER_TTS_LANGS and split == "train"
        y, sr = sf.read(path, dtype="float32")
        assert sr == 16000 and len(y) > 8000
        cfg = PitchConfig()
        hz, voiced = yin(frame_segments(torch.from_numpy(y), len(y) // cfg.hop, cfg), cfg)
        f0[gender].append(float(hz[voiced].median()))
    assert {(p.split("/")[-1].split("-")[1], g) for p, g, _ in rows} == {
        (lang, g) for lang in GENDER_TTS_LANGS for g in ("female", "male")}
    assert np.median(f0["male"]) * 1.3 < np.median(f0["female"]), f0
    before = {p: (tmp_path / p).stat().st_mtime_ns for p, _, _ in rows}
    assert gender_tts(tmp_path, voices=2, seed=0, phrases=1) == rows  # same rows, clips reused
    assert before == {p: (tmp_path / p).stat().st_mtime_ns for p, _, _ in rows}


def test_speech_embedding_baseline_leaves_a_pitch_stream_out(tmp_path):
    """The ``speech_embedding + LR`` column reads the dense model's own 96 dimensions only: a bundle with a pitch
    stream (98-d features) gives the same column as one without. Here the label sits only in the two pitch
    dimensions, so the baseline must be at chance while a regression on all 98 would be perfect."""
    from types import SimpleNamespace

    import soundfile as sf
    import torch

    from tests.scripts import load_script

    ev = load_script("real_speech_eval")
    rng = np.random.default_rng(0)
    rows = ["path,label,split"]
    for i in range(80):
        path = tmp_path / f"{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(8000)).astype("float32"), 16000)
        rows.append(f"{path},{'ab'[i % 2]},{'train' if i < 60 else 'test'}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    labels = {str(tmp_path / f"{i}.wav"): i % 2 for i in range(80)}

    class Encoder:  # 96 noise dimensions + 2 "pitch" dimensions that carry the label
        convs = [SimpleNamespace(out_channels=96)]

        def extract(self, wavs):
            out = []
            for w in wavs:
                key = next(p for p, lab in labels.items() if np.array_equal(sf.read(p, dtype="float32")[0], w.numpy()))
                f = torch.from_numpy(rng.standard_normal((5, 98)).astype("float32"))
                f[:, 96:] = 10.0 * labels[key]
                out.append(f)
            return out

    res = ev.free_baselines(tmp_path, ["a", "b"], SimpleNamespace(encoder=Encoder()))
    assert res["logreg_speech_embedding"]["test"]["accuracy"] < 0.8  # chance is 0.5; with the pitch dims it is 1.0
    assert res["logreg_mfcc"]["test"]["n"] == 20


def test_real_eval_tasks_and_twins_do_not_depend_on_where_corpus_and_work_folder_lie(tmp_path):
    """The same corpus copied to two folders and evaluated with two ``--work`` folders gives the same labels and
    train / dev / test split row for row, and byte-identical channel twins. Before, the dev share of the pieces of
    long clips was drawn from their absolute paths under ``--work`` and each twin's effects from the clip's absolute
    path, so a clone in another folder trained on a different split."""
    import shutil

    import soundfile as sf

    from speechprompt.training.real_augment import augment_train
    from tests.scripts import load_script

    ev = load_script("real_speech_eval")
    rng = np.random.default_rng(3)
    rows = []
    src = tmp_path / "a" / "corpus"
    for spk in ("s1", "s2", "s3", "s4"):
        for i in range(12):
            rel = f"wav/{spk}/{i}.wav"
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(src / rel, (0.1 * rng.standard_normal(8000)).astype("float32"), 16000)
            rows.append(_row(rel, spk, "en" if spk in ("s1", "s2") else "cs", str(i % 3),
                             gender="female" if spk in ("s1", "s3") else "male"))
    for g in ("music", "bells", "drums", "wind"):  # long non-speech clips: cut into 5 s pieces under the work folder
        rel = f"wav/sfx/{g}.wav"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(src / rel, (0.05 * rng.standard_normal(16000 * 60)).astype("float32"), 16000)
        rows.append(dict(_row(rel, "", kind="nonspeech", source=f"pkg-{g}"), duration=60.0))
    shutil.copytree(src, tmp_path / "b" / "elsewhere" / "corpus")

    seen = []
    for cache, work in ((src, tmp_path / "a" / "work"), (tmp_path / "b" / "elsewhere" / "corpus", tmp_path / "w2")):
        ev.write_tasks(rows, cache, work / "tasks", 0.5, 0)
        gender = work / "tasks" / "gender"
        for f in ("manifest.csv", "test_speakers.json"):  # as a work folder copied with cp -al shares them
            os.link(gender / f, work / f"linked-{f}")
        ev.write_tasks(rows, cache, work / "tasks", 0.5, 0)  # a rewrite gives each path a file of its own
        for f in ("manifest.csv", "test_speakers.json"):
            assert (gender / f).stat().st_nlink == 1 and (gender / f).read_bytes() == (work / f"linked-{f}").read_bytes()
        vad = work / "tasks" / "vad"
        # beside each manifest: the speaker (or non-speech file group) of every test clip, in manifest order
        gender_test = ev.test_speakers(work / "tasks" / "gender")
        assert len(gender_test) == 24 and len(set(gender_test)) == 2 and set(gender_test) <= {"s1", "s2", "s3", "s4"}
        vad_test = ev.test_speakers(vad)
        assert "?" not in vad_test and any(g.startswith("pkg-") for g in vad_test)
        assert {g for g in vad_test if g.startswith("pkg-")} <= {f"pkg-{g}:{g}" for g in ("music", "bells", "drums", "wind")}
        segments = [e for e in ev.M.read_manifest(vad / "manifest.csv") if "segments" in e.path]
        assert len(segments) == 48 and {e.split for e in segments} >= {"train", "test"}
        os.link(vad / "manifest.csv", work / "linked.csv")  # as a work folder copied with cp -al shares it
        before = (vad / "manifest.csv").read_bytes()
        added = augment_train(vad, work / "aug", twins=1, tts_voices=0, seed=0, cuts=1, mixes=3, dev_mixes=2,
                              noise_mixes=7, noise_variants=2, pads=1)
        assert added["twins"] > 0
        after = (vad / "manifest.csv").read_bytes()  # the rows added after the old bytes, in a file of its own
        assert (work / "linked.csv").read_bytes() == before and after.startswith(before) and len(after) > len(before)
        ex = ev.M.read_manifest(vad / "manifest.csv")
        # --noise-variants 2: two faster / slower / reversed copies of each train sound (the 5 s pieces), each as
        # long as its source at a speed of 0.7-1.45 and at its source's peak; speech clips get none
        sounds = [e for e in ex if e.split == "train" and e.label == "noise" and "segments" in e.path]
        varied = [e for e in ex if e.path.rsplit("/", 1)[-1].startswith("vary")]
        assert len(varied) == added["noise_variants"] == 2 * len(sounds) > 0
        assert {(e.label, e.split) for e in varied} == {("noise", "train")}
        assert all(80000 / 1.45 - 2 <= len(sf.read(e.path)[0]) <= 80000 / 0.7 + 2 for e in varied)
        # --cuts: one 1-2.6 s window of each train clip long enough (here the 5 s non-speech pieces; 0.5 s speech
        # clips are too short), labelled as its clip
        cut = [e for e in ex if e.path.rsplit("/", 1)[-1].startswith("cut0-")]
        assert len(cut) == added["cuts"] > 0 and {(e.label, e.split) for e in cut} == {("noise", "train")}
        assert all(16000 <= len(sf.read(e.path)[0]) <= 41600 for e in cut)
        # --mixes: a 0.5 s train speech clip + up to 0.3 s pause + a window of at most 2.5 s of a train noise piece
        mixed = [e for e in ex if e.path.rsplit("/", 1)[-1].startswith("mix-")]  # --mixes 3 --dev-mixes 2
        assert sorted((e.label, e.split) for e in mixed) == [("speech", "dev")] * 2 + [("speech", "train")] * 3
        # --noise-mixes 7: two train sounds each (with --dev-mixes, 7 // 8 = 0 more of dev sounds into dev; this
        # fixture's dev split has too few sounds for one: test_mixes.py draws dev joins)
        joined = [e for e in ex if e.path.rsplit("/", 1)[-1].startswith("nmix-")]
        assert sorted((e.label, e.split) for e in joined) == [("noise", "train")] * 7
        assert len(mixed) + len(joined) == added["mixes"] == 12
        # --pads 1: every train clip once more with 0.2-2 s of room tone on each side, its samples intact inside
        train = [e for e in ex if e.split == "train" and "/aug/" not in e.path]
        padded = [e for e in ex if e.path.rsplit("/", 1)[-1].startswith("pad0-")]
        assert len(padded) == added["pads"] == len(train) and {e.split for e in padded} == {"train"}
        assert sorted(e.label for e in padded) == sorted(e.label for e in train)
        src, _ = sf.read(train[0].path, dtype="float32")
        got = next(sf.read(e.path, dtype="float32")[0] for e in padded
                   if e.path.endswith(hashlib.sha256(Path(train[0].path).read_bytes()).hexdigest()[:16] + ".wav"))
        assert 2 * 3200 <= len(got) - len(src) <= 2 * 32000
        starts = np.flatnonzero((np.lib.stride_tricks.sliding_window_view(got, 32) == src[:32]).all(1))
        assert any(3200 <= i <= 32000 and np.array_equal(got[i:i + len(src)], src) for i in starts)
        assert all(8000 + 40000 <= len(sf.read(e.path)[0]) <= 8000 + 4800 + 40000 for e in mixed)
        seen.append([(e.label, e.split, sf.read(e.path, dtype="float32")[0].tobytes()) for e in ex])
    assert len(seen[0]) == len(seen[1]) and seen[0] == seen[1]
    assert sum(s == "dev" for _, s, _ in seen[0]) > 0


def test_speaker_of_names_the_speaker_or_the_non_speech_group():
    """Per-speaker scores group clips by the corpus's speaker id; non-speech without one by the file group it is
    split by; speech without one is ``?``."""
    assert real_tasks.speaker_of(_row("ast/es/digits/3.wav", "es_MX_f_Allison")) == "es_MX_f_Allison"
    sound = _row("hedgewars/Sounds/explosion2.ogg", "", kind="nonspeech", source="hedgewars-data")
    segment = _row("/seg/freesound/music_7/03.wav", "", kind="nonspeech", source="music")
    assert real_tasks.speaker_of(sound) == "hedgewars-data:explosion"  # the group of split_of: digits dropped
    assert real_tasks.speaker_of(segment) == "music:music"  # a 5 s piece of a long clip: its file's group
    assert real_tasks.speaker_of(dict(sound, speaker="hedgewars-sfx")) == "hedgewars-sfx"  # the corpus's sound group
    assert real_tasks.speaker_of(_row("x/1.wav", "")) == "?"  # speech without a speaker id


def test_real_speech_eval_scores_each_test_speaker_from_the_saved_package(tmp_path, backbone):
    """``test_speakers.json`` (written beside the manifest) names each test clip's speaker in manifest order, and
    ``by_speaker`` counts the saved package's right answers per speaker: they add up to its test accuracy."""
    import json

    from speechprompt.training.evaluate import predict
    from speechprompt.training.trainer import Recipe, train_prompts
    from tests.scripts import load_script

    from .conftest import toy_units

    ev = load_script("real_speech_eval")
    rows = ["path,label,split"] + [f"/c/{i}.wav,{'abc'[i % 3]},{'train' if i < 4 else 'test'}" for i in range(16)]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    voice = {i: "june" if i % 3 else "allison" for i in range(4, 16)}  # 8 and 4 clips: uneven on purpose
    who = {f"/c/{i}.wav": voice[i] for i in reversed(range(4, 16))}  # the file's order is not the manifest's
    (tmp_path / "test_speakers.json").write_text(json.dumps(who))
    speakers = ev.test_speakers(tmp_path)
    assert speakers == [voice[i] for i in range(4, 16)]
    train, dev = toy_units(24, 1), toy_units(9, 2)
    units, ys = toy_units(12, 3)
    labels = ["a", "b", "c"]
    res = train_prompts(backbone.unit_lm, "toy", labels, train, dev, fingerprint=backbone.fingerprint,
                        recipe=Recipe(max_epochs=2, batch_size=8))
    (tmp_path / "toy.v2.safetensors").write_bytes(res.package.data)
    cell: dict = {"version": res.package.version}
    test = {"units": units, "labels": [labels[y] for y in ys]}
    ev.by_speaker(cell, backbone, tmp_path / "toy.v2.safetensors", test, speakers)
    right = predict(backbone.unit_lm, res.package, units).argmax(1) == np.array(ys)
    june = np.array([s == "june" for s in speakers])
    got = cell["test_by_speaker"]
    assert set(got) == {"allison", "june"} and (got["june"]["n"], got["allison"]["n"]) == (8, 4)
    assert got["june"]["correct"] == int(right[june].sum()) and got["allison"]["correct"] == int(right[~june].sum())
    ev.by_speaker(cell, backbone, tmp_path / "missing.safetensors", test, speakers)  # kept, not recomputed
    assert cell["test_by_speaker"] is got
    # no package file, or a file another run rewrote (not the cell's version): recorded as None, not guessed
    for package, version in ((tmp_path / "missing.safetensors", res.package.version),
                             (tmp_path / "toy.v2.safetensors", "0123456789abcdef")):
        other = {"version": version}
        ev.by_speaker(other, backbone, package, test, speakers)
        assert other == {"version": version, "test_by_speaker": None}
    (tmp_path / "test_speakers.json").unlink()  # a task folder written before the file existed
    assert ev.test_speakers(tmp_path) == ["?"] * 12


def test_real_speech_eval_backfills_per_speaker_scores_without_retraining(tmp_path, bundle_dir, monkeypatch, capsys):
    """A whole run on a tiny corpus (gender, 4 speakers, the tiny random bundle): the v2 cell gets ``test_by_speaker``
    summing to its test accuracy; a results.json from before the field existed is backfilled from the saved package
    (not retrained: same version, same file); a third run finds nothing missing and encodes nothing."""
    import json
    import sys

    import soundfile as sf

    from tests.scripts import load_script

    ev = load_script("real_speech_eval")
    rng = np.random.default_rng(5)
    cache, work = tmp_path / "corpus", tmp_path / "work"
    rows = []
    for spk, gender in (("s1", "female"), ("s2", "male"), ("s3", "female"), ("s4", "male")):
        for i in range(12):
            rel = f"wav/{spk}/{i}.wav"
            (cache / rel).parent.mkdir(parents=True, exist_ok=True)
            pitch = 220.0 if gender == "female" else 110.0
            t = np.arange(8000) / 16000
            sf.write(cache / rel, (0.2 * np.sin(2 * np.pi * pitch * t) + 0.01 * rng.standard_normal(8000))
                     .astype("float32"), 16000)
            # one language per gender: the split, stratified by language, puts one voice of each gender on each side
            rows.append(_row(rel, spk, "en" if gender == "female" else "cs", gender=gender))
    (cache / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = Path(__file__).resolve().parents[2]
    argv = ["real_speech_eval.py", "--real-cache", str(cache), "--backbone", str(bundle_dir), "--work", str(work),
            "--results", "none", "--tasks", "gender", "--variants", "v2", "--max-epochs", "1", "--twins", "0",
            "--tts-voices", "0", "--columns", "new", "--threads", "1", "--test-fraction", "0.5",
            "--se-backbone", str(root / "models" / "default")]
    monkeypatch.setattr(sys, "argv", argv)
    ev.main()
    res_file = work / "results.json"
    cell = json.loads(res_file.read_text())["gender"]["new"]["v2"]
    by = cell["test_by_speaker"]
    assert len(by) == 2 and set(by) <= {"s1", "s2", "s3", "s4"}
    assert sum(g["correct"] for g in by.values()) == round(cell["test"]["accuracy"] * cell["test"]["n"])
    package = work / "new" / "packages" / "gender.v2.safetensors"
    before = package.stat().st_mtime_ns
    old = json.loads(res_file.read_text())  # as a run before the field existed wrote it
    del old["gender"]["new"]["v2"]["test_by_speaker"]
    res_file.write_text(json.dumps(old))
    capsys.readouterr()
    ev.main()
    again = json.loads(res_file.read_text())["gender"]["new"]["v2"]
    assert again["test_by_speaker"] == by and again["version"] == cell["version"]
    assert again["seconds"] == cell["seconds"] and package.stat().st_mtime_ns == before  # not retrained
    assert "by test speaker" in capsys.readouterr().out
    ev.main()
    assert "gender [new]: encoded" not in capsys.readouterr().out  # nothing left to do for the column

"""Mixed-clip augmentation for vad (speechprompt/training/mixes.py): order, pause, noise window, levels, errors."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechprompt.training import manifest as M
from speechprompt.training import mixes

SR = 16000


def test_mix_joins_speech_and_noise_in_a_drawn_order_with_a_silent_pause():
    speech = np.full(SR, 0.5, np.float32)  # constant values tell the parts apart
    noise = np.full(SR // 2, -0.25, np.float32)
    orders = set()
    for key in range(30):
        y, speech_first = mixes.mix(speech, noise, key)
        assert np.array_equal(y, mixes.mix(speech, noise, key)[0])  # the key fixes the clip
        gap = len(y) - len(speech) - len(noise)
        assert 0 <= gap <= int(0.3 * SR)
        first, last = (speech, noise) if speech_first else (noise, speech)
        assert np.array_equal(y[:len(first)], first) and np.array_equal(y[len(y) - len(last):], last)
        assert not y[len(first):len(first) + gap].any()  # digital silence between
        orders.add(speech_first)
    assert orders == {True, False}


def test_mix_keeps_a_window_of_a_long_noise_and_clips_to_full_scale():
    speech = np.full(SR // 2, 1.5, np.float32)  # above full scale: clipped
    noise = np.arange(10 * SR, dtype=np.float32) / (10 * SR)  # a ramp: a window is contiguous
    y, speech_first = mixes.mix(speech, noise, key=5, max_noise_s=2.0)
    part = y[len(y) - 2 * SR:] if speech_first else y[:2 * SR]
    assert len(y) <= SR // 2 + int(0.3 * SR) + 2 * SR
    assert np.allclose(np.diff(part), 1 / (10 * SR), atol=1e-7)  # 2 s of the ramp, in order
    assert y.max() == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        mixes.mix(speech, np.zeros(0, np.float32), key=1)
    with pytest.raises(ValueError, match="max_noise_s"):
        mixes.mix(speech, noise, key=1, max_noise_s=1e-5)  # under one sample: the noise would vanish
    with pytest.raises(ValueError, match="max_gap_s"):
        mixes.mix(speech, noise, key=1, max_gap_s=-0.1)
    with pytest.raises(ValueError, match="key"):
        mixes.mix(speech, noise, key=-3)


def test_write_mixes_joins_clips_of_its_own_split_only_and_names_files_by_content(tmp_path):
    # every source clip is a constant level, so a mixed clip's samples tell which clips it was made of
    clips = []
    for split, base in (("train", 0.1), ("dev", 0.5)):
        for i, label in enumerate(["speech", "speech", "noise", "noise"]):
            path = tmp_path / f"{split}-{i}.wav"
            sf.write(path, np.full(SR // 2, base + 0.05 * i, np.float32), SR)
            clips.append(M.Example(str(path), label, split))
    levels = {split: {round(base + 0.05 * i, 2) for i in range(4)} for split, base in (("train", 0.1), ("dev", 0.5))}
    for split in ("train", "dev"):
        rows = mixes.write_mixes([e for e in clips if e.split == split], tmp_path / split, 6, seed=3, split=split)
        assert len(rows) == 6 and {(lab, s) for _, lab, s in rows} == {("speech", split)}
        for path, _, _ in rows:
            y = sf.read(path, dtype="float32")[0]
            assert {round(float(v), 2) for v in np.unique(y[y != 0])} <= levels[split]  # nothing of the other split
        again = mixes.write_mixes([e for e in clips if e.split == split], tmp_path / split, 6, seed=3, split=split)
        assert again == rows  # the same draw, the files reused
    train_names = {p.name for p in (tmp_path / "train").iterdir()}
    assert not train_names & {p.name for p in (tmp_path / "dev").iterdir()}
    with pytest.raises(ValueError, match="speech and noise"):
        mixes.write_mixes([e for e in clips if e.label == "speech"], tmp_path / "x", 1, seed=0)


def test_noise_mixes_join_two_different_sounds_cut_to_size_and_label_them_noise(tmp_path):
    clips = []
    for i in range(3):  # 4 s each, a constant level per clip: a join of one clip with itself would show one level
        path = tmp_path / f"noise-{i}.wav"
        sf.write(path, np.full(4 * SR, 0.1 * (i + 1), np.float32), SR)
        clips.append(M.Example(str(path), "noise", "train"))
    speech = tmp_path / "speech.wav"
    sf.write(speech, np.full(SR, 0.9, np.float32), SR)
    clips.append(M.Example(str(speech), "speech", "train"))
    rows = mixes.write_mixes(clips, tmp_path / "out", 8, seed=1, label="noise")
    assert len(rows) == 8 and {(lab, s) for _, lab, s in rows} == {("noise", "train")}
    for path, _, _ in rows:
        assert Path(path).name.startswith("nmix-")
        y = sf.read(path, dtype="float32")[0]
        levels = {round(float(v), 2) for v in np.unique(y[y != 0])}
        assert len(levels) == 2 and levels <= {0.1, 0.2, 0.3}  # two different sounds, never the speech clip
        assert 2 * 40000 <= len(y) <= 2 * 40000 + int(0.3 * SR)  # both parts cut to 2.5 s, a pause of <= 0.3 s
    speech_rows = mixes.write_mixes(clips, tmp_path / "out", 8, seed=1)  # the speech joins draw apart
    assert not {p for p, _, _ in rows} & {p for p, _, _ in speech_rows}
    with pytest.raises(ValueError, match="two noise clips"):
        mixes.write_mixes(clips[2:], tmp_path / "x", 1, seed=0, label="noise")
    with pytest.raises(ValueError, match="label"):
        mixes.write_mixes(clips, tmp_path / "x", 1, seed=0, label="music")


def test_vad_cuts_test_sets_join_held_out_clips_only_with_the_right_labels(tmp_path):
    from tests.scripts import load_script

    vad_cuts = load_script("vad_cuts")
    rows = []  # constant levels: train clips above 0.6, test clips below, so a join shows where its parts came from
    for split, base in (("train", 0.65), ("test", 0.1)):
        for i, label in enumerate(["speech"] * 8 + ["noise"] * 3):
            path = tmp_path / f"{split}-{i}.wav"
            sf.write(path, np.full(SR // 2, round(base + 0.03 * i, 2), np.float32), SR)
            rows.append(f"{path},{label},{split}\n")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,split\n" + "".join(rows))
    test_levels = {round(0.1 + 0.03 * i, 2) for i in range(11)}
    mixed = vad_cuts.make_mixed(manifest, tmp_path / "out")
    joined = vad_cuts.make_joined(manifest, tmp_path / "out")
    sizes = {}
    for name, path in {**mixed, **joined}.items():
        ex = M.read_manifest(path)
        sizes[name] = len(ex)
        for e in ex:
            y = sf.read(e.path, dtype="float32")[0]
            assert {round(float(v), 2) for v in np.unique(y[y != 0])} <= test_levels  # held-out clips only
            assert e.label == ("noise" if name == "joined sounds" else "speech") and e.split == "test"
    assert sizes["mixed, speech first"] + sizes["mixed, noise first"] == 8 and sizes["joined sounds"] == 3
    copy = tmp_path / "copy.csv"  # a hard-linked copy (cp -al) keeps its bytes when the manifest is written again
    os.link(joined["joined sounds"], copy)
    copy_inode = copy.stat().st_ino
    assert vad_cuts.make_joined(manifest, tmp_path / "out") == joined
    assert joined["joined sounds"].stat().st_ino != copy_inode and copy.read_bytes() == joined["joined sounds"].read_bytes()

"""Manifest / folder reading, deterministic splits, and the on-disk units cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from speechprompt.training import manifest as M


def test_csv_tsv_jsonl_and_relative_paths(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,label,split\na.wav,yes,train\n/abs/b.wav,no,\n")
    (tmp_path / "m.tsv").write_text("label\tpath\nyes\ta.wav\n")
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "a.wav", "label": "yes", "split": "dev"}) + "\n\n")
    csv_rows = M.read_manifest(tmp_path / "m.csv")
    assert csv_rows == [M.Example(str(tmp_path / "a.wav"), "yes", "train"), M.Example("/abs/b.wav", "no", "")]
    assert M.read_manifest(tmp_path / "m.tsv") == [M.Example(str(tmp_path / "a.wav"), "yes", "")]
    assert M.read_manifest(tmp_path / "m.jsonl")[0].split == "dev"


@pytest.mark.parametrize("name,text", [("x.csv", "file,label\na,b\n"), ("x.csv", "path,label\n"),
                                       ("x.jsonl", '{"path": "a"}\n'), ("x.txt", "path,label\na,b\n")])
def test_bad_manifests_raise(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(M.ManifestError):
        M.read_manifest(tmp_path / name)


def test_folder_layouts(tmp_path):
    for label in ("go", "stop"):
        (tmp_path / "flat" / label).mkdir(parents=True)
        (tmp_path / "flat" / label / "1.wav").write_bytes(b"")
        (tmp_path / "split" / "train" / label).mkdir(parents=True)
        (tmp_path / "split" / "train" / label / "1.flac").write_bytes(b"")
    (tmp_path / "flat" / "go" / "notes.txt").write_text("ignored")
    (tmp_path / "flat" / "stop" / "memo.M4A").write_bytes(b"")  # phone recordings count, any case
    (tmp_path / "flat" / "stop" / "rec.webm").write_bytes(b"")
    flat = M.read_folder(tmp_path / "flat")
    assert [(e.label, e.split) for e in flat] == [("go", ""), ("stop", ""), ("stop", ""), ("stop", "")]
    assert {(e.label, e.split) for e in M.read_folder(tmp_path / "split")} == {("go", "train"), ("stop", "train")}
    (tmp_path / "empty").mkdir()
    with pytest.raises(M.ManifestError):
        M.read_folder(tmp_path / "empty")


def test_assign_splits_is_deterministic_and_stratified():
    rows = [M.Example(f"/d/{lab}/{i}.wav", lab) for lab in ("a", "b") for i in range(20)]
    rows.append(M.Example("/d/fixed.wav", "a", "test"))
    out = M.assign_splits(rows, 0.1, 0.2)
    assert out == M.assign_splits(list(reversed(rows)), 0.1, 0.2)[::-1]  # independent of row order
    for lab in ("a", "b"):
        splits = [e.split for e in out[:-1] if e.label == lab]
        assert (splits.count("dev"), splits.count("test"), splits.count("train")) == (2, 4, 14)
    assert out[-1].split == "test"  # a given split is kept
    assert M.label_set(out) == ["a", "b"]
    with pytest.raises(M.ManifestError):
        M.label_set([M.Example("x", "a", "train")])


class CountingExtractor:
    """Stands in for UnitExtractor: units = rounded sample values, counts the clips it encodes."""

    def __init__(self):
        self.calls = 0

    def extract(self, wavs):
        import torch

        from speechprompt.units import Units

        self.calls += len(wavs)
        out = []
        for w in wavs:
            u = torch.as_tensor(np.round(np.abs(w) * 10), dtype=torch.long)
            out.append(Units(units=u, durations=torch.ones_like(u), frames=len(u)))
        return out


def test_units_cache_hits_on_same_pcm(tmp_path):
    wavs = [np.array([0.1, 0.25, 0.3], np.float32), np.array([0.5, 0.6], np.float32)]
    ext, cache = CountingExtractor(), M.UnitsCache(tmp_path, "f" * 64)
    first = M.compute_units(wavs, ext, cache)
    assert ext.calls == 2 and cache.misses == 2
    again = M.compute_units([w.copy() for w in wavs] + [np.array([0.9], np.float32)], ext,
                            M.UnitsCache(tmp_path, "f" * 64))
    assert ext.calls == 3  # only the new clip was encoded
    assert [u.tolist() for u in again[:2]] == [u.tolist() for u in first] == [[1, 2, 3], [5, 6]]
    M.compute_units(wavs, ext, M.UnitsCache(tmp_path, "e" * 64))  # another backbone: no reuse
    assert ext.calls == 5


def test_augmentation_is_seeded_and_changes_the_signal():
    x = np.sin(2 * np.pi * 440 * np.arange(8000) / 16000).astype(np.float32)
    a = M.augment_waveform(x, np.random.default_rng(1), ("speed", "noise"))
    b = M.augment_waveform(x, np.random.default_rng(1), ("speed", "noise"))
    assert np.array_equal(a, b) and a.dtype == np.float32
    assert 0.85 * len(x) < len(a) < 1.15 * len(x) and not np.allclose(a[:7000], x[:7000], atol=1e-3)
    p = M.augment_waveform(x, np.random.default_rng(2), ("pitch",))  # sox pitch keeps the duration
    assert len(p) == len(x) and np.abs(np.fft.rfft(p)).argmax() != np.abs(np.fft.rfft(x)).argmax()
    with pytest.raises(ValueError):
        M.augment_waveform(x, np.random.default_rng(1), ("reverb",))


def test_manifest_digest_follows_the_file_bytes(tmp_path):
    """Evaluation caches key a task's cells by this digest: the same bytes give the same digest, one more row another."""
    from speechprompt.training.manifest import manifest_digest

    p = tmp_path / "manifest.csv"
    p.write_text("path,label,split\na.wav,yes,train\n")
    first = manifest_digest(p)
    assert len(first) == 12 and first == manifest_digest(p)
    p.write_text("path,label,split\na.wav,yes,train\nb.wav,no,test\n")
    assert manifest_digest(p) != first


def test_write_csv_replaces_the_file_and_leaves_a_hard_linked_copy_alone(tmp_path):
    """``write_csv`` writes a new file over the path (``os.replace``), whole or appended to: a copy of the folder made
    with hard links keeps its manifest (an in-place write once changed every copy's, session 30)."""
    from speechprompt.training.manifest import write_csv

    path = tmp_path / "manifest.csv"
    write_csv(path, [("a.wav", "yes", "train")], header=["path", "label", "split"])
    assert path.read_bytes() == b"path,label,split\r\na.wav,yes,train\r\n"
    os.link(path, tmp_path / "copy.csv")
    write_csv(path, [("b.wav", "no", "dev")], append=True)
    assert path.read_bytes() == b"path,label,split\r\na.wav,yes,train\r\nb.wav,no,dev\r\n"
    assert [(e.label, e.split) for e in M.read_manifest(path)] == [("yes", "train"), ("no", "dev")]
    write_csv(path, [("c.wav", "yes", "test")], header=["path", "label", "split"])
    assert path.read_bytes() == b"path,label,split\r\nc.wav,yes,test\r\n"
    assert (tmp_path / "copy.csv").read_bytes() == b"path,label,split\r\na.wav,yes,train\r\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.csv", "manifest.csv"]  # no temporary file left


def test_write_csv_writes_what_csv_writer_wrote(tmp_path):
    """The same bytes as the old in-place ``csv.writer`` on a ``newline=""`` file (so cached manifest digests stay
    valid), for quotes, commas, line breaks and non-ASCII text, written whole and then appended to."""
    import csv

    from speechprompt.training.manifest import write_csv

    rows = [("a, b.wav", 'say "hi"', "train"), ("ü/ñ.wav", "line\nbreak", "dev"), (tmp_path / "p.wav", 3, None)]
    with open(tmp_path / "old.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("path", "label", "split"), *rows[:2]])
    with open(tmp_path / "old.csv", "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows[2:])
    write_csv(tmp_path / "new.csv", rows[:2], header=["path", "label", "split"])
    write_csv(tmp_path / "new.csv", rows[2:], append=True)
    assert (tmp_path / "new.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()


@pytest.mark.parametrize("shape,rate,subtype", [((16000,), 16000, "PCM_16"), ((2205, 2), 22050, "PCM_16"),
                                                ((800,), 8000, "FLOAT")])
def test_write_wav_writes_soundfiles_bytes_as_a_new_file(tmp_path, shape, rate, subtype):
    """The bytes of ``soundfile.write`` to the path (cached clips keep their digests), written as a new file: a
    hard-linked copy keeps its clip."""
    import soundfile as sf

    y = (np.random.default_rng(rate).standard_normal(shape) * 0.2).astype(np.float32)
    sf.write(tmp_path / "old.wav", y, rate, subtype=subtype)
    M.write_wav(tmp_path / "new.wav", y, rate, subtype=subtype)
    assert (tmp_path / "new.wav").read_bytes() == (tmp_path / "old.wav").read_bytes()
    os.link(tmp_path / "new.wav", tmp_path / "copy.wav")
    M.write_wav(tmp_path / "new.wav", y[: len(y) // 2], rate, subtype=subtype)
    assert (tmp_path / "copy.wav").read_bytes() == (tmp_path / "old.wav").read_bytes()
    assert sf.info(tmp_path / "new.wav").frames == len(y) // 2


def test_write_wav_stopped_midway_leaves_no_clip_for_a_later_exists_check(tmp_path, monkeypatch):
    """A run stopped while writing (here: the disk write fails after half the bytes) leaves neither a truncated clip
    at the path, which ``if not path.exists()`` would reuse, nor a temporary file."""
    from pathlib import Path

    real = Path.write_bytes

    def half_then_fail(self, data):
        real(self, data[: len(data) // 2])
        raise OSError("no space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="no space"):
        M.write_wav(tmp_path / "clip.wav", np.zeros(16000, np.float32), 16000)
    assert list(tmp_path.iterdir()) == []

"""Training data: manifests (CSV / TSV / JSONL) or one folder per label, splits, and an on-disk units cache.

A manifest row names an audio file, its label and optionally its split (``train`` / ``dev`` / ``test``;
any other split name, e.g. ``test_engine``, is kept as an extra test set). Relative paths are resolved
against the manifest's folder. Rows without a split are assigned one deterministically (by a hash of
the path, stratified per label) so the same data always gives the same split.

Units are computed once per (clip, backbone) and kept in ``cache_dir/<fingerprint[:16]>/``: the key is
the sha256 of the clip's 16 kHz float32 PCM (the server's units-cache key, ``docs/design.md``), so a
moved or renamed file still hits and a re-recorded one misses. On a pGSLM backbone the entry also holds the
clip's prosody (per-unit F0 and F0 statistics, ``prosody.ProsodyUnits``), so YAAPT runs once per clip.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speechprompt.training.prosody_units import from_arrays, to_arrays

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a", ".mp4", ".3gp", ".aac", ".webm", ".mkv")  # audio.decode_audio
SPLITS = ("train", "dev", "test")


class ManifestError(ValueError):
    """A manifest or data folder that cannot be used (missing columns, unknown file, too few labels)."""


@dataclass(frozen=True)
class Example:
    """One labelled clip: ``path`` (absolute), ``label`` (class name), ``split`` ('' if unassigned)."""

    path: str
    label: str
    split: str = ""


def _row(rec: dict, base: Path, where: str) -> Example:
    path, label = str(rec.get("path") or "").strip(), str(rec.get("label") or "").strip()
    if not path or not label:
        raise ManifestError(f"{where}: every row needs 'path' and 'label' (got {rec})")
    p = Path(path)
    p = p if p.is_absolute() else base / p
    return Example(str(p), label, str(rec.get("split") or "").strip())


def read_manifest(path: str | Path) -> list[Example]:
    """Read a ``.csv`` / ``.tsv`` (header row with ``path,label[,split]``) or ``.jsonl`` manifest.

    Raises :class:`ManifestError` for a missing header column, an empty manifest or unknown suffix.
    """
    path = Path(path)
    base = path.parent
    if path.suffix == ".jsonl":
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        out = [_row(json.loads(ln), base, f"{path}:{i + 1}") for i, ln in enumerate(lines)]
    elif path.suffix in (".csv", ".tsv"):
        with path.open(newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            cols = set(reader.fieldnames or [])
            if not {"path", "label"} <= cols:
                raise ManifestError(f"{path}: header must name 'path' and 'label' columns, got {sorted(cols)}")
            out = [_row(r, base, f"{path}:{i + 2}") for i, r in enumerate(reader)]
    else:
        raise ManifestError(f"{path}: manifest must end in .csv, .tsv or .jsonl")
    if not out:
        raise ManifestError(f"{path}: no rows")
    return out


def manifest_digest(path: str | Path) -> str:
    """First 12 hex digits of the SHA-256 of a manifest file's bytes: what evaluation caches key a task's clips by
    (``scripts/real_speech_eval.py``, ``scripts/default_ablation.py``); raises ``FileNotFoundError`` when missing."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def replace_file(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a new file: a temporary file beside it (unique per process and thread, removed if
    the write fails) that then replaces it (``os.replace``). A reader never sees half a file, and a folder copied with
    hard links (``cp -al``) keeps its own copy, which an in-place write would change too (docs/results.md, session
    30)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_wav(path: str | Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> None:
    """Write ``samples`` (float ``[N]`` or ``[N, C]`` in [-1, 1], at ``rate`` Hz) as a WAV file with
    :func:`replace_file`: the bytes of ``soundfile.write(path, samples, rate, subtype)``, but a run stopped midway
    leaves no truncated WAV for a later ``if not path.exists()`` to take as done."""
    buf = io.BytesIO()
    sf.write(buf, samples, rate, subtype=subtype, format="WAV")
    replace_file(path, buf.getvalue())


def write_csv(path: str | Path, rows: Sequence[Sequence], header: Sequence[str] | None = None,
              append: bool = False) -> None:
    """Write a CSV manifest as a whole with :func:`replace_file`: ``header`` then ``rows`` (with ``append``, after the
    file's current bytes, which must exist). The bytes are ``csv.writer``'s on a file opened with ``newline=""``
    (``\r\n`` line ends), in UTF-8."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    if header is not None:
        w.writerow(header)
    w.writerows(rows)
    replace_file(path, (Path(path).read_bytes() if append else b"") + buf.getvalue().encode())


def read_folder(root: str | Path) -> list[Example]:
    """A folder with one sub-folder per label (``root/<label>/*.wav``), or per split then label
    (``root/train/<label>/*.wav``, ``root/dev/...``, ``root/test/...``)."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root} is not a folder")
    subs = sorted(d for d in root.iterdir() if d.is_dir())
    split_layout = subs and all(d.name in SPLITS for d in subs)
    groups = [(d.name, e) for d in subs for e in sorted(x for x in d.iterdir() if x.is_dir())] if split_layout \
        else [("", d) for d in subs]
    out = [Example(str(f.resolve()), d.name, split) for split, d in groups
           for f in sorted(d.rglob("*")) if f.suffix.lower() in AUDIO_EXTS]
    if not out:
        raise ManifestError(f"{root}: no audio files ({', '.join(AUDIO_EXTS)}) in label sub-folders")
    return out


def load_examples(source: str | Path) -> list[Example]:
    """A manifest file or a data folder."""
    return read_folder(source) if Path(source).is_dir() else read_manifest(source)


def assign_splits(examples: Sequence[Example], dev_frac: float = 0.1, test_frac: float = 0.1) -> list[Example]:
    """Give rows without a split one: per label, order by sha1 of the path, first ``dev_frac`` -> dev,
    next ``test_frac`` -> test, rest -> train (at least one train clip per label)."""
    out, by_label = list(examples), {}
    for i, ex in enumerate(out):
        if not ex.split:
            by_label.setdefault(ex.label, []).append(i)
    for idx in by_label.values():
        idx.sort(key=lambda i: hashlib.sha1(out[i].path.encode()).hexdigest())
        n = len(idx)
        n_dev = min(int(round(n * dev_frac)), max(n - 1, 0))
        n_test = min(int(round(n * test_frac)), max(n - 1 - n_dev, 0))
        for k, i in enumerate(idx):
            split = "dev" if k < n_dev else "test" if k < n_dev + n_test else "train"
            out[i] = Example(out[i].path, out[i].label, split)
    return out


def split_of(examples: Sequence[Example], split: str) -> list[Example]:
    return [e for e in examples if e.split == split]


def label_set(examples: Sequence[Example]) -> list[str]:
    """Sorted label names of the training rows; raises :class:`ManifestError` with fewer than two."""
    labels = sorted({e.label for e in examples if e.split == "train"})
    if len(labels) < 2:
        raise ManifestError(f"need at least two labels in the train split, got {labels}")
    return labels


def load_audio(path: str | Path) -> np.ndarray:
    """Decode any supported file to ``[N]`` f32 mono @ 16 kHz (``speechprompt.audio.decode_audio``)."""
    from speechprompt.audio import decode_audio

    return decode_audio(Path(path).read_bytes()).samples


class UnitsCache:
    """On-disk cache of deduplicated units per (16 kHz PCM, backbone fingerprint).

    Entry: ``<dir>/<fingerprint[:16]>/<sha[:2]>/<sha>.npz`` holding ``units [M]`` and ``durations [M]``
    (int16; codebooks have < 32768 entries), for ``ProsodyUnits`` also ``f0 [M]`` f32 Hz and ``f0_stats [5]``
    (``prosody_units.to_arrays``).
    """

    def __init__(self, cache_dir: str | Path, fingerprint: str):
        self.root = Path(cache_dir) / fingerprint[:16]
        self.hits = self.misses = 0

    @staticmethod
    def key(wav: np.ndarray, salt: str = "") -> str:
        return hashlib.sha256(np.ascontiguousarray(wav, dtype=np.float32).tobytes() + salt.encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str, prosody: bool = False):
        """The cached ``Units`` (``ProsodyUnits`` if the entry has prosody) or None; with ``prosody`` an entry
        without it is a miss."""
        f = self._file(key)
        if f.exists():
            with np.load(f) as z:
                arrays = {k: z[k] for k in z.files}
            if not prosody or "f0" in arrays:
                self.hits += 1
                return from_arrays(**arrays)
        self.misses += 1
        return None

    def put(self, key: str, item) -> None:
        """Store a ``Units`` / ``ProsodyUnits`` (atomic rename)."""
        f = self._file(key)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp.npz")
        np.savez(tmp, **to_arrays(item))
        tmp.replace(f)


def compute_units(
    wavs: Sequence[np.ndarray],
    extractor,
    cache: UnitsCache | None = None,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """Deduplicated units ``[M_i]`` i64 for ``[N_i]`` f32 @ 16 kHz waveforms, reading/filling ``cache``.

    ``extractor``: a ``speechprompt.units.UnitExtractor``, or a ``prosody.ProsodyExtractor`` (pGSLM): then the
    result per clip is its ``ProsodyUnits`` (units + durations + F0, one YAAPT run per clip, cached). Misses are
    encoded in batches of ``batch_size`` clips. ``progress(n)`` is called with the number of clips done after
    each batch.
    """
    with_prosody = hasattr(extractor, "prosody")
    out: list = [None] * len(wavs)
    keys = [UnitsCache.key(w) for w in wavs] if cache is not None else [""] * len(wavs)
    todo = []
    for i, k in enumerate(keys):
        hit = cache.get(k, prosody=with_prosody) if cache is not None else None
        if hit is None:
            todo.append(i)
        else:
            out[i] = hit if with_prosody else hit.units
    done = len(wavs) - len(todo)
    if progress and done:
        progress(done)
    for s in range(0, len(todo), batch_size):
        idx = todo[s : s + batch_size]
        res = extractor.extract([wavs[i] for i in idx])
        for i, r in zip(idx, res, strict=True):
            out[i] = r if with_prosody else torch.as_tensor(r.units, dtype=torch.long)
            if cache is not None:
                cache.put(keys[i], r)
        if progress:
            progress(len(idx))
    return out


def units_by_split(
    examples: Sequence[Example],
    extractor,
    cache: UnitsCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, tuple[list, list[str]]]:
    """Decode every clip, compute (or read cached) units, group by split: ``{split: (units, labels)}`` (units as
    :func:`compute_units` returns them: tensors, or ``ProsodyUnits`` for a ``ProsodyExtractor``)."""
    wavs = [load_audio(e.path) for e in examples]
    units = compute_units(wavs, extractor, cache, progress=progress)
    out: dict[str, tuple[list, list[str]]] = {}
    for e, u in zip(examples, units, strict=True):
        us, ls = out.setdefault(e.split, ([], []))
        us.append(u)
        ls.append(e.label)
    return out


AUGMENTATIONS = ("speed", "pitch", "noise")


def augment_waveform(wav: np.ndarray, rng: np.random.Generator, kinds: Sequence[str] = AUGMENTATIONS,
                     sample_rate: int = 16000) -> np.ndarray:
    """One random perturbation of ``[N]`` f32: ``speed`` factor U(0.9, 1.1) (resampling: tempo and pitch
    together, Kaldi's speed perturbation), ``pitch`` U(-300, 300) cents (sox ``pitch``, duration kept),
    ``noise`` white / pink / brown at SNR U(10, 30) dB. Raises ``ValueError`` for an unknown kind."""
    import subprocess

    import soxr

    from speechprompt.training.corpus import colored_noise

    bad = [k for k in kinds if k not in AUGMENTATIONS]
    if bad:
        raise ValueError(f"unknown augmentations {bad}; choose from {AUGMENTATIONS}")
    y = np.asarray(wav, dtype=np.float32)
    if "speed" in kinds:
        y = soxr.resample(y, sample_rate * float(rng.uniform(0.9, 1.1)), sample_rate).astype(np.float32)
    if "pitch" in kinds:
        raw = ["-t", "raw", "-r", str(sample_rate), "-c", "1", "-e", "floating-point", "-b", "32"]
        cents = str(int(rng.integers(-300, 301)))
        p = subprocess.run(["sox", "-R", "-V1", *raw, "-", *raw, "-", "pitch", cents], input=y.tobytes(),
                           capture_output=True, check=True)
        y = np.frombuffer(p.stdout, dtype=np.float32)[: len(y)].copy()
    if "noise" in kinds:
        n = colored_noise(rng, len(y), str(rng.choice(["white", "pink", "brown"])))
        y = y + n * np.sqrt((np.mean(y**2) + 1e-10) / 10 ** (float(rng.uniform(10, 30)) / 10))
    return y.astype(np.float32)

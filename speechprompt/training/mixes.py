"""Speech next to non-speech in one clip: the ``vad`` task's mixed-clip augmentation and held-out check.

A voice-activity detector is asked whether a clip holds speech; a clip where someone speaks and then a fan, a door or
music follows (or the other way round) holds speech. The real corpus's ``vad`` clips are either one prompt or one
sound, so nothing taught the prompts that a clip ending in noise may still be speech. :func:`mix` joins a speech clip
and a non-speech clip in a drawn order with a short pause between (``scripts/real_speech_eval.py --mixes``;
``scripts/vad_cuts.py``'s ``mixed`` set joins held-out test clips the same way; docs/results.md, "VAD on mixed clips").
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from speechprompt.training import manifest as M

SAMPLE_RATE = 16000
MAX_NOISE_S = 2.5  # the non-speech part is cut to at most this many seconds (a long music clip would drown the voice)


def _window(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``y`` itself when it has at most ``n`` samples, else a window of ``n`` samples at a start drawn from ``rng``."""
    if len(y) <= n:
        return y
    start = int(rng.integers(0, len(y) - n + 1))
    return y[start:start + n]


def mix(speech: np.ndarray, noise: np.ndarray, key: int, max_noise_s: float = MAX_NOISE_S,
        max_gap_s: float = 0.3) -> tuple[np.ndarray, bool]:
    """One clip ([N] f32 @16 kHz) holding ``speech`` and ``noise`` ([N] f32 @16 kHz each) at their own levels.

    From ``key`` (an int >= 0; the same clip wherever the inputs lie): the order (speech first or noise first, even
    odds), a pause of 0 to ``max_gap_s`` seconds of digital silence between them, and, for a noise clip longer than
    ``max_noise_s`` seconds, which window of it is kept. The parts are joined end to end, not summed; samples outside
    [-1, 1] are clipped. Returns ``(clip, speech_first)``. Raises ``ValueError`` for an empty input, a negative
    ``key`` or ``max_gap_s``, or ``max_noise_s`` under one sample (1 / 16000 s).
    """
    if len(speech) == 0 or len(noise) == 0:
        raise ValueError(f"mix needs two non-empty clips; got {len(speech)} and {len(noise)} samples")
    if max_noise_s * SAMPLE_RATE < 1:
        raise ValueError(f"max_noise_s must be at least one sample (1/{SAMPLE_RATE} s); got {max_noise_s}")
    if max_gap_s < 0 or key < 0:
        raise ValueError(f"key and max_gap_s must be >= 0; got key={key}, max_gap_s={max_gap_s}")
    rng = np.random.default_rng([key, 47])
    speech_first = bool(rng.integers(0, 2))
    gap = np.zeros(int(rng.uniform(0.0, max_gap_s) * SAMPLE_RATE), np.float32)
    noise = _window(noise, int(max_noise_s * SAMPLE_RATE), rng)
    parts = [speech, gap, noise] if speech_first else [noise, gap, speech]
    return np.clip(np.concatenate([np.asarray(p, np.float32) for p in parts]), -1.0, 1.0), speech_first


def write_mixes(clips: list[M.Example], out: Path, n: int, seed: int, split: str = "train",
                label: str = "speech") -> list[tuple[str, str, str]]:
    """``n`` mixed ``speech`` clips of ``clips`` (manifest rows of one split: ``speech`` and ``noise`` clips, both
    needed), written as 16 kHz WAV under ``out`` and returned as ``(path, "speech", split)`` manifest rows. The pairs
    and keys are drawn from ``seed`` and ``split`` (``"train"`` and ``"dev"`` draw apart); a clip is named by both
    source clips' bytes and its key (the same name wherever the corpus lies, a new one when a source changes), and an
    existing file is reused. Mixes in dev let early stopping see the kind of clip the train mixes teach (a dev set of
    whole clips only stopped the all-speaker demo at epoch 3 of 13: docs/results.md, "VAD on mixed clips").

    ``label="noise"``: ``n`` joins of two different ``noise`` clips instead (the first also cut to at most
    ``MAX_NOISE_S``), labelled ``noise`` and named ``nmix-*``: with speech mixes alone, "two sounds in one clip" only
    ever means ``speech``, a shortcut these take away. Raises ``ValueError`` when ``clips`` lacks a class the joins
    need (speech and noise; two noise clips) and ``n > 0``, or for another ``label``."""
    speech = [e for e in clips if e.label == "speech"]
    noise = [e for e in clips if e.label == "noise"]
    if label not in ("speech", "noise"):
        raise ValueError(f"label must be 'speech' or 'noise'; got {label!r}")
    if n > 0 and not ((speech and noise) if label == "speech" else len(noise) >= 2):
        raise ValueError(f"{label} mixes need speech and noise clips (noise: two noise clips); got {len(speech)} "
                         f"and {len(noise)}")
    out.mkdir(parents=True, exist_ok=True)
    stream = (53 if split == "train" else 59) + (0 if label == "speech" else 10)  # speech, train: the 2026-12-05 files
    rng = np.random.default_rng([seed, stream])
    rows = []
    for _ in range(n):
        if label == "speech":
            a, b = speech[int(rng.integers(len(speech)))], noise[int(rng.integers(len(noise)))]
        else:
            i, j = rng.choice(len(noise), 2, replace=False)
            a, b = noise[int(i)], noise[int(j)]
        key = int(rng.integers(2**31))
        held = hashlib.sha256(Path(a.path).read_bytes() + Path(b.path).read_bytes() + str(key).encode())
        path = out / f"{'mix' if label == 'speech' else 'nmix'}-{held.hexdigest()[:16]}.wav"
        if not path.exists():
            first = M.load_audio(a.path)
            if label == "noise":  # a window, as mix() cuts the second
                first = _window(first, int(MAX_NOISE_S * SAMPLE_RATE), np.random.default_rng([key, 61]))
            M.write_wav(path, mix(first, M.load_audio(b.path), key)[0], SAMPLE_RATE)
        rows.append((str(path), label, split))
    return rows


def write_joins(examples: list[M.Example], out: Path, seed: int, mixes: int = 0, dev_mixes: int = 0,
                noise_mixes: int = 0) -> list[tuple[str, str, str]]:
    """All joins of one ``vad`` manifest (``scripts/real_speech_eval.py --mixes/--dev-mixes/--noise-mixes``):
    ``mixes`` speech joins of train clips, ``dev_mixes`` of dev clips into dev, ``noise_mixes`` noise joins of train
    sounds and, when ``dev_mixes`` > 0, ``noise_mixes // 8`` of dev sounds into dev (dev's usual one-in-eight share).
    Manifest rows as :func:`write_mixes` returns them; its errors."""
    joins = [("train", mixes, "speech"), ("dev", dev_mixes, "speech"), ("train", noise_mixes, "noise"),
             ("dev", noise_mixes // 8 if dev_mixes else 0, "noise")]
    return [row for split, n, label in joins if n
            for row in write_mixes([e for e in examples if e.split == split], out, n, seed, split, label)]


__all__ = ["MAX_NOISE_S", "mix", "write_joins", "write_mixes"]

"""Random windows of training clips, cut anywhere (mid-word included): the ``vad`` task's partial-cut augmentation.

A voice-activity detector meets audio cut at arbitrary points (a microphone buffer, a looped recording, a stream's
window), while the real corpus holds whole prompts and words that start and end in silence. ``random_cut`` draws one
window of such a clip; ``active_seconds`` says how much of a window is above the clip's noise floor, so a cut of a
speech clip that landed in a pause is not labelled ``speech`` (``scripts/real_speech_eval.py --cuts``; docs/results.md,
"VAD on cut clips").
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
MIN_ACTIVE_S = 0.4  # a speech cut needs this much active audio (seconds) to keep its label


def active_seconds(y: np.ndarray, ref_db: float, range_db: float = 30.0, floor_db: float = -55.0,
                   win: int = 400, hop: int = 160) -> float:
    """Seconds of ``y`` ([N] f32 @16 kHz, [-1, 1]) whose 25 ms frames (10 ms hop) lie within ``range_db`` of
    ``ref_db`` (the whole clip's loudest frame, dBFS) and above ``floor_db``; 0.0 for a clip under one frame."""
    if len(y) < win:
        return 0.0
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(y, np.float64), win)[::hop]
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    return float(np.sum((db > ref_db - range_db) & (db > floor_db))) * hop / SAMPLE_RATE


def loudest_frame_db(y: np.ndarray, win: int = 400) -> float:
    """dBFS of the loudest 25 ms frame of ``y`` ([N] f32); -120.0 for a clip under one frame."""
    if len(y) < win:
        return -120.0
    power = np.convolve(np.asarray(y, np.float64) ** 2, np.ones(win) / win, "valid")
    return float(10 * np.log10(power.max() + 1e-12))


def random_cut(y: np.ndarray, key: int, low_s: float = 1.0, high_s: float = 2.6, margin_s: float = 0.1
               ) -> np.ndarray | None:
    """One window of ``y`` ([N] f32 @16 kHz): length uniform in [``low_s``, ``high_s``] seconds, start uniform over
    the clip, both drawn from ``key`` (the same cut wherever the clip lies). ``None`` when the clip is not at least
    ``margin_s`` longer than the drawn length (a cut must drop something). Raises ``ValueError`` for
    ``0 < low_s <= high_s`` violated."""
    if not 0 < low_s <= high_s:
        raise ValueError(f"cut lengths need 0 < low_s <= high_s; got {low_s}, {high_s}")
    rng = np.random.default_rng([key, 31])
    n = int(rng.uniform(low_s, high_s) * SAMPLE_RATE)
    if len(y) < n + int(margin_s * SAMPLE_RATE):
        return None
    start = int(rng.integers(0, len(y) - n + 1))
    return np.asarray(y[start:start + n], np.float32)


def speech_cut(y: np.ndarray, key: int, **kw) -> np.ndarray | None:
    """:func:`random_cut` of a speech clip, or ``None`` when the window holds under ``MIN_ACTIVE_S`` of audio within
    30 dB of the clip's loudest frame (it fell into a pause)."""
    cut = random_cut(y, key, **kw)
    if cut is None or active_seconds(cut, loudest_frame_db(y)) < MIN_ACTIVE_S:
        return None
    return cut


__all__ = ["MIN_ACTIVE_S", "active_seconds", "loudest_frame_db", "random_cut", "speech_cut"]

"""Partial-cut augmentation for vad (speechprompt/training/cuts.py): window lengths, determinism, pause rejection."""

import numpy as np
import pytest

from speechprompt.training import cuts

SR = 16000


def _burst_then_silence(loud_s: float, total_s: float) -> np.ndarray:
    """A 200 Hz tone at 0.3 for ``loud_s`` seconds, then digital silence with a faint noise floor."""
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1e-4, int(total_s * SR)).astype(np.float32)
    n = int(loud_s * SR)
    y[:n] += 0.3 * np.sin(2 * np.pi * 200 * np.arange(n) / SR).astype(np.float32)
    return y


def test_random_cut_is_a_seeded_window_of_the_drawn_length():
    y = np.arange(5 * SR, dtype=np.float32)  # sample values = positions: a window must be contiguous
    a, b = cuts.random_cut(y, key=11), cuts.random_cut(y, key=11)
    assert np.array_equal(a, b)
    assert SR <= len(a) <= int(2.6 * SR)
    assert np.array_equal(a, np.arange(a[0], a[0] + len(a), dtype=np.float32))
    starts = {float(cuts.random_cut(y, key=k)[0]) for k in range(20)}
    assert len(starts) > 15  # the start moves with the key
    assert cuts.random_cut(np.zeros(int(1.05 * SR), np.float32), key=1, low_s=1.0, high_s=1.0) is None
    with pytest.raises(ValueError, match="low_s <= high_s"):
        cuts.random_cut(y, key=1, low_s=2.0, high_s=1.0)


def test_active_seconds_counts_frames_near_the_clip_peak():
    y = _burst_then_silence(1.0, 3.0)
    ref = cuts.loudest_frame_db(y)
    assert ref == pytest.approx(10 * np.log10(0.3 ** 2 / 2), abs=0.1)  # a sine's mean power
    assert cuts.active_seconds(y, ref) == pytest.approx(1.0, abs=0.03)
    assert cuts.active_seconds(y[2 * SR:], ref) == 0.0
    assert cuts.active_seconds(y[:100], ref) == 0.0


def test_speech_cut_drops_windows_that_fell_into_a_pause():
    y = _burst_then_silence(1.0, 3.5)  # speech in the first second only
    ramp = np.arange(len(y), dtype=np.float64)  # the same key draws the same window: its first value is the start
    kept, spoken = [], []
    for k in range(40):
        start = int(cuts.random_cut(ramp, k)[0])
        spoken.append(max(0.0, 1.0 - start / SR))  # seconds of the burst inside the window (>= 1 s long)
        kept.append(cuts.speech_cut(y, k) is not None)
    assert 5 < sum(kept) < 35, sum(kept)
    for s, keep in zip(spoken, kept, strict=True):  # kept when >= 0.4 s of the burst is in it (25 ms frames' slack)
        if abs(s - cuts.MIN_ACTIVE_S) > 0.03:
            assert keep == (s >= cuts.MIN_ACTIVE_S)

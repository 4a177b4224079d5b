"""Room tone around training clips (speechprompt/training/pads.py)."""

from __future__ import annotations

import numpy as np
import pytest

from speechprompt.training.pads import KINDS, pad, room_tone


@pytest.mark.parametrize("kind", KINDS)
def test_room_tone_has_the_asked_peak_and_length(kind):
    x = room_tone(kind, 16000, 0.01, np.random.default_rng(0))
    assert x.dtype == np.float32 and x.shape == (16000,)
    assert float(np.abs(x).max()) == (0.0 if kind == "zeros" else pytest.approx(0.01, rel=1e-5))
    if kind in ("white", "brown"):  # noise all along, not a ramp to the peak at one edge (a cumsum detrended by a
        # moving average peaked in its last samples, its interior at ~0.2-0.4 of the peak)
        for seed in range(10):
            y = room_tone(kind, 16000, 0.01, np.random.default_rng(seed))
            assert float(np.abs(y[400:-400]).max()) > 0.6 * 0.01
    if kind == "brown":  # a rumble: most power below 200 Hz
        spec = np.abs(np.fft.rfft(x)) ** 2
        assert spec[:200].sum() > 0.7 * spec.sum()
    if kind == "hum":  # mains hum: most power at 50 or 60 Hz
        spec = np.abs(np.fft.rfft(x))
        assert int(np.argmax(spec)) in (50, 60)
    with pytest.raises(ValueError, match="room tone kind"):
        room_tone("pink", 10, 0.1, np.random.default_rng(0))


def test_pad_keeps_the_clip_and_adds_0_2_to_2_s_each_side():
    y = np.random.default_rng(1).uniform(-0.5, 0.5, 8000).astype(np.float32)
    lengths = set()
    for key in range(40):
        out = pad(y, key)
        assert np.array_equal(out, pad(y, key))  # the same key, the same copy
        extra = len(out) - len(y)
        assert 2 * 3200 <= extra <= 2 * 32000
        starts = [i for i in range(3200, min(32001, len(out) - 8000 + 1)) if out[i] == y[0] and np.array_equal(out[i:i + 8000], y)]
        assert len(starts) == 1 and float(np.abs(np.delete(out, np.s_[starts[0]:starts[0] + 8000])).max()) <= 0.03
        lengths.add(extra)
    assert len(lengths) > 30  # the pads are drawn per key
    assert not np.array_equal(pad(y, 1)[:3200], pad(y, 2)[:3200]) or len(pad(y, 1)) != len(pad(y, 2))


def test_short_room_tone_is_fine():
    for kind in KINDS:
        assert room_tone(kind, 100, 0.01, np.random.default_rng(0)).shape == (100,)

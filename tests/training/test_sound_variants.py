"""``sound_variants.vary``: a real sound played faster, slower or backwards (the vad task's ``--noise-variants``);
``tape_speed``, also build-default's ``--real-speeds``."""

import numpy as np
import pytest

from speechprompt.training import sound_variants as V

SR = 16000


def _tone(hz: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * hz * t) * np.linspace(0.2, 1.0, len(t))).astype(np.float32)  # rising envelope


def _peak_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / SR)[spec.argmax()])


def test_speed_moves_pitch_and_length_together_and_keeps_the_peak_level():
    y = _tone(440.0, 1.0)
    seen = set()
    for key in range(40):
        speed, reverse = V.draw(key)
        assert V.MIN_SPEED <= speed <= V.MAX_SPEED
        seen.add(reverse)
        out = V.vary(y, key)
        assert out.dtype == np.float32 and abs(len(out) - len(y) / speed) <= 2
        assert abs(_peak_hz(out) - 440.0 * speed) < 440.0 * speed * 0.02  # a tape-speed change: pitch follows speed
        assert abs(np.abs(out).max() - np.abs(y).max()) < 1e-4
        # the rising envelope falls in a reversed variant, rises otherwise
        first, last = np.abs(out[: len(out) // 4]).mean(), np.abs(out[-len(out) // 4:]).mean()
        assert (first > last) == reverse
    assert seen == {True, False}  # both kinds are drawn


def test_same_key_same_variant_and_short_results_are_dropped():
    y = _tone(300.0, 0.8)
    assert np.array_equal(V.vary(y, 7), V.vary(y, 7))
    short = _tone(300.0, 0.3)  # any speed above 1 leaves less than MIN_SECONDS
    fast = next(k for k in range(100) if V.draw(k)[0] > 1.05)
    assert V.vary(short, fast) is None


@pytest.mark.parametrize("bad", [np.zeros(0, np.float32), np.zeros((2, 100), np.float32)])
def test_bad_input_is_refused(bad):
    with pytest.raises(ValueError, match="mono"):
        V.vary(bad, 0)
    with pytest.raises(ValueError, match="key"):
        V.draw(-1)


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_tape_speed_is_a_plain_speed_change(speed):
    y = _tone(200.0, 1.0)
    out = V.tape_speed(y, speed)
    assert abs(len(out) - round(len(y) / speed)) <= 1 and abs(_peak_hz(out) - 200.0 * speed) < 200.0 * speed * 0.02
    assert abs(np.abs(out).max() - np.abs(y).max()) < 1e-4
    first, last = np.abs(out[: len(out) // 4]).mean(), np.abs(out[-len(out) // 4:]).mean()
    assert first < last  # never reversed
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="speed"):
            V.tape_speed(y, bad)
    with pytest.raises(ValueError, match="mono"):
        V.tape_speed(np.zeros(0, np.float32), speed)

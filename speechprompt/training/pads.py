"""Room tone around a training clip: real recordings start and end with silence or background, the corpus's clips are
cut tight.

On held-out real voices, 1 s of generated room tone before and after each clip moved v7's held-out vad prompts
(served on v8) from 0.958 to 0.87-0.89 and 3 s to 0.77-0.82 (digital zeros: 0.945); language-id fell from 0.34 to
0.15-0.23 (docs/results.md, "Silence and room tone around a recording"). ``pad`` gives a training copy with 0.2-2 s of room tone on each side, so
prompts learn that what surrounds the sound does not change its label. Measured once per version of the generator
(``--pads 1`` on draw 0): it did not pass its rule (vad lost ~0.01 on tight clips and gained under 0.03 on padded
ones), so no demo uses it yet.
"""

from __future__ import annotations

import numpy as np

RATE = 16000
KINDS = ("zeros", "white", "brown", "hum")
PAD_SECONDS = (0.2, 2.0)  # each side, uniform
PEAK = (1e-4, 3e-2)  # the room tone's peak (full scale = 1), log-uniform: about -80 to -30 dBFS


def room_tone(kind: str, n: int, peak: float, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` f32 samples at 16 kHz of one kind of room tone with the given peak: ``zeros`` (digital silence),
    ``white`` noise, ``brown`` noise (a rumble: white noise with 1/f^2 power, flat below 20 Hz),
    ``hum`` (50 or 60 Hz mains with two harmonics, plus a little white noise). Raises ``ValueError`` for another kind."""
    if kind not in KINDS:
        raise ValueError(f"room tone kind must be one of {KINDS}; got {kind!r}")
    if kind == "zeros" or n == 0:
        return np.zeros(n, np.float32)
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "brown":  # white noise shaped to 1/f^2 power above 20 Hz (no drift, no edge ramp)
        f = np.fft.rfftfreq(n, 1 / RATE)
        x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.maximum(f, 20.0), n)
    else:
        t = np.arange(n) / RATE
        f = rng.choice([50.0, 60.0])
        x = sum(a * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 2 * np.pi)) for k, a in ((1, 1.0), (2, 0.3), (3, 0.2)))
        x = x + 0.05 * rng.standard_normal(n)
    return (x / max(float(np.abs(x).max()), 1e-12) * peak).astype(np.float32)


def pad(y: np.ndarray, key: int) -> np.ndarray:
    """``y`` ([N] f32 at 16 kHz) with room tone before and after: one kind and peak per copy, 0.2-2 s on each side
    (drawn apart), all drawn from ``key`` (the same key, the same copy)."""
    rng = np.random.default_rng(key)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    peak = float(np.exp(rng.uniform(np.log(PEAK[0]), np.log(PEAK[1]))))
    before, after = (int(rng.uniform(*PAD_SECONDS) * RATE) for _ in range(2))
    tone = room_tone(kind, before + after, peak, rng)
    return np.concatenate([tone[:before], np.asarray(y, np.float32), tone[before:]])


__all__ = ["KINDS", "pad", "room_tone"]

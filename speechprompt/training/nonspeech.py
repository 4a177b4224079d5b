"""Generated non-speech for voice-activity training: signals a VAD must call ``noise`` (``[N] f32 @16 kHz``).

Real non-speech in the allow-listed packages is a few hundred clips of game effects, music and asterisk beeps, so a
VAD trained on it alone calls some of what it never met speech (measured on the first real-speech vad demo: a 300 Hz
tone 0.74, a sweep 0.99, a synthesizer melody 0.64). Each clip drawn here is one of: ``tone`` (a sine of 100-4000 Hz,
steady or with vibrato, fades), ``dual`` (two sines: DTMF pairs, ringback 440+480 Hz, busy 480+620 Hz, cadenced),
``sweep`` (a linear or log chirp), ``beeps`` (short tone bursts), ``melody`` (notes over roots of 80-600 Hz with 1-8
harmonics and an ADSR envelope, as a synthesizer plays them), ``chord`` (3-4 notes at once), ``drums`` (decaying noise
bursts and low thumps on a beat), ``clicks`` (impulses, bubbles: decaying rising chirps), ``noise`` (white / pink /
brown, hum with harmonics) or ``machine`` (a harmonic rumble with slow amplitude modulation). Everything is
deterministic in ``(seed, key)`` and peak-normalised to 0.1-0.9. No speech source is used: the only inputs are numbers.
"""

from __future__ import annotations

import numpy as np

from .corpus import colored_noise

SR = 16000
KINDS = ("tone", "dual", "sweep", "beeps", "melody", "chord", "drums", "clicks", "noise", "machine")
DTMF_LOW, DTMF_HIGH = (697.0, 770.0, 852.0, 941.0), (1209.0, 1336.0, 1477.0, 1633.0)


def _fade(x: np.ndarray, seconds: float) -> np.ndarray:
    n = min(len(x) // 2, max(1, int(seconds * SR)))
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    x[:n] *= ramp
    x[-n:] *= ramp[::-1]
    return x


def _note(rng: np.random.Generator, f0: float, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    parts = int(rng.integers(1, 9))
    decay = float(rng.uniform(0.5, 2.0))
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k ** decay for k in range(1, parts + 1)
            if f0 * k < SR / 2)
    a, r = max(1, int(n * rng.uniform(0.01, 0.2))), max(1, int(n * rng.uniform(0.1, 0.6)))
    env = np.ones(n)
    env[:a] = np.linspace(0, 1, a)
    env[-r:] *= np.linspace(1, float(rng.uniform(0, 0.3)), r)
    return (x * env).astype(np.float32)


def _tone(rng, n):
    t = np.arange(n) / SR
    f = float(np.exp(rng.uniform(np.log(100), np.log(4000))))
    vib = float(rng.uniform(0, 0.02)) * np.sin(2 * np.pi * rng.uniform(3, 8) * t) if rng.random() < 0.4 else 0.0
    phase = 2 * np.pi * np.cumsum(f * (1 + vib) * np.ones(n)) / SR  # instantaneous frequency f (1 + vib)
    return _fade(np.sin(phase).astype(np.float32), float(rng.uniform(0.002, 0.3)))


def _dual(rng, n):
    t = np.arange(n) / SR
    kind = int(rng.integers(3))
    if kind == 0:
        f1, f2 = float(rng.choice(DTMF_LOW)), float(rng.choice(DTMF_HIGH))
    else:
        f1, f2 = (440.0, 480.0) if kind == 1 else (480.0, 620.0)
    x = np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t)
    on, off = float(rng.uniform(0.05, 2.0)), float(rng.uniform(0.05, 4.0))
    gate = ((t % (on + off)) < on).astype(np.float32)
    return (x * gate).astype(np.float32)


def _sweep(rng, n):
    t = np.arange(n) / SR
    f0, f1 = np.exp(rng.uniform(np.log(80), np.log(6000), 2))
    dur = n / SR
    if rng.random() < 0.5:
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * dur))
    else:
        k = (f1 / f0) ** (1 / dur)
        phase = 2 * np.pi * f0 * (k ** t - 1) / np.log(k) if abs(np.log(k)) > 1e-6 else 2 * np.pi * f0 * t
    return _fade(np.sin(phase).astype(np.float32), 0.01)


def _beeps(rng, n):
    x = np.zeros(n, dtype=np.float32)
    f = float(np.exp(rng.uniform(np.log(300), np.log(3000))))
    on, period = float(rng.uniform(0.03, 0.4)), float(rng.uniform(0.1, 1.2))
    t = np.arange(int(on * SR)) / SR
    b = _fade(np.sin(2 * np.pi * f * t).astype(np.float32), 0.005)
    for start in range(int(rng.uniform(0, 0.3) * SR), n - len(b), max(len(b) + 1, int(period * SR))):
        x[start:start + len(b)] += b
    return x


def _melody(rng, n):
    x = np.zeros(n, dtype=np.float32)
    root = float(np.exp(rng.uniform(np.log(80), np.log(600))))
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    beat = int(rng.uniform(0.1, 0.5) * SR)
    pos = 0
    while pos < n:
        length = min(n - pos, beat * int(rng.integers(1, 4)))
        f0 = root * 2 ** (float(rng.choice(scale)) / 12)
        x[pos:pos + length] += _note(rng, f0, length)
        pos += length
    return x


def _chord(rng, n):
    root = float(np.exp(rng.uniform(np.log(80), np.log(500))))
    chords = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 5, 9), (0, 7, 12))
    steps = chords[int(rng.integers(len(chords)))]
    return sum(_note(rng, root * 2 ** (s / 12), n) for s in steps).astype(np.float32)


def _drums(rng, n):
    x = np.zeros(n, dtype=np.float32)
    beat = int(rng.uniform(0.15, 0.6) * SR)
    for start in range(0, n, beat):
        m = min(n - start, int(rng.uniform(0.05, 0.4) * SR))
        t = np.arange(m) / SR
        if rng.random() < 0.5:  # snare / hat: noise burst
            hit = colored_noise(rng, m, str(rng.choice(["white", "pink"]))) * np.exp(-t * rng.uniform(15, 60))
        else:  # kick / tom: falling low sine
            f = rng.uniform(50, 200) * np.exp(-t * rng.uniform(5, 20))
            hit = np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t * rng.uniform(5, 25))
        x[start:start + m] += hit.astype(np.float32)
    return x


def _clicks(rng, n):
    x = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(3, 40))):
        start = int(rng.integers(n))
        m = min(n - start, int(rng.uniform(0.005, 0.08) * SR))
        t = np.arange(m) / SR
        if rng.random() < 0.5:  # bubble: a rising decaying chirp
            f = rng.uniform(300, 2000) * (1 + t * rng.uniform(5, 40))
            x[start:start + m] += (np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t * 60)).astype(np.float32)
        else:
            x[start:start + m] += (rng.standard_normal(m) * np.exp(-t * 400)).astype(np.float32)
    return x


def _noise(rng, n):
    if rng.random() < 0.3:
        t = np.arange(n) / SR
        f0 = float(rng.choice([50.0, 60.0]))
        return (sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) + 0.2 * colored_noise(rng, n, "pink")
                ).astype(np.float32)
    return colored_noise(rng, n, str(rng.choice(["white", "pink", "brown"])))


def _machine(rng, n):
    t = np.arange(n) / SR
    f0 = float(rng.uniform(20, 150))
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) * rng.uniform(0.1, 1) for k in range(1, 12)
            if f0 * k < SR / 2)
    am = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 4) * t)
    return (x * am + 0.3 * colored_noise(rng, n, "brown")).astype(np.float32)


_MAKERS = {"tone": _tone, "dual": _dual, "sweep": _sweep, "beeps": _beeps, "melody": _melody, "chord": _chord,
           "drums": _drums, "clicks": _clicks, "noise": _noise, "machine": _machine}


def generate(seed: int, key: int, seconds: tuple[float, float] = (0.5, 5.0)) -> tuple[str, np.ndarray]:
    """Non-speech clip ``key`` of ``seed``: ``(kind, [N] f32 @16 kHz)``, N from ``seconds`` (s); kinds cycle
    through :data:`KINDS` (``key % len(KINDS)``), the rest is drawn from ``(seed, key)``."""
    rng = np.random.default_rng([seed, key, 31])
    kind = KINDS[key % len(KINDS)]
    n = int(rng.uniform(*seconds) * SR)
    x = _MAKERS[kind](rng, n)
    peak = float(np.max(np.abs(x))) + 1e-9
    return kind, (x / peak * rng.uniform(0.1, 0.9)).astype(np.float32)


__all__ = ["KINDS", "generate"]

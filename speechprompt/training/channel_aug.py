"""Channel augmentation: what a microphone, a room and a phone line do to speech (``[N] f32 @16 kHz -> [N] f32``).

Each twin draws, deterministically from ``(seed, key)``: a generated room impulse response (exponentially decaying
noise, RT60 0.15-0.9 s, as in image-free RIR simulation), additive noise at an SNR of 0-25 dB (white / pink /
brown, or a real non-speech recording when given), a codec round trip through ffmpeg (G.722, GSM 6.10, Opus
8-16 kbit/s, 8 kHz mu-law, MP3 32 kbit/s), a band-pass "microphone" (telephone 300-3400 Hz, cheap mic
150-6000 Hz, or none) and a level change of -30..+6 dB (clipped at full scale). The output has the input's length.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

from .corpus import colored_noise

SR = 16000
# name -> ffmpeg encoder args and container; decoded back to 16 kHz mono f32
CODECS = {
    "g722": (["-c:a", "g722"], "wav"),
    "gsm": (["-ar", "8000", "-c:a", "libgsm_ms"], "wav"),
    "opus8k": (["-c:a", "libopus", "-b:a", "8k"], "ogg"),
    "opus16k": (["-c:a", "libopus", "-b:a", "16k"], "ogg"),
    "mulaw": (["-ar", "8000", "-c:a", "pcm_mulaw"], "wav"),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "32k"], "mp3"),
}
BANDS = {"telephone": (300.0, 3400.0), "cheap_mic": (150.0, 6000.0)}


@dataclass(frozen=True)
class ChannelAug:
    """One twin's draw (recorded in build logs)."""

    rt60: float | None  # seconds, or no room
    snr_db: float | None  # additive noise, or none
    noise: str  # white | pink | brown | real
    codec: str | None  # a key of CODECS, or none
    band: str | None  # a key of BANDS, or none
    gain_db: float

    def to_dict(self) -> dict:
        return asdict(self)


def draw(seed: int, key: int, real_noise: bool = False) -> ChannelAug:
    """Parameters of twin ``key`` (each effect present with its own probability)."""
    rng = np.random.default_rng([seed, key, 11])
    noises = ["white", "pink", "brown"] + (["real", "real"] if real_noise else [])
    return ChannelAug(
        rt60=float(rng.uniform(0.15, 0.9)) if rng.random() < 0.5 else None,
        snr_db=float(rng.uniform(0.0, 25.0)) if rng.random() < 0.7 else None,
        noise=str(rng.choice(noises)),
        codec=str(rng.choice(sorted(CODECS))) if rng.random() < 0.5 else None,
        band=str(rng.choice(sorted(BANDS))) if rng.random() < 0.4 else None,
        gain_db=float(rng.uniform(-30.0, 6.0)),
    )


def room_impulse(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A synthetic RIR ``[L]`` f32: direct path + exponentially decaying noise (-60 dB at ``rt60`` s)."""
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    tail[: int(0.003 * SR)] = 0.0  # first reflections arrive after ~3 ms
    rir = np.concatenate([[1.0], tail * 0.3])
    return (rir / np.sqrt(np.sum(rir ** 2))).astype(np.float32)


def codec_round_trip(x: np.ndarray, codec: str) -> np.ndarray:
    """Encode with ffmpeg and decode back to 16 kHz mono f32 (same length). Raises ``RuntimeError`` on failure."""
    args, fmt = CODECS[codec]
    enc = subprocess.run(["ffmpeg", "-v", "error", "-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", "-", *args,
                          "-f", fmt, "-"], input=x.astype(np.float32).tobytes(), capture_output=True)
    if enc.returncode:
        raise RuntimeError(f"ffmpeg {codec} encode: {enc.stderr.decode()[-200:]}")
    dec = subprocess.run(["ffmpeg", "-v", "error", "-i", "-", "-f", "f32le", "-ar", str(SR), "-ac", "1", "-"],
                         input=enc.stdout, capture_output=True)
    if dec.returncode:
        raise RuntimeError(f"ffmpeg {codec} decode: {dec.stderr.decode()[-200:]}")
    y = np.frombuffer(dec.stdout, dtype=np.float32)
    return np.pad(y[: len(x)], (0, max(0, len(x) - len(y)))).astype(np.float32)


def apply(x: np.ndarray, aug: ChannelAug, seed: int, key: int, noise_bank: list[np.ndarray] | None = None) -> np.ndarray:
    """The twin of ``x`` ``[N]`` f32 under ``aug``; ``noise_bank``: real non-speech clips for ``noise='real'``."""
    rng = np.random.default_rng([seed, key, 12])
    y = x.astype(np.float32)
    if len(y) < 64:  # nothing to filter or encode (an empty or near-empty clip passes unchanged)
        return y.copy()
    if aug.rt60 is not None:
        y = fftconvolve(y, room_impulse(rng, aug.rt60))[: len(x)].astype(np.float32)
    if aug.snr_db is not None:
        if aug.noise == "real" and noise_bank:
            src = noise_bank[int(rng.integers(len(noise_bank)))]
            reps = int(np.ceil(len(y) / max(1, len(src))))
            start = int(rng.integers(max(1, len(src))))
            noise = np.tile(np.roll(src, -start), reps)[: len(y)]
            noise = noise / (np.sqrt(np.mean(noise ** 2)) + 1e-9)
        else:
            noise = colored_noise(rng, len(y), aug.noise if aug.noise != "real" else "pink")
        p = float(np.mean(y ** 2)) + 1e-10
        y = y + noise * np.sqrt(p / 10 ** (aug.snr_db / 10))
    if aug.band is not None:
        lo, hi = BANDS[aug.band]
        y = sosfilt(butter(4, [lo, hi], btype="band", fs=SR, output="sos"), y)
    peak = float(np.max(np.abs(y))) + 1e-9
    y = y * (0.5 / peak) * 10 ** (aug.gain_db / 20)  # level change relative to a -6 dBFS peak
    y = np.clip(y, -1.0, 1.0).astype(np.float32)
    if aug.codec is not None:
        y = codec_round_trip(y, aug.codec)
    return y


__all__ = ["BANDS", "CODECS", "ChannelAug", "apply", "codec_round_trip", "draw", "room_impulse"]

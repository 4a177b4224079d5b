"""Fixtures and helpers of the audio decoding tests (``test_audio.py``, ``test_audio_refusals.py``): real clips made by
espeak-ng, sox and ffmpeg at test time, WAV bytes, cross-correlation alignment, a RIFF chunk walk."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

LSB16 = 1 / 32768  # one 16-bit PCM step
ALSA = Path("/usr/share/sounds/alsa/Front_Center.wav")

needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("espeak-ng", "sox", "ffmpeg")),
                                 reason="espeak-ng, sox and ffmpeg are needed to make the fixtures")


def run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """One espeak-ng utterance (22.05 kHz mono), a second voice, and sox conversions of them."""
    d = tmp_path_factory.mktemp("audio")
    run("espeak-ng", "-w", d / "raw.wav", "The quick brown fox jumps over the lazy dog")
    run("espeak-ng", "-v", "en+f3", "-w", d / "raw2.wav", "Speech prompts steer a frozen unit language model")
    run("sox", d / "raw.wav", "-b", "16", d / "utt.wav")  # plain 16-bit PCM WAV written by sox
    return d


def encode(clips: Path, name: str) -> Path:
    """Encode the utterance into ``name`` with sox (wav/flac/ogg) or ffmpeg (mp3/opus); skip if unavailable."""
    out = clips / name
    if not out.exists():
        cmd = {"flac": ["sox", clips / "utt.wav", out], "ogg": ["sox", clips / "utt.wav", "-C", "5", out],
               "mp3": ["ffmpeg", "-v", "error", "-i", clips / "utt.wav", "-c:a", "libmp3lame", "-b:a", "64k", out],
               "opus": ["ffmpeg", "-v", "error", "-i", clips / "utt.wav", "-c:a", "libopus", "-b:a", "64k", out]}
        try:
            run(*cmd[name.split(".")[1]])
        except subprocess.CalledProcessError as e:
            pytest.skip(f"encoder for {name} unavailable: {e.stderr.decode()[-200:]}")
    return out


def aligned(a: np.ndarray, b: np.ndarray, max_lag: int = 2000) -> tuple[int, float, float]:
    """Best lag of ``a`` against ``b`` (samples, by FFT cross-correlation), then the correlation and the
    RMS error relative to the RMS of ``b`` over the overlap."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    n = 2 * max(len(a), len(b))
    cc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    lags = np.r_[0:max_lag + 1, -max_lag:0]
    lag = int(lags[np.argmax(cc[lags % n])])
    x, y = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
    m = min(len(x), len(y))
    x, y = x[:m], y[:m]
    return lag, float(np.corrcoef(x, y)[0, 1]), float(np.sqrt(np.mean((x - y) ** 2) / np.mean(y**2)))


def wav_bytes(x: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def data_size_offset(wav: bytes) -> int:
    """Byte offset of the data chunk's size field (RIFF chunk walk)."""
    pos = 12
    while wav[pos:pos + 4] != b"data":
        pos += 8 + struct.unpack("<I", wav[pos + 4:pos + 8])[0]
    return pos + 4

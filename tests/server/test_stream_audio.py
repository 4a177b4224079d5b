"""A stream's frames at another rate than 16 kHz (server/stream_audio.py): digital silence at the start is written as
zeros and the resampler starts at the first sound, so a stream that begins with zeros carries, after them, exactly
the samples of the same stream without them; a stream that begins with sound is resampled as before."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from server.stream_audio import FrameDecoder


def _stream(x: np.ndarray, rate: int, step: int, encoding: str = "f32") -> np.ndarray:
    d = FrameDecoder(rate, encoding)
    if encoding == "pcm16":
        frames = [(x[i:i + step] * 32768).astype("<i2").tobytes() for i in range(0, x.size, step)]
    else:
        frames = [x[i:i + step].astype("<f4").tobytes() for i in range(0, x.size, step)]
    return np.concatenate([d.decode(f) for f in frames] + [d.decode(b""), d.flush()])


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
@pytest.mark.parametrize("encoding", ["f32", "pcm16"])
def test_leading_silence_stays_zeros_and_the_sound_after_it_is_the_tight_streams(rate, encoding):
    rng = np.random.default_rng(rate)
    tight = np.round(rng.standard_normal(rate) * 0.1 * 32768) / 32768  # exact in both encodings
    tight[0] = 0.25
    step = rate // 10 + 3  # frames that do not line up with the silence
    want = _stream(tight, rate, step, encoding)
    assert np.array_equal(want, soxr.resample(tight.astype(np.float32), rate, 16000, quality="HQ"))  # as before
    padded = np.concatenate([np.zeros(rate // 2 + 7), tight])
    got = _stream(padded, rate, step, encoding)
    a = got.size - want.size
    assert not got[:a].any() and np.array_equal(got[a:], want)
    assert got.size == soxr.resample(padded.astype(np.float32), rate, 16000, quality="HQ").size
    silent = _stream(np.zeros(rate), rate, step, encoding)  # only zeros: zeros, as long as soxr would make them
    assert not silent.any() and silent.size == 16000

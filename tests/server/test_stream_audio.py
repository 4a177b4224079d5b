"""A stream's frames at another rate than 16 kHz (server/stream_audio.py) give the samples a file upload of the same
audio gives (speechprompt.audio.from_pcm): leading digital silence of 0.2 s or more is written as zeros and the
resampler starts at the first sound; shorter leading zeros, and a stream that begins with sound, are resampled as
before (bit for bit soxr over the whole stream)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soxr

from server.stream_audio import FrameDecoder
from speechprompt.audio import from_pcm


def _stream(x: np.ndarray, rate: int, step: int, encoding: str = "f32") -> np.ndarray:
    d = FrameDecoder(rate, encoding)
    scale, dtype = (32768, "<i2") if encoding == "pcm16" else (1, "<f4")
    frames = []
    for i in range(0, x.size, step):
        frames += [(x[i:i + step] * scale).astype(dtype).tobytes(), b""]  # an empty frame after each one
    return np.concatenate([d.decode(f) for f in frames] + [d.flush()])


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
@pytest.mark.parametrize("encoding", ["f32", "pcm16"])
def test_a_stream_gives_the_samples_of_the_same_audio_uploaded_as_a_file(rate, encoding):
    rng = np.random.default_rng(rate)
    edge = math.ceil(0.2 * rate)
    step = rate // 10 + 3  # frames that do not line up with the silence
    for extra in (0, 1, 2):
        sound = np.round(rng.standard_normal(rate + extra) * 0.1 * 32768) / 32768  # exact in both encodings
        sound[0] = sound[-1] = 0.25
        for lead in (0, 1, 2, edge - 1, edge, rate // 2 + extra):
            x = np.concatenate([np.zeros(lead), sound]).astype(np.float32)
            got = _stream(x, rate, step, encoding)
            want = from_pcm(x, rate).samples
            assert np.array_equal(got, want), (lead, extra)
            if lead < edge:  # no silent edge: soxr over the whole stream, as before
                assert np.array_equal(got, soxr.resample(x, rate, 16000, quality="HQ")), (lead, extra)
            else:  # zeros, then what the sound alone gives (the last sample cut or a zero added: soxr's length)
                tail = soxr.resample(sound.astype(np.float32), rate, 16000, quality="HQ")
                a = int(np.flatnonzero(got)[0])
                n = min(tail.size, got.size - a)
                assert a >= 3200 and np.array_equal(got[a:a + n], tail[:n]) and got.size - a - n <= 1
                assert got.size == soxr.resample(x, rate, 16000, quality="HQ").size
    silent = _stream(np.zeros(rate, np.float32), rate, step, encoding)  # only zeros: zeros, soxr's length
    assert not silent.any() and silent.size == 16000

"""scripts/real_codec_check.py: each phone/browser format it measures is made as named and read back by the server's
decoder in that container and rate; files are made once, named by content; the table shows every format."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from speechprompt.audio import decode_audio
from tests.scripts import load_script


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg encodes the formats")
def test_formats_are_what_they_say_and_made_once(tmp_path):
    check = load_script("real_codec_check")
    t = np.arange(16000) / 16000
    src = tmp_path / "clip.wav"
    sf.write(src, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    want = {"m4a-aac-64k": ("MP4", 44100), "webm-opus-24k": ("WEBM", 48000), "3gp-aac-12k-8khz": ("MP4", 8000),
            "wav-quiet-30db": ("WAV", 16000), "wav-clipped-12db": ("WAV", 16000)}
    assert set(check.FORMATS) == set(want)
    for fmt, (container, rate) in want.items():
        path = check.encode(src, fmt, tmp_path / "out")
        d = decode_audio(path.read_bytes())
        assert (d.input_format, d.input_sample_rate, d.input_channels) == (container, rate, 1)
        assert np.argmax(np.abs(np.fft.rfft(d.samples[:16000]))) == 440
        if fmt == "wav-quiet-30db":  # 30 dB below the source's peak of 0.3
            assert abs(20 * np.log10(np.abs(d.samples).max() / 0.3) + 30) < 0.2
        if fmt == "wav-clipped-12db":  # 0.3 x 4 = 1.2: clipped at full scale
            assert np.abs(d.samples).max() >= 0.999 and np.mean(np.abs(d.samples) >= 0.999) > 0.2
        stamp = path.stat().st_mtime_ns
        assert check.encode(src, fmt, tmp_path / "out") == path and path.stat().st_mtime_ns == stamp  # kept
    row = {"n": 3, "wav": 1.0, **{f: {"accuracy": 2 / 3, "same_label": 2 / 3, "refused": 0} for f in want}}
    row["webm-opus-24k"]["refused"] = 1
    text = check.table({"digits": row})
    assert text.splitlines()[2] == "| digits | 3 | 1.000 | 0.667 (67% same) | 0.667 (67% same; 1 refused) | " \
        "0.667 (67% same) | 0.667 (67% same) | 0.667 (67% same) |"

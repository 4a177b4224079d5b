"""Tests for speechprompt.audio: real files made by espeak-ng, sox and ffmpeg at test time."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess

import numpy as np
import pytest
import soundfile as sf

from speechprompt.audio import (
    DecodedAudio,
    decode_audio,
)
from tests import audio_fixtures
from tests.audio_fixtures import ALSA, LSB16, aligned, data_size_offset, encode, needs_tools, run, wav_bytes

clips = audio_fixtures.clips  # the module-scoped fixture (espeak-ng utterances and sox conversions)


# ---- decoding real formats ---------------------------------------------------------------------------

@needs_tools
def test_wav_from_path_bytes_and_bytearray_agree(clips):
    d = decode_audio(clips / "utt.wav")
    assert isinstance(d, DecodedAudio)
    assert (d.sample_rate, d.input_sample_rate, d.input_channels, d.input_format, d.resampled) == \
        (16000, 22050, 1, "WAV", True)
    assert d.samples.dtype == np.float32 and d.samples.ndim == 1
    frames = sf.info(str(clips / "utt.wav")).frames
    assert abs(d.samples.size - frames * 16000 / 22050) <= 1
    assert d.duration_s == d.samples.size / 16000
    raw = (clips / "utt.wav").read_bytes()
    np.testing.assert_array_equal(decode_audio(raw).samples, d.samples)
    np.testing.assert_array_equal(decode_audio(bytearray(raw)).samples, d.samples)


@needs_tools
@pytest.mark.parametrize("name,fmt,lossy", [("utt.flac", "FLAC", False), ("utt.ogg", "OGG", True),
                                            ("utt.mp3", "MP3", True), ("utt.opus", "OGG", True)])
def test_formats_decode_to_the_same_utterance(clips, name, fmt, lossy):
    ref = decode_audio(clips / "utt.wav").samples
    d = decode_audio(encode(clips, name).read_bytes())
    assert d.input_format == fmt and d.input_channels == 1 and d.sample_rate == 16000
    if not lossy:  # FLAC is lossless: bit-identical PCM, identical resampling
        np.testing.assert_array_equal(d.samples, ref)
        return
    lag, corr, rel_err = aligned(d.samples, ref)
    # ffmpeg writes gapless info (LAME tag, Opus pre-skip) and libsndfile honours it: no offset beyond the
    # sub-sample delay of Opus's internal 48 kHz path (measured 0 or -1 sample), same length within 2 %. Lossy codecs drop high-frequency detail: measured corr 0.998-0.999 and relative
    # RMS error 0.05-0.07 here (Vorbis q5, MP3 and Opus at 64 kb/s), so 0.98 / 0.2 separate "same utterance, lossy" from any real defect (a
    # wrong rate or channel mix gives corr < 0.5).
    assert abs(lag) <= 2
    assert abs(d.samples.size - ref.size) <= 0.02 * ref.size
    assert corr > 0.98 and rel_err < 0.2


@needs_tools
@pytest.mark.parametrize("kind", ["stereo44k", "mono8k"])
def test_resampling_and_downmix_match_sox(clips, kind):
    src, ref = clips / f"{kind}.wav", clips / f"{kind}_ref.wav"
    if kind == "stereo44k":  # two different voices, one per channel, so the downmix matters
        run("sox", "-M", clips / "utt.wav", clips / "raw2.wav", "-r", "44100", "-b", "16", src)
    else:
        run("sox", clips / "utt.wav", "-r", "8000", src)
    run("sox", src, "-r", "16000", "-c", "1", ref)  # sox's own downmix (mean) + resampler
    d = decode_audio(src)
    expected, rate = sf.read(str(ref), dtype="float32")
    assert rate == 16000 and d.sample_rate == 16000 and d.samples.ndim == 1
    assert d.input_channels == (2 if kind == "stereo44k" else 1)
    assert d.samples.size == expected.size
    lag, corr, _ = aligned(d.samples, expected)
    err = d.samples.astype(np.float64) - expected
    # soxr "HQ" is the same recipe as sox's default `rate -h`; what remains is sox writing 16-bit PCM with
    # TPDF dither: LSB/sqrt(12) quantisation + LSB/sqrt(6) dither = 1.5e-5 RMS (measured 1.56e-5, max
    # 2.2 LSB). A mono pick instead of the mean, or another filter, is off by orders of magnitude more.
    assert lag == 0 and corr > 0.9999
    assert np.sqrt(np.mean(err**2)) < 2 * LSB16
    assert np.abs(err).max() < 4 * LSB16


@pytest.mark.skipif(not ALSA.exists() or not shutil.which("sox"), reason="alsa-utils recordings / sox missing")
def test_real_48k_human_recording():
    info = sf.info(str(ALSA))
    d = decode_audio(ALSA)
    assert (d.input_sample_rate, d.input_channels, d.resampled) == (48000, 1, True)
    assert abs(d.duration_s - info.frames / 48000) <= 1 / 16000
    assert 1.0 < d.duration_s < 2.0  # the spoken channel name lasts ~1.4 s
    assert 0.05 < np.sqrt(np.mean(d.samples**2)) and np.abs(d.samples).max() <= 1.0


def test_16k_input_is_not_resampled(tmp_path):
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    d = decode_audio(wav_bytes(x, 16000, "FLOAT"))
    assert not d.resampled and d.duration_s == 1.0
    np.testing.assert_array_equal(d.samples, x)


def test_float_beyond_full_scale_is_kept_not_clipped():
    x = np.full(800, 1.5, dtype=np.float32)
    x[::2] = -1.25
    d = decode_audio(wav_bytes(x, 16000, "FLOAT"))
    np.testing.assert_array_equal(d.samples, x)


# ---- WAV headers with wrong data sizes ---------------------------------------------------------------

@needs_tools
@pytest.mark.parametrize("claimed", [0, 1000])
def test_wav_with_too_small_data_size_recovers_all_samples(clips, tmp_path, claimed):
    good = (clips / "utt.wav").read_bytes()
    bad = bytearray(good)
    off = data_size_offset(good)
    bad[off:off + 4] = struct.pack("<I", claimed)
    bad[4:8] = struct.pack("<I", 0)  # streamed recorders leave the RIFF size unset too
    assert sf.read(io.BytesIO(bytes(bad)))[0].shape[0] == claimed // 2  # libsndfile alone loses the samples
    (tmp_path / "bad.wav").write_bytes(bad)
    expected = decode_audio(good).samples
    np.testing.assert_array_equal(decode_audio(bytes(bad)).samples, expected)
    np.testing.assert_array_equal(decode_audio(tmp_path / "bad.wav").samples, expected)


def test_zero_size_recovery_keeps_frame_alignment_for_stereo_24bit():
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1001, 2))
    good = wav_bytes(x, 16000, "PCM_24") + b"\x07"  # plus one stray trailing byte (not a whole frame)
    bad = bytearray(good)
    bad[data_size_offset(good):data_size_offset(good) + 4] = b"\0\0\0\0"
    np.testing.assert_array_equal(decode_audio(bytes(bad)).samples, decode_audio(good).samples)


def test_chunk_after_data_is_not_taken_for_samples():
    x = np.random.default_rng(1).uniform(-0.5, 0.5, 1600)
    good = wav_bytes(x, 16000)
    extra = b"LIST" + struct.pack("<I", 10) + b"INFOISFT\0\0"
    with_list = bytearray(good + extra)
    with_list[4:8] = struct.pack("<I", len(with_list) - 8)
    np.testing.assert_array_equal(decode_audio(bytes(with_list)).samples, decode_audio(good).samples)


@needs_tools
def test_ffmpeg_piped_wav_with_unknown_sizes(clips):
    piped = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clips / "utt.wav"), "-f", "wav", "-"],
                           check=True, capture_output=True).stdout
    assert piped[4:8] == b"\xff\xff\xff\xff"  # non-seekable output: sizes left as 0xFFFFFFFF
    np.testing.assert_array_equal(decode_audio(piped).samples, decode_audio(clips / "utt.wav").samples)



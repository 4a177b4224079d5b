"""Tests for speechprompt.audio: what is refused and why (typed errors, lengths from decoded samples, codecs,
out-of-range floats), on real files made by espeak-ng, sox and ffmpeg at test time."""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pytest
import soundfile as sf

from speechprompt.audio import (
    MIN_SAMPLES,
    AudioError,
    AudioOutOfRange,
    AudioTooLong,
    AudioTooShort,
    EmptyAudio,
    NonFiniteAudio,
    UndecodableAudio,
    check_samples,
    decode_audio,
    from_pcm,
)
from tests import audio_fixtures
from tests.audio_fixtures import aligned, needs_tools, run, wav_bytes

clips = audio_fixtures.clips  # the module-scoped fixture (espeak-ng utterances and sox conversions)


# ---- typed errors ------------------------------------------------------------------------------------

@needs_tools
@pytest.mark.parametrize("maker,says", [
    (lambda d: (run("ffmpeg", "-v", "error", "-i", d / "utt.wav", "-c:a", "ac3", d / "x.mp4"),
                (d / "x.mp4").read_bytes())[1], "MP4/M4A/3GP file's audio is ac3"),
    (lambda d: (run("ffmpeg", "-v", "error", "-i", d / "utt.wav", "-c:a", "mp2", d / "x.mkv"),
                (d / "x.mkv").read_bytes())[1], "WebM/Matroska file's audio is mp2"),
    (lambda d: (run("sox", d / "utt.wav", d / "x.aiff"), (d / "x.aiff").read_bytes())[1], "AIFF"),
])
def test_unaccepted_audio_containers(clips, tmp_path, maker, says):
    for f in clips.glob("x.*"):
        f.unlink()
    with pytest.raises(UndecodableAudio) as e:
        decode_audio(maker(clips))
    assert says in str(e.value) and "FLAC" in str(e.value)


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hi")
    return buf.getvalue()


@pytest.mark.parametrize("payload,says", [
    (b"", "empty"), (pickle.dumps({"w": [1.0]}, protocol=4), "pickle (protocol 4)"),
    (b'  {"audio": [0.1, 0.2]}', "JSON"), (b"<!DOCTYPE html><html><body>502</body></html>", "HTML"),
    (_zip(), "zip"), ("caf\u00e9 plain words, not audio".encode(), "plain text"),
    (bytes(range(200)), "unrecognised binary"), (b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0" + b"\x01" * 24, "RIFF/WAVE"),
    (b"RIFF\x24\0\0\0AVI LIST" + b"\0" * 50, "a RIFF container of type 'AVI' (not WAVE)"), (b"fLaC" + b"\0" * 60, "FLAC"), (b"ID3\x04" + b"\0" * 60, "MPEG"), (b"\xff\xf1\x50\x80" + b"\0" * 60, "ADTS"),
])
def test_undecodable_payloads_say_what_they_look_like(payload, says):
    with pytest.raises(UndecodableAudio) as e:
        decode_audio(payload)
    err = e.value
    assert isinstance(err, AudioError) and err.code == "undecodable_audio" and err.status == 415
    assert says in str(err)
    assert all(f in err.accepted for f in ("WAV", "FLAC", "Ogg Vorbis", "Ogg Opus", "MP3"))


def test_empty_wav():
    with pytest.raises(EmptyAudio) as e:
        decode_audio(wav_bytes(np.zeros(0, np.float32), 16000))
    assert (e.value.code, e.value.status) == ("empty_audio", 422)


def test_too_short_boundary_is_one_hubert_window():
    x = np.full(MIN_SAMPLES, 0.1, dtype=np.float32)
    assert decode_audio(wav_bytes(x, 16000)).samples.size == MIN_SAMPLES == 400
    with pytest.raises(AudioTooShort) as e:
        decode_audio(wav_bytes(x[:-1], 16000))
    assert (e.value.code, e.value.status) == ("audio_too_short", 422) and "400" in e.value.accepted
    with pytest.raises(AudioTooShort):  # 150 samples at 8 kHz -> 300 at 16 kHz after resampling
        decode_audio(wav_bytes(x[:150], 8000))
    with pytest.raises(AudioTooShort) as e:  # one sample at 48 kHz resamples to none: too short, not "no samples"
        decode_audio(wav_bytes(x[:1], 48000))
    assert "1 sample(s) at 48000 Hz" in str(e.value) and e.value.accepted == "at least 1199 samples at 48000 Hz (~25 ms)"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav(bad):
    x = np.zeros(1600, dtype=np.float32)
    x[700] = bad
    with pytest.raises(NonFiniteAudio) as e:
        decode_audio(wav_bytes(x, 8000, "FLOAT"))
    assert (e.value.code, e.value.status) == ("non_finite_audio", 422) and "1 of 1600" in str(e.value)


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg makes the hour-long file")
def test_hour_long_file_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    long = tmp_path / "hour.flac"
    run("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "3600", "-c:a", "flac", long)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the header already says it is too long")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    with pytest.raises(AudioTooLong) as e:
        decode_audio(long.read_bytes())  # default limit: 600 s
    assert (e.value.code, e.value.status) == ("audio_too_long", 413)
    assert "3600.0 s" in str(e.value) and "600 s" in e.value.accepted


def test_length_limit_boundary_in_frames():
    x = np.full(8001, 0.1, dtype=np.float32)  # 1 s + one frame at 8 kHz
    assert decode_audio(wav_bytes(x[:8000], 8000), max_seconds=1.0).duration_s == 1.0
    with pytest.raises(AudioTooLong):
        decode_audio(wav_bytes(x, 8000), max_seconds=1.0)
    assert decode_audio(wav_bytes(x, 8000), max_seconds=None).samples.size == 16002


def test_check_samples_for_callers_with_pcm():
    assert check_samples(np.full(400, 0.1, np.float32), 16000) is None
    for x, err in [(np.zeros(0, np.float32), EmptyAudio), (np.full(399, 0.1, np.float32), AudioTooShort),
                   (np.array([0.0] * 500 + [np.nan], np.float32), NonFiniteAudio)]:
        with pytest.raises(err):
            check_samples(x, 16000)
    with pytest.raises(AudioTooShort):  # 25 ms at 48 kHz is 1200 samples
        check_samples(np.full(1199, 0.1, np.float32), 48000)
    with pytest.raises(ValueError):
        check_samples(np.zeros((400, 2), np.float32), 16000)



def test_from_pcm_equals_decoding_the_same_samples_as_a_float_wav():
    rng = np.random.default_rng(3)
    for rate in (16000, 8000, 44100):
        x = (0.3 * rng.standard_normal(rate // 2)).astype(np.float32)  # 0.5 s
        buf = io.BytesIO()
        sf.write(buf, x, rate, format="WAV", subtype="FLOAT")
        ref, got = decode_audio(buf.getvalue()), from_pcm(x, rate)
        np.testing.assert_array_equal(got.samples, ref.samples)
        assert (got.input_sample_rate, got.resampled, got.input_format) == (rate, rate != 16000, "PCM")
        assert got.duration_s == ref.duration_s


def test_from_pcm_refuses_what_decoding_refuses():
    ok = np.full(8000, 0.1, np.float32)
    for x, rate, kw, err in [(np.zeros(0, np.float32), 16000, {}, EmptyAudio),
                             (np.full(399, 0.1, np.float32), 16000, {}, AudioTooShort),
                             (np.array([0.0] * 500 + [np.inf], np.float32), 16000, {}, NonFiniteAudio),
                             (np.full(800, 1e6, np.float32), 16000, {}, AudioOutOfRange),
                             (np.full(16001, 0.1, np.float32), 16000, {"max_seconds": 1.0}, AudioTooLong),
                             (ok, 999, {}, UndecodableAudio), (ok, 400_000, {}, UndecodableAudio)]:
        with pytest.raises(err):
            from_pcm(x, rate, **kw)
    assert from_pcm(np.full(16000, 0.1, np.float32), 16000, max_seconds=1.0).duration_s == 1.0
    with pytest.raises(ValueError):
        from_pcm(np.zeros((400, 2), np.float32), 16000)



# ---- lengths are decoded samples, never a header's guess; codecs; out-of-range floats ---------------------

needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg makes the fixture")


def ffmpeg_bytes(*args: str) -> bytes:
    return subprocess.run(["ffmpeg", "-v", "error", *args], check=True, capture_output=True).stdout


@pytest.mark.parametrize("peak", [1e6, 1e30, -50.0])
def test_float_wav_far_beyond_full_scale_is_refused_saying_why(peak):
    x = np.full(1600, 0.1, dtype=np.float32)
    x[800] = peak
    with pytest.raises(AudioOutOfRange) as e:
        decode_audio(wav_bytes(x, 16000, "FLOAT"))
    assert (e.value.code, e.value.status) == ("audio_out_of_range", 422)
    assert "outside full scale" in str(e.value) and "[-1, 1]" in str(e.value) and "1.0" in e.value.accepted


@needs_ffmpeg
def test_streamed_flac_without_total_frames_is_decoded_and_measured():
    tone = ("-f", "lavfi", "-i", "sine=frequency=440:duration=2.5:sample_rate=16000")
    flac = ffmpeg_bytes(*tone, "-f", "flac", "pipe:1")  # a pipe: STREAMINFO keeps total samples = 0
    with sf.SoundFile(io.BytesIO(flac)) as f:
        assert f.frames > 2**62  # libsndfile: unknown length
    d = decode_audio(flac, max_seconds=30)
    assert d.duration_s == pytest.approx(2.5, abs=1e-3)
    with pytest.raises(AudioTooLong) as e:  # the limit counts real samples
        decode_audio(flac, max_seconds=2.0)
    assert "2 s" in str(e.value)


@needs_ffmpeg
def test_vbr_mp3_without_xing_header_is_decoded_to_its_real_length():
    tone = ("-f", "lavfi", "-i", "sine=frequency=440:duration=21.6:sample_rate=16000")
    mp3 = ffmpeg_bytes(*tone, "-c:a", "libmp3lame", "-q:a", "5", "-write_xing", "0", "-f", "mp3", "pipe:1")
    with sf.SoundFile(io.BytesIO(mp3)) as f:
        assert f.frames / 16000 < 5  # libsndfile's guess from the first frame
    d = decode_audio(mp3, max_seconds=30)
    assert d.duration_s == pytest.approx(21.6, abs=0.1)
    long = ffmpeg_bytes("-f", "lavfi", "-i", "sine=frequency=440:duration=41:sample_rate=16000",
                        "-c:a", "libmp3lame", "-q:a", "5", "-write_xing", "0", "-f", "mp3", "pipe:1")
    with pytest.raises(AudioTooLong) as e:
        decode_audio(long, max_seconds=30)
    assert "41." in str(e.value)


@pytest.mark.parametrize("subtype", ["GSM610", "G721_32", "NMS_ADPCM_16", "NMS_ADPCM_32"])
def test_telephony_codec_wavs_decode(subtype):
    x = (0.3 * np.sin(2 * np.pi * 300 * np.arange(8000) / 8000)).astype(np.float32)
    d = decode_audio(wav_bytes(x, 8000, subtype))
    assert d.input_format == "WAV" and d.duration_s == pytest.approx(1.0, abs=0.05)  # GSM: 320-sample blocks
    lag, corr, _ = aligned(d.samples, decode_audio(wav_bytes(x, 8000, "FLOAT")).samples)
    assert corr > 0.9


def test_unsupported_wav_codec_is_named_in_the_415():
    fmt = struct.pack("<HHIIHH", 0x0057, 1, 8000, 1600, 32, 0)  # AMR-NB format tag
    wav = b"RIFF" + struct.pack("<I", 4 + 8 + 16 + 8 + 64) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt \
        + b"data" + struct.pack("<I", 64) + bytes(64)
    with pytest.raises(UndecodableAudio) as e:
        decode_audio(wav)
    assert "AMR-NB (format tag 0x0057)" in str(e.value)

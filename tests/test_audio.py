"""Tests for speechprompt.audio: real files made by espeak-ng, sox and ffmpeg at test time."""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechprompt.audio import (
    MIN_SAMPLES,
    AudioError,
    AudioOutOfRange,
    AudioTooLong,
    AudioTooShort,
    DecodedAudio,
    EmptyAudio,
    NonFiniteAudio,
    UndecodableAudio,
    check_samples,
    decode_audio,
    from_pcm,
)

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


# ---- typed errors ------------------------------------------------------------------------------------

@needs_tools
@pytest.mark.parametrize("maker,says", [
    (lambda d: (run("ffmpeg", "-v", "error", "-i", d / "utt.wav", "-c:a", "aac", d / "x.m4a"),
                (d / "x.m4a").read_bytes())[1], "MP4/M4A/AAC"),
    (lambda d: (run("ffmpeg", "-v", "error", "-i", d / "utt.wav", "-c:a", "libopus", d / "x.webm"),
                (d / "x.webm").read_bytes())[1], "WebM/Matroska"),
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
    (b"fLaC" + b"\0" * 60, "FLAC"), (b"ID3\x04" + b"\0" * 60, "MPEG"), (b"\xff\xf1\x50\x80" + b"\0" * 60, "ADTS"),
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

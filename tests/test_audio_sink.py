"""Tests for speechprompt.audio_sink: decoded blocks resampled as they arrive give the same samples as resampling the
whole clip, report failures as a whole-clip check would, and keep memory at the model rate (a real process)."""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import soxr

from speechprompt.audio import (
    AudioOutOfRange,
    NonFiniteAudio,
    UndecodableAudio,
    decode_audio,
    from_pcm,
)
from speechprompt.audio_sink import ModelRateSink


def _blocks(x: np.ndarray, rng: np.random.Generator):
    at = 0
    while at < x.size:
        n = int(rng.integers(1, 9000))
        yield x[at:at + n].copy()
        at += n


@pytest.mark.parametrize("rate", [1000, 8000, 11025, 22050, 44100, 48000, 96000, 384000])
def test_blocks_resampled_as_they_arrive_equal_the_whole_clip_resampled(rate):
    rng = np.random.default_rng(rate)
    x = (rng.standard_normal(int(rate * 1.7)) * 0.2).astype(np.float32)
    sink = ModelRateSink(16000, "HQ")
    sink.open(rate, 1)
    for block in _blocks(x, rng):
        sink.add(block)
    got = sink.finish()
    want = soxr.resample(x, rate, 16000, quality="HQ")
    assert sink.frames == x.size and sink.resampling
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got, want)  # bit for bit: soxr keeps its filter state across chunks


def _sink_out(x: np.ndarray, rate: int, silent_edge_s: float, seed: int = 0) -> np.ndarray:
    sink = ModelRateSink(16000, "HQ", silent_edge_s=silent_edge_s)
    sink.open(rate, 1)
    for block in _blocks(x, np.random.default_rng(seed)):
        sink.add(block)
    return sink.finish()


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_silent_edges_stay_zeros_and_the_sound_between_is_resampled_as_if_cut_tight(rate):
    rng = np.random.default_rng(rate)
    tight = (rng.standard_normal(int(rate * 0.9)) * 0.2).astype(np.float32)
    tight[int(rate * 0.3):int(rate * 0.6)] = 0.0  # 0.3 s of zeros inside: resampled as before
    want = soxr.resample(tight, rate, 16000, quality="HQ")
    lead, trail = np.zeros(rate, np.float32), np.zeros(rate // 2, np.float32)
    padded = np.concatenate([lead, tight, trail])
    for seed in range(3):  # any cut into blocks, including blocks of zeros only
        got = _sink_out(padded, rate, 0.2, seed)
        assert np.array_equal(got, np.concatenate([np.zeros(16000, np.float32), want, np.zeros(8000, np.float32)]))
    # without the option soxr rings into the zeros before the sound: the padding is no longer digital silence
    plain = soxr.resample(padded, rate, 16000, quality="HQ")
    assert np.count_nonzero(plain[15000:16000]) > 0


@pytest.mark.parametrize("edges", [(2, 3), (int(0.19 * 48000), 0), (0, int(0.19 * 48000)), (48000 * 2, None)])
def test_clips_without_a_long_silent_edge_are_resampled_bit_for_bit_as_before(edges):
    """Short zero edges (a tight cut's first samples), a clip that is all zeros: the option changes nothing."""
    rng = np.random.default_rng(1)
    lead, trail = edges
    sound = np.zeros(0, np.float32) if trail is None else (rng.standard_normal(30000) * 0.1).astype(np.float32)
    x = np.concatenate([np.zeros(lead, np.float32), sound, np.zeros(trail or 0, np.float32)])
    assert np.array_equal(_sink_out(x, 48000, 0.2), soxr.resample(x, 48000, 16000, quality="HQ"))


@pytest.mark.parametrize("rate", [8000, 11025, 44100, 48000, 96000])
@pytest.mark.parametrize("batch", [64, 997])
def test_silent_edges_at_the_threshold_in_small_batches_and_odd_counts(monkeypatch, rate, batch):
    """Batches smaller than the zero runs (so some hold only zeros), zero runs one short of, at and past
    ceil(0.2 * rate), counts that are no multiple of the rate ratio: an edge below the threshold is resampled as
    before, one at it is written as zeros, and the clip is as long as soxr makes the whole clip."""
    import speechprompt.audio_sink as sink_mod

    monkeypatch.setattr(sink_mod, "BATCH_FRAMES", batch)
    edge = math.ceil(0.2 * rate)
    rng = np.random.default_rng(rate + batch)
    core = (rng.standard_normal(int(rate * 0.3)) * 0.2).astype(np.float32)
    core[0] = core[-1] = 0.25  # the sound starts and ends exactly there
    for lead, trail in ((edge - 1, edge + 7), (edge, 3), (edge + 13, edge), (0, edge - 1), (3 * edge + 1, 2)):
        x = np.concatenate([np.zeros(lead, np.float32), core, np.zeros(trail, np.float32)])
        got = _sink_out(x, rate, 0.2, seed=lead)
        whole = soxr.resample(x, rate, 16000, quality="HQ")
        assert got.size == whole.size, (lead, trail)  # the length soxr gives the whole clip
        lo, hi = (lead if lead >= edge else 0), (trail if trail >= edge else 0)
        if not lo and not hi:
            assert np.array_equal(got, whole)  # no silent edge: bit for bit as before
            continue
        want = soxr.resample(x[lo:x.size - hi], rate, 16000, quality="HQ")  # what the tight cut gives
        a = int(np.flatnonzero(got)[0]) if lo else 0
        n = min(want.size, got.size - a)  # the length is set at the end: the last sample may be cut, or a zero added
        assert not got[:a].any() and np.array_equal(got[a:a + n], want[:n]) and want.size - n <= (0 if hi else 1)
        assert not got[a + n:].any() and (got.size - a - n > 1) == bool(hi), (lead, trail)
        assert a >= (3200 if lo else 0) and got.size - a - n >= (3200 if hi else 0)  # the gate drops them


def test_decode_gives_a_zero_padded_48khz_recording_the_samples_of_the_tight_one():
    rng = np.random.default_rng(2)
    tight = (rng.standard_normal(48000) * 0.1).astype(np.float32)
    padded = np.concatenate([np.zeros(48000, np.float32), tight, np.zeros(48000, np.float32)])
    a, b = decode_audio(_float_wav(tight, 48000)), decode_audio(_float_wav(padded, 48000))
    assert np.array_equal(b.samples[16000:-16000], a.samples) and not b.samples[:16000].any()
    assert b.duration_s == pytest.approx(3.0)


def test_at_the_model_rate_blocks_are_joined_unchanged_and_one_block_is_not_copied():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(50_000) * 0.2).astype(np.float32)
    sink = ModelRateSink(16000, "HQ")
    sink.open(16000, 2)
    parts = list(_blocks(x, rng))
    for block in parts:
        sink.add(block)
    assert not sink.resampling and np.array_equal(sink.finish(), x)
    one = ModelRateSink(16000, "HQ")
    one.open(16000, 1)
    one.add(x)
    assert np.shares_memory(one.finish(), x)


def test_the_sink_refuses_blocks_before_open_and_a_second_open():
    sink = ModelRateSink(16000, "HQ")
    with pytest.raises(ValueError, match="open"):
        sink.add(np.zeros(10, dtype=np.float32))
    sink.open(8000, 1)
    with pytest.raises(ValueError, match="already open"):
        sink.open(8000, 1)


def _float_wav(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_nan_in_a_late_block_is_counted_over_the_whole_clip_and_beats_an_earlier_peak():
    """Blocks are 65,536 frames: a peak of 50 in the first, NaNs in the second and the fourth. A whole-clip check
    reports every NaN first; the sink must too, after the peak has already stopped its resampling."""
    x = (np.sin(np.arange(300_000) / 9) * 0.3).astype(np.float32)
    x[100] = 50.0
    x[[70_000, 70_001, 250_000]] = [np.nan, np.inf, np.nan]
    with pytest.raises(NonFiniteAudio, match="3 of 300000 samples are NaN or Inf"):
        decode_audio(_float_wav(x, 44100))


def test_the_peak_reported_is_the_whole_clips_even_after_resampling_stopped():
    x = (np.sin(np.arange(300_000) / 9) * 0.3).astype(np.float32)
    x[1_000], x[200_000] = 6.0, -71.5  # the first stops the resampling, the second is the clip's peak
    with pytest.raises(AudioOutOfRange, match="reach 71.5") as e:
        decode_audio(_float_wav(x, 48000))
    assert e.value.status == 422
    with pytest.raises(AudioOutOfRange, match="reach 71.5"):
        from_pcm(x, 48000)


@pytest.mark.parametrize("rate", [500, 400_000])
def test_a_wav_rate_outside_1_to_384_khz_is_refused_before_decoding(rate):
    x = (np.sin(np.arange(rate) / 5) * 0.3).astype(np.float32)
    with pytest.raises(UndecodableAudio, match=f"sample rate is {rate} Hz") as e:
        decode_audio(_float_wav(x, rate))
    assert e.value.status == 415 and "sample rates of 1-384 kHz" in e.value.accepted


_PEAK_RSS = textwrap.dedent("""
    import resource, sys
    from speechprompt.audio import decode_audio
    decode_audio(sys.argv[2], max_seconds=None)  # a 1 s file first: libraries loaded, buffers made
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    d = decode_audio(sys.argv[1], max_seconds=None)
    print(d.samples.size, d.input_sample_rate, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
""")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
@pytest.mark.parametrize("name, rate, seconds, channels, codec", [
    ("tone.flac", 384_000, 60, 1, ["-c:a", "flac"]),  # libsndfile's FLAC
    ("tone.mkv", 384_000, 60, 1, ["-c:a", "flac"]),  # FLAC in Matroska through PyAV
    ("tone.mp3", 48_000, 200, 2, ["-c:a", "libmp3lame", "-q:a", "5", "-write_xing", "0"])])  # VBR without Xing: ffmpeg
def test_a_long_file_is_decoded_without_holding_it_at_its_own_rate(tmp_path, name, rate, seconds, channels, codec):
    """60 s at 384 kHz is 88 MiB of float32 at its own rate and 3.7 MiB at 16 kHz; 200 s of stereo MP3 at 48 kHz,
    decoded by an ffmpeg process, 73 MiB. A separate process decodes the file after a 1 s file of the same kind, and
    its peak memory must grow by far less than the clip at its own rate (before blocks were resampled as decoded, it
    grew by 107, 173 and 149 MB)."""
    path, short = tmp_path / name, tmp_path / f"short-{name}"
    for p, length in ((path, seconds), (short, 1)):
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"sine=f=440:r={rate}:d={length}",
                        "-ac", str(channels), *codec, p], check=True)
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(path), str(short)], capture_output=True, text=True,
                          check=True)
    samples, got_rate, grew_mb = done.stdout.split()
    tolerance = 1 if "flac" in codec else 960  # MP3 adds the encoder's delay and padding (< 60 ms)
    assert int(got_rate) == rate and abs(int(samples) - seconds * 16000) <= tolerance
    at_own_rate_mb = seconds * rate * channels * 4 / 2**20
    assert float(grew_mb) < (0.25 if channels == 1 else 0.45) * at_own_rate_mb, done.stdout


def test_an_ffmpeg_decode_past_its_time_limit_is_a_415_not_a_hang(monkeypatch, tmp_path):
    """A VBR MP3 without Xing header goes through an ffmpeg process, which is killed at ``FFMPEG_TIMEOUT_S``."""
    import speechprompt.audio as audio

    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    path = tmp_path / "vbr.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anoisesrc=d=30:a=0.1:r=44100", "-c:a", "libmp3lame",
                    "-q:a", "5", "-write_xing", "0", path], check=True)
    calls = []
    real = audio._ffmpeg_to_sink
    monkeypatch.setattr(audio, "_ffmpeg_to_sink", lambda *a: calls.append(a[1:3]) or real(*a))
    assert abs(audio.decode_audio(path).samples.size - 30 * 16000) <= 960 and calls == [(44100, 1)]  # ffmpeg's path
    monkeypatch.setattr(audio, "FFMPEG_TIMEOUT_S", 0.001)
    with pytest.raises(UndecodableAudio, match="took longer than 0.001 s") as e:
        audio.decode_audio(path)
    assert e.value.status == 415

"""Phone and browser recordings (speechprompt/audio_containers.py via speechprompt.audio.decode_audio): MP4/M4A/3GP,
WebM/Matroska and ADTS AAC decode to the same utterance as the WAV they were made from; what is inside them but not
speech audio is refused with a 415 that names it; length limits hold while decoding. Files are made by espeak-ng
and ffmpeg at test time."""

from __future__ import annotations

import numpy as np
import pytest

from speechprompt.audio import AudioError, AudioTooLong, UndecodableAudio, decode_audio
from speechprompt.audio_containers import container_kind
from tests import audio_fixtures
from tests.audio_fixtures import aligned, needs_tools, run

clips = audio_fixtures.clips  # the module-scoped fixture (espeak-ng utterances)


def ffmpeg(*args) -> None:
    run("ffmpeg", "-v", "error", "-y", *args)


@needs_tools
@pytest.mark.parametrize("name,args,fmt,channels", [
    ("phone.m4a", ["-ac", "2", "-ar", "44100", "-c:a", "aac", "-b:a", "96k"], "MP4", 2),  # a voice memo
    ("browser.webm", ["-ar", "48000", "-c:a", "libopus", "-b:a", "32k"], "WEBM", 1),  # MediaRecorder
    ("android.3gp", ["-ar", "16000", "-c:a", "aac", "-b:a", "32k"], "MP4", 1),
    ("raw.aac", ["-ar", "22050", "-c:a", "aac", "-f", "adts"], "AAC", 1),
    ("lossless.m4a", ["-c:a", "alac"], "MP4", 1),
    ("vorbis.mkv", ["-c:a", "libvorbis"], "WEBM", 1),
])
def test_containers_decode_to_the_same_utterance(clips, tmp_path, name, args, fmt, channels):
    ref = decode_audio(clips / "utt.wav").samples
    ffmpeg("-i", clips / "utt.wav", *args, tmp_path / name)
    data = (tmp_path / name).read_bytes()
    assert container_kind(data[:64]) == fmt
    d = decode_audio(data)
    assert (d.input_format, d.input_channels, d.sample_rate) == (fmt, channels, 16000)
    if name == "lossless.m4a":  # ALAC is lossless and espeak-ng's 22.05 kHz stays 22.05 kHz: the same samples
        np.testing.assert_array_equal(d.samples, ref)
        return
    lag, corr, rel_err = aligned(d.samples, ref)
    # lossy codecs at these rates: the same utterance (a wrong rate or channel mix gives corr < 0.5), the encoder's
    # priming removed by the container's edit list / pre-skip, the length within 2 %. Raw ADTS has no edit list, so
    # AAC's 1024 priming samples stay in front, as with the ffmpeg command line: 1024 at 22.05 kHz = 743 at 16 kHz.
    priming = round(1024 * 16000 / 22050) if fmt == "AAC" else 0
    assert corr > 0.95 and rel_err < 0.35, (corr, rel_err)
    assert abs(lag - priming) <= 3 and abs(d.samples.size - priming - ref.size) <= 0.02 * ref.size, \
        (lag, d.samples.size, ref.size)


@needs_tools
def test_a_video_only_mp4_and_an_unlisted_codec_are_refused_by_name(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-t", "1", "-c:v", "mpeg4", tmp_path / "video.mp4")
    with pytest.raises(UndecodableAudio) as e:
        decode_audio((tmp_path / "video.mp4").read_bytes())
    assert "no audio stream (video)" in str(e.value) and e.value.status == 415 and "M4A" in e.value.accepted
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1", "-c:a", "ac3", tmp_path / "film.mkv")
    with pytest.raises(UndecodableAudio) as e:
        decode_audio((tmp_path / "film.mkv").read_bytes())
    assert "audio is ac3, which is not decoded here" in str(e.value)


@needs_tools
def test_a_phone_video_gives_its_sound_track(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-f", "lavfi", "-i", "sine=frequency=500:duration=2",
           "-t", "2", "-c:v", "mpeg4", "-c:a", "aac", "-shortest", tmp_path / "clip.mp4")
    d = decode_audio((tmp_path / "clip.mp4").read_bytes())
    spectrum = np.abs(np.fft.rfft(d.samples[:16000]))
    assert d.input_format == "MP4" and d.duration_s == pytest.approx(2.0, abs=0.1)
    assert np.argmax(spectrum) == 500  # 1 Hz bins over one second at 16 kHz: the 500 Hz tone


@needs_tools
@pytest.mark.parametrize("name,args", [
    ("long.m4a", ["-c:a", "aac", "-b:a", "16k"]),  # declares its duration in the moov box
    ("long.webm", ["-c:a", "libopus", "-b:a", "8k", "-f", "webm", "-live", "1"]),  # a live stream: no duration
])
def test_longer_than_the_limit_is_refused(tmp_path, name, args):
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=200:sample_rate=16000", "-t", "30", *args, tmp_path / name)
    data = (tmp_path / name).read_bytes()
    with pytest.raises(AudioTooLong) as e:
        decode_audio(data, max_seconds=10)
    assert e.value.status == 413 and "10 s" in str(e.value)
    assert decode_audio(data, max_seconds=40).duration_s == pytest.approx(30.0, abs=0.1)


@needs_tools
def test_damaged_containers_give_a_4xx_or_audio_never_another_error(clips, tmp_path):
    """Flipped bytes, cut files and overwritten headers, 100 per container (seed 2 once found an unknown-codec
    stream that PyAV leaves without a codec context, and damaged tags that failed UTF-8 decoding)."""
    rng = np.random.default_rng(2)
    outcomes = set()
    for name, args in (("x.m4a", ["-c:a", "aac"]), ("x.webm", ["-c:a", "libopus"]), ("x.aac", ["-c:a", "aac"]),
                       ("x.mkv", ["-c:a", "libvorbis"])):
        ffmpeg("-i", clips / "utt.wav", *args, tmp_path / name)
        good = (tmp_path / name).read_bytes()
        for k in range(100):
            b = bytearray(good)
            if k % 3 == 0:  # random bytes overwritten anywhere past the magic
                for i in rng.integers(4, len(b), int(rng.integers(1, 50))):
                    b[i] = int(rng.integers(0, 256))
            elif k % 3 == 1:  # cut short
                b = b[: int(rng.integers(8, len(b)))]
            else:  # eight random bytes in the header
                i = int(rng.integers(8, min(400, len(b))))
                b[i : i + 8] = rng.integers(0, 256, 8).astype(np.uint8).tobytes()
            try:
                d = decode_audio(bytes(b))
                assert d.samples.dtype == np.float32 and np.isfinite(d.samples).all()
                outcomes.add("audio")
            except AudioError as e:
                assert e.status in (413, 415, 422), e
                outcomes.add(type(e).__name__)
    assert {"audio", "UndecodableAudio"} <= outcomes


@needs_tools
def test_channel_counts_past_film_sound_are_refused_and_5_1_is_downmixed(tmp_path):
    tone = "|".join(["sin(600*PI*t)"] * 10)  # ten channels, one expression each
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc={tone}:s=16000:d=1", "-c:a", "pcm_s16le", tmp_path / "x.mkv")
    with pytest.raises(UndecodableAudio) as e:
        decode_audio((tmp_path / "x.mkv").read_bytes())
    assert "has 10 channels; 1 to 8 are decoded here" in str(e.value)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1", "-ac", "6", "-c:a", "aac", tmp_path / "film.m4a")
    d = decode_audio((tmp_path / "film.m4a").read_bytes())
    assert d.input_channels == 6 and d.duration_s == pytest.approx(1.0, abs=0.1)
    assert np.argmax(np.abs(np.fft.rfft(d.samples[:16000]))) == 300  # every channel carries the tone


@needs_tools
def test_adts_durations_are_decoded_not_guessed_and_rate_changes_midway_decode(tmp_path):
    """FFmpeg guesses a raw ADTS file's duration from its first frames' bitrate (6 s of silence, then noise: a 9 s
    file "declares" about 110 s); two ADTS files joined (16 kHz mono, then 44.1 kHz stereo) change setup midway."""
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-f", "lavfi", "-i", "anoisesrc=r=16000:a=0.5",
           "-filter_complex", "[0]atrim=0:6[a];[1]atrim=0:3[b];[a][b]concat=n=2:v=0:a=1", "-c:a", "aac",
           "-f", "adts", tmp_path / "quiet.aac")
    d = decode_audio((tmp_path / "quiet.aac").read_bytes(), max_seconds=10)
    assert d.duration_s == pytest.approx(9.0, abs=0.15)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:duration=2", "-c:a", "aac", "-f", "adts",
           tmp_path / "a.aac")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100:duration=3", "-ac", "2", "-c:a", "aac",
           "-f", "adts", tmp_path / "b.aac")
    joined = (tmp_path / "a.aac").read_bytes() + (tmp_path / "b.aac").read_bytes()
    d = decode_audio(joined)
    assert (d.input_sample_rate, d.input_channels) == (16000, 1)  # the first frame's setup
    assert 5.0 <= d.duration_s <= 5.0 + 2 * 2048 / 16000  # each part keeps AAC priming and end padding (ADTS)
    assert np.argmax(np.abs(np.fft.rfft(d.samples[-16000:]))) == 300  # the second part, converted, is the tone


@needs_tools
def test_an_mp4_that_understates_its_duration_is_still_cut_off_while_decoding(tmp_path):
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=200:sample_rate=16000", "-t", "30", "-c:a", "aac",
           tmp_path / "long.m4a")
    data = bytearray((tmp_path / "long.m4a").read_bytes())
    for box, at in ((b"mvhd", 16), (b"mdhd", 16), (b"tkhd", 20)):  # version-0 boxes: the duration field's offset
        i = data.index(box) + 4
        scale = int.from_bytes(data[i + 12 : i + 16], "big") if box != b"tkhd" else 1000
        data[i + at : i + at + 4] = scale.to_bytes(4, "big")  # "1 s"
    with pytest.raises(AudioTooLong):
        decode_audio(bytes(data), max_seconds=10)
    assert decode_audio(bytes(data), max_seconds=40).duration_s > 10


@needs_tools
def test_cut_short_uploads_webm_and_adts_decode_up_to_the_cut_an_mp4_says_so_in_words(clips, tmp_path):
    ffmpeg("-i", clips / "utt.wav", "-c:a", "libopus", tmp_path / "x.webm")
    ffmpeg("-i", clips / "utt.wav", "-c:a", "aac", "-f", "adts", tmp_path / "x.aac")
    ffmpeg("-i", clips / "utt.wav", "-c:a", "aac", tmp_path / "x.m4a")
    for name, fmt in (("x.webm", "WEBM"), ("x.aac", "AAC")):
        data = (tmp_path / name).read_bytes()
        whole = decode_audio(data)
        for cut in (len(data) // 2, len(data) // 2 + 7):  # a frame boundary or not: like a WAV from a streaming
            part = decode_audio(data[:cut])              # recorder, what arrived
            assert part.input_format == fmt and 0.2 * whole.duration_s < part.duration_s < 0.8 * whole.duration_s
            np.testing.assert_allclose(part.samples[:8000], whole.samples[:8000], atol=1e-6)
    data = (tmp_path / "x.m4a").read_bytes()
    with pytest.raises(UndecodableAudio) as e:
        decode_audio(data[: len(data) // 2])  # the MP4 index (moov) is at the end: nothing to go on
    assert "MP4/M4A/3GP file (Invalid data found when processing input): is it damaged or cut short?" in str(e.value)
    assert "Errno" not in str(e.value)


@needs_tools
def test_a_stream_that_keeps_changing_its_rate_is_refused_after_16_changes(tmp_path):
    parts = []
    for i, rate in enumerate([16000, 44100] * 9):  # 18 setups: 17 changes
        ffmpeg("-f", "lavfi", "-i", f"sine=frequency=300:sample_rate={rate}:duration=0.2", "-c:a", "aac",
               "-f", "adts", tmp_path / f"{i}.aac")
        parts.append((tmp_path / f"{i}.aac").read_bytes())
    with pytest.raises(UndecodableAudio) as e:
        decode_audio(b"".join(parts))
    assert "changes rate or channel layout more than 16 times" in str(e.value)
    assert decode_audio(b"".join(parts[:17])).duration_s > 3.0  # 16 changes still decode


@needs_tools
def test_an_error_of_the_sink_is_raised_as_it_is_not_called_a_damaged_file(tmp_path):
    """A ValueError from where the audio goes (a bug, a 500) must not turn into the 415 "is it damaged or cut short?"
    that FFmpeg's own ValueErrors get, nor may a good file's decode report one."""
    from speechprompt.audio_containers import ContainerError, decode_container
    from speechprompt.audio_sink import ModelRateSink

    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1", "-c:a", "aac", tmp_path / "tone.m4a")

    class Broken(ModelRateSink):
        def add(self, block):
            raise ValueError("the sink's own bug")

    with open(tmp_path / "tone.m4a", "rb") as fh:
        with pytest.raises(ValueError, match="the sink's own bug") as e:
            decode_container(fh, "MP4", Broken(16000, "HQ"))
    assert not isinstance(e.value, ContainerError)
    with open(tmp_path / "tone.m4a", "rb") as fh:
        sink = ModelRateSink(16000, "HQ")
        assert decode_container(fh, "MP4", sink) == (44100, 1) and sink.frames > 44100 * 0.99

"""Audio front end: bytes or path -> float32 mono PCM at 16 kHz, with typed errors.

``decode_audio`` decodes with soundfile (libsndfile: WAV, FLAC, Ogg Vorbis, Ogg Opus, MP3), or with PyAV for the
phone and browser containers libsndfile lacks (``audio_containers``: MP4/M4A/3GP, WebM/Matroska, ADTS AAC), downmixes to
mono (mean of channels) and resamples with soxr at quality "HQ" (20-bit precision, the same recipe as
sox's default ``rate -h``; the HuBERT input is float32 and needs no more), block by block as the decoder yields
them (``audio_sink``), so memory follows the clip's length at 16 kHz, not at its own rate; a run of digital
silence of ``SILENT_EDGE_S`` or more at either edge is written as zeros, not resampled (``audio_sink``). Integer PCM is scaled to
[-1, 1) by soundfile's float32 read. Nothing is clipped: float files whose samples exceed [-1, 1] by
a little (up to ``MAX_PEAK``), and the small overshoot a resampler adds near full scale, are returned
as they are; float files far beyond full scale (e.g. samples of 1e6, written unscaled) are refused
(``AudioOutOfRange``) rather than silently scored.

Lengths are the decoded sample counts, never a header's guess: every frame the decoder yields is read
(in blocks, stopping one past the limit), so a streamed FLAC without a total-frames count decodes and is
measured, and telephony WAV codecs libsndfile calls "non-seekable" (GSM 6.10, G.721, NMS-ADPCM) decode
too. MP3 frames are counted from the bitstream; a VBR MP3 without a Xing/Info header (whose length
libsndfile underestimates and would cut short) is decoded with ffmpeg.

Limits follow the encoder (``encoder.py``): one HuBERT frame needs 400 samples at 16 kHz (25 ms window,
20 ms hop), so shorter clips give no unit at all.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from .audio_bytes import _binary, _repair_wav_sizes, describe_bytes, mp3_frames, wav_codec  # noqa: F401 - re-exported
from .audio_containers import ACCEPTED as CONTAINERS_ACCEPTED
from .audio_containers import ContainerError, ContainerTooLong, container_kind, decode_container
from .audio_sink import BATCH_FRAMES, ModelRateSink

MIN_SAMPLES = 400  # one HuBERT frame (25 ms) at 16 kHz
MODEL_RATE = 16000  # Hz, the rate MIN_SAMPLES is counted at
RESAMPLE_QUALITY = "HQ"
SILENT_EDGE_S = 0.2  # digital silence this long at a clip's edge stays zeros through resampling (audio_sink), so
# the default bundle's edge gate (edge_gate.py, runs >= 0.2 s) drops it exactly at any input rate
ACCEPTED_FORMATS = ("WAV", "WAVEX", "RF64", "FLAC", "OGG", "MP3")  # soundfile format names
MAX_PEAK = 4.0  # float samples beyond this (+12 dBFS) are not audio scaled to [-1, 1]: refused
UNKNOWN_FRAMES = 2**62  # libsndfile's frame count for streams that do not declare one (SF_COUNT_MAX)
BLOCK_FRAMES = 65536  # frames decoded per read
MP3_SLACK = 4 * 1152  # walked MP3 samples beyond the decoded count: Info frame, encoder delay and padding
ACCEPTED_TEXT = ("WAV (integer or float PCM, A-law, u-law, IMA/MS ADPCM, GSM 6.10, G.721, NMS-ADPCM), FLAC, Ogg Vorbis, Ogg Opus, MP3, "
                 f"{CONTAINERS_ACCEPTED}; sample rates of 1-384 kHz, any number of channels (downmixed to mono; at most 8 in those "
                 "containers)")


class AudioError(Exception):
    """Base of every audio error: ``code`` (stable string), ``status`` (HTTP), ``accepted`` (what is)."""

    code = "audio_error"
    status = 422
    accepted = ACCEPTED_TEXT

    def __init__(self, message: str, *, accepted: str | None = None) -> None:
        super().__init__(message)
        if accepted is not None:
            self.accepted = accepted


class UndecodableAudio(AudioError):
    """The bytes are not in an accepted, decodable format (HTTP 415)."""

    code, status = "undecodable_audio", 415


class EmptyAudio(AudioError):
    """The audio decodes to zero samples (HTTP 422)."""

    code = "empty_audio"


class AudioTooShort(AudioError):
    """Fewer than MIN_SAMPLES samples at 16 kHz, so HuBERT yields no frame (HTTP 422)."""

    code = "audio_too_short"


class NonFiniteAudio(AudioError):
    """NaN or Inf samples (float WAVs can carry them) (HTTP 422)."""

    code = "non_finite_audio"


class AudioOutOfRange(AudioError):
    """Float samples far outside [-1, 1] (beyond ``MAX_PEAK``): not audio scaled to full scale (HTTP 422)."""

    code = "audio_out_of_range"


class AudioTooLong(AudioError):
    """Longer than the caller's ``max_seconds`` (HTTP 413); ``seconds`` is the clip's length when it was known
    before decoding (a header's frame count), else None."""

    code, status = "audio_too_long", 413
    seconds: float | None = None


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded clip. ``samples``: float32 [N] mono at ``sample_rate`` Hz; ``duration_s`` = N / sample_rate
    seconds; ``input_*`` describe the file as sent (rate in Hz, channel count, soundfile format name)."""

    samples: np.ndarray
    sample_rate: int
    input_sample_rate: int
    input_channels: int
    input_format: str
    duration_s: float
    resampled: bool


def min_samples(sample_rate: int) -> int:
    """Fewest samples at ``sample_rate`` Hz that span 25 ms (400 at 16 kHz): one HuBERT window, and the shortest clip any dense model here accepts."""
    return math.ceil(MIN_SAMPLES * sample_rate / MODEL_RATE)


def check_samples(samples: np.ndarray, sample_rate: int) -> None:
    """Check PCM a caller already has: ``samples`` [N] at ``sample_rate`` Hz.

    Raises EmptyAudio (N == 0), NonFiniteAudio (NaN/Inf), AudioTooShort (N < 25 ms of samples, i.e. 400
    at 16 kHz), ValueError if ``samples`` is not one-dimensional (a caller bug, not user input).
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"samples must be 1-D [N], got shape {samples.shape}")
    need = min_samples(sample_rate)
    if samples.size == 0:
        raise EmptyAudio("the audio contains no samples", accepted=f"at least {need} samples at {sample_rate} Hz")
    bad = int(samples.size - np.count_nonzero(np.isfinite(samples)))
    if bad:
        raise NonFiniteAudio(f"{bad} of {samples.size} samples are NaN or Inf", accepted="finite samples")
    if samples.size < need:
        raise AudioTooShort(f"{samples.size} samples at {sample_rate} Hz ({samples.size / sample_rate * 1000:.1f} ms)"
                            f" is shorter than the 25 ms the encoders need",
                            accepted=f"at least {need} samples at {sample_rate} Hz (25 ms)")


FFMPEG_TIMEOUT_S = 120  # seconds an ffmpeg decode may take (a VBR MP3 without Xing header)


def _ffmpeg_to_sink(data: bytes, rate: int, channels: int, max_frames: int | None, sink: ModelRateSink) -> int:
    """Decode an MP3 with ffmpeg to float32 ``[n, channels]`` at ``rate`` Hz, read from its output in blocks of
    ``BLOCK_FRAMES`` frames (never the whole clip at its own rate) and added to ``sink`` as their mono mean; at most
    ``max_frames`` frames (+1, so that a longer file shows). Returns the frames decoded. Raises UndecodableAudio
    (no ffmpeg, ffmpeg's error, or longer than ``FFMPEG_TIMEOUT_S``)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise UndecodableAudio("this MP3 has no Xing/Info header and variable bitrate, so its length is only known "
                               "by decoding it all, which needs ffmpeg (not installed on this server); "
                               f"accepted: {ACCEPTED_TEXT}")
    cmd = [exe, "-nostdin", "-v", "error", "-i", "pipe:0", "-f", "f32le", "-acodec", "pcm_f32le",
           "-ar", str(rate), "-ac", str(channels)]
    if max_frames is not None:
        cmd += ["-t", f"{(max_frames + 1) / rate + 0.05:.6f}"]
    frame_bytes, total, killed = 4 * channels, 0, threading.Event()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*cmd, "pipe:1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        feeder = threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True)  # stdin and stdout at once
        timer = threading.Timer(FFMPEG_TIMEOUT_S, lambda: (killed.set(), proc.kill()))
        try:
            feeder.start()
            timer.start()
            while chunk := proc.stdout.read(BLOCK_FRAMES * frame_bytes):  # whole blocks until the last
                pcm = np.frombuffer(chunk, dtype=np.float32, count=len(chunk) // frame_bytes * channels)
                pcm = pcm.reshape(-1, channels)
                sink.add(pcm[:, 0] if channels == 1 else pcm.mean(axis=1, dtype=np.float32))
                total += len(pcm)
        except BaseException:
            proc.kill()  # an error here (a thread that could not start, a sink error): ffmpeg must not wait on pipes
            raise
        finally:
            proc.stdout.close()
            proc.wait()  # the timer still runs: an ffmpeg that will not exit is killed
            timer.cancel()
            if feeder.ident is not None:
                feeder.join()
        if killed.is_set():
            raise UndecodableAudio(f"decoding the MP3 took longer than {FFMPEG_TIMEOUT_S} s; "
                                   f"accepted: {ACCEPTED_TEXT}")
        if proc.returncode != 0:
            err.seek(max(0, err.seek(0, os.SEEK_END) - 800))  # ffmpeg's last words
            raise UndecodableAudio(f"could not decode the MP3: {err.read().decode(errors='replace')[-200:].strip()}; "
                                   f"accepted: {ACCEPTED_TEXT}")
    return total


def _feed(pipe, data: bytes) -> None:
    """Write ``data`` to a subprocess's stdin and close it (a process that exits early is not an error here)."""
    try:
        pipe.write(data)
    except OSError:  # a broken pipe: ffmpeg stopped reading
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def too_long(max_seconds: float, seconds: float | None = None) -> AudioTooLong:
    """The AudioTooLong for a ``max_seconds`` limit; ``seconds`` is the length when known before decoding."""
    said = f"lasts {seconds:.1f} s, longer than" if seconds is not None else "lasts longer than"
    error = AudioTooLong(f"the audio {said} the {max_seconds:g} s limit", accepted=f"at most {max_seconds:g} s of audio")
    error.seconds = seconds
    return error


def _read_frames(f: sf.SoundFile, sink: ModelRateSink, limit: int | None, max_seconds: float | None,
                 declared: int = 0) -> None:
    """Every frame the decoder yields, into ``sink`` as mono float32 blocks ``[n]`` (the mean of the channels, taken
    block by block, so a many-channel file is never held whole), reading until EOF (not up to the header's frame
    count: streams may declare none, and telephony codecs are "non-seekable" to soundfile). A mono file at the model
    rate reads its declared count (within ``limit``) first into one array, so a long file that tells the truth is held
    once, not as blocks plus their concatenation. Raises AudioTooLong as soon as more than ``limit`` frames were
    decoded."""
    total, channels = 0, f.channels
    first = declared if channels == 1 and not sink.resampling and BLOCK_FRAMES < declared < UNKNOWN_FRAMES and (
        limit is None or declared <= limit) else 0
    while True:
        size = first or BLOCK_FRAMES
        first = 0
        buf = np.empty((size, channels), dtype=np.float32)
        got = sf._snd.sf_readf_float(f._file, sf._ffi.cast("float *", buf.ctypes.data), size)
        if got <= 0:
            break
        if channels == 1:
            sink.add(buf[:got, 0].copy() if got < size // 2 else buf[:got, 0])  # a short read: no big buffer kept
        else:
            sink.add(buf[:got].mean(axis=1, dtype=np.float32))
        total += got
        if limit is not None and total > limit:
            raise too_long(max_seconds)
    err = sf._snd.sf_error(f._file)
    if err and not total:
        raise sf.LibsndfileError(err)


def decode_audio(source: bytes | str | os.PathLike, *, max_seconds: float | None = 600.0,
                 target_rate: int = MODEL_RATE) -> DecodedAudio:
    """Decode, downmix and resample audio: bytes or a path -> ``DecodedAudio`` (float32 [N] @ target_rate Hz).

    ``max_seconds`` (seconds, None = no limit) is checked against the decoded sample count (decoding stops
    one block past it), and before anything is decoded against a frame count the header declares (WAV,
    FLAC with a total) or the MP3 frames counted in the bitstream. Decoded blocks are resampled as they
    arrive (``audio_sink``), so memory follows the length at ``target_rate``, not at the file's rate.
    Raises UndecodableAudio (415), AudioTooLong (413), EmptyAudio, NonFiniteAudio, AudioOutOfRange,
    AudioTooShort (422).
    """
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds}")
    sink = ModelRateSink(target_rate, RESAMPLE_QUALITY, MAX_PEAK, SILENT_EDGE_S)
    with _binary(source) as raw:
        fh = _repair_wav_sizes(raw) or raw
        fh.seek(0)
        head = fh.read(64)
        fh.seek(0)
        if kind := container_kind(head):  # phone / browser recordings libsndfile cannot read: PyAV
            try:
                decode_container(fh, kind, sink, max_seconds)  # mono blocks, mean of channels
            except ContainerTooLong:
                raise too_long(max_seconds) from None
            except ContainerError as e:
                raise UndecodableAudio(f"{e}; accepted: {ACCEPTED_TEXT}") from None
            fmt = kind
        else:
            fmt = _decode_soundfile(fh, head, sink, max_seconds)  # mono blocks, mean of channels
    if sink.frames == 0:
        raise EmptyAudio(f"the {fmt} file contains no samples", accepted="at least 25 ms of audio")
    return _finish(sink, fmt)


MAX_PCM_RATE = 384_000  # Hz: the highest sample rate decoded or taken as PCM (and the lowest is 1000 Hz)


def _decode_soundfile(fh, head: bytes, sink: ModelRateSink, max_seconds: float | None) -> str:
    """libsndfile's formats (``ACCEPTED_FORMATS``; ffmpeg for a VBR MP3 without Xing header) into ``sink`` (mono
    blocks, the mean of the channels); returns soundfile's format name. Raises UndecodableAudio (also for a rate
    outside 1000-``MAX_PCM_RATE`` Hz), AudioTooLong."""
    try:
        with sf.SoundFile(fh) as f:
            rate, channels, fmt = f.samplerate, f.channels, f.format
            if fmt not in ACCEPTED_FORMATS:
                raise UndecodableAudio(f"the audio is {sf.available_formats().get(fmt, fmt)}, which is not "
                                       f"accepted; accepted: {ACCEPTED_TEXT}")
            if not 1000 <= rate <= MAX_PCM_RATE:
                raise UndecodableAudio(f"the {fmt} file's sample rate is {rate} Hz, outside the 1-384 kHz decoded "
                                       f"here; accepted: {ACCEPTED_TEXT}")
            sink.open(rate, channels)
            limit = None if max_seconds is None else math.floor(max_seconds * rate)
            declared, walked = f.frames, 0
            if fmt == "MP3":  # libsndfile's count is the first frame's guess for VBR without Xing
                at = fh.tell()  # the decoder reads the same file object: put it back where it was
                fh.seek(0)
                walked, _ = mp3_frames(fh.read())
                fh.seek(at)
                declared = walked
            if limit is not None and UNKNOWN_FRAMES > declared > limit + (MP3_SLACK if walked else 0):
                raise too_long(max_seconds, declared / rate)
            if walked > f.frames + MP3_SLACK:  # libsndfile would stop at its guess: decode it all with ffmpeg
                fh.seek(0)
                decoded = _ffmpeg_to_sink(fh.read(), rate, channels, limit, sink)
                if limit is not None and decoded > limit:
                    raise too_long(max_seconds)
            else:
                _read_frames(f, sink, limit, max_seconds, declared)  # integer PCM scaled to [-1, 1)
    except sf.LibsndfileError as e:
        raise UndecodableAudio(f"could not decode the audio: it looks like {describe_bytes(head)} "
                               f"({e.error_string}); accepted: {ACCEPTED_TEXT}") from None
    return fmt


def _finish(sink: ModelRateSink, fmt: str) -> DecodedAudio:
    """A filled sink -> checked ``DecodedAudio`` at the sink's target rate. Raises NonFiniteAudio (any NaN/Inf,
    counted over the whole clip), AudioOutOfRange (a peak beyond ``MAX_PEAK``), EmptyAudio, AudioTooShort."""
    out = sink.finish()  # checks the last samples; empty when the clip failed a check
    if sink.non_finite:  # found before resampling: soxr would smear a NaN over its filter length
        raise NonFiniteAudio(f"{sink.non_finite} of {sink.frames} samples are NaN or Inf", accepted="finite samples")
    if sink.peak > MAX_PEAK:
        raise AudioOutOfRange(f"the samples reach {sink.peak:.3g}, far outside full scale [-1, 1]: float audio must "
                              f"be scaled to [-1, 1] (this looks like unscaled or corrupt data)",
                              accepted=f"float samples within [-{MAX_PEAK:g}, {MAX_PEAK:g}] (full scale is 1.0), "
                                       "or integer PCM")
    if sink.frames and out.size < min_samples(sink.target_rate):  # said in the file's own samples, not the model's
        need = math.ceil((2 * min_samples(sink.target_rate) - 1) * sink.rate / (2 * sink.target_rate))
        raise AudioTooShort(f"{sink.frames} sample(s) at {sink.rate} Hz resample to {out.size} at "
                            f"{sink.target_rate} Hz, fewer than the {min_samples(sink.target_rate)} (25 ms) the "
                            "encoders need", accepted=f"at least {need} samples at {sink.rate} Hz (~25 ms)")
    check_samples(out, sink.target_rate)
    return DecodedAudio(samples=out, sample_rate=sink.target_rate, input_sample_rate=sink.rate,
                        input_channels=sink.channels, input_format=fmt, duration_s=out.size / sink.target_rate,
                        resampled=sink.resampling)


def from_pcm(samples: np.ndarray, sample_rate: int, *, max_seconds: float | None = 600.0,
             target_rate: int = MODEL_RATE) -> DecodedAudio:
    """Raw mono PCM a client sent as numbers -> ``DecodedAudio`` (float32 [N] @ target_rate Hz), with the
    same checks as :func:`decode_audio` (``input_format`` is ``"PCM"``).

    ``samples``: float [N] at ``sample_rate`` Hz (1000-384000), in [-1, 1]. Raises AudioTooLong (longer than
    ``max_seconds`` seconds), EmptyAudio, NonFiniteAudio, AudioOutOfRange, AudioTooShort, UndecodableAudio
    (a sample rate out of range); ValueError if ``samples`` is not 1-D (a caller bug).
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"samples must be 1-D [N], got shape {samples.shape}")
    if not 1000 <= sample_rate <= MAX_PCM_RATE:
        raise UndecodableAudio(f"a sample rate of {sample_rate} Hz is not accepted",
                               accepted=f"a sample rate from 1000 to {MAX_PCM_RATE} Hz")
    if max_seconds is not None and samples.size > math.floor(max_seconds * sample_rate):
        raise too_long(max_seconds, samples.size / sample_rate)
    if samples.size == 0:
        raise EmptyAudio("the audio contains no samples", accepted="at least 25 ms of audio")
    sink = ModelRateSink(target_rate, RESAMPLE_QUALITY, MAX_PEAK, SILENT_EDGE_S)
    sink.open(sample_rate, 1)
    for start in range(0, samples.size, BATCH_FRAMES):  # in batches: the sink's scans stay one batch long
        sink.add(samples[start:start + BATCH_FRAMES])
    return _finish(sink, "PCM")

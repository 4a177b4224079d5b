"""Phone and browser recordings that libsndfile cannot read: MP4/M4A/3GP (AAC, ALAC), WebM/Matroska (Opus, Vorbis)
and raw AAC in ADTS frames, decoded with PyAV (FFmpeg's demuxers and decoders, in-process).

``audio.decode_audio`` calls this only for the three containers ``container_kind`` recognises from the first bytes,
and each is opened with its own demuxer, never FFmpeg's format probe, so no other format reaches FFmpeg through here.
Only the codecs in ``CODECS`` are decoded: a video-only MP4, or AC-3 in Matroska, is refused with its codec named.
The audio goes to a sink (``audio_sink.ModelRateSink``) as mono float32 blocks at the stream's own rate, the mean of
its channels taken block by block (the sink resamples them with soxr as they arrive, as for every other format). Errors are this module's own (``ContainerError``, ``ContainerTooLong``);
``audio`` turns them into ``UndecodableAudio`` (415) and ``AudioTooLong`` (413).
"""

from __future__ import annotations

import math
from typing import BinaryIO, Protocol

import numpy as np

# container_kind() name -> (FFmpeg demuxer, what it is, for messages)
CONTAINERS = {"MP4": ("mov", "MP4/M4A/3GP"), "WEBM": ("matroska", "WebM/Matroska"), "AAC": ("aac", "AAC (ADTS)")}
# FFmpeg decoder names accepted inside them (an MP4 may also carry MP3, FLAC or PCM)
CODECS = frozenset({"aac", "aac_latm", "alac", "opus", "libopus", "vorbis", "libvorbis", "mp3", "mp3float", "flac",
                    "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f32be", "pcm_u8",
                    "pcm_alaw", "pcm_mulaw"})
ACCEPTED = "MP4/M4A/3GP with AAC or ALAC, WebM/Matroska with Opus or Vorbis, AAC in ADTS frames"
MAX_CHANNELS = 8  # 7.1 film sound; phones and browsers record 1 or 2
MAX_SETUPS = 17  # the first frame's rate/layout and up to 16 changes (joined recordings); more is refused
STREAMED = ("WEBM", "AAC")  # containers read front to back: one that breaks off keeps what was decoded
RATES = (1000, 384_000)  # Hz, as audio.from_pcm


class ContainerError(Exception):
    """The container or its audio stream cannot be decoded; the message says why."""


class ContainerTooLong(Exception):
    """More frames than the caller's limit were decoded (or declared)."""


def container_kind(head: bytes) -> str | None:
    """``"MP4"`` (an ISO ``ftyp`` box at byte 4), ``"WEBM"`` (the EBML magic) or ``"AAC"`` (an ADTS frame sync:
    12 one-bits, then layer 00) from a payload's first bytes, else ``None`` (for soundfile)."""
    if head[4:8] == b"ftyp":
        return "MP4"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "WEBM"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "AAC"
    return None


class Sink(Protocol):
    """Where decoded audio goes (``audio_sink.ModelRateSink``): ``open`` once, then ``add`` mono blocks."""

    def open(self, rate: int, channels: int) -> None: ...

    def add(self, block: np.ndarray) -> None: ...


def decode_container(fh: BinaryIO, kind: str, sink: Sink, max_seconds: float | None = None) -> tuple[int, int]:
    """Decode the first audio stream of a ``kind`` container (a key of ``CONTAINERS``) read from ``fh`` into ``sink``.

    ``sink.open(rate, channels)`` is called at the first frame, then ``sink.add`` with mono float32 blocks ``[n]`` at
    ``rate`` Hz, the mean of the stream's ``channels`` (downmixed block by block, so a many-channel stream never sits
    in memory whole; the rate and channel layout of the first frame are kept: a stream that changes them midway is
    converted to them by PyAV's resampler). Returns ``(rate, channels)``. Decoding
    stops as soon as more than ``max_seconds`` (seconds, None = no limit) were decoded, and an MP4 or Matroska file
    whose declared duration is past it is refused before decoding (raw ADTS declares none: FFmpeg's figure is a
    guess from the bitrate). Raises ``ContainerError`` (not this container, no audio stream, a codec
    outside ``CODECS``, more than ``MAX_CHANNELS`` channels, a rate outside ``RATES``, more than ``MAX_SETUPS - 1``
    changes of rate or layout, damaged data, no samples) and ``ContainerTooLong``. A WebM or ADTS stream that breaks
    off after some audio (``STREAMED``) keeps what was decoded.
    """
    import av  # PyAV: a core dependency, imported here so that reading WAV/FLAC never loads FFmpeg

    demuxer, what = CONTAINERS[kind]
    total, rate, channels, limit = 0, 0, 0, None
    try:
        with av.open(fh, mode="r", format=demuxer, metadata_errors="replace") as box:  # damaged tags are not fatal
            if not box.streams.audio:
                kinds = sorted({s.type for s in box.streams}) or ["no streams"]
                raise ContainerError(f"the {what} file has no audio stream ({', '.join(kinds)})")
            stream = box.streams.audio[0]
            codec = stream.codec_context.name if stream.codec_context is not None else "an unknown codec"
            if codec not in CODECS:
                raise ContainerError(f"the {what} file's audio is {codec}, which is not decoded here")
            declared = box.duration / 1e6 if box.duration is not None and kind != "AAC" else None  # ADTS: a guess
            if max_seconds is not None and declared is not None and declared > max_seconds + 1:
                raise ContainerTooLong(f"declares {declared:.1f} s")
            resampler, source, layout, changes = None, None, None, 0
            frames = box.decode(stream)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except (av.FFmpegError, ValueError, EOFError):
                    if total and kind in STREAMED:  # a recording that broke off: keep what arrived
                        break
                    raise
                shape = (frame.sample_rate, frame.layout.name, frame.format.name)
                if shape != source:  # the first frame, or a stream that changes rate or layout midway
                    _check_shape(what, frame.sample_rate, len(frame.layout.channels))
                    changes += 1
                    if changes > MAX_SETUPS:  # each change rebuilds the resampler: bounded CPU per upload
                        raise ContainerError(f"the {what} file's audio changes rate or channel layout more than "
                                             f"{MAX_SETUPS - 1} times")
                    if resampler is None:
                        rate, channels, layout = frame.sample_rate, len(frame.layout.channels), frame.layout
                        limit = None if max_seconds is None else math.floor(max_seconds * rate)
                        _to_sink(sink.open, rate, channels)
                    else:  # flush what the previous setup holds, then convert to the first frame's rate and layout
                        total += sum(_add_mono(sink, out, channels) for out in resampler.resample(None))
                    resampler, source = av.AudioResampler(format="flt", layout=layout, rate=rate), shape
                total += sum(_add_mono(sink, out, channels) for out in resampler.resample(frame))
                if limit is not None and total > limit:
                    raise ContainerTooLong(f"more than {limit} frames at {rate} Hz")
            if resampler is not None:
                total += sum(_add_mono(sink, out, channels) for out in resampler.resample(None))
    except _SinkFailed as e:  # the sink's own error is a bug here, not a damaged file: raise it as it was
        raise e.__cause__ from None
    except (av.FFmpegError, ValueError, EOFError) as e:  # FFmpeg's errors, and PyAV's on bytes it cannot wrap
        why = getattr(e, "strerror", None) or str(e)  # FFmpeg's words, without its error number and file name
        raise ContainerError(f"could not decode the {what} file ({why}): is it damaged or cut short?") from None
    if not total:
        raise ContainerError(f"the {what} file's audio stream holds no samples")
    if limit is not None and total > limit:
        raise ContainerTooLong(f"more than {limit} frames at {rate} Hz")
    return rate, channels


def _check_shape(what: str, rate: int, channels: int) -> None:
    if not 1 <= channels <= MAX_CHANNELS:
        raise ContainerError(f"the {what} file's audio has {channels} channels; 1 to {MAX_CHANNELS} are decoded here")
    if not RATES[0] <= rate <= RATES[1]:
        raise ContainerError(f"the {what} file's audio is at {rate} Hz; {RATES[0]} to {RATES[1]} Hz are decoded here")


class _SinkFailed(Exception):
    """Carries an exception the sink raised (``__cause__``) past the handler of FFmpeg's errors."""


def _to_sink(call, *args) -> None:
    try:
        call(*args)
    except Exception as e:
        raise _SinkFailed from e


def _add_mono(sink: Sink, frame, channels: int) -> int:
    """Add a packed float frame ``[1, n*C]`` to ``sink`` as its mono mean ``[n]`` f32; returns n."""
    block = frame.to_ndarray().reshape(-1, channels)
    _to_sink(sink.add, block[:, 0].copy() if channels == 1 else block.mean(axis=1, dtype=np.float32))
    return len(block)


__all__ = ["ACCEPTED", "CODECS", "CONTAINERS", "MAX_CHANNELS", "MAX_SETUPS", "RATES", "STREAMED", "ContainerError", "ContainerTooLong", "Sink",
           "container_kind", "decode_container"]

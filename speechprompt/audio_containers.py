"""Phone and browser recordings that libsndfile cannot read: MP4/M4A/3GP (AAC, ALAC), WebM/Matroska (Opus, Vorbis)
and raw AAC in ADTS frames, decoded with PyAV (FFmpeg's demuxers and decoders, in-process).

``audio.decode_audio`` calls this only for the three containers ``container_kind`` recognises from the first bytes,
and each is opened with its own demuxer, never FFmpeg's format probe, so no other format reaches FFmpeg through here.
Only the codecs in ``CODECS`` are decoded: a video-only MP4, or AC-3 in Matroska, is refused with its codec named.
The result is the same as soundfile's: float32 ``[N, C]`` at the stream's own rate (``audio`` downmixes and resamples
it with soxr, as every other format). Errors are this module's own (``ContainerError``, ``ContainerTooLong``);
``audio`` turns them into ``UndecodableAudio`` (415) and ``AudioTooLong`` (413).
"""

from __future__ import annotations

import math
from typing import BinaryIO

import numpy as np

# container_kind() name -> (FFmpeg demuxer, what it is, for messages)
CONTAINERS = {"MP4": ("mov", "MP4/M4A/3GP"), "WEBM": ("matroska", "WebM/Matroska"), "AAC": ("aac", "AAC (ADTS)")}
# FFmpeg decoder names accepted inside them (an MP4 may also carry MP3, FLAC or PCM)
CODECS = frozenset({"aac", "aac_latm", "alac", "opus", "libopus", "vorbis", "libvorbis", "mp3", "mp3float", "flac",
                    "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f32be", "pcm_u8",
                    "pcm_alaw", "pcm_mulaw"})
ACCEPTED = "MP4/M4A/3GP with AAC or ALAC, WebM/Matroska with Opus or Vorbis, AAC in ADTS frames"


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


def decode_container(fh: BinaryIO, kind: str, max_seconds: float | None = None) -> tuple[np.ndarray, int, int]:
    """Decode the first audio stream of a ``kind`` container (a key of ``CONTAINERS``) read from ``fh``.

    Returns ``(pcm, rate, channels)``: float32 ``[N, channels]`` at ``rate`` Hz, as the decoder gives it (planar
    formats interleaved by PyAV's resampler; the rate and channel layout of the first frame are kept). Decoding
    stops as soon as more than ``max_seconds`` (seconds, None = no limit) were decoded, and a container whose
    declared duration is past it is refused before decoding. Raises ``ContainerError`` (not this container, no audio stream, a
    codec outside ``CODECS``, damaged data, no samples) and ``ContainerTooLong``.
    """
    import av  # PyAV: a core dependency, imported here so that reading WAV/FLAC never loads FFmpeg

    demuxer, what = CONTAINERS[kind]
    try:
        with av.open(fh, mode="r", format=demuxer, metadata_errors="replace") as box:  # damaged tags are not fatal
            if not box.streams.audio:
                kinds = sorted({s.type for s in box.streams}) or ["no streams"]
                raise ContainerError(f"the {what} file has no audio stream ({', '.join(kinds)})")
            stream = box.streams.audio[0]
            codec = stream.codec_context.name if stream.codec_context is not None else "an unknown codec"
            if codec not in CODECS:
                raise ContainerError(f"the {what} file's audio is {codec}, which is not decoded here")
            if max_seconds is not None and box.duration is not None and box.duration / 1e6 > max_seconds + 1:
                raise ContainerTooLong(f"declares {box.duration / 1e6:.1f} s")
            blocks, total, resampler, rate, limit = [], 0, None, 0, None
            for frame in box.decode(stream):
                if resampler is None:
                    rate = frame.sample_rate
                    resampler = av.AudioResampler(format="flt", layout=frame.layout, rate=rate)
                    limit = None if max_seconds is None else math.floor(max_seconds * rate)
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1, len(out.layout.channels))  # packed: [1, n*C] -> [n, C]
                    blocks.append(block)
                    total += len(block)
                if limit is not None and total > limit:
                    raise ContainerTooLong(f"more than {limit} frames at {rate} Hz")
            if resampler is not None:
                for out in resampler.resample(None):
                    blocks.append(out.to_ndarray().reshape(-1, len(out.layout.channels)))
    except (av.FFmpegError, ValueError, EOFError) as e:  # FFmpeg's errors, and PyAV's on bytes it cannot wrap
        raise ContainerError(f"could not decode the {what} file: {e}") from None
    if not blocks or not sum(len(b) for b in blocks):
        raise ContainerError(f"the {what} file's audio stream holds no samples")
    pcm = np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)
    if limit is not None and len(pcm) > limit:
        raise ContainerTooLong(f"more than {limit} frames at {rate} Hz")
    return pcm, rate, pcm.shape[1]


__all__ = ["ACCEPTED", "CODECS", "CONTAINERS", "ContainerError", "ContainerTooLong", "container_kind",
           "decode_container"]

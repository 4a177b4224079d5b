"""Audio front end: bytes or path -> float32 mono PCM at 16 kHz, with typed errors.

``decode_audio`` decodes with soundfile (libsndfile: WAV, FLAC, Ogg Vorbis, Ogg Opus, MP3), downmixes to
mono (mean of channels) and resamples with soxr at quality "HQ" (20-bit precision, the same recipe as
sox's default ``rate -h``; the HuBERT input is float32 and needs no more). Integer PCM is scaled to
[-1, 1) by soundfile's float32 read. Nothing is clipped: float files whose samples exceed [-1, 1], and
the small overshoot a resampler adds near full scale, are returned as they are (HuBERT normalises
nothing itself, so callers that care can inspect ``np.abs(samples).max()``).

Limits follow the encoder (``encoder.py``): one HuBERT frame needs 400 samples at 16 kHz (25 ms window,
20 ms hop), so shorter clips give no unit at all.
"""

from __future__ import annotations

import io
import math
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf
import soxr

MIN_SAMPLES = 400  # one HuBERT frame (25 ms) at 16 kHz
MODEL_RATE = 16000  # Hz, the rate MIN_SAMPLES is counted at
RESAMPLE_QUALITY = "HQ"
ACCEPTED_FORMATS = ("WAV", "WAVEX", "RF64", "FLAC", "OGG", "MP3")  # soundfile format names
ACCEPTED_TEXT = ("WAV (integer or float PCM), FLAC, Ogg Vorbis, Ogg Opus or MP3; any sample rate, "
                 "any number of channels (downmixed to mono)")


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


class AudioTooLong(AudioError):
    """Longer than the caller's ``max_seconds`` (HTTP 413)."""

    code, status = "audio_too_long", 413


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
    """Fewest samples at ``sample_rate`` Hz that span one HuBERT window (25 ms; 400 at 16 kHz)."""
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
                            f" is shorter than one HuBERT window",
                            accepted=f"at least {need} samples at {sample_rate} Hz (25 ms)")


def describe_bytes(head: bytes) -> str:
    """Say what a payload looks like from its first bytes (magic numbers), for error messages."""
    if not head:
        return "an empty payload (0 bytes)"
    if head[:4] == b"RIFF":
        kind = head[8:12]
        return "a RIFF/WAVE (WAV) file with an unsupported codec or a damaged header" if kind == b"WAVE" \
            else f"a RIFF container of type {kind!r} (not WAVE)"
    if head[:4] == b"fLaC":
        return "a FLAC stream that could not be decoded (damaged?)"
    if head[:4] == b"OggS":
        codec = next((n for m, n in ((b"\x01vorbis", "Vorbis"), (b"OpusHead", "Opus"), (b"Speex", "Speex"),
                                     (b"\x7fFLAC", "FLAC"), (b"theora", "Theora")) if m in head), "unknown")
        return f"an Ogg container with {codec} content"
    if head[:3] == b"ID3" or (head[0] == 0xFF and len(head) > 1 and head[1] & 0xE0 == 0xE0):
        if head[:3] != b"ID3" and head[1] & 0x06 == 0:
            return "AAC in ADTS frames (not accepted)"
        return "MPEG audio (ID3 tag or frame sync) that could not be decoded"
    if head[4:8] == b"ftyp":
        return f"an MP4/M4A/AAC file (ISO media, brand {head[8:12]!r}; not accepted)"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "a WebM/Matroska (EBML) file (not accepted)"
    if head[:2] == b"PK":
        return "a zip archive"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return f"a Python pickle (protocol {head[1]}); pickles are never loaded"
    if head[:6] == b"\x93NUMPY":
        return "a NumPy .npy array (send an audio file instead)"
    text = head.lstrip().lower()
    if text[:1] in (b"{", b"["):
        return "JSON text"
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if text.startswith(b"<"):
        return "XML/markup text"
    if any(_is_text(head[:len(head) - cut]) for cut in range(4)):  # the 64-byte head may split a character
        return "plain text"
    return f"unrecognised binary data (starts with {head[:8].hex(' ')})"


def _is_text(data: bytes) -> bool:
    try:
        return data.decode("utf-8").replace("\n", "").replace("\r", "").replace("\t", "").isprintable()
    except UnicodeDecodeError:
        return False


@contextmanager
def _binary(source: bytes | bytearray | memoryview | str | os.PathLike) -> Iterator[BinaryIO]:
    """Open bytes or a path as a seekable binary file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source))
    else:
        with open(source, "rb") as fh:
            yield fh


def _chunks_tile(fh: BinaryIO, pos: int, total: int) -> bool:
    """True when bytes [pos, total) are a sequence of RIFF chunks (printable ids) ending exactly at EOF."""
    while pos + 8 <= total:
        fh.seek(pos)
        cid, size = struct.unpack("<4sI", fh.read(8))
        if not all(0x20 <= c <= 0x7E for c in cid):
            return False
        pos += 8 + size + (size & 1)
    return total <= pos <= total + 1  # an odd last chunk may miss its pad byte


def _repair_wav_sizes(fh: BinaryIO) -> BinaryIO | None:
    """A patched in-memory copy when a WAV's data chunk size is too small (0 or less than the sample bytes
    that follow: streamed recorders), else None. libsndfile trusts the field and would silently read fewer
    (or zero) frames; 0xFFFFFFFF and sizes beyond EOF it already clamps to the file, so they are left alone.
    """
    total = fh.seek(0, io.SEEK_END)
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, align = 12, 1
    while pos + 8 <= total:
        fh.seek(pos)
        cid, size = struct.unpack("<4sI", fh.read(8))
        if cid == b"fmt ":
            fmt = fh.read(16)
            align = max(1, struct.unpack("<H", fmt[12:14])[0]) if len(fmt) == 16 else 1
        elif cid == b"data":
            avail = total - pos - 8  # bytes after the data chunk header
            if size >= avail or _chunks_tile(fh, pos + 8 + size + (size & 1), total):
                return None
            fh.seek(0)
            buf = bytearray(fh.read())
            buf[4:8] = struct.pack("<I", min(total - 8, 0xFFFFFFFF))
            buf[pos + 4:pos + 8] = struct.pack("<I", avail - avail % align)
            return io.BytesIO(bytes(buf))
        pos += 8 + size + (size & 1)
    return None


def decode_audio(source: bytes | str | os.PathLike, *, max_seconds: float | None = 600.0,
                 target_rate: int = MODEL_RATE) -> DecodedAudio:
    """Decode, downmix and resample audio: bytes or a path -> ``DecodedAudio`` (float32 [N] @ target_rate Hz).

    ``max_seconds`` (seconds, None = no limit) is checked against the frame count the header declares
    before anything is decoded; soundfile never reads past that count, so it also bounds the work.
    Raises UndecodableAudio (415), AudioTooLong (413), EmptyAudio, NonFiniteAudio, AudioTooShort (422).
    """
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive or None, got {max_seconds}")
    with _binary(source) as raw:
        fh = _repair_wav_sizes(raw) or raw
        fh.seek(0)
        head = fh.read(64)
        fh.seek(0)
        try:
            with sf.SoundFile(fh) as f:
                rate, channels, fmt = f.samplerate, f.channels, f.format
                if fmt not in ACCEPTED_FORMATS:
                    raise UndecodableAudio(f"the audio is {sf.available_formats().get(fmt, fmt)}, which is not "
                                           f"accepted; accepted: {ACCEPTED_TEXT}")
                limit = None if max_seconds is None else math.floor(max_seconds * rate)
                if limit is not None and f.frames > limit:
                    raise AudioTooLong(f"the audio lasts {f.frames / rate:.1f} s, longer than the "
                                       f"{max_seconds:g} s limit", accepted=f"at most {max_seconds:g} s of audio")
                pcm = f.read(dtype="float32", always_2d=True)  # [N, C], integer PCM scaled to [-1, 1)
        except sf.LibsndfileError as e:
            raise UndecodableAudio(f"could not decode the audio: it looks like {describe_bytes(head)} "
                                   f"({e.error_string}); accepted: {ACCEPTED_TEXT}") from None
    mono = pcm[:, 0] if channels == 1 else pcm.mean(axis=1, dtype=np.float32)  # [N] mean of channels
    if mono.size == 0:
        raise EmptyAudio(f"the {fmt} file contains no samples", accepted="at least 25 ms of audio")
    if not np.isfinite(mono).all():  # before resampling: soxr would smear a NaN over its filter length
        check_samples(mono, rate)
    resampled = rate != target_rate
    out = soxr.resample(mono, rate, target_rate, quality=RESAMPLE_QUALITY) if resampled else mono
    out = np.ascontiguousarray(out, dtype=np.float32)
    check_samples(out, target_rate)
    return DecodedAudio(samples=out, sample_rate=target_rate, input_sample_rate=rate, input_channels=channels,
                        input_format=fmt, duration_s=out.size / target_rate, resampled=resampled)


"""Audio of a stream: binary frames -> 16 kHz f32 samples, kept in a bounded buffer. No FastAPI here.

A frame is little-endian mono samples, ``pcm16`` (int16, scaled by 1/32768) or ``f32`` (float32 in [-1, 1]);
a declared rate other than 16 kHz is resampled with soxr's streaming resampler (the same library and quality as
``speechprompt.audio``). Digital silence of ``SILENT_EDGE_S`` or more at the start of a stream (a microphone that
sends zeros while it starts) is written as zeros at 16 kHz, and soxr starts at the first non-zero sample, so its
filter does not ring into the silence (as for files, ``speechprompt/audio_sink.py``; an edge gate then drops it
exactly); shorter leading zeros are held until the first sound and then resampled with it, as before. Bad frames
raise :class:`BadStreamData` (close 1003).
"""

from __future__ import annotations

import json
import math

import numpy as np
import soxr

from speechprompt.audio import MAX_PCM_RATE, MAX_PEAK, RESAMPLE_QUALITY, SILENT_EDGE_S
from speechprompt.audio_sink import resampled_length

ENCODINGS = {"pcm16": np.dtype("<i2"), "f32": np.dtype("<f4")}
# Hz. Up to the rate files are decoded at (speechprompt.audio); not below 8 kHz: a frame is resampled before the
# session's length is checked, and upsampling from 1 kHz would turn one 16 MiB frame into ~0.5 GB (8 kHz: 2x)
MIN_RATE, MAX_RATE = 8000, MAX_PCM_RATE
TARGET_RATE = 16000


class BadStreamData(ValueError):
    """A start message or frame the stream cannot use (``code`` for the error message)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def parse_start(text: object) -> tuple[int, str]:
    """The first message, TEXT ``{"type": "start", "sample_rate": Hz, "encoding": "pcm16" | "f32"}`` -> (rate,
    encoding); anything else (binary, not JSON, another type, a bad rate or encoding) raises ``bad_start``."""
    try:
        msg = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        msg = None
    if not isinstance(msg, dict) or msg.get("type") != "start":
        raise BadStreamData("bad_start", 'the first message must be JSON {"type": "start", "sample_rate": 16000, '
                            '"encoding": "pcm16"}')
    rate, encoding = msg.get("sample_rate", TARGET_RATE), msg.get("encoding", "pcm16")
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
        raise BadStreamData("bad_start", f"sample_rate must be an integer from {MIN_RATE} to {MAX_RATE} Hz")
    if encoding not in ENCODINGS:
        raise BadStreamData("bad_start", f"encoding must be one of {sorted(ENCODINGS)}")
    return rate, encoding


class FrameDecoder:
    """Binary frames at the declared rate/encoding -> f32 samples ``[n]`` at 16 kHz (blocking: soxr)."""

    def __init__(self, rate: int, encoding: str):
        self.rate, self.dtype = rate, ENCODINGS[encoding]
        self.resampler = (soxr.ResampleStream(rate, TARGET_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
                          if rate != TARGET_RATE else None)
        self.leading = self.resampler is not None  # only zeros so far (held, or written as zeros past soxr)
        self.lead_in = self.lead_out = 0  # leading zero samples at the declared rate / written at 16 kHz
        self.edge = math.ceil(SILENT_EDGE_S * rate)  # leading zeros that make a silent edge
        self.frames = self.written = 0  # samples received at the declared rate / written at 16 kHz

    def decode(self, frame: bytes) -> np.ndarray:
        if len(frame) % self.dtype.itemsize:
            raise BadStreamData("bad_frame", f"a binary frame must hold whole {self.dtype.itemsize}-byte samples; "
                                f"got {len(frame)} bytes")
        x = np.frombuffer(frame, dtype=self.dtype)
        if self.dtype.kind == "i":
            x = x.astype(np.float32) / 32768.0
        elif not np.isfinite(x).all() or (x.size and float(np.abs(x).max()) > MAX_PEAK):
            raise BadStreamData("bad_frame", f"f32 samples must be finite and within +-{MAX_PEAK:g}")
        else:
            x = x.astype(np.float32)
        return self._resample(x, last=False)

    def flush(self) -> np.ndarray:
        return self._resample(np.zeros(0, np.float32), last=True)

    def _resample(self, x: np.ndarray, *, last: bool) -> np.ndarray:
        if self.resampler is None:
            return x
        self.frames += x.size
        out = self._leading_zeros(x, last) if self.leading else self.resampler.resample_chunk(x, last=last)
        out = out.astype(np.float32, copy=False)
        if last and self.lead_out:  # zeros written past soxr: the length soxr gives the whole stream, set at the
            # end (one sample at most), as the file decoder does (speechprompt/audio_sink.py)
            extra = self.written + out.size - resampled_length(self.frames, self.rate, TARGET_RATE)
            out = out[:out.size - extra] if 0 < extra <= out.size else (
                np.concatenate([out, np.zeros(-extra, np.float32)]) if extra < 0 else out)
        self.written += out.size
        return out

    def _leading_zeros(self, x: np.ndarray, last: bool) -> np.ndarray:
        """While only zeros have come: hold them (fewer than ``edge``) or write them as zeros (``edge`` or more);
        at the first sound, resample from it (after feeding held zeros to soxr if they were too few)."""
        loud = x != 0
        first = int(loud.argmax()) if x.size else 0
        n = first if x.size and loud[first] else x.size  # this frame's leading zeros
        self.lead_in += n
        self.leading = n == x.size
        if self.lead_in >= self.edge:  # a silent edge: zeros past soxr, as many as soxr would give
            total = resampled_length(self.lead_in, self.rate, TARGET_RATE)
            head, self.lead_out = np.zeros(total - self.lead_out, np.float32), total
            rest = x[n:]
        elif self.leading and not last:
            return np.zeros(0, np.float32)  # held: the sound may still come within the edge
        else:  # sound (or the end) before the edge: the held zeros go through soxr as they always did
            head, rest = np.zeros(0, np.float32), np.concatenate([np.zeros(self.lead_in - n, np.float32), x])
        if self.leading and not last:
            return head
        out = self.resampler.resample_chunk(rest, last=last)
        return np.concatenate([head, out]) if head.size else out


class SampleBuffer:
    """Samples received so far, indexed from the stream's start; stretches before ``keep_from`` are dropped."""

    def __init__(self) -> None:
        self._data = np.zeros(0, np.float32)
        self._base = 0  # stream index of _data[0]
        self.total = 0  # samples received (16 kHz)

    def append(self, x: np.ndarray) -> None:
        self._data = np.concatenate([self._data, x])
        self.total += x.size

    def get(self, start: int, end: int) -> np.ndarray:
        """Copy of samples ``[start, end)`` (stream indices; both must still be held)."""
        return self._data[start - self._base:end - self._base].copy()

    def keep_from(self, start: int) -> None:
        if start > self._base:
            self._data = self._data[start - self._base:]
            self._base = start

"""Where decoded audio goes: mono blocks at the file's own rate -> float32 ``[N]`` at the model rate, resampled as
they arrive, so a long file at a high rate is never held whole at that rate.

Every decoder in ``audio`` and ``audio_containers`` hands its mono blocks (the mean of the channels) to a
``ModelRateSink``. The sink gathers them into batches of ``BATCH_FRAMES`` samples, checks each batch (NaN/Inf, the
float peak) and feeds it to a streaming soxr resampler (``soxr.ResampleStream``, the same filter and quality as
``soxr.resample``; the output is bit-identical to resampling the whole clip at once, for any block sizes: soxr keeps
its filter state across chunks). Memory is the output at the model rate plus one batch, not the clip at its own
rate: 600 s at 384 kHz was ~0.9 GB of float32 before resampling, and is now the 38 MB of 600 s at 16 kHz.

Digital silence at a clip's edges stays digital silence (``silent_edge_s``): a run of exactly-zero samples of at
least that length before the first or after the last non-zero sample is not fed to soxr but written as the same
length of zeros at the model rate, and the sound between is resampled as if the file began and ended with it. soxr's
filter would otherwise ring ~20 ms into the zeros before a sound, so a recording padded with digital silence would
come out differing from the same recording cut tight in more than its zeros (and an edge gate, ``edge_gate.py``,
could not drop them exactly). Shorter zero edges and zeros inside the clip go through soxr as before, so a clip
without such an edge is resampled bit for bit as before; a clip that is all zeros too.

Failures are reported when the stream ends, with the same precedence and numbers as a check of the whole clip: NaN
or Inf first (counted over every sample), then the peak over every sample. Once a block fails, later blocks are
only counted and measured, no longer resampled.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

BATCH_FRAMES = 65536  # samples gathered before they are checked and resampled (PyAV's frames hold ~1,000)


def resampled_length(n: int, rate: int, target_rate: int) -> int:
    """Samples soxr gives ``n`` samples at ``rate`` resampled whole to ``target_rate``: n * target / rate rounded half
    up (the length a silent edge written as zeros must keep; also ``server/stream_audio.py``'s)."""
    return (2 * n * target_rate + rate) // (2 * rate)


class ModelRateSink:
    """Collects mono float32 blocks ``[n]`` at ``rate`` Hz and resamples them to ``target_rate`` Hz as they arrive.

    Call ``open(rate, channels)`` once (the decoder knows the rate only after its first frame), ``add(block)`` for
    each block, then ``finish()``. Blocks are gathered up to ``BATCH_FRAMES`` samples before each soxr call (small
    calls cost more; the output does not depend on how the samples are cut). ``frames`` counts the samples added (at
    ``rate``); after ``finish()``, ``non_finite`` counts the NaN/Inf ones and ``peak`` is the largest absolute finite
    sample (0.0 for none). Samples past ``max_peak`` or NaN/Inf stop the resampling (``failed``), not the counting.
    ``quality`` is soxr's recipe name ("HQ" in ``audio``); ``silent_edge_s`` (seconds, 0 = off) the shortest zero
    edge kept out of soxr (module docstring). Raises ValueError if used out of order (a caller bug).
    """

    def __init__(self, target_rate: int, quality: str, max_peak: float = float("inf"),
                 silent_edge_s: float = 0.0) -> None:
        self.target_rate, self.quality, self.max_peak = target_rate, quality, max_peak
        self.silent_edge_s = silent_edge_s
        self.rate = self.channels = 0
        self.frames = self.non_finite = 0
        self.peak = 0.0
        self._stream: soxr.ResampleStream | None = None
        self._out: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._edge = 0  # zero samples (at ``rate``) that make a silent edge; 0 = off
        self._leading = True  # no non-zero sample seen yet
        self._zeros = 0  # zero samples after the last non-zero one (or from the start), not yet fed to soxr
        self._zeroed = False  # a silent edge was written as zeros (the length is then set at the end)

    def open(self, rate: int, channels: int) -> None:
        """Start a stream at ``rate`` Hz (a positive integer) from ``channels`` channels (only reported)."""
        if self.rate:
            raise ValueError("the sink is already open")
        self.rate, self.channels = rate, channels
        if rate != self.target_rate:
            self._stream = soxr.ResampleStream(rate, self.target_rate, 1, dtype="float32", quality=self.quality)
            self._edge = math.ceil(self.silent_edge_s * rate) if self.silent_edge_s > 0 else 0

    @property
    def resampling(self) -> bool:
        """True when the file's rate differs from ``target_rate`` (blocks go through soxr)."""
        return bool(self.rate) and self.rate != self.target_rate

    @property
    def failed(self) -> bool:
        """True once checked samples held NaN/Inf or a sample beyond ``max_peak`` (nothing more is resampled)."""
        return bool(self.non_finite) or self.peak > self.max_peak

    def add(self, block: np.ndarray) -> None:
        """Take the next mono float32 block ``[n]`` at ``rate`` Hz (the sink may keep it: do not reuse its memory)."""
        if not self.rate:
            raise ValueError("open() the sink before adding blocks")
        if not block.size:
            return
        self.frames += block.size
        self._pending.append(block)
        self._pending_frames += block.size
        if self._pending_frames >= BATCH_FRAMES:
            self._flush()

    def _flush(self) -> None:
        """Check the gathered samples (NaN/Inf, peak) and resample or keep them, unless the clip already failed."""
        if not self._pending:
            return
        block = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending, self._pending_frames = [], 0
        finite = np.isfinite(block)
        bad = block.size - int(np.count_nonzero(finite))
        if bad:
            self.non_finite += bad
            block = block[finite]  # the peak of the finite samples, as a whole-clip check would see after NaN
        if block.size:
            self.peak = max(self.peak, float(block.max()), -float(block.min()))  # not np.abs: no second copy
        if self.failed:
            self._out.clear()  # the clip will be refused: free what was kept
            return
        if self._stream is None:
            self._out.append(block)
        elif not self._edge:
            self._out.append(self._stream.resample_chunk(block))
        else:
            self._resample_keeping_silent_edges(block)

    def _zeros_out(self, n: int) -> None:
        """``n`` zero samples at ``rate`` written as zeros at the model rate, past soxr (a silent edge)."""
        self._out.append(np.zeros(resampled_length(n, self.rate, self.target_rate), dtype=np.float32))
        self._zeroed = True

    def _feed_zeros(self, n: int) -> None:
        """``n`` held zero samples fed to soxr after all (inside the clip, or an edge too short), in batches."""
        for start in range(0, n, BATCH_FRAMES):
            self._out.append(self._stream.resample_chunk(np.zeros(min(BATCH_FRAMES, n - start), dtype=np.float32)))

    def _resample_keeping_silent_edges(self, block: np.ndarray) -> None:
        """Resample ``block`` but hold back its trailing zeros (they may be the clip's silent end), and write a
        leading zero run of at least ``_edge`` samples as zeros (``_zeros_out``) instead of resampling it."""
        if block[0] != 0 and block[-1] != 0:  # the common case: no zero edge in this batch, no scan
            first, last = 0, block.size - 1
        else:
            loud = block != 0  # [n] bool (not an index list: 1 byte per sample)
            first = int(loud.argmax())
            if not loud[first]:
                self._zeros += block.size
                return
            last = block.size - 1 - int(loud[::-1].argmax())
        if self._leading and self._zeros + first >= self._edge:
            self._zeros_out(self._zeros + first)
            self._out.append(self._stream.resample_chunk(block[first:last + 1]))
        else:
            self._feed_zeros(self._zeros)
            self._out.append(self._stream.resample_chunk(block[:last + 1]))
        self._leading, self._zeros = False, block.size - 1 - last

    def finish(self) -> np.ndarray:
        """Check the last samples, then the clip at ``target_rate`` Hz, float32 ``[M]`` (contiguous); empty when
        ``failed`` (check it, ``non_finite`` and ``peak`` after this call)."""
        self._flush()
        if self.failed:
            self._stream = None
            return np.zeros(0, dtype=np.float32)
        if self._stream is not None:
            silent_end = self._zeros if not self._leading and self._zeros >= self._edge > 0 else 0
            self._feed_zeros(self._zeros - silent_end)  # all of them unless they are a silent end
            self._out.append(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
            if silent_end:
                self._zeros_out(silent_end)
            if self._zeroed:  # roundings of the parts: the length soxr gives the whole clip, set at
                # the end (one sample at most, a zero or the resampler's last), as a stream must (server/stream_audio)
                extra = sum(o.size for o in self._out) - resampled_length(self.frames, self.rate, self.target_rate)
                if extra > 0:
                    self._out[-1] = self._out[-1][:self._out[-1].size - extra]
                elif extra < 0:
                    self._out.append(np.zeros(-extra, dtype=np.float32))
            self._stream, self._zeros = None, 0
        out = self._out[0] if len(self._out) == 1 else (np.concatenate(self._out) if self._out else
                                                        np.zeros(0, dtype=np.float32))
        self._out = [out]
        return np.ascontiguousarray(out, dtype=np.float32)


__all__ = ["BATCH_FRAMES", "ModelRateSink", "resampled_length"]

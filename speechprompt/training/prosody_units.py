"""``ProsodyUnits`` for training data: flat arrays for on-disk caches, and YAAPT over a process pool.

A pGSLM backbone trains on units + durations + per-unit F0 + the clip's F0 statistics (``prosody.ProsodyUnits``,
docs/pgslm.md). YAAPT is the expensive step (about 0.15 s per second of audio on one core here), so it runs once
per clip and its result is cached with the units: :func:`to_arrays` / :func:`from_arrays` give the cache format,
:func:`extract_prosody` runs ``Prosody.extract`` for many clips in worker processes (``spawn``: no forked torch
thread pools), results in input order.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from speechprompt.prosody import F0Stats, Prosody, ProsodyUnits
from speechprompt.units import Units

STAT_ORDER = ("n", "sum_f0", "sum_f0_sq", "sum_log", "sum_log_sq")  # F0Stats fields, as stored [5] f64


def stats_array(stats: F0Stats) -> np.ndarray:
    """``F0Stats`` -> ``[5]`` f64 (n and the four float32-valued sums; exact round trip)."""
    return np.array([getattr(stats, k) for k in STAT_ORDER], dtype=np.float64)


def stats_from_array(a: np.ndarray) -> F0Stats:
    return F0Stats(int(a[0]), *(float(x) for x in a[1:5]))


def to_arrays(item: Units) -> dict[str, np.ndarray]:
    """``units``/``durations [M]`` int16 (codebooks < 32768, runs < 32768 frames), and for ``ProsodyUnits`` also
    ``f0 [M]`` f32 Hz and ``f0_stats [5]`` f64."""
    out = {"units": np.asarray(item.units, np.int16), "durations": np.asarray(item.durations, np.int16)}
    if isinstance(item, ProsodyUnits):
        out |= {"f0": np.asarray(item.f0, np.float32), "f0_stats": stats_array(item.f0_stats)}
    return out


def from_arrays(units: np.ndarray, durations: np.ndarray, f0: np.ndarray | None = None,
                f0_stats: np.ndarray | None = None) -> Units:
    """Inverse of :func:`to_arrays`: ``Units`` (no ``f0``) or ``ProsodyUnits``; ``frames = sum(durations)``."""
    u = torch.from_numpy(np.asarray(units).astype(np.int64))
    d = torch.from_numpy(np.asarray(durations).astype(np.int64))
    if f0 is None:
        return Units(u, d, int(d.sum()))
    return ProsodyUnits(u, d, int(d.sum()), torch.from_numpy(np.asarray(f0, np.float32).copy()),
                        stats_from_array(np.asarray(f0_stats)))


_WORKER: dict = {}


def _init(prosody: Prosody) -> None:
    torch.set_num_threads(1)
    _WORKER["prosody"] = prosody


def _extract(job: tuple[np.ndarray, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Worker: numpy in and out (tensors would travel through shared-memory handles, one per tensor)."""
    wav, arrays = job
    return to_arrays(_WORKER["prosody"].extract(wav, from_arrays(**arrays)))


def extract_prosody(prosody: Prosody, wavs: Sequence[np.ndarray], units: Sequence[Units], jobs: int = 2,
                    progress: Callable[[int], None] | None = None) -> list[ProsodyUnits]:
    """``Prosody.extract`` (one YAAPT run) for every clip ``[N_i]`` f32 @16 kHz with its deduplicated ``Units``.

    ``jobs`` worker processes (1: in this process); ``progress(1)`` after each clip. Raises ``ProsodyError`` as
    ``Prosody.extract`` does (non-finite audio, F0/unit lengths that disagree).
    """
    if len(wavs) != len(units):
        raise ValueError(f"{len(wavs)} clips but {len(units)} unit sequences")
    out: list[ProsodyUnits] = []
    if jobs <= 1 or len(wavs) < 2 or prosody.config.f0_tracker == "yin":  # YIN: ~3 ms a clip, no workers
        for w, u in zip(wavs, units):
            out.append(prosody.extract(np.asarray(w, np.float32), u))
            if progress:
                progress(1)
        return out
    work = [(np.asarray(w, np.float32), to_arrays(u)) for w, u in zip(wavs, units)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init, initargs=(prosody,)) as pool:
        for r in pool.map(_extract, work, chunksize=8):
            out.append(from_arrays(**r))
            if progress:
                progress(1)
    return out


__all__ = ["extract_prosody", "from_arrays", "stats_array", "stats_from_array", "to_arrays"]

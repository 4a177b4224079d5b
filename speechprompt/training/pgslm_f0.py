"""F0 for the pGSLM build: YAAPT frame tracks over a process pool, per-clip (optionally mean-normalised) log-F0 of
the voiced frames, and the F0 bin edges of pGSLM's ``examples/textless_nlp/pgslm/quantize_f0.py``
(``build_pgslm`` step 3-4; parity with fairseq in ``tests/test_default_pgslm.py``)."""

from __future__ import annotations

import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from torch import Tensor

from speechprompt.prosody import F0Stats, ProsodyConfig, ProsodyError, frame_f0

HIST_BINS = 100_000  # quantize_f0.py: np.histogram(f0_all, 100000)


def _frame_f0_job(job: tuple[np.ndarray, ProsodyConfig]) -> np.ndarray | None:
    """Worker: YAAPT frame F0 ``[F]`` f32 of one clip, or None where YAAPT fails (the clip counts as unvoiced)."""
    wav, cfg = job
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return frame_f0(wav, cfg).astype(np.float32)
        except ProsodyError:
            raise
        except Exception:  # noqa: BLE001 - as Prosody.extract: YAAPT throws in rare cases
            return None


def frame_tracks(wavs: list[np.ndarray], cfg: ProsodyConfig, jobs: int) -> list[Tensor | None]:
    """YAAPT frame F0 of every clip (``[F_i]`` f32 Hz, 0 = unvoiced; None = failed), ``jobs`` worker processes
    (forked: the workers run numpy only); result order = ``wavs`` order. The YIN tracker (``cfg.f0_tracker``) runs
    in this process: it is torch, ~3 ms per clip, and torch's thread pool hangs in a forked child."""
    work = [(w, cfg) for w in wavs]
    if jobs <= 1 or cfg.f0_tracker == "yin":  # YIN is torch: no forked workers (OpenMP state does not survive fork)
        out = list(map(_frame_f0_job, work))
    else:
        with ProcessPoolExecutor(jobs) as pool:
            out = list(pool.map(_frame_f0_job, work, chunksize=4))
    return [None if t is None else torch.from_numpy(t) for t in out]


def normalized_log_f0_frames(track: Tensor | None, subtract_mean: bool = True) -> Tensor:
    """Voiced frames of one clip -> log-F0 minus the clip's mean log-F0 ``[V]`` f32 (``quantize_f0.py`` with the
    clip as its own speaker: ``F0Stat`` mean, float32 arithmetic); with ``subtract_mean=False`` log-F0 itself
    (the recipe without ``--normalize-f0-mean``: absolute pitch, which tells a low voice from a high one)."""
    if track is None:
        return torch.zeros(0)
    x = track[track != 0].to(torch.float32)
    if not x.numel():
        return torch.zeros(0)
    if not subtract_mean:
        return x.log()
    mean = torch.tensor(F0Stats.from_frames(track).summary().logf0_mean, dtype=torch.float32)
    return x.log() - mean


def f0_bin_edges(values: np.ndarray, bins: int = 32) -> Tensor:
    """pGSLM ``quantize_f0.quantize_f0``: ``bins - 1`` edges ``[bins-1]`` f64 at the ``k/bins`` cumulative
    percentiles of a 100 000-bin histogram of ``values`` (each edge = the left edge of the histogram bin whose
    cumulative percentage is nearest to the threshold; thresholds accumulated as the recipe does)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no voiced F0 frames to compute F0 bin edges from")
    hist, bin_x = np.histogram(values, HIST_BINS)
    cum_hist = np.cumsum(hist) / len(values) * 100
    edges, size = [], 100 / bins
    threshold = size
    for _ in range(bins - 1):
        edges.append(bin_x[int(np.abs(cum_hist - threshold).argmin())])
        threshold += size
    return torch.tensor(np.array(edges), dtype=torch.float64)


__all__ = ["HIST_BINS", "f0_bin_edges", "frame_tracks", "normalized_log_f0_frames"]

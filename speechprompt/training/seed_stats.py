"""How far a difference between two backbones' suite cells is more than prompt-training noise.

A suite cell (one task's test accuracy, or the vad EER) moves with the prompt seed by as much as the 2-point margin of
issue 14's suite rule ("no suite task may lose more than 2 points"): v9's commands-en spans 0.500-0.646 over three
seeds on one test set (docs/results.md, "The 40 ms bundle itself"). This module turns runs at several prompt seeds
into a verdict that says so: the difference of the means with a bootstrap interval over seeds (each bundle's runs
resampled on their own, the percentile method of Efron & Tibshirani, *An Introduction to the Bootstrap*, ch. 13), and
the literal rule applied to one bundle against itself (two disjoint sets of its own seeds). The interval covers the
seed-to-seed spread of prompt training only; the test clips are one fixed sample, whose own error (binomial, ~0.045 at
0.7 on 100 clips) it does not include.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BEHIND, NOT_BEHIND, UNDECIDED = "behind", "not behind", "undecided"
TOL = 1e-9  # scores are k / n clips: 0.74 - 0.76 is -0.020000000000000018 in floats, exactly the margin, not beyond it


@dataclass(frozen=True)
class SeedDiff:
    """``new - old`` of the means over seeds (higher is better: callers pass an EER negated) and its bootstrap
    interval ``[lo, hi]`` at ``level``; ``n_old`` / ``n_new`` runs."""

    diff: float
    lo: float
    hi: float
    level: float
    n_old: int
    n_new: int


def bootstrap_diff(old: Sequence[float], new: Sequence[float], *, resamples: int = 10_000, level: float = 0.9,
                   seed: int = 0) -> SeedDiff:
    """Difference of the means ``mean(new) - mean(old)`` of per-seed scores (higher is better) with a percentile
    bootstrap interval: ``resamples`` times, each side's runs are drawn with replacement from its own runs (the two
    bundles' seeds are not paired), and the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled
    differences are the interval. Deterministic for a given ``seed`` (numpy's default generator).

    With a few runs per side the percentile interval is narrow (the resampled spread is biased down by
    sqrt((n - 1) / n), and it has no t-correction: at six seeds a Welch t interval is about 20 % wider), so an
    "undecided" near the margin deserves more seeds, not a reading either way.

    Raises ValueError when a side is not a flat list of at least two runs (one run has no spread to resample),
    ``level`` is not in (0, 1) or ``resamples`` is below 1."""
    a, b = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need a flat list of >= 2 runs on each side, got shapes {a.shape} old and {b.shape} new")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(len(a), size=(resamples, len(a)))].mean(axis=1)
    mb = b[rng.integers(len(b), size=(resamples, len(b)))].mean(axis=1)
    lo, hi = np.quantile(mb - ma, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return SeedDiff(float(b.mean() - a.mean()), float(lo), float(hi), level, len(a), len(b))


def verdict(d: SeedDiff, margin: float = 0.02) -> str:
    """``BEHIND`` when the whole interval is below ``-margin`` (new loses more than the margin beyond seed noise),
    ``NOT_BEHIND`` when its lower end is at least ``-margin``, else ``UNDECIDED`` (the runs cannot tell). An end
    within ``TOL`` of ``-margin`` counts as at the margin."""
    if d.hi < -margin - TOL:
        return BEHIND
    if d.lo >= -margin - TOL:
        return NOT_BEHIND
    return UNDECIDED


def rule_fires(old: Sequence[float], new: Sequence[float], margin: float = 0.02) -> bool:
    """The suite rule as sessions 39-42 applied it: the mean of ``new`` is more than ``margin`` below the mean of
    ``old`` (higher is better; a difference within ``TOL`` of the margin is not beyond it). Raises ValueError on an
    empty side."""
    if not len(old) or not len(new):
        raise ValueError("need >= 1 run on each side")
    return float(np.mean(new)) - float(np.mean(old)) < -margin - TOL

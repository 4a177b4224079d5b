"""Explanations of a prompted classification: which stretches of a clip moved the winning label, and which
units a task's verbalizer ties to which label.

Occlusion over the deduplicated unit sequence (Zeiler & Fergus, "Visualizing and Understanding Convolutional
Networks", 2014, applied to units): the ``M`` units of a clip are cut into ``S <= max_spans`` contiguous
stretches of (nearly) equal unit counts; variant ``s`` is the clip's units with stretch ``s`` REMOVED (the
unit LM sees the sequence without it; no "neutral" unit is invented). The caller scores the base row and the
``S`` variants in one forward; a stretch's importance is ``p(label | all units) - p(label | without it)``:
positive when the stretch supported the winning label. Unit spans map back to seconds through the durations:
unit ``i`` starts at frame ``sum(durations[:i])`` and frame ``t`` of ``T`` at ``t / T * duration_s`` seconds (so
the stretches tile ``[0, duration_s]`` exactly; one frame is about the dense model's hop, e.g. 80 ms).

Verbalizer view (the SpeechPrompt v2 paper analyses which units the learnable verbalizer maps to each
label): class ``c``'s output is ``sum_v W[4 + c, v] * logit_v`` over the unit LM's vocabulary, so the weight a
unit ``u`` puts on a label is ``W[4 + c, token(u)]``. A weight added equally to every class of one unit does not
change any softmax over classes, so the identifiable part is the weight CENTRED over classes; that is what
:func:`verbalizer_unit_weights` returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .package import NUM_SPECIAL
from .units import Units


def occlusion_spans(n_units: int, max_spans: int, first: int = 0) -> list[tuple[int, int]]:
    """``[first, n_units)`` cut into ``min(n_units - first, max_spans)`` contiguous non-empty ``(start, end)`` unit
    spans whose sizes differ by at most one; ``[]`` for no units. ``first``: units before it are never occluded
    (a voice prefix, ``units.prefix_length``). Raises ``ValueError`` if ``max_spans < 1`` or ``first`` is outside
    ``[0, n_units]``."""
    if max_spans < 1:
        raise ValueError(f"max_spans must be >= 1, got {max_spans}")
    if not 0 <= first <= n_units:
        raise ValueError(f"first unit {first} is outside [0, {n_units}]")
    n = n_units - first
    s = min(n, max_spans)
    if s == 0:
        return []
    edges = [first + n * i // s for i in range(s + 1)]
    return [(edges[i], edges[i + 1]) for i in range(s)]


def occlude(units: Units, start: int, end: int) -> Units:
    """The clip's units without ``units[start:end]``: every per-unit tensor field (units, durations, and on
    pGSLM the F0 per unit) loses that span and ``frames`` loses its frames. Same class as ``units``."""
    m = int(units.units.shape[0])
    if not 0 <= start <= end <= m:
        raise ValueError(f"span [{start}, {end}) is outside the {m} units")
    changes: dict = {}
    for f in dataclasses.fields(units):
        v = getattr(units, f.name)
        if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == m:
            changes[f.name] = torch.cat([v[:start], v[end:]])
    changes["frames"] = int(units.frames) - int(units.durations[start:end].sum())
    return dataclasses.replace(units, **changes)


def span_seconds(durations: Tensor, spans: list[tuple[int, int]], duration_s: float,
                 start_s: float = 0.0) -> list[tuple[float, float]]:
    """Unit spans -> ``(start, end)`` seconds: durations ``[M]`` (frames per unit) place unit boundaries on
    frames, and frame ``t`` of ``T = sum(durations)`` sits at ``start_s + t / T * duration_s`` seconds (the units
    tile ``[start_s, start_s + duration_s]``: the clip, or the part of it an edge gate kept)."""
    cum = np.concatenate([[0], np.cumsum(durations.cpu().numpy())]).astype(np.float64)
    total = cum[-1] if cum[-1] > 0 else 1.0
    return [(float(start_s + cum[a] / total * duration_s), float(start_s + cum[b] / total * duration_s))
            for a, b in spans]


@dataclass(frozen=True)
class Stretch:
    """One occluded stretch: units ``[start_unit, end_unit)``, seconds ``[start_s, end_s)``, the winning
    label's probability without it, and ``importance`` = base probability - that (positive: it supported)."""

    start_unit: int
    end_unit: int
    start_s: float
    end_s: float
    score_without: float
    importance: float


@dataclass(frozen=True)
class Explanation:
    """Occlusion explanation of one row: the winning class index, its probability, and the stretches."""

    class_index: int
    score: float
    stretches: tuple[Stretch, ...]


def explain_occlusion(base: np.ndarray, occluded: list[np.ndarray], units: Units,
                      spans: list[tuple[int, int]], duration_s: float, start_s: float = 0.0) -> Explanation:
    """Base probabilities ``[C]`` + one ``[C]`` per span (the row without that span) -> :class:`Explanation`
    of the winning (argmax) class; the units cover ``[start_s, start_s + duration_s]`` seconds of the clip.
    Raises ``ValueError`` when the counts differ."""
    if len(occluded) != len(spans):
        raise ValueError(f"{len(occluded)} occluded rows for {len(spans)} spans")
    cls = int(np.argmax(base))
    p = float(base[cls])
    secs = span_seconds(units.durations, spans, duration_s, start_s)
    stretches = tuple(Stretch(a, b, s, e, float(o[cls]), p - float(o[cls]))
                      for (a, b), (s, e), o in zip(spans, secs, occluded, strict=True))
    return Explanation(cls, p, stretches)


def verbalizer_unit_weights(verbalizer: Tensor, unit_tokens: Tensor) -> np.ndarray:
    """Verbalizer ``[C+4, V]`` and each unit's token id ``[K]`` -> weights ``[C, K]`` f64 of unit ``k`` on class
    ``c``, centred over classes (each column sums to 0; see the module docstring)."""
    w = verbalizer[NUM_SPECIAL:, unit_tokens.to(torch.long)].double().cpu().numpy()  # [C, K]
    return w - w.mean(axis=0, keepdims=True)


def top_units(weights: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Per class, the ``k`` units with the largest centred weight, best first: ``[(unit, weight), ...]``."""
    out = []
    for row in weights:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(int(u), float(row[u])) for u in order])
    return out


__all__ = ["Explanation", "Stretch", "explain_occlusion", "occlude", "occlusion_spans", "span_seconds",
           "top_units", "verbalizer_unit_weights"]

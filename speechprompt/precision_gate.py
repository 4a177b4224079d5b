"""The agreement gate of a precision mode: does it give the units and labels fp32 gives?

``measure(runtime, wavs, tasks)`` runs clips ``[N_i] f32 @ 16 kHz`` through one runtime the way the server does
(dense model -> frame units ``[T_i]`` -> dedup -> one prompted unit-LM row per clip x task) and times it;
``agreement(ref, other, other_runtime)`` compares a mode's run with the fp32 run:

- ``units_agree``: fraction of frames whose unit (nearest centroid) equals fp32's, over all clips;
- ``labels_agree[task]``: fraction of clips whose top label equals fp32's, end to end (each side on its own units);
- ``max_prob_diff``: largest absolute class-probability difference end to end, and ``max_prob_diff_same_units``
  with the mode's unit LM fed fp32's units (the LM's own share of the difference);
- ``speedup``: fp32 seconds / the mode's seconds for the same work (encode + classify, one run each).

A mode passes when ``units_agree >= 0.99`` and every task's ``labels_agree >= 0.995`` (:data:`THRESHOLDS`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .codebook import dedup
from .units import Units, with_prefix

THRESHOLDS = {"units_agree": 0.99, "labels_agree": 0.995}


@dataclass(frozen=True)
class Measured:
    """One runtime's run over the gate clips: frame units ``[T_i]`` i64, deduplicated units, class probabilities
    per task (``probs[task][i]``: ``[C]`` f32 for clip i) and the seconds it took (encode + classify)."""

    frames: list[Tensor]
    units: list[Units]
    probs: dict[str, list[np.ndarray]]
    seconds: float


def classify_all(runtime, units: list[Units], tasks: list[str], batch: int) -> dict[str, list[np.ndarray]]:
    """Every clip x every task, ``batch`` rows per unit-LM forward -> ``{task: [probs [C] per clip]}``."""
    out: dict[str, list[np.ndarray]] = {}
    for task in tasks:
        probs: list[np.ndarray] = []
        for s in range(0, len(units), batch):
            rows = units[s:s + batch]
            probs += runtime.classify(rows, [task] * len(rows))
        out[task] = probs
    return out


def measure(runtime, wavs: list[np.ndarray], tasks: list[str], batch: int = 16) -> Measured:
    """Encode ``wavs`` (``batch`` clips per encoder call) and classify every clip with every task (resident in
    ``runtime``'s prompt bank). Raises what ``Runtime.classify`` raises (``KeyError`` for a task not resident)."""
    enc, codebook = runtime.extractor.encoder, runtime.extractor.codebook
    voice, prefix = getattr(runtime.extractor, "voice", None), []
    t0 = time.perf_counter()
    frames: list[Tensor] = []
    with torch.inference_mode():
        for s in range(0, len(wavs), batch):
            clips = [torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)) for w in wavs[s:s + batch]]
            feats = enc.extract(clips)
            if voice is not None:  # the prefix codes count among the compared units: a mode may move them too
                prefix += list(voice.prefix(enc, clips) + codebook.vocab_size)
            frames += [codebook.quantize(f).cpu() for f in feats]
    units = [Units(*dedup(f), frames=int(f.numel())) for f in frames]
    if voice is not None:
        units = [Units(*with_prefix(u.units, u.durations, p), frames=u.frames) for u, p in zip(units, prefix, strict=True)]
        frames = [torch.cat([p, f]) for p, f in zip(prefix, frames, strict=True)]
    probs = classify_all(runtime, units, tasks, batch)
    return Measured(frames, units, probs, time.perf_counter() - t0)


def agreement(ref: Measured, other: Measured, other_runtime, batch: int = 16) -> dict:
    """Compare a mode's run (``other``, from ``other_runtime``) with the fp32 run ``ref`` on the same clips and
    tasks; returns the figures listed in the module docstring plus ``passed``. Raises ValueError when the runs
    differ in clips or tasks."""
    if len(ref.frames) != len(other.frames) or sorted(ref.probs) != sorted(other.probs):
        raise ValueError("the two runs must cover the same clips and tasks")
    same = sum(int((a == b).sum()) for a, b in zip(ref.frames, other.frames, strict=True))
    total = sum(int(a.numel()) for a in ref.frames)
    units_agree = same / max(total, 1)
    labels, diff = {}, 0.0
    for task, rp in ref.probs.items():
        op = other.probs[task]
        labels[task] = float(np.mean([int(a.argmax()) == int(b.argmax()) for a, b in zip(rp, op, strict=True)]))
        diff = max(diff, max(float(np.abs(a - b).max()) for a, b in zip(rp, op, strict=True)))
    lm_only = classify_all(other_runtime, ref.units, list(ref.probs), batch)
    diff_lm = max(float(np.abs(a - b).max()) for t in ref.probs for a, b in zip(ref.probs[t], lm_only[t], strict=True))
    passed = units_agree >= THRESHOLDS["units_agree"] and min(labels.values()) >= THRESHOLDS["labels_agree"]
    return {"passed": bool(passed), "units_agree": units_agree, "frames": total, "labels_agree": labels,
            "min_labels_agree": min(labels.values()), "max_prob_diff": diff, "max_prob_diff_same_units": diff_lm,
            "seconds": other.seconds, "speedup": ref.seconds / other.seconds}


__all__ = ["THRESHOLDS", "Measured", "agreement", "classify_all", "measure"]

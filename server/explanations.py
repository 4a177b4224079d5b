"""Explanation bodies: occlusion per task row (``?explain=true`` on classify) and the verbalizer view of a
task (``GET /v1/tasks/{task}/verbalizer``). The numbers come from ``speechprompt.explain``; this module only
shapes them into JSON. No FastAPI here."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from speechprompt.explain import explain_occlusion, top_units, verbalizer_unit_weights
from speechprompt.package import TaskPackage

from .errors import TaskUnavailable
from .windows import row_probs

DEFAULT_SPANS = 16
MAX_SPANS = 64


def occlusion_body(lease: Any, base: np.ndarray, occluded: tuple, units: Any, spans: tuple,
                   span_s: tuple[float, float]) -> dict:
    """One task's ``explanation`` (``lease``: the task version scored): the winning label, its probability, and
    per stretch (seconds, unit span) that label's probability without the stretch and the drop
    (``importance``, positive = supported it). ``span_s``: the seconds of the clip the units cover
    (``Runtime.encoded_span``). Raises an occluded row's typed error."""
    rows = [row_probs(lease, o) for o in occluded]
    e = explain_occlusion(base, rows, units, list(spans), span_s[1] - span_s[0], span_s[0])
    return {"method": "occlusion", "label": lease.labels[e.class_index], "score": e.score,
            "spans": [{"start": round(s.start_s, 4), "end": round(s.end_s, 4), "units": [s.start_unit, s.end_unit],
                       "score_without": s.score_without, "importance": s.importance} for s in e.stretches]}


def verbalizer_body(pkg: TaskPackage, unit_tokens: Any, top_k: int) -> dict:
    """The verbalizer view of a task version: per label its ``top_k`` units (centred weight), the full centred
    weight matrix ``[C, K]`` and, per unit, the label it leans to most. An ensemble's view is the mean of its
    members' weights (the weights are linear in the verbalizer: the view of the members' mean verbalizer)."""
    w = verbalizer_unit_weights(pkg.mean_verbalizer, unit_tokens)  # [C, K]
    labels = list(pkg.meta.labels)
    return {"task": pkg.meta.task, "version": pkg.version, "labels": labels, "units": int(w.shape[1]),
            "method": "verbalizer weights centred over classes" + (
                f" (mean of {len(pkg.members)} members)" if len(pkg.members) > 1 else ""),
            "top": {lab: [{"unit": u, "weight": x} for u, x in row]
                    for lab, row in zip(labels, top_units(w, top_k), strict=True)},
            "unit_label": [labels[int(i)] for i in np.argmax(w, axis=0)],
            "weights": [[round(float(x), 6) for x in row] for row in w]}


async def verbalizer_view(service: Any, task: str, top_k: int) -> dict:
    """The current version of ``task`` read back from the store (worker thread) -> :func:`verbalizer_body`.

    Raises InvalidTaskName (400), UnknownTask (404), TaskUnavailable (503: no servable version, or its package
    is gone from the store), StoreUnavailable (503)."""
    service.require_ready()
    described = service.registry.describe(task)
    version = described["version"]
    if version is None:
        raise TaskUnavailable(f"task {task!r} has no servable version")

    def load() -> dict:
        data = service.registry.store.read(task, version)
        if data is None:
            raise TaskUnavailable(f"task {task!r} version {version} is no longer in the store")
        return verbalizer_body(service.registry.validate(task, data, stored=True), service.runtime.unit_tokens(),
                               top_k)

    return await asyncio.to_thread(load)

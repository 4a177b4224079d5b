"""A gate for a multi-task classify: one task (e.g. ``vad``) decides whether the other tasks' answers apply.

``POST /v1/classify?tasks=language-id,gender&gate=vad:speech`` scores the clip with the gate task in the same
unit-LM pass (one more row) and reports ``gate``: the gate task's version, P(``speech``) and ``passed`` (P >=
``gate_threshold``, default 0.5). Every other result then carries ``applicable`` (= ``passed``): a clip with no
voice still gets a language and a gender from tasks that have no "none" class, and the gate says that answer does
not apply. Scores are never hidden; the caller decides. A gate task that cannot be served (unknown, failed, not
allowed) leaves ``passed`` null, its problem in ``gate.error``, and no ``applicable`` on the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import BadRequest, to_problem
from .registry import Lease
from .stores.base import check_task_name

ACCEPTED = "gate=<task>:<label>, e.g. gate=vad:speech (a task and one of its labels)"
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Gate:
    """``task``'s probability of ``label`` must reach ``threshold`` (0-1) for the other answers to apply."""

    task: str
    label: str
    threshold: float = DEFAULT_THRESHOLD


def parse_gate(spec: str | None, threshold: float | None) -> Gate | None:
    """``"vad:speech"`` -> ``Gate("vad", "speech", threshold)``; None without a gate.

    Raises ``BadRequest`` (400) for a spec that is not ``task:label`` or a threshold without a gate or outside
    (0, 1], and ``InvalidTaskName`` (400) for a task name the server never accepts.
    """
    if spec is None:
        if threshold is not None:
            raise BadRequest("gate_threshold was given without a gate", accepted=ACCEPTED)
        return None
    task, sep, label = spec.partition(":")
    if not sep or not task or not label:
        raise BadRequest(f"gate {spec[:80]!r} is not <task>:<label>", accepted=ACCEPTED)
    check_task_name(task)
    t = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if not (math.isfinite(t) and 0.0 < t <= 1.0):
        raise BadRequest(f"gate_threshold {threshold!r} is outside (0, 1]", accepted="a probability in (0, 1]")
    return Gate(task, label, t)


def check_label(gate: Gate, lease: Lease) -> None:
    """Raise ``BadRequest`` (400) when the gate's label is not one of the gate task's labels."""
    if gate.label not in lease.labels:
        raise BadRequest(f"gate label {gate.label[:80]!r} is not a label of task {gate.task!r} version {lease.version}",
                         accepted=f"one of: {', '.join(lease.labels)}")


def outcome(gate: Gate, got: dict | Exception) -> dict:
    """The response's ``gate`` object from the gate task's result item (its ``scores`` must list ``gate.label``)
    or its error."""
    body: dict = {"task": gate.task, "label": gate.label, "threshold": gate.threshold}
    if isinstance(got, Exception):
        return {**body, "version": None, "probability": None, "passed": None, "error": to_problem(got).body}
    p = next(s["score"] for s in got["scores"] if s["label"] == gate.label)
    return {**body, "version": got["version"], "probability": p, "passed": bool(p >= gate.threshold)}


__all__ = ["ACCEPTED", "DEFAULT_THRESHOLD", "Gate", "check_label", "outcome", "parse_gate"]

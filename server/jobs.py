"""What travels through the model loop: a job (clip + task-version keys + its future) and its result.

A job's asyncio future is resolved on its own event loop (``loop.call_soon_threadsafe``) from the model
thread; ``on_finish`` (the registry releasing the job's version leases) runs exactly once, on the model
thread, whether the job was scored, failed, expired or skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speechprompt.explain import occlude, occlusion_spans
from speechprompt.units import prefix_length

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One clip to score with one or more task versions.

    ``samples`` [N] f32 @ 16 kHz; ``digest`` sha256 of those samples (units-cache key); ``keys`` one
    prompt-bank key per row; ``deadline`` in ``time.monotonic()`` seconds; ``on_finish`` runs once on the
    model thread when the job is done or skipped (the registry releases its version leases there);
    ``explain_spans`` > 0 adds, per key, one row per occluded stretch of the units (``speechprompt.explain``).
    """

    samples: np.ndarray
    digest: str
    keys: tuple[str, ...]
    deadline: float
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    on_finish: Callable[[], None] | None = None
    enqueued: float = field(default_factory=time.monotonic)
    abandoned: bool = False
    cached: bool = True  # look the clip up in / add it to the units cache (False for the windows of long audio)
    explain_spans: int = 0
    weights: tuple[int, ...] = ()  # unit-LM rows per key (an ensemble task's members; empty: 1 each)

    @property
    def max_rows(self) -> int:
        """Most unit-LM rows this job can need (with explanations the unit count is known only after encoding);
        a key of a K-member ensemble counts K rows, as the prompt bank runs it."""
        return (sum(self.weights) if self.weights else len(self.keys)) * (1 + self.explain_spans)

    def rows_for(self, units: Any) -> tuple[list, list[str], list[tuple[int, int]]]:
        """The job's rows once its units are known: (units per row, key per row, occluded unit spans).
        First one base row per key, then per key one row per span with that span removed."""
        spans = occlusion_spans(len(units.units), self.explain_spans, prefix_length(units)) if self.explain_spans else []
        variants = [occlude(units, a, b) for a, b in spans]
        row_units = [units] * len(self.keys) + [v for _ in self.keys for v in variants]
        row_keys = list(self.keys) + [k for k in self.keys for _ in variants]
        return row_units, row_keys, spans


@dataclass(frozen=True)
class JobResult:
    """What the model loop made of a job: units, one entry per key (probabilities [C] or the row's
    error), and the job's timings in milliseconds (``encode_ms`` is 0 on a units-cache hit). With
    explanations: the occluded unit ``spans`` and, per key, the probabilities of each occluded row."""

    units: Any
    rows: tuple[np.ndarray | BaseException, ...]
    cache_hit: bool
    queue_ms: float
    encode_ms: float
    lm_ms: float
    batch_rows: int
    batch_jobs: int
    spans: tuple[tuple[int, int], ...] = ()
    occluded: tuple[tuple[np.ndarray | BaseException, ...], ...] = ()  # per key, one entry per span


def resolve(job: Job, result: JobResult | None, exc: BaseException | None) -> None:
    """Settle the job's future on its event loop (call from any thread); a cancelled future stays so."""

    def settle(fut: asyncio.Future = job.future) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def finish(job: Job) -> None:
    """Run the job's ``on_finish`` once (later calls do nothing)."""
    fn, job.on_finish = job.on_finish, None
    if fn is not None:
        try:
            fn()
        except Exception:  # noqa: BLE001
            log.exception("job on_finish failed")

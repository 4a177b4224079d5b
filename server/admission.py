"""Admission: a classify request is admitted or refused (429) BEFORE its body is read, so a refused request
costs no upload buffering and no decode.

A request holds one slot from admission until its answer; it is refused when the slots are full (the
queue's capacity, counting requests still reading or decoding their body) or when the estimated wait
(requests ahead x measured model seconds per job) is already past the request deadline. ``Retry-After``
is that estimated drain time, at least 1 s and capped at ``MAX_RETRY_AFTER_S``. Runs on the event loop
only (no lock needed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import QueueFull

MAX_RETRY_AFTER_S = 10


def retry_after_s(waiting: int, job_seconds: float) -> int:
    """Seconds until ``waiting`` jobs drain at ``job_seconds`` each: 1 to ``MAX_RETRY_AFTER_S``."""
    return max(1, min(MAX_RETRY_AFTER_S, math.ceil(waiting * job_seconds)))


class Admission:
    """Slots for in-flight classify requests; ``job_seconds()`` is the model loop's measured time per job."""

    def __init__(self, capacity: int, deadline_s: float, job_seconds: Callable[[], float]):
        self.capacity = capacity
        self.deadline_s = deadline_s
        self.job_seconds = job_seconds
        self.inflight = 0
        self.refused = 0
        self.admitted = 0  # requests ever admitted (the service trims memory once idle after new ones)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot for the request's lifetime; raises QueueFull (429, Retry-After) when refused."""
        per_job = self.job_seconds()
        wait = self.inflight * per_job
        if self.inflight >= self.capacity or wait > self.deadline_s:
            self.refused += 1
            raise QueueFull(f"{self.inflight} requests are in flight (capacity {self.capacity}, estimated wait "
                            f"{wait:.1f} s); retry later", retry_after_s=retry_after_s(self.inflight, per_job))
        self.inflight += 1
        self.admitted += 1
        try:
            yield
        finally:
            self.inflight -= 1

"""The model loop: one bounded queue for all tasks, ONE owner thread that runs every model call.

A job is one decoded clip and the prompt-bank keys (``task@version``) it must be scored with, one
unit-LM row per key. The owner thread takes a batch (at most ``max_rows`` rows, waiting at most
``max_wait_s`` for it to fill), skips jobs whose client went away (counted) or whose deadline passed
(504), looks the clips up in the units cache, runs the encoder once for the misses and ONE unit-LM
forward for all rows of all tasks (``runtime.classify(units_list, keys)``; a single job with more rows than
``max_rows``, e.g. many tasks with explanations, runs in forwards of at most ``max_rows`` rows). Each job's asyncio future
is resolved on its event loop with ``loop.call_soon_threadsafe``.

Prompt-bank changes (``runtime.add_task`` / ``remove_task``) run on the same thread between batches
(:meth:`Batcher.call`), so a forward never sees the bank change under it. No FastAPI here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .admission import retry_after_s
from .errors import DeadlineExceeded, NotReady, QueueFull
from .jobs import Job, JobResult, finish, resolve
from .metrics import Metrics
from .units_cache import UnitsCache

log = logging.getLogger(__name__)


class Batcher:
    """Owner of the queue and of every model call. ``runtime`` needs ``extract_units(wavs)`` and
    ``classify(units_list, keys)`` (see ``speechprompt.runtime.Runtime``)."""

    def __init__(self, runtime: Any, cache: UnitsCache, units_key: str, *, max_rows: int,
                 max_wait_s: float, capacity: int, metrics: Metrics | None = None):
        self.runtime = runtime
        self.cache = cache
        self.units_key = units_key  # the units cache's backbone key (Runtime.units_key)
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.capacity = capacity
        self.metrics = metrics
        self._jobs: deque[Job] = deque()
        self._controls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._job_seconds = 0.05  # moving average of model time per job (Retry-After estimate)
        self.dropped = 0
        self.expired = 0
        self.batches = 0

    # -- event-loop side ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sp-model-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued jobs and control calls, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def job_seconds(self) -> float:
        """Measured model seconds per job (moving average): the drain rate Retry-After is estimated from."""
        return self._job_seconds

    @property
    def depth(self) -> int:
        return len(self._jobs)

    def submit(self, samples: np.ndarray, digest: str, keys: Sequence[str], deadline: float,
               on_finish: Callable[[], None] | None = None, *, cached: bool = True,
               explain_spans: int = 0) -> asyncio.Future:
        """Queue a job (call from the event loop); raises QueueFull (429) or NotReady when stopping.
        ``cached=False`` keeps the clip out of the units cache (the many windows of a long clip would evict
        the clips other requests repeat); ``explain_spans`` > 0 scores, in the same forward, each key once
        more per occluded stretch."""
        loop = asyncio.get_running_loop()
        rows_of = getattr(self.runtime, "rows_of", None)  # an ensemble task costs a row per member
        job = Job(samples, digest, tuple(keys), deadline, loop.create_future(), loop, on_finish, cached=cached,
                  explain_spans=explain_spans, weights=tuple(rows_of(k) for k in keys) if rows_of else ())
        job.future.add_done_callback(lambda f: setattr(job, "abandoned", f.cancelled()))
        with self._cond:
            if self._stopping or self._thread is None:
                raise NotReady("the model loop is not running")
            if len(self._jobs) >= self.capacity:
                raise QueueFull(f"{len(self._jobs)} jobs are waiting (capacity {self.capacity})",
                                retry_after_s=retry_after_s(len(self._jobs), self._job_seconds))
            self._jobs.append(job)
            self._cond.notify_all()
        if self.metrics:
            self.metrics.queue_depth.set(len(self._jobs))
        return job.future

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``fn`` on the model thread between batches (FIFO with other calls); wrap the returned
        future with ``asyncio.wrap_future`` to await it."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stopping or self._thread is None:
                fut.set_exception(NotReady("the model loop is not running"))
                return fut
            self._controls.append((fn, fut))
            self._cond.notify_all()
        return fut

    # -- model thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch, controls = self._take()
            for fn, fut in controls:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn())
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        fut.set_exception(exc)
            if batch:
                try:
                    self._process(batch)
                except BaseException:  # noqa: BLE001 - the loop must survive a bug in one batch
                    log.exception("model loop batch failed")
            elif batch is None and not controls:
                return

    def _take(self) -> tuple[list[Job] | None, list]:
        """Wait for work; return (batch, []) or ([], control calls); (None, []) means stop."""
        with self._cond:
            while not self._jobs and not self._controls and not self._stopping:
                self._cond.wait()
            if self._controls:
                controls = list(self._controls)
                self._controls.clear()
                return [], controls
            if not self._jobs:
                return None, []
            batch = [self._jobs.popleft()]
            rows = batch[0].max_rows
            end = time.monotonic() + self.max_wait_s
            while rows < self.max_rows and not self._controls:
                if self._jobs:
                    if rows + self._jobs[0].max_rows > self.max_rows:
                        break
                    batch.append(self._jobs.popleft())
                    rows += batch[-1].max_rows
                    continue
                remaining = end - time.monotonic()
                if remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
        if self.metrics:
            self.metrics.queue_depth.set(len(self._jobs))
        return batch, []

    def _process(self, batch: list[Job]) -> None:
        start = time.monotonic()
        live: list[Job] = []
        for job in batch:
            if job.abandoned:
                self.dropped += 1
                if self.metrics:
                    self.metrics.dropped_jobs.inc()
                finish(job)
            elif start > job.deadline:
                self.expired += 1
                if self.metrics:
                    self.metrics.expired_jobs.inc()
                resolve(job, None, DeadlineExceeded("the request's deadline passed while it was queued"))
                finish(job)
            else:
                live.append(job)
        try:
            if live:
                self._score(live, start)
        finally:
            for job in live:
                finish(job)
        self.batches += 1
        if live:
            per_job = (time.monotonic() - start) / len(live)
            self._job_seconds = 0.8 * self._job_seconds + 0.2 * per_job

    def _score(self, live: list[Job], start: float) -> None:
        units: dict[int, Any] = {}
        errors: dict[int, BaseException] = {}
        hits = {id(j) for j in live if j.cached and self._cached(j, units)}
        misses = [j for j in live if id(j) not in hits]
        t_enc = time.monotonic()
        if misses:
            try:
                made = self.runtime.extract_units([j.samples for j in misses])
                pairs = list(zip(misses, made, strict=True))
            except Exception:  # noqa: BLE001 - isolate the failing clip, keep the others
                pairs = []
                for j in misses:
                    try:
                        pairs.append((j, self.runtime.extract_units([j.samples])[0]))
                    except Exception as exc:  # noqa: BLE001
                        errors[id(j)] = exc
            for j, u in pairs:
                units[id(j)] = u
                if j.cached:
                    self.cache.put(j.digest, self.units_key, u)
        encode_ms = (time.monotonic() - t_enc) * 1e3
        ready = [j for j in live if id(j) in units]
        plans = {id(j): j.rows_for(units[id(j)]) for j in ready}  # base rows, then occluded rows (explain)
        row_units = [u for j in ready for u in plans[id(j)][0]]
        row_keys = [k for j in ready for k in plans[id(j)][1]]
        t_lm = time.monotonic()
        weight = {k: w for j in ready for k, w in zip(j.keys, j.weights or [1] * len(j.keys), strict=True)}
        probs = [p for a, b in forwards([weight[k] for k in row_keys], self.max_rows)  # a job larger than a batch
                 for p in self._classify(row_units[a:b], row_keys[a:b])]  # (many tasks, explanations): several
        lm_ms = (time.monotonic() - t_lm) * 1e3
        if self.metrics:
            self.metrics.batch_rows.observe(len(row_keys))
            self.metrics.batch_jobs.observe(len(live))
            self.metrics.cache_hits.inc(len(hits))
            self.metrics.cache_misses.inc(sum(1 for j in misses if j.cached))
        at = 0
        for job in live:
            if id(job) in errors:
                resolve(job, None, errors[id(job)])
                continue
            n, spans = len(job.keys), plans[id(job)][2]
            rows = tuple(probs[at:at + n])
            occluded = tuple(tuple(probs[at + n + i * len(spans):at + n + (i + 1) * len(spans)]) for i in range(n))
            at += len(plans[id(job)][1])
            hit = id(job) in hits
            result = JobResult(units[id(job)], rows, hit, (start - job.enqueued) * 1e3,
                               0.0 if hit else encode_ms, lm_ms, len(row_keys), len(live),
                               tuple(spans), occluded if spans else ())
            if self.metrics:
                self.metrics.queue_seconds.observe(result.queue_ms / 1e3)
                self.metrics.compute_seconds.observe((result.encode_ms + lm_ms) / 1e3)
            resolve(job, result, None)

    def _cached(self, job: Job, out: dict[int, Any]) -> bool:
        hit = self.cache.get(job.digest, self.units_key)
        if hit is not None:
            out[id(job)] = hit
        return hit is not None

    def _classify(self, row_units: list, row_keys: list[str]) -> list[np.ndarray | BaseException]:
        """ONE forward for all rows; if it fails, rows are retried alone so one bad row fails alone."""
        if not row_keys:
            return []
        try:
            return list(self.runtime.classify(row_units, row_keys))
        except Exception:  # noqa: BLE001
            log.warning("batched classify failed; retrying %d rows one by one", len(row_keys), exc_info=True)
        out: list[np.ndarray | BaseException] = []
        for u, k in zip(row_units, row_keys, strict=True):
            try:
                out.append(self.runtime.classify([u], [k])[0])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


def forwards(weights: list[int], limit: int) -> list[tuple[int, int]]:
    """Consecutive ``[a, b)`` ranges of rows whose unit-LM rows (``weights``: 1, or an ensemble's members) sum to at
    most ``limit`` each; a row heavier than ``limit`` gets a forward of its own."""
    out, a, total = [], 0, 0
    for i, w in enumerate(weights):
        if i > a and total + w > limit:
            out.append((a, i))
            a, total = i, 0
        total += w
    if a < len(weights):
        out.append((a, len(weights)))
    return out

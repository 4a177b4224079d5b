"""Executes residency: task versions into / out of the device prompt bank, on the model thread.

Decide (``server.residency.plan_residency``, pure) apart from execute (this module) apart from mechanics
(``speechprompt.prompting.PromptBank``). The loader owns the set of resident versions and the lock that
guards every version's device state; the registry decides which version is current.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from speechprompt.package import TaskPackage

from .batcher import Batcher
from .metrics import Metrics
from .residency import Slot, plan_residency

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Version:
    """One immutable task version and its device state (mutable fields guarded by ``Loader.lock``)."""

    task: str
    version: str
    meta: Any
    est_bytes: int
    nbytes: int = 0
    resident: bool = False
    loading: bool = False
    retiring: bool = False
    in_flight: int = 0
    last_used: float = 0.0

    @property
    def key(self) -> str:
        """Prompt-bank key: rows of a batch name the exact version they use."""
        return f"{self.task}@{self.version}"

    @classmethod
    def of(cls, pkg: TaskPackage) -> Version:
        """A not-yet-resident version; its device size is estimated from the package tensors the bank keeps
        (prefix K/V projections are the deep prompts' size; the input prompt is not kept)."""
        est = sum(m.nbytes - m.input_prompt.numel() * m.input_prompt.element_size() for m in pkg.members)
        return cls(pkg.meta.task, pkg.version, pkg.meta, est)


class Loader:
    """Adds and removes versions in ``runtime``'s prompt bank under a byte budget (soft, see residency)."""

    def __init__(self, runtime: Any, batcher: Batcher, budget_bytes: int, metrics: Metrics | None = None):
        self.runtime, self.batcher, self.metrics = runtime, batcher, metrics
        self.budget_bytes = budget_bytes
        self.lock = threading.Lock()
        self.resident: dict[str, Version] = {}
        self._load_lock = asyncio.Lock()

    async def load(self, ver: Version, pkg: TaskPackage, *, allow_evict: bool = True) -> bool:
        """Make ``ver`` resident, evicting idle versions (LRU) when over budget; False if the plan says not
        to load (``allow_evict=False`` and no free room). Raises what ``runtime.add_task`` raises."""
        async with self._load_lock:
            if ver.resident:
                return True
            with self.lock:
                slots = [Slot(v.key, v.nbytes, v.last_used, v.in_flight) for v in self.resident.values()]
            plan = plan_residency(slots, ver.key, ver.est_bytes, self.budget_bytes, allow_evict=allow_evict)
            if not plan.load:
                return False
            if not plan.fits:
                log.warning("prompt bank over budget: loading %s while the resident tasks are in flight", ver.key)
            for key in plan.evict:
                self.evict(key)
            ver.loading = True
            start = time.monotonic()
            try:
                await asyncio.wrap_future(self.batcher.call(lambda: self.runtime.add_task(ver.key, pkg)))
            finally:
                ver.loading = False
            nbytes = self._bank_nbytes(ver.key, ver.est_bytes)
            with self.lock:
                ver.resident, ver.nbytes, ver.last_used = True, nbytes, time.monotonic()
                self.resident[ver.key] = ver
            if self.metrics:
                self.metrics.package_load_seconds.observe(time.monotonic() - start)
            self.update_gauges()
            return True

    def evict(self, key: str) -> bool:
        """Take an idle version off the device (never one with in-flight jobs). True if it was evicted."""
        with self.lock:
            ver = self.resident.get(key)
            if ver is None or ver.in_flight > 0 or not ver.resident:
                return False
            ver.resident = False
        self.remove(ver)
        return True

    def remove(self, ver: Version) -> None:
        """Forget ``ver`` (already marked non-resident by the caller, under ``lock``) and remove it from the
        prompt bank on the model thread, after any batch that is running."""
        with self.lock:
            if self.resident.get(ver.key) is ver:
                del self.resident[ver.key]

        def remove() -> None:
            start = time.monotonic()
            self.runtime.remove_task(ver.key)
            if self.metrics:
                self.metrics.package_evict_seconds.observe(time.monotonic() - start)

        fut = self.batcher.call(remove)
        fut.add_done_callback(lambda f: f.exception() and log.warning("removing %s failed", ver.key))
        self.update_gauges()

    def _bank_nbytes(self, key: str, default: int) -> int:
        try:
            return int(self.runtime.bank.nbytes(key))
        except Exception:  # noqa: BLE001 - a runtime without byte accounting: keep the estimate
            return default

    def update_gauges(self) -> None:
        if self.metrics:
            with self.lock:
                self.metrics.resident_tasks.set(len(self.resident))
                self.metrics.resident_bytes.set(sum(v.nbytes for v in self.resident.values()))

"""Task registry: store -> validated versions -> device-resident prompt bank, with leases for in-flight jobs.

Lifecycle of a task version: stored (validated, on disk) -> loading -> resident (in the prompt bank under
the key ``task@version``) or failed. Rules (Triton model repository / LoRAX adapters):
- packages are validated (``read_package`` + the runtime's backbone check) BEFORE anything reaches the device;
- versions are content digests and immutable; a new version is loaded beside the old one, the old one
  is dropped once its in-flight jobs finish, and a failed load keeps the old version serving;
- eviction (``server.residency.plan_residency``, LRU by bytes) never removes a version with in-flight jobs;
- every prompt-bank change runs on the model thread (``Batcher.call``), between batches.

Coroutines run on the event loop; ``release`` may come from the model thread (``Loader.lock`` guards the
counters both sides touch). Loading and eviction are carried out by ``server.loader.Loader``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from speechprompt.package import PackageInvalid, TaskPackage, read_package

from .batcher import Batcher
from .errors import StoreUnavailable, TaskUnavailable, UnknownTask, error_code
from .loader import Loader, Version
from .metrics import Metrics
from .stores.base import PromptStore, check_task_name

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TaskRecord:
    """A task: its ``current`` version, every version still on the device or in flight, and the last
    refused version (``failed_version`` + ``error``) while an older one keeps serving."""

    name: str
    current: Version | None = None
    versions: dict[str, Version] = field(default_factory=dict)
    error: BaseException | None = None
    failed_version: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class Lease:
    """A request's hold on one task version: the version cannot leave the device until released."""

    task: str
    version: str
    key: str
    labels: tuple[str, ...]
    entry: Version = field(repr=False, compare=False)


class Registry:
    """Which version of each task serves new requests, and the leases that keep versions on the device."""

    def __init__(self, runtime: Any, store: PromptStore, batcher: Batcher, *, budget_bytes: int,
                 max_package_bytes: int, max_prompt_length: int | None = None, max_classes: int | None = None,
                 metrics: Metrics | None = None):
        self.runtime, self.store, self.metrics = runtime, store, metrics
        self.loader = Loader(runtime, batcher, budget_bytes, metrics)
        self._lock = self.loader.lock
        self.max_package_bytes = max_package_bytes
        self.max_prompt_length, self.max_classes = max_prompt_length, max_classes
        self._tasks: dict[str, TaskRecord] = {}
        self._generation = 0  # bumped by put/delete so a concurrent poll does not undo them
        self._writes: dict[str, asyncio.Lock] = {}  # one PUT/DELETE of a task at a time, store write included
        store.track_in_use(self.versions_in_use)

    # -- validation (blocking: call in a worker thread) --------------------------------------------
    def validate(self, task: str, data: bytes, *, stored: bool = False) -> TaskPackage:
        """Parse + check a package for ``task``; raises the core's PackageError family (409/413/415/422).
        ``stored``: bytes read back from the store (read as older servers read them; uploads stay strict)."""
        pkg = read_package(data, self.max_package_bytes, max_prompt_length=self.max_prompt_length,
                           max_classes=self.max_classes, stored=stored)
        self.runtime.check(pkg)
        if pkg.meta.task != task:
            raise PackageInvalid(f"the package is for task {pkg.meta.task!r}, not {task!r}")
        return pkg

    # -- requests --------------------------------------------------------------------------------
    async def acquire(self, task: str) -> Lease:
        """Lease the current version of ``task`` (loading it onto the device if needed).

        Raises InvalidTaskName (400), UnknownTask (404), TaskUnavailable (503: no loadable version).
        """
        check_task_name(task)
        for _ in range(4):
            rec = self._tasks.get(task)
            ver = rec.current if rec else None
            if ver is None:
                if rec is not None and rec.error is not None:
                    raise TaskUnavailable(f"task {task!r} has no servable version: {rec.error}")
                raise UnknownTask(f"no task named {task!r}", accepted=self.names()[:100])
            with self._lock:
                if ver.resident and not ver.retiring:
                    ver.in_flight += 1
                    ver.last_used = time.monotonic()
                    return Lease(task, ver.version, ver.key, tuple(ver.meta.labels), ver)
            await asyncio.shield(self._reload(rec, ver))
        raise TaskUnavailable(f"task {task!r} could not be kept resident (prompt bank too busy)")

    def release(self, lease: Lease) -> None:
        """End a lease (any thread). A retiring version leaves the device when its last lease ends."""
        ver = lease.entry
        with self._lock:
            ver.in_flight -= 1
            drop = ver.retiring and ver.in_flight == 0 and ver.resident
            if drop:
                ver.resident = False
        if drop:
            self.loader.remove(ver)
            self._unlink(ver)

    async def _reload(self, rec: TaskRecord, ver: Version) -> None:
        async with rec.lock:
            if rec.current is not ver or ver.resident:
                return
            try:
                data = await asyncio.to_thread(self.store.read, rec.name, ver.version)
                if data is None:
                    raise StoreUnavailable(f"version {ver.version} is gone from the store")
                await self.loader.load(ver, await asyncio.to_thread(self.validate, rec.name, data, stored=True))
            except Exception as exc:  # noqa: BLE001 - not the client's fault: a 503 for it
                self._count_failure(exc)
                raise TaskUnavailable(f"task {rec.name!r} version {ver.version} cannot be loaded: {exc}") from exc

    # -- admin -----------------------------------------------------------------------------------
    def _write_lock(self, task: str) -> asyncio.Lock:
        """The lock that orders PUTs and DELETEs of ``task``: each runs its store write under it, so the
        order in which they answer is the order the store applied them (the last one to answer wins)."""
        return self._writes.setdefault(task, asyncio.Lock())

    async def put(self, task: str, data: bytes) -> tuple[str, bool]:
        """Validate, load beside the serving version, store, then switch. Returns (version, created).

        The package is ALWAYS written to the store, even when this replica already serves that version
        (the store may have lost it, e.g. a Redis restarted empty); ``created`` is False when the version was
        already current here. A refused or failed upload leaves the serving version untouched.
        """
        check_task_name(task)
        try:
            pkg = await asyncio.to_thread(self.validate, task, data)
        except Exception as exc:
            self._count_failure(exc)
            raise
        async with self._write_lock(task):
            rec = self._tasks.setdefault(task, TaskRecord(task))
            async with rec.lock:
                self._generation += 1
                already = rec.current is not None and rec.current.version == pkg.version
                ver = rec.current if already else rec.versions.get(pkg.version) or Version.of(pkg)
                try:
                    if not ver.resident:
                        await self.loader.load(ver, pkg)
                    await asyncio.to_thread(self.store.put, task, pkg.version, data)
                except Exception as exc:
                    self._count_failure(exc)
                    if ver is not rec.current and rec.versions.get(ver.version) is not ver:
                        self._retire(rec, ver)
                    if rec.current is None and not rec.versions and rec.error is None:
                        self._tasks.pop(task, None)
                    raise
                self._switch(rec, ver)
                self._generation += 1
        return pkg.version, not already

    async def delete(self, task: str) -> None:
        """Remove ``task`` from the store and the registry (in-flight jobs finish on their version).

        Ordered with PUTs of the same task by :meth:`_write_lock`: a DELETE that answers after a PUT leaves
        the task deleted everywhere (store and registry), never resurrected by the PUT's store write."""
        check_task_name(task)
        async with self._write_lock(task):
            self._generation += 1
            existed = await asyncio.to_thread(self.store.delete, task)
            rec = self._tasks.get(task)
            if rec is not None:
                async with rec.lock:
                    self._forget(rec)
            self._generation += 1
        if not existed and rec is None:
            raise UnknownTask(f"no task named {task!r}")

    # -- store polling ---------------------------------------------------------------------------
    async def refresh(self, *, eager: bool = True) -> None:
        """Bring the registry in line with the store (start-up and every poll). Failures are recorded per
        task (the old version keeps serving); a put/delete running meanwhile wins."""
        gen = self._generation
        snap = await asyncio.to_thread(self.store.snapshot)
        for name in [n for n in self._tasks if n not in snap]:
            rec = self._tasks.get(name)
            if rec is None:
                continue
            async with rec.lock:
                if gen != self._generation:
                    return
                if rec.current is not None or rec.error is not None:
                    self._forget(rec)
        for name, version in snap.items():
            rec = self._tasks.get(name)
            if version is None or (rec and version in (getattr(rec.current, "version", None), rec.failed_version)):
                continue
            rec = self._tasks.setdefault(name, TaskRecord(name))
            async with rec.lock:
                if gen != self._generation:
                    return
                await self._install(rec, version, eager)

    async def _install(self, rec: TaskRecord, version: str, eager: bool) -> None:
        try:
            data = await asyncio.to_thread(self.store.read, rec.name, version)
            if data is None:
                return  # changed again since the snapshot: the next poll sees the new state
            pkg = await asyncio.to_thread(self.validate, rec.name, data, stored=True)
            ver = rec.versions.get(version) or Version.of(pkg)
            warm = rec.current is not None and rec.current.resident
            if not ver.resident and (warm or eager):
                await self.loader.load(ver, pkg, allow_evict=warm)
        except Exception as exc:  # noqa: BLE001 - recorded and shown in GET /v1/tasks/{task}
            log.warning("task %s version %s refused: %s", rec.name, version, exc)
            self._count_failure(exc)
            rec.error, rec.failed_version = exc, version
            return
        self._switch(rec, ver)
        log.info("task %s now serves version %s", rec.name, version)

    # -- mechanics -------------------------------------------------------------------------------
    def _switch(self, rec: TaskRecord, ver: Version) -> None:
        old, rec.current = rec.current, ver
        with self._lock:
            ver.retiring = False
            rec.versions[ver.version] = ver
        rec.error, rec.failed_version = None, None
        self._tasks[rec.name] = rec
        if old is not None and old is not ver:
            self._retire(rec, old)

    def _forget(self, rec: TaskRecord) -> None:
        with self._lock:
            versions = list(rec.versions.values())
        for ver in versions:
            self._retire(rec, ver)
        rec.current, rec.error = None, None
        if self._tasks.get(rec.name) is rec:
            del self._tasks[rec.name]

    def _retire(self, rec: TaskRecord, ver: Version) -> None:
        with self._lock:
            ver.retiring = True
            drop = ver.resident and ver.in_flight == 0
            if drop:
                ver.resident = False
            if not ver.resident and ver.in_flight == 0 and rec.versions.get(ver.version) is ver:
                del rec.versions[ver.version]
        if drop:
            self.loader.remove(ver)

    def _unlink(self, ver: Version) -> None:
        """Forget a dropped version in its task's record (if the task still exists)."""
        rec = self._tasks.get(ver.task)
        with self._lock:
            if rec is not None and rec.versions.get(ver.version) is ver:
                del rec.versions[ver.version]

    def _count_failure(self, exc: BaseException) -> None:
        if self.metrics:
            self.metrics.package_failures.labels(code=error_code(exc)).inc()

    # -- views -----------------------------------------------------------------------------------
    def versions_in_use(self, task: str) -> set[str]:
        """Versions of ``task`` this replica serves or has in flight (the store never prunes them)."""
        rec = self._tasks.get(task)
        if rec is None:
            return set()
        with self._lock:
            return set(rec.versions) | ({rec.current.version} if rec.current is not None else set())

    def names(self) -> list[str]:
        return sorted(n for n, r in self._tasks.items() if r.current is not None or r.error is not None)

    def failed_names(self) -> list[str]:
        """Tasks listed with no servable version (their last load was refused or failed; ``describe`` says why)."""
        return sorted(n for n, r in self._tasks.items() if r.current is None and r.error is not None)

    def describe(self, task: str) -> dict:
        """State of one task (GET /v1/tasks/{task}); raises InvalidTaskName / UnknownTask."""
        check_task_name(task)
        rec = self._tasks.get(task)
        if rec is None or (rec.current is None and rec.error is None):
            raise UnknownTask(f"no task named {task!r}", accepted=self.names()[:100])
        cur = rec.current
        state = "failed" if cur is None else "loading" if cur.loading else "resident" if cur.resident else "stored"
        out: dict[str, Any] = {"task": task, "state": state, "version": cur.version if cur else None}
        if cur is not None:
            m = cur.meta
            out.update(labels=list(m.labels), backbone=m.backbone_fingerprint, backbone_kind=m.backbone_kind,
                       prompt_length=m.prompt_length, created=m.created, training=m.training,
                       long_audio=m.long_audio or None, readout=m.readout, speech_trim=m.speech_trim or None,
                       unit_view=m.unit_view or None, members=m.members,
                       member_unit_views=[v or None for v in m.member_unit_views] or None,
                       nbytes=cur.nbytes if cur.resident else cur.est_bytes, in_flight=cur.in_flight)
        with self._lock:  # the model thread may drop a version meanwhile
            out["resident_versions"] = sorted(v.version for v in rec.versions.values() if v.resident)
        if rec.error is not None:
            out["error"] = {"version": rec.failed_version, "code": error_code(rec.error), "detail": str(rec.error)}
        return out

    def describe_all(self) -> list[dict]:
        return [self.describe(n) for n in self.names()]

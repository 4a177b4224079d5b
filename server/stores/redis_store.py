"""A prompt store in Redis, shared by every server replica; each replica keeps a local copy for outages.

Keys (``prefix`` defaults to ``sp:``)::

    sp:pkg:<task>:<version>  package bytes (immutable; version = digest of the bytes)
    sp:tasks                 hash task -> current version
    sp:versions:<task>       sorted set of the task's stored versions (score = seq; the newest ``keep`` stay)
    sp:seq                   counter bumped by every put/delete
    sp:epoch                 random id set by the first write (or a restore): a Redis that lost its data has none
    sp:events                pub/sub channel: JSON {"task", "version" (null = deleted), "seq", "epoch"}
    sp:units:<units key>:<pcm sha256>    optional shared units cache entries (with a TTL; Runtime.units_key)

A put is ONE Lua script (package SET + tasks HSET + seq INCR + PUBLISH; ``redis_scripts.py``), so no replica ever
sees a version as current before its bytes exist, and events carry the seq of the state they describe.

Each replica runs one sync thread: SUBSCRIBE, then read the whole state (epoch, seq, tasks in one MULTI),
then apply events. An event whose seq is not the next one, a reconnect, or the periodic resync re-read the
whole state, so a missed message never matters. When the subscription is idle the thread PINGs it every
``health_check_s``; no answer within ``timeout_s`` counts as a dead connection (reconnect + resync).

While Redis is unreachable the store answers from the last known state (memory, and ``<cache_dir>/state.json``
+ package files written on every read), reports itself degraded (:meth:`degraded`), refuses writes
(``StoreUnavailable``, 503) and recovers by itself. A Redis that comes back EMPTY (no epoch: restarted
without persistence) is not trusted to mean "every task was deleted": the replica keeps its last known
tasks and writes them back (``RedisSync.restore``, ``redis_sync.py``; the rule is in docs/replicas.md).

Modules: this one (the ``PromptStore`` API, URL options), ``redis_sync.py`` (state, sync thread, restore),
``redis_scripts.py`` (Lua), ``local_copy.py`` (the replica's copy), ``redis_units.py`` (shared units cache).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..errors import StoreUnavailable
from . import redis_scripts as scripts
from .base import PromptStore, check_task_name, digest
from .local_copy import LocalCopy
from .redis_sync import RedisSync, _s
from .redis_units import SharedUnitsCache

log = logging.getLogger(__name__)

VERSION_RE = re.compile(r"[0-9a-f]{16}")

__all__ = ["RedisStore", "SharedUnitsCache"]


class RedisStore(RedisSync, PromptStore):
    """Tasks in Redis + push notifications + a local copy; see the module docstring for the key layout."""

    def __init__(self, client: redis.Redis, *, prefix: str = "sp:", cache_dir: str | os.PathLike,
                 health_check_s: float = 5.0, timeout_s: float = 2.0, resync_s: float = 30.0,
                 keep_versions: int = 3, units_ttl_s: float = 0.0, where: str = "redis"):
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        self.client, self.prefix, self.where = client, prefix, where
        self.health_check_s, self.timeout_s, self.resync_s = health_check_s, timeout_s, resync_s
        self.keep_versions, self.units_ttl_s = keep_versions, units_ttl_s
        self.local = LocalCopy(cache_dir)
        self.channel = f"{prefix}events"
        self._put = client.register_script(scripts.PUT)
        self._delete = client.register_script(scripts.DELETE)
        self._restore = client.register_script(scripts.RESTORE)
        self._lock = threading.Lock()
        self._epoch, self._seq, self._map = self.local.load()
        self._connected = False
        self.connects = 0  # successful subscriptions (1 + reconnects)
        self._lost = False  # Redis answered without an epoch while we know tasks: it lost its data
        self._down_reason = "not connected yet"
        self._callbacks: list[Callable[[], None]] = []
        self._shared_units: SharedUnitsCache | None = None
        self._stop = threading.Event()
        self._resync_wanted = threading.Event()
        self._first_attempt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"redis-store-sync[{where}]", daemon=True)
        self._thread.start()

    @classmethod
    def from_url(cls, url: str, *, keep_versions: int = 3) -> RedisStore:
        """``redis://[user:pass@]host:port/db?prefix=sp:&cache_dir=...&health_check_s=5&timeout_s=2
        &resync_s=30&keep_versions=3&units_ttl_s=0`` (our options are taken out; the rest go to redis-py).

        ``cache_dir`` defaults to ``.cache/redis-store/<host>_<port>_<db>_<prefix>`` (relative to the working
        directory): give each replica on one machine its own, or let them share one (writes are atomic).
        ``keep_versions`` is the default when the URL has no ``keep_versions`` option.
        """
        parts = urlsplit(url)
        ours = {"prefix", "cache_dir", "health_check_s", "timeout_s", "resync_s", "keep_versions", "units_ttl_s"}
        query = parse_qsl(parts.query, keep_blank_values=True)
        opts = {k: v for k, v in query if k in ours}
        rest = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k not in ours])))
        prefix = opts.get("prefix", "sp:")
        timeout_s = float(opts.get("timeout_s", 2.0))
        health_check_s = float(opts.get("health_check_s", 5.0))
        db = (parts.path or "/0").strip("/") or "0"
        where = f"{parts.hostname or parts.path}:{parts.port or 6379}/{db}"
        default_dir = Path(".cache/redis-store") / re.sub(r"[^A-Za-z0-9_.-]", "_",
                                                           f"{parts.hostname}_{parts.port or 6379}_{db}_{prefix}")
        client = redis.Redis.from_url(rest, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                      health_check_interval=health_check_s,
                                      retry=Retry(NoBackoff(), 1))
        return cls(client, prefix=prefix, cache_dir=opts.get("cache_dir") or default_dir,
                   health_check_s=health_check_s, timeout_s=timeout_s,
                   resync_s=float(opts.get("resync_s", 30.0)), keep_versions=int(opts.get("keep_versions", keep_versions)),
                   units_ttl_s=float(opts.get("units_ttl_s", 0.0)), where=where)

    # -- keys --------------------------------------------------------------------------------------
    def key(self, name: str) -> str:
        """``tasks``, ``seq``, ``epoch`` -> the prefixed key."""
        return f"{self.prefix}{name}"

    def pkg_key(self, task: str, version: str = "") -> str:
        return f"{self.prefix}pkg:{task}:{version}"

    def versions_key(self, task: str) -> str:
        return f"{self.prefix}versions:{task}"

    # -- PromptStore ---------------------------------------------------------------------------------
    def describe(self) -> str:
        return f"redis {self.where} prefix {self.prefix!r} (local copy {self.local.dir})"

    def kind(self) -> str:
        return "redis"

    def snapshot(self) -> dict[str, str | None]:
        """The last known state (no round trip): kept current by events and resyncs. The first call waits
        (up to ``timeout_s``) for the first connection attempt, so a healthy start serves Redis's state."""
        self._first_attempt.wait(self.timeout_s + 1.0)
        with self._lock:
            return dict(self._map)

    def list_tasks(self) -> list[str]:
        return sorted(self.snapshot())

    def current_version(self, task: str) -> str | None:
        check_task_name(task)
        return self.snapshot().get(task)

    def read(self, task: str, version: str) -> bytes | None:
        """Local copy first (versions are immutable and digest-checked), then Redis. None when absent or when
        Redis is unreachable (the registry tries again at its next poll)."""
        check_task_name(task)
        if not VERSION_RE.fullmatch(version):
            return None
        data = self.local.read(task, version)
        if data is not None:
            return data
        try:
            data = self.client.get(self.pkg_key(task, version))
        except RedisError as e:
            log.warning("cannot read %s@%s from redis %s: %s", task, version, self.where, e)
            return None
        if data is None or digest(data) != version:
            return None
        with self.local.lock:
            with self._lock:
                known = self._map.get(task)
            if known is not None:  # (a task deleted meanwhile is not written back)
                self.local.write(task, version, data, current=known == version)
        return data

    def put(self, task: str, version: str, data: bytes) -> None:
        check_task_name(task)
        if digest(data) != version:
            raise ValueError(f"version {version} is not the digest of the data")
        keys = [self.key("tasks"), self.versions_key(task), self.pkg_key(task, version), self.key("seq"),
                self.key("epoch")]
        epoch, seq = self._write(task, "store", lambda: self._put(
            keys=keys, args=[task, version, data, self.keep_versions, self.pkg_key(task), self.channel]))
        self._apply_write(epoch, seq, task, version)
        with self.local.lock:
            with self._lock:
                current = self._map.get(task) == version
            if current:
                self.local.write(task, version, data, current=True)

    def delete(self, task: str) -> bool:
        check_task_name(task)
        keys = [self.key("tasks"), self.versions_key(task), self.key("seq"), self.key("epoch")]
        existed = []

        def run() -> list:
            epoch, found, seq = self._delete(keys=keys, args=[task, self.pkg_key(task), self.channel])
            existed.append(bool(found))
            return [epoch, seq]

        epoch, seq = self._write(task, "delete", run)
        if seq:
            self._apply_write(epoch, seq, task, None)
        return existed[-1]

    def _write(self, task: str, what: str, script: Callable[[], list]) -> tuple[str, int]:
        """Run a write script -> (epoch, seq). On a Redis without a store, restore what this replica knows
        first and run it again (a write never starts a new store that drops the other tasks)."""
        try:
            for _ in range(2):
                epoch, seq = script()
                if _s(epoch):
                    return str(_s(epoch)), int(seq)
                self.restore()
        except RedisError as e:
            log.warning("cannot %s task %s: redis %s: %s", what, task, self.where, e)
            raise StoreUnavailable(f"cannot {what} task {task!r}: the shared store is unreachable; "
                                   "try again later") from None
        raise StoreUnavailable(f"cannot {what} task {task!r}: the shared store could not be restored; "
                               "see the server log")

    def on_change(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def degraded(self) -> str | None:
        with self._lock:
            n = len(self._map)
            if self._lost:
                return (f"the shared store (redis) lost its data and this replica could not restore it yet; "
                        f"serving the {n} last known tasks")
            if not self._connected:
                return (f"the shared store (redis) is unreachable; serving the {n} last known tasks from this "
                        "replica's copy; uploads and deletes are refused")
        return None

    def details(self) -> dict[str, Any]:
        """Where Redis and the local copy are, why the store is degraded, the state's epoch and seq (admin)."""
        with self._lock:
            return {"where": self.describe(), "connected": self._connected, "lost_data": self._lost,
                    "last_error": None if self._connected else self._down_reason, "epoch": self._epoch,
                    "seq": self._seq, "tasks": len(self._map), "connects": self.connects}

    def units_cache(self, local: Any) -> Any:
        """``local`` backed by Redis entries with a TTL when ``units_ttl_s`` > 0, else ``local`` itself."""
        if self.units_ttl_s <= 0:
            return local
        self._shared_units = SharedUnitsCache(local, self, self.units_ttl_s)
        return self._shared_units

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 1.0)
        if self._shared_units is not None:
            self._shared_units.close()
        self.client.close()

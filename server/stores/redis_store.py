"""A prompt store in Redis, shared by every server replica; each replica keeps a local copy for outages.

Keys (``prefix`` defaults to ``sp:``)::

    sp:pkg:<task>:<version>  package bytes (immutable; version = digest of the bytes)
    sp:tasks                 hash task -> current version
    sp:versions:<task>       sorted set of the task's stored versions (score = seq; the newest ``keep`` stay)
    sp:seq                   counter bumped by every put/delete
    sp:epoch                 random id set by the first write: a Redis that lost its data has none
    sp:events                pub/sub channel: JSON {"task", "version" (null = deleted), "seq", "epoch"}
    sp:units:<fingerprint>:<pcm sha256>  optional shared units cache entries (with a TTL)

A put is ONE Lua script (package SET + tasks HSET + seq INCR + PUBLISH), so no replica ever sees a version
as current before its bytes exist, and events carry the seq of the state they describe.

Each replica runs one sync thread: SUBSCRIBE, then read the whole state (epoch, seq, tasks in one MULTI),
then apply events. An event whose seq is not the next one, a reconnect, or the periodic resync re-read the
whole state, so a missed message never matters. When the subscription is idle the thread PINGs it every
``health_check_s``; no answer within ``timeout_s`` counts as a dead connection (reconnect + resync).

While Redis is unreachable the store answers from the last known state (memory, and ``<cache_dir>/state.json``
+ package files written on every read), reports itself degraded (:meth:`degraded`), refuses writes
(``StoreUnavailable``, 503) and recovers by itself. A Redis that comes back EMPTY (no epoch: restarted
without persistence) is not trusted to mean "every task was deleted": the replica keeps its last known
tasks and stays degraded until a write creates a new epoch.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import torch
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..errors import StoreUnavailable
from .base import PromptStore, check_task_name, digest

log = logging.getLogger(__name__)

VERSION_RE = re.compile(r"[0-9a-f]{16}")
SUFFIX = ".safetensors"

# KEYS: tasks, versions, pkg, seq, epoch | ARGV: task, version, data, keep, pkg prefix of the task, channel, epoch
_PUT = """
redis.call('SETNX', KEYS[5], ARGV[7])
local epoch = redis.call('GET', KEYS[5])
redis.call('SET', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local seq = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[2], seq, ARGV[2])
for _, v in ipairs(redis.call('ZRANGE', KEYS[2], 0, -(tonumber(ARGV[4]) + 1))) do
  if v ~= ARGV[2] then redis.call('DEL', ARGV[5] .. v) end
  redis.call('ZREM', KEYS[2], v)
end
redis.call('PUBLISH', ARGV[6], cjson.encode({task=ARGV[1], version=ARGV[2], seq=seq, epoch=epoch}))
return {epoch, seq}
"""
# KEYS: tasks, versions, seq, epoch | ARGV: task, pkg prefix of the task, channel
_DELETE = """
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
local versions = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, v in ipairs(versions) do redis.call('DEL', ARGV[2] .. v) end
redis.call('DEL', KEYS[2])
local epoch = redis.call('GET', KEYS[4])
if existed == 0 and #versions == 0 then return {epoch, false, 0} end
local seq = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[3], cjson.encode({task=ARGV[1], version=cjson.null, seq=seq, epoch=epoch}))
return {epoch, existed, seq}
"""


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _atomic_write(path: Path, data: bytes, *, fsync: bool) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class LocalCopy:
    """The replica's copy of what it last knew: ``<dir>/state.json`` ({epoch, seq, tasks}) and
    ``<dir>/<task>/<version>.safetensors`` for every package it has read. Files are replaced atomically
    (package files without fsync: a torn one fails its digest check and is fetched again)."""

    def __init__(self, folder: str | os.PathLike):
        self.dir = Path(folder)
        self.lock = threading.Lock()  # one writer at a time: a save never removes a folder being written

    def load(self) -> tuple[str | None, int, dict[str, str]]:
        try:
            state = json.loads((self.dir / "state.json").read_text())
            tasks = {str(t): str(v) for t, v in state["tasks"].items() if VERSION_RE.fullmatch(str(v))}
            return state.get("epoch"), int(state.get("seq", 0)), tasks
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, 0, {}

    def save(self, epoch: str | None, seq: int, tasks: dict[str, str]) -> None:
        """Record the state (callers hold ``lock``); folders of tasks not in ``tasks`` are removed."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.dir / "state.json", json.dumps({"epoch": epoch, "seq": seq, "tasks": tasks}).encode(),
                          fsync=True)
            for d in self.dir.iterdir():  # tasks that are gone: their files go too
                if d.is_dir() and d.name not in tasks:
                    shutil.rmtree(d, ignore_errors=True)
        except OSError as e:
            log.warning("cannot write the local copy %s: %s", self.dir, e)

    def read(self, task: str, version: str) -> bytes | None:
        try:
            data = (self.dir / task / f"{version}{SUFFIX}").read_bytes()
        except OSError:
            return None
        return data if digest(data) == version else None

    def write(self, task: str, version: str, data: bytes, *, current: bool) -> None:
        """Keep ``data`` (callers hold ``lock``); when it is the task's current version, older files of the
        task are dropped."""
        d = self.dir / task
        try:
            d.mkdir(parents=True, exist_ok=True)
            _atomic_write(d / f"{version}{SUFFIX}", data, fsync=False)
            if current:
                for p in d.glob(f"*{SUFFIX}"):
                    if p.stem != version:
                        p.unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot write %s@%s to the local copy %s: %s", task, version, self.dir, e)


class RedisStore(PromptStore):
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
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)
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
        try:
            epoch, seq = self._put(keys=keys, args=[task, version, data, self.keep_versions, self.pkg_key(task),
                                                    self.channel, uuid.uuid4().hex])
        except RedisError as e:
            raise StoreUnavailable(f"cannot store task {task!r}: redis {self.where} is unreachable ({e})") from None
        self._apply_write(_s(epoch), int(seq), task, version)
        with self.local.lock:
            with self._lock:
                current = self._map.get(task) == version
            if current:
                self.local.write(task, version, data, current=True)

    def delete(self, task: str) -> bool:
        check_task_name(task)
        keys = [self.key("tasks"), self.versions_key(task), self.key("seq"), self.key("epoch")]
        try:
            epoch, existed, seq = self._delete(keys=keys, args=[task, self.pkg_key(task), self.channel])
        except RedisError as e:
            raise StoreUnavailable(f"cannot delete task {task!r}: redis {self.where} is unreachable ({e})") from None
        if int(seq):
            self._apply_write(_s(epoch), int(seq), task, None)
        return bool(existed)

    def on_change(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def degraded(self) -> str | None:
        with self._lock:
            n = len(self._map)
            if self._lost:
                return (f"redis {self.where} holds no prompt store (restarted without persistence?); serving the "
                        f"{n} last known tasks until a package is uploaded")
            if not self._connected:
                return (f"redis {self.where} is unreachable ({self._down_reason}); serving the {n} last known "
                        f"tasks from memory and {self.local.dir}; uploads and deletes are refused")
        return None

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

    # -- state ---------------------------------------------------------------------------------------
    def _apply_write(self, epoch: str | None, seq: int, task: str, version: str | None) -> None:
        """Our own put/delete: apply it now (read-your-writes); when it is not the next seq (events are still
        on their way, or a new epoch) also re-read the whole state."""
        with self._lock:
            if seq <= self._seq and epoch == self._epoch:
                return  # an event already brought this (or a newer) state
            self._set(task, version)
            contiguous = epoch == self._epoch and seq == self._seq + 1
            if contiguous:
                self._seq = seq
        if not contiguous:
            try:
                self._resync()
            except RedisError:
                self._resync_wanted.set()  # the sync thread will do it
        self._changed()

    def _set(self, task: str, version: str | None) -> None:
        if version is None:
            self._map.pop(task, None)
        else:
            self._map[task] = version

    def _resync(self) -> None:
        """Read epoch, seq and every task's current version in one transaction and adopt them (newer only)."""
        with self.client.pipeline(transaction=True) as p:
            p.get(self.key("epoch")).get(self.key("seq")).hgetall(self.key("tasks"))
            epoch, seq, tasks = p.execute()
        epoch, seq = _s(epoch), int(seq or 0)
        tasks = {_s(t): _s(v) for t, v in tasks.items()}
        with self._lock:
            if epoch is None and self._epoch is not None and self._map:
                changed, self._lost = not self._lost, True
            elif epoch is not None and epoch == self._epoch and seq < self._seq:
                changed = False  # an older read than what our own write already applied
            else:
                changed = (epoch, seq, tasks) != (self._epoch, self._seq, self._map) or self._lost
                if epoch != self._epoch and self._epoch is not None:
                    log.warning("redis %s holds another prompt store (epoch %s, was %s): adopting it",
                                self.where, epoch, self._epoch)
                self._epoch, self._seq, self._map, self._lost = epoch, seq, tasks, False
        self._first_attempt.set()  # the state is Redis's now (set before callbacks that may read it)
        if changed:
            self._changed()

    def _on_event(self, data: bytes) -> None:
        try:
            ev = json.loads(data)
            task, version, seq, epoch = ev["task"], ev.get("version"), int(ev["seq"]), ev.get("epoch")
        except (ValueError, KeyError, TypeError):
            log.warning("malformed event on %s: %r", self.channel, data[:200])
            self._resync()
            return
        with self._lock:
            if epoch == self._epoch and seq <= self._seq:
                return  # already applied (our own write)
            contiguous = epoch == self._epoch and seq == self._seq + 1 and not self._lost
            if contiguous:
                self._set(task, version)
                self._seq = seq
        if contiguous:
            self._changed()
        else:
            self._resync()  # a gap: some message was missed, or a new epoch

    def _changed(self) -> None:
        with self.local.lock:  # the state saved is the newest: no older save can land after a newer one
            with self._lock:
                epoch, seq, tasks, callbacks = self._epoch, self._seq, dict(self._map), list(self._callbacks)
            self.local.save(epoch, seq, tasks)
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001 - a listener's failure must not stop the sync thread
                log.exception("store change callback failed")

    # -- sync thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        self._backoff = 0.05
        while not self._stop.is_set():
            pubsub = self.client.pubsub()
            try:
                self._listen(pubsub)
            except (RedisError, OSError, ValueError) as exc:
                self._set_connected(False, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the sync thread: log, reconnect
                log.exception("redis store sync failed")
                self._set_connected(False, f"{type(exc).__name__}: {exc}")
            finally:
                self._first_attempt.set()
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001
                    pass
            if self._stop.wait(self._backoff):
                break
            self._backoff = min(self._backoff * 2, 1.0)  # reconnect soon, then at most once a second

    def _listen(self, pubsub: Any) -> None:
        """Subscribe, resync, then apply events until the connection fails (raises) or the store closes."""
        pubsub.subscribe(self.channel)
        deadline = time.monotonic() + self.timeout_s
        while (msg := pubsub.get_message(timeout=0.05)) is None or msg["type"] != "subscribe":
            if time.monotonic() > deadline:
                raise redis.TimeoutError("no subscribe confirmation")
        self._resync()  # after SUBSCRIBE: no change can fall between the read and the first event
        self.connects += 1
        self._backoff = 0.05
        self._set_connected(True, "")
        heard = pinged = time.monotonic()
        next_resync = heard + self.resync_s
        while not self._stop.is_set():
            msg = pubsub.get_message(timeout=0.1)
            now = time.monotonic()
            if msg is not None:
                heard = now
                if msg["type"] == "message":
                    self._on_event(msg["data"])
                elif msg["type"] == "subscribe":  # redis-py reconnected and resubscribed by itself
                    self.connects += 1
                    self._resync()
            if pinged > heard and now - pinged > self.timeout_s:
                raise redis.ConnectionError(f"subscription silent for {now - heard:.1f} s (no PONG)")
            if now - heard >= self.health_check_s and pinged <= heard:
                pubsub.ping("sp-health")
                pinged = now
            if now >= next_resync or self._resync_wanted.is_set():
                self._resync_wanted.clear()
                self._resync()
                next_resync = now + self.resync_s

    def _set_connected(self, up: bool, reason: str) -> None:
        with self._lock:
            was, self._connected = self._connected, up
            self._down_reason = reason or self._down_reason
        self._first_attempt.set()
        if was != up:
            (log.info if up else log.warning)("redis store %s %s", self.where,
                                               "connected" if up else f"unreachable: {reason}")
            self._changed()


class SharedUnitsCache:
    """The replica's units LRU, backed by Redis entries ``<prefix>units:<fingerprint>:<pcm sha256>`` with a
    TTL: a clip already encoded by any replica skips HuBERT + k-means here (plain ``Units`` only). Same interface as
    ``server.units_cache.UnitsCache``; Redis is skipped while the store is degraded and writes happen on a
    background thread (the model loop never waits for them)."""

    MAGIC = b"SPU1"

    TIMEOUT_S = 0.1  # the model loop waits at most this long for Redis...
    BACKOFF_S = 1.0  # ...and skips Redis for this long after a failure

    def __init__(self, local: Any, store: RedisStore, ttl_s: float):
        self.local, self.store, self.ttl_ms = local, store, max(1, int(ttl_s * 1000))
        self.capacity = local.capacity
        self.shared_hits = 0
        pool = store.client.connection_pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": self.TIMEOUT_S,
                  "socket_connect_timeout": self.TIMEOUT_S, "retry": Retry(NoBackoff(), 0)}
        self.client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class,
                                                                       **kwargs))
        self._skip_until = 0.0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="units-cache-writer")

    def _usable(self) -> bool:
        return time.monotonic() >= self._skip_until and self.store.degraded() is None

    def _failed(self) -> None:
        self._skip_until = time.monotonic() + self.BACKOFF_S

    def close(self) -> None:
        self._writer.shutdown(wait=True, cancel_futures=False)
        self.client.close()

    hits = property(lambda self: self.local.hits)
    misses = property(lambda self: self.local.misses)

    def __len__(self) -> int:
        return len(self.local)

    def _key(self, pcm_digest: str, fingerprint: str) -> str:
        return f"{self.store.prefix}units:{fingerprint}:{pcm_digest}"

    def get(self, pcm_digest: str, fingerprint: str) -> Any | None:
        found = self.local.get(pcm_digest, fingerprint)
        if found is not None or not self._usable():
            return found
        try:
            data = self.client.get(self._key(pcm_digest, fingerprint))
        except RedisError:
            self._failed()
            return None
        units = self.decode(data) if data else None
        if units is not None:
            self.shared_hits += 1
            self.local.put(pcm_digest, fingerprint, units)
        return units

    def put(self, pcm_digest: str, fingerprint: str, units: Any) -> None:
        """Keep ``units`` locally and (in the background) in Redis. Only plain ``Units`` are shared: richer
        results (a pGSLM backbone's ``ProsodyUnits`` with F0) stay in the local LRU."""
        from speechprompt.units import Units

        self.local.put(pcm_digest, fingerprint, units)
        if type(units) is not Units or not self._usable():
            return
        data = self.encode(units)

        def write() -> None:
            try:
                self.client.set(self._key(pcm_digest, fingerprint), data, px=self.ttl_ms)
            except RedisError:
                self._failed()  # a cache: losing an entry only costs a re-encode

        self._writer.submit(write)

    @classmethod
    def encode(cls, units: Any) -> bytes:
        """``Units(units [M] i64, durations [M] i64, frames)`` -> magic, frames u32, M u32, int32 [M] x 2."""
        u = units.units.to(torch.int32).contiguous().numpy().tobytes()
        d = units.durations.to(torch.int32).contiguous().numpy().tobytes()
        return cls.MAGIC + struct.pack("<II", int(units.frames), len(units.units)) + u + d

    @classmethod
    def decode(cls, data: bytes) -> Any | None:
        from speechprompt.units import Units

        if len(data) < 12 or data[:4] != cls.MAGIC:
            return None
        frames, m = struct.unpack("<II", data[4:12])
        if len(data) != 12 + 8 * m:
            return None
        arr = torch.frombuffer(bytearray(data[12:]), dtype=torch.int32).to(torch.int64)
        return Units(units=arr[:m].clone(), durations=arr[m:].clone(), frames=frames)

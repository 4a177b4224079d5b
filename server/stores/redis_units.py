"""The replica's units LRU backed by Redis entries with a TTL (the ``units_ttl_s`` store URL option)."""

from __future__ import annotations

import struct
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import torch
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry


class SharedUnitsCache:
    """The replica's units LRU, backed by Redis entries ``<prefix>units:<units key>:<pcm sha256>``
    (``Runtime.units_key``: fingerprint, level floor, encoder precision) with a
    TTL: a clip already encoded by any replica skips HuBERT + k-means here (plain ``Units`` only). Same interface as
    ``server.units_cache.UnitsCache``; Redis is skipped while the store is degraded and writes happen on a
    background thread (the model loop never waits for them)."""

    MAGIC = b"SPU1"

    TIMEOUT_S = 0.1  # the model loop waits at most this long for Redis...
    BACKOFF_S = 1.0  # ...and skips Redis for this long after a failure

    def __init__(self, local: Any, store: Any, ttl_s: float):
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

    def _key(self, pcm_digest: str, units_key: str) -> str:
        return f"{self.store.prefix}units:{units_key}:{pcm_digest}"

    def get(self, pcm_digest: str, units_key: str) -> Any | None:
        found = self.local.get(pcm_digest, units_key)
        if found is not None or not self._usable():
            return found
        try:
            data = self.client.get(self._key(pcm_digest, units_key))
        except RedisError:
            self._failed()
            return None
        units = self.decode(data) if data else None
        if units is not None:
            self.shared_hits += 1
            self.local.put(pcm_digest, units_key, units)
        return units

    def put(self, pcm_digest: str, units_key: str, units: Any) -> None:
        """Keep ``units`` locally and (in the background) in Redis. Only plain ``Units`` are shared: richer
        results (a pGSLM backbone's ``ProsodyUnits`` with F0) stay in the local LRU."""
        from speechprompt.units import Units

        self.local.put(pcm_digest, units_key, units)
        if type(units) is not Units or not self._usable():
            return
        data = self.encode(units)

        def write() -> None:
            try:
                self.client.set(self._key(pcm_digest, units_key), data, px=self.ttl_ms)
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

"""LRU cache of clip -> units, keyed by the sha256 of the 16 kHz PCM and the runtime's units key.

The same clip sent again (or to another task) skips HuBERT + k-means. The key includes the runtime's units key
(``Runtime.units_key``: the backbone fingerprint, the bundle's level floor and a non-fp32 encoder precision), so units
made by one backbone, level floor or encoder precision are never served for another. Thread-safe (the model loop
writes, anyone may read statistics).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np


def pcm_digest(samples: np.ndarray) -> str:
    """sha256 hex of a clip's PCM: ``samples`` [N] f32 @ 16 kHz (the decoded, resampled waveform)."""
    return hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()


class UnitsCache:
    """Bounded LRU map ``(pcm sha256, units key) -> Units``; ``capacity`` 0 disables it."""

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, digest: str, units_key: str) -> Any | None:
        """The cached units for this clip and backbone, or None (counted as a miss)."""
        key = (digest, units_key)
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, digest: str, units_key: str, units: Any) -> None:
        """Insert (or refresh) an entry, evicting the least recently used ones above capacity."""
        if self.capacity == 0:
            return
        key = (digest, units_key)
        with self._lock:
            self._items[key] = units
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

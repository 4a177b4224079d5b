"""Units cache: LRU by entries, keyed by PCM digest AND backbone fingerprint."""

import numpy as np

from server.units_cache import UnitsCache, pcm_digest


def test_digest_depends_on_samples_only():
    a = np.linspace(-1, 1, 1000, dtype=np.float32)
    assert pcm_digest(a) == pcm_digest(a.copy())
    b = a.copy()
    b[500] += 1e-6
    assert pcm_digest(a) != pcm_digest(b)
    assert pcm_digest(a.astype(np.float64)) == pcm_digest(a)  # hashed as float32 PCM


def test_lru_eviction_and_counters():
    cache = UnitsCache(2)
    cache.put("a", "fp", 1)
    cache.put("b", "fp", 2)
    assert cache.get("a", "fp") == 1  # a is now the most recent
    cache.put("c", "fp", 3)  # evicts b
    assert cache.get("b", "fp") is None
    assert cache.get("a", "fp") == 1 and cache.get("c", "fp") == 3
    assert (cache.hits, cache.misses, len(cache)) == (3, 1, 2)


def test_other_backbone_never_hits():
    cache = UnitsCache(4)
    cache.put("a", "backbone-1", "units")
    assert cache.get("a", "backbone-2") is None


def test_zero_capacity_disables():
    cache = UnitsCache(0)
    cache.put("a", "fp", 1)
    assert cache.get("a", "fp") is None and len(cache) == 0

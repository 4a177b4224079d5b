"""Redis prompt store against a REAL redis-server on loopback: atomic puts, events, resync after missed
messages and reconnects, outages (degraded, local copy), lost data, idle and dead subscriptions, units cache.

``RedisServer`` and ``Proxy`` live in ``redis_procs.py`` (also used by ``test_replicas.py``).
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from server.errors import StoreUnavailable
from server.stores import open_store
from server.stores.redis_store import RedisStore, SharedUnitsCache
from server.units_cache import UnitsCache
from speechprompt.package import read_package
from speechprompt.units import Units

from .helpers import make_package, wait_for
from .redis_procs import Proxy, RedisServer, silent_put

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian redis-server")

FAST = dict(health_check_s=0.3, timeout_s=0.5)  # quick failure detection for tests


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    yield srv
    srv.stop(save=False)


@pytest.fixture
def stores(tmp_path):
    """``stores(url)`` -> a RedisStore with its own local copy folder; all closed at the end."""
    made: list[RedisStore] = []

    def make(url: str, cache: str | None = None) -> RedisStore:
        folder = tmp_path / (cache or f"copy{len(made)}")
        sep = "&" if "?" in url else "?"
        store = open_store(f"{url}{sep}cache_dir={folder}")
        assert isinstance(store, RedisStore)
        made.append(store)
        return store

    yield make
    for s in made:
        s.close()


def changes(store: RedisStore) -> list[dict]:
    """Snapshots the store's change callback saw (the callback runs on the store's sync thread)."""
    seen: list[dict] = []
    store.on_change(lambda: seen.append(store.snapshot()))
    return seen


def test_gslm_size_package_round_trips_intact(server, stores):
    pkg = make_package("emo", 1, L=12, plen=5, d=1024, V=104, C=12)
    a, b = stores(server.url(**FAST)), stores(server.url(**FAST))
    a.put("emo", pkg.version, pkg.data)
    wait_for(lambda: b.snapshot() == {"emo": pkg.version}, 1)
    data = b.read("emo", pkg.version)
    assert data == pkg.data and len(data) > 500_000
    got = read_package(data)
    for name in ("deep_key", "deep_value", "input_prompt", "separator", "verbalizer"):
        assert torch.equal(getattr(got, name), getattr(pkg, name)), name
    assert got.meta == pkg.meta
    assert (b.local.dir / "emo" / f"{pkg.version}.safetensors").read_bytes() == pkg.data
    r = server.client()
    assert r.hget("sp:tasks", "emo").decode() == pkg.version and r.get(f"sp:pkg:emo:{pkg.version}") == pkg.data
    server.stop()  # the local copy answers while Redis is away
    assert b.read("emo", pkg.version) == pkg.data
    assert b.read("emo", "0" * 16) is None


def test_put_and_delete_reach_another_replica_quickly(server, stores):
    a, b = stores(server.url(**FAST)), stores(server.url(**FAST))
    assert a.snapshot() == {} and a.degraded() is None
    seen = changes(b)
    p1, p2 = make_package("kws", 1), make_package("kws", 2)
    for pkg in (p1, p2):
        a.put("kws", pkg.version, pkg.data)
        assert a.snapshot() == {"kws": pkg.version}  # read-your-writes on the writer
        wait_for(lambda v=pkg.version: {"kws": v} in seen, 1.0)  # pushed to b's listener
        assert b.current_version("kws") == pkg.version
    assert b.read("kws", p1.version) == p1.data  # the previous version stays readable
    assert a.delete("kws") is True and a.snapshot() == {}
    wait_for(lambda: seen[-1] == {}, 1.0)
    assert b.snapshot() == {} and b.list_tasks() == []
    assert a.delete("kws") is False
    assert b.read("kws", p2.version) is None  # all its versions went with it
    assert server.client().keys("sp:pkg:*") == []


def test_a_version_is_never_current_before_its_bytes_exist(server, stores):
    a = stores(server.url(**FAST))
    r = server.client()
    pkgs = [make_package("big", i, L=12, plen=5, d=256) for i in range(6)]
    stop, seen, bad = threading.Event(), set(), []

    def watch() -> None:
        while not stop.is_set() and len(seen) < 10_000:
            v = r.hget("sp:tasks", "big")
            if v is not None:
                seen.add(v)
                if not r.exists(f"sp:pkg:big:{v.decode()}"):
                    bad.append(v)

    t = threading.Thread(target=watch)
    t.start()
    for p in pkgs:
        a.put("big", p.version, p.data)
    stop.set()
    t.join(5)
    assert len(seen) >= 2 and not bad


def test_only_the_newest_versions_are_kept(server, stores):
    a = stores(server.url(keep_versions=2, **FAST))
    pkgs = [make_package("kws", i) for i in range(5)]
    for p in pkgs:
        a.put("kws", p.version, p.data)
    r = server.client()
    assert sorted(k.decode() for k in r.keys("sp:pkg:kws:*")) == sorted(f"sp:pkg:kws:{p.version}" for p in pkgs[-2:])
    a.put("kws", pkgs[3].version, pkgs[3].data)  # a rollback to a kept version
    assert a.snapshot() == {"kws": pkgs[3].version} and r.get(f"sp:pkg:kws:{pkgs[4].version}") is not None


def test_missed_message_is_recovered_by_the_resync_on_reconnect(server, stores):
    b = stores(server.url(**FAST))
    wait_for(lambda: b.degraded() is None, 2)
    seen = changes(b)
    p = make_package("kws", 1)
    silent_put(server.client(), "kws", p)
    time.sleep(0.3)
    assert b.snapshot() == {}  # nothing was published: b cannot know yet
    server.client().client_kill_filter(_type="pubsub")
    wait_for(lambda: {"kws": p.version} in seen, 2)  # the resync found it and told the listener
    assert b.connects == 2


def test_a_gap_in_event_numbers_triggers_a_resync(server, stores):
    a, b = stores(server.url(**FAST)), stores(server.url(**FAST))
    wait_for(lambda: b.degraded() is None, 2)
    x, y = make_package("x", 1), make_package("y", 2)
    silent_put(server.client(), "x", x)
    a.put("y", y.version, y.data)  # b sees seq n+2 after n: it re-reads everything
    wait_for(lambda: b.snapshot() == {"x": x.version, "y": y.version}, 1)


def test_outage_degrades_serves_the_last_known_state_and_recovers(server, stores):
    a, b = stores(server.url(**FAST)), stores(server.url(**FAST))
    p1, p2 = make_package("kws", 1), make_package("kws", 2)
    a.put("kws", p1.version, p1.data)
    wait_for(lambda: b.snapshot() == {"kws": p1.version}, 1)
    assert b.read("kws", p1.version) == p1.data
    server.stop(save=True)
    wait_for(lambda: b.degraded() is not None, 2)
    assert "unreachable" in b.degraded() and b.snapshot() == {"kws": p1.version}
    assert b.read("kws", p1.version) == p1.data
    with pytest.raises(StoreUnavailable):
        a.put("kws", p2.version, p2.data)
    with pytest.raises(StoreUnavailable):
        a.delete("kws")
    server.start()
    took = wait_for(lambda: a.degraded() is None and b.degraded() is None, 5)
    assert took < 5 and b.snapshot() == {"kws": p1.version}
    a.put("kws", p2.version, p2.data)
    wait_for(lambda: b.snapshot() == {"kws": p2.version}, 1)


def test_a_store_started_while_redis_is_down_serves_its_local_copy(server, stores):
    p = make_package("kws", 1)
    first = stores(server.url(**FAST), cache="replica-c")
    first.put("kws", p.version, p.data)
    first.close()
    server.stop(save=True)
    t0 = time.monotonic()
    again = stores(server.url(**FAST), cache="replica-c")
    assert again.snapshot() == {"kws": p.version} and time.monotonic() - t0 < 2.0
    assert again.degraded() is not None and again.read("kws", p.version) == p.data
    server.start()
    wait_for(lambda: again.degraded() is None, 5)
    assert again.snapshot() == {"kws": p.version}


def test_redis_restarted_empty_gets_back_the_tasks_the_replicas_hold(server, stores):
    a, b = stores(server.url(**FAST)), stores(server.url(**FAST))
    old, new = make_package("kws", 1), make_package("emo", 2)
    a.put("kws", old.version, old.data)  # a holds the package (b never read it: b leaves the restore to a)
    wait_for(lambda: b.snapshot() == {"kws": old.version}, 1)
    server.stop(save=False)
    server.start()  # empty: no epoch
    r = server.client()
    wait_for(lambda: r.hget("sp:tasks", "kws") is not None, 5)  # a wrote back what it held
    assert r.get(f"sp:pkg:kws:{old.version}") == old.data
    wait_for(lambda: a.degraded() is None and b.degraded() is None, 5)
    assert a.snapshot() == b.snapshot() == {"kws": old.version}
    a.put("emo", new.version, new.data)  # a write never starts a new store that forgets kws
    wait_for(lambda: b.snapshot() == {"kws": old.version, "emo": new.version}, 2)
    assert b.read("kws", old.version) == old.data


def test_a_write_to_an_empty_redis_restores_the_known_tasks_first(server, stores):
    a = stores(server.url(resync_s=60, **FAST))
    old, new = make_package("kws", 1), make_package("emo", 2)
    a.put("kws", old.version, old.data)
    server.client().flushall()  # no restart: the sync thread notices only at its next resync (60 s)
    a.put("emo", new.version, new.data)
    assert {k.decode(): v.decode() for k, v in server.client().hgetall("sp:tasks").items()} == \
        {"kws": old.version, "emo": new.version}
    assert a.snapshot() == {"kws": old.version, "emo": new.version}


def test_idle_subscriber_past_the_server_timeout_still_gets_events(server, stores):
    server.client().config_set("timeout", 1)  # Redis closes idle (non pub/sub) clients after 1 s
    proxy = Proxy(server.port, idle_s=1.0)  # and the path drops idle TCP connections after 1 s
    try:
        a, b = stores(server.url(**FAST)), stores(server.url(proxy.port, **FAST))
        seen = changes(b)
        wait_for(lambda: b.degraded() is None, 2)
        end = time.monotonic() + 2.5  # idle for 2.5 timeouts
        while time.monotonic() < end:
            assert b.degraded() is None
            time.sleep(0.05)
        p = make_package("kws", 1)
        a.put("kws", p.version, p.data)
        wait_for(lambda: {"kws": p.version} in seen, 1.0)
        assert b.connects == 1  # the health checks kept the one subscription alive
        assert b.read("kws", p.version) == p.data  # its command connection outlived Redis's timeout too
    finally:
        proxy.close()


def test_a_silently_dead_subscription_is_noticed_and_replaced(server, stores):
    proxy = Proxy(server.port)
    try:
        a, b = stores(server.url(**FAST)), stores(server.url(proxy.port, **FAST))
        wait_for(lambda: b.degraded() is None, 2)
        proxy.frozen.set()  # packets vanish; no FIN, no RST
        took = wait_for(lambda: b.degraded() is not None, 3)
        assert took <= FAST["health_check_s"] + FAST["timeout_s"] + 1.0
        p = make_package("kws", 1)
        a.put("kws", p.version, p.data)  # missed by b
        proxy.frozen.clear()
        wait_for(lambda: b.degraded() is None and b.snapshot() == {"kws": p.version}, 5)
    finally:
        proxy.close()


def test_shared_units_cache_serves_units_made_by_another_replica(server, stores):
    a, b = stores(server.url(units_ttl_s=60, **FAST)), stores(server.url(units_ttl_s=60, **FAST))
    wait_for(lambda: a.degraded() is None and b.degraded() is None, 2)  # skipped while Redis is unreachable
    ca, cb = a.units_cache(UnitsCache(8)), b.units_cache(UnitsCache(8))
    assert isinstance(ca, SharedUnitsCache) and ca.capacity == 8
    units = Units(torch.tensor([3, 1, 4, 1, 5]), torch.tensor([2, 1, 1, 3, 1]), 8)
    assert cb.get("pcm0", "fp") is None
    ca.put("pcm0", "fp", units)
    ca.close()  # flush the background write
    got = cb.get("pcm0", "fp")
    assert got is not None and torch.equal(got.units, units.units) and torch.equal(got.durations, units.durations)
    assert got.frames == 8 and cb.shared_hits == 1 and len(cb) == 1
    assert cb.get("pcm0", "other-backbone") is None  # the key holds the backbone fingerprint
    assert 0 < server.client().pttl("sp:units:fp:pcm0") <= 60_000
    richer = ProsodyLike(units.units, units.durations, 8, f0=torch.ones(5))
    cb.put("pcm1", "fp", richer)  # a result with more than units: kept locally, never shared half-encoded
    cb.close()
    assert cb.get("pcm1", "fp") is richer and server.client().exists("sp:units:fp:pcm1") == 0
    assert open_store(str(Path("unused-folder"))).units_cache(UnitsCache(2)).__class__ is UnitsCache


@dataclass(frozen=True)
class ProsodyLike(Units):
    f0: torch.Tensor


def test_url_options_prefix_and_describe(server, stores):
    s = stores(server.url(prefix="team1:", keep_versions=1, **FAST))
    assert s.prefix == "team1:" and s.keep_versions == 1 and s.health_check_s == 0.3
    p = make_package("kws", 1)
    s.put("kws", p.version, p.data)
    assert server.client().hget("team1:tasks", "kws").decode() == p.version
    assert f"127.0.0.1:{server.port}/0" in s.describe()


def test_degraded_reasons_and_503_details_name_no_host_port_or_path(server, stores):
    a = stores(server.url(**FAST))
    p = make_package("kws", 1)
    a.put("kws", p.version, p.data)
    server.stop(save=True)
    wait_for(lambda: a.degraded() is not None, 2)
    with pytest.raises(StoreUnavailable) as e:
        a.put("kws", p.version, p.data)
    for said in (a.degraded(), e.value.detail):
        assert "unreachable" in said
        assert str(server.port) not in said and "127.0.0.1" not in said and str(a.local.dir) not in said
    details = a.details()  # the admin status has them
    assert f"127.0.0.1:{server.port}" in details["where"] and details["last_error"]

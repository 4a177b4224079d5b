"""Task registry with a fake runtime: validation before the device, versions, hot swap, eviction, store sync."""

from __future__ import annotations

import asyncio
import pickle
from types import SimpleNamespace

import pytest
import pytest_asyncio
import torch
from safetensors.torch import save as st_save

from server.batcher import Batcher
from server.errors import InvalidTaskName, TaskUnavailable, UnknownTask
from server.metrics import Metrics
from server.registry import Registry
from server.stores.file import FileStore
from server.units_cache import UnitsCache
from speechprompt.package import (
    BackboneMismatch,
    NonFiniteWeights,
    NotSafetensors,
    PackageInvalid,
    PackageTooLarge,
)

from .fakes import FakeRuntime, make_package, nan_package, torch_save_bytes

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def env(tmp_path):
    rt = FakeRuntime()
    batcher = Batcher(rt, UnitsCache(8), rt.fingerprint, max_rows=8, max_wait_s=0.001, capacity=8)
    batcher.start()
    store = FileStore(tmp_path / "store")
    reg = Registry(rt, store, batcher, budget_bytes=10**9, max_package_bytes=64 * 1024, metrics=Metrics())
    yield SimpleNamespace(rt=rt, batcher=batcher, store=store, reg=reg, root=tmp_path / "store")
    batcher.stop()


async def drain(batcher: Batcher) -> None:
    """Wait until every model-thread call queued so far has run."""
    await asyncio.wrap_future(batcher.call(lambda: None))


REFUSED = {
    "pickle": (lambda: pickle.dumps({"deep_key": [1.0]}), NotSafetensors),
    "torch.save zip": (torch_save_bytes, NotSafetensors),
    "plain safetensors without metadata": (lambda: st_save({"x": torch.zeros(2)}), PackageInvalid),
    "wrong shapes": (lambda: make_package("kws", dim=6).data, PackageInvalid),
    "NaN weights": (nan_package, NonFiniteWeights),
    "other backbone": (lambda: make_package("kws", fingerprint="0" * 64).data, BackboneMismatch),
    "package for another task": (lambda: make_package("other").data, PackageInvalid),
    "too large": (lambda: make_package("kws", labels=tuple(f"c{i}" for i in range(800))).data, PackageTooLarge),
}


async def test_put_validates_loads_and_serves(env):
    p = make_package("kws", labels=("yes", "no"))
    assert await env.reg.put("kws", p.data) == (p.version, True)
    assert await env.reg.put("kws", p.data) == (p.version, False)  # same content: same version
    lease = await env.reg.acquire("kws")
    assert (lease.version, lease.key, lease.labels) == (p.version, f"kws@{p.version}", ("yes", "no"))
    assert f"kws@{p.version}" in env.rt.tasks and env.store.current_version("kws") == p.version
    info = env.reg.describe("kws")
    assert info["state"] == "resident" and info["in_flight"] == 1 and info["backbone"] == env.rt.fingerprint
    env.reg.release(lease)
    assert env.reg.describe("kws")["in_flight"] == 0


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_refused_uploads_leave_the_serving_version_untouched(env, case):
    make, error = REFUSED[case]
    good = make_package("kws", seed=7)
    await env.reg.put("kws", good.data)
    adds = len([c for c in env.rt.calls if c[0] == "add"])
    with pytest.raises(error):
        await env.reg.put("kws", make())
    assert len([c for c in env.rt.calls if c[0] == "add"]) == adds  # nothing reached the device
    lease = await env.reg.acquire("kws")
    assert lease.version == good.version and env.store.current_version("kws") == good.version
    assert set(env.rt.tasks) == {f"kws@{good.version}"}
    env.reg.release(lease)


async def test_refused_upload_of_a_new_task_leaves_no_trace(env):
    with pytest.raises(NotSafetensors):
        await env.reg.put("new", pickle.dumps(1))
    with pytest.raises(UnknownTask):
        await env.reg.acquire("new")
    assert env.reg.names() == [] and env.store.list_tasks() == []


async def test_names_are_checked(env):
    for bad in ("../x", "A", ""):
        with pytest.raises(InvalidTaskName):
            await env.reg.put(bad, make_package("kws").data)
        with pytest.raises(InvalidTaskName):
            await env.reg.acquire(bad)


async def test_hot_swap_keeps_the_old_version_until_its_jobs_finish(env):
    v1, v2 = make_package("kws", seed=1), make_package("kws", seed=2)
    await env.reg.put("kws", v1.data)
    old = await env.reg.acquire("kws")
    await env.reg.put("kws", v2.data)
    new = await env.reg.acquire("kws")
    assert (old.version, new.version) == (v1.version, v2.version)
    await drain(env.batcher)
    assert {f"kws@{v1.version}", f"kws@{v2.version}"} <= set(env.rt.tasks)  # both resident side by side
    env.reg.release(old)
    await drain(env.batcher)
    assert set(env.rt.tasks) == {f"kws@{v2.version}"}  # old one dropped once its last job ended
    env.reg.release(new)


async def test_failed_load_keeps_the_old_version_serving(env):
    v1, v2 = make_package("kws", seed=1), make_package("kws", seed=2)
    await env.reg.put("kws", v1.data)
    env.rt.fail_add.add(v2.version)
    with pytest.raises(RuntimeError):
        await env.reg.put("kws", v2.data)
    assert env.store.current_version("kws") == v1.version
    lease = await env.reg.acquire("kws")
    assert lease.version == v1.version
    env.reg.release(lease)
    # the same version dropped into the store by hand: refused, recorded, old one still serves
    (env.root / "kws" / "v2.safetensors").write_bytes(v2.data)
    await env.reg.refresh()
    info = env.reg.describe("kws")
    assert info["version"] == v1.version and info["error"]["version"] == v2.version
    assert (await env.reg.acquire("kws")).version == v1.version


async def test_lru_eviction_by_bytes_spares_in_flight_versions(env):
    env.reg.loader.budget_bytes = 2500  # fake tasks weigh 1000 bytes: two fit
    pkgs = {t: make_package(t, seed=i) for i, t in enumerate("abcd")}
    for t in "abc":
        await env.reg.put(t, pkgs[t].data)
    await drain(env.batcher)
    resident = lambda: sorted(k.split("@")[0] for k in env.rt.tasks)  # noqa: E731
    assert resident() == ["b", "c"]  # a was least recently used
    lease_b = await env.reg.acquire("b")
    lease_a = await env.reg.acquire("a")  # reload a: evicts c (idle), not b (in flight)
    await drain(env.batcher)
    assert resident() == ["a", "b"]
    await env.reg.put("d", pkgs["d"].data)  # both residents in flight: over budget rather than evicting
    await drain(env.batcher)
    assert resident() == ["a", "b", "d"]
    for lease in (lease_a, lease_b):
        env.reg.release(lease)
    assert [env.reg.describe(t)["state"] for t in "abcd"] == ["resident", "resident", "stored", "resident"]


async def test_refresh_picks_up_dropped_packages_and_deletions(env):
    p = make_package("emo", seed=3)
    await env.reg.refresh()
    assert env.reg.names() == []
    (env.root / "emo").mkdir(parents=True)
    (env.root / "emo" / "dropped.safetensors").write_bytes(p.data)
    await env.reg.refresh()
    lease = await env.reg.acquire("emo")
    assert lease.version == p.version
    env.store.delete("emo")
    await env.reg.refresh()
    with pytest.raises(UnknownTask):
        await env.reg.acquire("emo")
    await drain(env.batcher)
    assert lease.key in env.rt.tasks  # still in flight: not removed under the running job
    env.reg.release(lease)
    await drain(env.batcher)
    assert env.rt.tasks == {}


async def test_task_whose_only_version_fails_is_unavailable(env):
    bad = make_package("kws", seed=5)
    env.rt.fail_add.add(bad.version)
    (env.root / "kws").mkdir(parents=True)
    (env.root / "kws" / "x.safetensors").write_bytes(bad.data)
    await env.reg.refresh()
    assert env.reg.describe("kws")["state"] == "failed"
    with pytest.raises(TaskUnavailable):
        await env.reg.acquire("kws")


async def test_delete(env):
    await env.reg.put("kws", make_package("kws").data)
    await env.reg.delete("kws")
    with pytest.raises(UnknownTask):
        await env.reg.delete("kws")
    assert env.reg.names() == [] and env.store.list_tasks() == []

"""PUT always reaches the store, and concurrent PUT and DELETE of one task have one order: the one that
answers last wins, in the store and in every registry (no resurrection), with no 503 and no path disclosed."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from .fakes import FakeRuntime, make_package
from .http_helpers import ADMIN

pytestmark = pytest.mark.asyncio


async def test_put_writes_the_store_even_when_this_replica_already_serves_that_version(make_server, tmp_path):
    srv = await make_server(FakeRuntime(), store_poll_interval_s=60)  # the watcher does not notice the loss
    pkg = make_package("kws", seed=1)
    assert (await srv.client.put("/v1/tasks/kws", content=pkg.data, headers=ADMIN)).status_code == 201
    shutil.rmtree(tmp_path / "store" / "kws")  # the store forgot it (e.g. a Redis restarted empty)
    r = await srv.client.put("/v1/tasks/kws", content=pkg.data, headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"task": "kws", "version": pkg.version, "created": False}
    assert srv.service.store.current_version("kws") == pkg.version
    assert (tmp_path / "store" / "kws" / f"{pkg.version}.safetensors").read_bytes() == pkg.data


async def timed(coro):
    r = await coro
    return r, time.monotonic()


async def test_concurrent_put_and_delete_the_last_to_answer_wins_and_nothing_is_resurrected(make_server, tmp_path):
    srv = await make_server(FakeRuntime(), store_poll_interval_s=0.02)
    pkgs = [make_package("kws", seed=i) for i in range(4)]
    outcomes = []
    for n in range(30):
        first = pkgs[n % 4]
        await srv.client.put("/v1/tasks/kws", content=first.data, headers=ADMIN)
        new = pkgs[(n + 1) % 4]
        ops = [timed(srv.client.put("/v1/tasks/kws", content=new.data, headers=ADMIN)),
               timed(srv.client.delete("/v1/tasks/kws", headers=ADMIN))]
        if n % 2:  # start the DELETE first in every other round: both orders get exercised
            (dele, t_del), (put, t_put) = await asyncio.gather(ops[1], ops[0])
        else:
            (put, t_put), (dele, t_del) = await asyncio.gather(*ops)
        for r in (put, dele):
            assert r.status_code in (200, 201, 404), r.text
            assert str(tmp_path) not in r.text
        deleted_last = t_del > t_put
        outcomes.append(deleted_last)
        await asyncio.sleep(0.1)  # several store polls: a resurrection would show now
        want = None if deleted_last else new.version
        assert srv.service.store.current_version("kws") == want, n
        served = srv.service.registry.describe("kws")["version"] if "kws" in srv.service.registry.names() else None
        assert served == want, n
        if want is not None:
            await srv.client.delete("/v1/tasks/kws", headers=ADMIN)
    assert outcomes  # (which order each round took depends on timing; every round checked its own)

"""Task endpoints (fake runtime): list, describe, upload (auth, refusals), delete, store watcher."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from .fakes import FakeRuntime, make_package, nan_package, torch_save_bytes
from .http_helpers import ADMIN, WAV, assert_problem, wait_until, wav_bytes

pytestmark = pytest.mark.asyncio


async def classify_version(srv, task="kws"):
    r = await srv.client.post(f"/v1/tasks/{task}/classify", content=wav_bytes(), headers=WAV)
    assert r.status_code == 200, r.text
    return r.json()["version"]


async def test_upload_describe_list_delete(make_server):
    srv = await make_server(FakeRuntime())
    v1, v2 = make_package("kws", seed=1), make_package("kws", seed=2)
    r = await srv.client.put("/v1/tasks/kws", files={"package": ("kws.safetensors", v1.data)}, headers=ADMIN)
    assert r.status_code == 201 and r.json()["version"] == v1.version
    r = await srv.client.put("/v1/tasks/kws", content=v1.data, headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"task": "kws", "version": v1.version, "created": False}
    info = (await srv.client.get("/v1/tasks/kws")).json()
    assert info["state"] == "resident" and info["labels"] == ["yes", "no", "up"] and info["version"] == v1.version
    assert info["training"] == {"seed": 1} and info["backbone"] == srv.service.runtime.fingerprint
    assert await classify_version(srv) == v1.version
    await srv.client.put("/v1/tasks/kws", content=v2.data, headers=ADMIN)
    assert await classify_version(srv) == v2.version
    listed = (await srv.client.get("/v1/tasks")).json()["tasks"]
    assert [(t["task"], t["version"]) for t in listed] == [("kws", v2.version)]
    r = await srv.client.delete("/v1/tasks/kws", headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"task": "kws", "deleted": True}
    assert_problem(await srv.client.get("/v1/tasks/kws"), 404, "unknown_task")
    assert_problem(await srv.client.delete("/v1/tasks/kws", headers=ADMIN), 404, "unknown_task")
    assert_problem(await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(), headers=WAV),
                   404, "unknown_task")
    assert (await srv.client.get("/v1/tasks")).json() == {"tasks": []}


async def test_admin_auth(make_server):
    srv = await make_server(FakeRuntime())
    data = make_package("kws").data
    body = assert_problem(await srv.client.put("/v1/tasks/kws", content=data), 401, "unauthorized")
    assert body["accepted"] == "Authorization: Bearer <admin token>"
    r = await srv.client.put("/v1/tasks/kws", content=data, headers={"Authorization": "Basic czNjcmV0"})
    assert_problem(r, 401, "unauthorized") and r.headers["www-authenticate"].startswith("Bearer")
    r = await srv.client.put("/v1/tasks/kws", content=data, headers={"Authorization": "Bearer nope"})
    assert_problem(r, 403, "forbidden")
    assert_problem(await srv.client.delete("/v1/tasks/kws"), 401, "unauthorized")
    assert srv.service.registry.names() == []


async def test_no_admin_token_means_uploads_are_disabled(make_server):
    srv = await make_server(FakeRuntime(), admin_token=None)
    r = await srv.client.put("/v1/tasks/kws", content=make_package("kws").data, headers=ADMIN)
    body = assert_problem(r, 403, "forbidden")
    assert "SPEECHPROMPT_ADMIN_TOKEN" in body["accepted"]
    assert_problem(await srv.client.delete("/v1/tasks/kws", headers=ADMIN), 403, "forbidden")


REFUSALS = [
    ("pickle", lambda: pickle.dumps({"deep_key": [0.0] * 10}), 415, "not_safetensors"),
    ("torch.save", torch_save_bytes, 415, "not_safetensors"),
    ("wrong shapes", lambda: make_package("kws", dim=6).data, 422, "invalid_package"),
    ("NaN values", nan_package, 422, "non_finite_weights"),
    ("empty body", lambda: b"", 400, "bad_request"),
    ("other backbone", lambda: make_package("kws", fingerprint="0" * 64).data, 409, "backbone_mismatch"),
    ("other task", lambda: make_package("emo").data, 422, "invalid_package"),
    ("oversize", lambda: make_package("kws", labels=tuple(f"c{i}" for i in range(800))).data, 413,
     "payload_too_large"),
]


@pytest.mark.parametrize("case, make, status, code", REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_refused_uploads_keep_the_serving_version(make_server, case, make, status, code):
    srv = await make_server(FakeRuntime(), max_upload_bytes=64 * 1024)
    good = make_package("kws", seed=9)
    await srv.client.put("/v1/tasks/kws", content=good.data, headers=ADMIN)
    assert_problem(await srv.client.put("/v1/tasks/kws", content=make(), headers=ADMIN), status, code)
    assert await classify_version(srv) == good.version
    assert srv.service.store.current_version("kws") == good.version


async def test_bad_upload_names_and_body_types(make_server):
    srv = await make_server(FakeRuntime())
    data = make_package("kws").data
    assert_problem(await srv.client.put("/v1/tasks/KWS", content=data, headers=ADMIN), 400, "invalid_task_name")
    r = await srv.client.put("/v1/tasks/..%2Fx", content=data, headers=ADMIN)
    assert r.status_code in (400, 404) and r.headers["content-type"] == "application/problem+json"
    r = await srv.client.put("/v1/tasks/kws", content=data, headers={**ADMIN, "Content-Type": "application/json"})
    assert_problem(r, 415, "unsupported_media_type")
    r = await srv.client.put("/v1/tasks/kws", files={"other": ("p", data)}, headers=ADMIN)
    assert_problem(r, 400, "bad_request")
    assert (await srv.client.get("/v1/tasks")).json() == {"tasks": []}


async def test_store_watcher_serves_a_dropped_package_without_restart(make_server, tmp_path):
    srv = await make_server(FakeRuntime(), store_poll_interval_s=0.02)
    v1, v2 = make_package("kws", seed=1), make_package("kws", seed=2)
    folder = tmp_path / "store" / "kws"
    folder.mkdir(parents=True)
    (folder / "first.safetensors.tmp").write_bytes(v1.data)
    await asyncio.sleep(0.1)
    assert_problem(await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(), headers=WAV),
                   404, "unknown_task")
    (folder / "first.safetensors.tmp").rename(folder / "first.safetensors")
    await wait_until(lambda: "kws" in srv.service.registry.names())
    assert await classify_version(srv) == v1.version
    (folder / "second.safetensors").write_bytes(v2.data)  # replaced by hand: hot swap
    await wait_until(lambda: srv.service.registry.describe("kws")["version"] == v2.version)
    assert await classify_version(srv) == v2.version

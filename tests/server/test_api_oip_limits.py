"""The /v2 infer route under the /v1 limits, in-process with a fake runtime: one admission slot per clip (a
batch larger than the free slots is 429 with Retry-After), the body cap and the clip length (413), the deadline
(504), readiness (503) -- each as v2 error JSON ``{"error": ...}`` with the same status and headers as /v1."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from .fakes import FakeRuntime, make_package
from .http_helpers import ADMIN, wait_until, wav_bytes

pytestmark = pytest.mark.asyncio


def infer_body(*files: bytes) -> dict:
    return {"inputs": [{"name": "audio_file", "datatype": "BYTES", "shape": [len(files)],
                        "data": [base64.b64encode(f).decode() for f in files]}]}


def assert_v2_error(r, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and set(r.json()) == {"error"}
    return r.json()["error"]


async def test_a_batch_takes_one_admission_slot_per_clip(make_server):
    rt = FakeRuntime()
    srv = await make_server(rt, queue_capacity=3)
    await srv.client.put("/v1/tasks/kws", content=make_package("kws").data, headers=ADMIN)
    r = await srv.client.post("/v2/models/kws/infer", json=infer_body(*(wav_bytes(seed=i) for i in range(3))))
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [3]
    r = await srv.client.post("/v2/models/kws/infer", json=infer_body(*(wav_bytes(seed=i) for i in range(4))))
    assert "in flight" in assert_v2_error(r, 429) and int(r.headers["retry-after"]) >= 1
    assert srv.service.admission.inflight == 0  # the slots taken before the refusal were given back
    rt.gate.clear()  # one /v1 request holds a slot: a batch of 3 no longer fits, a batch of 2 does
    running = asyncio.create_task(srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(seed=9),
                                                  headers={"Content-Type": "audio/wav"}))
    await wait_until(lambda: srv.service.admission.inflight == 1)
    r = await srv.client.post("/v2/models/kws/infer", json=infer_body(*(wav_bytes(seed=i) for i in range(3))))
    assert_v2_error(r, 429)
    two = asyncio.create_task(srv.client.post("/v2/models/kws/infer", json=infer_body(wav_bytes(), wav_bytes(seed=1))))
    await wait_until(lambda: srv.service.admission.inflight == 3)
    rt.gate.set()
    assert (await running).status_code == 200 and (await two).status_code == 200


async def test_body_cap_clip_length_deadline_and_readiness(make_server):
    rt = FakeRuntime()
    srv = await make_server(rt, max_upload_bytes=64 * 1024, max_audio_seconds=0.5, request_deadline_s=0.3)
    await srv.client.put("/v1/tasks/kws", content=make_package("kws").data, headers=ADMIN)
    r = await srv.client.post("/v2/models/kws/infer", json=infer_body(wav_bytes(1.5)))  # > 64 KiB as base64
    assert "limit" in assert_v2_error(r, 413)
    r = await srv.client.post("/v2/models/kws/infer", json={"inputs": [{
        "name": "audio", "datatype": "FP32", "shape": [1, 9600], "data": np.zeros(9600).tolist()}]})  # 0.6 s
    assert "0.5 s" in assert_v2_error(r, 413)
    rt.gate.clear()  # the model loop is held: the request's deadline passes in the queue
    r = await srv.client.post("/v2/models/kws/infer", json=infer_body(wav_bytes(0.3)))
    assert "deadline" in assert_v2_error(r, 504)
    rt.gate.set()
    srv.service.state, srv.service.reason = "starting", "loading the backbone bundle"
    assert "loading" in assert_v2_error(await srv.client.get("/v2/health/ready"), 503)
    assert_v2_error(await srv.client.post("/v2/models/kws/infer", json=infer_body(wav_bytes())), 503)
    assert (await srv.client.get("/v2/health/live")).json() == {"live": True}
    srv.service.state, srv.service.reason = "ready", "ready"


async def test_a_task_whose_package_windows_long_audio_is_413_on_v2_not_a_500(make_server):
    """Windowed results have no v2 tensor shape: /v2 uses the reject policy whatever the package says, while /v1
    windows the same clip by the package's default."""
    from dataclasses import replace

    from speechprompt.package import write_package

    srv = await make_server(FakeRuntime(), max_audio_seconds=0.5)
    p = make_package("win")
    meta = replace(p.meta, long_audio={"policy": "window", "window": 0.5, "hop": 0.25})
    data = write_package(meta, deep_key=p.deep_key, deep_value=p.deep_value, input_prompt=p.input_prompt,
                         separator=p.separator, verbalizer=p.verbalizer)
    assert (await srv.client.put("/v1/tasks/win", content=data, headers=ADMIN)).status_code == 201
    clip = wav_bytes(1.0)
    r = await srv.client.post("/v1/tasks/win/classify", content=clip, headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200 and r.json()["long_audio"]["policy"] == "window", r.text
    assert "0.5 s" in assert_v2_error(await srv.client.post("/v2/models/win/infer", json=infer_body(clip)), 413)
    r = await srv.client.post("/v2/models/win/infer", json=infer_body(wav_bytes(0.4)))
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1], r.text

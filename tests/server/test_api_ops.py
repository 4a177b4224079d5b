"""Readiness, backbone, metrics, OpenAPI, and the load-related statuses (429, 503, 504) with a fake runtime."""

from __future__ import annotations

import asyncio
import threading

import pytest

from .fakes import FakeRuntime, make_package
from .http_helpers import ADMIN, WAV, assert_problem, wait_until, wav_bytes

pytestmark = pytest.mark.asyncio


async def test_not_ready_until_the_runtime_is_loaded(make_server):
    release = threading.Event()
    rt = FakeRuntime()

    def slow_factory(settings):
        release.wait(10)
        return rt

    srv = await make_server(runtime_factory=slow_factory, wait=False)
    assert (await srv.client.get("/healthz")).json() == {"status": "ok"}
    body = assert_problem(await srv.client.get("/readyz"), 503, "not_ready")
    assert "loading the backbone bundle" in body["detail"]
    assert_problem(await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(), headers=WAV),
                   503, "not_ready")
    assert_problem(await srv.client.get("/v1/tasks"), 503, "not_ready")
    release.set()
    await srv.service.wait_ready(5)
    r = await srv.client.get("/readyz")
    assert r.status_code == 200 and r.json()["backbone"] == rt.fingerprint


async def test_failed_start_is_reported_by_readyz_in_words_and_in_full_to_the_admin(make_server):
    def broken(settings):
        raise FileNotFoundError("models/missing/backbone.json")

    srv = await make_server(runtime_factory=broken, wait=False)
    await srv.service.ready_event.wait()
    body = assert_problem(await srv.client.get("/readyz"), 503, "not_ready")
    assert "start-up failed" in body["detail"] and "FileNotFoundError" in body["detail"]
    assert "models/missing" not in body["detail"]  # no paths on the unauthenticated endpoint
    assert (await srv.client.get("/healthz")).status_code == 200
    assert_problem(await srv.client.get("/v1/admin/status"), 401, "unauthorized")
    status = (await srv.client.get("/v1/admin/status", headers=ADMIN)).json()
    assert status["state"] == "failed" and "models/missing/backbone.json" in status["failure"]


async def test_readyz_names_no_store_path_and_the_admin_status_does(make_server, tmp_path):
    srv = await make_server(FakeRuntime())
    r = await srv.client.get("/readyz")
    assert r.status_code == 200 and str(tmp_path) not in r.text
    assert r.json()["store"] == {"kind": "folder", "degraded": None}
    status = (await srv.client.get("/v1/admin/status", headers=ADMIN)).json()
    assert str(tmp_path / "store") in status["store"]["where"] and status["state"] == "ready"


async def test_full_queue_is_429_with_retry_after(make_server):
    rt = FakeRuntime()
    srv = await make_server(rt, queue_capacity=2)
    await srv.client.put("/v1/tasks/kws", content=make_package("kws").data, headers=ADMIN)
    rt.gate.clear()
    post = lambda seed: srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(seed=seed), headers=WAV)  # noqa: E731
    running = asyncio.create_task(post(1))
    await wait_until(lambda: rt.rows() == [1])
    queued = asyncio.create_task(post(2))
    await wait_until(lambda: srv.service.batcher.depth == 1)
    r = await post(3)
    assert_problem(r, 429, "queue_full")
    assert int(r.headers["retry-after"]) >= 1
    rt.gate.set()
    assert [x.status_code for x in await asyncio.gather(running, queued)] == [200, 200]


async def test_deadline_is_504_and_the_abandoned_job_is_skipped(make_server):
    rt = FakeRuntime()
    srv = await make_server(rt, request_deadline_s=0.3)
    await srv.client.put("/v1/tasks/kws", content=make_package("kws").data, headers=ADMIN)
    rt.gate.clear()
    first = asyncio.create_task(srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(seed=1), headers=WAV))
    await wait_until(lambda: rt.rows() == [1])
    r = await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(seed=2), headers=WAV)
    assert_problem(r, 504, "deadline_exceeded")
    assert_problem(await first, 504, "deadline_exceeded")
    rt.gate.set()
    await wait_until(lambda: srv.service.batcher.dropped + srv.service.batcher.expired == 1)
    assert rt.rows() == [1]  # the second clip never reached the unit LM
    info = (await srv.client.get("/v1/tasks/kws")).json()
    assert info["in_flight"] == 0  # leases released


async def test_backbone_metrics_openapi_and_unknown_routes(make_server):
    rt = FakeRuntime()
    srv = await make_server(rt)
    info = (await srv.client.get("/v1/backbone")).json()
    assert info.pop("speech_trim") == {"available": srv.service.speech_vad is not None} and info == rt.backbone.info()
    await srv.client.put("/v1/tasks/kws", content=make_package("kws").data, headers=ADMIN)
    for _ in range(2):
        assert (await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(), headers=WAV)).status_code == 200
    await srv.client.post("/v1/tasks/nope/classify", content=wav_bytes(), headers=WAV)
    text = (await srv.client.get("/metrics")).text
    for line in ('sp_requests_total{status="200",task="kws"} 2.0',
                 'sp_requests_total{status="404",task="_unknown"} 1.0',
                 'sp_request_failures_total{code="unknown_task"} 1.0',
                 "sp_request_queue_duration_seconds_count 2.0", "sp_request_inference_duration_seconds_count 2.0",
                 "sp_batch_rows_sum 2.0", "sp_units_cache_hits_total 1.0", "sp_units_cache_misses_total 1.0",
                 "sp_resident_tasks 1.0", "sp_package_load_duration_seconds_count 1.0"):
        assert line in text, line
    spec = (await srv.client.get("/openapi.json")).json()
    assert {"/v1/tasks/{task}/classify", "/v1/classify", "/v1/tasks", "/v1/tasks/{task}", "/v1/backbone",
            "/healthz", "/readyz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/tasks/{task}/classify"]["post"]["requestBody"]["content"]
    assert (await srv.client.get("/docs")).status_code == 200
    assert_problem(await srv.client.get("/v1/nothing"), 404, "not_found")
    assert_problem(await srv.client.get("/v1/classify"), 405, "method_not_allowed")


async def test_client_that_disconnects_is_skipped_and_counted(make_server):
    rt = FakeRuntime()
    srv = await make_server(rt)
    await srv.client.put("/v1/tasks/kws", content=make_package("kws").data, headers=ADMIN)
    rt.gate.clear()
    first = asyncio.create_task(srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(seed=1), headers=WAV))
    await wait_until(lambda: rt.rows() == [1])
    in_progress = lambda: srv.service.metrics.registry.get_sample_value("sp_http_requests_in_progress")  # noqa: E731
    assert in_progress() == 1.0  # the held request, until its answer is sent
    data, leave, sent = wav_bytes(seed=2), asyncio.Event(), []
    inbox = [{"type": "http.request", "body": data, "more_body": False}]

    async def receive():
        if inbox:
            return inbox.pop()
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/tasks/kws/classify", "raw_path": b"/v1/tasks/kws/classify",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 9), "server": ("sp.test", 80),
             "headers": [(b"content-type", b"audio/wav"), (b"content-length", str(len(data)).encode())]}
    call = asyncio.create_task(srv.app(scope, receive, send))
    await wait_until(lambda: srv.service.batcher.depth == 1)
    leave.set()  # the client goes away while its job waits
    await call
    assert sent[0]["status"] == 499
    rt.gate.set()
    assert (await first).status_code == 200
    await wait_until(lambda: srv.service.batcher.dropped == 1)
    assert rt.rows() == [1] and (await srv.client.get("/v1/tasks/kws")).json()["in_flight"] == 0
    text = (await srv.client.get("/metrics")).text
    assert "sp_dropped_jobs_total 1.0" in text and "sp_http_requests_in_progress 1.0" in text  # the scrape itself
    assert in_progress() == 0.0


async def test_overload_is_refused_before_the_body_is_read_so_rejected_requests_are_never_decoded(make_server):
    rt = FakeRuntime()
    srv = await make_server(rt, queue_capacity=2, max_batch_rows=1)
    await srv.client.put("/v1/tasks/kws", content=make_package("kws").data, headers=ADMIN)
    rt.gate.clear()
    decoded = lambda: srv.service.metrics.registry.get_sample_value(  # noqa: E731
        "sp_request_decode_duration_seconds_count")
    post = lambda s: asyncio.create_task(  # noqa: E731
        srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(seed=s), headers=WAV))
    posts = [post(0)]
    await wait_until(lambda: rt.rows() == [1])  # one job on the model thread, the queue empty
    posts += [post(s) for s in range(1, 10)]
    await wait_until(lambda: srv.service.admission.refused == 8)
    rt.gate.set()
    answers = await asyncio.gather(*posts)
    refused = [r for r in answers if r.status_code == 429]
    assert len(refused) == 8 and sum(r.status_code == 200 for r in answers) == 2
    assert decoded() == 2  # the server's own decode counter: no request refused at admission was decoded
    for r in refused:
        assert_problem(r, 429, "queue_full")
        assert 1 <= int(r.headers["retry-after"]) <= 10


def test_retry_after_comes_from_the_measured_drain_rate_capped_at_10_s():
    from server.admission import retry_after_s

    assert retry_after_s(0, 0.05) == 1 and retry_after_s(40, 0.1) == 4 and retry_after_s(2560, 0.1) == 10

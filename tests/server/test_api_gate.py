"""POST /v1/classify?gate=task:label (server/gate.py): the gate task is scored in the same pass, the body says
whether its label reached the threshold, every other answer says whether it applies; bad gates are 400s that
hold no lease (fake runtime, real HTTP app)."""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio

from .fakes import FakeRuntime, expected_probs, make_package
from .http_helpers import ADMIN, WAV, assert_problem, wav_bytes

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def srv(make_server):
    srv = await make_server(FakeRuntime())
    srv.kws = make_package("kws", labels=("yes", "no", "up", "down"), seed=1)
    srv.vad = make_package("vad", labels=("noise", "speech", "music"), seed=2)
    for p in (srv.kws, srv.vad):
        r = await srv.client.put(f"/v1/tasks/{p.meta.task}", content=p.data, headers=ADMIN)
        assert r.status_code == 201, r.text
    return srv


async def in_flight(srv, task: str) -> int:
    return (await srv.client.get(f"/v1/tasks/{task}")).json()["in_flight"]


async def test_gate_scores_its_task_in_the_same_pass_and_marks_the_others(srv):
    data = wav_bytes(0.4, seed=11)
    p = expected_probs(srv.vad, data)
    label = srv.vad.meta.labels[int(np.argmin(p))]  # the least likely label: not in a top_k=1 list, yet reported
    p_label = float(p.min())
    rt = srv.service.runtime
    for threshold, passed in ((p_label * 0.5, True), (min(1.0, p_label * 2), False)):
        r = await srv.client.post(f"/v1/classify?tasks=kws&top_k=1&gate=vad:{label}&gate_threshold={threshold}",
                                  content=data, headers=WAV)
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["task"] for x in body["results"]] == ["kws"]  # the gate task is not an answer unless asked
        kws = body["results"][0]
        assert kws["applicable"] is passed and len(kws["scores"]) == 1  # top_k still holds for the answers
        assert kws["label"] == srv.kws.meta.labels[int(np.argmax(expected_probs(srv.kws, data)))]
        g = body["gate"]
        assert (g["task"], g["label"], g["version"], g["passed"]) == ("vad", label, srv.vad.version, passed)
        assert g["threshold"] == pytest.approx(threshold) and g["probability"] == pytest.approx(p_label, rel=1e-5)
        assert "error" not in g or g["error"] is None
    assert rt.rows()[-2:] == [2, 2]  # kws + the gate: one forward of two rows per request
    assert await in_flight(srv, "kws") == 0 and await in_flight(srv, "vad") == 0


async def test_gate_task_among_the_answers_is_not_marked_itself(srv):
    data = wav_bytes(0.4, seed=12)
    r = await srv.client.post("/v1/classify?tasks=vad,kws&gate=vad:speech", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    vad, kws = r.json()["results"]
    assert "applicable" not in vad and kws["applicable"] is r.json()["gate"]["passed"]
    p = expected_probs(srv.vad, data)[srv.vad.meta.labels.index("speech")]
    assert r.json()["gate"]["passed"] is bool(p >= 0.5) and srv.service.runtime.rows()[-1] == 2


async def test_an_unservable_gate_task_leaves_the_answers_unmarked(srv):
    r = await srv.client.post("/v1/classify?tasks=kws&gate=nope:speech", content=wav_bytes(), headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "applicable" not in body["results"][0]
    g = body["gate"]
    assert g["passed"] is None and g["probability"] is None and g["version"] is None
    assert g["error"]["status"] == 404 and g["error"]["type"] == "/problems/unknown_task"


@pytest.mark.parametrize("query, status, code, says", [
    ("gate=vad", 400, "bad_request", "<task>:<label>"),
    ("gate=vad:", 400, "bad_request", "<task>:<label>"),
    ("gate=:speech", 400, "bad_request", "<task>:<label>"),
    ("gate=Bad!:speech", 400, "invalid_task_name", "a-z"),
    ("gate=vad:spech", 400, "bad_request", "noise, speech, music"),
    ("gate_threshold=0.5", 400, "bad_request", "gate=vad:speech"),
    ("gate=vad:speech&gate_threshold=0", 400, "invalid_request", ""),
    ("gate=vad:speech&gate_threshold=1.5", 400, "invalid_request", ""),
    ("gate=vad:speech&gate_threshold=nan", 400, "invalid_request", ""),
])
async def test_bad_gates_are_400_and_hold_no_lease(srv, query, status, code, says):
    r = await srv.client.post(f"/v1/classify?tasks=kws&{query}", content=wav_bytes(), headers=WAV)
    body = assert_problem(r, status, code)
    assert says in str(body.get("accepted", "")) + body["detail"]
    assert await in_flight(srv, "kws") == 0 and await in_flight(srv, "vad") == 0


async def test_single_task_route_takes_the_same_gate(srv):
    data = wav_bytes(0.4, seed=13)
    p = float(expected_probs(srv.vad, data)[srv.vad.meta.labels.index("speech")])
    r = await srv.client.post(f"/v1/tasks/kws/classify?top_k=2&gate=vad:speech&gate_threshold={p * 0.5}",
                              content=data, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "kws" and body["applicable"] is True and len(body["scores"]) == 2
    assert body["gate"]["passed"] is True and body["gate"]["probability"] == pytest.approx(p, rel=1e-5)
    assert srv.service.runtime.rows()[-1] == 2
    own = (await srv.client.post("/v1/tasks/vad/classify?top_k=1&gate=vad:speech", content=data, headers=WAV)).json()
    assert "applicable" not in own and own["gate"]["probability"] == pytest.approx(p, rel=1e-5)
    assert len(own["scores"]) == 1
    gone = (await srv.client.post("/v1/tasks/kws/classify?gate=nope:speech", content=data, headers=WAV)).json()
    assert gone["gate"]["error"]["status"] == 404 and "applicable" not in gone
    assert_problem(await srv.client.post("/v1/tasks/kws/classify?gate=vad:x", content=data, headers=WAV),
                   400, "bad_request")
    missing = await srv.client.post("/v1/tasks/nope/classify?gate=vad:speech", content=data, headers=WAV)
    assert_problem(missing, 404, "unknown_task")
    assert await in_flight(srv, "kws") == 0 and await in_flight(srv, "vad") == 0

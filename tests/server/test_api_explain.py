"""explain=true on the classify routes and GET /v1/tasks/{task}/verbalizer (fake runtime): the numbers equal
a one-by-one reference (units occluded by hand, the task's own verbalizer), all rows go in one forward."""

from __future__ import annotations

import io

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
import torch

from speechprompt.audio import decode_audio

from .fakes import FakeRuntime, K, fake_probs, fake_units, make_package
from .http_helpers import ADMIN, WAV, assert_problem, wav_bytes

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def srv(make_server):
    srv = await make_server(FakeRuntime(), max_batch_rows=256)
    srv.kws = make_package("kws", labels=("yes", "no", "up", "down"), seed=1)
    srv.emo = make_package("emo", labels=("happy", "sad"), seed=2)
    for p in (srv.kws, srv.emo):
        r = await srv.client.put(f"/v1/tasks/{p.meta.task}", content=p.data, headers=ADMIN)
        assert r.status_code == 201
    return srv


def reference(pkg, data: bytes, spans: int) -> tuple[dict, int]:
    """Explanation of ``pkg``'s winning label computed here: units removed stretch by stretch, re-scored."""
    audio = decode_audio(data)
    u = fake_units(audio.samples)
    verb = pkg.verbalizer.numpy().astype(np.float64)
    base = fake_probs(verb, u.units)
    win = int(np.argmax(base))
    m = len(u.units)
    edges = [m * i // min(m, spans) for i in range(min(m, spans) + 1)]
    cum = np.concatenate([[0], np.cumsum(u.durations.numpy())])
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        kept = torch.cat([u.units[:a], u.units[b:]])
        without = float(fake_probs(verb, kept)[win])
        out.append({"start": cum[a] / cum[-1] * audio.duration_s, "end": cum[b] / cum[-1] * audio.duration_s,
                    "units": [a, b], "score_without": without, "importance": float(base[win]) - without})
    return {"label": pkg.meta.labels[win], "score": float(base[win]), "spans": out}, m


def assert_explanation(got: dict, want: dict) -> None:
    assert got["method"] == "occlusion" and got["label"] == want["label"]
    assert got["score"] == pytest.approx(want["score"], rel=1e-5)
    assert len(got["spans"]) == len(want["spans"])
    for g, w in zip(got["spans"], want["spans"], strict=True):
        assert g["units"] == w["units"]
        assert (g["start"], g["end"]) == (pytest.approx(w["start"], abs=1e-4), pytest.approx(w["end"], abs=1e-4))
        assert g["score_without"] == pytest.approx(w["score_without"], rel=1e-5, abs=1e-7)
        assert g["importance"] == pytest.approx(w["importance"], rel=1e-5, abs=1e-7)


async def test_single_task_explanation_equals_the_reference_and_tiles_the_clip(srv):
    data = wav_bytes(1.0, seed=11)
    r = await srv.client.post("/v1/tasks/kws/classify?explain=true&explain_spans=6", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    want, m = reference(srv.kws, data, 6)
    assert m >= 6  # the clip has enough units for 6 stretches
    assert body["label"] == want["label"] and body["version"] == srv.kws.version
    assert_explanation(body["explanation"], want)
    spans = body["explanation"]["spans"]
    assert spans[0]["start"] == 0.0 and spans[-1]["end"] == pytest.approx(body["audio"]["duration_s"], abs=1e-4)
    assert srv.service.runtime.rows() == [1 + 6]  # base row + one per stretch, ONE forward


async def test_removing_the_most_important_stretch_moves_the_score_most(srv):
    data = wav_bytes(1.0, seed=12)
    body = (await srv.client.post("/v1/tasks/kws/classify?explain=true", content=data, headers=WAV)).json()
    spans = body["explanation"]["spans"]
    most = max(spans, key=lambda s: s["importance"])
    least = min(spans, key=lambda s: s["importance"])
    assert most["importance"] > least["importance"]
    # the drop is real: the score without the stretch, from a plain classify of the units left
    verb = srv.kws.verbalizer.numpy().astype(np.float64)
    u = fake_units(decode_audio(data).samples).units
    win = srv.kws.meta.labels.index(body["label"])
    for s in (most, least):
        a, b = s["units"]
        assert fake_probs(verb, torch.cat([u[:a], u[b:]]))[win] == pytest.approx(s["score_without"], rel=1e-5)


async def test_multi_task_explanations_share_one_forward(srv):
    data = wav_bytes(0.8, seed=13)
    r = await srv.client.post("/v1/classify?tasks=kws,emo,nope&explain=true&explain_spans=4", content=data,
                              headers=WAV)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    for item, pkg in zip(res[:2], (srv.kws, srv.emo), strict=True):
        assert_explanation(item["explanation"], reference(pkg, data, 4)[0])
    assert res[2]["error"]["type"] == "/problems/unknown_task"
    assert srv.service.runtime.rows() == [2 * (1 + 4)]


async def test_without_explain_nothing_extra_is_computed(srv):
    data = wav_bytes(0.5, seed=14)
    body = (await srv.client.post("/v1/tasks/kws/classify", content=data, headers=WAV)).json()
    assert "explanation" not in body
    assert srv.service.runtime.rows() == [1]


async def test_explain_of_a_cached_clip_and_bad_span_counts(srv):
    data = wav_bytes(0.5, seed=15)
    await srv.client.post("/v1/tasks/kws/classify", content=data, headers=WAV)
    body = (await srv.client.post("/v1/tasks/kws/classify?explain=1&explain_spans=3", content=data,
                                  headers=WAV)).json()
    assert body["units_cache_hit"] is True and len(body["explanation"]["spans"]) == 3
    for bad in ("0", "65", "x"):
        r = await srv.client.post(f"/v1/tasks/kws/classify?explain=true&explain_spans={bad}", content=data,
                                  headers=WAV)
        assert_problem(r, 400, "invalid_request")


async def test_verbalizer_view_matches_the_package_weights(srv):
    r = await srv.client.get("/v1/tasks/kws/verbalizer?top_k=3")
    assert r.status_code == 200, r.text
    body = r.json()
    labels = list(srv.kws.meta.labels)
    w = srv.kws.verbalizer.numpy().astype(np.float64)[4:, 4:4 + K]  # units 0..K-1 sit at tokens 4..K+3
    w = w - w.mean(0, keepdims=True)
    assert body["task"] == "kws" and body["version"] == srv.kws.version and body["labels"] == labels
    assert body["units"] == K
    np.testing.assert_allclose(np.array(body["weights"]), w, atol=1e-6)
    for c, lab in enumerate(labels):
        order = np.argsort(-w[c])[:3]
        assert [x["unit"] for x in body["top"][lab]] == order.tolist()
    assert body["unit_label"] == [labels[i] for i in np.argmax(w, axis=0)]


async def test_verbalizer_view_errors(srv):
    assert_problem(await srv.client.get("/v1/tasks/nope/verbalizer"), 404, "unknown_task")
    assert_problem(await srv.client.get("/v1/tasks/Bad!/verbalizer"), 400, "invalid_task_name")
    assert_problem(await srv.client.get("/v1/tasks/kws/verbalizer?top_k=0"), 400, "invalid_request")


async def test_a_job_larger_than_a_batch_runs_in_forwards_of_max_rows(make_server):
    srv = await make_server(FakeRuntime(), max_batch_rows=4)
    kws = make_package("kws", labels=("yes", "no", "up", "down"), seed=1)
    assert (await srv.client.put("/v1/tasks/kws", content=kws.data, headers=ADMIN)).status_code == 201
    data = wav_bytes(1.0, seed=16)
    body = (await srv.client.post("/v1/tasks/kws/classify?explain=true&explain_spans=6", content=data,
                                  headers=WAV)).json()
    assert_explanation(body["explanation"], reference(kws, data, 6)[0])
    assert srv.service.runtime.rows() == [4, 3]  # 7 rows: base + 6 occluded


async def test_explain_with_long_audio_truncated_and_windowed(make_server):
    """A truncated clip is explained over the part that was scored; a windowed task gets windows, no
    explanation (explanations apply to a clip scored as a whole)."""
    srv = await make_server(FakeRuntime(), max_audio_seconds=1.0, max_batch_rows=256)
    kws = make_package("kws", labels=("yes", "no", "up", "down"), seed=1)
    assert (await srv.client.put("/v1/tasks/kws", content=kws.data, headers=ADMIN)).status_code == 201
    data = wav_bytes(2.0, seed=17)
    r = await srv.client.post("/v1/tasks/kws/classify?long_audio=truncate&explain=true&explain_spans=4",
                              content=data, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["long_audio"]["policy"] == "truncate" and body["long_audio"]["scored_s"] == pytest.approx(1.0)
    spans = body["explanation"]["spans"]
    assert len(spans) == 4 and spans[-1]["end"] == pytest.approx(1.0, abs=1e-4)
    want = reference(kws, _head(data, 1.0), 4)[0]
    assert_explanation(body["explanation"], want)
    r = await srv.client.post("/v1/tasks/kws/classify?long_audio=window&window=0.5&hop=0.5&explain=true",
                              content=data, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["long_audio"]["policy"] == "window" and len(body["windows"]) == 4 and "explanation" not in body


def _head(data: bytes, seconds: float) -> bytes:
    """The first ``seconds`` of a WAV, as a WAV (what truncation scores)."""
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, samples[:int(seconds * rate)], rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()

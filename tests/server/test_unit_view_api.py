"""A task whose package names the clusters view (speechprompt/unit_views.py) over HTTP, on the default bundle (300
clusters x 4 pitch registers) and the commands-en demo's tensors: its answer is the prompts' answer on the clip's
folded units, computed here without the server; in one request with tasks that read the units as they are, every task
answers as alone; GET /v1/tasks/{task} names the view; a package whose view names another codebook is refused 422 at
upload and the task's served version stays."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechprompt.backbone import Backbone
from speechprompt.package import read_package, with_metadata
from speechprompt.paths import default_path
from speechprompt.training.evaluate import predict
from speechprompt.unit_views import UnitView

from .http_helpers import ADMIN, WAV, assert_problem, wav_bytes

pytestmark = pytest.mark.asyncio
VIEW = UnitView(300, 4)


def demo(store: Path, task: str):
    version = (store / task / "CURRENT").read_text().strip()
    return read_package((store / task / f"{version}.safetensors").read_bytes())


def store_with_view(tmp_path: Path) -> Path:
    """The demo store plus ``commands-clusters``: the commands-en demo's tensors reading the clusters view."""
    store = tmp_path / "store"
    shutil.copytree(default_path("prompts_store"), store)
    new = with_metadata(demo(store, "commands-en"), task="commands-clusters", unit_view=VIEW.to_dict())
    (store / "commands-clusters").mkdir()
    (store / "commands-clusters" / f"{new.version}.safetensors").write_bytes(new.data)
    (store / "commands-clusters" / "CURRENT").write_text(new.version + "\n")
    return store


def voiced(seconds: float, seed: int) -> bytes:
    """A voiced-like clip: 12 harmonics of an F0 gliding between 90 and 260 Hz (so the pitch stream finds voiced
    frames in several registers), a little noise; WAV bytes at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 90 + 170 * (0.5 + 0.5 * np.sin(2 * np.pi * (0.5 + seed * 0.3) * t + seed))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 13)) * 0.2 + 0.01 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def scores(body: dict) -> dict:
    return {s["label"]: s["score"] for s in body["scores"]}


async def test_a_task_with_the_clusters_view_scores_the_folded_units(make_server, tmp_path):
    store = store_with_view(tmp_path)
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store))
    bb = Backbone.load(default_path("models/default"))
    assert VIEW.matches(bb.codebook)
    plain = demo(store, "commands-en")
    differs = 0
    for seed in range(4):
        data = voiced(1.0, seed)
        r = await srv.client.post("/v1/tasks/commands-clusters/classify?top_k=100", content=data, headers=WAV)
        assert r.status_code == 200, r.text
        body = r.json()
        samples, _ = sf.read(io.BytesIO(data), dtype="float32")
        units = bb.unit_extractor().extract([samples])[0].units
        want = predict(bb.unit_lm, plain, [VIEW.apply(units)])[0]  # the demo's tensors on the folded units
        got = scores(body)
        assert [got[label] for label in plain.meta.labels] == pytest.approx(want.tolist(), abs=1e-5)
        unfolded = predict(bb.unit_lm, plain, [units])[0]
        differs += not np.allclose(want, unfolded, atol=1e-4)
        assert body["version"] == (store / "commands-clusters" / "CURRENT").read_text().strip()
    assert differs >= 3  # the fold changes these clips' answers, so the comparison above can tell
    info = (await srv.client.get("/v1/tasks/commands-clusters")).json()
    assert info["unit_view"] == VIEW.to_dict()
    assert (await srv.client.get("/v1/backbone")).json()["unit_view"] == VIEW.to_dict()  # what a package may name
    assert (await srv.client.get("/v1/tasks/commands-en")).json()["unit_view"] is None


async def test_tasks_with_and_without_the_view_answer_in_one_request_as_alone(make_server, tmp_path):
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store_with_view(tmp_path)))
    tasks = ("commands-clusters", "commands-en", "gender", "language-id")
    data = voiced(1.2, 7)
    r = await srv.client.post(f"/v1/classify?tasks={','.join(tasks)}&top_k=100&explain=true&explain_spans=3",
                              content=data, headers=WAV)
    assert r.status_code == 200, r.text
    got = {t["task"]: t for t in r.json()["results"]}
    for task in tasks:
        alone = await srv.client.post(f"/v1/tasks/{task}/classify?top_k=100&explain=true&explain_spans=3",
                                      content=data, headers=WAV)
        assert scores(got[task]) == pytest.approx(scores(alone.json()), abs=1e-6), task
        assert len(got[task]["explanation"]["spans"]) == 3
    assert scores(got["commands-clusters"]) != pytest.approx(scores(got["commands-en"]), abs=1e-4)


async def test_a_view_of_another_codebook_is_refused_at_upload_and_the_served_version_stays(make_server, tmp_path):
    store = store_with_view(tmp_path)
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store))
    before = (await srv.client.get("/v1/tasks/commands-clusters")).json()["version"]
    wrong = with_metadata(demo(store, "commands-en"), task="commands-clusters",
                          unit_view=UnitView(100, 3).to_dict())
    body = assert_problem(await srv.client.put("/v1/tasks/commands-clusters", content=wrong.data, headers=ADMIN),
                          422, "invalid_package")
    assert "100 x 3" in body["detail"] and "300 x 4" in body["detail"] and "unit_view" in body["accepted"]
    assert (await srv.client.get("/v1/tasks/commands-clusters")).json()["version"] == before
    r = await srv.client.post("/v1/tasks/commands-clusters/classify", content=wav_bytes(0.5), headers=WAV)
    assert r.status_code == 200 and r.json()["version"] == before


async def test_a_view_that_names_a_key_twice_is_refused_whichever_copy_a_parser_keeps(make_server, tmp_path):
    import json

    store = store_with_view(tmp_path)
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store))
    before = (await srv.client.get("/v1/tasks/commands-clusters")).json()["version"]
    good = with_metadata(demo(store, "commands-en"), task="commands-clusters", unit_view=UnitView(300, 4).to_dict())
    n = int.from_bytes(good.data[:8], "little")
    header = json.loads(good.data[8:8 + n])
    # the last copy is this codebook's view (Python's json alone would accept it), the first another one
    header["__metadata__"]["unit_view"] = ('{"clusters": 100, "fold": "pitch_registers", "registers": 3, '
                                           '"clusters": 300, "registers": 4}')
    raw = json.dumps(header).encode()
    body = assert_problem(await srv.client.put("/v1/tasks/commands-clusters", headers=ADMIN,
                                               content=len(raw).to_bytes(8, "little") + raw + good.data[8 + n:]),
                          422, "invalid_package")
    assert "names the key 'clusters' twice" in body["detail"] and "unit_view" in body["accepted"]
    assert (await srv.client.get("/v1/tasks/commands-clusters")).json()["version"] == before


async def test_an_ensemble_of_a_units_and_a_clusters_member_answers_their_mean(make_server, tmp_path):
    from speechprompt.ensembles import ensemble

    store = store_with_view(tmp_path)
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store), admin_token="s3cret")
    mixed = ensemble([demo(store, "commands-en"), demo(store, "commands-clusters")], task="commands-mixed")
    assert mixed.meta.to_header()["format_version"] == "5"
    r = await srv.client.put("/v1/tasks/commands-mixed", content=mixed.data, headers=ADMIN)
    assert r.status_code in (200, 201), r.text
    info = (await srv.client.get("/v1/tasks/commands-mixed")).json()
    assert info["members"] == 2 and info["unit_view"] is None and info["member_unit_views"] == [None, VIEW.to_dict()]
    assert (await srv.client.get("/v1/tasks/commands-clusters")).json()["member_unit_views"] is None
    for seed in (1, 2):
        data = voiced(1.1, seed)
        r = await srv.client.post("/v1/classify?tasks=commands-mixed,commands-en,commands-clusters&top_k=100",
                                  content=data, headers=WAV)
        assert r.status_code == 200, r.text
        got = {t["task"]: scores(t) for t in r.json()["results"]}
        mean = {k: (got["commands-en"][k] + got["commands-clusters"][k]) / 2 for k in got["commands-en"]}
        assert got["commands-mixed"] == pytest.approx(mean, abs=1e-5)
        assert max(abs(got["commands-en"][k] - got["commands-clusters"][k]) for k in mean) > 1e-3  # views differ

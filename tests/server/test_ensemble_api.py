"""An ensemble package served end to end (speechprompt/ensembles.py): uploaded like any package, described with its
member count, answered with the mean of its members' probabilities beside plain tasks in one request, explained, and
refused (the served version kept) when malformed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from speechprompt.ensembles import ensemble
from speechprompt.package import new_package, read_package
from speechprompt.paths import default_path

from .http_helpers import ADMIN, WAV, assert_problem, wav_bytes

pytestmark = pytest.mark.asyncio


def demo(store: Path, task: str):
    version = (store / task / "CURRENT").read_text().strip()
    return read_package((store / task / f"{version}.safetensors").read_bytes())


def members(store: Path) -> list:
    """The commands-en demo and two copies with their separator and verbalizer moved (three distinct members)."""
    base = demo(store, "commands-en")
    out = [base]
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        out.append(new_package(base.meta, base.deep_key, base.deep_value, base.input_prompt,
                               base.separator + 0.5 * torch.randn(base.separator.shape, generator=g),
                               base.verbalizer + 0.05 * torch.randn(base.verbalizer.shape, generator=g)))
    return out


def scores(body: dict) -> dict:
    return {s["label"]: s["score"] for s in body["scores"]}


async def test_an_uploaded_ensemble_answers_the_mean_of_its_members(make_server, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(default_path("prompts_store"), store)
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store), admin_token="s3cret")
    parts = members(store)
    ens = ensemble(parts, task="commands-ens")
    r = await srv.client.put("/v1/tasks/commands-ens", content=ens.data, headers=ADMIN)
    assert r.status_code in (200, 201), r.text
    for i, p in enumerate(parts):
        r = await srv.client.put(f"/v1/tasks/m{i}", content=ensemble([p, p], task=f"m{i}").data, headers=ADMIN)
        assert r.status_code in (200, 201), r.text  # a member twice: its own answer, as a reference
    info = (await srv.client.get("/v1/tasks/commands-ens")).json()
    assert info["members"] == 3 and info["version"] == ens.version
    assert (await srv.client.get("/v1/tasks/commands-en")).json()["members"] == 1
    for seconds in (0.6, 1.3):
        clip = wav_bytes(seconds)
        r = await srv.client.post("/v1/classify?tasks=commands-ens,m0,m1,m2,language-id&top_k=100", content=clip,
                                  headers=WAV)
        assert r.status_code == 200, r.text
        got = {t["task"]: t for t in r.json()["results"]}
        alone = [scores(got[f"m{i}"]) for i in range(3)]
        mean = {k: sum(a[k] for a in alone) / 3 for k in alone[0]}
        assert scores(got["commands-ens"]) == pytest.approx(mean, abs=1e-5)
        assert got["commands-ens"]["version"] == ens.version
        assert max(abs(alone[0][k] - alone[1][k]) for k in mean) > 1e-3  # the members differ, so the mean tells
        single = (await srv.client.post("/v1/tasks/commands-ens/classify?top_k=100&explain=true", content=clip,
                                        headers=WAV)).json()
        assert scores(single) == pytest.approx(mean, abs=1e-5) and single["explanation"]["spans"]
    view = (await srv.client.get("/v1/tasks/commands-ens/verbalizer?top_k=3")).json()
    assert view["method"].endswith("(mean of 3 members)")


async def test_a_malformed_ensemble_is_refused_and_the_served_version_stays(make_server, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(default_path("prompts_store"), store)
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store), admin_token="s3cret")
    ens = ensemble(members(store)[:2], task="commands-en")
    n = int.from_bytes(ens.data[:8], "little")
    header = json.loads(ens.data[8:8 + n])
    header["member1.verbalizer"]["shape"] = list(reversed(header["member1.verbalizer"]["shape"]))
    raw = json.dumps(header).encode()
    before = (await srv.client.get("/v1/tasks/commands-en")).json()["version"]
    body = assert_problem(await srv.client.put("/v1/tasks/commands-en", headers=ADMIN,
                                               content=len(raw).to_bytes(8, "little") + raw + ens.data[8 + n:]),
                          422, "invalid_package")
    assert "member 1's verbalizer" in body["detail"]
    assert (await srv.client.get("/v1/tasks/commands-en")).json()["version"] == before
    r = await srv.client.post("/v1/tasks/commands-en/classify", content=wav_bytes(0.5), headers=WAV)
    assert r.status_code == 200 and r.json()["version"] == before

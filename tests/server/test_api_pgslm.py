"""The server on a pGSLM bundle (a REAL tiny random ``pgslm`` backbone, no fakes): the same HTTP API as on GSLM,
``/v1/backbone`` says the kind, answers equal a direct ``PGSLMPromptBank`` computation, YAAPT runs once per clip
whatever the number of tasks, and packages made for another kind or another backbone are refused with 409."""

from __future__ import annotations

import io

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
import torch

import speechprompt.prosody as prosody_mod
from speechprompt.audio import decode_audio
from speechprompt.backbone import Backbone, make_random_bundle
from speechprompt.importers.pgslm import make_random_pgslm_bundle
from speechprompt.package import PackageMeta, TaskPackage, new_package
from speechprompt.pgslm_prompting import PGSLMPromptBank
from speechprompt.prosody import ProsodyExtractor
from speechprompt.units import UnitExtractor

from .http_helpers import ADMIN, WAV, assert_problem, wait_until, wav_bytes

pytestmark = pytest.mark.asyncio
TASKS = {"kws": ("yes", "no", "up", "down"), "emo": ("happy", "sad", "angry"), "vad": ("speech", "none")}


class Direct:
    """The same computation without the server: bundle -> units + prosody (ProsodyExtractor) -> PGSLMPromptBank."""

    def __init__(self, folder):
        self.bb = bb = Backbone.load(folder)
        self.extractor = ProsodyExtractor.from_parts(UnitExtractor.from_parts(bb.encoder, bb.codebook), bb.prosody)
        self.bank = PGSLMPromptBank(bb.unit_lm, bb.prosody)

    def package(self, task: str, seed: int, *, kind: str = "pgslm", fingerprint: str | None = None) -> TaskPackage:
        """Random prompts of this backbone's shapes (deep prompts [L, 5, d], verbalizer [C+4, V])."""
        c, g, plen = self.bb.spec.unit_lm, torch.Generator().manual_seed(seed), 5
        L, d, V, labels = c.layers, c.embed_dim, c.vocab_size, TASKS.get(task, ("female", "male"))
        meta = PackageMeta(task=task, labels=labels, backbone_fingerprint=fingerprint or self.bb.fingerprint,
                           backbone_kind=kind, prompt_length=plen)
        return new_package(meta, torch.randn(L, plen, d, generator=g), torch.randn(L, plen, d, generator=g),
                           torch.randn(plen, d, generator=g), torch.randn(d, generator=g),
                           torch.randn(len(labels) + 4, V, generator=g) * 0.5)

    def probs(self, data: bytes, pkg: TaskPackage) -> np.ndarray:
        """Class probabilities ``[C]`` of one clip (file bytes) under one package, one row alone."""
        key = f"{pkg.meta.task}@{pkg.version}"
        if key not in self.bank:
            self.bank.add(key, pkg)
        with torch.inference_mode():
            item = self.extractor.extract([decode_audio(data).samples])[0]
            return self.bank.classify([item], [key])[0].numpy()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pgslm") / "tiny-pgslm"
    return folder, make_random_pgslm_bundle(folder, seed=3)


@pytest.fixture(scope="module")
def direct(bundle):
    return Direct(bundle[0])


@pytest_asyncio.fixture
async def srv(make_server, bundle, direct):
    """A server on the pGSLM bundle (the real loader, ``settings.bundle_dir``) with the three tasks uploaded."""
    srv = await make_server(bundle_dir=bundle[0], runtime_factory=None)
    srv.pkgs = {t: direct.package(t, seed=i) for i, t in enumerate(TASKS)}
    for t, p in srv.pkgs.items():
        r = await srv.client.put(f"/v1/tasks/{t}", content=p.data, headers=ADMIN)
        assert r.status_code == 201 and r.json() == {"task": t, "version": p.version, "created": True}, r.text
    return srv


def scores(body: dict, labels) -> np.ndarray:
    got = {s["label"]: s["score"] for s in body["scores"]}
    return np.array([got[lbl] for lbl in labels])


async def test_backbone_health_and_readiness_report_the_pgslm_bundle(srv, bundle):
    folder, fingerprint = bundle
    info = (await srv.client.get("/v1/backbone")).json()
    assert info["kind"] == "pgslm" and info["fingerprint"] == fingerprint and info["name"] == "random-tiny-pgslm"
    assert info["unit_lm"]["vocab_size"] == 24 and info["codebook_size"] == 20
    assert info["unit_view"] is None  # no clusters view on a pGSLM backbone
    assert info["prosody"]["f0_bins"] == 32 and info["prosody"]["normalization"] == "utterance"
    assert (await srv.client.get("/healthz")).json() == {"status": "ok"}
    ready = (await srv.client.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["backbone"] == fingerprint and ready["tasks"] == len(TASKS)
    assert ready["tasks_failed"] == 0
    listing = (await srv.client.get("/v1/tasks")).json()["tasks"]
    assert {(t["task"], t["backbone_kind"], t["backbone"], t["state"]) for t in listing} == {
        (t, "pgslm", fingerprint, "resident") for t in TASKS}


async def test_classify_equals_the_direct_prompt_bank_computation(srv, direct):
    data = wav_bytes(0.6, rate=22050, seed=4)
    pkg, labels = srv.pkgs["kws"], TASKS["kws"]
    r = await srv.client.post(f"/v1/tasks/kws/classify?top_k={len(labels)}", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    want = direct.probs(data, pkg)
    assert body["task"] == "kws" and body["version"] == pkg.version and body["backbone"] == direct.bb.fingerprint
    assert body["label"] == labels[int(np.argmax(want))]
    np.testing.assert_allclose(scores(body, labels), want, atol=1e-5)
    units = direct.extractor.extract([decode_audio(data).samples])[0]
    assert body["audio"]["resampled"] is True and body["audio"]["units"] == len(units.units)
    assert body["audio"]["frames"] == units.frames and body["units_cache_hit"] is False


async def test_multi_task_equals_single_task_calls(srv, direct):
    data = wav_bytes(0.5, seed=7)
    r = await srv.client.post("/v1/classify?tasks=kws,emo,vad,nope&top_k=4", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    multi = r.json()["results"]
    assert [x["task"] for x in multi] == ["kws", "emo", "vad", "nope"]
    assert multi[3]["error"]["type"] == "/problems/unknown_task"
    for res in multi[:3]:
        task, labels = res["task"], TASKS[res["task"]]
        single = (await srv.client.post(f"/v1/tasks/{task}/classify?top_k=4", content=data, headers=WAV)).json()
        assert res["version"] == single["version"] == srv.pkgs[task].version and res["label"] == single["label"]
        assert single["units_cache_hit"] is True
        np.testing.assert_allclose(scores(res, labels), scores(single, labels), atol=1e-5)
        np.testing.assert_allclose(scores(res, labels), direct.probs(data, srv.pkgs[task]), atol=1e-5)


async def test_prosody_is_computed_once_per_clip_across_tasks(srv, monkeypatch):
    calls = []
    real = prosody_mod.frame_f0
    monkeypatch.setattr(prosody_mod, "frame_f0", lambda wav, cfg: calls.append(len(wav)) or real(wav, cfg))
    clips = [wav_bytes(0.5, seed=11), wav_bytes(0.7, seed=12)]
    first = (await srv.client.post("/v1/classify?tasks=kws,emo,vad", content=clips[0], headers=WAV)).json()
    assert len(calls) == 1 and first["units_cache_hit"] is False  # three task rows, one YAAPT run
    for task in TASKS:
        body = (await srv.client.post(f"/v1/tasks/{task}/classify", content=clips[0], headers=WAV)).json()
        assert body["units_cache_hit"] is True
    assert len(calls) == 1  # the cached units carry the prosody
    await srv.client.post("/v1/classify?tasks=vad,kws", content=clips[1], headers=WAV)
    assert len(calls) == 2 and all(n > 0 for n in calls)


async def test_packages_for_another_kind_or_backbone_are_409(srv, direct, tmp_path):
    fingerprint = direct.bb.fingerprint
    gslm_fp = make_random_bundle(tmp_path / "gslm", seed=3)
    refused = {"gslm kind, this fingerprint": direct.package("kws", seed=20, kind="gslm"),
               "pgslm kind, a GSLM bundle's fingerprint": direct.package("kws", seed=21, fingerprint=gslm_fp),
               "a GSLM bundle's package": direct.package("kws", seed=22, kind="gslm", fingerprint=gslm_fp)}
    for what, pkg in refused.items():
        r = await srv.client.put("/v1/tasks/kws", content=pkg.data, headers=ADMIN)
        body = assert_problem(r, 409, "backbone_mismatch")
        made_for = f"{pkg.meta.backbone_kind}:{pkg.meta.backbone_fingerprint[:16]}"
        assert made_for in body["detail"] and f"pgslm:{fingerprint[:16]}" in body["detail"], what
        assert "'pgslm'" in body["accepted"] and fingerprint in body["accepted"], what
    # nothing was switched: kws still serves its pGSLM version
    assert (await srv.client.get("/v1/tasks/kws")).json()["version"] == srv.pkgs["kws"].version
    # a GSLM package dropped into the store is refused too and recorded on the task (the others keep serving)
    dropped = direct.package("gender", seed=23, kind="gslm", fingerprint=gslm_fp)
    srv.service.store.put("gender", dropped.version, dropped.data)
    await wait_until(lambda: "gender" in srv.service.registry.names())
    desc = (await srv.client.get("/v1/tasks/gender")).json()
    assert desc["state"] == "failed" and desc["error"]["code"] == "backbone_mismatch"
    ready = (await srv.client.get("/readyz")).json()  # listed, but counted as not servable
    assert ready["tasks"] == len(srv.service.registry.names()) and ready["tasks_failed"] == 1
    assert_problem(await srv.client.post("/v1/tasks/gender/classify", content=wav_bytes(), headers=WAV),
                   503, "task_unavailable")
    assert (await srv.client.post("/v1/tasks/vad/classify", content=wav_bytes(), headers=WAV)).status_code == 200


async def test_explanation_on_pgslm_removes_units_with_their_prosody(srv, direct):
    """explain=true on pGSLM: each stretch's score equals the direct prompt bank on the units left, whose
    durations and F0 were removed with them (``speechprompt.explain.occlude``, checked here by hand)."""
    data = wav_bytes(0.8, seed=9)
    pkg, labels = srv.pkgs["emo"], TASKS["emo"]
    r = await srv.client.post("/v1/tasks/emo/classify?explain=true&explain_spans=3", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    ex = r.json()["explanation"]
    with torch.inference_mode():
        item = direct.extractor.extract([decode_audio(data).samples])[0]
    key = f"emo@{pkg.version}"
    direct.probs(data, pkg)  # places the package in the direct bank
    win = labels.index(ex["label"])
    assert len(ex["spans"]) == 3
    for s in ex["spans"]:
        a, b = s["units"]
        keep = torch.cat([torch.arange(a), torch.arange(b, len(item.units))])
        left = type(item)(item.units[keep], item.durations[keep], int(item.durations[keep].sum()), item.f0[keep],
                          item.f0_stats)
        with torch.inference_mode():
            want = direct.bank.classify([left], [key])[0].numpy()[win]
        assert s["score_without"] == pytest.approx(float(want), abs=1e-5)


async def test_verbalizer_view_reads_the_pgslm_unit_tokens(srv, direct):
    body = (await srv.client.get("/v1/tasks/kws/verbalizer?top_k=2")).json()
    w = srv.pkgs["kws"].verbalizer.double()[4:, direct.bb.unit_to_token].numpy()  # [C, K] through the pGSLM map
    assert body["units"] == 20 and body["version"] == srv.pkgs["kws"].version
    np.testing.assert_allclose(np.array(body["weights"]), w - w.mean(0, keepdims=True), atol=1e-6)


async def test_windowed_classify_on_pgslm_equals_each_window_alone(srv, direct):
    """Long audio on pGSLM: every window's scores equal the direct computation on that window's samples."""
    data = wav_bytes(2.5, seed=4)
    r = await srv.client.post("/v1/tasks/kws/classify?window=1&hop=0.5&top_k=4", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    samples = decode_audio(data).samples
    assert [(w["start"], w["end"]) for w in body["windows"]] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5)]
    for w in body["windows"]:
        piece = samples[round(w["start"] * 16000):round(w["end"] * 16000)]
        buf = io.BytesIO()
        sf.write(buf, piece, 16000, format="WAV", subtype="FLOAT")
        ref = direct.probs(buf.getvalue(), srv.pkgs["kws"])
        np.testing.assert_allclose([w["scores"][k] for k in TASKS["kws"]], ref, rtol=1e-4, atol=1e-6)

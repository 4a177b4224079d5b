"""The server starts in the chosen precision mode, says which in ``GET /v1/backbone`` and in its log, and answers
in it (the real loader on a tiny random bundle)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from server.settings import Settings
from speechprompt import precision
from speechprompt.audio import decode_audio
from speechprompt.backbone import make_random_bundle
from speechprompt.package import PackageMeta, new_package
from speechprompt.runtime import Runtime

from .http_helpers import ADMIN, WAV, wav_bytes

BF16_CPU = frozenset({"avx2", "avx512f", "avx512_bf16"})  # bf16 dot products, no VNNI


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prec") / "tiny"
    return folder, make_random_bundle(folder, seed=3)


def package(fingerprint: str):
    g = torch.Generator().manual_seed(2)
    L, plen, d, V = 2, 5, 32, 24
    meta = PackageMeta(task="kws", labels=("yes", "no", "stop"), backbone_fingerprint=fingerprint, prompt_length=plen)
    return new_package(meta, torch.randn(L, plen, d, generator=g), torch.randn(L, plen, d, generator=g),
                       torch.randn(plen, d, generator=g), torch.randn(d, generator=g), torch.randn(7, V, generator=g) * 0.1)


def write_gate(folder, fingerprint: str, modes: dict) -> None:
    """A gate as ``bench/precision_gate.py`` records it: the bundle's fingerprint and settings digest."""
    digest = precision.bundle_ids(folder)[1]
    (folder / precision.GATE_FILE).write_text(json.dumps({"fingerprint": fingerprint, "settings_digest": digest,
                                                          "modes": modes}))


@pytest.mark.asyncio
async def test_explicit_bf16_is_reported_and_answers_near_fp32(make_server, bundle, caplog):
    folder, fp = bundle
    caplog.set_level(logging.INFO, logger="server.service")
    srv = await make_server(bundle_dir=folder, runtime_factory=None, precision="bf16")
    info = (await srv.client.get("/v1/backbone")).json()["precision"]
    assert info["mode"] == "bf16" and info["requested"] == "bf16" and info["unit_lm"] == "bf16"
    assert info["reason"].startswith("set explicitly") and "fp32" in info["native"]
    assert any("precision bf16 (requested bf16)" in r.getMessage() for r in caplog.records)
    pkg = package(fp)
    assert (await srv.client.put("/v1/tasks/kws", content=pkg.data, headers=ADMIN)).status_code == 201
    data = wav_bytes(0.6, seed=7)
    body = (await srv.client.post("/v1/tasks/kws/classify?top_k=3", content=data, headers=WAV)).json()
    ref = Runtime.load(folder)  # fp32 reference on the same clip
    ref.add_task("kws", pkg)
    want = ref.classify(ref.extract_units([decode_audio(data).samples]), ["kws"])[0]
    scores = {s["label"]: s["score"] for s in body["scores"]}
    got = np.array([scores[label] for label in ("yes", "no", "stop")])
    assert np.abs(got - want).max() < 0.05 and body["label"] == ("yes", "no", "stop")[int(want.argmax())]


@pytest.mark.asyncio
async def test_auto_takes_the_passed_native_mode_from_the_bundle_gate(make_server, bundle, tmp_path, monkeypatch):
    folder, fp = bundle
    monkeypatch.setattr(precision, "cpu_flags", lambda: BF16_CPU)
    write_gate(folder, fp, {"fp32/bf16": {"passed": True, "speedup": 1.6}, "int8": {"passed": True, "speedup": 2.4},
                            "bf16": {"passed": False, "speedup": 3.0}})
    try:
        srv = await make_server(bundle_dir=folder, runtime_factory=None)  # precision: auto (the default)
        info = (await srv.client.get("/v1/backbone")).json()["precision"]
    finally:
        (folder / precision.GATE_FILE).unlink()
    # int8 is faster but this CPU has no VNNI; bf16 failed its gate: the passed native one is fp32/bf16
    assert info["mode"] == "fp32/bf16" and info["requested"] == "auto" and "1.60x" in info["reason"]
    assert srv.service.runtime.bank.pk.dtype == torch.bfloat16


@pytest.mark.asyncio
async def test_auto_without_a_gate_is_fp32_and_says_why(make_server, bundle, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: BF16_CPU)
    srv = await make_server(bundle_dir=bundle[0], runtime_factory=None)
    info = (await srv.client.get("/v1/backbone")).json()["precision"]
    assert info["mode"] == "fp32" and "no agreement gate recorded" in info["reason"]


@pytest.mark.asyncio
async def test_int8_on_cuda_fails_start_up_with_a_reason(make_server, bundle):
    srv = await make_server(bundle_dir=bundle[0], runtime_factory=None, precision="int8", device="cuda", wait=False)
    with pytest.raises(Exception, match="start-up failed .PrecisionError."):
        await srv.service.wait_ready(20)
    assert "int8" in srv.service.failure and "CPU only" in srv.service.failure


def test_unknown_precision_is_a_settings_error():
    with pytest.raises(ValidationError, match="unknown precision 'fp16'"):
        Settings(precision="fp16")
    assert Settings(precision="fp32/int8").precision == "fp32/int8"

"""End to end with a REAL tiny random backbone bundle and real task packages (no fakes).

Answers under concurrency and hot swaps are checked against one-by-one calls of a second, independent
``Runtime`` loaded from the same bundle.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
import pytest_asyncio
import torch

from speechprompt.audio import decode_audio
from speechprompt.backbone import make_random_bundle
from speechprompt.package import PackageMeta, new_package
from speechprompt.runtime import Runtime

from .http_helpers import ADMIN, WAV, wait_until, wav_bytes

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle") / "tiny"
    fingerprint = make_random_bundle(folder, seed=3)
    return folder, fingerprint


def real_package(bundle, task, labels, seed, roll: int = 0, readout: str = "separator"):
    """A package for the tiny backbone; ``roll`` rotates the class rows of the verbalizer (a version whose
    answer differs from the unrolled one for every clip); ``readout``: where its label is read."""
    _, fingerprint = bundle
    g = torch.Generator().manual_seed(seed)
    L, plen, d, V = 2, 5, 32, 24
    verb = torch.randn(len(labels) + 4, V, generator=g) * 3
    verb[4:] = torch.roll(verb[4:], roll, dims=0)
    meta = PackageMeta(task=task, labels=tuple(labels), backbone_fingerprint=fingerprint, prompt_length=plen,
                       readout=readout)
    return new_package(meta, torch.randn(L, plen, d, generator=g), torch.randn(L, plen, d, generator=g),
                       torch.randn(plen, d, generator=g), torch.randn(d, generator=g), verb)


class Reference:
    """One-by-one answers from an independent runtime: probs[(clip bytes, task@version)]."""

    def __init__(self, folder, packages):
        self.rt = Runtime.load(folder)
        for p in packages:
            self.rt.add_task(f"{p.meta.task}@{p.version}", p)

    def probs(self, data: bytes, key: str) -> np.ndarray:
        units = self.rt.extract_units([decode_audio(data).samples])[0].units
        return self.rt.classify([units], [key])[0]


def check(body: dict, ref: Reference, data: bytes, labels) -> None:
    want = ref.probs(data, f"{body['task']}@{body['version']}")
    assert body["label"] == labels[int(np.argmax(want))]
    got = {s["label"]: s["score"] for s in body["scores"]}
    np.testing.assert_allclose([got[lbl] for lbl in labels if lbl in got],
                               [want[i] for i, lbl in enumerate(labels) if lbl in got], atol=2e-5)


@pytest_asyncio.fixture
async def real_server(make_server, bundle):
    async def start(**overrides):
        return await make_server(bundle_dir=bundle[0], runtime_factory=None, **overrides)
    return start


async def test_concurrent_mixed_tasks_match_one_by_one_calls(real_server, bundle):
    srv = await real_server(max_batch_wait_ms=20, max_batch_rows=16)
    tasks = {"kws": ("yes", "no", "up", "down", "left"), "emo": ("happy", "sad", "angry"), "vad": ("speech", "none")}
    pkgs = {t: real_package(bundle, t, labels, seed=i, readout="mean" if t == "emo" else "separator")
            for i, (t, labels) in enumerate(tasks.items())}  # rows of both read-outs in the same forwards
    for t, p in pkgs.items():
        assert (await srv.client.put(f"/v1/tasks/{t}", content=p.data, headers=ADMIN)).status_code == 201
    assert [(await srv.client.get(f"/v1/tasks/{t}")).json()["readout"] for t in tasks] == ["separator", "mean",
                                                                                           "separator"]
    ref = Reference(bundle[0], pkgs.values())
    rnd = random.Random(0)
    clips = [wav_bytes(rnd.uniform(0.1, 0.8), rate=rnd.choice([8000, 16000, 44100]), channels=rnd.choice([1, 2]),
                       seed=i) for i in range(24)]
    jobs = [(clip, rnd.choice(list(tasks))) for clip in clips] + [(clips[0], "kws"), (clips[1], "emo")]
    responses = await asyncio.gather(*(srv.client.post(f"/v1/tasks/{t}/classify?top_k=5", content=c, headers=WAV)
                                       for c, t in jobs))
    for (clip, task), r in zip(jobs, responses, strict=True):
        assert r.status_code == 200, r.text
        assert r.json()["version"] == pkgs[task].version
        check(r.json(), ref, clip, tasks[task])
    assert srv.service.batcher.batches < len(jobs)  # requests really shared forwards
    # one clip, three tasks, in one request: the same answers as the single-task calls
    r = await srv.client.post("/v1/classify?tasks=vad,kws,emo", content=clips[5], headers=WAV)
    results = r.json()["results"]
    assert [x["task"] for x in results] == ["vad", "kws", "emo"]
    for res in results:
        check(res, ref, clips[5], tasks[res["task"]])


async def test_hot_swap_under_load_answers_match_the_version_they_name(real_server, bundle):
    srv = await real_server(max_batch_wait_ms=5)
    labels = ("a", "b", "c", "d")
    v1 = real_package(bundle, "kws", labels, seed=11)
    v2 = real_package(bundle, "kws", labels, seed=11, roll=1)  # same prompts, every answer moves one class
    ref = Reference(bundle[0], [v1, v2])
    await srv.client.put("/v1/tasks/kws", content=v1.data, headers=ADMIN)
    clips = [wav_bytes(0.3, seed=i) for i in range(6)]
    seen: list[tuple[bytes, dict]] = []
    stop = asyncio.Event()

    async def client(k: int) -> None:
        i = k
        while not stop.is_set():
            clip = clips[i % len(clips)]
            r = await srv.client.post("/v1/tasks/kws/classify", content=clip, headers=WAV)
            assert r.status_code == 200, r.text
            seen.append((clip, r.json()))
            i += 1

    clients = [asyncio.create_task(client(k)) for k in range(4)]
    for version in (v2, v1, v2):
        await asyncio.sleep(0.15)
        r = await srv.client.put("/v1/tasks/kws", content=version.data, headers=ADMIN)
        assert r.status_code == 201, r.text
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*clients)
    assert {body["version"] for _, body in seen} == {v1.version, v2.version}
    for clip, body in seen:
        check(body, ref, clip, labels)
    r = await srv.client.post("/v1/tasks/kws/classify", content=clips[0], headers=WAV)
    assert r.json()["version"] == v2.version
    await wait_until(lambda: srv.service.registry.describe("kws")["resident_versions"] == [v2.version])


async def test_startup_loads_the_store_and_the_watcher_adds_dropped_packages(real_server, bundle, tmp_path):
    p1 = real_package(bundle, "kws", ("yes", "no"), seed=1)
    p2 = real_package(bundle, "emo", ("happy", "sad"), seed=2)
    (tmp_path / "store" / "kws").mkdir(parents=True)
    (tmp_path / "store" / "kws" / "kws.safetensors").write_bytes(p1.data)
    srv = await real_server(store_poll_interval_s=0.02)
    assert (await srv.client.get("/v1/tasks/kws")).json()["state"] == "resident"
    (tmp_path / "store" / "emo").mkdir()
    (tmp_path / "store" / "emo" / "emo.safetensors").write_bytes(p2.data)
    await wait_until(lambda: "emo" in srv.service.registry.names())
    ref = Reference(bundle[0], [p2])
    data = wav_bytes(0.5, seed=4)
    r = await srv.client.post("/v1/tasks/emo/classify", content=data, headers=WAV)
    assert r.status_code == 200 and r.json()["version"] == p2.version
    check(r.json(), ref, data, ("happy", "sad"))
    info = (await srv.client.get("/v1/backbone")).json()
    assert info["fingerprint"] == bundle[1] and r.json()["backbone"] == bundle[1]


async def test_clips_longer_than_the_unit_lm_positions_are_413_not_500(make_server, tmp_path):
    from speechprompt.unit_lm import UnitLMConfig

    folder = tmp_path / "short-lm"
    fp = make_random_bundle(folder, seed=4, lm_cfg=UnitLMConfig(vocab_size=24, embed_dim=32, ffn_dim=64, layers=2,
                                                                 heads=4, max_positions=30))
    srv = await make_server(bundle_dir=folder, runtime_factory=None)
    limit = srv.service.max_audio_seconds
    assert limit == pytest.approx((26 * 320 + 400) / 16000)
    pkg = real_package((folder, fp), "kws", ("yes", "no"), seed=1)
    await srv.client.put("/v1/tasks/kws", content=pkg.data, headers=ADMIN)
    for rate in (16000, 44100, 8000):  # the longest accepted clip still fits the LM at any input rate
        r = await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(limit, rate=rate), headers=WAV)
        assert r.status_code == 200, r.text
        assert r.json()["audio"]["units"] <= 28
    r = await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(limit + 0.05), headers=WAV)
    assert r.status_code == 413 and r.json()["type"] == "/problems/audio_too_long"

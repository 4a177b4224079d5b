"""One bad package must never hurt other users: metadata validated at upload, overflowing weights refused by a
trial forward, a failing task isolated in a multi-task request, deep nesting answered with a 4xx."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from speechprompt.backbone import make_random_bundle
from speechprompt.package import PackageMeta, new_package

from .fakes import FakeRuntime, make_package
from .http_helpers import ADMIN, WAV, assert_problem, wav_bytes

pytestmark = pytest.mark.asyncio


def with_meta(data: bytes, **fields: str) -> bytes:
    """A package's bytes with metadata fields replaced by raw header strings."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"].update(fields)
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data[8 + n:]


@pytest.mark.parametrize("training", ["[1, 2]", '"text"', "3"])
async def test_training_metadata_that_is_not_an_object_is_refused_with_422(make_server, training):
    srv = await make_server(FakeRuntime())
    body = assert_problem(await srv.client.put("/v1/tasks/kws", content=with_meta(make_package("kws").data,
                                                                                  training=training),
                                               headers=ADMIN), 422, "invalid_package")
    assert "training" in body["detail"] and "JSON object" in body["accepted"]
    assert (await srv.client.get("/v1/tasks")).json() == {"tasks": []}


async def test_a_bad_stored_package_never_makes_the_task_list_fail_even_after_restart(make_server, tmp_path):
    good = make_package("kws", seed=1)
    bad = with_meta(make_package("emo", seed=2).data, training="[1, 2]")  # put there by hand / an old server
    for task, data in (("kws", good.data), ("emo", bad)):
        (tmp_path / "store" / task).mkdir(parents=True)
        (tmp_path / "store" / task / "pkg.safetensors").write_bytes(data)
    srv = await make_server(FakeRuntime())
    r = await srv.client.get("/v1/tasks")
    assert r.status_code == 200, r.text
    states = {t["task"]: t["state"] for t in r.json()["tasks"]}
    assert states == {"emo": "failed", "kws": "resident"}
    assert (await srv.client.get("/v1/tasks/emo")).json()["error"]["code"] == "invalid_package"
    r = await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(), headers=WAV)
    assert r.status_code == 200


@pytest.mark.parametrize("spelling", ["0{}", " {}", "+{}"])
async def test_old_spellings_stay_served_from_the_store_but_are_refused_in_a_new_upload(make_server, tmp_path,
                                                                                      spelling):
    """Servers until 2026-12-07 accepted "05", " 5" or "+5" for a whole number at upload; after an upgrade such a
    stored version is still served, explained and reloaded, while a new upload of the same bytes is a 422."""
    data = make_package("kws", seed=1).data
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + n])["__metadata__"]
    old = with_meta(data, **{k: spelling.format(meta[k]) for k in ("prompt_length", "format_version")})
    (tmp_path / "store" / "kws").mkdir(parents=True)
    (tmp_path / "store" / "kws" / "old.safetensors").write_bytes(old)
    srv = await make_server(FakeRuntime())
    desc = (await srv.client.get("/v1/tasks/kws")).json()
    assert desc["state"] == "resident" and desc["prompt_length"] == int(meta["prompt_length"]), desc
    assert desc["version"] == hashlib.sha256(old).hexdigest()[:16]  # the stored bytes' own version
    r = await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(), headers=WAV)
    assert r.status_code == 200 and r.json()["version"] == desc["version"], r.text
    r = await srv.client.get("/v1/tasks/kws/verbalizer?top_k=2")  # read back from the store, as explain does
    assert r.status_code == 200 and r.json()["version"] == desc["version"], r.text
    body = assert_problem(await srv.client.put("/v1/tasks/kws", content=old, headers=ADMIN), 422, "invalid_package")
    assert "must be a whole number written in decimal digits" in body["detail"]
    assert (await srv.client.get("/v1/tasks/kws")).json()["version"] == desc["version"]  # the served one kept


def with_key_twice(data: bytes, where: str) -> bytes:
    """A package's bytes whose header (``where="header"``: ``task`` inside ``__metadata__``) or whose ``training``
    field names a key twice, the last copy carrying the value the package was made with."""
    n = int.from_bytes(data[:8], "little")
    raw = data[8:8 + n].decode().rstrip()
    meta = json.loads(raw)["__metadata__"]
    if where == "header":
        raw = raw.replace('"__metadata__":{', '"__metadata__":{"task":"other",', 1)
    else:
        training = json.loads(meta["training"])
        twice = "{" + "".join(f'"{k}": -1, ' for k in training) + json.dumps(training)[1:]
        raw = raw.replace(json.dumps(meta["training"]), json.dumps(twice), 1)
    assert raw != data[8:8 + n].decode().rstrip(), where
    return len(raw.encode()).to_bytes(8, "little") + raw.encode() + data[8 + n:]


@pytest.mark.parametrize("where", ["header", "training"])
async def test_a_stored_package_naming_a_key_twice_is_served_with_the_last_copy_but_refused_in_an_upload(
        make_server, tmp_path, where):
    """Servers until 2026-12-07 stored packages whose JSON named a key twice (Python's json keeps the last copy);
    after an upgrade such a version is still served, read as they read it, while a new upload is refused (415 for a key
    twice in the header, 422 in a metadata field)."""
    old = with_key_twice(make_package("kws", seed=1).data, where)
    (tmp_path / "store" / "kws").mkdir(parents=True)
    (tmp_path / "store" / "kws" / "old.safetensors").write_bytes(old)
    srv = await make_server(FakeRuntime())
    desc = (await srv.client.get("/v1/tasks/kws")).json()
    assert desc["state"] == "resident" and desc["version"] == hashlib.sha256(old).hexdigest()[:16], desc
    assert desc["training"] == {"seed": 1}  # the last copy of each repeated key, as make_package wrote it
    r = await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(), headers=WAV)
    assert r.status_code == 200 and r.json()["version"] == desc["version"], r.text
    body = assert_problem(await srv.client.put("/v1/tasks/kws", content=old, headers=ADMIN), 422 if where ==
                          "training" else 415, "invalid_package" if where == "training" else "not_safetensors")
    assert "twice" in body["detail"], body
    assert (await srv.client.get("/v1/tasks/kws")).json()["version"] == desc["version"]  # the served one kept


async def test_labels_sent_as_a_json_string_are_refused_not_split_into_characters(make_server):
    srv = await make_server(FakeRuntime())
    data = with_meta(make_package("kws", labels=("a", "b", "c")).data, labels='"abc"')
    body = assert_problem(await srv.client.put("/v1/tasks/kws", content=data, headers=ADMIN), 422, "invalid_package")
    assert "labels" in body["detail"]


@pytest.mark.parametrize("field", ["training", "labels"])
async def test_deeply_nested_metadata_is_a_clear_422(make_server, field):
    srv = await make_server(FakeRuntime())
    data = with_meta(make_package("kws").data, **{field: "[" * 50_000 + "]" * 50_000})
    body = assert_problem(await srv.client.put("/v1/tasks/kws", content=data, headers=ADMIN), 422, "invalid_package")
    assert "nested too deeply" in body["detail"]


async def test_a_deeply_nested_safetensors_header_is_a_clear_415(make_server):
    srv = await make_server(FakeRuntime())
    header = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    data = len(header).to_bytes(8, "little") + header
    body = assert_problem(await srv.client.put("/v1/tasks/kws", content=data, headers=ADMIN), 415, "not_safetensors")
    assert "nested too deeply" in body["detail"]


async def test_prompt_length_and_classes_over_the_limits_are_a_clear_422(make_server):
    srv = await make_server(FakeRuntime(), max_prompt_length=3, max_classes=4)
    r = await srv.client.put("/v1/tasks/kws", content=make_package("kws", prompt_length=4).data, headers=ADMIN)
    assert "prompt_length 4 is over this server's limit of 3" in assert_problem(r, 422, "package_over_limit")["detail"]
    labels = tuple(f"c{i}" for i in range(5))
    r = await srv.client.put("/v1/tasks/kws", content=make_package("kws", labels=labels).data, headers=ADMIN)
    assert "5 labels are over this server's limit of 4" in assert_problem(r, 422, "package_over_limit")["detail"]
    r = await srv.client.put("/v1/tasks/kws", content=make_package("kws", prompt_length=3).data, headers=ADMIN)
    assert r.status_code == 201


async def test_a_task_with_non_finite_scores_fails_alone_in_a_multi_task_request(make_server):
    rt = FakeRuntime()
    srv = await make_server(rt)
    good, bad = make_package("kws", seed=1), make_package("emo", seed=2)
    for p in (good, bad):
        assert (await srv.client.put(f"/v1/tasks/{p.meta.task}", content=p.data, headers=ADMIN)).status_code == 201
    rt.tasks[f"emo@{bad.version}"] = np.full_like(rt.tasks[f"emo@{bad.version}"], np.inf)  # overflows at serve time
    r = await srv.client.post("/v1/classify?tasks=kws,emo", content=wav_bytes(), headers=WAV)
    assert r.status_code == 200, r.text
    kws, emo = r.json()["results"]
    assert kws["task"] == "kws" and kws["label"] in ("yes", "no", "up")
    assert emo["task"] == "emo" and emo["error"]["status"] == 503 and "non-finite" in emo["error"]["detail"]
    assert_problem(await srv.client.post("/v1/tasks/emo/classify", content=wav_bytes(), headers=WAV),
                   503, "task_unavailable")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle") / "tiny"
    return folder, make_random_bundle(folder, seed=3)


def tiny_package(fingerprint: str, task: str, scale: float = 1.0):
    g = torch.Generator().manual_seed(1)
    L, plen, d, V = 2, 5, 32, 24
    meta = PackageMeta(task=task, labels=("a", "b", "c"), backbone_fingerprint=fingerprint, prompt_length=plen)
    return new_package(meta, torch.randn(L, plen, d, generator=g), torch.randn(L, plen, d, generator=g),
                       torch.randn(plen, d, generator=g), torch.randn(d, generator=g),
                       torch.randn(7, V, generator=g).clamp(-1, 1) * scale)


async def test_finite_but_huge_weights_are_refused_by_a_trial_forward(make_server, bundle):
    folder, fingerprint = bundle
    srv = await make_server(bundle_dir=folder)
    ok = tiny_package(fingerprint, "kws")
    assert (await srv.client.put("/v1/tasks/kws", content=ok.data, headers=ADMIN)).status_code == 201
    huge = tiny_package(fingerprint, "kws", scale=3e38)
    assert bool(torch.isfinite(huge.verbalizer).all())  # finite: read_package alone accepts it
    body = assert_problem(await srv.client.put("/v1/tasks/kws", content=huge.data, headers=ADMIN),
                          422, "non_finite_weights")
    assert "probe" in body["detail"]
    r = await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(), headers=WAV)
    assert r.status_code == 200 and r.json()["version"] == ok.version
    assert f"kws@{huge.version}" not in srv.service.runtime.bank



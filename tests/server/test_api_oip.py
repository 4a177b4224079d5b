"""Open Inference Protocol (KServe v2 REST) against a REAL uvicorn process, spoken to by the real Triton HTTP
client (``tritonclient[http]``): JSON and binary tensor data, FP32 ``audio`` and BYTES ``audio_file``, a batch of
4; every answer is compared with ``/v1`` classify of the same clip on the same server (same scores, same
version), and bad inputs are 4xx v2 error JSON."""

from __future__ import annotations

import base64
import io
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from .helpers import make_package
from .http_helpers import WAV, wav_bytes
from .live import ADMIN, LiveServer

pytestmark = pytest.mark.slow

TASK = "oip-task"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("oip")) as srv:
        pkg = make_package(TASK, 7, **srv.dims())
        r = srv.http.put(f"/v1/tasks/{TASK}", content=pkg.data, headers=ADMIN)
        assert r.status_code == 201, r.text
        srv.version = r.json()["version"]
        yield srv


@pytest.fixture(scope="module")
def client(live):
    c = triton.InferenceServerClient(live.url.removeprefix("http://"))
    yield c
    c.close()


def pcm(seconds: float, seed: int, rate: int = 16000) -> np.ndarray:
    """float32 [N] samples: the decoded content of ``wav_bytes(seconds, rate, seed=seed)``."""
    samples, _ = sf.read(io.BytesIO(wav_bytes(seconds, rate, seed=seed)), dtype="float32")
    return samples


def float_wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def v1(live, data: bytes) -> dict:
    """/v1 classify of ``data``: label, version and every class's score in label order."""
    r = live.http.post(f"/v1/tasks/{TASK}/classify?top_k=1000", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    return {"label": body["label"], "version": body["version"],
            "scores": {s["label"]: s["score"] for s in body["scores"]}}


def check_rows(live, result, files: list[bytes]) -> None:
    """Each row of a v2 result equals /v1 classify of the matching file; the version is reported."""
    response = result.get_response()
    labels = response["parameters"]["labels"]
    scores = result.as_numpy("scores")
    assert scores.dtype == np.float32 and scores.shape == (len(files), len(labels))
    got_labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    for row, data in enumerate(files):
        ref = v1(live, data)
        assert got_labels[row] == ref["label"]
        np.testing.assert_allclose(scores[row], [ref["scores"][lb] for lb in labels], rtol=1e-5, atol=1e-6)
        assert response["parameters"]["task_versions"][row] == ref["version"] == live.version
    assert response["model_version"] == response["parameters"]["task_version"] == live.version
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_health_and_metadata(client, live):
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata(TASK)
    assert meta["name"] == TASK and meta["versions"] == [live.version]
    assert meta["parameters"]["labels"] == ["c0", "c1", "c2"]
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"audio": "FP32", "audio_file": "BYTES"}
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"label": [-1], "scores": [-1, 3]}
    assert client.is_model_ready(TASK)
    assert not client.is_model_ready("no-such-task")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_fp32_audio_batch_of_4_equals_v1(client, live, binary):
    rows = np.stack([pcm(0.5, seed) for seed in range(4)])  # [4, 8000] f32 @16 kHz
    inp = triton.InferInput("audio", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=binary)
    outs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "scores")]
    result = client.infer(TASK, [inp], outputs=outs, request_id="req-1")
    assert result.get_response()["id"] == "req-1"
    check_rows(live, result, [float_wav(r) for r in rows])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_fp32_audio_at_another_sample_rate(client, live, binary):
    rows = pcm(0.4, 3, rate=8000)[None, :]  # [1, 3200] f32 @8 kHz, resampled by the server like a file
    inp = triton.InferInput("audio", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=binary)
    outs = [triton.InferRequestedOutput("scores", binary_data=binary),
            triton.InferRequestedOutput("label", binary_data=binary)]
    result = client.infer(TASK, [inp], outputs=outs, parameters={"sample_rate": 8000})  # request parameters
    check_rows(live, result, [float_wav(rows[0], 8000)])


def test_audio_file_bytes_batch_of_4_binary(client, live):
    files = [wav_bytes(0.3, seed=1), wav_bytes(0.7, 44100, channels=2, seed=2), wav_bytes(0.5, seed=3, fmt="FLAC"),
             wav_bytes(1.0, 22050, seed=4)]  # different lengths, rates and formats in one batch
    inp = triton.InferInput("audio_file", [4], "BYTES")
    inp.set_data_from_numpy(np.array(files, dtype=np.object_), binary_data=True)
    result = client.infer(TASK, [inp])  # no outputs named: all of them, as JSON
    check_rows(live, result, files)


def test_audio_file_json_is_base64_text(live):
    files = [wav_bytes(0.4, seed=5), wav_bytes(0.6, seed=6)]
    body = {"inputs": [{"name": "audio_file", "datatype": "BYTES", "shape": [2],
                        "data": [base64.b64encode(f).decode() for f in files]}]}
    r = live.http.post(f"/v2/models/{TASK}/infer", json=body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    for row, data in enumerate(files):
        ref = v1(live, data)
        assert out["label"]["data"][row] == ref["label"]
        labels = r.json()["parameters"]["labels"]
        np.testing.assert_allclose(out["scores"]["data"][row], [ref["scores"][lb] for lb in labels], rtol=1e-5)


def status_of(call) -> int:
    with pytest.raises(InferenceServerException) as info:
        call()
    return int(info.value.status())


def test_bad_inputs_are_4xx_v2_errors(client, live):
    good = triton.InferInput("audio", [1, 4000], "FP32")
    good.set_data_from_numpy(pcm(0.25, 1)[None, :])
    assert status_of(lambda: client.infer("no-such-task", [good])) == 404
    assert status_of(lambda: client.infer("Bad Name!", [good])) == 400
    short = triton.InferInput("audio", [1, 100], "FP32")  # 6 ms: shorter than one encoder window
    short.set_data_from_numpy(np.zeros((1, 100), np.float32))
    assert status_of(lambda: client.infer(TASK, [short])) == 422
    loud = triton.InferInput("audio", [1, 4000], "FP32")  # unscaled samples
    loud.set_data_from_numpy(np.full((1, 4000), 1e6, np.float32))
    assert status_of(lambda: client.infer(TASK, [loud])) == 422
    junk = triton.InferInput("audio_file", [1], "BYTES")
    junk.set_data_from_numpy(np.array([b"not audio at all" * 10], dtype=np.object_))
    assert status_of(lambda: client.infer(TASK, [junk])) == 415
    ints = triton.InferInput("audio", [1, 4000], "INT16")
    ints.set_data_from_numpy(np.zeros((1, 4000), np.int16))
    assert status_of(lambda: client.infer(TASK, [ints])) == 400
    # the raw answers: v2 error JSON, never a problem document and never a 5xx
    cases = [({"inputs": []}, 400), ({"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1, 3],
                                                  "data": [0.0, 0.1]}]}, 400),
             ({"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1, 4000], "data": [0.0] * 4000,
                           "parameters": {"sample_rate": 5}}]}, 400),
             ({"inputs": [{"name": "audio", "datatype": "FP32", "shape": [65, 400]}]}, 400),
             ({"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1, 400], "data": [0.1] * 400}],
               "parameters": ["sample_rate", 8000]}, 400),
             ({"inputs": [{"name": "audio_file", "datatype": "BYTES", "shape": [1], "data": ["AAAA"],
                           "parameters": "binary"}]}, 400),
             ({"inputs": [{"name": "audio_file", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}, 400),
             ({"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1, 400], "data": [0.1] * 400}],
               "outputs": [{"name": "probabilities"}]}, 400)]
    for body, status in cases:
        r = live.http.post(f"/v2/models/{TASK}/infer", json=body)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json" and set(r.json()) == {"error"}
    r = live.http.post(f"/v2/models/{TASK}/infer", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = live.http.post(f"/v2/models/{TASK}/infer", content=json.dumps({"inputs": []}).encode(),
                       headers={"Inference-Header-Content-Length": "999"})
    assert r.status_code == 400 and "error" in r.json()


def test_v2_requests_count_in_the_same_metrics(client, live):
    def served() -> float:
        text = live.http.get("/metrics").text
        m = re.search(rf'sp_requests_total{{status="200",task="{TASK}"}} ([0-9.e+]+)', text)
        return float(m.group(1)) if m else 0.0

    before = served()
    inp = triton.InferInput("audio", [2, 4000], "FP32")
    inp.set_data_from_numpy(np.stack([pcm(0.25, 8), pcm(0.25, 9)]))
    client.infer(TASK, [inp])
    assert served() == before + 2  # one per clip, as /v1 counts one per clip


def test_versioned_routes_serve_only_the_current_version(client, live):
    """tritonclient's ``model_version`` goes to /v2/models/{task}/versions/{v}/...: the current version answers
    like the unversioned routes; any other version is 404 for metadata, ready and infer (before the body)."""
    assert client.get_model_metadata(TASK, model_version=live.version)["versions"] == [live.version]
    assert client.is_model_ready(TASK, model_version=live.version)
    assert not client.is_model_ready(TASK, model_version="0" * 16)
    rows = pcm(0.5, 11)[None, :]
    inp = triton.InferInput("audio", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows, binary_data=True)
    check_rows(live, client.infer(TASK, [inp], model_version=live.version), [float_wav(rows[0])])
    with pytest.raises(InferenceServerException, match="does not serve version") as err:
        client.infer(TASK, [inp], model_version="0" * 16)
    assert err.value.status() == "404"
    r = live.http.get(f"/v2/models/{TASK}/versions/{'0' * 16}")
    assert r.status_code == 404 and live.version in r.json()["error"]


VOICE = "/usr/share/sounds/alsa/Front_Center.wav"  # a human voice (alsa-utils; a test set)


@pytest.mark.skipif(not os.path.exists(VOICE), reason="alsa-utils recordings missing")
def test_parameters_speech_trim_is_v1s_query_parameter(client, live):
    """``parameters.speech_trim`` on the request, on a voice with 1 s of -60 dBFS room tone each side: ``on`` cuts
    it (the VAD runs once per clip) and gives /v1's ``speech_trim=on`` scores, which differ from the untrimmed ones;
    ``off`` and the default run no VAD; another value is a 400 v2 error."""
    import soxr

    def vad_runs() -> float:
        text = live.http.get("/metrics").text
        return next(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                    if ln.startswith("sp_speech_trim_duration_seconds_count"))

    voice, rate = sf.read(VOICE, dtype="float32")
    voice = soxr.resample(voice, rate, 16000).astype(np.float32)
    tone = np.random.default_rng(2).uniform(-1e-3, 1e-3, 32000).astype(np.float32)
    clip = np.concatenate([tone[:16000], voice, tone[16000:]])
    inp = triton.InferInput("audio", [1, clip.size], "FP32")
    inp.set_data_from_numpy(clip[None, :])

    def v1_scores(mode: str) -> tuple[dict, dict]:
        r = live.http.post(f"/v1/tasks/{TASK}/classify?top_k=1000&speech_trim={mode}", content=float_wav(clip),
                           headers=WAV)
        return {s["label"]: s["score"] for s in r.json()["scores"]}, r.json().get("speech_trim")

    (trimmed, facts), (whole, _) = v1_scores("on"), v1_scores("off")
    assert facts["cut"] is True and trimmed != pytest.approx(whole, rel=0.1)  # (saturated random prompts)
    before = vad_runs()
    for mode, ref, runs in (("on", trimmed, 1), ("off", whole, 0), (None, whole, 0)):
        got = client.infer(TASK, [inp], parameters={"speech_trim": mode} if mode else None)
        labels = got.get_response()["parameters"]["labels"]
        np.testing.assert_allclose(got.as_numpy("scores")[0], [ref[lb] for lb in labels], rtol=1e-5, atol=1e-6)
        assert vad_runs() == before + runs, mode
        before = vad_runs()
    body = {"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1, 400], "data": [0.1] * 400}],
            "parameters": {"speech_trim": "always"}}
    r = live.http.post(f"/v2/models/{TASK}/infer", json=body)
    assert r.status_code == 400 and "speech_trim" in r.json()["error"] and "'on'" in r.json()["error"]
    body = {"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1, 400], "data": [0.1] * 400,
                        "parameters": {"speech_trim": "on"}}]}  # on the input, where it would be ignored
    r = live.http.post(f"/v2/models/{TASK}/infer", json=body)
    assert r.status_code == 400 and "a parameter of the request, not of an input" in r.json()["error"]

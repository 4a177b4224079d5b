"""HTTP classify endpoints (fake runtime): answers, audio facts, timings, cache, multi-task, audio errors."""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio

from speechprompt.audio import decode_audio

from .fakes import FakeRuntime, expected_probs, fake_units, make_package
from .http_helpers import ADMIN, WAV, assert_problem, wav_bytes

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def srv(make_server):
    srv = await make_server(FakeRuntime())
    srv.kws = make_package("kws", labels=("yes", "no", "up", "down"), seed=1)
    srv.emo = make_package("emo", labels=("happy", "sad"), seed=2)
    for p in (srv.kws, srv.emo):
        r = await srv.client.put(f"/v1/tasks/{p.meta.task}", content=p.data, headers=ADMIN)
        assert r.status_code == 201 and r.json() == {"task": p.meta.task, "version": p.version, "created": True}
    return srv


async def test_classify_raw_body(srv):
    data = wav_bytes(0.5, rate=22050, channels=2, seed=3)
    r = await srv.client.post("/v1/tasks/kws/classify?top_k=3", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    probs = expected_probs(srv.kws, data)
    order = np.argsort(-probs)
    assert body["task"] == "kws" and body["version"] == srv.kws.version
    assert body["backbone"] == srv.service.runtime.fingerprint
    assert body["label"] == srv.kws.meta.labels[order[0]]
    assert [s["label"] for s in body["scores"]] == [srv.kws.meta.labels[i] for i in order[:3]]
    np.testing.assert_allclose([s["score"] for s in body["scores"]], probs[order[:3]], rtol=1e-5)
    units = fake_units(decode_audio(data).samples)
    assert body["audio"] == {"input_sample_rate": 22050, "input_channels": 2, "input_format": "WAV",
                             "duration_s": pytest.approx(0.5, abs=1e-3), "resampled": True,
                             "frames": units.frames, "units": len(units.units)}
    t = body["timings"]
    assert set(t) == {"decode_ms", "speech_trim_ms", "queue_ms", "encode_ms", "lm_ms", "total_ms"}
    assert all(v >= 0 for v in t.values()) and t["total_ms"] >= t["decode_ms"] + t["queue_ms"]
    assert t["speech_trim_ms"] == 0.0  # no task of the request names a speech trim
    assert body["units_cache_hit"] is False


async def test_multipart_and_octet_stream_give_the_same_answer_and_hit_the_cache(srv):
    data = wav_bytes(0.4, seed=5)
    a = (await srv.client.post("/v1/tasks/kws/classify", files={"audio": ("x.bin", data, "text/plain")})).json()
    b = (await srv.client.post("/v1/tasks/kws/classify", content=data,
                               headers={"Content-Type": "application/octet-stream"})).json()
    assert a["scores"] == b["scores"] and len(a["scores"]) == 4  # top_k 5 clamped to the 4 classes
    assert (a["units_cache_hit"], b["units_cache_hit"]) == (False, True)
    assert b["timings"]["encode_ms"] == 0.0
    assert [n for what, n in srv.service.runtime.calls if what == "encode"] == [1]


async def test_multi_task_encodes_once_and_reports_per_task_errors(srv):
    data = wav_bytes(0.4, seed=6)
    rt = srv.service.runtime
    r = await srv.client.post("/v1/classify?tasks=kws,emo,nope,Bad!,kws&top_k=2", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["task"] for x in body["results"]] == ["kws", "emo", "nope", "Bad!"]
    for res, pkg in zip(body["results"][:2], (srv.kws, srv.emo), strict=True):
        probs = expected_probs(pkg, data)
        assert res["version"] == pkg.version and res["label"] == pkg.meta.labels[int(np.argmax(probs))]
        np.testing.assert_allclose(res["scores"][0]["score"], probs.max(), rtol=1e-5)
    assert body["results"][2]["error"]["type"] == "/problems/unknown_task"
    assert body["results"][3]["error"]["status"] == 400
    assert rt.rows() == [2] and [n for what, n in rt.calls if what == "encode"] == [1]  # one clip, one forward
    assert body["audio"]["units"] > 0 and body["timings"]["lm_ms"] >= 0


@pytest.mark.parametrize("query, accepted", [
    ("top_k=0", "top_k: an integer, >= 1, <= 1000"), ("top_k=abc", "top_k: an integer, >= 1, <= 1000"),
    ("long_audio=chop", "long_audio: one of: reject, truncate, window"),
    ("window=-1", "window: a number, > 0, <= 3600, finite"),
    ("top_k=abc&explain_spans=0", "top_k: an integer, >= 1, <= 1000; explain_spans: an integer, >= 1, <= 64")])
async def test_bad_parameters_are_400_and_say_what_is_accepted(srv, query, accepted):
    """The ``accepted`` member comes from the route's declaration (server/param_help.py), as for every problem:
    type and bounds first, then the parameter's description."""
    r = await srv.client.post(f"/v1/tasks/kws/classify?{query}", content=wav_bytes(), headers=WAV)
    got = assert_problem(r, 400, "invalid_request")["accepted"]
    assert got.startswith(accepted.split("; ")[0] + " (") and got.endswith(")")
    assert all(f"; {want}" in got for want in accepted.split("; ")[1:])


async def test_bad_names_and_unknown_tasks(srv):
    assert_problem(await srv.client.post("/v1/tasks/Bad!/classify", content=wav_bytes(), headers=WAV),
                   400, "invalid_task_name")
    body = assert_problem(await srv.client.post("/v1/tasks/nope/classify", content=wav_bytes(), headers=WAV),
                          404, "unknown_task")
    assert body["accepted"] == ["emo", "kws"]
    r = await srv.client.post("/v1/tasks/..%2Fx/classify", content=wav_bytes(), headers=WAV)
    assert r.status_code in (400, 404) and r.headers["content-type"] == "application/problem+json"
    assert_problem(await srv.client.post("/v1/classify?tasks=,", content=wav_bytes(), headers=WAV),
                   400, "bad_request")
    missing = assert_problem(await srv.client.post("/v1/classify", content=wav_bytes(), headers=WAV), 400,
                             "invalid_request")
    assert missing["accepted"].startswith("tasks: text (comma-separated task names")
    assert missing["errors"] == [{"loc": ["query", "tasks"], "msg": "Field required"}]  # api.md's 400 row


async def test_an_invalid_request_lists_each_failing_field_in_errors(srv):
    r = await srv.client.post("/v1/tasks/kws/classify?top_k=0&gate_threshold=abc", content=wav_bytes(),
                              headers=WAV)
    body = assert_problem(r, 400, "invalid_request")
    assert sorted(tuple(e["loc"]) for e in body["errors"]) == [("query", "gate_threshold"), ("query", "top_k")]
    assert body["detail"] == "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in body["errors"])
    from server.schemas import Problem

    assert Problem.model_validate(body).errors[0].msg == body["errors"][0]["msg"]  # the documented schema


async def test_audio_errors(srv):
    post = lambda data, headers=WAV: srv.client.post("/v1/tasks/kws/classify", content=data, headers=headers)  # noqa: E731
    body = assert_problem(await post(b"RIFF....WAVEjunkjunk" * 10), 415, "undecodable_audio")
    assert "accepted" in body
    named_wav_but_mp3ish = assert_problem(await post(b"\xff\xfb\x90\x00" + bytes(600)), 415, "undecodable_audio")
    assert named_wav_but_mp3ish["detail"]
    assert_problem(await post(wav_bytes(), {"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    assert_problem(await post(wav_bytes(0.01)), 422, "audio_too_short")
    empty = assert_problem(await post(b""), 400, "bad_request")
    assert "no body" in empty["detail"] and "'audio'" in empty["detail"] and "accepted" in empty
    assert_problem(await srv.client.post("/v1/tasks/kws/classify", files={"audio": ("a.wav", b"")}), 400,
                   "bad_request")
    nan = np.full(4000, np.nan, dtype=np.float32)
    import io

    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, nan, 16000, format="WAV", subtype="FLOAT")
    assert_problem(await post(buf.getvalue()), 422, "non_finite_audio")
    r = await srv.client.post("/v1/tasks/kws/classify", files={"wrong": ("a.wav", wav_bytes(), "audio/wav")})
    assert_problem(r, 400, "bad_request")


async def test_size_limits(make_server):
    srv = await make_server(FakeRuntime(), max_upload_bytes=64 * 1024, max_audio_seconds=0.5)
    pkg = make_package("kws")
    await srv.client.put("/v1/tasks/kws", content=pkg.data, headers=ADMIN)
    big = wav_bytes(3.0, subtype="FLOAT")  # 192 kB > 64 kB
    assert_problem(await srv.client.post("/v1/tasks/kws/classify", content=big, headers=WAV),
                   413, "payload_too_large")
    r = await srv.client.post("/v1/tasks/kws/classify", files={"audio": ("a.wav", big, "audio/wav")})
    assert_problem(r, 413, "payload_too_large")
    body = assert_problem(await srv.client.post("/v1/tasks/kws/classify", content=wav_bytes(1.0), headers=WAV),
                          413, "audio_too_long")
    assert "0.5" in body["accepted"]


async def test_multipart_part_without_filename_or_with_only_filename_star_is_sniffed_from_its_bytes(srv):
    data = wav_bytes(0.4, seed=6)
    want = (await srv.client.post("/v1/tasks/kws/classify", content=data, headers=WAV)).json()["scores"]
    r = await srv.client.post("/v1/tasks/kws/classify", files={"audio": (None, data)})  # curl -F 'audio=<clip.wav'
    assert r.status_code == 200, r.text
    assert r.json()["scores"] == want
    b = "sp-boundary"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"audio\"; filename*=UTF-8''kl%C3%A4ng.wav\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    r = await srv.client.post("/v1/tasks/kws/classify", content=body,
                              headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    assert r.status_code == 200, r.text
    assert r.json()["scores"] == want


async def test_client_abort_mid_upload_is_a_499_logged_at_info_without_tracebacks(srv, caplog):
    import logging

    data = wav_bytes(0.4, seed=7)
    events = [{"type": "http.request", "body": data[:1000], "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return events.pop(0) if events else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/tasks/kws/classify", "raw_path": b"/v1/tasks/kws/classify",
             "query_string": b"", "root_path": "", "server": ("sp.test", 80), "client": ("127.0.0.1", 5),
             "headers": [(b"host", b"sp.test"), (b"content-type", b"audio/wav"),
                         (b"content-length", str(len(data)).encode())]}
    with caplog.at_level(logging.INFO):
        await srv.app(scope, receive, send)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(r.levelno == logging.INFO and "client closed" in r.getMessage() for r in caplog.records)
    assert sent[0]["status"] == 499
    metrics = (await srv.client.get("/metrics")).text
    assert 'sp_request_failures_total{code="client_closed_request"} 1.0' in metrics
    assert 'code="internal"' not in metrics


@pytest.mark.skipif(not __import__("shutil").which("ffmpeg"), reason="ffmpeg makes the phone recordings")
async def test_phone_and_browser_recordings_classify_as_their_pcm_does(srv, tmp_path):
    """An M4A voice memo (raw body, video/mp4 as a phone's share sheet may label it) and a WebM recording
    (multipart) answer exactly as the PCM they decode to, and report their container."""
    import subprocess

    import soundfile as sf

    src = tmp_path / "memo.wav"
    src.write_bytes(wav_bytes(1.0, rate=44100, channels=2, seed=7))
    for name, args, send in (("memo.m4a", ["-c:a", "aac", "-b:a", "64k"], "raw"),
                             ("rec.webm", ["-c:a", "libopus", "-b:a", "24k"], "multipart")):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(tmp_path / name)], check=True)
        data = (tmp_path / name).read_bytes()
        if send == "raw":
            r = await srv.client.post("/v1/tasks/kws/classify", content=data, headers={"Content-Type": "video/mp4"})
        else:
            r = await srv.client.post("/v1/tasks/kws/classify", files={"audio": (name, data, "video/webm")})
        assert r.status_code == 200, r.text
        body = r.json()
        decoded = decode_audio(data)
        pcm = tmp_path / f"{name}.wav"
        sf.write(pcm, decoded.samples, 16000, subtype="FLOAT")
        np.testing.assert_allclose([s["score"] for s in body["scores"]],
                                   np.sort(expected_probs(srv.kws, pcm.read_bytes()))[::-1][:4], rtol=1e-5)
        assert body["audio"]["input_format"] == ("MP4" if name.endswith("m4a") else "WEBM")
        assert body["audio"]["input_channels"] == 2  # the stereo source, downmixed by the server
        assert body["audio"]["duration_s"] == pytest.approx(1.0, abs=0.05)

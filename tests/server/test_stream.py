"""WebSocket /v1/stream against a REAL server process (uvicorn, tiny random bundle) with the `websockets` client.

Each hop's result must equal a classify call on the same samples (windows go through the same batcher and the
encoder sees exactly the window), results must arrive before ``stop`` is sent, and every refusal must end with
an error message and its documented close code.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import soxr
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .helpers import make_package
from .live import ADMIN, LiveServer

RATE = 16000
WINDOW_S, HOP_S, BUFFER_S, MAX_S = 1.0, 0.5, 4.0, 20.0


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("stream"), SPEECHPROMPT_WINDOW_SECONDS=str(WINDOW_S),
                    SPEECHPROMPT_HOP_SECONDS=str(HOP_S), SPEECHPROMPT_STREAM_BUFFER_SECONDS=str(BUFFER_S),
                    SPEECHPROMPT_MAX_LONG_AUDIO_SECONDS=str(MAX_S)) as srv:
        for i, task in enumerate(("st-a", "st-b")):
            pkg = make_package(task, 10 + i, C=3 + i, **srv.dims())
            r = srv.http.put(f"/v1/tasks/{task}", content=pkg.data, headers=ADMIN)
            assert r.status_code == 201, r.text
        yield srv


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    """int16 [N] @ 16 kHz: chirp + noise, loud in the first half, quiet in the second (windows differ)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * (150 + 200 * t) * t) + 0.1 * rng.standard_normal(t.size)
    x[t.size // 2:] *= 0.05
    return np.round(x * 32767).astype("<i2")


def ws_url(live: LiveServer, query: str) -> str:
    return f"ws://127.0.0.1:{live.port}/v1/stream?{query}"


def closing_error(ws) -> tuple[dict, int]:
    """Read until the server closes: (the error message, close code)."""
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout=10)))
    except ConnectionClosed:
        pass
    assert messages and messages[-1]["type"] == "error", messages
    assert messages[-1]["code"] and messages[-1]["detail"]
    return messages[-1], ws.close_code


def classify_window(live: LiveServer, pcm: np.ndarray, start_s: float, end_s: float) -> dict:
    """/v1/classify on samples [start, end) of ``pcm`` sent as a 16-bit WAV -> {task: {label: prob}}."""
    buf = io.BytesIO()
    sf.write(buf, pcm[round(start_s * RATE):round(end_s * RATE)], RATE, format="WAV", subtype="PCM_16")
    r = live.http.post("/v1/classify?tasks=st-a,st-b&top_k=10", content=buf.getvalue(),
                       headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200, r.text
    return {res["task"]: {s["label"]: s["score"] for s in res["scores"]} for res in r.json()["results"]}


def test_results_per_hop_arrive_before_stop_and_equal_classify_of_each_window(live):
    pcm = clip(3.3)
    with connect(ws_url(live, "tasks=st-a,st-b")) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": RATE, "encoding": "pcm16"}))
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "ready" and ready["window"] == WINDOW_S and ready["hop"] == HOP_S
        assert ready["sample_rate"] == RATE and set(ready["tasks"]) == {"st-a", "st-b"}
        assert ready["tasks"]["st-b"]["labels"] == ["c0", "c1", "c2", "c3"]
        live_results = []
        for i in range(0, 2 * RATE, RATE // 4):  # 2 s in 250 ms frames; results must come while streaming
            ws.send(pcm[i:i + RATE // 4].tobytes())
        while len(live_results) < 3:  # windows [0,1] [0.5,1.5] [1,2] are complete before stop
            live_results.append(json.loads(ws.recv(timeout=10)))
        ws.send(pcm[2 * RATE:].tobytes())
        ws.send(json.dumps({"type": "stop"}))
        rest = []
        while True:
            msg = json.loads(ws.recv(timeout=10))
            rest.append(msg)
            if msg["type"] == "summary":
                break
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1000
    results = live_results + rest[:-1]
    summary = rest[-1]
    metrics = live.http.get("/metrics").text
    counts = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in metrics.splitlines() if ln[:1] != "#"}
    assert counts['sp_windows_total{source="stream"}'] >= 6 and counts["sp_stream_sessions"] == 0
    assert all(m["type"] == "result" for m in results)
    # full windows every hop, then the tail window ending at the clip's end
    assert [(m["start"], m["end"]) for m in results] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5),
                                                         (2.0, 3.0), (2.3, 3.3)]
    versions = {t: v["version"] for t, v in ready["tasks"].items()}
    for m in results:
        ref = classify_window(live, pcm, m["start"], m["end"])
        for task, got in m["tasks"].items():
            assert got["version"] == versions[task]
            assert got["scores"].keys() == ref[task].keys()
            np.testing.assert_allclose(list(got["scores"].values()), [ref[task][k] for k in got["scores"]],
                                       rtol=1e-5, atol=1e-6)
            assert got["label"] == max(got["scores"], key=got["scores"].get)
    assert summary["duration"] == pytest.approx(3.3) and summary["windows"] == 6
    for task, agg in summary["tasks"].items():
        mean = {k: np.mean([m["tasks"][task]["scores"][k] for m in results]) for k in agg["mean_scores"]}
        assert agg["mean_scores"] == pytest.approx(mean, rel=1e-6)
        assert agg["label"] == max(mean, key=mean.get) and agg["version"] == versions[task]
        spans = agg["spans"]  # tile [0, duration] and name each window's winner over its own stretch
        assert spans[0]["start"] == 0.0 and spans[-1]["end"] == pytest.approx(3.3)
        assert all(a["end"] == b["start"] and a["label"] != b["label"] for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("rate", [8000, 44_100, 384_000])  # 8-384 kHz
def test_declared_rate_is_resampled(live, rate):
    pcm = soxr.resample(clip(2.0).astype(np.float32) / 32768, 16000, rate)  # 2 s at the declared rate
    with connect(ws_url(live, "tasks=st-a&window=1&hop=1")) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "f32"}))
        assert json.loads(ws.recv(timeout=10))["sample_rate"] == rate
        for i in range(0, len(pcm), rate // 4):  # 0.25 s per frame
            ws.send(pcm[i:i + rate // 4].astype("<f4").tobytes())
        ws.send(json.dumps({"type": "stop"}))
        msgs = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
    assert [(m["start"], m["end"]) for m in msgs[:2]] == [(0.0, 1.0), (1.0, 2.0)]
    assert msgs[2]["type"] == "summary" and msgs[2]["duration"] == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize("start", ['{"type": "begin"}', "not json", '{"type": "start", "encoding": "mp3"}',
                                   '{"type": "start", "sample_rate": 100}', '{"type": "start", "sample_rate": 384001}',
                                   '{"type": "start", "sample_rate": 4000}'])
def test_bad_start_message_gets_an_error_and_close_1003(live, start):
    with connect(ws_url(live, "tasks=st-a")) as ws:
        ws.send(start)
        err, code = closing_error(ws)
    assert (err["code"], code) == ("bad_start", 1003)


def test_binary_first_message_is_a_bad_start(live):
    with connect(ws_url(live, "tasks=st-a")) as ws:
        ws.send(clip(0.5).tobytes())
        err, code = closing_error(ws)
    assert (err["code"], code) == ("bad_start", 1003)


@pytest.mark.parametrize("message, expected", [(json.dumps({"type": "pause"}), "bad_message"),
                                               ("stop", "bad_message"), (b"\x00\x01\x02", "bad_frame"),
                                               (np.array([0.1, np.nan], "<f4").tobytes() * 2, "bad_frame")])
def test_bad_message_after_start_gets_1003(live, message, expected):
    encoding = "f32" if expected == "bad_frame" and len(message) > 3 else "pcm16"
    with connect(ws_url(live, "tasks=st-a")) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": RATE, "encoding": encoding}))
        ws.recv(timeout=10)
        ws.send(message)
        err, code = closing_error(ws)
    assert (err["code"], code) == (expected, 1003)


@pytest.mark.parametrize("query, expected", [("tasks=st-a,nope", "unknown_task"), ("tasks=", "bad_request"),
                                             ("tasks=st-a&window=60", "bad_request"),
                                             ("tasks=st-a&window=1&hop=2", "bad_request")])
def test_unknown_task_or_bad_parameters_close_1008(live, query, expected):
    with connect(ws_url(live, query)) as ws:
        err, code = closing_error(ws)
    assert (err["code"], code) == (expected, 1008)


def test_client_outrunning_the_bounded_buffer_is_closed_1013(live):
    with connect(ws_url(live, "tasks=st-a")) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": RATE, "encoding": "pcm16"}))
        ws.recv(timeout=10)
        ws.send(clip(BUFFER_S + 2).tobytes())  # more than the buffer ahead of any scored window
        err, code = closing_error(ws)
    assert (err["code"], code) == ("client_outran_server", 1013)
    assert live.http.get("/readyz").status_code == 200


def test_session_longer_than_the_limit_is_closed_1009(live):
    msgs = []
    with connect(ws_url(live, "tasks=st-a")) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": RATE, "encoding": "pcm16"}))
        ws.recv(timeout=10)
        try:
            for second in range(int(MAX_S) + 2):  # one second at a time, then its results: within the buffer
                ws.send(clip(1.0, seed=second).tobytes())
                while not msgs or msgs[-1].get("end", second + 1) < second + 1:
                    msgs.append(json.loads(ws.recv(timeout=10)))
        except ConnectionClosed:
            pass
        try:
            while True:
                msgs.append(json.loads(ws.recv(timeout=10)))
        except ConnectionClosed:
            pass
    assert sum(m["type"] == "result" for m in msgs) >= 2 * MAX_S - 2  # it streamed up to the limit
    assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == "session_too_long"
    assert ws.close_code == 1009


def test_a_task_naming_a_speech_trim_says_where_it_is_not_applied(live):
    """A package naming a speech trim (server/speech_trims.py): a whole-clip classify runs the VAD (its time in
    ``timings.speech_trim_ms`` and ``sp_speech_trim_duration_seconds``); a windowed classify and a stream score
    their windows as they are and say so (``speech_trim.applied`` false)."""
    from speechprompt.package import with_metadata

    for task, trim in (("st-trim", {"margin_s": 0.1}), ("st-rec", {"when": "recording"})):
        pkg = with_metadata(make_package(task, 30, **live.dims()), speech_trim=trim)
        r = live.http.put(f"/v1/tasks/{task}", content=pkg.data, headers=ADMIN)
        assert r.status_code == 201, r.text
    buf = io.BytesIO()
    sf.write(buf, clip(3.0), RATE, format="WAV", subtype="PCM_16")
    wav = {"content": buf.getvalue(), "headers": {"Content-Type": "audio/wav"}}

    def vad_runs() -> float:
        text = live.http.get("/metrics").text
        return next(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                    if ln.startswith("sp_speech_trim_duration_seconds_count"))

    before = vad_runs()
    r = live.http.post("/v1/classify?tasks=st-trim,st-a", **wav)
    assert r.status_code == 200, r.text
    body = r.json()
    trimmed = body["results"][0]
    assert trimmed["speech_trim"]["applied"] is True and body["timings"]["speech_trim_ms"] > 0
    assert "speech_trim" not in body["results"][1] and vad_runs() == before + 1
    r = live.http.post("/v1/tasks/st-a/classify", **wav)  # no task names a trim: no VAD
    assert r.json()["timings"]["speech_trim_ms"] == 0.0 and vad_runs() == before + 1
    r = live.http.post("/v1/tasks/st-trim/classify?long_audio=window&window=1&hop=1", **wav)
    assert r.status_code == 200, r.text
    assert r.json()["speech_trim"] == {"start_s": 0.0, "end_s": 3.0, "cut": False, "applied": False}
    assert r.json()["long_audio"]["windows"] == 3 and vad_runs() == before + 1
    with connect(ws_url(live, "tasks=st-trim,st-rec,st-a&window=1&hop=1")) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": RATE, "encoding": "pcm16"}))
        ready = json.loads(ws.recv(timeout=10))
        assert ready["tasks"]["st-trim"]["speech_trim"] == {"applied": False, "when": "always"}
        assert ready["tasks"]["st-rec"]["speech_trim"] == {"applied": False, "when": "recording"}
        assert "speech_trim" not in ready["tasks"]["st-a"]
    for task in ("st-trim", "st-rec"):
        assert live.http.delete(f"/v1/tasks/{task}", headers=ADMIN).status_code in (200, 204)


def test_the_client_and_the_cli_send_the_request_speech_trim(live, tmp_path):
    """``speech_trim="on"`` through the Python client trims a task whose package names none (the VAD runs: one more
    ``sp_speech_trim_duration_seconds`` count, the answer's ``speech_trim`` applied); on the command line
    ``--speech-trim on`` gives each row the seconds scored (JSON ``speech_trim`` and ``scored_s``, the CSV column)
    for a voice with room tone, and ``--speech-trim off`` runs no VAD."""
    import typer
    from typer.testing import CliRunner

    from clients import SpeechPromptClient, cli

    def vad_runs() -> float:
        text = live.http.get("/metrics").text
        return next(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                    if ln.startswith("sp_speech_trim_duration_seconds_count"))

    path = tmp_path / "clip.wav"
    sf.write(path, clip(2.0), RATE, subtype="PCM_16")
    voice = tmp_path / "voice.wav"  # a human voice (alsa-utils, a test set) with 1 s of -60 dBFS room tone each side
    recorded, rate = sf.read("/usr/share/sounds/alsa/Front_Center.wav", dtype="float32")
    tone = np.random.default_rng(1).uniform(-1e-3, 1e-3, 2 * rate).astype(np.float32)
    sf.write(voice, np.concatenate([tone[:rate], recorded, tone[rate:]]), rate, subtype="FLOAT")
    before = vad_runs()
    with SpeechPromptClient(live.url) as c:
        one = c.classify("st-a", path, speech_trim="on")
        assert one.speech_trim["applied"] is True and vad_runs() == before + 1
        many = c.classify_multi(["st-a", "st-b"], path, speech_trim="on")
        assert {t: r.speech_trim["applied"] for t, r in many.ok.items()} == {"st-a": True, "st-b": True}
        assert vad_runs() == before + 2  # once per clip, for both tasks
        assert c.classify("st-a", path).speech_trim is None and vad_runs() == before + 2
    app = typer.Typer()
    cli.register(app)
    for flag, runs in (("on", before + 3), ("off", before + 3)):
        out = CliRunner().invoke(app, ["classify", str(voice), "--tasks", "st-a,st-b", "--speech-trim", flag,
                                       "--format", "json", "--no-progress", "--url", live.url], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        rows = json.loads(out.stdout)
        assert {r["task"] for r in rows} == {"st-a", "st-b"} and vad_runs() == runs, flag
        for r in rows:
            if flag == "on":
                cut = r["speech_trim"]
                assert cut["cut"] and 0.5 < cut["start_s"] < 1.0
                assert r["scored_s"] == f"{cut['start_s']:.2f}-{cut['end_s']:.2f}"
            else:
                assert r["speech_trim"] is None and r["scored_s"] is None
    out = CliRunner().invoke(app, ["classify", str(voice), "--task", "st-a", "--speech-trim", "on", "--format", "csv",
                                   "--no-progress", "--url", live.url], catch_exceptions=False)
    import csv

    [row] = list(csv.DictReader(io.StringIO(out.stdout)))
    start, end = (float(x) for x in row["scored_s"].split("-"))
    assert 0.5 < start < 1.0 < end < 1.0 + len(recorded) / rate + 0.5, row["scored_s"]
    bad = CliRunner().invoke(app, ["classify", str(path), "--task", "st-a", "--speech-trim", "maybe", "--url", live.url])
    assert bad.exit_code == 2 and vad_runs() == before + 4

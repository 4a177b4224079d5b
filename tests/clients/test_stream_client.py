"""The client's ``stream(...)`` (sync and async) against a REAL server process (uvicorn, tiny random bundle).

A streamed file must give the windows and scores of a windowed classify of the same file; a file far longer
than the server's bounded buffer must go through (the client keeps within the buffer); refusals raise
``StreamError`` with the server's code and close code.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from clients import AsyncSpeechPromptClient, SpeechPromptClient, StreamError, StreamResult, StreamSummary, cli

from ..server.helpers import make_package
from ..server.live import ADMIN, LiveServer

RATE, BUFFER_S = 16000, 3.0


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("client-stream"), SPEECHPROMPT_WINDOW_SECONDS="1.0",
                    SPEECHPROMPT_HOP_SECONDS="0.5", SPEECHPROMPT_STREAM_BUFFER_SECONDS=str(BUFFER_S)) as srv:
        for i, task in enumerate(("cs-a", "cs-b")):
            r = srv.http.put(f"/v1/tasks/{task}", content=make_package(task, 20 + i, **srv.dims()).data, headers=ADMIN)
            assert r.status_code == 201, r.text
        yield srv


def wav_file(tmp_path, seconds: float, rate: int = RATE, channels: int = 1):
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + (t % 2))) + 0.05 * rng.standard_normal(t.size)
    x[(t % 4) > 2] *= 0.02  # alternate loud and quiet stretches
    path = tmp_path / f"clip{seconds}-{rate}-{channels}.wav"
    sf.write(path, np.stack([x] * channels, axis=1), rate, subtype="PCM_16")
    return path


def windowed_classify(live: LiveServer, path) -> dict:
    """The client's classify_multi with windows asked for -> {task: windowed result item}."""
    with SpeechPromptClient(live.url) as client:
        res = client.classify_multi(["cs-a", "cs-b"], path, top_k=10, long_audio={"window": 1, "hop": 0.5})
    assert not res.failed
    return {item["task"]: item for item in res.raw["results"]}


def check_against_classify(events: list, ref: dict) -> None:
    *results, summary = events
    assert all(isinstance(e, StreamResult) for e in results) and isinstance(summary, StreamSummary)
    for task, item in ref.items():
        assert [(e.start, e.end) for e in results] == [(w["start"], w["end"]) for w in item["windows"]]
        for e, w in zip(results, item["windows"], strict=True):
            got = e.tasks[task]
            assert got.label == w["label"] and got.version == item["version"]
            np.testing.assert_allclose([got.scores[k] for k in w["scores"]], list(w["scores"].values()),
                                       rtol=1e-4, atol=1e-5)  # batch composition moves float32 sums
        assert summary.tasks[task].label == item["label"]
        assert summary.tasks[task].spans == item["spans"]
    assert summary.windows == len(results)


def test_sync_stream_of_a_file_equals_windowed_classify(live, tmp_path):
    path = wav_file(tmp_path, 6.3)
    with SpeechPromptClient(live.url) as client:
        events = list(client.stream(["cs-a", "cs-b"], path))
    check_against_classify(events, windowed_classify(live, path))
    assert events[-1].duration == pytest.approx(6.3)


def test_async_stream_equals_the_sync_one(live, tmp_path):
    path = wav_file(tmp_path, 4.2)

    async def run() -> list:
        async with AsyncSpeechPromptClient(live.url) as client:
            return [e async for e in client.stream("cs-a,cs-b", path.read_bytes())]

    events = asyncio.run(run())
    check_against_classify(events, windowed_classify(live, path))


def test_a_file_much_longer_than_the_server_buffer_is_paced_not_refused(live, tmp_path):
    path = wav_file(tmp_path, 10 * BUFFER_S, rate=44100, channels=2)  # resampled and downmixed on the way
    with SpeechPromptClient(live.url) as client:
        events = list(client.stream(["cs-a"], path, chunk_s=1.0))
    assert events[-1].duration == pytest.approx(10 * BUFFER_S, abs=1e-3)
    assert len(events) - 1 == events[-1].windows == 59


def test_raw_frames_at_a_declared_rate(live):
    rng = np.random.default_rng(1)
    pcm = (0.2 * rng.standard_normal(3 * 8000) * 32767).astype("<i2")
    frames = [pcm[i:i + 800].tobytes() for i in range(0, pcm.size, 800)]
    with SpeechPromptClient(live.url) as client:
        events = list(client.stream(["cs-a"], frames, sample_rate=8000, encoding="pcm16", window=1.5, hop=1.5))
    assert [(e.start, e.end) for e in events[:-1]] == [(0.0, 1.5), (1.5, 3.0)]
    assert events[-1].duration == pytest.approx(3.0, abs=1e-3)


def test_unknown_task_raises_stream_error_with_close_1008(live, tmp_path):
    with SpeechPromptClient(live.url) as client, pytest.raises(StreamError) as err:
        list(client.stream(["cs-a", "no-such-task"], wav_file(tmp_path, 1.0)))
    assert (err.value.code, err.value.close_code) == ("unknown_task", 1008)

    async def run() -> None:
        async with AsyncSpeechPromptClient(live.url) as client:
            async for _ in client.stream(["no-such-task"], wav_file(tmp_path, 1.0)):
                pass

    with pytest.raises(StreamError) as aerr:
        asyncio.run(run())
    assert (aerr.value.code, aerr.value.close_code) == ("unknown_task", 1008)


def test_a_wav_this_client_cannot_read_is_a_value_error(live):
    buf = io.BytesIO()
    sf.write(buf, np.zeros(1600, np.float32), RATE, format="WAV", subtype="FLOAT")
    with SpeechPromptClient(live.url) as client, pytest.raises(ValueError):
        list(client.stream(["cs-a"], buf.getvalue()))


def cli_app() -> typer.Typer:
    app = typer.Typer()
    cli.register(app)
    return app


def test_cli_stream_of_a_file_prints_each_window_then_the_summary(live, tmp_path):
    path = wav_file(tmp_path, 3.2)
    res = CliRunner().invoke(cli_app(), ["stream", str(path), "--tasks", "cs-a,cs-b", "--format", "json",
                                         "--url", live.url], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    events = [json.loads(x) for x in res.stdout.splitlines()]
    ref = windowed_classify(live, path)
    assert [(e["start"], e["end"]) for e in events[:-1]] == [(w["start"], w["end"]) for w in ref["cs-a"]["windows"]]
    assert [e["tasks"]["cs-b"]["label"] for e in events[:-1]] == [w["label"] for w in ref["cs-b"]["windows"]]
    assert events[-1]["type"] == "summary" and events[-1]["tasks"]["cs-a"]["label"] == ref["cs-a"]["label"]
    text = CliRunner().invoke(cli_app(), ["stream", str(path), "--tasks", "cs-a", "--url", live.url])
    assert text.exit_code == 0 and "   0.00-   1.00 s  cs-a=" in text.stdout and "summary: 3.20 s, 6 windows" in text.stdout


def test_cli_stream_refusal_exits_1_with_the_servers_reason(live, tmp_path):
    res = CliRunner().invoke(cli_app(), ["stream", str(wav_file(tmp_path, 1.0)), "--tasks", "nope", "--url", live.url])
    assert res.exit_code == 1 and "unknown_task" in res.stderr and "1008" in res.stderr, (res.exit_code, res.stderr)


@pytest.mark.skipif(not shutil.which("arecord"), reason="arecord (alsa-utils) is not installed")
def test_cli_stream_from_arecord(live):
    """ALSA's null capture device stands in for a microphone (silence, at 16 kHz, for --seconds)."""
    res = CliRunner().invoke(cli_app(), ["stream", "--mic", "--device", "null", "--seconds", "2", "--tasks", "cs-a",
                                         "--format", "json", "--url", live.url], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    events = [json.loads(x) for x in res.stdout.splitlines()]
    assert events[-1]["type"] == "summary" and events[-1]["duration"] == pytest.approx(2.0)
    assert [(e["start"], e["end"]) for e in events[:-1]] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]


@pytest.mark.skipif(not shutil.which("arecord"), reason="arecord (alsa-utils) is not installed")
def test_cli_stream_reports_a_failing_recorder(live):
    res = CliRunner().invoke(cli_app(), ["stream", "--mic", "--device", "no-such-device", "--tasks", "cs-a",
                                         "--url", live.url])
    assert res.exit_code == 1 and "arecord failed" in res.stderr, (res.exit_code, res.stderr)


def test_client_explain_asks_for_occlusion_and_returns_it(live, tmp_path):
    """``explain=N`` on the client: each task's result carries the server's explanation over N stretches that
    cover the clip, for the label the result gives; without ``explain`` there is none."""
    path = wav_file(tmp_path, 1.5)

    async def both():
        async with AsyncSpeechPromptClient(live.url) as client:
            return await client.classify_multi(["cs-a", "cs-b"], path, explain=4)

    with SpeechPromptClient(live.url) as client:
        one = client.classify("cs-a", path, explain=3)
        plain = client.classify("cs-a", path)
    assert plain.explanation is None and one.label == plain.label and one.version == plain.version
    ex = one.explanation
    assert ex["method"] == "occlusion" and ex["label"] == one.label and len(ex["spans"]) == 3
    assert ex["spans"][0]["start"] == 0 and ex["spans"][-1]["end"] == pytest.approx(1.5, abs=0.1)
    assert ex["score"] == pytest.approx(one.score, abs=1e-6)
    assert all(s["importance"] == pytest.approx(ex["score"] - s["score_without"], abs=1e-6) for s in ex["spans"])
    multi = asyncio.run(both())
    assert [len(r.explanation["spans"]) for r in multi.results] == [4, 4]

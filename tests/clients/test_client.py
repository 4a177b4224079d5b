"""SpeechPromptClient against a live server (the fake one by default; see conftest)."""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import re
import socket
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import soundfile as sf

from clients import (
    BadGateway,
    BadRequest,
    ClassifyResult,
    Conflict,
    Forbidden,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    ResponseFormatError,
    RetryPolicy,
    ServerError,
    SpeechPromptClient,
    TaskFailure,
    TaskInfo,
    TooManyRequests,
    TransportError,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from clients.errors import STATUS_CLASSES, parse_retry_after

from .conftest import LABELS, same_scores, wav_bytes


def check_distribution(r: ClassifyResult, labels: list[str], k: int | None = None) -> None:
    """Scores are labels of the task, best first, the label is the best one; all classes sum to 1."""
    got = [s.label for s in r.scores]
    assert len(got) == (k or len(labels)) and set(got) <= set(labels) and len(set(got)) == len(got)
    vals = [s.score for s in r.scores]
    assert vals == sorted(vals, reverse=True) and all(0.0 <= v <= 1.0 for v in vals)
    assert r.label == got[0] and r.score == vals[0]
    if k is None:
        assert math.isclose(sum(vals), 1.0, abs_tol=1e-4)


# ---- endpoints -------------------------------------------------------------------------------------------


def test_backbone_health_ready_metrics(client, backbone_info):
    bb = client.backbone()
    assert bb.fingerprint == backbone_info["fingerprint"] and re.fullmatch(r"[0-9a-f]{64}", bb.fingerprint)
    assert bb.kind == backbone_info["kind"] and bb.raw == backbone_info
    assert isinstance(client.health(), dict)
    ready = client.ready()
    assert ready.ready is True and ready.status == 200
    text = client.metrics()
    samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert samples and all(re.fullmatch(r"[a-zA-Z_:][\w:]*(\{.*\})? \S+", ln) for ln in samples)


def test_upload_list_describe_delete(client, make_package):
    data = make_package("clienttest-roundtrip", ["on", "off", "up"], seed=7)
    up = client.upload("clienttest-roundtrip", io.BytesIO(data))
    assert up.task == "clienttest-roundtrip"
    assert up.version == hashlib.sha256(data).hexdigest()[:16]  # versions are content digests
    listed = {t.name: t for t in client.tasks()}
    assert listed["clienttest-roundtrip"].version == up.version
    info = client.task("clienttest-roundtrip")
    assert info.labels == ("on", "off", "up") and info.num_classes == 3 and info.version == up.version
    assert isinstance(info.metadata, dict)
    # the same bytes again give the same version
    assert client.upload("clienttest-roundtrip", data).version == up.version
    gone = client.delete("clienttest-roundtrip")
    assert gone.task == "clienttest-roundtrip" and gone.deleted is True
    with pytest.raises(NotFound):
        client.task("clienttest-roundtrip")
    assert "clienttest-roundtrip" not in {t.name for t in client.tasks()}


def test_classify_real_recording(client, test_task, recording):
    info = sf.info(str(recording))
    r = client.classify(test_task, recording)
    assert r.task == test_task and r.version == client.task(test_task).version
    check_distribution(r, LABELS)
    assert r.audio.input_sample_rate == info.samplerate == 48000
    assert r.audio.input_channels == info.channels
    assert r.audio.resampled is True
    assert r.audio.duration_s == pytest.approx(info.frames / info.samplerate, abs=2e-3)
    assert r.audio.frames is not None and r.audio.frames > 0 and 0 < r.audio.units <= r.audio.frames
    assert r.timings.total_ms is not None and r.timings.total_ms >= 0


def test_input_kinds_agree_and_units_cache(client, test_task, tmp_path):
    data = wav_bytes(0.7, rate=22050, channels=2, freq=300.0)
    path = tmp_path / "clip.wav"
    path.write_bytes(data)
    first = client.classify(test_task, path)
    with path.open("rb") as fh:
        by_file = client.classify(test_task, fh)
    by_bytes = client.classify(test_task, data)
    raw = client.classify(test_task, data, send_as="raw")
    for r in (by_file, by_bytes, raw):
        assert (r.label, r.version) == (first.label, first.version) and same_scores(r.scores, first.scores)
    assert first.audio.input_channels == 2 and first.audio.input_sample_rate == 22050
    assert raw.units_cache_hit is True  # the same clip was seen before


def test_top_k(client, test_task):
    data = wav_bytes(0.4, freq=700.0)
    full = client.classify(test_task, data)
    top2 = client.classify(test_task, data, top_k=2)
    check_distribution(top2, LABELS, k=2)
    assert same_scores(top2.scores, full.scores[:2])


def test_classify_multi(client, test_task):
    data = wav_bytes(0.5, freq=500.0)
    single = client.classify(test_task, data)
    multi = client.classify_multi([test_task, "no-such-task"], data)
    assert [r.task for r in multi.results] == [test_task, "no-such-task"]
    ok, failed = multi.results
    assert isinstance(ok, ClassifyResult) and same_scores(ok.scores, single.scores) and ok.version == single.version
    assert isinstance(failed, TaskFailure) and isinstance(failed.error, NotFound) and failed.error.status == 404
    assert multi.audio.duration_s == pytest.approx(0.5, abs=1e-3)
    assert set(multi.ok) == {test_task} and set(multi.failed) == {"no-such-task"}
    assert ok.units_cache_hit is True  # the response's one flag (the clip was sent before), given to each item


# ---- error mapping: real error answers --------------------------------------------------------------------


def _long_wav() -> bytes:
    return wav_bytes(600.0, rate=8000, subtype="PCM_U8")  # 10 min: over any sane duration limit


def _empty_wav() -> bytes:
    return wav_bytes(0.0)


NATURAL = [
    ("unknown task", lambda c, t, mk: c.classify("no-such-task", wav_bytes()), NotFound, 404),
    ("describe unknown", lambda c, t, mk: c.task("no-such-task"), NotFound, 404),
    ("text as audio", lambda c, t, mk: c.classify(t, b"hello, this is text " * 20, filename="a.wav"),
     UnsupportedMediaType, 415),
    ("empty wav", lambda c, t, mk: c.classify(t, _empty_wav()), Unprocessable, 422),
    ("too long", lambda c, t, mk: c.classify(t, _long_wav()), PayloadTooLarge, 413),
    ("no token", lambda c, t, mk: c.upload("clienttest-x", mk("clienttest-x", ["a", "b"]), token=""),
     Unauthorized, 401),
    ("wrong token", lambda c, t, mk: c.upload("clienttest-x", mk("clienttest-x", ["a", "b"]), token="wrong"),
     Forbidden, 403),
    ("other backbone", lambda c, t, mk: c.upload("clienttest-x", mk("clienttest-x", ["a", "b"], backbone={
        **c.backbone().raw, "fingerprint": "0" * 64})), Conflict, 409),
    ("pickle package", lambda c, t, mk: c.upload("clienttest-x", pickle.dumps({"a": 1})), UnsupportedMediaType, 415),
    ("bad task name", lambda c, t, mk: c.upload("Bad Name!", mk("clienttest-x", ["a", "b"])), BadRequest, 400),
]


@pytest.mark.parametrize("case", NATURAL, ids=[c[0] for c in NATURAL])
def test_error_answers_map_to_typed_errors(client, test_task, make_package, case):
    _, call, cls, status = case
    with pytest.raises(cls) as ei:
        call(client, test_task, make_package)
    err = ei.value
    assert type(err) is cls and err.status == status
    assert err.type.startswith("/problems/") and err.code and err.title and err.detail
    assert str(status) in str(err) and err.detail in str(err)


def test_undecodable_reports_what_is_accepted(client, test_task):
    with pytest.raises(UnsupportedMediaType) as ei:
        client.classify(test_task, b"\x00\x01 definitely not audio" * 10, content_type="audio/wav")
    assert ei.value.accepted  # the server says which formats it takes


# ---- error mapping: every status, with injected answers (fake server only) --------------------------------


@pytest.mark.parametrize("status", sorted(STATUS_CLASSES))
def test_every_status_maps_with_all_details(client, faults, status):
    body = {"type": f"/problems/code-{status}", "title": f"Title {status}", "status": status,
            "detail": f"detail for {status}", "accepted": {"max": status}, "instance": "/x/1"}
    faults.inject("/v1/backbone", status, headers={"Retry-After": "3"}, body=body)
    with pytest.raises(STATUS_CLASSES[status]) as ei:
        client.backbone()
    e = ei.value
    assert (e.status, e.type, e.code, e.title, e.detail) == (status, body["type"], f"code-{status}",
                                                            body["title"], body["detail"])
    assert e.accepted == {"max": status} and e.extra == {"instance": "/x/1"} and e.to_dict() == body
    assert e.headers["retry-after"] == "3"
    if status in (429, 503):
        assert e.retry_after == 3.0


def test_non_problem_error_body(client, faults):
    faults.inject("/v1/tasks", 502, text="<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(BadGateway) as ei:
        client.tasks()
    assert ei.value.status == 502 and ei.value.type == "about:blank" and "502 Bad Gateway" in ei.value.detail
    faults.inject("/v1/tasks", 507, body={"title": "Insufficient Storage", "detail": "disk full"})
    with pytest.raises(ServerError) as ei:
        client.tasks()
    assert ei.value.status == 507 and ei.value.detail == "disk full"


def test_not_ready_is_an_answer(client, faults):
    faults.inject("/readyz", 503, body={"type": "/problems/not_ready", "title": "Not ready", "status": 503,
                                        "detail": "loading backbone"})
    r = client.ready()
    assert r.ready is False and r.status == 503 and r.body["detail"] == "loading backbone"
    assert client.ready().ready is True


# ---- retries ---------------------------------------------------------------------------------------------


def _queue_full(retry_after: str | None) -> dict:
    return {"headers": {"Retry-After": retry_after} if retry_after else {},
            "body": {"type": "/problems/queue_full", "title": "Too many requests", "status": 429,
                     "detail": "queue full"}}


def test_no_retry_by_default(client, faults, test_task):
    path = f"/v1/tasks/{test_task}/classify"
    faults.inject(path, 429, **_queue_full("1"))
    with pytest.raises(TooManyRequests) as ei:
        client.classify(test_task, wav_bytes())
    assert ei.value.retry_after == 1.0 and faults.requests(path) == 1


def test_retry_honours_retry_after(live, faults, test_task):
    path = f"/v1/tasks/{test_task}/classify"
    faults.inject(path, 429, count=1, **_queue_full("1"))
    with SpeechPromptClient(live.url, retry=RetryPolicy(max_retries=3)) as c:
        t0 = time.monotonic()
        r = c.classify(test_task, wav_bytes())
        waited = time.monotonic() - t0
    assert r.task == test_task and faults.requests(path) == 2
    assert 1.0 <= waited < 5.0


def test_retry_waits_and_bounds(live, faults, test_task):
    path = f"/v1/tasks/{test_task}/classify"
    date = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True)
    faults.inject(path, 429, **_queue_full("7"))
    faults.inject(path, 503, **_queue_full(date))
    faults.inject(path, 503, **_queue_full(None))
    waits: list[float] = []
    policy = RetryPolicy(max_retries=5, max_delay_s=60, backoff_s=0.25)
    with SpeechPromptClient(live.url, retry=policy, sleep=waits.append) as c:
        assert c.classify(test_task, wav_bytes()).task == test_task
    assert waits[0] == 7.0 and 18.0 <= waits[1] <= 20.0 and waits[2] == 0.25 * 2 ** 2
    assert faults.requests(path) == 4
    # exhausted: max_retries=2 -> 3 attempts, then the last 429 is raised
    faults.clear()
    faults.inject(path, 429, count=3, **_queue_full("2"))
    waits.clear()
    with SpeechPromptClient(live.url, retry=RetryPolicy(max_retries=2), sleep=waits.append) as c:
        with pytest.raises(TooManyRequests):
            c.classify(test_task, wav_bytes())
    assert waits == [2.0, 2.0] and faults.requests(path) == 3
    # a Retry-After beyond max_delay_s is not waited for
    faults.clear()
    faults.inject(path, 429, **_queue_full("120"))
    with SpeechPromptClient(live.url, retry=RetryPolicy(max_retries=3, max_delay_s=30), sleep=waits.append) as c:
        with pytest.raises(TooManyRequests):
            c.classify(test_task, wav_bytes())
    assert faults.requests(path) == 1


def test_speech_trim_unavailable_is_not_retried(live, faults, test_task):
    """A 503 whose code is speech_trim_unavailable (a server without the VAD weights) is raised at once: no wait
    mends it; a 503 with another code is still retried."""
    path = f"/v1/tasks/{test_task}/classify"
    body = {"type": "/problems/speech_trim_unavailable", "title": "Service unavailable", "status": 503,
            "detail": "no Silero VAD weights"}
    faults.inject(path, 503, count=1, headers={"Retry-After": "1"}, body=body)
    waits: list[float] = []
    with SpeechPromptClient(live.url, retry=RetryPolicy(max_retries=3), sleep=waits.append) as c:
        with pytest.raises(ProblemError) as ei:
            c.classify(test_task, wav_bytes())
        assert ei.value.code == "speech_trim_unavailable" and ei.value.status == 503
        assert waits == [] and faults.requests(path) == 1
        faults.inject(path, 503, count=1, **_queue_full("1"))  # another 503: retried once, then answered
        assert c.classify(test_task, wav_bytes()).task == test_task
    assert waits == [1.0] and faults.requests(path) == 3


def test_gateway_timeout_not_retried(live, faults):
    faults.inject("/v1/tasks", 504, body={"title": "Deadline exceeded", "status": 504, "detail": "slow"})
    with SpeechPromptClient(live.url, retry=RetryPolicy(max_retries=3), sleep=lambda s: None) as c:
        with pytest.raises(GatewayTimeout):
            c.tasks()
    assert faults.requests("/v1/tasks") == 1


def test_unreachable_server_is_transport_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with SpeechPromptClient(f"http://127.0.0.1:{port}", timeout=2) as c:
        with pytest.raises(TransportError):
            c.health()
    assert not issubclass(TransportError, ProblemError)


def test_parse_retry_after():
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


def test_env_defaults(live, monkeypatch):
    monkeypatch.setenv("SPEECHPROMPT_URL", live.url + "/")
    monkeypatch.setenv("SPEECHPROMPT_ADMIN_TOKEN", "from-env")
    with SpeechPromptClient() as c:
        assert c.base_url == live.url and c._calls.token == "from-env"
        assert c.ready().ready


def test_input_type_checks(client, test_task, tmp_path):
    with pytest.raises(TypeError):
        client.classify(test_task, 12345)
    with pytest.raises(TypeError):  # text-mode file objects are refused, not mis-encoded
        (tmp_path / "x.wav").write_bytes(wav_bytes())
        with (tmp_path / "x.wav").open("r", encoding="latin-1") as fh:
            client.classify(test_task, fh)
    with pytest.raises(ValueError):  # raw bodies need an audio/* type
        client.classify(test_task, b"\x00" * 100, send_as="raw")


def test_task_info_accepts_both_spellings():
    contract = {"name": "t1", "version": "ab" * 8, "labels": ["a", "b"], "num_classes": 2, "backbone": "f",
                "state": "resident", "created": "2024", "size_bytes": 10, "metadata": {"prompt_length": 5}}
    server = {"task": "t1", "version": "ab" * 8, "labels": ["a", "b"], "backbone": "f", "state": "resident",
              "created": "2024", "nbytes": 10, "prompt_length": 5, "in_flight": 0}
    a, b = TaskInfo.from_json(contract), TaskInfo.from_json(server)
    assert (a.name, a.version, a.labels, a.num_classes, a.size_bytes) == \
        (b.name, b.version, b.labels, b.num_classes, b.size_bytes) == ("t1", "ab" * 8, ("a", "b"), 2, 10)
    assert a.metadata == {"prompt_length": 5} and b.metadata == {"prompt_length": 5, "in_flight": 0}
    with pytest.raises(ResponseFormatError):
        TaskInfo.from_json({"version": "x"})

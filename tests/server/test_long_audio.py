"""Long audio in classify (policies reject | truncate | window) against a REAL server process (tiny random bundle).

The clip is espeak-ng speech alternating with near-silence; every window's scores are compared with an
independent ``Runtime`` scoring the same samples, the fixture task is chosen (by seed, at test time) so that its
label differs between speech and silence windows, and the aggregate is recomputed from the windows.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from speechprompt.audio import decode_audio
from speechprompt.package import PackageMeta, new_package
from speechprompt.runtime import Runtime

from .http_helpers import assert_problem
from .live import ADMIN, LiveServer

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng makes the speech of the clip")
RATE, MAX_S, LONG_S, WINDOW_S, HOP_S = 16000, 3.0, 40.0, 1.0, 0.5
WAV = {"Content-Type": "audio/wav"}


def speech(text: str, tmp) -> np.ndarray:
    """espeak-ng (22.05 kHz) -> 16 kHz f32 via the server's own decoder."""
    path = tmp / "say.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return decode_audio(path.read_bytes()).samples


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def package(dims: dict, task: str, seed: int, long_audio: dict | None = None):
    g = torch.Generator().manual_seed(seed)
    L, d, V, plen = dims["L"], dims["d"], dims["V"], 3
    meta = PackageMeta(task=task, labels=("speech", "silence"), backbone_fingerprint=dims["fingerprint"],
                       prompt_length=plen, long_audio=long_audio or {})
    return new_package(meta, torch.randn(L, plen, d, generator=g), torch.randn(L, plen, d, generator=g),
                       torch.randn(plen, d, generator=g), torch.randn(d, generator=g),
                       torch.randn(6, V, generator=g) * 4)


class Fixture:
    def __init__(self, srv: LiveServer, clip: bytes, ref: Runtime, keys: dict[str, str]):
        self.srv, self.clip, self.ref, self.keys = srv, clip, ref, keys
        self.samples = decode_audio(clip, max_seconds=None).samples

    def probs(self, task: str, start_s: float, end_s: float) -> np.ndarray:
        piece = self.samples[round(start_s * RATE):round(end_s * RATE)]
        units = self.ref.extract_units([piece])[0].units
        return self.ref.classify([units], [self.keys[task]])[0]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("long")
    talk = speech("open the door and turn on the light in the kitchen", tmp)
    rng = np.random.default_rng(0)
    quiet = (0.001 * rng.standard_normal(int(2.5 * RATE))).astype(np.float32)
    clip = wav(np.concatenate([talk, quiet, talk, quiet]))
    with LiveServer(tmp / "srv", SPEECHPROMPT_MAX_AUDIO_SECONDS=str(MAX_S),
                    SPEECHPROMPT_MAX_LONG_AUDIO_SECONDS=str(LONG_S)) as srv:
        dims = srv.dims()
        ref = Runtime.load(srv.bundle)
        samples = decode_audio(clip, max_seconds=None).samples
        speech_units = ref.extract_units([samples[RATE // 2:RATE // 2 + RATE]])[0].units
        quiet_at = talk.size + RATE // 2
        quiet_units = ref.extract_units([samples[quiet_at:quiet_at + RATE]])[0].units
        for seed in range(200):  # a vad-like fixture: its label on speech differs from its label on silence
            pkg = package(dims, "vad-fix", seed, {"policy": "window", "window": WINDOW_S, "hop": HOP_S})
            ref.add_task("probe", pkg)
            a, b = (ref.classify([u], ["probe"])[0] for u in (speech_units, quiet_units))
            ref.remove_task("probe")
            if a.argmax() != b.argmax():
                break
        else:
            raise AssertionError("no seed gives a vad-like fixture task")
        pkgs = {"vad-fix": pkg, "trunc-fix": package(dims, "trunc-fix", 1, {"policy": "truncate"}),
                "rej-fix": package(dims, "rej-fix", 2)}
        keys = {}
        for task, p in pkgs.items():
            r = srv.http.put(f"/v1/tasks/{task}", content=p.data, headers=ADMIN)
            assert r.status_code == 201, r.text
            keys[task] = f"{task}@{p.version}"
            ref.add_task(keys[task], p)
        yield Fixture(srv, clip, ref, keys)


def check_windowed(fx: Fixture, item: dict, window: float, hop: float) -> None:
    duration = fx.samples.size / RATE
    wins = item["windows"]
    assert item["long_audio"] == {"policy": "window", "window": window, "hop": hop, "windows": len(wins)}
    assert wins[0]["start"] == 0.0 and wins[-1]["end"] == pytest.approx(duration)
    assert all(w["end"] - w["start"] == pytest.approx(window) for w in wins)
    assert all(b["start"] - a["start"] == pytest.approx(hop) for a, b in zip(wins[:-2], wins[1:-1]))
    probs = []
    for w in wins:  # each window equals the reference runtime on exactly those samples
        ref = fx.probs(item["task"], w["start"], w["end"])
        np.testing.assert_allclose([w["scores"][k] for k in ("speech", "silence")], ref, rtol=1e-4, atol=1e-6)
        assert w["label"] == ("speech", "silence")[int(ref.argmax())]
        probs.append(ref)
    mean = np.mean(probs, axis=0)
    assert item["label"] == ("speech", "silence")[int(mean.argmax())]
    assert {s["label"]: s["score"] for s in item["scores"]} == pytest.approx(dict(zip(("speech", "silence"), mean)),
                                                                           rel=1e-4)
    spans = item["spans"]
    assert spans[0]["start"] == 0.0 and spans[-1]["end"] == pytest.approx(duration)
    assert all(a["end"] == b["start"] and a["label"] != b["label"] for a, b in zip(spans, spans[1:]))


def cache_counts(srv: LiveServer) -> tuple[float, float]:
    text = srv.http.get("/metrics").text
    value = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln.startswith("sp_units_cache_")}
    return value["sp_units_cache_hits_total"], value["sp_units_cache_misses_total"]


def test_window_policy_from_package_metadata_lists_every_window_and_labels_differ(fx):
    before = cache_counts(fx.srv)
    r = fx.srv.http.post("/v1/tasks/vad-fix/classify?top_k=2", content=fx.clip, headers=WAV)
    assert cache_counts(fx.srv) == before  # windows stay out of the units cache
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == fx.keys["vad-fix"].split("@")[1]
    assert body["audio"]["duration_s"] == pytest.approx(fx.samples.size / RATE)
    check_windowed(fx, body, WINDOW_S, HOP_S)
    assert len({w["label"] for w in body["windows"]}) == 2 and len(body["spans"]) >= 2


def test_truncate_policy_scores_the_first_max_audio_seconds(fx):
    r = fx.srv.http.post("/v1/tasks/trunc-fix/classify?top_k=2", content=fx.clip, headers=WAV)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["long_audio"] == {"policy": "truncate", "scored_s": MAX_S}
    ref = fx.probs("trunc-fix", 0.0, MAX_S)
    assert {s["label"]: s["score"] for s in body["scores"]} == pytest.approx(dict(zip(("speech", "silence"), ref)),
                                                                           rel=1e-4)


def test_reject_policy_is_413_and_a_request_can_override_it(fx):
    body = assert_problem(fx.srv.http.post("/v1/tasks/rej-fix/classify", content=fx.clip, headers=WAV), 413,
                          "audio_too_long")
    hint = f"or up to {LONG_S:g} s with long_audio=truncate|window in the query"  # the override, named
    assert body["accepted"] == f"at most {MAX_S:g} s of audio, {hint}"
    r = fx.srv.http.post("/v1/tasks/rej-fix/classify?long_audio=window&window=2&hop=1", content=fx.clip,
                         headers=WAV)
    assert r.status_code == 200, r.text
    check_windowed(fx, r.json(), 2.0, 1.0)
    body = assert_problem(fx.srv.http.post("/v1/tasks/vad-fix/classify?long_audio=reject", content=fx.clip,
                                           headers=WAV), 413, "audio_too_long")
    assert body["accepted"] == f"at most {MAX_S:g} s of audio"  # asked for reject: no other way offered
    over = wav(np.zeros(int((LONG_S + 1) * RATE), np.float32) + 0.01)  # its header says 41 s: no policy takes it
    body = assert_problem(fx.srv.http.post("/v1/tasks/rej-fix/classify", content=over, headers=WAV), 413,
                          "audio_too_long")
    assert body["accepted"] == f"at most {MAX_S:g} s of audio"
    r = fx.srv.http.post("/v1/classify?tasks=nope,nope2", content=fx.clip, headers=WAV)  # no task loads
    assert r.status_code == 413 and "long_audio" not in r.json()["accepted"]


def test_multi_task_call_applies_each_tasks_policy(fx):
    r = fx.srv.http.post("/v1/classify?tasks=vad-fix,trunc-fix,rej-fix&top_k=2", content=fx.clip, headers=WAV)
    assert r.status_code == 200, r.text
    items = {i["task"]: i for i in r.json()["results"]}
    check_windowed(fx, items["vad-fix"], WINDOW_S, HOP_S)
    assert items["trunc-fix"]["long_audio"]["policy"] == "truncate" and "windows" not in items["trunc-fix"]
    assert items["rej-fix"]["error"]["status"] == 413
    assert "long_audio=truncate|window" in items["rej-fix"]["error"]["accepted"]


def test_a_short_clip_is_windowed_only_on_request(fx):
    short = wav(fx.samples[:2 * RATE])
    plain = fx.srv.http.post("/v1/tasks/vad-fix/classify", content=short, headers=WAV).json()
    assert "windows" not in plain and plain["audio"]["units"] > 0
    r = fx.srv.http.post("/v1/tasks/vad-fix/classify?window=1&hop=1", content=short, headers=WAV)
    assert [(w["start"], w["end"]) for w in r.json()["windows"]] == [(0.0, 1.0), (1.0, 2.0)]


@pytest.mark.parametrize("query", ["window=1&hop=2", "window=1&hop=0.09", "window=0.2&hop=0.04",
                                   f"window={MAX_S + 1}", "long_audio=chop"])
def test_bad_window_parameters_are_400(fx, query):
    assert_problem(fx.srv.http.post(f"/v1/tasks/vad-fix/classify?{query}", content=fx.clip, headers=WAV), 400,
                   "bad_request" if "chop" not in query else "invalid_request")


@pytest.mark.parametrize("query", ["window=nan", "window=inf", "hop=nan&window=2"])
def test_non_finite_window_or_hop_is_400_saying_finite(fx, query):
    r = fx.srv.http.post(f"/v1/tasks/vad-fix/classify?{query}", content=fx.clip, headers=WAV)
    assert_problem(r, 400, "invalid_request")
    assert "finite" in r.text


def test_clip_over_the_long_audio_limit_is_413(fx):
    over = wav(np.zeros(int((LONG_S + 1) * RATE), np.float32) + 0.01)
    body = assert_problem(fx.srv.http.post("/v1/tasks/vad-fix/classify", content=over, headers=WAV), 413,
                          "audio_too_long")
    assert body["accepted"] == f"at most {LONG_S:g} s of audio"  # past what any policy takes


def test_short_requests_still_answer_while_a_long_clip_is_windowed(fx):
    """The windows of a long clip share the batcher with everyone: short classify calls sent meanwhile are not
    queued behind all of them (at most max_batch_rows / tasks windows of one request wait at once)."""
    long_clip = wav(np.tile(fx.samples, 3))  # ~35 s; window 1 s, hop 0.1 s: ~340 windows
    short = wav(fx.samples[:RATE])
    span: dict[str, float] = {}

    def windowed() -> None:
        span["start"] = time.monotonic()
        r = fx.srv.http.post("/v1/tasks/vad-fix/classify?window=1&hop=0.1", content=long_clip, headers=WAV,
                             timeout=120)
        span["end"] = time.monotonic()
        assert r.status_code == 200 and len(r.json()["windows"]) > 300, r.text

    thread = threading.Thread(target=windowed)
    thread.start()
    shorts = []
    while thread.is_alive():
        t0 = time.monotonic()
        r = fx.srv.http.post("/v1/tasks/trunc-fix/classify", content=short, headers=WAV)
        assert r.status_code == 200 and "long_audio" not in r.json(), r.text
        shorts.append((t0, time.monotonic()))
    thread.join()
    during = [(a, b) for a, b in shorts if b < span["end"]]
    assert during, "no short request finished while the long one ran"
    assert max(b - a for a, b in during) < (span["end"] - span["start"]) / 2

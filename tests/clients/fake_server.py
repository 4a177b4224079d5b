"""A small FastAPI stand-in for the SpeechPrompt server's v1 HTTP contract, for client tests.

It is faithful where a client can tell: audio is really decoded (``speechprompt.audio.decode_audio``, so
format / empty / too-long errors are the real ones), packages are really validated
(``speechprompt.package.read_package`` + ``check_compatible`` against a tiny fake backbone), versions are
content digests, scores are a probability distribution over the task's labels (deterministic per clip and
task version, not a model), errors are ``application/problem+json``. Extra endpoints under ``/_fake/``
inject faults (any status, headers, JSON or text body for the next N requests on a path) and count requests,
for the tests that need a 429/503/504 on demand.

``ServerThread`` runs any ASGI app with uvicorn on 127.0.0.1 and a free port, in a daemon thread.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from speechprompt import audio as core_audio
from speechprompt import package as core_package

ADMIN_TOKEN = "fake-admin-token"
TASK_RE = core_package.TASK_NAME_RE
FAKE_BACKBONE = {"kind": "gslm", "name": "fake-tiny", "fingerprint": hashlib.sha256(b"fake-tiny").hexdigest(),
                 "sample_rate": 16000, "hop_size": 320, "encoder": {"layers_kept": 2, "dim": 8},
                 "codebook_size": 10, "unit_lm": {"layers": 2, "embed_dim": 8, "heads": 2, "ffn_dim": 16,
                                                   "vocab_size": 14}, "parameters": 0, "device": "cpu"}


def make_package_bytes(task: str, labels: list[str], backbone: dict[str, Any], seed: int = 0,
                       prompt_length: int = 2) -> bytes:
    """A valid task prompt package (random float32 prompts) for the backbone described by ``GET /v1/backbone``."""
    import torch

    lm = backbone["unit_lm"]
    L, d, V = int(lm["layers"]), int(lm["embed_dim"]), int(lm["vocab_size"])
    g = torch.Generator().manual_seed(seed)
    meta = core_package.PackageMeta(task=task, labels=tuple(labels), backbone_fingerprint=backbone["fingerprint"],
                                    backbone_kind=backbone.get("kind", "gslm"), prompt_length=prompt_length,
                                    created="2024-01-01T00:00:00+00:00", training={"note": "client test"})
    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02
    return core_package.write_package(meta, deep_key=r(L, prompt_length, d), deep_value=r(L, prompt_length, d),
                                      input_prompt=r(prompt_length, d), separator=r(d),
                                      verbalizer=r(len(labels) + core_package.NUM_SPECIAL, V))


def problem(status: int, code: str, title: str, detail: str, accepted: Any = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail}
    if accepted is not None:
        body["accepted"] = accepted
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


class FakeState:
    """Tasks (name -> package), the units 'cache', injected faults and request counts."""

    def __init__(self, max_upload_bytes: int = 8 * 1024 * 1024, max_audio_seconds: float = 30.0):
        self.max_upload_bytes = max_upload_bytes
        self.max_audio_seconds = max_audio_seconds
        self.tasks: dict[str, core_package.TaskPackage] = {}
        self.created: dict[str, str] = {}
        self.seen_clips: set[str] = set()
        self.faults: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, data: bytes) -> core_package.TaskPackage:
        pkg = core_package.read_package(data, max_bytes=self.max_upload_bytes)
        lm = FAKE_BACKBONE["unit_lm"]
        core_package.check_compatible(pkg, fingerprint=FAKE_BACKBONE["fingerprint"], kind=FAKE_BACKBONE["kind"],
                                      layers=lm["layers"], dim=lm["embed_dim"], vocab_size=lm["vocab_size"])
        return pkg

    def task_json(self, name: str, with_meta: bool = False) -> dict[str, Any]:
        pkg = self.tasks[name]
        out = {"name": name, "version": pkg.version, "labels": list(pkg.meta.labels),
               "num_classes": len(pkg.meta.labels), "backbone": FAKE_BACKBONE["fingerprint"], "state": "resident",
               "created": self.created[name], "size_bytes": len(pkg.data)}
        if with_meta:
            out["metadata"] = {"prompt_length": pkg.meta.prompt_length, "training": pkg.meta.training,
                               "package_created": pkg.meta.created}
        return out


def _scores(pcm_digest: str, pkg: core_package.TaskPackage, top_k: int | None) -> list[dict[str, Any]]:
    """A softmax over the labels, seeded by (clip, task version): deterministic, sums to 1."""
    seed = int(hashlib.sha256(f"{pcm_digest}:{pkg.version}".encode()).hexdigest()[:8], 16)
    logits = np.random.default_rng(seed).normal(size=len(pkg.meta.labels)) * 2.0
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")[: top_k or len(p)]
    return [{"label": pkg.meta.labels[i], "score": float(p[i])} for i in order]


def create_app(state: FakeState | None = None, seed_tasks: bool = True) -> FastAPI:
    """The fake server. ``seed_tasks`` preloads ``demo-yesno`` (yes/no) and ``demo-digits`` (zero..four)."""
    st = state or FakeState()
    app = FastAPI()
    app.state.fake = st
    if seed_tasks:
        for i, (name, labels) in enumerate((("demo-yesno", ["yes", "no"]),
                                            ("demo-digits", ["zero", "one", "two", "three", "four"]))):
            st.tasks[name] = st.add(make_package_bytes(name, labels, FAKE_BACKBONE, seed=i))
            st.created[name] = "2024-01-01T00:00:00+00:00"

    @app.middleware("http")
    async def faults(request: Request, call_next):
        path = request.url.path
        if not path.startswith("/_fake/"):
            with st.lock:
                st.requests[path] += 1
                fault = next((f for f in st.faults if path.startswith(f["path"]) and f["count"] > 0), None)
                if fault is not None:
                    fault["count"] -= 1
            if fault is not None:
                await request.body()
                if "text" in fault:
                    return PlainTextResponse(fault["text"], status_code=fault["status"], headers=fault.get("headers"))
                return JSONResponse(fault.get("body", {}), status_code=fault["status"], headers=fault.get("headers"),
                                    media_type="application/problem+json")
        return await call_next(request)

    @app.post("/_fake/faults")
    async def add_fault(spec: dict[str, Any]) -> dict[str, Any]:
        with st.lock:
            st.faults.append({"count": 1, **spec})
        return {"ok": True}

    @app.delete("/_fake/faults")
    async def clear_faults() -> dict[str, Any]:
        with st.lock:
            st.faults.clear()
            st.requests.clear()
        return {"ok": True}

    @app.get("/_fake/requests")
    async def requests() -> dict[str, int]:
        return dict(st.requests)

    async def read_audio(request: Request) -> tuple[bytes, float] | JSONResponse:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            part = form.get("audio")
            if part is None or isinstance(part, str):
                return problem(400, "bad_request", "Bad request", "multipart body lacks a file field 'audio'")
            data = await part.read()
        elif ctype.startswith("audio/"):
            data = await request.body()
        else:
            return problem(415, "unsupported_media_type", "Unsupported media type",
                           f"content type {ctype!r} is not accepted",
                           accepted="multipart/form-data with field 'audio', or a body with an audio/* type")
        if len(data) > st.max_upload_bytes:
            return problem(413, "payload_too_large", "Payload too large",
                           f"body is {len(data)} bytes; the limit is {st.max_upload_bytes}")
        t0 = time.perf_counter()
        return data, t0

    def decode(data: bytes) -> core_audio.DecodedAudio | JSONResponse:
        try:
            return core_audio.decode_audio(data, max_seconds=st.max_audio_seconds)
        except core_audio.AudioError as e:
            return problem(e.status, e.code, "Unusable audio" if e.status == 422 else "Audio rejected", str(e),
                           accepted=e.accepted)

    def audio_json(dec: core_audio.DecodedAudio) -> dict[str, Any]:
        frames = max(0, (dec.samples.size - 400) // 320 + 1)
        return {"input_sample_rate": dec.input_sample_rate, "input_channels": dec.input_channels,
                "input_format": dec.input_format, "duration_s": dec.duration_s, "resampled": dec.resampled,
                "frames": int(frames), "units": int((frames + 1) // 2)}

    def result(name: str, digest: str, dec, top_k, hit: bool, timings: dict[str, float]) -> dict[str, Any]:
        pkg = st.tasks[name]
        scores = _scores(digest, pkg, top_k)
        return {"task": name, "version": pkg.version, "label": scores[0]["label"], "scores": scores,
                "backbone": FAKE_BACKBONE["fingerprint"], "audio": audio_json(dec), "timings": timings,
                "units_cache_hit": hit}

    def unknown(name: str) -> JSONResponse:
        return problem(404, "unknown_task", "Unknown task", f"no task named {name!r}",
                       accepted=sorted(st.tasks))

    async def prepare(request: Request):
        got = await read_audio(request)
        if isinstance(got, Response):
            return got
        data, t0 = got
        dec = decode(data)
        if isinstance(dec, Response):
            return dec
        digest = hashlib.sha256(dec.samples.tobytes()).hexdigest()
        with st.lock:
            hit = digest in st.seen_clips
            st.seen_clips.add(digest)
        ms = (time.perf_counter() - t0) * 1000
        return dec, digest, hit, {"decode_ms": ms, "speech_trim_ms": 0.0, "queue_ms": 0.0, "encode_ms": 0.0, "lm_ms": 0.0, "total_ms": ms}

    def top_k_of(request: Request) -> int | None | JSONResponse:
        raw = request.query_params.get("top_k")
        if raw is None:
            return None
        if not raw.isdigit() or int(raw) < 1:
            return problem(400, "bad_request", "Bad request", f"top_k must be a positive integer, got {raw!r}")
        return int(raw)

    @app.post("/v1/tasks/{task}/classify")
    async def classify(task: str, request: Request):
        if task not in st.tasks:
            return unknown(task)
        top_k = top_k_of(request)
        if isinstance(top_k, Response):
            return top_k
        got = await prepare(request)
        if isinstance(got, Response):
            return got
        dec, digest, hit, timings = got
        return result(task, digest, dec, top_k, hit, timings)

    @app.post("/v1/classify")
    async def classify_multi(request: Request):
        names = [t for t in request.query_params.get("tasks", "").split(",") if t]
        if not names:
            return problem(400, "bad_request", "Bad request", "give tasks=a,b,...")
        top_k = top_k_of(request)
        if isinstance(top_k, Response):
            return top_k
        got = await prepare(request)
        if isinstance(got, Response):
            return got
        dec, digest, hit, timings = got
        results = []
        for name in names:
            if name in st.tasks:
                r = result(name, digest, dec, top_k, hit, timings)
                results.append({k: v for k, v in r.items() if k not in ("audio", "timings", "units_cache_hit")})
            else:
                results.append({"task": name, "error": json.loads(unknown(name).body)})
        return {"results": results, "audio": audio_json(dec), "timings": timings, "units_cache_hit": hit}

    @app.get("/v1/tasks")
    async def list_tasks():
        return {"tasks": [st.task_json(n) for n in sorted(st.tasks)]}

    @app.get("/v1/tasks/{task}")
    async def get_task(task: str):
        return st.task_json(task, with_meta=True) if task in st.tasks else unknown(task)

    def check_admin(request: Request) -> JSONResponse | None:
        auth = request.headers.get("authorization")
        if not auth or not auth.startswith("Bearer "):
            return problem(401, "unauthorized", "Missing credentials", "this endpoint needs a Bearer token",
                           headers={"WWW-Authenticate": "Bearer"})
        if auth.removeprefix("Bearer ") != ADMIN_TOKEN:
            return problem(403, "forbidden", "Forbidden", "the token is not the admin token")
        return None

    @app.put("/v1/tasks/{task}")
    async def put_task(task: str, request: Request):
        if (denied := check_admin(request)) is not None:
            return denied
        if not TASK_RE.fullmatch(task):
            return problem(400, "invalid_task_name", "Invalid task name", f"{task!r} is not a task name",
                           accepted=TASK_RE.pattern)
        data = await request.body()
        try:
            pkg = st.add(data)
        except core_package.PackageError as e:
            return problem(e.status, e.code, "Invalid package", str(e), accepted=e.accepted)
        with st.lock:
            st.tasks[task] = pkg
            st.created[task] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return JSONResponse({"task": task, "version": pkg.version}, status_code=201)

    @app.delete("/v1/tasks/{task}")
    async def delete_task(task: str, request: Request):
        if (denied := check_admin(request)) is not None:
            return denied
        if task not in st.tasks:
            return unknown(task)
        with st.lock:
            del st.tasks[task]
        return {"task": task, "deleted": True}

    @app.get("/v1/backbone")
    async def backbone():
        return FAKE_BACKBONE

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready", "tasks": len(st.tasks)}

    @app.get("/metrics")
    async def metrics():
        lines = [f'sp_fake_requests_total{{path="{p}"}} {n}' for p, n in sorted(st.requests.items())]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return app


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1:<free port> in a daemon thread (``start``/``stop``)."""

    def __init__(self, app: Any):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self, timeout_s: float = 10.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

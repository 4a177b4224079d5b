"""WebSocket ``/v1/stream?tasks=a,b[&window=S&hop=S]``: live audio in, one result per hop out (docs/api.md).

Protocol: client TEXT ``{"type": "start", "sample_rate": 16000, "encoding": "pcm16"|"f32"}``, then BINARY frames
of little-endian mono samples, then TEXT ``{"type": "stop"}``. Server TEXT ``ready`` (tasks, versions, labels,
window, hop), a ``result`` per window as soon as its audio is in, and after stop a ``summary``; then close 1000.
On error: TEXT ``{"type": "error", "code", "detail"}`` then a close code (:data:`CLOSE_BY_STATUS`).

Windows go through the same batcher as classify (``server/windows.py``); the task versions are leased for the
whole session (every result of a session names the same version). A session holds one admission slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from ..errors import BadRequest, ClientGone, error_code, to_problem
from ..inference import parse_tasks
from ..registry import Lease
from ..service import Service
from ..speech_trims import trim_of
from ..stream_audio import TARGET_RATE, BadStreamData, FrameDecoder, SampleBuffer, parse_start
from ..windows import (
    Window,
    aggregate,
    choose_window,
    first_error,
    plan_windows,
    row_probs,
    score_window,
    seconds_to_samples,
    task_scores,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["stream"])

# close codes (RFC 6455): by the HTTP status the same error gets from the error table
CLOSE_BY_STATUS = {400: 1008, 401: 1008, 403: 1008, 404: 1008, 409: 1008, 413: 1009, 415: 1003, 422: 1003,
                   429: 1013, 503: 1013, 504: 1013}
BAD_DATA, POLICY, TOO_BIG, OVERLOADED, SERVER_ERROR = 1003, 1008, 1009, 1013, 1011


class StreamClosed(Exception):
    """End the session with an error message ``code``/``detail`` and close code ``close``."""

    def __init__(self, close: int, code: str, detail: str):
        super().__init__(detail)
        self.close, self.code, self.detail = close, code, detail


def closing(exc: BaseException) -> StreamClosed:
    """Any error -> the error message and close code it ends a stream with."""
    if isinstance(exc, StreamClosed):
        return exc
    if isinstance(exc, BadStreamData):
        return StreamClosed(BAD_DATA, exc.code, exc.detail)
    p = to_problem(exc)
    return StreamClosed(CLOSE_BY_STATUS.get(p.status, SERVER_ERROR), error_code(exc), p.body["detail"])


def _float_param(ws: WebSocket, name: str) -> float | None:
    raw = ws.query_params.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not a number of seconds") from None


class Session:
    """One stream: received samples, the windows scored so far and their probabilities per task."""

    def __init__(self, service: Service, ws: WebSocket, leases: list[Lease], window_s: float, hop_s: float):
        self.service, self.ws, self.leases = service, ws, leases
        self.window, self.hop = seconds_to_samples(window_s), seconds_to_samples(hop_s)
        s = service.settings
        self.max_samples = seconds_to_samples(s.max_long_audio_seconds)
        self.max_backlog = seconds_to_samples(s.stream_buffer_seconds)
        self.buf = SampleBuffer()
        self.scored: list[Window] = []
        self.probs: dict[str, list[np.ndarray]] = {le.task: [] for le in leases}
        self.stopped = False
        self.wake = asyncio.Event()

    async def receive(self, decoder: FrameDecoder) -> None:
        """Read frames until ``stop``; enforces the session length (1009) and the bounded buffer (1013)."""
        idle = self.service.settings.body_timeout_s
        while True:
            msg = await _next_message(self.ws, idle)
            if msg.get("bytes") is not None:
                self._add(await asyncio.to_thread(decoder.decode, msg["bytes"]))
                continue
            if _json(msg.get("text")).get("type") != "stop":
                raise BadStreamData("bad_message", 'after start, send binary frames and then {"type": "stop"}')
            self._add(await asyncio.to_thread(decoder.flush), checked=False)
            self.stopped = True
            self.wake.set()
            return

    def _add(self, x: np.ndarray, *, checked: bool = True) -> None:
        self.buf.append(x)
        if checked and self.buf.total > self.max_samples:
            raise StreamClosed(TOO_BIG, "session_too_long", "the stream is longer than "
                               f"{self.service.settings.max_long_audio_seconds:g} s (SPEECHPROMPT_MAX_LONG_AUDIO_SECONDS)")
        scored_to = self.scored[-1].end if self.scored else 0
        if checked and self.buf.total - scored_to > self.max_backlog:
            raise StreamClosed(OVERLOADED, "client_outran_server", "the client sent more than "
                               f"{self.service.settings.stream_buffer_seconds:g} s of audio ahead of the last scored "
                               "window; send audio no faster than results come back")
        self.wake.set()

    async def score(self) -> None:
        """Score each window once its audio is in (all tasks in one job); after stop, the tail, then return."""
        deadline_s = self.service.settings.request_deadline_s
        while True:
            await self.wake.wait()
            self.wake.clear()
            stopped = self.stopped
            for w in plan_windows(self.buf.total, self.window, self.hop, final=stopped)[len(self.scored):]:
                result = await score_window(self.service, self.buf.get(w.start, w.end), self.leases, deadline_s)
                tasks = {}
                for lease, row in zip(self.leases, result.rows, strict=True):
                    p = row_probs(lease, row)
                    self.probs[lease.task].append(p)
                    tasks[lease.task] = task_scores(lease, p)
                self.scored.append(w)
                self.service.metrics.windows.labels(source="stream").inc()
                self.buf.keep_from(w.start + 1)  # every later window starts after this one
                start, end = w.seconds
                await self.ws.send_json({"type": "result", "start": start, "end": end, "tasks": tasks})
            if stopped:
                return

    def summary(self) -> dict:
        return {"type": "summary", "duration": round(self.buf.total / TARGET_RATE, 6), "windows": len(self.scored),
                "tasks": {le.task: aggregate(le, self.scored, self.probs[le.task]) for le in self.leases}}


def _json(text: Any) -> dict:
    try:
        msg = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        raise BadStreamData("bad_message", "text messages must be JSON objects")
    return msg


async def _next_message(ws: WebSocket, idle_s: float) -> dict:
    try:
        msg = await asyncio.wait_for(ws.receive(), idle_s)
    except TimeoutError:
        raise StreamClosed(POLICY, "idle_timeout", f"nothing received for {idle_s:g} s") from None
    if msg["type"] == "websocket.disconnect":
        raise ClientGone("the client closed the stream")
    return msg


async def _run(ws: WebSocket, service: Service, leases: list[Lease]) -> None:
    s = service.settings
    window_s, hop_s = choose_window(leases, _float_param(ws, "window"), _float_param(ws, "hop"),
                                    default_window_s=s.window_seconds, default_hop_s=s.hop_seconds,
                                    max_window_s=min(service.max_audio_seconds, s.stream_buffer_seconds))
    rate, encoding = parse_start((await _next_message(ws, s.body_timeout_s)).get("text"))
    session = Session(service, ws, leases, window_s, hop_s)
    await ws.send_json({"type": "ready", "window": window_s, "hop": hop_s, "sample_rate": rate,
                        "buffer_seconds": s.stream_buffer_seconds, "max_seconds": s.max_long_audio_seconds,
                        "tasks": {le.task: _task_facts(le) for le in leases}})
    async with asyncio.TaskGroup() as group:
        group.create_task(session.receive(FrameDecoder(rate, encoding)))
        group.create_task(session.score())
    await ws.send_json(session.summary())


def _task_facts(lease: Lease) -> dict:
    """A task of the ``ready`` message: version, labels, and ``speech_trim: {applied: false, when}`` when its package
    names a speech trim, for every clip or for recordings (a stream's windows are scored as they are)."""
    out = {"version": lease.version, "labels": list(lease.labels)}
    if trim_of(lease, "recording") is not None:
        out["speech_trim"] = {"applied": False, "when": lease.entry.meta.trim_when}
    return out


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    """Stream audio, get a result per hop and a summary (protocol in docs/api.md)."""
    service: Service = ws.app.state.service
    await ws.accept()
    leases: list[Lease] = []
    try:
        service.require_ready()
        names = parse_tasks(ws.query_params.get("tasks", ""))
        with service.admission.slot():
            service.metrics.stream_sessions.inc()
            try:
                for name in names:
                    leases.append(await service.registry.acquire(name))
                await _run(ws, service, leases)
            finally:
                service.metrics.stream_sessions.dec()
                for lease in leases:
                    service.registry.release(lease)
    except Exception as exc:  # noqa: BLE001 - every failure ends the stream with an error message + close code
        await _fail(ws, service, first_error(exc))
        return
    await ws.close(1000)


async def _fail(ws: WebSocket, service: Service, exc: BaseException) -> None:
    if isinstance(exc, ClientGone | WebSocketDisconnect):
        return
    err = closing(exc)
    service.metrics.failures.labels(code=err.code).inc()
    if err.close == SERVER_ERROR:
        log.error("stream failed", exc_info=exc)
    try:
        await ws.send_json({"type": "error", "code": err.code, "detail": err.detail})
        await ws.close(err.close, err.detail[:120])
    except (WebSocketDisconnect, RuntimeError):
        pass


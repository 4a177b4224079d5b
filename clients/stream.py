"""Streaming client for WebSocket ``/v1/stream``: ``stream(...)`` (blocking iterator) and ``astream(...)`` (async).

Both send the JSON start message, then the audio in binary frames (``chunk_s`` seconds each), then ``stop``,
and yield a :class:`StreamResult` per window as the server sends it and a :class:`StreamSummary` last. They
never run ahead of the server: at most 90 % of the server's buffer (``buffer_seconds`` in its ready message)
is sent beyond the end of the last result received (more only while the server cannot finish a window without it), so the server's bounded buffer never overflows (close
1013). An error message from the server, or a close without a summary, raises :class:`StreamError`.

Audio: a WAV file (path, bytes or binary file object; 16-bit PCM, any rate, channels averaged) or an iterable of raw little-endian mono frames (bytes) at ``sample_rate`` in ``encoding``
(``pcm16`` or ``f32``), e.g. ``arecord -f S16_LE -c 1 -r 16000 -t raw`` output. Talks WebSocket only
(``websockets``); no torch, nothing from the server.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import wave
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import numpy as np
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from .errors import SpeechPromptError, TransportError


class StreamError(SpeechPromptError):
    """The server ended the stream: ``code`` (e.g. ``unknown_task``, ``client_outran_server``), ``detail`` and
    the WebSocket ``close_code`` (1003 bad data, 1008 policy / unknown task, 1009 too long, 1013 overloaded)."""

    def __init__(self, code: str, detail: str, close_code: int | None = None):
        super().__init__(code, detail)
        self.code, self.detail, self.close_code = code, detail, close_code

    def __str__(self) -> str:
        return f"[{self.code}] {self.detail} (close {self.close_code})"


@dataclass(frozen=True)
class WindowScores:
    """One task on one window: ``label``, ``scores`` (every label's probability), task ``version``."""

    label: str
    scores: dict[str, float]
    version: str


@dataclass(frozen=True)
class StreamResult:
    """One window: ``start``/``end`` in seconds from the stream's start; ``tasks`` by name."""

    start: float
    end: float
    tasks: dict[str, WindowScores]


@dataclass(frozen=True)
class TaskSummary:
    """One task over the stream: label of the mean, ``mean_scores``, ``spans`` (label, start, end seconds)."""

    label: str | None
    mean_scores: dict[str, float]
    spans: list[dict[str, Any]]
    version: str


@dataclass(frozen=True)
class StreamSummary:
    """The last event: ``duration`` (s of audio received), ``windows`` scored, ``tasks`` by name."""

    duration: float
    windows: int
    tasks: dict[str, TaskSummary]


def stream_url(base_url: str, tasks: Iterable[str] | str, window: float | None, hop: float | None) -> str:
    """``http://host:port`` -> ``ws://host:port/v1/stream?tasks=...`` (https -> wss)."""
    names = tasks if isinstance(tasks, str) else ",".join(tasks)
    query = {"tasks": names, **({"window": window} if window is not None else {}),
             **({"hop": hop} if hop is not None else {})}
    scheme, rest = base_url.rstrip("/").split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/stream?{urlencode(query)}"


def wav_frames(audio: Any, chunk_s: float) -> tuple[int, str, Iterator[bytes]]:
    """A WAV (path, bytes or binary file) -> (rate, encoding, frames of ``chunk_s`` seconds, mono)."""
    data = bytes(audio) if isinstance(audio, bytes | bytearray | memoryview) else None
    if data is None and hasattr(audio, "read"):
        data = audio.read()
    source = io.BytesIO(data) if data is not None else os.fspath(audio)
    try:
        with wave.open(source, "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        why = str(e) or "empty or truncated file"
        raise ValueError(f"not a PCM WAV file ({why}); send raw frames with sample_rate and encoding instead") from e
    if width != 2:
        raise ValueError(f"WAV samples of {8 * width} bits; 16-bit PCM is expected")
    x = np.frombuffer(raw, "<i2").reshape(-1, channels)
    mono = x[:, 0] if channels == 1 else np.round(x.mean(axis=1)).astype("<i2")
    step = max(1, int(rate * chunk_s))
    return rate, "pcm16", (mono[i:i + step].tobytes() for i in range(0, mono.size, step))


class _Progress:
    """What was sent and what came back: the credit rule and the parsing of server messages."""

    RESAMPLER_SLACK_S = 0.1  # audio a server-side resampler may hold back before it emits samples

    def __init__(self, rate: int, encoding: str):
        self.bytes_per_s = rate * (2 if encoding == "pcm16" else 4)
        self.sent_s = 0.0
        self.scored_to = 0.0
        self.results = 0
        self.window = self.hop = 1.0
        self.limit = 2.0

    def ready(self, msg: dict) -> None:
        self.take(msg, "ready")
        self.window, self.hop = float(msg["window"]), float(msg["hop"])
        self.limit = 0.9 * float(msg.get("buffer_seconds", 2 * self.window))

    def may_send(self, frame: bytes) -> bool:
        """Within the server's buffer after this frame, or the server cannot answer until it gets more audio."""
        next_end = self.window if not self.results else self.scored_to + self.hop
        starved = self.sent_s < next_end + self.RESAMPLER_SLACK_S
        return starved or self.sent_s + len(frame) / self.bytes_per_s - self.scored_to <= self.limit

    def sent(self, frame: bytes) -> None:
        self.sent_s += len(frame) / self.bytes_per_s

    def take(self, msg: Any, expect: str | None = None) -> StreamResult | StreamSummary | None:
        if not isinstance(msg, dict) or "type" not in msg:
            raise StreamError("bad_message", f"the server sent {str(msg)[:80]!r}")
        if msg["type"] == "error":
            raise StreamError(str(msg.get("code")), str(msg.get("detail")))
        if expect is not None and msg["type"] != expect:
            raise StreamError("bad_message", f"expected {expect!r}, got {msg['type']!r}")
        if msg["type"] == "result":
            self.scored_to = max(self.scored_to, float(msg["end"]))
            self.results += 1
            return StreamResult(msg["start"], msg["end"], {t: WindowScores(v["label"], v["scores"], v["version"])
                                                           for t, v in msg["tasks"].items()})
        if msg["type"] == "summary":
            return StreamSummary(msg["duration"], msg.get("windows", 0), {
                t: TaskSummary(v["label"], v["mean_scores"], v["spans"], v["version"]) for t, v in msg["tasks"].items()})
        return None


def _source(audio: Any, sample_rate: int | None, encoding: str, chunk_s: float) -> tuple[int, str, Iterable[bytes]]:
    if isinstance(audio, str | bytes | bytearray | memoryview) or hasattr(audio, "read") or hasattr(audio, "__fspath__"):
        return wav_frames(audio, chunk_s)
    return sample_rate or 16000, encoding, audio


def stream(base_url: str, tasks: Iterable[str] | str, audio: Any, *, sample_rate: int | None = None,
           encoding: str = "pcm16", window: float | None = None, hop: float | None = None, chunk_s: float = 0.25,
           realtime: bool = False, timeout: float = 60.0) -> Iterator[StreamResult | StreamSummary]:
    """Stream ``audio`` to ``/v1/stream`` and yield results as they arrive, then the summary (blocking).

    ``realtime`` sleeps ``chunk_s`` between frames (a file played as if live). Raises StreamError (the server
    refused or ended the stream), TransportError (no connection), ValueError (audio this client cannot read).
    """
    rate, encoding, frames = _source(audio, sample_rate, encoding, chunk_s)
    progress = _Progress(rate, encoding)
    try:
        with connect(stream_url(base_url, tasks, window, hop), open_timeout=timeout, max_size=2 ** 24) as ws:
            try:
                ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": encoding}))
                progress.ready(_recv(ws, timeout))
                for frame in frames:
                    while not progress.may_send(frame):
                        yield progress.take(_recv(ws, timeout))
                    ws.send(frame)
                    progress.sent(frame)
                    while (msg := _recv(ws, 0)) is not None:
                        yield progress.take(msg)
                    if realtime:
                        time.sleep(chunk_s)
                ws.send(json.dumps({"type": "stop"}))
                while True:
                    event = progress.take(_recv(ws, timeout))
                    yield event
                    if isinstance(event, StreamSummary):
                        return
            except (StreamError, ConnectionClosed) as e:
                left = []
                try:  # the server's error message (if not read yet), then its close
                    while True:
                        left.append(ws.recv(timeout=5))
                except (ConnectionClosed, TimeoutError):
                    pass
                raise _ended(e, left, ws.close_code, ws.close_reason) from None
    except (OSError, InvalidHandshake, TimeoutError) as e:
        raise TransportError(f"stream to {base_url} failed: {e}") from e


def _ended(exc: BaseException, left: list, close_code: int | None, reason: str | None) -> StreamError:
    """The StreamError that ends a stream: the server's error message (already read, or among ``left``, the
    messages read after the failure) with the close code that followed it."""
    if isinstance(exc, StreamError):
        exc.close_code = exc.close_code or close_code
        return exc
    for text in reversed(left):
        try:
            msg = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(msg, dict) and msg.get("type") == "error":
            return StreamError(str(msg.get("code")), str(msg.get("detail")), close_code)
    return StreamError("closed", reason or "the server closed the stream", close_code)


def _recv(ws: Any, timeout: float) -> Any:
    try:
        text = ws.recv(timeout=timeout)
    except TimeoutError:
        if timeout == 0:
            return None
        raise
    return json.loads(text)


async def astream(base_url: str, tasks: Iterable[str] | str, audio: Any, *, sample_rate: int | None = None,
                  encoding: str = "pcm16", window: float | None = None, hop: float | None = None,
                  chunk_s: float = 0.25, realtime: bool = False,
                  timeout: float = 60.0) -> AsyncIterator[StreamResult | StreamSummary]:
    """Asyncio twin of :func:`stream` (same arguments, events and errors)."""
    rate, encoding, frames = _source(audio, sample_rate, encoding, chunk_s)
    progress = _Progress(rate, encoding)
    try:
        async with aconnect(stream_url(base_url, tasks, window, hop), open_timeout=timeout, max_size=2 ** 24) as ws:
            pending = asyncio.ensure_future(ws.recv())
            try:
                await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": encoding}))
                progress.ready(json.loads(await asyncio.wait_for(asyncio.shield(pending), timeout)))
                pending = asyncio.ensure_future(ws.recv())
                for frame in frames:
                    while not progress.may_send(frame) or pending.done():
                        yield progress.take(json.loads(await asyncio.wait_for(asyncio.shield(pending), timeout)))
                        pending = asyncio.ensure_future(ws.recv())
                    await ws.send(frame)
                    progress.sent(frame)
                    if realtime:
                        await asyncio.sleep(chunk_s)
                await ws.send(json.dumps({"type": "stop"}))
                while True:
                    event = progress.take(json.loads(await asyncio.wait_for(asyncio.shield(pending), timeout)))
                    yield event
                    if isinstance(event, StreamSummary):
                        return
                    pending = asyncio.ensure_future(ws.recv())
            except (StreamError, ConnectionClosed) as e:
                left = []
                try:  # the server's error message (if not read yet), then its close
                    if not pending.done() or pending.exception() is None:
                        left.append(await asyncio.wait_for(pending, 5))
                    while True:
                        left.append(await asyncio.wait_for(ws.recv(), 5))
                except (ConnectionClosed, TimeoutError):
                    pass
                raise _ended(e, left, ws.close_code, ws.close_reason) from None
            finally:
                pending.cancel()
    except (OSError, InvalidHandshake, TimeoutError) as e:
        raise TransportError(f"stream to {base_url} failed: {e}") from e

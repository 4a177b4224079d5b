"""HTTP clients for the SpeechPrompt server's v1 API: ``SpeechPromptClient`` (sync) and
``AsyncSpeechPromptClient`` (asyncio), both on httpx, with the same methods and results.

Requests are described once (``calls.py``: method, path, query, body, how to read the answer) and sent by
either client; only the sending loop (sleep vs ``await asyncio.sleep``) differs. Audio and packages are
read into memory before the first attempt, so a retry re-sends the exact same bytes.

Retries are opt-in (``retry=RetryPolicy(...)``): on 429 and 503 the client waits what ``Retry-After``
says (delta-seconds or HTTP date) or, without it, ``backoff_s * 2**attempt``; it never waits longer than
``max_delay_s`` for one attempt (a longer ``Retry-After`` raises at once) and gives up after
``max_retries`` retries by raising the last ``TooManyRequests`` / ``ServiceUnavailable``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import httpx

from .calls import (  # noqa: F401 - DEFAULT_URL, URL_ENV, TOKEN_ENV, sniff_content_type: re-exported
    DEFAULT_URL,
    NO_RETRY,
    TOKEN_ENV,
    URL_ENV,
    AudioInput,
    RetryPolicy,
    _Call,
    _Calls,
    _settings,
    _timeout,
    sniff_content_type,
)
from .errors import (
    ProblemError,
    TransportError,
)
from .models import (
    BackboneInfo,
    ClassifyResult,
    DeleteResult,
    MultiClassifyResult,
    Readiness,
    TaskInfo,
    UploadResult,
)
from .stream import StreamResult, StreamSummary, astream, stream


class SpeechPromptClient:
    """Blocking client. ``base_url`` defaults to ``$SPEECHPROMPT_URL`` then ``http://127.0.0.1:8000``;
    ``token`` (admin Bearer token for upload/delete) to ``$SPEECHPROMPT_ADMIN_TOKEN``; ``timeout`` in seconds.

    Every method raises ``ProblemError`` subclasses for error answers and ``TransportError`` when the server
    cannot be reached. Thread-safe (one httpx connection pool). Use as a context manager or call ``close()``.
    """

    def __init__(self, base_url: str | None = None, *, token: str | None = None,
                 timeout: float | httpx.Timeout = 60.0, retry: RetryPolicy | None = None,
                 headers: dict[str, str] | None = None, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url, token = _settings(base_url, token)
        self.retry = retry or NO_RETRY
        self._calls = _Calls(token)
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, timeout=_timeout(timeout), headers=headers,
                                  transport=transport)

    def __enter__(self) -> SpeechPromptClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                resp = self._http.request(call.method, call.path, params=call.params, headers=call.headers,
                                          content=call.content, files=call.files)
            except httpx.TransportError as e:
                raise TransportError(f"{call.method} {self.base_url}{call.path}: {e!r}") from e
            try:
                return call.finish(resp)
            except ProblemError as err:
                wait = self.retry.delay(attempt, err)
                if wait is None:
                    raise
            self._sleep(wait)
            attempt += 1

    def classify(self, task: str, audio: AudioInput, *, top_k: int | None = None, filename: str | None = None,
                 content_type: str | None = None, send_as: str = "multipart",
                 long_audio: dict[str, Any] | None = None, explain: bool | int = False, gate: str | None = None,
                 gate_threshold: float | None = None, speech_trim: str | None = None) -> ClassifyResult:
        """Classify one clip with one task (``POST /v1/tasks/{task}/classify``). ``audio``: path, bytes or
        binary file; ``send_as``: ``multipart`` (field ``audio``) or ``raw`` (body with an ``audio/*`` type);
        ``long_audio``: query parameters for long clips, e.g. ``{"long_audio": "window", "window": 2, "hop": 1}``
        (a windowed answer keeps ``windows``, ``spans`` and ``long_audio`` in ``result.raw``); ``explain``:
        True (or a number of stretches, 1-64) asks for the occlusion explanation (``result.explanation``);
        ``gate``: as for :meth:`classify_multi` (``result.applicable``, ``result.raw["gate"]``); ``speech_trim``:
        ``"recording"`` says the clip is a whole microphone recording: the room tone before and after the voice is
        cut (Silero VAD) for the tasks whose package asks for it on recordings; ``"on"`` cuts it for every task,
        ``"off"`` for none; None or ``"package"``: for the tasks whose package asks for it on every clip
        (``result.speech_trim`` says what was scored)."""
        return self._send(self._calls.classify(task, audio, top_k, filename, content_type, send_as, long_audio,
                                               explain, gate, gate_threshold, speech_trim))

    def classify_multi(self, tasks: Sequence[str] | str, audio: AudioInput, *, top_k: int | None = None,
                       filename: str | None = None, content_type: str | None = None,
                       send_as: str = "multipart", long_audio: dict[str, Any] | None = None,
                       explain: bool | int = False, gate: str | None = None,
                       gate_threshold: float | None = None, speech_trim: str | None = None) -> MultiClassifyResult:
        """Classify one clip with many tasks (``POST /v1/classify?tasks=a,b``); per-task failures are
        ``TaskFailure`` items, not exceptions; ``long_audio``, ``explain`` and ``speech_trim`` as for
        :meth:`classify`.
        ``gate``: ``"<task>:<label>"`` (e.g. ``"vad:speech"``): the result's ``gate`` says whether that task's
        probability of the label reached ``gate_threshold`` (server default 0.5) and each answer's
        ``applicable`` follows it."""
        return self._send(self._calls.classify_multi(tasks, audio, top_k, filename, content_type, send_as,
                                                     long_audio, explain, gate, gate_threshold, speech_trim))

    def tasks(self) -> list[TaskInfo]:
        """All tasks (``GET /v1/tasks``)."""
        return self._send(self._calls.tasks())

    def task(self, name: str) -> TaskInfo:
        """One task with its metadata (``GET /v1/tasks/{task}``); ``NotFound`` if unknown."""
        return self._send(self._calls.task(name))

    def upload(self, name: str, package: AudioInput, *, token: str | None = None) -> UploadResult:
        """Upload a task prompt package (safetensors path/bytes/file) as task ``name`` (``PUT``, admin token)."""
        return self._send(self._calls.upload(name, package, token))

    def delete(self, name: str, *, token: str | None = None) -> DeleteResult:
        """Remove a task (``DELETE /v1/tasks/{task}``, admin token)."""
        return self._send(self._calls.delete(name, token))

    def backbone(self) -> BackboneInfo:
        """The loaded backbone (``GET /v1/backbone``)."""
        return self._send(self._calls.backbone())

    def health(self) -> dict[str, Any]:
        """Liveness (``GET /healthz``), the server's JSON."""
        return self._send(self._calls.health())

    def ready(self) -> Readiness:
        """Readiness (``GET /readyz``): ``ready=False`` on 503 instead of an exception."""
        return self._send(self._calls.ready())

    def metrics(self) -> str:
        """Prometheus exposition text (``GET /metrics``)."""
        return self._send(self._calls.metrics())

    def stream(self, tasks: Sequence[str] | str, audio: Any, **options: Any) -> Iterator[StreamResult | StreamSummary]:
        """Stream audio over WebSocket ``/v1/stream``: yields a ``StreamResult`` per window as the server scores
        it, then a ``StreamSummary`` (``clients.stream.stream``: options, audio forms, errors)."""
        return stream(self.base_url, tasks, audio, **options)


class AsyncSpeechPromptClient:
    """asyncio twin of ``SpeechPromptClient`` (same arguments, same results; methods are coroutines)."""

    def __init__(self, base_url: str | None = None, *, token: str | None = None,
                 timeout: float | httpx.Timeout = 60.0, retry: RetryPolicy | None = None,
                 headers: dict[str, str] | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 100, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.base_url, token = _settings(base_url, token)
        self.retry = retry or NO_RETRY
        self._calls = _Calls(token)
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=_timeout(timeout), headers=headers,
                                       transport=transport, limits=httpx.Limits(max_connections=max_connections))

    async def __aenter__(self) -> AsyncSpeechPromptClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                resp = await self._http.request(call.method, call.path, params=call.params, headers=call.headers,
                                                content=call.content, files=call.files)
            except httpx.TransportError as e:
                raise TransportError(f"{call.method} {self.base_url}{call.path}: {e!r}") from e
            try:
                return call.finish(resp)
            except ProblemError as err:
                wait = self.retry.delay(attempt, err)
                if wait is None:
                    raise
            await self._sleep(wait)
            attempt += 1

    async def classify(self, task: str, audio: AudioInput, *, top_k: int | None = None,
                       filename: str | None = None, content_type: str | None = None,
                       send_as: str = "multipart", long_audio: dict[str, Any] | None = None,
                       explain: bool | int = False, gate: str | None = None,
                       gate_threshold: float | None = None, speech_trim: str | None = None) -> ClassifyResult:
        """See ``SpeechPromptClient.classify``."""
        return await self._send(self._calls.classify(task, audio, top_k, filename, content_type, send_as,
                                                     long_audio, explain, gate, gate_threshold, speech_trim))

    async def classify_multi(self, tasks: Sequence[str] | str, audio: AudioInput, *, top_k: int | None = None,
                             filename: str | None = None, content_type: str | None = None,
                             send_as: str = "multipart",
                             long_audio: dict[str, Any] | None = None,
                             explain: bool | int = False, gate: str | None = None,
                             gate_threshold: float | None = None,
                             speech_trim: str | None = None) -> MultiClassifyResult:
        """See ``SpeechPromptClient.classify_multi``."""
        return await self._send(self._calls.classify_multi(tasks, audio, top_k, filename, content_type, send_as,
                                                           long_audio, explain, gate, gate_threshold, speech_trim))

    async def tasks(self) -> list[TaskInfo]:
        return await self._send(self._calls.tasks())

    async def task(self, name: str) -> TaskInfo:
        return await self._send(self._calls.task(name))

    async def upload(self, name: str, package: AudioInput, *, token: str | None = None) -> UploadResult:
        return await self._send(self._calls.upload(name, package, token))

    async def delete(self, name: str, *, token: str | None = None) -> DeleteResult:
        return await self._send(self._calls.delete(name, token))

    async def backbone(self) -> BackboneInfo:
        return await self._send(self._calls.backbone())

    async def health(self) -> dict[str, Any]:
        return await self._send(self._calls.health())

    async def ready(self) -> Readiness:
        return await self._send(self._calls.ready())

    async def metrics(self) -> str:
        return await self._send(self._calls.metrics())

    def stream(self, tasks: Sequence[str] | str, audio: Any,
               **options: Any) -> AsyncIterator[StreamResult | StreamSummary]:
        """``async for event in client.stream(tasks, audio)``: the asyncio twin of ``SpeechPromptClient.stream``."""
        return astream(self.base_url, tasks, audio, **options)

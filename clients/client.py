"""HTTP clients for the SpeechPrompt server's v1 API: ``SpeechPromptClient`` (sync) and
``AsyncSpeechPromptClient`` (asyncio), both on httpx, with the same methods and results.

Requests are described once (``_Call``: method, path, query, body, how to read the answer) and sent by
either client; only the sending loop (sleep vs ``await asyncio.sleep``) differs. Audio and packages are
read into memory before the first attempt, so a retry re-sends the exact same bytes.

Retries are opt-in (``retry=RetryPolicy(...)``): on 429 and 503 the client waits what ``Retry-After``
says (delta-seconds or HTTP date) or, without it, ``backoff_s * 2**attempt``; it never waits longer than
``max_delay_s`` for one attempt (a longer ``Retry-After`` raises at once) and gives up after
``max_retries`` retries by raising the last ``TooManyRequests`` / ``ServiceUnavailable``.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union
from urllib.parse import quote

import httpx

from .errors import (
    ProblemError,
    ResponseFormatError,
    TransportError,
    parse_retry_after,
    problem_from_response,
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

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "SPEECHPROMPT_URL"
TOKEN_ENV = "SPEECHPROMPT_ADMIN_TOKEN"

#: a file path, the file's bytes, or an open binary file object
AudioInput = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

_MAGIC = ((b"RIFF", "audio/wav"), (b"fLaC", "audio/flac"), (b"OggS", "audio/ogg"), (b"ID3", "audio/mpeg"),
          (b"\xff\xfb", "audio/mpeg"), (b"\xff\xf3", "audio/mpeg"), (b"\xff\xf2", "audio/mpeg"))


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retry on overload / not-ready answers.

    ``max_retries``: retries after the first attempt; ``max_delay_s``: longest single wait (s);
    ``backoff_s``: first wait when the server sends no ``Retry-After`` (doubles per retry);
    ``statuses``: which HTTP statuses are retried.
    """

    max_retries: int = 3
    max_delay_s: float = 30.0
    backoff_s: float = 0.5
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 503}))

    def delay(self, attempt: int, err: ProblemError) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up and raise ``err``."""
        if err.status not in self.statuses or attempt >= self.max_retries:
            return None
        wait = parse_retry_after(err.headers.get("retry-after"))
        if wait is None:
            wait = self.backoff_s * (2 ** attempt)
        return None if wait > self.max_delay_s else wait


NO_RETRY = RetryPolicy(max_retries=0)


def sniff_content_type(data: bytes, filename: str | None = None) -> str:
    """An ``audio/*`` type from the file name, else from magic bytes; ``application/octet-stream`` if unknown."""
    if filename:
        guess = mimetypes.guess_type(filename)[0]
        if guess and guess.startswith("audio/"):
            return "audio/wav" if guess in ("audio/x-wav", "audio/wave") else guess
    for magic, ctype in _MAGIC:
        if data.startswith(magic):
            return ctype
    return "application/octet-stream"


def read_input(obj: AudioInput, filename: str | None = None) -> tuple[str, bytes]:
    """``(name, bytes)`` from a path, bytes or a binary file object (read from its current position)."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return filename or "audio", bytes(obj)
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        return filename or p.name, p.read_bytes()
    if hasattr(obj, "read"):
        data = obj.read()
        if not isinstance(data, bytes):
            raise TypeError("file objects must be opened in binary mode ('rb')")
        return filename or Path(str(getattr(obj, "name", "audio"))).name, data
    raise TypeError(f"expected a path, bytes or a binary file object, got {type(obj).__name__}")


def _explain_params(explain: bool | int) -> dict[str, str]:
    """Query parameters for ``explain``: False -> none; True -> ``explain=true``; N -> N stretches too."""
    if explain is False or explain is None:
        return {}
    if explain is True:
        return {"explain": "true"}
    return {"explain": "true", "explain_spans": str(int(explain))}


def _task_path(task: str, suffix: str = "") -> str:
    if not task:
        raise ValueError("task name must not be empty")
    return f"/v1/tasks/{quote(task, safe='')}{suffix}"


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise ResponseFormatError(f"{resp.request.method} {resp.request.url.path} answered "
                                  f"{resp.status_code} with non-JSON: {resp.text[:200]!r}") from None


@dataclass
class _Call:
    """One API request, independent of sync/async: what to send and how to turn the answer into a result."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any]
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    ok_statuses: frozenset[int] = frozenset()  # non-2xx statuses that are an answer, not an error

    def finish(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400 and resp.status_code not in self.ok_statuses:
            raise problem_from_response(resp)
        return self.parse(resp)


class _Calls:
    """Builds every v1 call; shared by the sync and the async client."""

    def __init__(self, token: str | None):
        self.token = token

    def _auth(self, token: str | None) -> dict[str, str]:
        tok = token if token is not None else self.token
        return {"Authorization": f"Bearer {tok}"} if tok else {}

    @staticmethod
    def _audio_body(call: _Call, audio: AudioInput, filename: str | None, content_type: str | None,
                    send_as: str) -> _Call:
        name, data = read_input(audio, filename)
        ctype = content_type or sniff_content_type(data, name)
        if send_as == "multipart":
            call.files = {"audio": (name, data, ctype)}
        elif send_as == "raw":
            if not ctype.startswith("audio/"):
                raise ValueError(f"raw upload needs an audio/* content type; could not tell one for {name!r} "
                                 "(pass content_type=)")
            call.content, call.headers["Content-Type"] = data, ctype
        else:
            raise ValueError("send_as must be 'multipart' or 'raw'")
        return call

    def classify(self, task, audio, top_k, filename, content_type, send_as, long_audio=None, explain=False) -> _Call:
        params = {} if top_k is None else {"top_k": int(top_k)}
        params.update(long_audio or {}, **_explain_params(explain))
        call = _Call("POST", _task_path(task, "/classify"), lambda r: ClassifyResult.from_json(_json(r)), params)
        return self._audio_body(call, audio, filename, content_type, send_as)

    def classify_multi(self, tasks, audio, top_k, filename, content_type, send_as, long_audio=None,
                       explain=False) -> _Call:
        if isinstance(tasks, str):
            tasks = [t for t in tasks.split(",") if t]
        if not tasks:
            raise ValueError("give at least one task")
        params: dict[str, Any] = {"tasks": ",".join(tasks)}
        if top_k is not None:
            params["top_k"] = int(top_k)
        params.update(long_audio or {}, **_explain_params(explain))
        call = _Call("POST", "/v1/classify", lambda r: MultiClassifyResult.from_json(_json(r)), params)
        return self._audio_body(call, audio, filename, content_type, send_as)

    def tasks(self) -> _Call:
        return _Call("GET", "/v1/tasks", lambda r: [TaskInfo.from_json(t) for t in _json(r).get("tasks", [])])

    def task(self, name) -> _Call:
        return _Call("GET", _task_path(name), lambda r: TaskInfo.from_json(_json(r)))

    def upload(self, name, package, token) -> _Call:
        _, data = read_input(package)
        return _Call("PUT", _task_path(name), lambda r: UploadResult.from_json(_json(r)),
                     headers={**self._auth(token), "Content-Type": "application/octet-stream"}, content=data)

    def delete(self, name, token) -> _Call:
        return _Call("DELETE", _task_path(name), lambda r: DeleteResult.from_json(_json(r)),
                     headers=self._auth(token))

    def backbone(self) -> _Call:
        return _Call("GET", "/v1/backbone", lambda r: BackboneInfo.from_json(_json(r)))

    def health(self) -> _Call:
        return _Call("GET", "/healthz", _json)

    def ready(self) -> _Call:
        def parse(r: httpx.Response) -> Readiness:
            try:
                body = r.json()
            except ValueError:
                body = {"detail": r.text}
            return Readiness(r.status_code == 200, r.status_code, body if isinstance(body, dict) else {"body": body})
        return _Call("GET", "/readyz", parse, ok_statuses=frozenset({503}))

    def metrics(self) -> _Call:
        return _Call("GET", "/metrics", lambda r: r.text)


def _settings(base_url: str | None, token: str | None) -> tuple[str, str | None]:
    url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
    return url.rstrip("/"), token if token is not None else os.environ.get(TOKEN_ENV) or None


def _timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout, connect=min(10.0, timeout))


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
                 long_audio: dict[str, Any] | None = None, explain: bool | int = False) -> ClassifyResult:
        """Classify one clip with one task (``POST /v1/tasks/{task}/classify``). ``audio``: path, bytes or
        binary file; ``send_as``: ``multipart`` (field ``audio``) or ``raw`` (body with an ``audio/*`` type);
        ``long_audio``: query parameters for long clips, e.g. ``{"long_audio": "window", "window": 2, "hop": 1}``
        (a windowed answer keeps ``windows``, ``spans`` and ``long_audio`` in ``result.raw``); ``explain``:
        True (or a number of stretches, 1-64) asks for the occlusion explanation (``result.explanation``)."""
        return self._send(self._calls.classify(task, audio, top_k, filename, content_type, send_as, long_audio,
                                               explain))

    def classify_multi(self, tasks: Sequence[str] | str, audio: AudioInput, *, top_k: int | None = None,
                       filename: str | None = None, content_type: str | None = None,
                       send_as: str = "multipart", long_audio: dict[str, Any] | None = None,
                       explain: bool | int = False) -> MultiClassifyResult:
        """Classify one clip with many tasks (``POST /v1/classify?tasks=a,b``); per-task failures are
        ``TaskFailure`` items, not exceptions; ``long_audio`` and ``explain`` as for :meth:`classify`."""
        return self._send(self._calls.classify_multi(tasks, audio, top_k, filename, content_type, send_as,
                                                     long_audio, explain))

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
                       explain: bool | int = False) -> ClassifyResult:
        """See ``SpeechPromptClient.classify``."""
        return await self._send(self._calls.classify(task, audio, top_k, filename, content_type, send_as,
                                                     long_audio, explain))

    async def classify_multi(self, tasks: Sequence[str] | str, audio: AudioInput, *, top_k: int | None = None,
                             filename: str | None = None, content_type: str | None = None,
                             send_as: str = "multipart",
                             long_audio: dict[str, Any] | None = None,
                             explain: bool | int = False) -> MultiClassifyResult:
        """See ``SpeechPromptClient.classify_multi``."""
        return await self._send(self._calls.classify_multi(tasks, audio, top_k, filename, content_type, send_as,
                                                           long_audio, explain))

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

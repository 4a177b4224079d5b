"""What the SpeechPrompt clients send: requests described once (``_Call``: method, path, query, body, how to read
the answer; ``_Calls`` builds one per API call), the audio inputs they accept (path, bytes, binary file; content
type sniffed from the bytes), the retry policy, and the URL/token defaults from the environment. Both clients in
``client.py`` send these; only their sending loops differ. HTTP only (httpx); no server or core imports.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union
from urllib.parse import quote

import httpx

from .errors import ProblemError, ResponseFormatError, parse_retry_after, problem_from_response
from .models import (
    BackboneInfo,
    ClassifyResult,
    DeleteResult,
    MultiClassifyResult,
    Readiness,
    TaskInfo,
    UploadResult,
)

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "SPEECHPROMPT_URL"
TOKEN_ENV = "SPEECHPROMPT_ADMIN_TOKEN"

#: a file path, the file's bytes, or an open binary file object
AudioInput = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

#: video types whose sound track the server decodes (as ``server/bodies.py``; clients/ imports nothing from server/)
VIDEO_TYPES = ("video/mp4", "video/webm", "video/3gpp", "video/quicktime", "video/x-matroska")
_MAGIC = ((b"RIFF", "audio/wav"), (b"fLaC", "audio/flac"), (b"OggS", "audio/ogg"), (b"ID3", "audio/mpeg"),
          (b"\xff\xfb", "audio/mpeg"), (b"\xff\xf3", "audio/mpeg"), (b"\xff\xf2", "audio/mpeg"))


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retry on overload / not-ready answers.

    ``max_retries``: retries after the first attempt; ``max_delay_s``: longest single wait (s);
    ``backoff_s``: first wait when the server sends no ``Retry-After`` (doubles per retry);
    ``statuses``: which HTTP statuses are retried; ``never``: problem codes not retried whatever their status
    (``speech_trim_unavailable``: a 503 for a server started without the speech-trim weights, which no wait mends).
    """

    max_retries: int = 3
    max_delay_s: float = 30.0
    backoff_s: float = 0.5
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 503}))
    never: frozenset[str] = field(default_factory=lambda: frozenset({"speech_trim_unavailable"}))

    def delay(self, attempt: int, err: ProblemError) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up and raise ``err``."""
        if err.status not in self.statuses or err.code in self.never or attempt >= self.max_retries:
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
        if guess and (guess.startswith("audio/") or guess in VIDEO_TYPES):  # a phone video's sound track too
            return "audio/wav" if guess in ("audio/x-wav", "audio/wave") else guess
    for magic, ctype in _MAGIC:
        if data.startswith(magic):
            return ctype
    if data[4:8] == b"ftyp":  # ISO media (M4A voice memos, MP4, 3GP): the box type sits after a 4-byte size
        return "audio/mp4"
    if data.startswith(b"\x1aE\xdf\xa3"):  # EBML: WebM/Matroska (browser MediaRecorder)
        return "audio/webm"
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:  # an ADTS frame sync: raw AAC
        return "audio/aac"
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


def _gate_params(gate: str | None, threshold: float | None) -> dict[str, str]:
    """Query parameters for a gate (``"vad:speech"``) and its threshold; none when not given."""
    out = {} if gate is None else {"gate": str(gate)}
    if threshold is not None:
        out["gate_threshold"] = repr(float(threshold))
    return out


def _trim_params(speech_trim: str | None) -> dict[str, str]:
    """The ``speech_trim`` query parameter (``"recording"``, ``"on"``, ``"off"``, ``"package"``); none when not
    given."""
    return {} if speech_trim is None else {"speech_trim": str(speech_trim)}


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
            if not (ctype.startswith("audio/") or ctype in VIDEO_TYPES):
                raise ValueError(f"raw upload needs an audio/* content type; could not tell one for {name!r} "
                                 "(pass content_type=)")
            call.content, call.headers["Content-Type"] = data, ctype
        else:
            raise ValueError("send_as must be 'multipart' or 'raw'")
        return call

    def classify(self, task, audio, top_k, filename, content_type, send_as, long_audio=None, explain=False,
                 gate=None, gate_threshold=None, speech_trim=None) -> _Call:
        params = {} if top_k is None else {"top_k": int(top_k)}
        params.update(long_audio or {}, **_explain_params(explain), **_gate_params(gate, gate_threshold),
                      **_trim_params(speech_trim))
        call = _Call("POST", _task_path(task, "/classify"), lambda r: ClassifyResult.from_json(_json(r)), params)
        return self._audio_body(call, audio, filename, content_type, send_as)

    def classify_multi(self, tasks, audio, top_k, filename, content_type, send_as, long_audio=None,
                       explain=False, gate=None, gate_threshold=None, speech_trim=None) -> _Call:
        if isinstance(tasks, str):
            tasks = [t for t in tasks.split(",") if t]
        if not tasks:
            raise ValueError("give at least one task")
        params: dict[str, Any] = {"tasks": ",".join(tasks)}
        if top_k is not None:
            params["top_k"] = int(top_k)
        params.update(long_audio or {}, **_explain_params(explain), **_gate_params(gate, gate_threshold),
                      **_trim_params(speech_trim))
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

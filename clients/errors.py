"""Client-side errors: every non-2xx answer of the server becomes a typed ``ProblemError``.

The server answers errors as ``application/problem+json`` (RFC 9457): ``{"type": "/problems/<code>",
"title", "status", "detail", "accepted"?}``; 429 carries ``Retry-After``. :func:`problem_from_response`
maps the HTTP status to one subclass (``STATUS_CLASSES``) and keeps every field the server sent, so a
caller can ``except NotFound`` or read ``err.code`` / ``err.accepted``. Answers that are not problem
documents (a proxy's HTML 502, an empty body) still map by status, with the body text as ``detail``.
Transport failures (refused connection, timeout) are ``TransportError``, never a ``ProblemError``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class SpeechPromptError(Exception):
    """Base of everything this client raises."""


class TransportError(SpeechPromptError):
    """The server could not be reached or did not answer in time (no HTTP status)."""


class ResponseFormatError(SpeechPromptError):
    """A 2xx answer whose body is not the JSON the v1 API promises (wrong server, proxy page)."""


class ProblemError(SpeechPromptError):
    """An error answer of the server.

    Attributes: ``status`` (HTTP status), ``type`` (``/problems/<code>`` or ``about:blank``), ``title``,
    ``detail`` (human sentence), ``accepted`` (what the server would have accepted; any JSON or None),
    ``extra`` (other members of the problem document), ``headers`` (response headers, lower-case keys).
    """

    def __init__(self, status: int, type: str = "about:blank", title: str = "", detail: str = "",
                 accepted: Any = None, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        self.status = int(status)
        self.type = type or "about:blank"
        self.title = title
        self.detail = detail
        self.accepted = accepted
        self.extra = dict(extra or {})
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        super().__init__(self._message())

    @property
    def code(self) -> str:
        """Stable machine code: the last path segment of ``type`` (``/problems/unknown_task`` -> ``unknown_task``)."""
        return self.type.rstrip("/").rsplit("/", 1)[-1] if self.type != "about:blank" else ""

    def to_dict(self) -> dict[str, Any]:
        """The problem document as the server sent it (plus nothing invented)."""
        out: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status,
                               "detail": self.detail}
        if self.accepted is not None:
            out["accepted"] = self.accepted
        out.update(self.extra)
        return out

    def _message(self) -> str:
        head = f"{self.status} {self.title or 'error'}"
        if self.code:
            head += f" [{self.code}]"
        return f"{head}: {self.detail}" if self.detail else head


class BadRequest(ProblemError):
    """400: malformed request (bad task name, bad query)."""


class Unauthorized(ProblemError):
    """401: the admin endpoint needs ``Authorization: Bearer <token>``."""


class Forbidden(ProblemError):
    """403: wrong admin token, or admin endpoints disabled on this server."""


class NotFound(ProblemError):
    """404: unknown task (or path)."""


class Conflict(ProblemError):
    """409: e.g. a task package made for another backbone."""


class PayloadTooLarge(ProblemError):
    """413: body over the byte limit, or audio over the duration limit."""


class UnsupportedMediaType(ProblemError):
    """415: undecodable audio format, or a package that is not safetensors."""


class Unprocessable(ProblemError):
    """422: decodable but unusable input (empty / too short / non-finite audio, invalid package)."""


class TooManyRequests(ProblemError):
    """429: the server's queue is full. ``retry_after`` (seconds, float) from ``Retry-After`` or None."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class ServerError(ProblemError):
    """500 and other 5xx without a dedicated class: a failure on the server side."""


class BadGateway(ProblemError):
    """502: the load balancer got no valid answer from a replica."""


class ServiceUnavailable(ProblemError):
    """503: not ready (backbone loading), task unavailable, store unavailable. May carry Retry-After."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class GatewayTimeout(ProblemError):
    """504: the request's deadline passed on the server (or at the load balancer)."""


STATUS_CLASSES: dict[int, type[ProblemError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 415: UnsupportedMediaType, 422: Unprocessable, 429: TooManyRequests,
    500: ServerError, 502: BadGateway, 503: ServiceUnavailable, 504: GatewayTimeout,
}


def class_for_status(status: int) -> type[ProblemError]:
    """The exception class for an HTTP status (``ServerError`` for unlisted 5xx, else ``ProblemError``)."""
    if status in STATUS_CLASSES:
        return STATUS_CLASSES[status]
    return ServerError if 500 <= status < 600 else ProblemError


def problem_from_dict(body: dict[str, Any], status: int | None = None,
                      headers: dict[str, str] | None = None) -> ProblemError:
    """Build the typed error for a problem document (also used for per-task errors of ``/v1/classify``)."""
    st = int(status if status is not None else body.get("status") or 500)
    known = {"type", "title", "status", "detail", "accepted"}
    extra = {k: v for k, v in body.items() if k not in known}
    return class_for_status(st)(st, str(body.get("type") or "about:blank"), str(body.get("title") or ""),
                                str(body.get("detail") or ""), body.get("accepted"), extra, headers)


def problem_from_response(resp: httpx.Response) -> ProblemError:
    """Map an error response (status >= 400) to its typed ``ProblemError``; tolerant of non-JSON bodies."""
    headers = dict(resp.headers)
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    if isinstance(body, dict) and ("type" in body or "title" in body or "detail" in body):
        return problem_from_dict(body, resp.status_code, headers)
    text = resp.text.strip()
    detail = text[:500] if text else ""
    return class_for_status(resp.status_code)(resp.status_code, "about:blank", resp.reason_phrase, detail,
                                              None, None, headers)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds (float >= 0): delta-seconds or an HTTP date (RFC 9110 10.2.3); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())

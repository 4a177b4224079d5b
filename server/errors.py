"""Typed server errors and THE table that maps every typed error to an HTTP problem.

No FastAPI here (the batcher and the registry raise these errors); ``server/handlers.py`` turns
:func:`to_problem` into ``application/problem+json`` responses (RFC 9457: type, title, status, detail,
plus ``accepted`` saying what would have been accepted).

Core errors (``speechprompt.audio.AudioError``, ``speechprompt.package.PackageError``) carry a stable
``code``; their HTTP status is decided here, not in the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from speechprompt import audio as core_audio
from speechprompt import encoder as core_encoder
from speechprompt import package as core_package
from speechprompt import unit_lm as core_unit_lm


class ServerError(Exception):
    """Base of the server's own typed errors. ``detail`` is a human sentence for the client."""

    code = "server_error"

    def __init__(self, detail: str, *, accepted: Any = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.accepted = accepted
        self.headers = headers or {}


class BadRequest(ServerError):
    code = "bad_request"


class InvalidTaskName(ServerError):
    code = "invalid_task_name"


class Unauthorized(ServerError):
    code = "unauthorized"


class Forbidden(ServerError):
    code = "forbidden"


class UnknownTask(ServerError):
    code = "unknown_task"


class PayloadTooLarge(ServerError):
    code = "payload_too_large"


class RequestTimeout(ServerError):
    """The request body did not arrive in full within ``body_timeout_s``; the connection is closed."""

    code = "request_timeout"

    def __init__(self, detail: str, *, accepted: str | None = None):
        super().__init__(detail, accepted=accepted, headers={"Connection": "close"})


class UnsupportedMediaType(ServerError):
    code = "unsupported_media_type"


class QueueFull(ServerError):
    """The model loop's bounded queue is full; ``retry_after_s`` is an estimate of when it drains."""

    code = "queue_full"

    def __init__(self, detail: str, *, retry_after_s: int = 1):
        super().__init__(detail, headers={"Retry-After": str(max(1, int(retry_after_s)))})
        self.retry_after_s = max(1, int(retry_after_s))


class NotReady(ServerError):
    code = "not_ready"


class TaskUnavailable(ServerError):
    """The task is known but none of its versions can be served (its package failed to load)."""

    code = "task_unavailable"


class StoreUnavailable(ServerError):
    code = "store_unavailable"


class DeadlineExceeded(ServerError):
    code = "deadline_exceeded"


class ClientGone(ServerError):
    """The client disconnected before its answer was ready (its job was skipped; nobody reads this)."""

    code = "client_closed_request"


class InferenceFailed(ServerError):
    """The model loop failed on a job for a reason that is not the client's input (a server bug)."""

    code = "inference_failed"


@dataclass(frozen=True)
class Rule:
    """HTTP status + title of a typed error; ``code`` for error classes that carry none themselves."""

    status: int
    title: str
    code: str | None = None


# THE table: typed error -> HTTP status + title. Looked up along the exception's MRO (most specific wins).
TABLE: dict[type[BaseException], Rule] = {
    BadRequest: Rule(400, "Bad request"),
    InvalidTaskName: Rule(400, "Invalid task name"),
    Unauthorized: Rule(401, "Missing credentials"),
    Forbidden: Rule(403, "Forbidden"),
    UnknownTask: Rule(404, "Unknown task"),
    RequestTimeout: Rule(408, "Request timeout"),
    PayloadTooLarge: Rule(413, "Payload too large"),
    UnsupportedMediaType: Rule(415, "Unsupported media type"),
    QueueFull: Rule(429, "Too many requests"),
    NotReady: Rule(503, "Not ready"),
    TaskUnavailable: Rule(503, "Task unavailable"),
    StoreUnavailable: Rule(503, "Store unavailable"),
    DeadlineExceeded: Rule(504, "Deadline exceeded"),
    ClientGone: Rule(499, "Client closed request"),
    InferenceFailed: Rule(500, "Inference failed"),
    # core: audio (speechprompt/audio.py)
    core_audio.UndecodableAudio: Rule(415, "Undecodable audio"),
    core_audio.AudioTooLong: Rule(413, "Audio too long"),
    core_audio.AudioError: Rule(422, "Unusable audio"),
    core_encoder.EncoderInputError: Rule(422, "Unusable audio", "unusable_audio"),
    core_unit_lm.SequenceTooLong: Rule(413, "Audio too long for the unit LM"),
    # core: task prompt packages (speechprompt/package.py)
    core_package.NotSafetensors: Rule(415, "Not a safetensors package"),
    core_package.PackageTooLarge: Rule(413, "Package too large"),
    core_package.BackboneMismatch: Rule(409, "Package for another backbone"),
    core_package.NonFiniteWeights: Rule(422, "Non-finite package weights"),
    core_package.PackageOverLimit: Rule(422, "Package over a server limit"),
    core_package.PackageError: Rule(422, "Invalid package"),
}


def rule_for(exc: BaseException) -> Rule | None:
    """The table rule for ``exc`` (most specific class first), or None for an untyped error."""
    for cls in type(exc).__mro__:
        rule = TABLE.get(cls)
        if rule is not None:
            return rule
    return None


def error_code(exc: BaseException) -> str:
    """Stable machine code of an error (``/problems/<code>``); ``internal`` for untyped errors."""
    rule = rule_for(exc)
    if rule is None:
        return "internal"
    return str(getattr(exc, "code", None) or rule.code or type(exc).__name__)


@dataclass
class Problem:
    """An RFC 9457 problem: ``body`` is the JSON object, ``headers`` extra response headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def problem(status: int, code: str, title: str, detail: str, accepted: Any = None, **extra: Any) -> Problem:
    """Build a problem body with type ``/problems/<code>``."""
    body: dict[str, Any] = {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail}
    if accepted is not None:
        body["accepted"] = accepted
    body.update(extra)
    return Problem(status, body)


def to_problem(exc: BaseException) -> Problem:
    """Map any exception to a problem. Untyped exceptions become a 500 without internals in the detail."""
    rule = rule_for(exc)
    if rule is None:
        return problem(500, "internal", "Internal server error", "the server failed; see its log")
    detail = str(getattr(exc, "detail", None) or exc) or rule.title
    accepted = getattr(exc, "accepted", None)
    out = problem(rule.status, error_code(exc), rule.title, detail, accepted)
    out.headers.update(getattr(exc, "headers", None) or {})
    return out

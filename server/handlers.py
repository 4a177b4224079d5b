"""Exception handlers: every error leaves as ``application/problem+json`` through ``errors.to_problem``; under
``/v2`` (Open Inference Protocol) the same problem leaves as v2 error JSON ``{"error": detail}``, same status
and headers."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import TABLE, Problem, error_code, problem, to_problem
from .metrics import Metrics
from .param_help import accepted as param_accepted

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_HTTP_CODES = {404: ("not_found", "Not found"), 405: ("method_not_allowed", "Method not allowed")}


def respond(p: Problem, request: Request | None = None) -> JSONResponse:
    """The problem as ``application/problem+json``, or as v2 error JSON for a ``/v2`` request."""
    if request is not None and (request.url.path == "/v2" or request.url.path.startswith("/v2/")):
        return JSONResponse({"error": p.body["detail"]}, status_code=p.status, headers=p.headers or None)
    return JSONResponse(p.body, status_code=p.status, headers=p.headers or None, media_type=PROBLEM_JSON)


def typed_roots() -> list[type[BaseException]]:
    """The most general classes of the error table (their subclasses reach the same handler)."""
    classes = list(TABLE)
    return [c for c in classes if not any(o is not c and issubclass(c, o) for o in classes)]


def install(app: FastAPI, metrics: Metrics) -> None:
    """Register the handlers on ``app``; failures are counted in ``sp_request_failures_total{code}``."""

    async def typed(request: Request, exc: Exception) -> JSONResponse:
        p = to_problem(exc)
        if p.status >= 500 and error_code(exc) == "internal":
            log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        elif p.status == 499:  # the client went away: nobody reads the answer, nothing failed here
            log.info("client closed %s %s: %s", request.method, request.url.path, exc)
        metrics.failures.labels(code=p.body["type"].rsplit("/", 1)[-1]).inc()
        return respond(p, request)

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        in_params = all(e.get("loc", ("body",))[0] in ("query", "path", "header", "cookie") for e in errors)
        status = 400 if in_params else 422
        detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in errors)
        metrics.failures.labels(code="invalid_request").inc()
        accepted = param_accepted(request, [tuple(e.get("loc", ())) for e in errors]) if in_params else None
        return respond(problem(status, "invalid_request", "Invalid request", detail or "invalid request", accepted,
                               errors=[{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors]),
                       request)

    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        metrics.failures.labels(code=code).inc()
        detail = str(exc.detail)
        if exc.status_code in _HTTP_CODES:
            detail = f"no endpoint answers {request.method} {request.url.path} ({detail}); see /docs"
        p = problem(exc.status_code, code, title, detail)
        p.headers.update(exc.headers or {})
        return respond(p, request)

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http)
    for cls in typed_roots():
        app.add_exception_handler(cls, typed)
    app.add_exception_handler(Exception, typed)  # last resort: a 500 problem (Starlette re-raises it to log)

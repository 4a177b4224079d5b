"""Open Inference Protocol (KServe v2 REST) beside /v1: a task is a "model".

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``GET /v2/models/{task}``, ``/v2/models/{task}/ready``,
``POST /v2/models/{task}/infer``, and the same three under ``/v2/models/{task}/versions/{version}`` (only the
version the task serves now; another one is 404, as the protocol allows). Inference goes through the same path as ``/v1`` classify (admission slot per
clip, the same decode, leases, batcher, deadline and metrics: ``server/inference.py``); errors are the same
typed errors, answered as v2 error JSON ``{"error": "..."}`` by ``server/handlers.py``. Tensors: ``server/oip.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Depends, Path, Request, Response

from ..bodies import read_capped
from ..deps import get_service
from ..errors import NotReady, TaskUnavailable, UnknownTask
from ..inference import classify_one
from ..long_audio import LongAudioRequest
from ..oip import HEADER_LENGTH, infer_response, model_metadata, parse_infer
from ..schemas import TASK_NAME_HELP, TASK_NAME_SCHEMA, problems
from ..service import Service

router = APIRouter(tags=["open-inference-protocol"])
TASK = Path(description=TASK_NAME_HELP, json_schema_extra=TASK_NAME_SCHEMA)
VERSION = Path(description="a task version; only the one the task serves now (GET /v2/models/{task}) is found",
               max_length=128)
SERVER_NAME = "speechprompt-server"
EXTENSIONS = ["binary_tensor_data"]
INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@router.get("/v2")
async def server_metadata() -> dict:
    """Server metadata: name, version, protocol extensions."""
    return {"name": SERVER_NAME, "version": "1", "extensions": EXTENSIONS}


@router.get("/v2/health/live")
async def live() -> dict:
    """Liveness (the event loop answers), like ``/healthz``."""
    return {"live": True}


@router.get("/v2/health/ready", responses=problems(503))
async def ready(service: Service = Depends(get_service)) -> dict:
    """Readiness, like ``/readyz``: 503 while loading or draining."""
    service.require_ready()
    if service.batcher is None or not service.batcher.alive:
        raise NotReady("the model loop is not running")
    return {"ready": True}


@router.get("/v2/models/{task}", responses=problems(400, 404, 503))
async def model(task: str = TASK, service: Service = Depends(get_service)) -> dict:
    """Model metadata of one task: its current version, inputs, outputs; labels in ``parameters``."""
    service.require_ready()
    return model_metadata(task, service.registry.describe(task))


@router.get("/v2/models/{task}/ready", responses=problems(400, 404, 503))
async def model_ready(task: str = TASK, service: Service = Depends(get_service)) -> dict:
    """200 when the task has a servable version; 503 when it has none (its package failed), 404 unknown."""
    service.require_ready()
    info = service.registry.describe(task)
    if info.get("version") is None:
        raise TaskUnavailable(f"task {task!r} has no servable version")
    return {"name": task, "ready": True}


# Windowed results have no v2 tensor shape: /v2 always uses the `reject` long-audio policy (413 past max_audio_seconds)
REJECT_LONG = LongAudioRequest(policy="reject")


async def _infer_all(service: Service, task: str, clips: list, receive: Any, speech_trim: str) -> list[dict]:
    """One ``classify_one`` per clip, concurrently (the batcher puts them in the same forward); the first
    error fails the request (v2 has no partial answers) once every clip has finished. A single clip watches
    for the client going away like /v1 does (``receive``); a batch does not (one ASGI receive channel cannot
    be awaited by several clips at once), so its clips run to the end or to the deadline."""
    watch = receive if len(clips) == 1 else None
    got = await asyncio.gather(*(classify_one(service, task, clip, 1, watch, REJECT_LONG, by_label=True,
                                              speech_trim=speech_trim) for clip in clips), return_exceptions=True)
    for g in got:
        if isinstance(g, BaseException):
            raise g
    return list(got)


@router.post("/v2/models/{task}/infer", response_model=None, openapi_extra=INFER_BODY,
             responses=problems(400, 404, 408, 413, 415, 422, 429, 503, 504))
async def infer(request: Request, task: str = TASK, service: Service = Depends(get_service)) -> Response:
    """Classify a batch of clips with one task (KServe v2 infer). Inputs ``audio`` FP32 [batch, samples] or
    ``audio_file`` BYTES [batch]; outputs ``label`` BYTES [batch], ``scores`` FP32 [batch, n_classes];
    ``parameters.task_version`` is the task version used (a list, ``task_versions``, per clip)."""
    service.require_ready()
    service.registry.describe(task)  # 400 / 404 before the body is read
    with service.admission.slot():  # 429 before the body is read; further clips take a slot each below
        body = await read_capped(request, service.settings.max_upload_bytes, service.settings.body_timeout_s)
        parsed = parse_infer(body, request.headers.get(HEADER_LENGTH))
        with contextlib.ExitStack() as slots:
            for _ in parsed.clips[1:]:
                slots.enter_context(service.admission.slot())
            results = await _infer_all(service, task, parsed.clips, request.receive, parsed.speech_trim)
    versions = [r["version"] for r in results]
    extra = {"task_version": versions[0] if len(set(versions)) == 1 else None, "task_versions": versions,
             "backbone": results[0]["backbone"], "labels": [s["label"] for s in results[0]["scores"]],
             "total_ms": max(r["timings"]["total_ms"] for r in results)}
    content, head = infer_response(task, versions[0], parsed, results, extra)
    if head is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(head)})


def _served(service: Service, task: str, version: str) -> None:
    """404 unless ``version`` is the version ``task`` serves now (one version per task is served)."""
    current = service.registry.describe(task).get("version")
    if version != current:
        raise UnknownTask(f"task {task!r} does not serve version {version!r}; it serves {current!r} "
                          "(only a task's current version is served)")


@router.get("/v2/models/{task}/versions/{version}", responses=problems(400, 404, 503))
async def model_at_version(task: str = TASK, version: str = VERSION,
                           service: Service = Depends(get_service)) -> dict:
    """Model metadata, when ``version`` is the task's current version (else 404)."""
    service.require_ready()
    _served(service, task, version)
    return await model(task, service)


@router.get("/v2/models/{task}/versions/{version}/ready", responses=problems(400, 404, 503))
async def model_ready_at_version(task: str = TASK, version: str = VERSION,
                                 service: Service = Depends(get_service)) -> dict:
    """Readiness of the task at ``version`` (404 when it is not the current version)."""
    service.require_ready()
    _served(service, task, version)
    return await model_ready(task, service)


@router.post("/v2/models/{task}/versions/{version}/infer", response_model=None, openapi_extra=INFER_BODY,
             responses=problems(400, 404, 408, 413, 415, 422, 429, 503, 504))
async def infer_at_version(request: Request, task: str = TASK, version: str = VERSION,
                           service: Service = Depends(get_service)) -> Response:
    """``infer`` when ``version`` is the task's current version (checked before the body is read; 404 else).
    A swap during the request is reported as usual in ``parameters.task_version``."""
    service.require_ready()
    _served(service, task, version)
    return await infer(request, task, service)

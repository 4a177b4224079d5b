"""GET /v1/tasks, GET|PUT|DELETE /v1/tasks/{task}: the task prompt packages this server serves."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import ValidationError

from ..bodies import package_body_ok, payload
from ..deps import ready_service, require_admin
from ..schemas import (
    TASK_NAME_HELP,
    TASK_NAME_SCHEMA,
    TaskCreated,
    TaskDeleted,
    TaskList,
    TaskPublic,
    problems,
)
from ..service import Service
from ..stores.base import check_task_name

router = APIRouter(tags=["tasks"])
log = logging.getLogger(__name__)

ACCEPTED = ("a task prompt package (.safetensors) as the raw body (application/octet-stream) or as the "
            "multipart/form-data file field 'package'")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
PACKAGE_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": _BINARY,
    "multipart/form-data": {"schema": {"type": "object", "required": ["package"],
                                       "properties": {"package": {"type": "string", "format": "binary"}}}}}}}
TASK = Path(description=TASK_NAME_HELP, json_schema_extra=TASK_NAME_SCHEMA)


@router.get("/v1/tasks", response_model=TaskList, responses=problems(503))
async def list_tasks(service: Service = Depends(ready_service)) -> dict:
    """Every task: state (stored | loading | resident | failed), current version, labels, backbone.

    One task that cannot be described (whatever its package holds) is listed as failed; the list never fails."""
    tasks = []
    for name in service.registry.names():
        try:
            tasks.append(TaskPublic.model_validate(service.registry.describe(name)))
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            log.warning("task %s cannot be described: %s", name, exc)
            tasks.append(TaskPublic(task=name, state="failed", version=None,
                                    error={"code": "internal", "detail": "this task's state cannot be shown"}))
    return {"tasks": tasks}


@router.get("/v1/tasks/{task}", response_model=TaskPublic, responses=problems(400, 404, 503))
async def get_task(task: str = TASK, service: Service = Depends(ready_service)) -> dict:
    """One task's state, version, labels, training facts and the last refused version (if any)."""
    return service.registry.describe(task)


@router.put("/v1/tasks/{task}", status_code=201, response_model=TaskCreated,
            responses={200: {"model": TaskCreated, "description": "this exact version was already current"},
                       **problems(400, 401, 403, 408, 409, 413, 415, 422, 503)},
            dependencies=[Depends(require_admin)], openapi_extra=PACKAGE_BODY)
async def put_task(request: Request, response: Response, task: str = TASK,
                   service: Service = Depends(ready_service)) -> dict:
    """Upload a package (admin). It is validated, loaded beside the serving version, stored, then made
    current; a refused upload leaves the serving version untouched. 200 if it was already current."""
    check_task_name(task)
    data = await payload(request, field="package", limit=service.settings.max_upload_bytes,
                         raw_ok=package_body_ok, accepted=ACCEPTED,
                         timeout_s=service.settings.body_timeout_s)
    version, created = await service.registry.put(task, data)
    if not created:
        response.status_code = 200
    return {"task": task, "version": version, "created": created}


@router.delete("/v1/tasks/{task}", response_model=TaskDeleted, responses=problems(400, 401, 403, 404, 503),
               dependencies=[Depends(require_admin)])
async def delete_task(task: str = TASK, service: Service = Depends(ready_service)) -> dict:
    """Remove a task (admin); requests already running finish on their version."""
    await service.registry.delete(task)
    return {"task": task, "deleted": True}

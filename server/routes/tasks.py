"""GET /v1/tasks, GET|PUT|DELETE /v1/tasks/{task}: the task prompt packages this server serves."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..bodies import package_body_ok, payload
from ..deps import ready_service, require_admin
from ..schemas import PROBLEMS, TaskCreated, TaskDeleted, TaskList, TaskPublic
from ..service import Service
from ..stores.base import check_task_name

router = APIRouter(tags=["tasks"])

ACCEPTED = ("a task prompt package (.safetensors) as the raw body (application/octet-stream) or as the "
            "multipart/form-data file field 'package'")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
PACKAGE_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": _BINARY,
    "multipart/form-data": {"schema": {"type": "object", "required": ["package"],
                                       "properties": {"package": {"type": "string", "format": "binary"}}}}}}}


@router.get("/v1/tasks", response_model=TaskList)
async def list_tasks(service: Service = Depends(ready_service)) -> dict:
    """Every task: state (stored | loading | resident | failed), current version, labels, backbone."""
    return {"tasks": service.registry.describe_all()}


@router.get("/v1/tasks/{task}", response_model=TaskPublic, responses=PROBLEMS)
async def get_task(task: str, service: Service = Depends(ready_service)) -> dict:
    """One task's state, version, labels, training facts and the last refused version (if any)."""
    return service.registry.describe(task)


@router.put("/v1/tasks/{task}", status_code=201, response_model=TaskCreated, responses=PROBLEMS,
            dependencies=[Depends(require_admin)], openapi_extra=PACKAGE_BODY)
async def put_task(task: str, request: Request, response: Response,
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


@router.delete("/v1/tasks/{task}", response_model=TaskDeleted, responses=PROBLEMS,
               dependencies=[Depends(require_admin)])
async def delete_task(task: str, service: Service = Depends(ready_service)) -> dict:
    """Remove a task (admin); requests already running finish on their version."""
    await service.registry.delete(task)
    return {"task": task, "deleted": True}

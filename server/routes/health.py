"""/healthz (the process answers), /readyz (it can serve: 503 and why until then), /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from ..deps import get_service, require_admin
from ..errors import NotReady
from ..metrics import CONTENT_TYPE
from ..schemas import PROBLEMS, problems
from ..service import Service

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: PROBLEMS[503]})
async def readyz(service: Service = Depends(get_service)) -> dict:
    """Readiness: backbone loaded, model loop running, store read; 503 with the reason in words otherwise. A
    degraded store (e.g. Redis down) keeps 200 with ``status: degraded`` and why in ``store.degraded``. No
    paths or hosts here (this endpoint is unauthenticated): they are in the log and ``GET /v1/admin/status``."""
    service.require_ready()
    if service.batcher is None or not service.batcher.alive:
        raise NotReady("the model loop is not running")
    degraded = service.store.degraded()  # e.g. Redis unreachable: still serving (200), but says why
    return {"status": "degraded" if degraded else "ready", "backbone": service.runtime.fingerprint,
            "tasks": len(service.registry.names()), "tasks_failed": len(service.registry.failed_names()),
            "queue_depth": service.batcher.depth,
            "store": {"kind": service.store.kind(), "degraded": degraded}}


@router.get("/v1/admin/status", responses=problems(401, 403), dependencies=[Depends(require_admin)])
async def admin_status(service: Service = Depends(get_service)) -> dict:
    """Operator details (admin): state, the start-up error in full, the bundle folder, where the store is and
    its last error."""
    store = service.store
    return {"state": service.state, "reason": service.reason, "failure": service.failure,
            "bundle_dir": str(service.settings.bundle_dir),
            "store": None if store is None else {"kind": store.kind(), "degraded": store.degraded(),
                                                 **store.details()}}


@router.get("/metrics", include_in_schema=False)
async def metrics(service: Service = Depends(get_service)) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)

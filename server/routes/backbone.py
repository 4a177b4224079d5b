"""GET /v1/backbone: the loaded backbone (kind, sizes, fingerprint packages must match)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ..deps import ready_service
from ..schemas import problems
from ..service import Service

router = APIRouter(tags=["backbone"])


@router.get("/v1/backbone", responses=problems(503))
async def backbone(service: Service = Depends(ready_service)) -> dict:
    """The backbone this server runs (a task package must carry its fingerprint), and ``speech_trim.available``:
    whether this server has the Silero VAD weights a speech trim needs (``server/speech_trims.py``)."""
    return {**service.runtime.backbone.info(),
            "speech_trim": {"available": getattr(service, "speech_vad", None) is not None}}

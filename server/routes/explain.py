"""GET /v1/tasks/{task}/verbalizer: which units a task's learnable verbalizer ties to which label.

(Per-clip explanations are ``?explain=true`` on the classify routes, ``server/routes/classify.py``.)"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from ..deps import ready_service
from ..explanations import verbalizer_view
from ..schemas import TASK_NAME_HELP, TASK_NAME_SCHEMA, VerbalizerView, problems
from ..service import Service

router = APIRouter(tags=["explain"])
TASK = Path(description=TASK_NAME_HELP, json_schema_extra=TASK_NAME_SCHEMA)


@router.get("/v1/tasks/{task}/verbalizer", response_model=VerbalizerView, responses=problems(400, 404, 503))
async def get_verbalizer(task: str = TASK, top_k: int = Query(10, ge=1, le=1000, description="units per label"),
                         service: Service = Depends(ready_service)) -> dict:
    """The current version's verbalizer weights per unit and label (centred over labels), the top_k units
    of each label, and the label each unit favours (the SpeechPrompt v2 paper's unit-to-label analysis)."""
    return await verbalizer_view(service, task, top_k)

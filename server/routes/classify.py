"""POST /v1/tasks/{task}/classify (one clip, one task) and POST /v1/classify?tasks=a,b (one clip, many)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from ..bodies import VIDEO_TYPES, audio_body_ok, payload
from ..deps import ready_service
from ..explanations import DEFAULT_SPANS, MAX_SPANS
from ..gate import parse_gate
from ..inference import MAX_TASKS_PER_REQUEST, classify_many, classify_one, parse_tasks
from ..long_audio import LongAudioRequest
from ..schemas import TASK_NAME_HELP, TASK_NAME_SCHEMA, ClassifyResponse, MultiClassifyResponse, problems
from ..service import Service
from ..speech_trims import MODES
from ..stores.base import check_task_name

router = APIRouter(tags=["classify"])

ACCEPTED = ("multipart/form-data with a file field 'audio', or the raw audio bytes as the body with "
            "Content-Type audio/*, application/octet-stream or a video type whose sound track is decoded ("
            + ", ".join(VIDEO_TYPES) + "): WAV, FLAC, Ogg Vorbis/Opus, MP3, M4A/MP4/3GP (AAC, ALAC), WebM (Opus, "
            "Vorbis), ADTS AAC")
_BINARY = {"schema": {"type": "string", "format": "binary"}}
AUDIO_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["audio"],
                                       "properties": {"audio": {"type": "string", "format": "binary"}}}},
    "audio/*": _BINARY, "application/octet-stream": _BINARY, **{t: _BINARY for t in VIDEO_TYPES}}}}
TOP_K = Query(5, ge=1, le=1000, description="how many classes to return, best first")
LONG_AUDIO = Query(None, pattern="^(reject|truncate|window)$",
                   description="what to do with a clip over SPEECHPROMPT_MAX_AUDIO_SECONDS, for every task of this "
                   "request (default: each task's package metadata, else the server's setting): reject (413), "
                   "truncate (score the first max_audio_seconds) or window (score every window and aggregate; "
                   "long_audio=window windows a clip of any length)")
WINDOW = Query(None, gt=0, le=3600, allow_inf_nan=False, description="window length in seconds (implies windows for this request; "
               "default: the package metadata, else SPEECHPROMPT_WINDOW_SECONDS)")
HOP = Query(None, gt=0, le=3600, allow_inf_nan=False, description="seconds between window starts, at most the window (default: the "
            "package metadata, else SPEECHPROMPT_HOP_SECONDS)")
EXPLAIN = Query(False, description="add, per task scored on the whole clip, an occlusion explanation of the "
                "winning label: how much each stretch of the clip (seconds) moved it; costs explain_spans extra "
                "unit-LM rows per task (windowed tasks get none)")
EXPLAIN_SPANS = Query(DEFAULT_SPANS, ge=1, le=MAX_SPANS, description="stretches the unit sequence is cut into "
                      "for explain=true (fewer when the clip has fewer units)")
GATE = Query(None, max_length=200, description="<task>:<label>, e.g. vad:speech: that task is scored too (same "
             "pass) and the body's 'gate' says whether its probability of that label reached gate_threshold; the "
             "other tasks' results then have 'applicable' (scores are never hidden)")
GATE_THRESHOLD = Query(None, gt=0, le=1, allow_inf_nan=False, description="probability the gate label must reach "
                       "(default 0.5; only with gate)")
SPEECH_TRIM = Query("package", pattern=f"^({'|'.join(MODES)})$", description="cut the room tone before and "
                    "after the voice (Silero VAD) before scoring: package (default: the tasks whose package names a "
                    "trim for every clip), recording (the clip is a whole microphone recording: also the tasks whose "
                    "package names a trim for recordings), on (every task: its package's trim, else threshold 0.5 "
                    "and a 0.25 s margin), off (no task). Each trimmed answer says what was scored (speech_trim)")
TASK = Path(description=TASK_NAME_HELP, json_schema_extra=TASK_NAME_SCHEMA)
TASKS = Query(..., description=f"comma-separated task names (at most {MAX_TASKS_PER_REQUEST}); a name that is "
              "unknown or not allowed gets its own error entry", json_schema_extra={"minLength": 1})


@router.post("/v1/tasks/{task}/classify", response_model=None, openapi_extra=AUDIO_BODY,
             responses={200: {"model": ClassifyResponse},
                        **problems(400, 404, 408, 413, 415, 422, 429, 503, 504)})
async def classify(request: Request, task: str = TASK, top_k: int = TOP_K, long_audio: str | None = LONG_AUDIO,
                   window: float | None = WINDOW, hop: float | None = HOP, explain: bool = EXPLAIN,
                   explain_spans: int = EXPLAIN_SPANS, gate: str | None = GATE,
                   gate_threshold: float | None = GATE_THRESHOLD, speech_trim: str = SPEECH_TRIM,
                   service: Service = Depends(ready_service)) -> JSONResponse:
    """Classify one clip with one task; the answer names the exact task version used (with ``gate``, also
    whether it applies: ``server/gate.py``)."""
    check_task_name(task)
    gated = parse_gate(gate, gate_threshold)
    with service.admission.slot():  # 429 before the body is read: a refused request is never decoded
        data = await payload(request, field="audio", limit=service.settings.max_upload_bytes,
                             raw_ok=audio_body_ok, accepted=ACCEPTED,
                             timeout_s=service.settings.body_timeout_s)
        return JSONResponse(await classify_one(service, task, data, top_k, request.receive,
                                               LongAudioRequest(long_audio, window, hop),
                                               explain_spans if explain else 0, gate=gated,
                                               speech_trim=speech_trim))


@router.post("/v1/classify", response_model=None, openapi_extra=AUDIO_BODY,
             responses={200: {"model": MultiClassifyResponse},
                        **problems(400, 408, 413, 415, 422, 429, 503, 504)})
async def classify_tasks(request: Request, tasks: str = TASKS, top_k: int = TOP_K,
                         long_audio: str | None = LONG_AUDIO, window: float | None = WINDOW, hop: float | None = HOP,
                         explain: bool = EXPLAIN, explain_spans: int = EXPLAIN_SPANS, gate: str | None = GATE,
                         gate_threshold: float | None = GATE_THRESHOLD, speech_trim: str = SPEECH_TRIM,
                         service: Service = Depends(ready_service)) -> JSONResponse:
    """Classify one clip with many tasks: decoded and encoded once, one unit-LM row per task; a task that
    cannot be served gets its own error entry without failing the others. With ``gate`` (e.g. ``vad:speech``)
    the answers say whether they apply (``server/gate.py``)."""
    names = parse_tasks(tasks)
    gated = parse_gate(gate, gate_threshold)
    with service.admission.slot():
        data = await payload(request, field="audio", limit=service.settings.max_upload_bytes,
                             raw_ok=audio_body_ok, accepted=ACCEPTED,
                             timeout_s=service.settings.body_timeout_s)
        return JSONResponse(await classify_many(service, names, data, top_k, request.receive,
                                                LongAudioRequest(long_audio, window, hop),
                                                explain_spans if explain else 0, gated, speech_trim))

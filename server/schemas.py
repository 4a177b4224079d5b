"""Response schemas, split by role. Used for the OpenAPI document (/docs); the hot classify path builds
plain dicts of exactly these shapes (``server/inference.py``) without re-validating them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from speechprompt.package import TASK_NAME_RE


class Score(BaseModel):
    label: str
    score: float = Field(description="probability of the class (softmax over the task's classes)")


class AudioFacts(BaseModel):
    input_sample_rate: int = Field(description="Hz, as sent")
    input_channels: int
    input_format: str = Field(description="container/codec detected from the bytes (WAV, FLAC, OGG, MP3, MP4, WEBM, AAC)")
    duration_s: float = Field(description="seconds, after resampling to 16 kHz")
    resampled: bool
    frames: int | None = Field(description="dense-model frames encoded (20 ms on HuBERT, 80 ms on the default "
                               "backbone), of the clip less any silent edges the bundle's edge gate dropped")
    units: int | None = Field(description="units after deduplication (with a voice prefix, its tokens included)")


class Timings(BaseModel):
    decode_ms: float
    speech_trim_ms: float = Field(0.0, description="Silero VAD time of the speech trim (0 when no task of the "
                                  "request is trimmed)")
    queue_ms: float
    encode_ms: float = Field(description="0 on a units-cache hit")
    lm_ms: float
    total_ms: float


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: e.g. [\"query\", \"top_k\"] or [\"body\", \"tasks\", 0]")
    msg: str = Field(description="what is wrong with it")


class Problem(BaseModel):
    type: str = Field(description="/problems/<code>")
    title: str
    status: int
    detail: str
    accepted: Any = None
    errors: list[FieldError] | None = Field(None, description="invalid_request only: every field that failed its "
                                                              "declared type or bounds (detail joins them)")


class Stretch(BaseModel):
    start: float = Field(description="seconds from the start of the clip")
    end: float = Field(description="seconds")
    units: list[int] = Field(description="[first, end) indices in the deduplicated unit sequence")
    score_without: float = Field(description="probability of the explained label with this stretch removed")
    importance: float = Field(description="score - score_without: positive when the stretch supported the label")


class Explanation(BaseModel):
    method: str = Field(description="occlusion (each stretch of units removed in turn, all rows in one forward)")
    label: str = Field(description="the explained (winning) label")
    score: float = Field(description="its probability on the whole clip")
    spans: list[Stretch] = Field(description="stretches tiling the clip, in time order")


class WindowResult(BaseModel):
    start: float = Field(description="seconds from the clip's start")
    end: float
    label: str
    scores: dict[str, float] = Field(description="probability of every label on this window")


class Span(BaseModel):
    label: str
    start: float = Field(description="seconds; each window owns [its start, the next window's start)")
    end: float


class LongAudioFacts(BaseModel):
    policy: str = Field(description="truncate | window: how a clip over max_audio_seconds (or a request for "
                        "windows) was scored")
    scored_s: float | None = Field(None, description="truncate: seconds scored (from the start)")
    window: float | None = Field(None, description="window: window length (s)")
    hop: float | None = Field(None, description="window: seconds between window starts")
    windows: int | None = None


class SpeechTrimFacts(BaseModel):
    start_s: float = Field(description="seconds from the clip's start where the scored part begins")
    end_s: float = Field(description="seconds from the clip's start where it ends")
    cut: bool = Field(description="whether the trim cut anything (false: the task was scored on the same part as a "
                      "task without a trim: the whole clip, or its first max_audio_seconds when truncated)")
    applied: bool = Field(True, description="false for a windowed result (long_audio=window): each window was scored "
                          "as it is, without the trim")


class TaskResult(BaseModel):
    task: str
    version: str = Field(description="the exact task version (content digest) that produced this answer")
    label: str
    scores: list[Score] = Field(description="top_k classes; with windows, of the mean of the windows' probabilities")
    backbone: str = Field(description="backbone fingerprint")
    long_audio: LongAudioFacts | None = Field(None, description="only when the clip was truncated or windowed")
    windows: list[WindowResult] | None = Field(None, description="windowed: every window, in order")
    spans: list[Span] | None = Field(None, description="windowed: where each label wins (tiles the clip)")
    explanation: Explanation | None = Field(None, description="only with explain=true (not on windowed results)")
    speech_trim: SpeechTrimFacts | None = Field(None, description="only for a task scored with a speech "
                                                "trim: the part of the clip it was scored on (room-tone edges cut "
                                                "by Silero VAD)")
    applicable: bool | None = Field(None, description="only with a gate (?gate=task:label) that answered: whether "
                                    "the gate passed, i.e. this answer applies to the clip")


class GateResult(BaseModel):
    task: str
    label: str = Field(description="the gate task's label that must be likely enough (e.g. speech)")
    threshold: float = Field(description="the probability the label had to reach")
    version: str | None = Field(description="the gate task version used; null when it could not be served")
    probability: float | None = Field(description="the gate task's probability of the label")
    passed: bool | None = Field(description="probability >= threshold; null when the gate task could not be served")
    error: Problem | None = Field(None, description="why the gate task could not be served")


class ClassifyResponse(TaskResult):
    audio: AudioFacts
    timings: Timings
    units_cache_hit: bool
    gate: GateResult | None = Field(None, description="only with gate=task:label")


class TaskError(BaseModel):
    task: str
    error: Problem


class MultiClassifyResponse(BaseModel):
    results: list[TaskResult | TaskError]
    audio: AudioFacts
    timings: Timings
    units_cache_hit: bool
    gate: GateResult | None = Field(None, description="only with gate=task:label")


class UnitWeight(BaseModel):
    unit: int = Field(description="unit index (codebook entry)")
    weight: float = Field(description="the verbalizer's weight of this unit on the label, centred over labels")


class VerbalizerView(BaseModel):
    task: str
    version: str = Field(description="the task version these weights belong to")
    labels: list[str]
    units: int = Field(description="K, units of the backbone's codebook (and of its voice prefix, if it has one)")
    method: str
    top: dict[str, list[UnitWeight]] = Field(description="per label, its top_k units, largest weight first")
    unit_label: list[str] = Field(description="per unit (K entries), the label its weight favours most")
    weights: list[list[float]] = Field(description="[C, K] centred weights, rows in label order")


class TaskPublic(BaseModel):
    task: str
    state: str = Field(description="stored | loading | resident | failed")
    version: str | None
    labels: list[str] | None = None
    backbone: str | None = None
    backbone_kind: str | None = None
    prompt_length: int | None = None
    created: str | None = None
    training: dict | None = None
    long_audio: dict | None = Field(None, description="the package's long-audio default (policy, window, hop "
                                    "in seconds); null: the server's default")
    readout: str | None = Field(None, description="where the label is read: 'separator' (SpeechPrompt v2) or "
                                "'mean' (the mean hidden state of the clip's row; docs/prompting.md)")
    speech_trim: dict | None = Field(None, description="the package's speech trim (threshold, margin_s, "
                                     "min_cut_s, min_keep_s, loud_db; when: 'recording' when it applies only to "
                                     "requests with speech_trim=recording): the task is scored on the clip without "
                                     "its room-tone edges; null: on the whole clip")
    unit_view: dict | None = Field(None, description="the units the task's prompts read: {fold: 'pitch_registers', "
                                   "clusters, registers}: the clusters of the backbone's product codebook, each unit's "
                                   "pitch register folded (docs/prompting.md); null: every unit as the codebook gives it")
    members: int | None = Field(None, description="prompt sets in the package: 1, or K > 1 for an ensemble (each "
                                "request row is scored by every member in one forward; the answer is their mean "
                                "probability; docs/prompting.md)")
    member_unit_views: list[dict | None] | None = Field(
        None, description="an ensemble whose members read different unit views: one per member, member 0 first "
        "(an object as unit_view, or null for the units as they are); null when every member reads unit_view")
    nbytes: int | None = None
    in_flight: int | None = None
    resident_versions: list[str] = []
    error: dict | None = None


class TaskList(BaseModel):
    tasks: list[TaskPublic]


class TaskCreated(BaseModel):
    task: str
    version: str
    created: bool = Field(description="false when this exact version was already current")


class TaskDeleted(BaseModel):
    task: str
    deleted: bool


_TITLES = {400: "Bad request (parameters, task name, multipart body)", 401: "Missing admin credentials",
           403: "Wrong admin token, or uploads disabled", 404: "Unknown task", 408: "Request body too slow",
           409: "Package for another backbone", 413: "Body, audio or package too large",
           415: "Undecodable audio or not a safetensors package", 422: "Unusable audio or invalid package",
           429: "Too many requests (Retry-After)", 503: "Not ready, task or store unavailable",
           504: "Deadline exceeded"}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each an ``application/problem+json`` Problem (the
    media type is set by :func:`problem_media_types` once the document is built)."""
    return {code: {"model": Problem, "description": _TITLES[code]} for code in codes}


PROBLEMS = problems(400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503, 504)

TASK_NAME_SCHEMA = {"pattern": f"^{TASK_NAME_RE.pattern}$", "minLength": 1, "maxLength": 64,
                    "examples": ["commands-en"]}
TASK_NAME_HELP = "task name: 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"


def problem_media_types(doc: dict[str, Any], max_upload_bytes: int) -> dict[str, Any]:
    """Fix up a generated OpenAPI document in place: every 4xx/5xx response is ``application/problem+json``
    with the Problem schema (FastAPI would say ``application/json``; under ``/v2``, the Open Inference Protocol's
    ``{"error": ...}`` as ``application/json``), and every binary request body states
    the byte limit the server enforces (``maxLength``)."""
    problem_ref = {"schema": {"$ref": "#/components/schemas/Problem"}}
    v2_error = {"schema": {"$ref": "#/components/schemas/V2Error"}}
    doc.setdefault("components", {}).setdefault("schemas", {})["V2Error"] = {
        "title": "V2Error", "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {"type": "string"}},
        "description": "Open Inference Protocol error body (every error under /v2)"}
    for path, ops in doc.get("paths", {}).items():
        error_content = {"application/json": dict(v2_error)} if path.startswith("/v2") else \
            {"application/problem+json": dict(problem_ref)}
        for op in ops.values():
            responses = op.get("responses", {})
            if responses.get("422", {}).get("description") == "Validation Error":
                del responses["422"]  # FastAPI's own: parameter errors are 400 here (server/handlers.py)
            for status, resp in responses.items():
                if status[0] in "45":
                    resp["content"] = dict(error_content)
            for media in op.get("requestBody", {}).get("content", {}).values():
                schema = media.get("schema", {})
                targets = [schema, *schema.get("properties", {}).values()]
                for target in targets:
                    if target.get("format") == "binary":
                        target["maxLength"] = max_upload_bytes
    for unused in ("HTTPValidationError", "ValidationError"):
        doc.get("components", {}).get("schemas", {}).pop(unused, None)
    return doc

"""Response schemas, split by role. Used for the OpenAPI document (/docs); the hot classify path builds
plain dicts of exactly these shapes (``server/inference.py``) without re-validating them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Score(BaseModel):
    label: str
    score: float = Field(description="probability of the class (softmax over the task's classes)")


class AudioFacts(BaseModel):
    input_sample_rate: int = Field(description="Hz, as sent")
    input_channels: int
    input_format: str = Field(description="container/codec detected from the bytes (WAV, FLAC, OGG, MP3)")
    duration_s: float = Field(description="seconds, after resampling to 16 kHz")
    resampled: bool
    frames: int | None = Field(description="HuBERT frames (20 ms each)")
    units: int | None = Field(description="units after deduplication")


class Timings(BaseModel):
    decode_ms: float
    queue_ms: float
    encode_ms: float = Field(description="0 on a units-cache hit")
    lm_ms: float
    total_ms: float


class Problem(BaseModel):
    type: str = Field(description="/problems/<code>")
    title: str
    status: int
    detail: str
    accepted: Any = None


class TaskResult(BaseModel):
    task: str
    version: str = Field(description="the exact task version (content digest) that produced this answer")
    label: str
    scores: list[Score]
    backbone: str = Field(description="backbone fingerprint")


class ClassifyResponse(TaskResult):
    audio: AudioFacts
    timings: Timings
    units_cache_hit: bool


class TaskError(BaseModel):
    task: str
    error: Problem


class MultiClassifyResponse(BaseModel):
    results: list[TaskResult | TaskError]
    audio: AudioFacts
    timings: Timings
    units_cache_hit: bool


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


PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503, 504)
}

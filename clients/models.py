"""Typed results of the v1 API (frozen dataclasses built from the server's JSON).

Parsing is tolerant of members the server adds later (they stay in ``raw``) and strict about the
members a caller relies on (a missing ``label`` or ``scores`` raises ``ResponseFormatError``).
Units: seconds (``duration_s``), milliseconds (``*_ms``), Hz (``input_sample_rate``), bytes (``size_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ProblemError, ResponseFormatError, problem_from_dict


def _req(d: dict[str, Any], key: str, what: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise ResponseFormatError(f"{what} lacks {key!r}: {str(d)[:200]}")
    return d[key]


@dataclass(frozen=True)
class Score:
    """One class and its probability (0..1)."""

    label: str
    score: float


@dataclass(frozen=True)
class AudioInfo:
    """What the server decoded: input rate (Hz) and channels, duration at 16 kHz (s), frames and units."""

    input_sample_rate: int | None = None
    input_channels: int | None = None
    input_format: str | None = None
    duration_s: float | None = None
    resampled: bool | None = None
    frames: int | None = None
    units: int | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> AudioInfo:
        d = d or {}
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Timings:
    """Server-side time per stage in milliseconds (the same numbers as its metrics)."""

    decode_ms: float | None = None
    speech_trim_ms: float | None = None
    queue_ms: float | None = None
    encode_ms: float | None = None
    lm_ms: float | None = None
    total_ms: float | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Timings:
        d = d or {}
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ClassifyResult:
    """One clip classified by one task version; ``scores`` sorted best first (``top_k`` of them)."""

    task: str
    version: str
    label: str
    scores: tuple[Score, ...]
    backbone: str | None
    audio: AudioInfo
    timings: Timings
    units_cache_hit: bool | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def score(self) -> float | None:
        """Probability of the predicted label (None if the server returned no scores)."""
        return next((s.score for s in self.scores if s.label == self.label), None)

    @property
    def explanation(self) -> dict[str, Any] | None:
        """The occlusion explanation (``explain=True``): ``{method, label, score, spans: [{start, end, units,
        score_without, importance}]}``, times in seconds; None when not asked for (docs/api.md)."""
        return self.raw.get("explanation")

    @property
    def speech_trim(self) -> dict[str, Any] | None:
        """For a task whose package names a speech trim: ``{start_s, end_s, cut}``, the seconds of the clip it was
        scored on (room-tone edges cut); None for other tasks (docs/api.md)."""
        return self.raw.get("speech_trim")

    @property
    def applicable(self) -> bool | None:
        """With a gate (``classify_multi(..., gate="vad:speech")``): whether the gate passed, i.e. this answer
        applies to the clip; None without a gate or when the gate task could not be served."""
        return self.raw.get("applicable")

    @property
    def gate(self) -> dict[str, Any] | None:
        """The gate's outcome on the single-task route (``classify(..., gate="vad:speech")``): ``{task, label,
        threshold, version, probability, passed}`` (``error`` when the gate task could not be served); None
        without a gate and on the results of a multi-task call (there it is ``MultiClassifyResult.gate``)."""
        return self.raw.get("gate")

    @classmethod
    def from_json(cls, d: dict[str, Any], audio: dict | None = None, timings: dict | None = None,
                  units_cache_hit: bool | None = None) -> ClassifyResult:
        what = "classify result"
        scores = tuple(Score(str(_req(s, "label", "score")), float(_req(s, "score", "score")))
                       for s in _req(d, "scores", what))
        return cls(task=str(_req(d, "task", what)), version=str(d.get("version") or ""),
                   label=str(_req(d, "label", what)), scores=scores, backbone=d.get("backbone"),
                   audio=AudioInfo.from_json(d.get("audio", audio)),
                   timings=Timings.from_json(d.get("timings", timings)),
                   units_cache_hit=d.get("units_cache_hit", units_cache_hit), raw=d)


@dataclass(frozen=True)
class TaskFailure:
    """One task of a multi-task request that failed (unknown task, task unavailable, ...)."""

    task: str
    error: ProblemError


@dataclass(frozen=True)
class MultiClassifyResult:
    """One clip, many tasks: ``results`` in the order asked, each a ``ClassifyResult`` or a ``TaskFailure``."""

    results: tuple[ClassifyResult | TaskFailure, ...]
    audio: AudioInfo
    timings: Timings
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def ok(self) -> dict[str, ClassifyResult]:
        """Successful results by task name."""
        return {r.task: r for r in self.results if isinstance(r, ClassifyResult)}

    @property
    def failed(self) -> dict[str, TaskFailure]:
        """Failed tasks by task name."""
        return {r.task: r for r in self.results if isinstance(r, TaskFailure)}

    @property
    def gate(self) -> dict[str, Any] | None:
        """The gate's outcome when one was asked for: ``{task, label, threshold, version, probability, passed}``
        (``passed`` None and ``error`` set when the gate task could not be served; docs/api.md)."""
        return self.raw.get("gate")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MultiClassifyResult:
        out: list[ClassifyResult | TaskFailure] = []
        for item in _req(d, "results", "multi-task result"):
            if isinstance(item, dict) and "error" in item:
                err = item["error"] if isinstance(item["error"], dict) else {"detail": str(item["error"])}
                out.append(TaskFailure(str(item.get("task", "")), problem_from_dict(err)))
            else:
                out.append(ClassifyResult.from_json(item, d.get("audio"), d.get("timings"), d.get("units_cache_hit")))
        return cls(tuple(out), AudioInfo.from_json(d.get("audio")), Timings.from_json(d.get("timings")), raw=d)


@dataclass(frozen=True)
class TaskInfo:
    """A task as listed by the server: current version, labels, backbone, lifecycle state, size (bytes).

    Accepts both spellings servers use: ``name`` or ``task`` for the name, ``size_bytes`` or ``nbytes``
    for the size. ``metadata`` is the server's ``metadata`` object, or else every member not mapped to a
    field here (e.g. ``training``, ``prompt_length``, ``error``).
    """

    name: str
    version: str
    labels: tuple[str, ...]
    num_classes: int
    backbone: str | None
    state: str | None
    created: str | None
    size_bytes: int | None
    metadata: dict[str, Any] | None = None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    _MAPPED = frozenset({"name", "task", "version", "labels", "num_classes", "backbone", "state", "created",
                         "size_bytes", "nbytes", "metadata"})

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskInfo:
        if not isinstance(d, dict) or not (d.get("name") or d.get("task")):
            raise ResponseFormatError(f"task lacks 'name': {str(d)[:200]}")
        labels = tuple(str(x) for x in d.get("labels") or ())
        metadata = d.get("metadata")
        if metadata is None:
            metadata = {k: v for k, v in d.items() if k not in cls._MAPPED}
        size = d.get("size_bytes", d.get("nbytes"))
        return cls(name=str(d.get("name") or d.get("task")), version=str(d.get("version") or ""), labels=labels,
                   num_classes=int(d.get("num_classes") or len(labels)), backbone=d.get("backbone"),
                   state=d.get("state"), created=d.get("created"), size_bytes=None if size is None else int(size),
                   metadata=metadata, raw=d)


@dataclass(frozen=True)
class UploadResult:
    """Answer of ``PUT /v1/tasks/{task}``: the stored version (content digest)."""

    task: str
    version: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UploadResult:
        return cls(str(_req(d, "task", "upload")), str(_req(d, "version", "upload")))


@dataclass(frozen=True)
class DeleteResult:
    """Answer of ``DELETE /v1/tasks/{task}``."""

    task: str
    deleted: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DeleteResult:
        return cls(str(_req(d, "task", "delete")), bool(d.get("deleted", False)))


@dataclass(frozen=True)
class BackboneInfo:
    """The loaded backbone: kind (gslm|pgslm), name, fingerprint; everything else in ``raw``."""

    kind: str | None
    name: str | None
    fingerprint: str
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackboneInfo:
        return cls(d.get("kind"), d.get("name"), str(_req(d, "fingerprint", "backbone")), raw=d)


@dataclass(frozen=True)
class Readiness:
    """``GET /readyz``: ``ready`` is True on 200, False on 503; ``body`` is what the server said."""

    ready: bool
    status: int
    body: dict[str, Any]

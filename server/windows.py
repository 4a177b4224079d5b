"""Windows over long audio, shared by windowed classify and streams: plan, score through the batcher, aggregate.

``plan_windows(N, window, hop)`` -> sample ranges; ``score_window`` sends ONE window (all of a request's task
versions as rows of one job) through the same batcher as classify; ``aggregate`` turns per-window probabilities
into a per-task summary (mean of probabilities, label of the mean, and the spans where each label wins).

Each window is encoded on its own (the encoder sees exactly the window's samples, as a classify of that
stretch would): a window's units and scores equal those of a classify call on the same samples. Units of
overlapping stretches are not shared between windows (see docs/api.md, "Windowed results"). No FastAPI here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import BadRequest, InferenceFailed, TaskUnavailable, rule_for
from .jobs import JobResult
from .registry import Lease
from .service import Service
from .waits import while_connected

SAMPLE_RATE = 16000
MIN_WINDOW_S = 0.025  # the encoders' shortest clip (400 samples)
MIN_HOP_S, MAX_OVERLAP = 0.05, 10  # bounds the windows of one request: at most 20 per second, each audio sample in <= 10


@dataclass(frozen=True)
class Window:
    """Samples ``[start, end)`` of the 16 kHz clip (sample indices; seconds = index / 16000)."""

    start: int
    end: int

    @property
    def seconds(self) -> tuple[float, float]:
        return round(self.start / SAMPLE_RATE, 6), round(self.end / SAMPLE_RATE, 6)


def plan_windows(n: int, window: int, hop: int, *, final: bool = True) -> list[Window]:
    """Windows of ``window`` samples every ``hop`` samples over a clip of ``n`` samples.

    Full windows start at 0, hop, 2 hop, ... while they fit. With ``final`` (the clip is complete) a tail not
    covered by a full window gets one more window ending at ``n`` (``window`` long, or the whole clip when it
    is shorter than one window). Without ``final`` (a stream still arriving) only full windows are listed.
    """
    if window <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive sample counts")
    out = [Window(s, s + window) for s in range(0, n - window + 1, hop)]
    if final and n > 0 and (not out or out[-1].end < n):
        out.append(Window(max(0, n - window), n))
    return out


def seconds_to_samples(seconds: float) -> int:
    return max(1, round(seconds * SAMPLE_RATE))


async def score_window(service: Service, samples: np.ndarray, leases: Sequence[Lease],
                       deadline_s: float) -> JobResult:
    """Score one window ``[W] f32 @ 16 kHz`` with every lease (one job, one unit-LM row per task version).

    The leases stay held by the caller (released when the whole request or stream ends). Windows bypass the
    units cache (hundreds of one-off windows would evict the clips other requests repeat). Raises QueueFull
    (429), DeadlineExceeded (504: not scored within ``deadline_s`` seconds) or the encoder's typed errors.
    """
    batcher = service.batcher
    assert batcher is not None
    deadline = time.monotonic() + deadline_s
    fut = batcher.submit(samples, "", [le.key for le in leases], deadline, cached=False)  # no units cache: no digest
    return await while_connected(fut, None, deadline, "a window waited for the model")


def row_probs(lease: Lease, row: np.ndarray | BaseException) -> np.ndarray:
    """One task's probabilities ``[C]`` from a job row; raises the row's typed error."""
    if isinstance(row, BaseException):
        if rule_for(row) is None:
            raise InferenceFailed(f"scoring task {lease.task!r} failed: {type(row).__name__}") from row
        raise row
    probs = np.asarray(row, dtype=np.float64)
    if not np.isfinite(probs).all():
        raise TaskUnavailable(f"task {lease.task!r} version {lease.version} gave non-finite scores")
    return probs


def task_scores(lease: Lease, probs: np.ndarray) -> dict:
    """``{label, scores: {label: p}, version}`` for one task on one window."""
    return {"label": lease.labels[int(np.argmax(probs))],
            "scores": {lab: float(p) for lab, p in zip(lease.labels, probs, strict=True)},
            "version": lease.version}


def aggregate(lease: Lease, windows: Sequence[Window], probs: Sequence[np.ndarray]) -> dict:
    """Summary of one task over its windows: ``mean_scores`` (mean of the windows' probabilities), ``label``
    (argmax of the mean) and ``spans``: each window owns ``[its start, next window's start)`` (the last one
    up to its end); consecutive owned stretches with the same winning label merge into one span (seconds)."""
    if not windows:
        return {"label": None, "mean_scores": {}, "spans": [], "version": lease.version}
    mean = np.mean(np.stack(probs), axis=0)
    spans: list[dict] = []
    for i, (w, p) in enumerate(zip(windows, probs, strict=True)):
        label = lease.labels[int(np.argmax(p))]
        owned_end = windows[i + 1].start if i + 1 < len(windows) else w.end
        start, end = round(w.start / SAMPLE_RATE, 6), round(owned_end / SAMPLE_RATE, 6)
        if spans and spans[-1]["label"] == label:
            spans[-1]["end"] = end
        else:
            spans.append({"label": label, "start": start, "end": end})
    return {"label": lease.labels[int(np.argmax(mean))],
            "mean_scores": {lab: float(m) for lab, m in zip(lease.labels, mean, strict=True)},
            "spans": spans, "version": lease.version}


def choose_window(leases: Sequence[Lease], window_s: float | None, hop_s: float | None, *, default_window_s: float,
                  default_hop_s: float, max_window_s: float) -> tuple[float, float]:
    """Window and hop (seconds): the request's, else the first task's package metadata (``long_audio``
    ``window``/``hop``), else the server defaults. Raises BadRequest unless 0.025 s <= window <=
    ``max_window_s`` (the longest clip the unit LM takes) and max(0.05 s, window / 10) <= hop <= window."""
    meta = long_audio_meta(leases[0]) if leases else {}
    window = float(window_s if window_s is not None else meta.get("window", default_window_s))
    hop = float(hop_s if hop_s is not None else meta.get("hop", min(default_hop_s, window)))
    if not (MIN_WINDOW_S <= window <= max_window_s) or not np.isfinite(window):
        raise BadRequest(f"window {window:g} s is out of range",
                         accepted=f"window from {MIN_WINDOW_S} to {max_window_s:g} seconds")
    low = max(MIN_HOP_S, window / MAX_OVERLAP)
    if not (low <= hop <= window) or not np.isfinite(hop):
        raise BadRequest(f"hop {hop:g} s is out of range", accepted=f"hop from {low:g} s (at least {MIN_HOP_S} s and "
                         f"1/{MAX_OVERLAP} of the window) to the window ({window:g} s)")
    return window, hop


def long_audio_meta(lease: Lease) -> dict:
    """The task package's ``long_audio`` metadata (policy, window, hop), ``{}`` when it has none."""
    return dict(getattr(lease.entry.meta, "long_audio", None) or {})


async def score_windows(service: Service, samples: np.ndarray, leases: Sequence[Lease], window_s: float,
                        hop_s: float) -> tuple[list[Window], list[JobResult]]:
    """Score every window of a complete clip ``[N] f32 @ 16 kHz`` (:func:`plan_windows`) -> (windows, one
    JobResult per window, in order). At most ``max_batch_rows // rows`` windows are queued at once (rows: the
    tasks' unit-LM rows, an ensemble's members each), so a long clip never fills the shared queue; each window has
    the request deadline from when it is queued."""
    windows = plan_windows(samples.size, seconds_to_samples(window_s), seconds_to_samples(hop_s))
    s = service.settings
    rows = sum(getattr(le.entry.meta, "members", 1) for le in leases)  # an ensemble task: a row per member
    limit = asyncio.Semaphore(max(1, s.max_batch_rows // max(1, rows)))

    async def one(w: Window) -> JobResult:
        async with limit:
            return await score_window(service, samples[w.start:w.end], leases, s.request_deadline_s)

    tasks: list[asyncio.Task] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(w)) for w in windows]
    except BaseExceptionGroup as eg:
        raise first_error(eg) from None
    service.metrics.windows.labels(source="classify").inc(len(windows))
    return windows, [t.result() for t in tasks]


def first_error(exc: BaseException) -> BaseException:
    """The first error inside (nested) exception groups (what a task group raises), else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc

"""One classify request from bytes to answer: decode (thread pool) -> lease task versions -> model loop.

Routes call :func:`classify_one` / :func:`classify_many`; this module builds the response bodies and
records request metrics. Nothing blocking runs on the event loop: audio decoding and hashing go to a
worker thread, inference to the batcher's model thread. No FastAPI here (``request`` is only used to
notice a client that went away).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from speechprompt.audio import AudioTooLong, DecodedAudio, decode_audio, from_pcm

from . import speech_trims
from .errors import BadRequest, DeadlineExceeded, error_code, to_problem
from .explanations import occlusion_body
from .gate import Gate, check_label
from .gate import outcome as gate_outcome
from .jobs import JobResult
from .long_audio import LongAudioRequest, decode_limit, policy_of, refusal, split, truncated, windowed_results
from .registry import Lease
from .service import Service
from .units_cache import pcm_digest
from .waits import while_connected
from .windows import row_probs

MAX_TASKS_PER_REQUEST = 64


@dataclass(frozen=True)
class Clip:
    """A decoded request clip, its PCM digest (units-cache key), and the milliseconds its decode and its speech-trim
    VAD took (``trim_ms``: 0 when no task of the request names a trim)."""

    audio: DecodedAudio
    digest: str
    decode_ms: float
    trim_ms: float = 0.0


@dataclass(frozen=True)
class PCM:
    """Audio a client sent as numbers (Open Inference Protocol FP32 tensors): ``samples`` float32 [N] mono
    at ``sample_rate`` Hz; checked and resampled like decoded files (``speechprompt.audio.from_pcm``)."""

    samples: np.ndarray
    sample_rate: int


def _decode(data: bytes | PCM, max_seconds: float) -> tuple[DecodedAudio, str]:
    if isinstance(data, PCM):
        audio = from_pcm(data.samples, data.sample_rate, max_seconds=max_seconds)
    else:
        audio = decode_audio(data, max_seconds=max_seconds)
    return audio, pcm_digest(audio.samples)


async def decode(service: Service, data: bytes | PCM, max_seconds: float | None = None) -> Clip:
    """Bytes (an encoded file) or PCM -> 16 kHz mono PCM + its digest, in a worker thread (typed AudioError
    on bad input); at most ``max_seconds`` (default: the server's ``max_audio_seconds``)."""
    start = time.monotonic()
    audio, digest = await asyncio.to_thread(_decode, data, max_seconds or service.max_audio_seconds)
    seconds = time.monotonic() - start
    service.metrics.decode_seconds.observe(seconds)
    return Clip(audio, digest, seconds * 1e3)


async def _until(aw: Any, deadline: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(aw, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise DeadlineExceeded(f"the request's deadline passed while {what}") from None


async def run_jobs(service: Service, jobs: list[tuple[Clip, list[Lease]]], deadline: float,
                   receive: Any = None, explain_spans: int = 0) -> list[JobResult]:
    """Queue one job per ``(clip, leases)`` (one row per lease, plus ``explain_spans`` occluded rows per lease), all
    before the first wait, then wait for every one, the deadline or the client's disconnect. Each job releases its
    leases once (``jobs.finish``); when one cannot be queued (429, not ready), its leases and those of the jobs after
    it are released here, the jobs already queued are cancelled, and the error is raised."""
    registry, batcher = service.registry, service.batcher
    assert registry is not None and batcher is not None

    def releaser(leases: list[Lease]) -> Callable[[], None]:
        def release() -> None:
            for lease in leases:
                registry.release(lease)
        return release

    futs: list[asyncio.Future] = []
    for i, (clip, leases) in enumerate(jobs):
        try:
            futs.append(batcher.submit(clip.audio.samples, clip.digest, [le.key for le in leases], deadline,
                                       releaser(leases), explain_spans=explain_spans))
        except BaseException:
            for _, later in jobs[i:]:
                releaser(later)()
            for fut in futs:
                fut.cancel()  # the model loop skips a cancelled job (and counts it); its leases are released there
            raise
    return await while_connected(asyncio.gather(*futs), receive, deadline)


def _scores(lease: Lease, probs: Any, top_k: int, fingerprint: str,
            explain: tuple[JobResult, tuple[float, float], int] | None = None, by_label: bool = False) -> dict:
    """One task's result; ``explain`` = (the job's result, the seconds of the clip its units cover, the row's index)
    adds its explanation;
    ``by_label``: ``scores`` lists every class in the package's label order (top_k ignored)."""
    probs = row_probs(lease, probs)  # this row alone fails: the other tasks of the request still answer
    order = np.argsort(-probs, kind="stable")[:top_k]
    shown = range(len(probs)) if by_label else order
    out = {"task": lease.task, "version": lease.version, "label": lease.labels[int(order[0])],
           "scores": [{"label": lease.labels[int(i)], "score": float(probs[i])} for i in shown],
           "backbone": fingerprint}
    if explain is not None:
        result, span_s, row = explain
        out["explanation"] = occlusion_body(lease, probs, result.occluded[row], result.units, result.spans, span_s)
    return out


def _audio(clip: Clip, result: JobResult | None) -> dict:
    a = clip.audio
    out = {"input_sample_rate": a.input_sample_rate, "input_channels": a.input_channels,
           "input_format": a.input_format, "duration_s": round(a.duration_s, 6), "resampled": a.resampled,
           "frames": None, "units": None}
    if result is not None:
        out.update(frames=int(result.units.frames), units=int(len(result.units.units)))
    return out


def _timings(clip: Clip, result: JobResult | None, start: float) -> dict:
    r = result
    return {"decode_ms": round(clip.decode_ms, 3), "speech_trim_ms": round(clip.trim_ms, 3),
            "queue_ms": round(r.queue_ms, 3) if r else 0.0, "encode_ms": round(r.encode_ms, 3) if r else 0.0, "lm_ms": round(r.lm_ms, 3) if r else 0.0,
            "total_ms": round((time.monotonic() - start) * 1e3, 3)}


def _count(service: Service, task: str, status: int) -> None:
    known = service.registry is not None and task in service.registry.names()
    service.metrics.requests.labels(task=task if known else "_unknown", status=str(status)).inc()


async def classify_one(service: Service, task: str, data: bytes | PCM, top_k: int, receive: Any = None,
                       long_audio: LongAudioRequest | None = None, explain_spans: int = 0,
                       by_label: bool = False, gate: Gate | None = None, speech_trim: str = "package") -> dict:
    """Score one clip with one task -> the classify response body (typed errors propagate); with
    ``explain_spans`` > 0 the body has an occlusion ``explanation`` over that many stretches. ``by_label``:
    ``scores`` lists every class in the package's label order (top_k ignored) instead of the best first.
    ``gate``: as for :func:`classify_many` (the body gets ``gate`` and ``applicable``). ``speech_trim``: the request's
    mode, ``package``, ``recording``, ``on`` or ``off`` (``server/speech_trims.py``)."""
    start = time.monotonic()
    try:
        service.require_ready()
        deadline = start + service.settings.request_deadline_s
        lease = await _until(service.registry.acquire(task), deadline, f"task {task!r} was loading")
        outcomes: dict[str, Lease | Exception] = {task: lease}
        if gate is not None and gate.task != task:
            outcomes[gate.task] = await _acquire_gate(service, gate, deadline, [lease])
        k = _gate_top_k(service, gate, outcomes, top_k)
        leases = [o for o in outcomes.values() if isinstance(o, Lease)]
        clip, items, result = await _score_leases(service, leases, data, k, receive, deadline,
                                                  long_audio or LongAudioRequest(), explain_spans, by_label,
                                                  speech_trim)
        body = items[task]
        if isinstance(body, Exception):
            raise body
        gate_body = None if gate is None else gate_outcome(gate, items.get(gate.task, outcomes[gate.task]))
        if gate_body is not None:
            _mark(body, gate_body, task, top_k)
        body.update(audio=_audio(clip, result), timings=_timings(clip, result, start),
                    units_cache_hit=bool(result.cache_hit) if result else False)
        if gate_body is not None:
            body["gate"] = gate_body
    except BaseException as exc:
        _count(service, task, to_problem(exc).status if isinstance(exc, Exception) else 499)
        raise
    service.metrics.request_seconds.observe(time.monotonic() - start)
    _count(service, task, 200)
    return body


async def _score_leases(service: Service, leases: list[Lease], data: bytes | PCM, top_k: int, receive: Any,
                        deadline: float, req: LongAudioRequest, explain_spans: int = 0,
                        by_label: bool = False, trim_mode: str = "package") -> tuple[Clip, dict, JobResult | None]:
    """Decode once, then score each lease by its long-audio policy (``server/long_audio.py``): as usual on the
    clip (or its first ``max_audio_seconds``), by windows, or refused. Releases every lease. -> (clip,
    {task: result item or typed error}, the plain job's result or None). ``explain_spans`` > 0 explains the
    tasks scored on the clip as a whole (or truncated); windowed tasks get no explanation. ``trim_mode``: the
    request's ``speech_trim`` (``server/speech_trims.py``)."""
    registry = service.registry
    fingerprint = service.runtime.fingerprint
    held = list(leases)  # released here at the end; a plain job's leases are released by its job
    try:
        policies = [policy_of(service, le, req) for le in leases]
        limit = decode_limit(service, policies)
        try:
            clip = await decode(service, data, limit)
        except AudioTooLong as e:  # past the decode limit: the whole request is the 413
            raise (refusal(service, req, error=e) if leases and limit == service.max_audio_seconds else e) from None
        plain, windowed, items = split(service, leases, policies, clip.audio.duration_s, req)
        result, trim_ms = None, 0.0
        if plain:
            job_clip = clip
            if clip.audio.duration_s > service.max_audio_seconds:  # the truncate policy
                job_clip = await _truncate(service, clip)
            split_up = await speech_trims.parts(service, job_clip, plain, trim_mode)
            parts, trim_facts = split_up.parts, split_up.facts
            items.update(split_up.errors)  # their leases stay held (released below)
            trim_ms = split_up.vad_s * 1e3
            queued = [le for part in parts for le in part.leases]
            held = [le for le in held if le not in queued]  # no await until run_jobs queued them: their jobs release them
            results = await run_jobs(service, [(part.clip, part.leases) for part in parts], deadline, receive,
                                     explain_spans)
            for part, res in zip(parts, results, strict=True):
                result = result or res  # the response's audio and timings: the whole clip's job when there is one
                span_s = encoded_span(service, part.clip) if explain_spans else (0.0, 0.0)
                span_s = (span_s[0] + part.start_s, span_s[1] + part.start_s)  # in the seconds of the clip as sent
                for i, (le, row) in enumerate(zip(part.leases, res.rows, strict=True)):
                    items[le.task] = _item(le, row, top_k, fingerprint, (res, span_s, i) if explain_spans else None,
                                           by_label)
                    if isinstance(items[le.task], Exception):
                        continue
                    if job_clip is not clip:
                        items[le.task]["long_audio"] = {"policy": "truncate",
                                                        "scored_s": round(job_clip.audio.duration_s, 6)}
                    if le.task in trim_facts:
                        items[le.task]["speech_trim"] = trim_facts[le.task]
        if windowed:
            items.update(await while_connected(
                windowed_results(service, clip.audio.samples, windowed, req, top_k, fingerprint, trim_mode), receive))
    finally:
        for lease in held:
            registry.release(lease)
    return replace(clip, trim_ms=trim_ms), items, result


def encoded_span(service: Any, clip: Clip) -> tuple[float, float]:
    """The seconds of ``clip`` its units cover: the runtime's ``encoded_span`` (an edge gate may drop silent edges),
    the whole clip for a runtime without one."""
    span = getattr(service.runtime, "encoded_span", None)
    return span(clip.audio.samples) if span is not None else (0.0, clip.audio.duration_s)


def _item(lease: Lease, row: Any, top_k: int, fingerprint: str,
          explain: tuple[JobResult, tuple[float, float], int] | None = None,
          by_label: bool = False) -> dict | Exception:
    try:
        return _scores(lease, row, top_k, fingerprint, explain, by_label)
    except Exception as exc:  # noqa: BLE001 - typed: this task's error entry
        return exc


async def _truncate(service: Service, clip: Clip) -> Clip:
    samples = truncated(service, clip.audio.samples)
    digest = await asyncio.to_thread(pcm_digest, samples)
    audio = replace(clip.audio, samples=samples, duration_s=samples.size / clip.audio.sample_rate)
    return Clip(audio, digest, clip.decode_ms)


async def _acquire_gate(service: Service, gate: Gate, deadline: float, held: list[Lease]) -> Lease | Exception:
    """The gate task's lease, or the typed error that it cannot be served (not raised: the gate reports it).
    A cancellation releases ``held`` before it propagates."""
    try:
        return await _until(service.registry.acquire(gate.task), deadline, f"task {gate.task!r} was loading")
    except Exception as exc:  # noqa: BLE001 - typed: the gate's error entry
        return exc
    except BaseException:
        _release_all(service, held)
        raise


def _release_all(service: Service, held) -> None:
    """Release every ``Lease`` among ``held`` (errors in it are skipped)."""
    for lease in held:
        if isinstance(lease, Lease):
            service.registry.release(lease)


def _gate_top_k(service: Service, gate: Gate | None, outcomes: dict[str, Lease | Exception], top_k: int) -> int:
    """``top_k`` to score with: every class of the gate task, so its label's score is known. Raises
    ``BadRequest`` (after releasing every lease in ``outcomes``) when the gate label is not one of its labels."""
    lease = outcomes.get(gate.task) if gate is not None else None
    if not isinstance(lease, Lease):
        return top_k
    try:
        check_label(gate, lease)
    except BadRequest:
        _release_all(service, outcomes.values())
        raise
    return max(top_k, len(lease.labels))


def _mark(item: dict, gate_body: dict, task: str, top_k: int) -> None:
    """Trim ``item``'s scores back to ``top_k`` and mark it ``applicable`` (unless it is the gate task's own or the
    gate task could not be served)."""
    item["scores"] = item["scores"][:top_k]
    if gate_body["passed"] is not None and task != gate_body["task"]:
        item["applicable"] = gate_body["passed"]


def parse_tasks(spec: str) -> list[str]:
    """``a,b,c`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped); BadRequest when empty/too many."""
    tasks = list(dict.fromkeys(t.strip() for t in spec.split(",") if t.strip()))
    if not tasks:
        raise BadRequest("no task named in 'tasks'", accepted="tasks=a,b,c (comma-separated task names)")
    if len(tasks) > MAX_TASKS_PER_REQUEST:
        raise BadRequest(f"{len(tasks)} tasks named; at most {MAX_TASKS_PER_REQUEST} per request")
    return tasks


def _task_error(service: Service, task: str, exc: Exception) -> dict:
    prob = to_problem(exc)
    service.metrics.failures.labels(code=error_code(exc)).inc()
    _count(service, task, prob.status)
    return {"task": task, "error": prob.body}


async def classify_many(service: Service, tasks: list[str], data: bytes, top_k: int, receive: Any = None,
                        long_audio: LongAudioRequest | None = None, explain_spans: int = 0,
                        gate: Gate | None = None, speech_trim: str = "package") -> dict:
    """Score one clip with many tasks: decoded and encoded ONCE, one unit-LM row per task (plus
    ``explain_spans`` occluded rows per task when explaining). A task that cannot be served gets an error
    entry (problem body) and does not fail the others. ``gate`` (``server/gate.py``): its task is scored in the
    same pass (all its classes, so the gate label's probability is known), the body gets ``gate`` and every other
    result ``applicable``; a gate label the gate task does not have is a ``BadRequest`` (400). ``speech_trim``: as
    for :func:`classify_one`."""
    start = time.monotonic()
    service.require_ready()
    deadline = start + service.settings.request_deadline_s
    registry = service.registry
    scored = tasks if gate is None or gate.task in tasks else [*tasks, gate.task]
    outcomes: dict[str, Lease | Exception] = {}
    for task, got in zip(scored, await asyncio.gather(
            *(_until(registry.acquire(t), deadline, f"task {t!r} was loading") for t in scored),
            return_exceptions=True), strict=True):
        if isinstance(got, BaseException) and not isinstance(got, Exception):
            _release_all(service, outcomes.values())
            raise got
        outcomes[task] = got
    k = _gate_top_k(service, gate, outcomes, top_k)
    leases = [o for o in outcomes.values() if isinstance(o, Lease)]
    clip, items, result = await _score_leases(service, leases, data, k, receive, deadline,
                                              long_audio or LongAudioRequest(), explain_spans,
                                              trim_mode=speech_trim)
    gate_body = None if gate is None else gate_outcome(gate, items.get(gate.task, outcomes[gate.task]))
    results = []
    for task in tasks:
        got = items.get(task, outcomes[task])
        if isinstance(got, Exception):
            results.append(_task_error(service, task, got))
        else:
            if gate_body is not None:
                _mark(got, gate_body, task, top_k)
            results.append(got)
            _count(service, task, 200)
    service.metrics.request_seconds.observe(time.monotonic() - start)
    body = {"results": results, "audio": _audio(clip, result), "timings": _timings(clip, result, start),
            "units_cache_hit": bool(result.cache_hit) if result else False}
    if gate_body is not None:
        body["gate"] = gate_body
    return body

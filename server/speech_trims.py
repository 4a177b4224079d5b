"""A task's speech trim at serve time: the clip's room-tone edges cut (Silero VAD) before that task's units.

A task package may name a speech trim (``speech_trim`` metadata, ``speechprompt/speech_trim.py``): the server then
scores that task on the clip from a margin before its first speech to a margin after its last, instead of the whole
recording. The VAD runs once per clip; the tasks of one request that are scored on the same part (no trim, or trims
that give the same bounds) share one encode, and each other part costs one more (``inference._score_leases``). The Silero VAD weights are a file next
to the bundles (``Settings.speech_trim_weights``, ``models/speech_trim``); a server without them answers a trimmed
task with 503 ``speech_trim_unavailable``. Which tasks are trimmed is the request's choice (``speech_trim``,
:data:`MODES`): by default those whose package names a trim for every clip; for a whole recording also those whose
package names one for recordings (``when``, ``speechprompt/speech_trim.py``). Windowed tasks (``long_audio=window``) and streams score each window as
it is (their answers say ``applied: false``).
No FastAPI here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechprompt.speech_trim import SpeechTrim

from .errors import TaskUnavailable
from .registry import Lease
from .units_cache import pcm_digest

log = logging.getLogger(__name__)


class SpeechTrimUnavailable(TaskUnavailable):
    """The task's package names a speech trim, and this server has no Silero VAD weights to run it."""

    code = "speech_trim_unavailable"


def load_vad(path: Path) -> Any:
    """The Silero VAD of ``path`` (``SileroVAD``), or None when the file does not exist (a warning is logged: tasks
    that name a trim then answer 503). Raises ``ValueError`` naming the setting for a file that is not silero-vad v6
    16 kHz weights (a misconfigured server fails its start-up rather than serve those tasks untrimmed)."""
    from speechprompt.silero_vad import SileroVAD

    path = Path(path)
    if not path.is_file():
        log.warning("no speech-trim weights at %s (SPEECHPROMPT_SPEECH_TRIM_WEIGHTS): tasks whose package names a "
                    "speech trim will answer 503 speech_trim_unavailable", path)
        return None
    try:
        return SileroVAD.load(path)
    except Exception as e:  # noqa: BLE001 - safetensors, shape and name errors alike: a misconfiguration
        raise ValueError(f"SPEECHPROMPT_SPEECH_TRIM_WEIGHTS={path} is not silero-vad v6 16 kHz weights "
                         f"({type(e).__name__}: {str(e)[:200]})") from None


# a request's ``speech_trim``: the packages' trims that apply always | the clip is a whole recording: every trim a
# package names | every task (a default trim where a package names none) | no task
MODES = ("package", "recording", "on", "off")
DEFAULT_TRIM = SpeechTrim()  # what ``speech_trim=on`` applies to a task whose package names no trim


def trim_of(lease: Lease, mode: str = "package") -> SpeechTrim | None:
    """The speech trim ``lease``'s task is scored with under the request's ``mode`` (:data:`MODES`): ``package``, the
    one its package names to apply always (``when`` ``always``); ``recording``, the one its package names, whenever
    it applies; ``on``, that one or else :data:`DEFAULT_TRIM` (threshold 0.5, margin 0.25 s); ``off``, None."""
    if mode == "off":
        return None
    meta = getattr(lease.entry, "meta", None)
    named = getattr(meta, "trim", None)
    if named is None:
        return DEFAULT_TRIM if mode == "on" else None
    return None if mode == "package" and getattr(meta, "trim_when", "always") != "always" else named


@dataclass(frozen=True)
class Part:
    """The clip some tasks of a request are scored on (``inference.Clip``), those tasks' leases, and where that clip
    begins in the clip as sent (seconds)."""

    clip: Any
    leases: list[Lease]
    start_s: float = 0.0


def bounds(samples: np.ndarray, trims: set[SpeechTrim], vad: Any,
           gate_span: tuple[int, int]) -> dict[SpeechTrim, tuple[int, int]]:
    """``samples`` ``[N]`` f32 at 16 kHz -> per trim, the ``(start, stop)`` its tasks are scored on: the trim's bounds
    inside the part the bundle's edge gate reads (``gate_span``, samples; digital silence first, as the trim was
    measured in docs/results.md), or ``(0, N)`` when the trim keeps that whole part. The VAD runs once for all trims."""
    a, b = gate_span
    x = torch.from_numpy(samples[a:b])
    probs = vad(x)
    out = {}
    for trim in trims:
        s, e = trim.bounds_from(probs, x)
        out[trim] = (0, int(samples.shape[0])) if (s, e) == (0, b - a) else (a + s, a + e)
    return out


def facts(start: int, stop: int, n: int, rate: int, applied: bool = True) -> dict:
    """The ``speech_trim`` object of an answer: the part ``[start, stop)`` of a clip of ``n`` samples at ``rate`` Hz
    that was scored (``start_s``, ``end_s`` in seconds), whether that ``cut`` anything, and whether the trim was
    ``applied`` (false for windows, scored as they are)."""
    return {"start_s": round(start / rate, 6), "end_s": round(stop / rate, 6), "cut": (start, stop) != (0, n),
            "applied": applied}


@dataclass(frozen=True)
class Parts:
    """What :func:`parts` found: ``parts`` (whole clip first), the ``speech_trim`` facts of each trimmed task's
    answer (:func:`facts`), the error of each task whose trim cannot run, and ``vad_s``, the seconds the VAD took (0
    when none ran)."""

    parts: list[Part]
    facts: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    vad_s: float = 0.0


async def parts(service: Any, clip: Any, leases: list[Lease], mode: str = "package") -> Parts:
    """Split ``leases`` by the part of ``clip`` each task is scored on (:class:`Parts`; a task whose trim cannot
    run gets :class:`SpeechTrimUnavailable` without VAD weights, or the VAD's error); ``mode`` is the request's
    ``speech_trim`` (:func:`trim_of`). Tasks whose trims give the same bounds share a part (one encode); the VAD
    runs once per clip, in a worker thread, and its time goes to the ``sp_speech_trim_duration_seconds``
    histogram. Leases of failed tasks are in no part (the caller releases them)."""
    trim = {le.task: trim_of(le, mode) for le in leases}
    trims = {t for t in trim.values() if t is not None}
    if not trims:
        return Parts([Part(clip, list(leases))])
    vad = getattr(service, "speech_vad", None)
    rate, samples = clip.audio.sample_rate, clip.audio.samples
    n = int(samples.shape[0])
    cut: dict[SpeechTrim, tuple[int, int]] = {}
    failure: Exception | None = None
    vad_s = 0.0
    if vad is None:
        failure = SpeechTrimUnavailable(
            f"this task is to be scored with a speech trim (speech_trim={mode}) and this server has no Silero VAD "
            "weights to run it",
            accepted="a server started with SPEECHPROMPT_SPEECH_TRIM_WEIGHTS at a silero-vad v6 weights file "
                     "(models/speech_trim in the repository), or speech_trim=off in the request")
    else:
        def run() -> dict[SpeechTrim, tuple[int, int]]:
            span = getattr(service.runtime, "encoded_span", None)
            g = span(samples) if span is not None else (0.0, n / rate)
            return bounds(samples, trims, vad, (round(g[0] * rate), round(g[1] * rate)))

        began = time.monotonic()
        try:
            cut = await asyncio.to_thread(run)
        except Exception as exc:  # noqa: BLE001 - those tasks' error entries; the others still answer
            log.exception("speech trim failed")
            failure = exc
        vad_s = time.monotonic() - began
        service.metrics.speech_trim_seconds.observe(vad_s)
    errors = {task: failure for task, t in trim.items() if t is not None and failure is not None}
    by_bounds: dict[tuple[int, int], list[Lease]] = {}
    answers: dict[str, dict] = {}
    for le in leases:
        if le.task in errors:
            continue
        t = trim[le.task]
        start, stop = cut[t] if t is not None else (0, n)
        by_bounds.setdefault((start, stop), []).append(le)
        if t is not None:
            answers[le.task] = facts(start, stop, n, rate)
    pieces = sorted(by_bounds, key=lambda b: b != (0, n))  # the whole clip first
    digests = await asyncio.to_thread(lambda: [pcm_digest(samples[a:b]) if (a, b) != (0, n) else clip.digest
                                               for a, b in pieces])
    out = [Part(clip if (a, b) == (0, n) else
                replace(clip, audio=replace(clip.audio, samples=samples[a:b], duration_s=(b - a) / rate),
                        digest=digest), by_bounds[(a, b)], a / rate)
           for (a, b), digest in zip(pieces, digests, strict=True)]
    return Parts(out, answers, errors, vad_s)

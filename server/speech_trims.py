"""A task's speech trim at serve time: the clip's room-tone edges cut (Silero VAD) before that task's units.

A task package may name a speech trim (``speech_trim`` metadata, ``speechprompt/speech_trim.py``): the server then
scores that task on the clip from a margin before its first speech to a margin after its last, instead of the whole
recording. The tasks of one request that name the same trim (or none) share one encode; a request whose tasks name
different trims encodes the clip once per trim (``inference._score_leases``). The Silero VAD weights are a file next
to the bundles (``Settings.speech_trim_weights``, ``models/speech_trim``); a server without them answers a trimmed
task with 503 ``speech_trim_unavailable``. Windowed tasks (``long_audio=window``) are scored on the untrimmed clip.
No FastAPI here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

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
    """The Silero VAD of ``path`` (``SileroVAD``), or None when the file does not exist (logged: tasks that name a
    trim then answer 503). Raises ``ValueError`` / ``OSError`` for a file that is not silero-vad v6 16 kHz weights
    (a misconfigured server fails its start-up rather than serve those tasks untrimmed)."""
    from speechprompt.silero_vad import SileroVAD

    if not Path(path).is_file():
        log.info("no speech-trim weights at %s: tasks whose package names a speech trim will answer 503", path)
        return None
    return SileroVAD.load(Path(path))


def trim_of(lease: Lease) -> SpeechTrim | None:
    """The speech trim ``lease``'s package names, or None."""
    meta = getattr(lease.entry, "meta", None)
    return getattr(meta, "trim", None)


def groups(leases: list[Lease]) -> dict[SpeechTrim | None, list[Lease]]:
    """``leases`` by the trim their packages name (None first when present), in request order within a group."""
    out: dict[SpeechTrim | None, list[Lease]] = {}
    for lease in leases:
        out.setdefault(trim_of(lease), []).append(lease)
    return dict(sorted(out.items(), key=lambda kv: kv[0] is not None))


def bounds(samples, trim: SpeechTrim, vad: Any, gate_span: tuple[int, int]) -> tuple[int, int]:
    """``samples`` ``[N]`` f32 at 16 kHz -> ``(start, stop)`` the task is scored on: the trim's bounds inside the part
    the bundle's edge gate reads (``gate_span``, samples; digital silence first, as the trim was measured in
    docs/results.md), or ``(0, N)`` when the trim keeps that whole part."""
    a, b = gate_span
    x = torch.from_numpy(samples[a:b])
    s, e = trim.bounds(x, vad)
    return (0, int(samples.shape[0])) if (s, e) == (0, b - a) else (a + s, a + e)


async def trimmed(service: Any, clip: Any, trim: SpeechTrim) -> tuple[Any, dict]:
    """``clip`` (``inference.Clip``) -> (the clip a trimmed task is scored on, the ``speech_trim`` facts of its
    answer: ``start_s``, ``end_s`` and ``cut``), in a worker thread. Raises :class:`SpeechTrimUnavailable` when the
    server has no VAD weights."""
    vad = getattr(service, "speech_vad", None)
    if vad is None:
        raise SpeechTrimUnavailable(
            "this task's package names a speech trim and this server has no Silero VAD weights to run it",
            accepted="a server started with SPEECHPROMPT_SPEECH_TRIM_WEIGHTS at a silero-vad v6 weights file "
                     "(models/speech_trim in the repository), or a package of this task without speech_trim")
    rate = clip.audio.sample_rate
    samples = clip.audio.samples

    def run() -> tuple[int, int, str]:
        span = getattr(service.runtime, "encoded_span", None)
        g = span(samples) if span is not None else (0.0, samples.shape[0] / rate)
        start, stop = bounds(samples, trim, vad, (round(g[0] * rate), round(g[1] * rate)))
        cut = (start, stop) != (0, samples.shape[0])
        return start, stop, pcm_digest(samples[start:stop]) if cut else clip.digest

    start, stop, digest = await asyncio.to_thread(run)
    facts = {"start_s": round(start / rate, 6), "end_s": round(stop / rate, 6),
             "cut": (start, stop) != (0, samples.shape[0])}
    if not facts["cut"]:
        return clip, facts
    audio = replace(clip.audio, samples=samples[start:stop], duration_s=(stop - start) / rate)
    return replace(clip, audio=audio, digest=digest), facts

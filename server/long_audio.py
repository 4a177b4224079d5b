"""Long audio in classify: each task's policy (reject | truncate | window) and the windowed result body.

The policy of a task for one request: the request's ``long_audio`` if given, else the package metadata's
``long_audio.policy``, else ``Settings.long_audio_policy``. It matters for clips over ``max_audio_seconds``:
``reject`` -> 413 ``audio_too_long``; ``truncate`` -> the first ``max_audio_seconds`` are scored;
``window`` -> every window is scored (``server/windows.py``) and the task's answer is the aggregate. A request
that names ``window`` (or ``long_audio=window``) gets windows for a clip of any length. No FastAPI here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from speechprompt.audio import AudioTooLong, too_long

from .registry import Lease
from .service import Service
from .speech_trims import facts, trim_of
from .windows import Window, aggregate, choose_window, long_audio_meta, row_probs, score_windows, task_scores

POLICIES = ("reject", "truncate", "window")


@dataclass(frozen=True)
class LongAudioRequest:
    """What the request asked for: ``policy`` (None: each task's default), ``window``/``hop`` in seconds."""

    policy: str | None = None
    window: float | None = None
    hop: float | None = None

    @property
    def wants_windows(self) -> bool:
        return self.policy == "window" or self.window is not None


def policy_of(service: Service, lease: Lease, req: LongAudioRequest) -> str:
    """The task's policy for this request (request's ``long_audio``, or window when it names a ``window`` >
    package metadata > server setting)."""
    if req.policy is None and req.window is not None:
        return "window"
    return req.policy or long_audio_meta(lease).get("policy") or service.settings.long_audio_policy


def decode_limit(service: Service, policies: Sequence[str]) -> float:
    """Longest clip to decode (s): ``max_long_audio_seconds`` when some task may truncate or window."""
    if any(p != "reject" for p in policies):
        return max(service.settings.max_long_audio_seconds, service.max_audio_seconds)
    return service.max_audio_seconds


def refusal(service: Service, req: LongAudioRequest, seconds: float | None = None,
            error: AudioTooLong | None = None) -> AudioTooLong:
    """The 413 for a clip over ``max_audio_seconds`` (``error``, or a new one for a clip of ``seconds``): when the
    request chose no policy and the server takes longer clips with one (as long as this clip, where its length is
    known), ``accepted`` names the query that does."""
    error = error or too_long(service.max_audio_seconds, seconds)
    longest = service.settings.max_long_audio_seconds
    known = error.seconds if error.seconds is not None else seconds
    if req.policy is None and longest > service.max_audio_seconds and (known is None or known <= longest):
        error.accepted = f"{error.accepted}, or up to {longest:g} s with long_audio=truncate|window in the query"
    return error


def split(service: Service, leases: Sequence[Lease], policies: Sequence[str], seconds: float,
          req: LongAudioRequest) -> tuple[list[Lease], list[Lease], dict[str, Exception]]:
    """-> (leases scored on the clip as usual, leases scored by windows, refusals by task). A clip within
    ``max_audio_seconds`` is scored as usual unless the request asks for windows."""
    long = seconds > service.max_audio_seconds
    plain: list[Lease] = []
    windowed: list[Lease] = []
    refused: dict[str, Exception] = {}
    for lease, policy in zip(leases, policies, strict=True):
        if policy == "window" and (long or req.wants_windows):
            windowed.append(lease)
        elif long and policy == "reject":
            refused[lease.task] = refusal(service, req, seconds)
        else:
            plain.append(lease)
    return plain, windowed, refused


def truncated(service: Service, samples: np.ndarray) -> np.ndarray:
    """The first ``max_audio_seconds`` of a clip (the truncate policy)."""
    return samples[:int(service.max_audio_seconds * 16000)]


async def windowed_results(service: Service, samples: np.ndarray, leases: Sequence[Lease], req: LongAudioRequest,
                           top_k: int, fingerprint: str, trim_mode: str = "package") -> dict[str, dict | Exception]:
    """Score ``leases`` window by window -> per task a result item (or its typed error). Tasks sharing a
    window and hop share each window's job (one unit-LM row per task). A task that would be scored with a speech
    trim under ``trim_mode`` (the request's ``speech_trim``) says it was not applied: windows are scored as they are."""
    s = service.settings
    groups: dict[tuple[float, float], list[Lease]] = {}
    for lease in leases:
        wh = choose_window([lease], req.window, req.hop, default_window_s=s.window_seconds,
                           default_hop_s=s.hop_seconds, max_window_s=service.max_audio_seconds)
        groups.setdefault(wh, []).append(lease)
    out: dict[str, dict | Exception] = {}
    for (window_s, hop_s), group in groups.items():
        windows, results = await score_windows(service, samples, group, window_s, hop_s)
        for i, lease in enumerate(group):
            try:
                probs = [row_probs(lease, r.rows[i]) for r in results]
            except Exception as exc:  # noqa: BLE001 - typed: this task's error entry
                out[lease.task] = exc
                continue
            agg = aggregate(lease, windows, probs)
            mean = np.array([agg["mean_scores"][lab] for lab in lease.labels])
            order = np.argsort(-mean, kind="stable")[:top_k]
            out[lease.task] = {
                "task": lease.task, "version": lease.version, "label": agg["label"],
                "scores": [{"label": lease.labels[int(j)], "score": float(mean[j])} for j in order],
                "backbone": fingerprint,
                "long_audio": {"policy": "window", "window": window_s, "hop": hop_s, "windows": len(windows)},
                "windows": [_window_item(w, task_scores(lease, p)) for w, p in zip(windows, probs, strict=True)],
                "spans": agg["spans"]}
            if trim_of(lease, trim_mode) is not None:  # named but not applied: windows are scored as they are
                out[lease.task]["speech_trim"] = facts(0, samples.size, samples.size, 16000, applied=False)
    return out


def _window_item(w: Window, scored: dict) -> dict:
    """One window of a windowed result: seconds, label and every label's probability (the version is the item's)."""
    return {"start": w.seconds[0], "end": w.seconds[1], "label": scored["label"], "scores": scored["scores"]}

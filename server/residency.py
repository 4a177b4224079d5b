"""Pure policy: which task versions to load into / evict from the device prompt bank.

Decide apart from execute (LoRAX / vLLM ``lora/``): this module only looks at numbers and returns
lists; the registry carries them out on the model thread. Eviction is least-recently-used by bytes and
never touches a version with in-flight jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """A resident task version: prompt-bank ``key`` (``task@version``), device ``nbytes``, ``last_used``
    (monotonic seconds) and ``in_flight`` jobs that still need it."""

    key: str
    nbytes: int
    last_used: float
    in_flight: int = 0


@dataclass(frozen=True)
class Plan:
    """``load``: keys to add; ``evict``: keys to remove first; ``fits``: the budget holds afterwards
    (False when in-flight versions alone keep the bank above budget: the load still goes ahead, the
    budget is a soft limit so a busy bank never refuses traffic)."""

    load: tuple[str, ...]
    evict: tuple[str, ...]
    fits: bool


def plan_residency(resident: Sequence[Slot], want_key: str, want_bytes: int, budget_bytes: int,
                   *, allow_evict: bool = True) -> Plan:
    """Plan making ``want_key`` (``want_bytes`` on the device) resident under ``budget_bytes``.

    Already resident -> nothing to do. Otherwise evict idle versions, least recently used first, until
    the new one fits. With ``allow_evict=False`` (eager loading at start-up) a version that does not fit
    in the free space is not loaded at all (``load`` empty, ``fits`` False).
    """
    if any(s.key == want_key for s in resident):
        return Plan((), (), sum(s.nbytes for s in resident) <= budget_bytes)
    used = sum(s.nbytes for s in resident)
    if used + want_bytes <= budget_bytes:
        return Plan((want_key,), (), True)
    if not allow_evict:
        return Plan((), (), False)
    evict: list[str] = []
    for slot in sorted(resident, key=lambda s: (s.last_used, s.key)):
        if used + want_bytes <= budget_bytes:
            break
        if slot.in_flight > 0:
            continue
        evict.append(slot.key)
        used -= slot.nbytes
    return Plan((want_key,), tuple(evict), used + want_bytes <= budget_bytes)

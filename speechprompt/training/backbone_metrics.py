"""Backbone quality measures: ABX on minimal pairs, unit LM perplexity, unit statistics.

- ``minimal_pairs``: English word pairs that differ in exactly one letter at the same position (e.g. "bat"/"cat"),
  drawn deterministically from the Debian ``wamerican`` word list (orthographic minimal pairs).
- ``abx_triplets``: for a pair (w, w') and two different voices (a, x): A = w by a, B = w' by a, X = w by x.
  Error when ``d(A, X) > d(B, X)`` (0.5 on ties); each pair is used both ways (w<->w'). Following the ZeroSpeech
  "across speaker" ABX: A and B share a voice, X has another voice but A's word.
- ``dtw_distance``: frame distances (cosine for features, 0/1 for units) aligned by DTW, averaged along the path
  (ZeroSpeech ``abx`` uses the same path-normalised DTW).
- ``unit_lm_nll``: summed NLL (nats) of a unit LM on ``[</s>, u1..un] -> [u1..un, </s>]`` (fairseq
  ``language_modeling`` convention); perplexity = exp(sum NLL / sum tokens).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from speechprompt.training import voices
from speechprompt.training.corpus import load_words


def minimal_pairs(n: int, seed: int, lengths: tuple[int, ...] = (3, 4, 5)) -> list[tuple[str, str]]:
    """``n`` orthographic minimal pairs from the English word list; no word used twice; deterministic."""
    words = [w for w in load_words("en", ascii_only=True) if len(w) in lengths]
    wordset = set(words)
    rng = np.random.default_rng([seed, 4242])
    order = rng.permutation(len(words))
    used: set[str] = set()
    pairs = []
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in order:
        w = words[int(i)]
        if w in used:
            continue
        cands = sorted({w[:p] + c + w[p + 1:] for p in range(len(w)) for c in letters if c != w[p]} & wordset - used)
        if not cands:
            continue
        w2 = cands[int(rng.integers(len(cands)))]
        pairs.append((w, w2))
        used |= {w, w2}
        if len(pairs) == n:
            break
    return pairs


def frame_costs(a: Tensor, b: Tensor, metric: str = "cosine") -> Tensor:
    """``[Ta, Tb]`` frame distances: cosine for features ``[T, D]``, 0/1 for unit ids ``[T]``."""
    if metric == "cosine":
        return 1.0 - F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).t()
    return (a[:, None] != b[None, :]).float()


def dtw_batch(costs: list[Tensor]) -> list[float]:
    """Path-length-normalised DTW of many cost matrices at once (anti-diagonal wavefront over a padded batch).

    Steps (1,0), (0,1), (1,1); the value is the cheapest path's total cost divided by its number of cells
    (ties between predecessors resolved diagonal, then up, then left). Returns one float per matrix.
    """
    if not costs:
        return []
    p = len(costs)
    tm, tn = max(c.shape[0] for c in costs), max(c.shape[1] for c in costs)
    c = torch.full((p, tm, tn), 1e9, dtype=torch.float64)
    for i, ci in enumerate(costs):
        c[i, : ci.shape[0], : ci.shape[1]] = ci
    inf = float("inf")
    d = torch.full((p, tm + 1, tn + 1), inf, dtype=torch.float64)
    n = torch.zeros((p, tm + 1, tn + 1), dtype=torch.float64)
    d[:, 0, 0] = 0.0
    for k in range(2, tm + tn + 1):
        i = torch.arange(max(1, k - tn), min(tm, k - 1) + 1)
        j = k - i
        cand = torch.stack([d[:, i - 1, j - 1], d[:, i - 1, j], d[:, i, j - 1]], dim=-1)  # [P, L, 3]
        lens = torch.stack([n[:, i - 1, j - 1], n[:, i - 1, j], n[:, i, j - 1]], dim=-1)
        best, arg = cand.min(-1)
        d[:, i, j] = best + c[:, i - 1, j - 1]
        n[:, i, j] = lens.gather(-1, arg.unsqueeze(-1)).squeeze(-1) + 1
    return [float(d[q, cq.shape[0], cq.shape[1]] / n[q, cq.shape[0], cq.shape[1]]) for q, cq in enumerate(costs)]


def dtw_distance(a: Tensor, b: Tensor, metric: str = "cosine") -> float:
    """Path-normalised DTW between ``a`` and ``b`` (see ``frame_costs`` and ``dtw_batch``)."""
    return dtw_batch([frame_costs(a, b, metric)])[0]


@dataclass(frozen=True)
class Triplet:
    a: tuple[str, str]  # (word, voice key)
    b: tuple[str, str]
    x: tuple[str, str]


def abx_triplets(pairs: list[tuple[str, str]], voice_keys: list[str]) -> list[Triplet]:
    """Across-voice triplets: every pair, both directions, every ordered pair of distinct voices."""
    out = []
    for w1, w2 in pairs:
        for wa, wb in ((w1, w2), (w2, w1)):
            for va, vx in itertools.permutations(voice_keys, 2):
                out.append(Triplet((wa, va), (wb, va), (wa, vx)))
    return out


def abx_errors(triplets: list[Triplet], reps: dict[tuple[str, str], Tensor], metric: str = "cosine",
               chunk: int = 2048) -> list[float]:
    """Per-triplet error (1, 0, or 0.5 on a tie) given representations ``{(word, voice): [T, D] or [T]}``."""
    keys = sorted({tuple(sorted(q)) for t in triplets for q in ((t.a, t.x), (t.b, t.x))})
    dist: dict[tuple, float] = {}
    for s in range(0, len(keys), chunk):
        part = keys[s:s + chunk]
        for key, v in zip(part, dtw_batch([frame_costs(reps[p], reps[q], metric) for p, q in part])):
            dist[key] = v
    errs = []
    for t in triplets:
        dax, dbx = dist[tuple(sorted((t.a, t.x)))], dist[tuple(sorted((t.b, t.x)))]
        errs.append(1.0 if dax > dbx else 0.5 if dax == dbx else 0.0)
    return errs


def unit_lm_nll(lm, units: list[Tensor], unit_to_token: Tensor | None = None, batch: int = 32) -> list[tuple[float, int]]:
    """Per sequence (summed NLL in nats, tokens scored) of deduplicated ``units`` ``[M]`` i64 under ``lm``.

    Input ``[</s>=2, t(u1)..t(un)]``, target ``[t(u1)..t(un), </s>]``; ``t(u) = unit_to_token[u]`` (default 4+u).
    """
    out: list[tuple[float, int]] = []
    with torch.no_grad():
        for s in range(0, len(units), batch):
            part = units[s:s + batch]
            toks = [(unit_to_token[u] if unit_to_token is not None else u + 4) for u in part]
            t_max = max(len(t) for t in toks) + 1
            inp = torch.full((len(part), t_max), 1, dtype=torch.long)
            tgt = torch.full((len(part), t_max), -100, dtype=torch.long)
            for i, t in enumerate(toks):
                inp[i, 0] = 2
                inp[i, 1:len(t) + 1] = t
                tgt[i, :len(t)] = t
                tgt[i, len(t)] = 2
            logp = lm.logits(lm(inp)).log_softmax(-1)
            nll = -logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * tgt.ne(-100)
            for i, t in enumerate(toks):
                out.append((float(nll[i].sum()), len(t) + 1))
    return out


def perplexity(nlls: list[tuple[float, int]]) -> float:
    """exp(sum NLL / sum tokens)."""
    return math.exp(sum(n for n, _ in nlls) / max(1, sum(t for _, t in nlls)))


def unit_stats(frame_units: list[Tensor], k: int) -> dict:
    """Usage histogram (fraction per unit, ``[K]``), units used, entropy (bits), mean run length (frames)."""
    allu = torch.cat(frame_units)
    hist = torch.bincount(allu, minlength=k).double()
    p = hist / hist.sum()
    nz = p[p > 0]
    runs = sum(int(torch.unique_consecutive(u).numel()) for u in frame_units)
    return {"usage": [round(float(x), 6) for x in p], "units_used": int((hist > 0).sum()),
            "entropy_bits": float(-(nz * nz.log2()).sum()), "mean_run_length_frames": float(allu.numel() / runs),
            "frames": int(allu.numel())}


# Voices of the ABX evaluation: a "corpus" set (heard in training, used for the layer choice) and a "held-out" set.
ABX_CORPUS_VOICES: tuple[tuple[str, str], ...] = (
    ("espeak-ng", "en-us+m3"), ("espeak-ng", "en-gb-x-rp+f2"), ("mbrola", "mb-us1"), ("mbrola", "mb-en1"),
    ("festival", "rab_diphone"), ("festival", "ked_diphone"),
)
ABX_HELD_OUT_VOICES: tuple[tuple[str, str], ...] = (
    ("espeak-ng", f"en-gb-scotland+{voices.HELD_OUT_ESPEAK_VARIANTS[0]}"),
    ("espeak-ng", f"en-029+{voices.HELD_OUT_ESPEAK_VARIANTS[1]}"),
    ("mbrola", "mb-us3"), ("festival", "kal_diphone"),
    ("flite", "slt"), ("flite", "awb"), ("flite", "rms"), ("piper", "joe"),
)


def voice_key(engine: str, voice: str) -> str:
    return f"{engine}:{voice}"

"""The k-means codebook's fit: dense frames -> ``NUM_UNITS`` centroids (GSLM's units; ``docs/model_card.md``).

Used by both default builders (``build_default.py``, ``build_backbone.py``) and ``scripts/default_ablation.py``.
"""

from __future__ import annotations

import numpy as np
import torch

NUM_UNITS = 100  # GSLM's smallest codebook, the one SpeechPrompt v2 prompts


def fit_kmeans(x: np.ndarray, k: int, seed: int, iters: int = 40) -> np.ndarray:
    """k-means (k-means++ init, Lloyd iterations, empty clusters re-seeded at the worst-fit points):
    ``[N, D] -> [k, D]`` f32. Plain Lloyd instead of fairseq's ``MiniBatchKMeans``: same objective, and a few
    GEMMs per iteration on 2 cores. Deterministic from ``seed`` and the same bits with 1 or 2 threads; but on a
    build's 150,000 frames a relative change of 1e-7 in ``x`` (float rounding: another CPU's ffmpeg or BLAS code
    path) ends in another local optimum (docs/results.md, "Why v7 no longer rebuilds bit for bit")."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    g = torch.Generator().manual_seed(seed)
    sq = xt.square().sum(1)
    cent = xt[torch.randint(len(xt), (1,), generator=g)]
    dmin = (sq - 2 * xt @ cent[0] + cent[0].square().sum()).clamp(min=0)
    for _ in range(1, k):  # k-means++: next centre with probability ~ squared distance
        nxt = xt[torch.multinomial(dmin + 1e-12, 1, generator=g)]
        cent = torch.cat([cent, nxt])
        dmin = torch.minimum(dmin, (sq - 2 * xt @ nxt[0] + nxt[0].square().sum()).clamp(min=0))
    for _ in range(iters):
        d = torch.addmm(cent.square().sum(1)[None, :], xt, cent.t(), alpha=-2.0)  # [N, k] (+ |x|^2 omitted)
        best, assign = d.min(1)
        counts = torch.bincount(assign, minlength=k)
        new = torch.zeros_like(cent).index_add_(0, assign, xt) / counts.clamp(min=1)[:, None].float()
        empty = (counts == 0).nonzero().squeeze(1)
        if len(empty):
            worst = torch.argsort(best + sq, descending=True)[: len(empty)]
            new[empty] = xt[worst]
        if torch.allclose(new, cent, atol=1e-6):
            cent = new
            break
        cent = new
    return cent.numpy().astype(np.float32)


def subsample_rows(feats: list[torch.Tensor], n: int, seed: int) -> np.ndarray:
    """Frames ``[T_i, D]`` of many clips -> ``[min(n, sum T_i), D]`` f32: a random subset drawn from ``seed``, kept
    in corpus order (what the codebook is fitted on)."""
    allf = torch.cat(feats)
    idx = np.random.default_rng([seed, 99]).permutation(len(allf))[:n]
    return allf[torch.from_numpy(np.sort(idx))].numpy()


__all__ = ["NUM_UNITS", "fit_kmeans", "subsample_rows"]

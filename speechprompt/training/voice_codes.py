"""The voice prefix's build steps (``speechprompt/voice.py``): clip vectors from the dense encoder, then the
standardisation and residual k-means that turn them into prefix codes (build-default ``--voice-codes``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from speechprompt.training.kmeans import fit_kmeans


def voice_vectors(enc, clips: list[np.ndarray], layer: int, say: Callable[[str], None]) -> torch.Tensor:
    """``[N, D]`` f32: each clip's mean of block ``layer`` of the Whisper encoder ``enc`` (``block_means``), for
    ``clips`` ([N_i] f32 @16 kHz) in their order; progress every 3,200 clips."""
    out, t0 = [], time.time()
    for s in range(0, len(clips), 32):
        out.append(enc.block_means([torch.from_numpy(np.asarray(c)) for c in clips[s:s + 32]], layer))
        if s % 3200 == 0:
            say(f"voice vectors {s}/{len(clips)} ({time.time() - t0:.0f}s)")
    return torch.cat(out) if out else torch.zeros(0, enc.cfg.dim)


def fit_voice(vectors: torch.Tensor, codes: tuple[int, ...], seed: int) -> dict[str, torch.Tensor]:
    """``VoicePrefix`` buffers from the train clips' vectors ``[N, D]``: ``mean`` and ``scale`` (the standard
    deviation + 1e-6) per dimension, then stage ``s`` = k-means (``kmeans.fit_kmeans``, ``seed``) with ``codes[s]``
    centroids on what the earlier stages' nearest centroids leave. Raises ``ValueError`` with fewer clips than the
    largest stage."""
    x = vectors.double().numpy()
    if len(x) < max(codes):
        raise ValueError(f"{len(x)} clips cannot fit a voice stage of {max(codes)} codes")
    mean, scale = x.mean(0), x.std(0) + 1e-6
    rest = ((x - mean) / scale).astype(np.float32)
    out = {"mean": torch.from_numpy(mean.astype(np.float32)), "scale": torch.from_numpy(scale.astype(np.float32))}
    for s, v in enumerate(codes):
        centroids = fit_kmeans(rest, v, seed)
        nearest = torch.cdist(torch.from_numpy(rest), torch.from_numpy(centroids)).argmin(1).numpy()
        rest = rest - centroids[nearest]
        out[f"stage_{s}"] = torch.from_numpy(centroids)
    return out


__all__ = ["fit_voice", "voice_vectors"]

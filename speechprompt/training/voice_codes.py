"""The voice prefix's build steps (``speechprompt/voice.py``): clip vectors from the dense encoder, then the
standardisation and residual k-means that turn them into prefix codes (build-default ``--voice-codes``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

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


def check_voice(cfg) -> None:
    """Refuse a voice prefix a build (``build_default.DefaultBuildConfig``) cannot make (``ValueError`` saying what is accepted): it reads a Whisper
    block (``dense = whisper-base``, ``1 <= voice_layer <= whisper_layer``), has stages of >= 2 codes, and its vectors
    exist for the corpus clips only (not for ``real_speeds`` copies)."""
    if not cfg.voice_codes:
        return
    if cfg.dense != "whisper-base" or not 1 <= cfg.voice_layer <= cfg.whisper_layer:
        raise ValueError(f"a voice prefix reads block voice_layer (1..whisper_layer) of the Whisper encoder (dense "
                         f"whisper-base); got dense {cfg.dense!r}, voice_layer {cfg.voice_layer}, whisper_layer "
                         f"{cfg.whisper_layer}")
    if min(cfg.voice_codes) < 2:
        raise ValueError(f"voice_codes must be stage sizes >= 2, e.g. (16, 16); got {tuple(cfg.voice_codes)}")
    if cfg.real_speeds:
        raise ValueError("a voice prefix and real_speeds copies cannot be combined (the copies have no voice vectors)")


def voice_stage(stages, path: Path, feats_key: dict, enc, clips: list[np.ndarray], layer: int,
                say: Callable[[str], None]) -> torch.Tensor:
    """The build's voice-vector stage: :func:`voice_vectors` of ``clips`` saved once to ``path`` (claimed in
    ``stages`` under its stem with the features' key and the layer, so another build's file is refused), then read
    back weights-only. Returns ``[N, D]`` f32."""
    stages.claim(path.stem, {"feats": feats_key, "layer": layer}, path.exists())
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        torch.save(voice_vectors(enc, clips, layer, say), tmp)
        tmp.replace(path)
    return torch.load(path, weights_only=True)


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


__all__ = ["check_voice", "fit_voice", "voice_stage", "voice_vectors"]

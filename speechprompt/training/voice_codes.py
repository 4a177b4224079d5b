"""The voice prefix's build steps (``speechprompt/voice.py``): clip vectors (the dense encoder's block means, or GE2E
speaker embeddings), then the standardisation and residual k-means that turn them into prefix codes (build-default
``--voice-codes``, ``--voice-source``)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from speechprompt.ge2e import GE2E_RECIPE, GE2EConfig, GE2EEncoder
from speechprompt.training.default_stages import state_digest
from speechprompt.training.kmeans import fit_kmeans
from speechprompt.voice import SOURCES, VoiceConfig, VoicePrefix

Embed = Callable[[list[torch.Tensor]], torch.Tensor]  # clips [N_i] f32 @16 kHz -> [B, D] f32


def voice_vectors(embed: Embed, dim: int, clips: list[np.ndarray], say: Callable[[str], None]) -> torch.Tensor:
    """``[N, dim]`` f32: ``embed`` of ``clips`` ([N_i] f32 @16 kHz) in their order, 32 at a time (e.g. a Whisper
    encoder's ``block_means`` at one layer, or ``GE2EEncoder.embed``); progress every 3,200 clips."""
    out, t0 = [], time.time()
    for s in range(0, len(clips), 32):
        out.append(embed([torch.from_numpy(np.asarray(c)) for c in clips[s:s + 32]]))
        if s % 3200 == 0:
            say(f"voice vectors {s}/{len(clips)} ({time.time() - t0:.0f}s)")
    return torch.cat(out) if out else torch.zeros(0, dim)


def load_ge2e(cache: str | Path) -> tuple[GE2EEncoder, str]:
    """The GE2E encoder (``importers.ge2e``: fetched once into ``cache/ge2e``) with its weights rounded to float16,
    as a bundle stores and serves them, so build and server compute the same vectors; and the source's licence.
    Raises ``GE2EImportError`` when the wheel cannot be fetched or checked."""
    from speechprompt.importers.ge2e import LICENSE, convert, fetch

    enc = GE2EEncoder()
    enc.load_state_dict({k: v.half().float() for k, v in convert(fetch(Path(cache) / "ge2e")).items()})
    return enc.eval().requires_grad_(False), LICENSE


def check_voice(cfg) -> None:
    """Refuse a voice prefix a build (``build_default.DefaultBuildConfig``) cannot make (``ValueError`` saying what is
    accepted): a known ``voice_source``; ``whisper-block-mean`` reads a Whisper block (``dense = whisper-base``,
    ``1 <= voice_layer <= whisper_layer``; ``ge2e`` reads the waveform, with any dense model); stages of >= 2 codes;
    vectors exist for the corpus clips only (not for ``real_speeds`` copies); ``voice_dropout`` in [0, 1), and > 0
    only with ``voice_codes``."""
    if not cfg.voice_codes:
        if cfg.voice_dropout:
            raise ValueError(f"voice_dropout drops a voice prefix from some training sequences; it needs voice_codes "
                             f"(got voice_dropout {cfg.voice_dropout} without them)")
        return
    if cfg.voice_source not in SOURCES:
        raise ValueError(f"voice_source must be one of {', '.join(SOURCES)}; got {cfg.voice_source!r}")
    if cfg.voice_source == "whisper-block-mean" and (cfg.dense != "whisper-base"
                                                      or not 1 <= cfg.voice_layer <= cfg.whisper_layer):
        raise ValueError(f"a voice prefix reads block voice_layer (1..whisper_layer) of the Whisper encoder (dense "
                         f"whisper-base); got dense {cfg.dense!r}, voice_layer {cfg.voice_layer}, whisper_layer "
                         f"{cfg.whisper_layer}")
    if min(cfg.voice_codes) < 2:
        raise ValueError(f"voice_codes must be stage sizes >= 2, e.g. (16, 16); got {tuple(cfg.voice_codes)}")
    _check_dropout(cfg.voice_dropout)
    if cfg.real_speeds:
        raise ValueError("a voice prefix and real_speeds copies cannot be combined (the copies have no voice vectors)")


def voice_stage(stages, path: Path, key: dict, embed: Embed, dim: int, clips: list[np.ndarray],
                say: Callable[[str], None]) -> torch.Tensor:
    """The build's voice-vector stage: :func:`voice_vectors` of ``clips`` saved once to ``path`` (claimed in
    ``stages`` under its stem with ``key``, what made them, so another build's file is refused), then read back
    weights-only. Returns ``[N, dim]`` f32."""
    stages.claim(path.stem, key, path.exists())
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        torch.save(voice_vectors(embed, dim, clips, say), tmp)
        tmp.replace(path)
    return torch.load(path, weights_only=True)


def fit_voice(vectors: torch.Tensor, codes: tuple[int, ...], seed: int,
              standardise: bool = True) -> dict[str, torch.Tensor]:
    """``VoicePrefix`` buffers from the train clips' vectors ``[N, D]``: ``mean`` and ``scale`` (the standard
    deviation + 1e-6) per dimension (0 and 1 without ``standardise``: GE2E's L2-normed vectors), then stage ``s`` =
    k-means (``kmeans.fit_kmeans``, ``seed``) with ``codes[s]`` centroids on what the earlier stages' nearest
    centroids leave. Raises ``ValueError`` with fewer clips than the largest stage."""
    x = vectors.double().numpy()
    if len(x) < max(codes):
        raise ValueError(f"{len(x)} clips cannot fit a voice stage of {max(codes)} codes")
    mean, scale = (x.mean(0), x.std(0) + 1e-6) if standardise else (np.zeros(x.shape[1]), np.ones(x.shape[1]))
    rest = ((x - mean) / scale).astype(np.float32)
    out = {"mean": torch.from_numpy(mean.astype(np.float32)), "scale": torch.from_numpy(scale.astype(np.float32))}
    for s, v in enumerate(codes):
        centroids = fit_kmeans(rest, v, seed)
        nearest = torch.cdist(torch.from_numpy(rest), torch.from_numpy(centroids)).argmin(1).numpy()
        rest = rest - centroids[nearest]
        out[f"stage_{s}"] = torch.from_numpy(centroids)
    return out


def voice_vectors_stage(cfg, stages, work: Path, feats_key: dict, teacher_stage: str, enc, clips: list[np.ndarray],
                        teacher_cache: str | Path, say: Callable[[str], None]
                        ) -> tuple[torch.Tensor, GE2EEncoder | None, str | None]:
    """A build's voice vectors ``[N, D]`` of ``clips`` (tts + real + twins) by ``cfg.voice_source``, as a stage file
    in ``work``: ``voice-ge2e.pt`` (GE2E, :func:`load_ge2e` from ``teacher_cache``; keyed by the clips, the weights'
    digest and ``ge2e.GE2E_RECIPE``) or ``voice-L{layer}-{teacher_stage}.pt`` (the Whisper encoder ``enc``'s block
    means; keyed by the features' key and the layer). Returns the vectors, the GE2E encoder (None for Whisper) and its
    licence."""
    if cfg.voice_source == "ge2e":
        ge2e, licence = load_ge2e(teacher_cache)
        key = {k: feats_key[k] for k in ("tts", "real", "twins")} | {"ge2e": state_digest(ge2e.state_dict()),
                                                                       "recipe": GE2E_RECIPE}
        return voice_stage(stages, work / "voice-ge2e.pt", key, ge2e.embed, GE2EConfig.dim, clips, say), ge2e, licence
    vectors = voice_stage(stages, work / f"voice-L{cfg.voice_layer}-{teacher_stage}.pt",
                          {"feats": feats_key, "layer": cfg.voice_layer},
                          lambda w: enc.block_means(w, cfg.voice_layer), enc.cfg.dim, clips, say)
    return vectors, None, None


def fit_prefix(cfg, train_vectors: torch.Tensor, ge2e: GE2EEncoder | None) -> VoicePrefix:
    """The bundle's :class:`VoicePrefix` from the train clips' vectors ``[N, D]`` (:func:`fit_voice`, standardised
    unless GE2E), carrying GE2E's weights when ``ge2e`` is given."""
    voice = VoicePrefix(VoiceConfig(source=cfg.voice_source, layer=0 if ge2e else cfg.voice_layer,
                                    dim=int(train_vectors.shape[1]), codes=tuple(cfg.voice_codes)))
    voice.load_state_dict(fit_voice(train_vectors, cfg.voice_codes, cfg.seed, standardise=ge2e is None)
                          | ({f"ge2e.{k}": v for k, v in ge2e.state_dict().items()} if ge2e else {}))
    return voice


def _check_dropout(dropout: float) -> None:
    """``ValueError`` unless 0 <= ``dropout`` < 1 (NaN included): the share of sequences without the voice prefix."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"voice_dropout must be in [0, 1); got {dropout}")


def keeps_prefix(index: int, seed: int, dropout: float) -> bool:
    """Whether unit-LM training sequence ``index`` (a clip's position in the build's tts + real + twins order) keeps
    its voice prefix, under ``dropout`` (0 <= dropout < 1, the share of sequences trained without it): a fixed hash of
    (seed, index), so a rebuild drops the same clips. Validation sequences always keep the prefix. Raises
    ``ValueError`` outside [0, 1)."""
    _check_dropout(dropout)
    if dropout == 0.0:
        return True
    h = int.from_bytes(hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest(), "big")
    return h / 2.0 ** 64 >= dropout


def drop_prefixes(numbered: list[tuple[int, torch.Tensor]], prefix_len: int, seed: int, dropout: float,
                  say: Callable[[str], None]) -> list[torch.Tensor]:
    """The unit LM's training sequences under ``voice_dropout``: ``numbered`` holds ``(clip index, sequence [M] i64)``
    with the prefix's ``prefix_len`` tokens first; a sequence :func:`keeps_prefix` drops loses exactly those tokens.
    Says how many were dropped when ``dropout > 0``. Raises ``ValueError`` as :func:`keeps_prefix`."""
    units = [u if keeps_prefix(i, seed, dropout) else u[prefix_len:] for i, u in numbered]
    if dropout:
        n = sum(len(u) < len(v) for u, (_, v) in zip(units, numbered, strict=True))
        say(f"voice_dropout {dropout:g}: {n} of {len(units)} training sequences without the voice prefix")
    return units


def voice_extra(cfg, ge2e_license: str | None) -> dict:
    """The bundle's ``extra`` entries that describe its voice prefix (and GE2E's licence)."""
    what = ("the clip's GE2E speaker embedding (Resemblyzer 0.1.4)" if ge2e_license else
            f"the clip's mean of Whisper block {cfg.voice_layer}, standardised")
    return {"voice": f"voice prefix: {what}, residual k-means {' + '.join(map(str, cfg.voice_codes))}, one token "
                     "per stage before the units" + (f"; the unit LM trained without it on {100 * cfg.voice_dropout:g}% of "
                                                     "its training sequences" if cfg.voice_dropout else ""), **({"voice_license": ge2e_license} if ge2e_license else {})}


__all__ = ["check_voice", "drop_prefixes", "fit_prefix", "fit_voice", "keeps_prefix", "load_ge2e", "voice_extra", "voice_stage", "voice_vectors",
           "voice_vectors_stage"]

"""Which dense model a bundle uses: HuBERT (GSLM's, the default for ``backbone.json`` without ``encoder.type``),
Google's speech_embedding (``"type": "speech_embedding"``) or Whisper's audio encoder cut after a layer
(``"type": "whisper"``). All expose the same contract (``extract(list of [N_i] f32) -> list of [T_i, D]``,
``sample_rate``, ``hop_size``, ``dim``, ``num_frames``, ``min_samples``), so the codebook, dedup, unit LM and prompts
do not care which one runs (textlesslib: the dense model varies).
"""

from __future__ import annotations

from .encoder import HubertConfig, HubertEncoder
from .speech_embedding import TYPE as SPEECH_EMBEDDING
from .speech_embedding import SpeechEmbeddingConfig, SpeechEmbeddingEncoder
from .whisper import TYPE as WHISPER
from .whisper import WhisperConfig, WhisperEncoder

DenseConfig = HubertConfig | SpeechEmbeddingConfig | WhisperConfig
DenseEncoder = HubertEncoder | SpeechEmbeddingEncoder | WhisperEncoder


def dense_config_from_dict(d: dict) -> DenseConfig:
    """``backbone.json`` ``encoder`` object -> its config. Raises ``ValueError`` for an unknown ``type``."""
    kind = d.get("type", "hubert")
    if kind == SPEECH_EMBEDDING:
        return SpeechEmbeddingConfig.from_dict(d)
    if kind == WHISPER:
        return WhisperConfig.from_dict(d)
    if kind != "hubert":
        raise ValueError(f"unknown encoder type {kind!r}; expected 'hubert', {SPEECH_EMBEDDING!r} or {WHISPER!r}")
    return HubertConfig.from_dict({k: v for k, v in d.items() if k != "type"})


def build_dense(cfg: DenseConfig) -> DenseEncoder:
    """An encoder module (untrained weights) for ``cfg``."""
    if isinstance(cfg, WhisperConfig):
        return WhisperEncoder(cfg)
    return SpeechEmbeddingEncoder(cfg) if isinstance(cfg, SpeechEmbeddingConfig) else HubertEncoder(cfg)


__all__ = ["DenseConfig", "DenseEncoder", "build_dense", "dense_config_from_dict"]

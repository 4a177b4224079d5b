"""Where a clip's voice becomes units: a short *voice prefix* of tokens placed before the clip's units.

A unit LM on Whisper's upper-layer units hears the words and the language but little of who speaks (Whisper learns
to ignore the speaker; docs/results.md, "Why gender swings on the Whisper units"). The voice prefix carries that
beside the units: one vector per clip, the mean over the clip's frames of the dense encoder's block ``layer`` output
(``source="whisper-block-mean"``: an early Whisper block, which still holds the speaker), standardised and quantised
by a residual k-means; or (``source="ge2e"``) the clip's GE2E speaker embedding (``ge2e.py``: Resemblyzer's LSTM,
trained on real voices to tell speakers apart; its weights travel in ``voice.safetensors``), quantised the same way
without standardising (the vectors are already L2-normed). The residual k-means: ``codes = (16, 16)``: the first stage's nearest centroid, then the nearest centroid of the
remainder, ...). Stage ``s``'s code ``c`` is unit ``K + offset_s + c`` (``K`` the frame codebook's size), so the prefix
tokens are ordinary entries of the unit LM's dictionary and prompts, packages and the batcher see a longer unit
sequence, nothing else (``[</s>, v_1 .. v_S, u_1 .. u_M, <s>]``).

This extends GSLM (textlesslib's dense model -> quantizer -> dedup has no such prefix), as the global style tokens of
TTS carry a speaker beside the text; a bundle without a ``voice`` entry is exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .ge2e import GE2EConfig, GE2EEncoder

VOICE_FILE = "voice.safetensors"
SOURCES = ("whisper-block-mean", "ge2e")
GE2E_PREFIX = "ge2e."  # the GE2E encoder's weights in voice.safetensors (stored float16)


class VoiceError(ValueError):
    """A voice setting or weight that does not fit (unknown source, empty stages, wrong shapes, an encoder that
    cannot give the source's vectors)."""


@dataclass(frozen=True)
class VoiceConfig:
    """``source``: what the clip vector is (:data:`SOURCES`); ``layer``: the encoder block it is read after
    (1 = the first block's output; 0 for ``ge2e``, which reads the waveform); ``dim``: its size ``D`` (256 for
    ``ge2e``); ``codes``: the residual k-means stage sizes, one prefix token per stage."""

    source: str = "whisper-block-mean"
    layer: int = 1
    dim: int = 512
    codes: tuple[int, ...] = (16, 16)

    def __post_init__(self):
        if self.source not in SOURCES:
            raise VoiceError(f"voice source {self.source!r}; accepted: {', '.join(SOURCES)}")
        if self.dim < 1 or not self.codes or min(self.codes) < 1:
            raise VoiceError(f"voice settings need dim >= 1 and stage sizes >= 1; got dim {self.dim}, codes "
                             f"{list(self.codes)}")
        if self.source == "ge2e" and (self.layer != 0 or self.dim != GE2EConfig.dim):
            raise VoiceError(f"a ge2e voice has layer 0 and dim {GE2EConfig.dim}; got layer {self.layer}, dim {self.dim}")
        if self.source == "whisper-block-mean" and self.layer < 1:
            raise VoiceError(f"a whisper-block-mean voice reads a block >= 1; got layer {self.layer}")

    @property
    def reads_encoder(self) -> bool:
        """Whether the vectors come from the dense encoder's own pass (``whisper-block-mean``), not the waveform."""
        return self.source == "whisper-block-mean"

    @property
    def num_tokens(self) -> int:
        """Prefix token ids the dictionary holds: the sum of the stage sizes."""
        return sum(self.codes)

    @property
    def length(self) -> int:
        """Tokens each clip's prefix puts before its units: one per stage."""
        return len(self.codes)

    def to_dict(self) -> dict:
        return {"source": self.source, "layer": self.layer, "dim": self.dim, "codes": list(self.codes)}

    @classmethod
    def from_dict(cls, d: dict) -> VoiceConfig:
        """Raises :class:`VoiceError` for unknown or missing keys and bad values."""
        unknown = set(d) - {"source", "layer", "dim", "codes"}
        if unknown:
            raise VoiceError(f"unknown voice settings {sorted(unknown)}; accepted: source, layer, dim, codes")
        try:
            return cls(source=d["source"], layer=int(d["layer"]), dim=int(d["dim"]),
                       codes=tuple(int(c) for c in d["codes"]))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, VoiceError):
                raise
            raise VoiceError(f"voice settings {d!r}: {e}") from None


class VoicePrefix(nn.Module):
    """Clip vectors ``[B, D]`` -> prefix codes ``[B, S]`` (S = len(cfg.codes)), in ``[0, cfg.num_tokens)``.

    Buffers (``voice.safetensors``): ``mean`` / ``scale`` ``[D]`` (standardisation, fitted on the build's train
    clips; 0 / 1 for ``ge2e``) and ``stage_s`` ``[V_s, D]`` (the residual k-means centroids in standardised space);
    for ``ge2e`` also the encoder's parameters under ``ge2e.`` (:class:`~speechprompt.ge2e.GE2EEncoder`).
    """

    def __init__(self, cfg: VoiceConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.dim))
        self.register_buffer("scale", torch.ones(cfg.dim))
        for s, v in enumerate(cfg.codes):
            self.register_buffer(f"stage_{s}", torch.zeros(v, cfg.dim))
        if cfg.source == "ge2e":
            self.ge2e = GE2EEncoder().requires_grad_(False)

    def file_state(self) -> dict[str, Tensor]:
        """The tensors ``voice.safetensors`` holds: the buffers, and the GE2E weights as float16 (how they are
        shipped in a bundle; they load into float32 parameters, so a saved bundle saves back to the same bytes)."""
        return {k: v.half() if k.startswith(GE2E_PREFIX) else v for k, v in self.state_dict().items()}

    def stages(self) -> list[Tensor]:
        return [getattr(self, f"stage_{s}") for s in range(len(self.cfg.codes))]

    def codes(self, vectors: Tensor) -> Tensor:
        """``[B, D]`` f32 -> ``[B, S]`` i64: stage ``s``'s nearest centroid to what the earlier stages left, offset by
        the earlier stages' sizes. Raises :class:`VoiceError` for another ``D``."""
        if vectors.ndim != 2 or vectors.shape[1] != self.cfg.dim:
            raise VoiceError(f"voice vectors must be [B, {self.cfg.dim}]; got {tuple(vectors.shape)}")
        rest = (vectors.float().to(self.mean.device) - self.mean) / self.scale
        out, offset = [], 0
        for centroids in self.stages():
            c = torch.cdist(rest, centroids).argmin(1)
            rest = rest - centroids[c]
            out.append(c + offset)
            offset += centroids.shape[0]
        return torch.stack(out, 1).cpu()

    def vectors(self, encoder, wavs: list[Tensor]) -> Tensor:
        """The source's clip vectors ``[B, D]`` of waveforms ``[N_i]`` f32 at 16 kHz: for ``whisper-block-mean``
        ``encoder.block_means(wavs, layer)`` (a :class:`~speechprompt.whisper.WhisperEncoder`), for ``ge2e`` the
        GE2E embeddings (``encoder`` unused). Raises :class:`VoiceError` for an encoder without block means or of
        another width."""
        if self.cfg.source == "ge2e":
            return self.ge2e.embed(wavs)
        if not hasattr(encoder, "block_means"):
            raise VoiceError(f"voice source {self.cfg.source!r} needs a Whisper dense encoder; this bundle's is "
                             f"{type(encoder).__name__}")
        v = encoder.block_means(wavs, self.cfg.layer)
        if v.shape[1] != self.cfg.dim:
            raise VoiceError(f"the encoder's block vectors have {v.shape[1]} dimensions; the voice settings say "
                             f"{self.cfg.dim}")
        return v

    def prefix(self, encoder, wavs: list[Tensor]) -> Tensor:
        """Waveforms -> prefix codes ``[B, S]`` i64 (:meth:`vectors`, then :meth:`codes`)."""
        return self.codes(self.vectors(encoder, wavs))


__all__ = ["GE2E_PREFIX", "SOURCES", "VOICE_FILE", "VoiceConfig", "VoiceError", "VoicePrefix"]

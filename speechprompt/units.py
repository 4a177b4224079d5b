"""Speech -> units, composed from parts: HuBERT layer-L features -> k-means units -> (optional) dedup.

``list of [N_i] f32 @16 kHz -> list of Units(units [M_i] i64, durations [M_i] i64, frames T_i)``.

Follows textlesslib ``textless/data/speech_encoder.py`` (``SpeechEncoder``: dense model -> quantizer ->
``unique_consecutive``) and the GSLM speech2unit pipeline (HuBERT base layer 6, km100, dedup before the ULM).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .codebook import Codebook, dedup
from .edge_gate import encoded_bounds
from .encoder import HubertEncoder
from .voice import VoicePrefix


@dataclass(frozen=True, eq=False)  # tensors: compare fields explicitly (torch.equal), not with ==
class Units:
    """Units of one clip (CPU tensors). ``durations[i]``: frames (``hop_size`` samples each) of ``units[i]``;
    ``sum(durations) == frames``; without dedup every duration is 1 and ``len(units) == frames`` (plus the voice
    prefix's tokens, duration 0, when the bundle has one)."""

    units: Tensor  # [M] i64, codebook indices in [0, vocab_size) (with a voice prefix: its S tokens first)
    durations: Tensor  # [M] i64, >= 1 (0 for the voice prefix's tokens, which span no frame)
    frames: int  # T, encoder frames of the clip


class UnitExtractor:
    """``encoder`` (HuBERT) + ``codebook`` (k-means) + dedup (+ an optional voice prefix, ``voice.py``); exposes
    ``sample_rate``, ``hop_size``, ``vocab_size``."""

    def __init__(self, encoder: HubertEncoder, codebook: Codebook, deduplicate: bool = True,
                 voice: VoicePrefix | None = None):
        if encoder.dim != codebook.dim:
            raise ValueError(f"encoder dim {encoder.dim} != codebook dim {codebook.dim}")
        self.encoder, self.codebook, self.deduplicate, self.voice = encoder, codebook, deduplicate, voice

    @classmethod
    def from_parts(cls, encoder: HubertEncoder, codebook: Codebook, deduplicate: bool = True,
                   voice: VoicePrefix | None = None) -> UnitExtractor:
        """Compose an extractor from a loaded encoder and codebook (same device), and the bundle's voice prefix."""
        return cls(encoder, codebook, deduplicate, voice)

    sample_rate = property(lambda self: self.encoder.sample_rate, doc="input sample rate (Hz)")
    hop_size = property(lambda self: self.encoder.hop_size, doc="samples per frame (320 = 20 ms)")
    vocab_size = property(lambda self: self.codebook.vocab_size + (self.voice.cfg.num_tokens if self.voice else 0),
                          doc="number of unit ids K (+ the voice prefix's tokens, ids K ..)")

    def encoded_part(self, wav: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """The part of ``wav`` ``[N]`` the encoder reads, which its units cover: all of it, unless the encoder's
        settings name an edge gate that drops silent edges (``edge_gate.py``). A pGSLM's F0 track must be taken on
        this part to align with the units (``prosody.ProsodyExtractor``)."""
        start, stop = encoded_bounds(getattr(self.encoder, "cfg", None), wav)
        return wav if (start, stop) == (0, len(wav)) else wav[start:stop]

    @torch.no_grad()
    def extract(self, wavs: list[np.ndarray | Tensor]) -> list[Units]:
        """Waveforms ``[N_i]`` f32 at ``sample_rate`` -> one :class:`Units` per clip.

        The encoder runs batched over clips; all frames are quantised in one GEMM. Raises the encoder's
        ``ClipTooShort`` / ``EncoderInputError`` (ValueError subclasses) for unusable clips.
        """
        tensors = [torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)) if isinstance(w, np.ndarray)
                   else torch.as_tensor(w) for w in wavs]
        if self.voice is not None and self.voice.cfg.reads_encoder and hasattr(self.encoder, "extract_with_means"):  # one encoder pass for both
            feats, vectors = self.encoder.extract_with_means(tensors, self.voice.cfg.layer)
        else:
            feats, vectors = self.encoder.extract(tensors), None  # list of [T_i, D]
        if not feats:
            return []
        lengths = [f.shape[0] for f in feats]
        units = self.codebook.quantize(torch.cat(feats)).cpu().split(lengths)  # [sum T] -> per clip [T_i]
        prefix = None
        if self.voice is not None:
            codes = self.voice.codes(vectors) if vectors is not None else self.voice.prefix(self.encoder, tensors)
            prefix = codes + self.codebook.vocab_size
        out = []
        for i, (u, t) in enumerate(zip(units, lengths, strict=True)):
            u, d = dedup(u) if self.deduplicate else (u.clone(), torch.ones_like(u))
            if prefix is not None:
                u, d = with_prefix(u, d, prefix[i])
            out.append(Units(units=u, durations=d, frames=t))
        return out


def prefix_length(units: Units) -> int:
    """How many of the clip's units are a voice prefix: its leading units of duration 0 (0 without one)."""
    d = units.durations
    nonzero = torch.nonzero(d > 0)
    return int(nonzero[0, 0]) if len(nonzero) else int(d.numel())


def with_prefix(units: Tensor, durations: Tensor, prefix: Tensor) -> tuple[Tensor, Tensor]:
    """Put the voice prefix's unit ids ``[S]`` before a clip's units ``[M]`` (durations 0: they span no frame)
    -> ``(units [S + M], durations [S + M])``."""
    prefix = prefix.to(units)
    return torch.cat([prefix, units]), torch.cat([torch.zeros_like(prefix), durations])


__all__ = ["UnitExtractor", "Units", "prefix_length", "with_prefix"]

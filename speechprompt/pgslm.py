"""The pGSLM multi-stream unit LM: a fairseq ``transformer_ulm``-compatible decoder over units + duration + F0.

Follows fairseq ``fairseq/models/transformer_ulm.py`` (``MultiStreamTransformerDecoder``) and
``fairseq/tasks/speech_ulm_task.py`` (``UnitDictionary``, channel sizes):

- dictionary with units first: unit i at index i, then ``<s>``=n, ``<pad>``=n+1, ``</s>``=n+2, ``<unk>``=n+3 (so
  sinusoidal positions start at n+2); duration dictionary ``max_token_duration+1`` values + 4 specials (embedding
  padding index 0); F0 dictionary ``bins`` values + 4 specials (padding index ``bins+1``);
- input ``x = sqrt(d) * E_tok[u] + E_dur[d] + E_f0[f]`` (discrete streams; the prosody embeddings are not scaled) or
  ``+ Linear(1 -> d)(value)`` for a continuous stream, then positions, the pre-LN stack (``transformer_ulm``'s
  ``build_model`` always applies ``base_lm_architecture``, which forces ``decoder_normalize_before=True`` whatever
  the stored config says) and the final norm;
- one output projection ``Linear(d -> V_tok + V_dur + V_f0, bias=False)`` split into the three streams' logits
  (a continuous stream has one output).

Parameter names are fairseq's decoder keys without ``decoder.``; the transformer part is the GSLM :class:`UnitLM`.
Deep prompts and the separator work as in ``UnitLM`` (per-row prefix K/V); the separator replaces the token
embedding of ``</s>`` (the last position of a pGSLM row), see ``pgslm_prompting.py`` and docs/pgslm.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .prosody import Prosody, ProsodyError
from .unit_lm import PrefixKV, UnitLM, UnitLMConfig

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


@dataclass(frozen=True)
class StreamConfig:
    """The prosody streams of a ``transformer_ulm`` (defaults: ``discrete_prosody_shift_1_1``).

    ``duration_size``/``f0_size``: output channel sizes (dictionary sizes for discrete streams, 1 for continuous).
    Shifts: stream values enter ``shift`` steps late (``--stream-shifts``); ``ignore_*_input`` zero that input.
    """

    n_units: int = 100
    discrete_duration: bool = True
    duration_size: int = 25
    discrete_f0: bool = True
    f0_size: int = 36
    duration_shift: int = 1
    f0_shift: int = 1
    ignore_duration_input: bool = False
    ignore_f0_input: bool = False

    bos = property(lambda self: self.n_units, doc="<s> token id (starts every row)")
    pad = property(lambda self: self.n_units + 1, doc="<pad> token id")
    eos = property(lambda self: self.n_units + 2, doc="</s> token id (the separator slot of a prompted row)")
    f0_bins = property(lambda self: self.f0_size - len(SPECIALS) if self.discrete_f0 else 0)

    @property
    def channel_sizes(self) -> tuple[int, int, int]:
        return self.n_units + len(SPECIALS), self.duration_size, self.f0_size


@dataclass(frozen=True)
class PGSLMConfig:
    """Transformer part (``UnitLMConfig``, vocab ``n+4``, padding index ``n+1``) + stream layout.

    Serialised flat: the ``UnitLMConfig`` fields plus ``"streams": {...}`` (so a GSLM reader of ``unit_lm`` still
    finds ``layers``, ``embed_dim``, ``vocab_size``).
    """

    lm: UnitLMConfig
    streams: StreamConfig

    def __post_init__(self):
        s = self.streams
        if self.lm.vocab_size != s.n_units + len(SPECIALS) or self.lm.padding_idx != s.pad:
            raise ValueError(f"pGSLM dictionary needs vocab_size={s.n_units + 4} and padding_idx={s.pad}; got "
                             f"{self.lm.vocab_size}, {self.lm.padding_idx}")
        if (not s.discrete_duration and s.duration_size != 1) or (not s.discrete_f0 and s.f0_size != 1):
            raise ValueError("a continuous stream has exactly one output")
        if min(s.duration_shift, s.f0_shift) < 0:
            raise ValueError("stream shifts must be >= 0")

    def to_dict(self) -> dict:
        return {**self.lm.to_dict(), "streams": asdict(self.streams)}

    @classmethod
    def from_dict(cls, d: dict) -> PGSLMConfig:
        if "streams" not in d:
            raise ValueError("a pGSLM unit_lm config needs a 'streams' section")
        return cls(UnitLMConfig.from_dict(d), StreamConfig(**d["streams"]))

    @classmethod
    def make(cls, streams: StreamConfig, **lm_fields) -> PGSLMConfig:
        """Config with the dictionary-derived LM fields (vocab, padding index) filled in from ``streams``."""
        lm = replace(UnitLMConfig(**lm_fields), vocab_size=streams.n_units + len(SPECIALS), padding_idx=streams.pad)
        return cls(lm, streams)


def unit_dictionary(n_units: int) -> list[str]:
    """fairseq ``UnitDictionary(n_units)`` symbols: ``"0" .. "n-1"`` then ``<s>, <pad>, </s>, <unk>``."""
    return [str(i) for i in range(n_units)] + list(SPECIALS)


def unit_token_map(dictionary: tuple[str, ...] | list[str], n_units: int) -> Tensor:
    """``[K]`` i64 LM token id of unit i (identity for a ``UnitDictionary``). Raises ValueError for another layout."""
    if list(dictionary) != unit_dictionary(n_units):
        raise ValueError(f"a pGSLM dictionary is the units 0..{n_units - 1} then {SPECIALS}")
    return torch.arange(n_units, dtype=torch.long)


def check_prosody(streams: StreamConfig, prosody: Prosody) -> None:
    """Raise ``ProsodyError`` unless ``prosody`` produces the inputs these streams expect (kinds, dictionary sizes)."""
    c = prosody.config
    ok = c.discrete_duration == streams.discrete_duration and c.discrete_f0 == streams.discrete_f0
    ok = ok and (not c.discrete_duration or streams.duration_size == c.max_token_duration + 1 + len(SPECIALS))
    ok = ok and (not c.discrete_f0 or streams.f0_bins == c.f0_bins)
    if not ok:
        raise ProsodyError(f"prosody config {c} does not fit the LM streams {streams}")


class MultiStreamUnitLM(UnitLM):
    """fairseq ``transformer_ulm`` over (units, durations, F0); optional deep-prompt prefix and separator.

    ``forward(tokens [B, T] i64, durations [B, T], f0 [B, T], prefix, sep_embed [B, d])`` -> hidden ``[B, T, d]``
    (streams already shifted, as fairseq's ``src_tokens``/``dur_src``/``f0_src``; i64 for discrete streams, f32 for
    continuous ones). ``stream_logits(hidden)`` -> (token ``[B, T, n+4]``, duration ``[B, T, V_d]``, F0 ``[B, T, V_f]``);
    ``logits(hidden)`` -> token logits only (what a verbalizer reads).
    """

    def __init__(self, cfg: PGSLMConfig):
        super().__init__(cfg.lm)
        self.config, self.streams = cfg, cfg.streams
        s, d = cfg.streams, cfg.lm.embed_dim
        self.embed_other_list = nn.ModuleList([
            nn.Embedding(s.duration_size, d, padding_idx=0) if s.discrete_duration else None,
            nn.Embedding(s.f0_size, d, padding_idx=s.f0_bins + 1) if s.discrete_f0 else None])
        self.proj_other_list = nn.ModuleList([None if s.discrete_duration else nn.Linear(1, d),
                                              None if s.discrete_f0 else nn.Linear(1, d)])
        self.project_out_dim = nn.Linear(d, sum(s.channel_sizes), bias=False)

    @property
    def sep_token(self) -> int:
        """Token id whose embedding a package's separator replaces: ``</s>``."""
        return self.streams.eos

    def embed_streams(self, tokens: Tensor, durations: Tensor, f0: Tensor, sep_embed: Tensor | None = None) -> Tensor:
        """``[B, T]`` x 3 -> ``[B, T, d]`` input of layer 0 (``extract_features_scriptable``'s order of sums)."""
        if self.streams.ignore_duration_input:
            durations = torch.zeros_like(durations)
        if self.streams.ignore_f0_input:
            f0 = torch.zeros_like(f0)
        e = self.embed_tokens(tokens)
        if sep_embed is not None:
            e = torch.where(tokens.eq(self.sep_token).unsqueeze(-1), sep_embed.unsqueeze(1).to(e.dtype), e)
        x = self.embed_scale * e
        for values, emb, proj in zip((durations, f0), self.embed_other_list, self.proj_other_list):
            o = values.unsqueeze(-1).to(x.dtype) if emb is None else emb(values)
            x = x + (o if proj is None else proj(o))
        return self.add_positions(x, tokens)

    def forward(self, tokens: Tensor, durations: Tensor, f0: Tensor, prefix: PrefixKV | None = None,
                sep_embed: Tensor | None = None, reference: bool = False) -> Tensor:
        if not (tokens.shape == durations.shape == f0.shape):
            raise ValueError(f"streams must share [B, T]; got {list(tokens.shape)}, {list(durations.shape)}, "
                             f"{list(f0.shape)}")
        return self.run_layers(self.embed_streams(tokens, durations, f0, sep_embed), tokens, prefix, reference)

    def stream_logits(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``[..., d]`` -> (token, duration, F0) outputs, fairseq's split of ``project_out_dim``."""
        return tuple(self.project_out_dim(hidden).split(list(self.streams.channel_sizes), dim=-1))

    def logits(self, hidden: Tensor) -> Tensor:
        """Token-stream logits ``[..., n+4]`` (the first rows of ``project_out_dim``)."""
        return F.linear(hidden, self.project_out_dim.weight[: self.streams.channel_sizes[0]])


__all__ = ["MultiStreamUnitLM", "PGSLMConfig", "StreamConfig", "check_prosody", "unit_dictionary", "unit_token_map"]

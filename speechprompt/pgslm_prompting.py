"""SpeechPrompt v2 on pGSLM: prompted rows of three streams, many tasks in one forward pass.

The official SpeechPrompt code has no pGSLM prompting (gslm_reference.md section 4); the choices here
(docs/pgslm.md) keep the GSLM mechanics and the package format unchanged:

- Row = pGSLM's own training input for one utterance (fairseq ``CodeDataset.__getitem__`` + ``Shifts``):
  tokens ``[<s>, u1 .. uM, </s>]``; unshifted prosody ``dur = [0, d1 .. dM, 0]``,
  ``f0 = [F0 <s>, f1 .. fM, F0 of the value 0]``; each prosody stream enters ``shift`` steps late, the first steps
  carrying its pad value (duration 0; F0 ``<pad>`` bin or -5.0 for continuous F0).
- Separator: the package's ``separator [d]`` replaces the token embedding of the final ``</s>`` (before the sqrt(d)
  scale, like GSLM's ``<s>``); that position keeps its prosody inputs (with shifts 1,1: the last unit's duration and
  F0). GSLM's hard-coded separator id 0 would be unit "0" in a ``UnitDictionary``, and ``<s>`` starts every pGSLM
  row, so ``</s>`` -- the one slot pGSLM has after the units -- is the separator slot.
- Verbalizer: reads the *token-stream* logits ``[n+4]`` at the separator (``[C+4, n+4]``, class i = output 4+i, as
  for GSLM). The duration/F0 heads there predict the prosody of ``</s>`` itself (constant in pretraining), and
  continuous heads have a single output, so they carry no class evidence; the package stays the GSLM format.
- Deep prompts: unchanged (per-layer prefix K/V, ``PromptBank`` slots reused as they are).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .package import NUM_SPECIAL
from .pgslm import MultiStreamUnitLM, StreamConfig, check_prosody
from .prompting import PromptBank
from .prosody import F0Summary, Prosody, ProsodyError, ProsodyUnits
from .unit_lm import PrefixKV

CONTINUOUS_F0_PAD = -5.0  # fairseq CodeDataset Paddings(f0_val=-5.0) for continuous F0
DURATION_PAD = 0  # Paddings(dur_val=0)


@dataclass(frozen=True)
class StreamRows:
    """A batch of prompted rows: ``tokens [B, T]`` i64 (pad ``n+1``), ``durations``/``f0 [B, T]`` (i64 discrete, f32
    continuous; already shifted), ``last [B]`` i64 index of each row's separator (``</s>``)."""

    tokens: Tensor
    durations: Tensor
    f0: Tensor
    last: Tensor


def _shifted(raw: Tensor, shift: int, pad: float | int) -> Tensor:
    """``CodeDataset`` ``Shifts.shift_one`` then ``[:-1]``-style cut to the row length: value t = raw[t - shift]."""
    if shift == 0:
        return raw
    return torch.cat([raw.new_full((min(shift, len(raw)),), pad), raw[:-shift] if shift < len(raw) else raw[:0]])


def make_rows(items: list[ProsodyUnits], prosody: Prosody, streams: StreamConfig,
              stats: list[F0Summary | None] | None = None, device: torch.device | str | None = None) -> StreamRows:
    """Clips' units + prosody -> right-padded rows ``[<s>, u1..uM, </s>]`` with shifted duration/F0 streams.

    ``stats[b]`` normalises row b's F0 (None: ``prosody``'s default, the clip's own utterance mean). Raises
    ``ValueError`` for units outside ``[0, n)`` and ``ProsodyError`` for unusable prosody.
    """
    f0_pad = f0_pad_value(streams)
    lens = [int(p.units.numel()) + 2 for p in items]
    T = max(lens)
    raw = [unshifted_streams(p, prosody, streams, None if stats is None else stats[b]) for b, p in enumerate(items)]
    tokens = torch.full((len(items), T), streams.pad, dtype=torch.long)
    durs = torch.full((len(items), T), DURATION_PAD, dtype=raw[0][1].dtype if raw else torch.long)
    f0s = torch.full((len(items), T), f0_pad, dtype=raw[0][2].dtype if raw else torch.long)
    for b, (tok, dur_raw, f0_raw) in enumerate(raw):
        n = lens[b]
        tokens[b, :n] = tok
        durs[b, :n] = _shifted(dur_raw, streams.duration_shift, DURATION_PAD)
        f0s[b, :n] = _shifted(f0_raw, streams.f0_shift, f0_pad)
    last = torch.tensor(lens, dtype=torch.long) - 1
    return StreamRows(tokens.to(device), durs.to(device), f0s.to(device), last.to(device))


def f0_pad_value(streams: StreamConfig) -> float | int:
    """The F0 stream's pad value: the F0 dictionary's ``<pad>`` (discrete) or -5.0 (continuous), as ``Paddings``."""
    return streams.f0_bins + 1 if streams.discrete_f0 else CONTINUOUS_F0_PAD


def unshifted_streams(p: ProsodyUnits, prosody: Prosody, streams: StreamConfig,
                      stats: F0Summary | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One clip -> fairseq ``CodeDataset.__getitem__``'s streams before ``Shifts``, each ``[M+2]``: tokens
    ``[<s>, u1..uM, </s>]`` i64, durations ``[0, d1..dM, 0]`` and F0 ``[<s>-bin, f1..fM, F0 of the value 0]``
    (i64 discrete / f32 continuous). Raises ``ValueError`` for units outside ``[0, n)``, ``ProsodyError`` for
    streams of different lengths."""
    f0_dtype = torch.long if streams.discrete_f0 else torch.float32
    dur_dtype = torch.long if streams.discrete_duration else torch.float32
    f0_bos = streams.f0_bins if streams.discrete_f0 else 0.0  # F0 dictionary <s> / 0 for continuous
    f0_eos = prosody.encode_f0(torch.zeros(1))[0].item()  # </s> carries F0 0 through preprocessing
    u = p.units.to(torch.long).cpu()
    if u.numel() and (u.min() < 0 or u.max() >= streams.n_units):
        raise ValueError(f"units must lie in [0, {streams.n_units}); got {int(u.min())}..{int(u.max())}")
    if not (len(p.durations) == len(p.f0) == len(u)):
        raise ProsodyError("units, durations and F0 lengths differ")
    tokens = torch.cat([torch.tensor([streams.bos]), u, torch.tensor([streams.eos])])
    zero = torch.zeros(1, dtype=dur_dtype)
    dur_raw = torch.cat([zero, prosody.duration_values(p.durations.cpu()).to(dur_dtype), zero])
    f0_vals = prosody.f0_values(p, stats).to(f0_dtype)
    f0_raw = torch.cat([torch.tensor([f0_bos], dtype=f0_dtype), f0_vals, torch.tensor([f0_eos], dtype=f0_dtype)])
    return tokens, dur_raw, f0_raw


def prompted_class_logits(lm: MultiStreamUnitLM, rows: StreamRows, deep_key: Tensor | None, deep_value: Tensor | None,
                          separator: Tensor, verbalizer: Tensor, reference: bool = False) -> Tensor:
    """Differentiable prompted forward (training and reference use): ``deep_key/deep_value [B, L, l, d]`` (or None),
    ``separator [B, d]``, ``verbalizer [B, C+4, n+4]`` -> verbalizer outputs at the separator ``[B, C+4]``."""
    prefix = None
    if deep_key is not None and deep_key.shape[-2] > 0:
        prefix = PrefixKV(*lm.project_prefix(deep_key, deep_value))
    hidden = lm(rows.tokens, rows.durations, rows.f0, prefix, separator, reference=reference)
    h = hidden[torch.arange(rows.tokens.shape[0], device=rows.tokens.device), rows.last]  # [B, d]
    return torch.einsum("bcv,bv->bc", verbalizer, lm.logits(h))


class PGSLMPromptBank(PromptBank):
    """``PromptBank`` (same device slots, add/remove/gather) over a :class:`MultiStreamUnitLM`; rows carry prosody."""

    def __init__(self, lm: MultiStreamUnitLM, prosody: Prosody, capacity: int = 8):
        check_prosody(lm.streams, prosody)
        super().__init__(lm, capacity)
        self.prosody = prosody

    @torch.no_grad()
    def classify(self, items: list[ProsodyUnits], keys: list[str],
                 stats: list[F0Summary | None] | None = None) -> list[Tensor]:
        """One LM forward for rows of (possibly) different tasks -> per-row class probabilities ``[C_row]``.

        ``items`` come from the units cache (prosody computed once per clip); F0 is normalised per row with its
        own utterance statistics unless ``stats`` gives others. Raises ``KeyError`` for tasks not in the bank.
        """
        if not items:
            return []
        self.lm.check_length(max(int(p.units.numel()) for p in items) + 2)  # SequenceTooLong up front
        with self._lock:  # an ensemble task: one row per member (PromptBank.member_rows)
            slots, counts = self.member_rows(keys)
            prefix, sep, verb, ncls, _ = self.gather(slots)  # pGSLM packages read the separator (package.MetaFields)
        items = [p for p, n in zip(items, counts, strict=True) for _ in range(n)]
        if stats is not None:
            stats = [x for x, n in zip(stats, counts, strict=True) for _ in range(n)]
        rows = make_rows(items, self.prosody, self.lm.streams, stats, self.device)
        hidden = self.lm(rows.tokens, rows.durations, rows.f0, prefix, sep)
        h = hidden[torch.arange(len(items), device=self.device), rows.last]
        out = torch.einsum("bcv,bv->bc", verb, self.lm.logits(h))  # [B, C_max+4]
        probs = [out[b, NUM_SPECIAL:NUM_SPECIAL + int(ncls[b])].float().softmax(-1).cpu() for b in range(len(items))]
        return self.mean_of_members(probs, counts)


__all__ = ["PGSLMPromptBank", "StreamRows", "f0_pad_value", "make_rows", "prompted_class_logits",
           "unshifted_streams"]

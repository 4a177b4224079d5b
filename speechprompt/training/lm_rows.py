"""Prompted rows for either backbone kind, so prompt training and the suite scripts do not branch on it.

One small interface over the two row layouts (docs/prompting.md, docs/pgslm.md):

- GSLM (``prompting.py``, SpeechPrompt's ``preprocessor_base.py``): items are unit tensors ``[M]`` i64 (or ``Units``);
  row ``[</s>, u1+4 .. uM+4, <s>]``; the separator replaces ``<s>`` (id 0); unit i is token 4+i; the dictionary's
  specials ``<s>, <pad>, </s>, <unk>`` are tokens 0..3.
- pGSLM (``pgslm_prompting.py``, fairseq ``CodeDataset`` + ``Shifts``): items are ``ProsodyUnits`` (units + durations
  + segment F0 from ``ProsodyExtractor``, YAAPT once per clip); row = three streams ``[<s>, u1 .. uM, </s>]`` built
  with the backbone's ``Prosody``; the separator replaces ``</s>`` (id n+2); unit i is token i; specials n..n+3.

Both read the verbalizer on the token-stream logits at the separator, so a package has the same tensors either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from speechprompt import pgslm_prompting, prompting
from speechprompt.package import NUM_SPECIAL
from speechprompt.pgslm import MultiStreamUnitLM, check_prosody
from speechprompt.prosody import Prosody, ProsodyUnits
from speechprompt.unit_lm import PAD_IDX, UnitLM
from speechprompt.units import Units


class TrainingError(ValueError):
    """Training data or options that cannot produce a package."""


@dataclass(frozen=True)
class Rows:
    """GSLM rows: ``tokens [B, T]`` i64 (pad 1) and ``last [B]`` i64, the separator index of each row."""

    tokens: Tensor
    last: Tensor


class GSLMRows:
    """Row layout of a GSLM :class:`UnitLM` (``prompting.make_rows``)."""

    kind = "gslm"
    sep_token = prompting.BOS  # <s>: the slot the separator replaces
    pad = PAD_IDX

    def __init__(self, lm: UnitLM):
        self.lm = lm

    @property
    def num_units(self) -> int:
        return self.lm.cfg.vocab_size - NUM_SPECIAL

    def unit_tokens(self) -> Tensor:
        """``[K]`` i64 token id of each unit (natural dictionary order: 4+i)."""
        return torch.arange(self.num_units) + NUM_SPECIAL

    def special_tokens(self) -> list[int]:
        """Token ids of ``<s>, <pad>, </s>, <unk>`` (verbalizer rows 0..3 of a one-hot v1 verbalizer)."""
        return list(range(NUM_SPECIAL))

    def unit_embeddings(self) -> Tensor:
        """``[K, d]`` the LM's input embeddings of the units (before the sqrt(d) scale)."""
        return self.lm.embed_tokens.weight[NUM_SPECIAL:]

    @staticmethod
    def units(item: Tensor | Units) -> Tensor:
        """The unit ids ``[M]`` of one item."""
        return item.units if isinstance(item, Units) else item

    def build(self, items: Sequence, device: torch.device | str | None = None) -> Rows:
        return Rows(*prompting.make_rows([self.units(x) for x in items], device))

    def class_logits(self, rows: Rows, deep_key: Tensor | None, deep_value: Tensor | None, separator: Tensor,
                     verbalizer: Tensor, readout: str = "separator") -> Tensor:
        """Differentiable prompted forward -> verbalizer outputs ``[B, C+4]`` read at the separator or, with
        ``readout="mean"``, from each row's mean hidden state (``prompting.read_out``)."""
        return prompting.prompted_class_logits(self.lm, rows.tokens, rows.last, deep_key, deep_value, separator,
                                               verbalizer, readout=readout)

    def hidden(self, rows: Rows, separator: Tensor) -> Tensor:
        """Hidden states ``[B, T, d]`` with no prompts; ``separator [B, d]`` in the separator slot."""
        return self.lm(rows.tokens, None, separator)


class PGSLMRows(GSLMRows):
    """Row layout of a pGSLM :class:`MultiStreamUnitLM` (``pgslm_prompting.make_rows``); needs the backbone's
    ``Prosody`` to build rows (not to describe the layout). Rows normalise F0 per clip (the backbone's default,
    the utterance mean); a backbone configured for speaker normalisation raises ``ProsodyError``."""

    kind = "pgslm"

    def __init__(self, lm: MultiStreamUnitLM, prosody: Prosody | None):
        super().__init__(lm)
        if prosody is not None:
            check_prosody(lm.streams, prosody)
        self.prosody = prosody
        self.sep_token, self.pad = lm.streams.eos, lm.streams.pad

    @property
    def num_units(self) -> int:
        return self.lm.streams.n_units

    def unit_tokens(self) -> Tensor:
        return torch.arange(self.num_units)

    def special_tokens(self) -> list[int]:
        return [self.lm.streams.bos, self.lm.streams.pad, self.lm.streams.eos, self.num_units + 3]

    def unit_embeddings(self) -> Tensor:
        return self.lm.embed_tokens.weight[: self.num_units]

    def build(self, items: Sequence, device: torch.device | str | None = None) -> pgslm_prompting.StreamRows:
        if self.prosody is None:
            raise TrainingError("a pGSLM backbone needs its Prosody (backbone.prosody) to build rows")
        bad = next((type(x).__name__ for x in items if not isinstance(x, ProsodyUnits)), None)
        if bad is not None:
            raise TrainingError(f"a pGSLM backbone trains on ProsodyUnits (units + durations + F0), got {bad}")
        return pgslm_prompting.make_rows(list(items), self.prosody, self.lm.streams, None, device)

    def class_logits(self, rows, deep_key, deep_value, separator, verbalizer, readout: str = "separator") -> Tensor:
        if readout != "separator":
            raise TrainingError(f"readout {readout!r} is for GSLM backbones; a pGSLM package reads the separator")
        return pgslm_prompting.prompted_class_logits(self.lm, rows, deep_key, deep_value, separator, verbalizer)

    def hidden(self, rows, separator: Tensor) -> Tensor:
        return self.lm(rows.tokens, rows.durations, rows.f0, None, separator)


def row_builder(lm: UnitLM, prosody: Prosody | None = None) -> GSLMRows:
    """The row layout of ``lm``: :class:`PGSLMRows` for a ``MultiStreamUnitLM`` (``prosody`` needed to build rows),
    else :class:`GSLMRows` (``prosody`` ignored)."""
    return PGSLMRows(lm, prosody) if isinstance(lm, MultiStreamUnitLM) else GSLMRows(lm)


__all__ = ["GSLMRows", "PGSLMRows", "Rows", "TrainingError", "row_builder"]

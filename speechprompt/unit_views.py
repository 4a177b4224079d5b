"""A task's unit view: what its prompts read of a clip's units on a product-codebook backbone.

A product codebook (``codebook.Codebook.product``, the default bundle since v5) names every unit ``r * C + c``: cluster
``c`` of the dense features and pitch register ``r`` (0 unvoiced, 1.. voiced, low to high; ``pitch.register_centroids``).
The pitch register helps tasks about the voice (gender, emotion) and splits the clusters of a word into more units,
which costs word tasks (commands, keywords; measured in docs/results.md, "The clusters view"). A task package may
therefore name the **clusters view**: before its unit-LM row is built, every unit of the clip is folded into register 0
(``r * C + c`` -> ``c``, the unvoiced unit of the same cluster, which the unit LM knows) and runs of one unit are
deduplicated again. Ids at or above ``R * C`` (a voice prefix's tokens, ``voice.py``) pass unchanged. The encoder, the
units cache and every other task of a request see the clip's units as they were: the fold is per row, in the prompt
bank (``prompting.PromptBank``), so tasks with and without it share one forward pass.

This is this project's extension of SpeechPrompt v2 (the paper feeds every task the same units), so it is never the
default: the trainer uses it when asked (``train_prompts(unit_view=...)``, ``speechprompt train --unit-view clusters``)
or lets the dev split choose (``training.choose.train_best_unit_view``, ``--unit-view auto``). A package that names
it is written as format version 3, so a server that predates views refuses it instead of serving it on other units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from .choices import UNIT_VIEWS

VIEWS = UNIT_VIEWS  # what a trainer may train on: every unit as the codebook gives it, or the clusters view
MAX_CLUSTERS = 1 << 20
MAX_REGISTERS = 64


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # 300, not "300", 300.0 or true

    fold: Literal["pitch_registers"]
    clusters: int = Field(ge=1, le=MAX_CLUSTERS)
    registers: int = Field(ge=2, le=MAX_REGISTERS)


@dataclass(frozen=True)
class UnitView:
    """The clusters view of a product codebook of ``clusters`` (C) x ``registers`` (R) units.

    ``apply`` maps one clip's units ``[M]`` i64 to ``[M']`` i64 (``M' <= M``). The object is what a package stores
    (``to_dict``: ``{"fold": "pitch_registers", "clusters": C, "registers": R}``), so a package says which codebook
    layout it folds; the server refuses it on a backbone whose codebook has another (``matches``)."""

    clusters: int
    registers: int

    @property
    def units(self) -> int:
        """Codebook units ``R * C``: ids below fold, ids at or above (a voice prefix) pass."""
        return self.clusters * self.registers

    def apply(self, units: Tensor) -> Tensor:
        """``[M]`` i64 unit ids -> ``[M']`` i64: each codebook unit ``r * C + c`` becomes ``c``, then consecutive equal
        codebook units are merged into one (dedup, as ``codebook.dedup``); ids ``>= R * C`` are kept as they are, and
        never merged. An empty row stays empty."""
        u = torch.as_tensor(units)
        if u.numel() == 0:
            return u.clone()
        body = u < self.units
        folded = torch.where(body, torch.remainder(u, self.clusters), u)
        keep = torch.ones_like(folded, dtype=torch.bool)
        keep[1:] = ~((folded[1:] == folded[:-1]) & body[1:] & body[:-1])
        return folded[keep]

    def to_dict(self) -> dict[str, Any]:
        return {"fold": "pitch_registers", "clusters": self.clusters, "registers": self.registers}

    @classmethod
    def from_dict(cls, d: Any) -> UnitView:
        """Validate a package's ``unit_view`` object; raises ``ValueError`` naming what is wrong and what is accepted."""
        try:
            f = _Fields.model_validate(d)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'unit_view'}: {err['msg']}"
                                 for err in e.errors(include_url=False)[:3])
            raise ValueError(f"unit_view {problems}; accepted: {ACCEPTED}") from None
        return cls(f.clusters, f.registers)

    @classmethod
    def of_codebook(cls, codebook: Any) -> UnitView | None:
        """The clusters view of ``codebook`` (``codebook.Codebook``), or None unless it is a product codebook: its
        ``factors`` (clusters ``[C, E]``, registers ``[R, P]``) when it was stored as them, else the layout its
        centroids ``[K, D]`` show (:func:`product_layout`; a bundle written before factors were stored, such as the
        default v7-v9, holds the expanded centroids)."""
        if codebook is None:
            return None
        factors = getattr(codebook, "factors", None)
        if factors:
            clusters, registers = factors
            return cls(int(clusters.shape[0]), int(registers.shape[0])) if registers.shape[0] >= 2 else None
        if not hasattr(codebook, "_product_layout"):  # computed once per loaded codebook
            codebook._product_layout = product_layout(codebook.centroids)
        layout = codebook._product_layout
        return cls(*layout) if layout else None

    def matches(self, codebook: Any) -> bool:
        """Whether ``codebook`` has this view's layout (a product codebook of the same C x R)."""
        return UnitView.of_codebook(codebook) == self


def product_layout(centroids: Tensor) -> tuple[int, int] | None:
    """``(C, R)`` when ``centroids [K, D]`` are a product codebook's expansion (row ``r * C + c`` = ``[cluster c,
    register r]``, ``codebook._expand``): for some ``R >= 2`` dividing ``K``, the leading ``E`` columns repeat every
    ``C`` rows, the other ``D - E >= 1`` are constant within each block of ``C`` rows and differ between blocks. The
    largest such ``R`` (the finest registers); None when there is none."""
    x = centroids.detach().cpu()
    K, D = x.shape
    for R in sorted((r for r in range(2, K + 1) if K % r == 0), reverse=True):
        blocks = x.reshape(R, K // R, D)
        if not bool((blocks[:, :, -1] == blocks[:, :1, -1]).all()):  # the last column must be a register column
            continue
        const = (blocks == blocks[:, :1]).all(1).all(0)  # [D]: columns constant within every block
        same = (blocks == blocks[:1]).all(0).all(0)  # [D]: columns equal in every block
        tail = int(torch.flip(const, [0]).cumprod(0).sum())  # trailing register columns
        E = D - tail
        if 1 <= E < D and bool(same[:E].all()) and len(torch.unique(blocks[:, 0, E:], dim=0)) == R:
            return K // R, R
    return None


ACCEPTED = (f"a JSON object {{\"fold\": \"pitch_registers\", \"clusters\": C in [1, {MAX_CLUSTERS}], \"registers\": R "
            f"in [2, {MAX_REGISTERS}]}}: the backbone's own (GET /v1/backbone, unit_view)")


def view_object(value: Any) -> dict[str, Any] | None:
    """A package header's ``unit_view`` (parsed JSON) -> its normalised object, or None for ``{}`` / None (no view).
    Raises ``ValueError`` (``UnitView.from_dict``)."""
    return UnitView.from_dict(value).to_dict() if value else None


__all__ = ["ACCEPTED", "VIEWS", "UnitView", "product_layout", "view_object"]

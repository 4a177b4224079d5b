"""Rows longer than the unit LM's positions are refused up front with a typed error, before any forward."""

from __future__ import annotations

import pytest
import torch

from server.errors import to_problem
from speechprompt.package import PackageMeta, new_package
from speechprompt.prompting import PromptBank
from speechprompt.unit_lm import SequenceTooLong, UnitLM, UnitLMConfig


def test_rows_longer_than_max_positions_are_refused_up_front_with_a_typed_error(monkeypatch):
    lm = UnitLM(UnitLMConfig(vocab_size=24, embed_dim=16, ffn_dim=32, layers=1, heads=2, max_positions=12)).eval()
    meta = PackageMeta(task="kws", labels=("a", "b"), backbone_fingerprint="f" * 64, prompt_length=2)
    g = torch.Generator().manual_seed(0)
    pkg = new_package(meta, torch.randn(1, 2, 16, generator=g), torch.randn(1, 2, 16, generator=g),
                      torch.randn(2, 16, generator=g), torch.randn(16, generator=g), torch.randn(6, 24, generator=g))
    bank = PromptBank(lm)
    bank.add("kws@1", pkg)
    assert len(bank.classify([torch.arange(10) % 20], ["kws@1"])) == 1  # 10 units + 2 markers = 12 fits
    monkeypatch.setattr(lm, "forward", lambda *a, **k: pytest.fail("forward ran on a row that cannot fit"))
    with pytest.raises(SequenceTooLong) as e:
        bank.classify([torch.arange(3), torch.arange(11) % 20], ["kws@1", "kws@1"])
    assert "13 unit-LM tokens" in str(e.value) and "12 positions" in str(e.value)
    p = to_problem(e.value)
    assert p.status == 413 and p.body["type"] == "/problems/sequence_too_long" and "10 units" in p.body["accepted"]

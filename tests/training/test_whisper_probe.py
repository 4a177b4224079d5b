"""scripts/whisper_probe.py: the per-layer states it reads from the core encoder, the dev-picked layer and C, and its
refusals (the reader, front end and blocks are tested in tests/test_whisper.py; parity with CTranslate2 on the real
weights is a measurement, docs/results.md)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from tests.scripts import load_script
from tests.whisper_fixtures import random_ct2, write_ct2


@pytest.fixture(scope="module")
def wp():
    return load_script("whisper_probe")


def test_encoder_states_give_every_block_and_the_final_norm(wp, tmp_path):
    """The probe's view of the core encoder: blocks 1-6 (each a residual step from the previous) and the final
    LayerNorm (zero mean, unit variance per frame with the tiny file's identity norm)."""
    ct2 = random_ct2(layers=6, positions=1500)
    run = wp.encoder_states(write_ct2(tmp_path / "model.bin", ct2))
    out = run(torch.randn(16000) * 0.1)
    assert sorted(out) == ["1", "2", "3", "4", "5", "6", "final"] and all(h.shape == (50, 64) for h in out.values())
    assert torch.allclose(out["final"].mean(1), torch.zeros(50), atol=1e-4)
    assert torch.allclose(out["final"].var(1, unbiased=False), torch.ones(50), atol=1e-2)
    assert not torch.allclose(out["5"], out["6"])


def test_layer_and_c_are_picked_on_dev(wp):
    cells = {layer: {"picked_dev": 0.5, "picked_c": 1.0, "picked_test": 0.9} for layer in wp.LAYERS}
    cells["3"] = {"picked_dev": 0.8, "picked_c": 0.1, "picked_test": 0.2}
    cells["5"] = {"picked_dev": 0.8, "picked_c": 0.01, "picked_test": 1.0}  # a tie: the first layer wins
    assert wp.dev_picked(cells) == {"layer": "3", "C": 0.1, "dev": 0.8, "test": 0.2}


def test_regressions_report_c1_and_the_dev_picked_c(wp):
    g = np.random.default_rng(0)

    def split(n):
        y = np.array(["a", "b"] * (n // 2))
        return {"labels": list(y), "4": g.standard_normal((n, 6)) + (y == "a")[:, None] * 3.0}

    r = wp.regressions({"train": split(40), "dev": split(10), "test": split(20)}, "4")
    assert r["c1_test"] == 1.0 and r["picked_c"] == 0.01 and r["picked_test"] == 1.0  # first best on dev


def test_commands_need_the_fetched_model(wp, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["whisper_probe.py", "layers", "--dest", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        wp.main()
    assert e.value.code == 2 and "run `whisper_probe.py fetch` first" in capsys.readouterr().err

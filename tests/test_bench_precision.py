"""The precision scripts as a user runs them: the gate script on the committed default bundle (speech-like clips,
the demo packages) writes a readable result, and the GPU script stays valid bash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gate_script_writes_its_figures(tmp_path):
    out = tmp_path / "gate.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench/precision_gate.py"), "--suite", str(tmp_path / "none"),
                        "--real", str(tmp_path / "none"), "--synthetic", "6", "--modes", "fp32/bf16,bf16",
                        "--out", str(out)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"}, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    gate = json.loads(out.read_text())
    meta = json.loads((ROOT / "models/default/backbone.json").read_text())
    assert gate["fingerprint"] == meta["fingerprint"] and gate["clips"]["used"] == 6
    assert gate["tasks"] == sorted(p.name for p in (ROOT / "prompts_store").iterdir() if (p / "CURRENT").exists())
    lm_only = gate["modes"]["fp32/bf16"]
    assert lm_only["units_agree"] == 1.0  # the encoder is untouched in fp32/bf16
    assert 0 < lm_only["max_prob_diff_same_units"] < 0.2 and lm_only["max_prob_diff"] == lm_only["max_prob_diff_same_units"]
    both = gate["modes"]["bf16"]
    assert 0.5 < both["units_agree"] <= 1.0 and set(both["labels_agree"]) == set(gate["tasks"])
    assert "| fp32/bf16 |" in r.stdout and "| bf16 |" in r.stdout


def test_gpu_script_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(ROOT / "bench/gpu_check.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = (ROOT / "bench/gpu_check.sh").read_text()
    assert "bench/precision_gate.py --device cuda" in text and "bench/bench_precision.py --device cuda" in text

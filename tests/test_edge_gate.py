"""The edge gate (speechprompt/edge_gate.py): silent edges dropped before the dense model, everything between kept
sample for sample; silence and too-short remainders passed through; in a bundle (v9): the fingerprint kept, its own
units key, a zero-padded clip encoded as the tight one, explanations' seconds on the kept part."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechprompt.backbone import Backbone, BundleError, settings_digest
from speechprompt.edge_gate import EdgeGate
from speechprompt.explain import span_seconds
from speechprompt.level import LevelFloor
from speechprompt.runtime import Runtime
from speechprompt.speech_embedding import SpeechEmbeddingConfig, SpeechEmbeddingEncoder
from tests.test_level import _bundle
from tests.test_speech_embedding import _real_clip

ROOT = Path(__file__).resolve().parents[1]


def test_zero_padding_is_dropped_exactly_and_a_tight_clip_is_the_same_object():
    gate = EdgeGate(0.0, min_run_s=0.05, min_keep_s=0.1)
    speech = torch.sin(torch.arange(3200) * 0.3) * 0.5 + 0.01  # no sample is exactly zero
    padded = torch.cat([torch.zeros(16000), speech, torch.zeros(8000)])
    assert gate.bounds(padded) == (16000, 16000 + 3200)
    assert torch.equal(gate.apply(padded), speech)  # the clip as it was before the padding, bit for bit
    assert gate.apply(speech) is speech  # nothing to drop: the input object itself


def test_threshold_drops_quiet_room_tone_but_stops_at_the_first_louder_sample():
    gate = EdgeGate(1e-3, min_run_s=0.0, min_keep_s=0.1)
    g = torch.Generator().manual_seed(0)
    tone = (torch.rand(16000, generator=g) - 0.5) * 2e-3 * 0.99  # peak < 1e-3
    speech = torch.full((4000,), 0.2)
    got = gate.apply(torch.cat([tone, speech, tone]))
    assert torch.equal(got, speech)
    click = tone.clone()
    click[100] = 0.05  # one louder sample in the leading tone: everything from it on is kept
    assert gate.bounds(torch.cat([click, speech]))[0] == 100


def test_quiet_edges_shorter_than_min_run_are_kept_bit_for_bit():
    gate = EdgeGate(0.0, min_run_s=0.05, min_keep_s=0.1)  # 800 samples
    speech = torch.full((4000,), 0.2)
    tight = torch.cat([torch.zeros(2), speech, torch.zeros(799)])  # a tight cut: 2 and 799 quiet samples
    assert gate.apply(tight) is tight
    assert gate.bounds(torch.cat([torch.zeros(800), speech, torch.zeros(799)])) == (800, 5599)  # 800: dropped
    assert gate.bounds(torch.cat([torch.zeros(2), speech, torch.zeros(16000)])) == (0, 4002)  # each edge by itself


def test_silence_and_too_short_remainders_are_passed_through():
    gate = EdgeGate(0.0, min_run_s=0.05, min_keep_s=0.1)
    silent = torch.zeros(16000)
    assert gate.apply(silent) is silent  # nothing above the threshold: silence stays silence (vad says noise)
    one_click = torch.zeros(16000)
    one_click[8000:8100] = 0.5  # 100 samples < 0.1 s would remain: the whole clip is kept
    assert gate.apply(one_click) is one_click
    assert gate.bounds(torch.tensor([0.0, float("nan"), 0.0])) == (0, 3)  # NaN is not sound


def _d(t=0.0, r=0.05, k=0.1, **more):
    return {"threshold": t, "min_run_s": r, "min_keep_s": k, **more}


@pytest.mark.parametrize("bad", [_d(t=-0.1), _d(t=0.5), _d(k=0.0), _d(r=-1.0), _d(r=11.0), _d(t=True), _d(t="0"),
                                 {"threshold": 0.0, "min_keep_s": 0.1}, {}, _d(extra=1), [0.0, 0.05, 0.1]])
def test_malformed_settings_are_refused(bad):
    with pytest.raises(ValueError):
        EdgeGate.from_dict(bad)


def test_a_batch_is_refused_and_numpy_numbers_are_settings_like_floats():
    with pytest.raises(ValueError, match="one clip"):
        EdgeGate().bounds(torch.zeros(2, 16000))
    assert EdgeGate(np.float32(0.0), np.float64(0.2)) == EdgeGate(0.0, 0.2)
    assert EdgeGate().bounds(torch.zeros(0)) == (0, 0)


def test_settings_round_trip_as_floats():
    gate = EdgeGate.from_dict(_d(t=0, r=0, k=1))
    assert gate.to_dict() == {"threshold": 0.0, "min_run_s": 0.0, "min_keep_s": 1.0}
    assert EdgeGate.from_dict(gate.to_dict()) == gate


# --- the gate in a bundle: encoder, units key, backbone.json, the settings script, explanations' seconds ---

def _padded(clip: torch.Tensor, before: int, after: int) -> torch.Tensor:
    return torch.cat([torch.zeros(before), clip, torch.zeros(after)])


def test_encoder_with_a_gate_gives_a_zero_padded_clip_the_features_of_the_clip(encoder):
    gated = SpeechEmbeddingEncoder(SpeechEmbeddingConfig(edge_gate=EdgeGate(0.0, 0.2)))
    gated.load_state_dict(encoder.state_dict())
    clip = torch.from_numpy(_real_clip())
    assert float(clip[0]) != 0.0 and float(clip[-1]) != 0.0  # cut tight: nothing for the gate to drop
    padded = _padded(clip, 16000, 8000)  # a second of digital silence before, half a second after
    want = encoder.extract([clip])[0]
    assert torch.equal(gated.extract([padded])[0], want)  # exactly the clip's features
    assert torch.equal(gated.extract([clip])[0], want)  # the tight clip: as without a gate
    assert encoder.extract([padded])[0].shape[0] > want.shape[0]  # without the gate: more frames, other features
    short = _padded(clip, 3199, 3199)  # quiet edges under min_run_s: kept, so as without a gate
    assert torch.equal(gated.extract([short])[0], encoder.extract([short])[0])


def test_the_gate_keeps_the_fingerprint_moves_the_units_key_and_leaves_v8s_key_alone(tmp_path, encoder):
    floor, gate = LevelFloor(0.25), EdgeGate(0.0, 0.2)
    fps = {n: _bundle(tmp_path / n, SpeechEmbeddingConfig(level_floor=f, edge_gate=g), encoder.state_dict())
           for n, f, g in (("plain", None, None), ("v8", floor, None), ("v9", floor, gate), ("gate", None, gate))}
    assert len(set(fps.values())) == 1  # the same weights: every package of one loads on the others
    b = {n: Backbone.load(tmp_path / n) for n in fps}
    fp = fps["plain"]
    assert b["plain"].units_key == fp and len({bb.units_key for bb in b.values()}) == 4  # units cached apart
    # v8's key is what it was before the gate existed, so v8's units caches stay valid
    v8_key = hashlib.sha256(f"{fp}:level_floor={json.dumps(floor.to_dict(), sort_keys=True)}".encode()).hexdigest()
    assert b["v8"].units_key == v8_key
    assert b["v9"].info()["encoder"]["edge_gate"] == {"threshold": 0.0, "min_run_s": 0.2, "min_keep_s": 0.1}
    assert "edge_gate" not in b["v8"].info()["encoder"] and "edge_gate" not in SpeechEmbeddingConfig().to_dict()
    digests = {json.loads((tmp_path / n / "backbone.json").read_text())["settings_digest"] for n in fps}
    assert len(digests) == 4


@pytest.mark.parametrize("bad", [{"threshold": 0.0}, {"threshold": -1, "min_run_s": 0.2, "min_keep_s": 0.1}, 0.0,
                                 "0:0.2", [0, 0.2, 0.1]])
def test_a_malformed_gate_makes_the_bundle_unloadable_with_a_clear_error(tmp_path, encoder, bad):
    _bundle(tmp_path / "b", SpeechEmbeddingConfig(edge_gate=EdgeGate()), encoder.state_dict())
    meta = json.loads((tmp_path / "b" / "backbone.json").read_text())
    meta["encoder"]["edge_gate"] = bad
    meta["settings_digest"] = settings_digest(meta)  # even with a digest that matches the edit
    (tmp_path / "b" / "backbone.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="edge_gate"):
        Backbone.load(tmp_path / "b")


def test_set_encoder_settings_adds_the_gate_and_keeps_the_floor(tmp_path, encoder):
    fp = _bundle(tmp_path / "v8", SpeechEmbeddingConfig(level_floor=LevelFloor(0.25)), encoder.state_dict())
    run = [sys.executable, str(ROOT / "scripts" / "set_encoder_settings.py"), str(tmp_path / "v8")]
    r = subprocess.run(run + ["--out", str(tmp_path / "v9"), "--edge-gate", "0:0.2", "--name", "x-v9"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    v8, v9 = Backbone.load(tmp_path / "v8"), Backbone.load(tmp_path / "v9")
    assert v9.fingerprint == fp and v9.spec.name == "x-v9" and v9.spec.encoder.level_floor == LevelFloor(0.25)
    assert v9.spec.encoder.edge_gate == EdgeGate(0.0, 0.2, 0.1) and v8.spec.encoder.edge_gate is None
    clip = _real_clip()
    padded = np.concatenate([np.zeros(16000, np.float32), clip, np.zeros(16000, np.float32)])
    (u8c, u8p), (u9c, u9p) = (Runtime(b).extract_units([clip, padded]) for b in (v8, v9))
    assert torch.equal(u9p.units, u8c.units) and torch.equal(u9c.units, u8c.units)  # padded = tight on v9
    assert not torch.equal(u8p.units, u8c.units)  # v8 gives the padded clip other units
    assert v9.encoded_span(padded) == (1.0, 1.0 + len(clip) / 16000) and v8.encoded_span(padded) == (
        0.0, len(padded) / 16000)
    r = subprocess.run(run + ["--out", str(tmp_path / "none"), "--edge-gate", "none"], capture_output=True, text=True)
    assert r.returncode == 0 and Backbone.load(tmp_path / "none").spec.encoder.edge_gate is None
    r = subprocess.run(run + ["--out", str(tmp_path / "bad"), "--edge-gate", "0.2"], capture_output=True, text=True)
    assert r.returncode == 2 and "THRESHOLD:MIN_RUN_S" in r.stderr and not (tmp_path / "bad").exists()


def test_explanation_seconds_tile_the_part_of_the_clip_the_units_cover():
    durations = torch.tensor([2, 1, 1])  # 4 frames
    assert span_seconds(durations, [(0, 1), (1, 3)], 2.0) == [(0.0, 1.0), (1.0, 2.0)]
    assert span_seconds(durations, [(0, 1), (1, 3)], 2.0, start_s=1.5) == [(1.5, 2.5), (2.5, 3.5)]

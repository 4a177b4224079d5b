"""The level floor (speechprompt/level.py): quiet clips raised before the dense model, louder ones bit for bit as
before; a bundle with a floor keeps its fingerprint (packages load) but has its own units-cache key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechprompt.backbone import Backbone, BundleError, natural_dictionary, save_bundle, settings_digest
from speechprompt.level import LevelFloor
from speechprompt.pitch import PitchConfig, pitch_vector
from speechprompt.precision import choose, gate_matches
from speechprompt.runtime import Runtime
from speechprompt.speech_embedding import SpeechEmbeddingConfig, SpeechEmbeddingEncoder
from speechprompt.unit_lm import UnitLM, UnitLMConfig
from tests.test_speech_embedding import _real_clip

ROOT = Path(__file__).resolve().parents[1]


def test_floor_raises_quiet_clips_and_passes_loud_ones_through():
    floor = LevelFloor(0.25, max_gain_db=40.0)
    loud = torch.tensor([0.0, 0.3, -0.5, 0.1])
    assert floor.apply(loud) is loud  # at or above the floor: the same object, bit for bit
    quiet = torch.tensor([0.0, 0.01, -0.02, 0.005])
    raised = floor.apply(quiet)
    assert float(raised.abs().max()) == pytest.approx(0.25, rel=1e-6)
    assert torch.allclose(raised, quiet * 12.5)  # one gain for the whole clip: its shape is kept
    dither = torch.tensor([1e-5, -2e-5, 0.0])  # digital silence with dither: raised by at most 40 dB (x100)
    assert float(floor.apply(dither).abs().max()) == pytest.approx(2e-3, rel=1e-5)
    silent = torch.zeros(8)
    assert floor.apply(silent) is silent
    broken = torch.tensor([0.01, float("nan")])  # refused by the decoder; here not spread over the whole clip
    assert floor.apply(broken) is broken


G = {"max_gain_db": 40.0}


@pytest.mark.parametrize("bad", [{"peak": 0.0} | G, {"peak": 1.5} | G, {"peak": 0.2, "max_gain_db": 0}, {"peak": 0.2, "x": 1},
                                 {"peak": True} | G, {"peak": "0.3"} | G, {"peak": float("nan")} | G, 0.25, "0.25", True,
                                 [0.25], 0, {}, {"peak": 0.2}])
def test_malformed_floor_settings_make_the_bundle_unloadable_with_a_clear_error(tmp_path, encoder, bad):
    """Any backbone.json level_floor but a valid object is a ValueError of the config (BundleError on load), even with a
    recomputed settings digest; before, a non-object value loaded and crashed the first encode."""
    with pytest.raises(ValueError, match="level_floor"):
        SpeechEmbeddingConfig.from_dict({"level_floor": bad})
    _bundle(tmp_path / "b", SpeechEmbeddingConfig(level_floor=LevelFloor(0.25)), encoder.state_dict())
    meta = json.loads((tmp_path / "b" / "backbone.json").read_text())
    meta["encoder"]["level_floor"] = bad
    meta["settings_digest"] = settings_digest(meta)
    (tmp_path / "b" / "backbone.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="level_floor"):
        Backbone.load(tmp_path / "b")


def test_config_keeps_backbone_json_of_bundles_without_a_floor():
    assert "level_floor" not in SpeechEmbeddingConfig().to_dict()
    cfg = SpeechEmbeddingConfig.from_dict({"level_floor": {"peak": 0.25, "max_gain_db": 40}})
    assert cfg.level_floor == LevelFloor(0.25, 40.0) and cfg.to_dict()["level_floor"] == {"peak": 0.25,
                                                                                          "max_gain_db": 40.0}


def test_encoder_with_a_floor_equals_the_raised_clip_without_one(encoder):
    floored = SpeechEmbeddingEncoder(SpeechEmbeddingConfig(level_floor=LevelFloor(0.25)))
    floored.load_state_dict(encoder.state_dict())
    clip = torch.from_numpy(_real_clip())
    quiet = clip * (0.02 / float(clip.abs().max()))  # ~34 dB under full scale: a distant microphone
    got_quiet, got_loud = floored.extract([quiet])[0], floored.extract([clip])[0]
    want_quiet = encoder.extract([quiet * (0.25 / float(quiet.abs().max()))])[0]
    assert torch.allclose(got_quiet, want_quiet, rtol=1e-4, atol=1e-3)  # features of magnitude ~30
    assert torch.equal(got_loud, encoder.extract([clip])[0])  # the loud clip: bit for bit as without a floor
    assert not torch.allclose(got_quiet, encoder.extract([quiet])[0], atol=1e-3)  # the floor did change the quiet one


def test_the_pitch_stream_sees_the_raised_clip_too(encoder):
    """The default's encoder has a pitch stream (YIN voicing + log-F0); it must read the raised clip, as the embedding
    does: a quiet clip gets the pitch features of the clip at the floor, not those of the quiet one."""
    pitched = SpeechEmbeddingEncoder(SpeechEmbeddingConfig(pitch=PitchConfig(scale=40.0)))
    floored = SpeechEmbeddingEncoder(SpeechEmbeddingConfig(pitch=PitchConfig(scale=40.0), level_floor=LevelFloor(0.25)))
    for enc in (pitched, floored):
        enc.load_state_dict(encoder.state_dict() | {"pitch_config": pitch_vector(enc.cfg.pitch)})
    clip = torch.from_numpy(_real_clip())
    quiet = clip * (0.003 / float(clip.abs().max()))  # RMS under YIN's min_rms: unvoiced without the floor
    got = floored.extract([quiet])[0][:, 96:]
    want = pitched.extract([quiet * (0.25 / float(quiet.abs().max()))])[0][:, 96:]
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, pitched.extract([quiet])[0][:, 96:])


def _bundle(folder: Path, enc_cfg: SpeechEmbeddingConfig, state: dict) -> str:
    torch.manual_seed(0)
    lm_cfg = UnitLMConfig(vocab_size=24, embed_dim=32, ffn_dim=64, layers=2, heads=4, max_positions=256)
    return save_bundle(folder, kind="gslm", name=folder.name, encoder_cfg=enc_cfg, encoder_state=state,
                       centroids=torch.randn(20, 96, generator=torch.Generator().manual_seed(1)) * 5, lm_cfg=lm_cfg,
                       lm_state=UnitLM(lm_cfg).state_dict(), dictionary=natural_dictionary(20))


def test_a_floor_keeps_the_fingerprint_but_not_the_units_key(tmp_path, encoder):
    fp = _bundle(tmp_path / "plain", encoder.cfg, encoder.state_dict())
    fp_floor = _bundle(tmp_path / "floor", SpeechEmbeddingConfig(level_floor=LevelFloor(0.25)), encoder.state_dict())
    plain, floor = Backbone.load(tmp_path / "plain"), Backbone.load(tmp_path / "floor")
    assert fp == fp_floor  # the same weights: every package of one loads on the other
    assert plain.units_key == fp and floor.units_key != fp  # but their units are cached apart
    assert floor.info()["encoder"]["level_floor"] == {"peak": 0.25, "max_gain_db": 40.0}
    assert "level_floor" not in plain.info()["encoder"]
    meta = json.loads((tmp_path / "floor" / "backbone.json").read_text())
    assert meta["settings_digest"] != json.loads((tmp_path / "plain" / "backbone.json").read_text())["settings_digest"]
    meta["encoder"]["level_floor"]["peak"] = 0.5  # a hand edit of the floor is refused like any other setting
    (tmp_path / "floor" / "backbone.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="settings"):
        Backbone.load(tmp_path / "floor")


def test_runtime_units_key_separates_encoder_precisions(tmp_path, encoder):
    _bundle(tmp_path / "b", encoder.cfg, encoder.state_dict())
    fp32, int8 = Runtime.load(tmp_path / "b"), Runtime.load(tmp_path / "b", precision="int8")
    assert fp32.units_key == fp32.fingerprint
    assert int8.backbone.precision["encoder"] == "int8" and int8.units_key != fp32.units_key


def test_set_encoder_settings_script_copies_the_weights_and_names_the_floor(tmp_path, encoder):
    fp = _bundle(tmp_path / "v7", encoder.cfg, encoder.state_dict())
    (tmp_path / "v7" / "precision_gate.json").write_text('{"fingerprint": "%s"}' % fp)
    run = [sys.executable, str(ROOT / "scripts" / "set_encoder_settings.py")]
    r = subprocess.run(run + [str(tmp_path / "v7"), "--out", str(tmp_path / "v8"), "--name", "x-v8", "--peak", "0.25"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    v7, v8 = Backbone.load(tmp_path / "v7"), Backbone.load(tmp_path / "v8")
    assert v8.fingerprint == v7.fingerprint and v8.spec.name == "x-v8"
    assert v8.spec.encoder.level_floor == LevelFloor(0.25, 40.0) and v7.spec.encoder.level_floor is None
    for f in ("encoder.safetensors", "codebook.safetensors", "unit_lm.safetensors"):
        assert (tmp_path / "v8" / f).read_bytes() == (tmp_path / "v7" / f).read_bytes()
    assert not (tmp_path / "v8" / "precision_gate.json").exists()  # measured on v7's units: not carried over
    clip = _real_clip()
    quiet = (clip * (0.02 / np.abs(clip).max())).astype(np.float32)
    u7, u8 = (Runtime(b).extract_units([quiet, clip]) for b in (v7, v8))
    assert torch.equal(u7[1].units, u8[1].units)  # a loud clip: the same units
    raised = (quiet * (0.25 / np.abs(quiet).max())).astype(np.float32)
    assert torch.equal(u8[0].units, Runtime(v7).extract_units([raised])[0].units)
    r = subprocess.run(run + [str(tmp_path / "v7"), "--out", str(tmp_path / "bad"), "--peak", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "(0, 1]" in r.stderr and not (tmp_path / "bad").exists()


def test_a_precision_gate_measured_without_the_floor_is_not_used_with_it():
    """v8 has v7's fingerprint: a gate that records its settings digest is used only by the bundle it measured."""
    gate = {"fingerprint": "f", "settings_digest": "v7", "modes": {"bf16": {"passed": True, "speedup": 2.0}}}
    assert gate_matches(gate, "f", "v7") and not gate_matches(gate, "f", "v8") and not gate_matches(gate, "g", "v7")
    # a gate from before digests were recorded: only for a bundle without settings, never one that has them
    assert gate_matches({"fingerprint": "f"}, "f", None) and not gate_matches({"fingerprint": "f"}, "f", "v8")
    flags = frozenset({"avx512_bf16", "amx_bf16", "avx512_vnni", "avx2"})
    assert choose("auto", device="cpu", flags=flags, gate=gate, fingerprint="f", settings_digest="v7").mode == "bf16"
    other = choose("auto", device="cpu", flags=flags, gate=gate, fingerprint="f", settings_digest="v8")
    assert other.mode == "fp32" and "other settings" in other.reason

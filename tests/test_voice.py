"""The voice prefix (speechprompt/voice.py): residual codes, the Whisper block means it reads, and bundles that
carry it (units, runtime, explanations, the bundle checks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from speechprompt.backbone import Backbone, BundleError, natural_dictionary, save_backbone, save_bundle
from speechprompt.explain import occlusion_spans
from speechprompt.package import PackageMeta, new_package
from speechprompt.runtime import Runtime
from speechprompt.unit_lm import UnitLM, UnitLMConfig
from speechprompt.units import Units, prefix_length
from speechprompt.voice import VOICE_FILE, VoiceConfig, VoiceError, VoicePrefix
from speechprompt.whisper import WhisperConfig, WhisperEncoder


def _wav(n: int, seed: int = 0) -> torch.Tensor:
    t = torch.arange(n) / 16000
    g = torch.Generator().manual_seed(seed)
    return (0.3 * torch.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.05 * torch.randn(n, generator=g)).float()


def test_config_round_trip_and_refusals():
    cfg = VoiceConfig(layer=2, dim=64, codes=(4, 3))
    assert VoiceConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg and cfg.num_tokens == 7
    with pytest.raises(VoiceError, match="source"):
        VoiceConfig(source="x-vector")
    with pytest.raises(VoiceError, match="stage sizes"):
        VoiceConfig(codes=())
    with pytest.raises(VoiceError, match="voice settings"):
        VoiceConfig.from_dict({"source": "whisper-block-mean", "layer": 1})


def test_codes_are_residual_nearest_centroids_in_standardised_space():
    vp = VoicePrefix(VoiceConfig(dim=2, codes=(2, 3)))
    vp.mean.copy_(torch.tensor([1.0, 0.0]))
    vp.scale.copy_(torch.tensor([2.0, 1.0]))
    vp.stage_0.copy_(torch.tensor([[0.0, 0.0], [5.0, 0.0]]))
    vp.stage_1.copy_(torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    # [11, 1.2] -> standardised [5, 1.2]: stage 0 picks 1 (rest [0, 1.2]), stage 1 picks 1 -> id 2 + 1
    # [1, -0.9] -> [0, -0.9]: stage 0 picks 0, stage 1 picks 2 -> id 2 + 2
    codes = vp.codes(torch.tensor([[11.0, 1.2], [1.0, -0.9]]))
    assert codes.tolist() == [[1, 3], [0, 4]] and codes.dtype == torch.long
    with pytest.raises(VoiceError, match=r"\[B, 2\]"):
        vp.codes(torch.zeros(3, 4))


def test_block_means_average_a_block_over_every_chunk_frame():
    enc = WhisperEncoder(WhisperConfig.tiny(layers=2)).eval()
    short, long_ = _wav(9000), _wav(16000 + 7000, seed=1)  # the tiny encoder's chunks are 1 s
    got = enc.block_means([short, long_], 1)
    assert got.shape == (2, 64)
    torch.testing.assert_close(got[0], enc.hidden_states(enc.log_mel(short), 1)[-1].mean(0))
    parts = [enc.hidden_states(enc.log_mel(c), 1)[-1] for c in (long_[:16000], long_[16000:])]
    torch.testing.assert_close(got[1], torch.cat(parts).mean(0))  # frame-weighted, not a mean of chunk means
    assert not torch.allclose(got[1], (parts[0].mean(0) + parts[1].mean(0)) / 2)
    assert not torch.allclose(enc.block_means([short], 2)[0], got[0])
    with pytest.raises(ValueError, match="blocks 1..2"):
        enc.block_means([short], 3)
    # the units' path reads them from its own encoder pass: the same frames and the same means
    frames, means = enc.extract_with_means([short, long_], 1)
    assert all(torch.equal(a, b) for a, b in zip(frames, enc.extract([short, long_]), strict=True))
    torch.testing.assert_close(means, got, rtol=0, atol=1e-6)
    assert enc.extract_with_means([short], None)[1] is None


def _voice_bundle(folder, codes=(3, 2), seed=0) -> str:
    """A tiny GSLM bundle on a random Whisper encoder with a voice prefix (K = 8 frame units)."""
    torch.manual_seed(seed)
    enc = WhisperEncoder(WhisperConfig.tiny(layers=2))
    cfg = VoiceConfig(layer=1, dim=64, codes=codes)
    vp = VoicePrefix(cfg)
    for c in vp.stages():
        c.copy_(torch.randn_like(c))
    k = 8
    lm_cfg = UnitLMConfig(vocab_size=4 + k + cfg.num_tokens, embed_dim=32, ffn_dim=64, layers=1, heads=4,
                          max_positions=256)
    return save_bundle(folder, kind="gslm", name="whisper-voice-tiny", encoder_cfg=enc.cfg,
                       encoder_state=enc.state_dict(), centroids=torch.randn(k, 64), lm_cfg=lm_cfg,
                       lm_state=UnitLM(lm_cfg).state_dict(), dictionary=natural_dictionary(k + cfg.num_tokens),
                       voice_cfg=cfg, voice_state=vp.state_dict())


def test_units_start_with_the_voice_prefix_and_span_no_frame(tmp_path):
    fp = _voice_bundle(tmp_path / "b")
    bb = Backbone.load(tmp_path / "b")
    assert bb.fingerprint == fp and bb.num_units == 8 + 5 and bb.info()["voice"]["codes"] == [3, 2]
    assert (tmp_path / "b" / VOICE_FILE).is_file()
    wavs = [_wav(12000), _wav(20000, seed=2)]
    units = bb.unit_extractor().extract(wavs)
    want = bb.voice.prefix(bb.encoder, wavs) + 8
    for u, w in zip(units, want, strict=True):
        assert u.units[:2].tolist() == w.tolist() and 8 <= int(w[0]) < 11 <= int(w[1]) < 13
        assert u.durations[:2].tolist() == [0, 0] and (u.durations[2:] >= 1).all() and (u.units[2:] < 8).all()
        assert int(u.durations.sum()) == u.frames and prefix_length(u) == 2
    # every prefix id maps to its own LM token, after the frame units'
    assert bb.unit_to_token[8:].tolist() == list(range(12, 17))


def test_runtime_classifies_voice_bundle_rows_and_explains_only_the_audio_units(tmp_path):
    _voice_bundle(tmp_path / "b")
    rt = Runtime.load(tmp_path / "b")
    lm = rt.backbone.unit_lm
    meta = PackageMeta(task="t", labels=("a", "b"), backbone_fingerprint=rt.fingerprint)
    g, (L, d, V) = torch.Generator().manual_seed(0), (lm.cfg.layers, lm.cfg.embed_dim, lm.cfg.vocab_size)
    rt.add_task("t", new_package(meta, deep_key=torch.randn(L, 5, d, generator=g),
                                 deep_value=torch.randn(L, 5, d, generator=g), input_prompt=torch.randn(5, d, generator=g),
                                 separator=torch.randn(d, generator=g), verbalizer=torch.randn(6, V, generator=g)))
    units = rt.extract_units([_wav(16000)])
    probs = rt.classify(units, ["t"])[0]
    assert probs.shape == (2,) and abs(float(probs.sum()) - 1) < 1e-5
    # the same row without its prefix is another input: the prefix reaches the unit LM
    bare = Units(units[0].units[2:], units[0].durations[2:], units[0].frames)
    assert not np.allclose(rt.classify([bare], ["t"])[0], probs)
    spans = occlusion_spans(len(units[0].units), 3, prefix_length(units[0]))
    assert spans[0][0] == 2 and spans[-1][1] == len(units[0].units)


def test_occlusion_spans_start_after_the_prefix():
    assert occlusion_spans(7, 2, 2) == [(2, 4), (4, 7)] and occlusion_spans(2, 3, 2) == []
    with pytest.raises(ValueError, match="outside"):
        occlusion_spans(3, 2, 4)


def test_bundle_checks_cover_the_voice_file_and_settings(tmp_path):
    fp = _voice_bundle(tmp_path / "b")
    assert _voice_bundle(tmp_path / "c", seed=0) == fp and _voice_bundle(tmp_path / "d", seed=1) != fp
    bb = Backbone.load(tmp_path / "b")
    assert save_backbone(bb, tmp_path / "again") == fp  # the voice file travels with the bundle
    meta_path = tmp_path / "b" / "backbone.json"
    meta = json.loads(meta_path.read_text())
    edited = {**meta, "voice": {**meta["voice"], "layer": 2}}
    meta_path.write_text(json.dumps(edited))
    with pytest.raises(BundleError, match="settings"):  # a hand edit of the voice settings
        Backbone.load(tmp_path / "b")
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "voice"}))
    with pytest.raises(BundleError, match="must list"):  # a voice file without its settings, or the reverse
        Backbone.load(tmp_path / "b")
    meta_path.write_text(json.dumps({**meta, "voice": {**meta["voice"], "layer": 5}}))
    with pytest.raises(BundleError, match="block 5"):
        Backbone.load(tmp_path / "b", verify=False)


def test_what_else_reads_units_sees_the_prefix_and_a_pgslm_build_refuses_it(tmp_path):
    from server.service import lm_audio_limit_s
    from speechprompt.precision_gate import measure
    from speechprompt.training.build_pgslm import PGSLMBuildConfig, build_pgslm

    _voice_bundle(tmp_path / "b")
    rt = Runtime.load(tmp_path / "b")
    wavs = [_wav(12000).numpy(), _wav(14000, seed=3).numpy()]
    m = measure(rt, wavs, [])  # the precision gate compares the units the server sends, prefix first
    for got, want in zip(m.units, rt.extract_units(wavs), strict=True):
        assert torch.equal(got.units, want.units) and torch.equal(got.durations, want.durations)
    spec = rt.backbone.spec  # two prefix tokens take two positions from the longest clip the server accepts
    hop, rate = rt.backbone.encoder.hop_size, spec.sample_rate
    assert lm_audio_limit_s(rt) == ((spec.unit_lm.max_positions - 2 - 2 - 2) * hop + 400) / rate
    with pytest.raises(ValueError, match="voice prefix"):
        build_pgslm(tmp_path / "b", tmp_path / "p", PGSLMBuildConfig())
    assert not (tmp_path / "p").exists()


def test_settings_that_do_not_fit_are_refused():
    with pytest.raises(VoiceError, match="unknown voice settings"):
        VoiceConfig.from_dict({**VoiceConfig().to_dict(), "speakers": 3})


def test_a_voice_width_other_than_the_encoders_is_refused_at_load(tmp_path):
    _voice_bundle(tmp_path / "b")
    meta_path = tmp_path / "b" / "backbone.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "voice": {**meta["voice"], "dim": 32}}))
    with pytest.raises(BundleError, match="32 dimensions"):
        Backbone.load(tmp_path / "b", verify=False)

"""The dense stage's pitch stream (speechprompt/pitch.py): YIN on known signals, frame alignment, the 98-d
speech_embedding + pitch encoder, and its settings fingerprinted through the encoder weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from speechprompt.backbone import Backbone, BundleError, natural_dictionary, save_bundle
from speechprompt.codebook import Codebook
from speechprompt.pitch import PitchConfig, frame_segments, pitch_features, register_centroids, yin
from speechprompt.speech_embedding import SpeechEmbeddingConfig, SpeechEmbeddingEncoder
from speechprompt.unit_lm import UnitLM, UnitLMConfig

SR = 16000
CFG = PitchConfig()


def _harmonic(f0: float, seconds: float = 1.0, harmonics=(1, 2, 3), amp: float = 0.3) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    x = sum(torch.sin(2 * math.pi * f0 * h * t) / h for h in harmonics)
    return (amp * x / x.abs().max()).float()


@pytest.mark.parametrize("f0", [70.0, 110.0, 160.0, 233.3, 310.0, 480.0])
def test_yin_finds_the_fundamental_of_a_harmonic_tone(f0):
    frames = 10
    est, voiced = yin(frame_segments(_harmonic(f0), frames, CFG), CFG)
    inner = slice(1, frames - 1)  # the edge frames read zero padding
    assert voiced[inner].all()
    assert torch.allclose(est[inner], torch.full_like(est[inner], f0), rtol=5e-3)


def test_missing_fundamental_telephone_band_still_gives_f0():
    # harmonics 3..8 of 120 Hz only (360-960 Hz): what a 300-3400 Hz channel leaves of a low male voice
    est, voiced = yin(frame_segments(_harmonic(120.0, harmonics=range(3, 9)), 10, CFG), CFG)
    assert voiced[2:8].all() and torch.allclose(est[2:8], torch.full((6,), 120.0), rtol=1e-2)


def test_noise_and_silence_are_unvoiced():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(SR, generator=g) * 0.1
    _, voiced = yin(frame_segments(noise, 12, CFG), CFG)
    assert voiced.float().mean() <= 0.1
    _, voiced = yin(frame_segments(torch.zeros(SR), 12, CFG), CFG)
    assert not voiced.any()
    quiet = _harmonic(150.0, amp=CFG.min_rms / 4)  # periodic but below the level floor
    _, voiced = yin(frame_segments(quiet, 12, CFG), CFG)
    assert not voiced.any()


def test_frames_follow_the_dense_hop_and_centre():
    # 100 Hz for the first half second, 200 Hz after: frame e analyses samples around centre + e * hop
    x = torch.cat([_harmonic(100.0, 0.5), _harmonic(200.0, 0.5)])
    frames = 12
    est, voiced = yin(frame_segments(x, frames, CFG), CFG)
    half = SR // 2
    for e in range(frames):
        lo = CFG.centre + e * CFG.hop - CFG.window // 2
        hi = lo + CFG.window + CFG.lag_max
        if hi < half and lo > 0:
            assert voiced[e] and abs(est[e].item() - 100.0) < 1.0, e
        elif lo > half and hi < len(x):
            assert voiced[e] and abs(est[e].item() - 200.0) < 2.0, e
    seg = frame_segments(x, frames, CFG)
    start = CFG.centre - seg.shape[1] // 2
    assert torch.equal(seg[3], x[start + 3 * CFG.hop: start + 3 * CFG.hop + seg.shape[1]])


def test_pitch_features_scale_log_f0_by_octaves():
    cfg = PitchConfig(scale=10.0)
    ref = pitch_features(_harmonic(160.0), 8, cfg)[2:6]
    up = pitch_features(_harmonic(320.0), 8, cfg)[2:6]
    assert torch.allclose(ref, torch.tensor([10.0, 0.0]).expand(4, 2), atol=0.05)
    assert torch.allclose(up, torch.tensor([10.0, 10.0]).expand(4, 2), atol=0.05)
    assert torch.equal(pitch_features(torch.zeros(SR), 8, cfg), torch.zeros(8, 2))


def test_product_codebook_picks_the_nearest_cluster_and_the_pitch_register_independently():
    cfg = PitchConfig(scale=40.0)
    reg = register_centroids(cfg, 3)
    assert torch.allclose(reg, torch.tensor([[0.0, 0.0], [40.0, -20.0], [40.0, 20.0]]))  # unvoiced, 113 Hz, 226 Hz
    assert torch.allclose(register_centroids(cfg, 2), torch.tensor([[0.0, 0.0], [40.0, 0.0]]))
    with pytest.raises(ValueError, match=">= 2"):
        register_centroids(cfg, 1)
    g = torch.Generator().manual_seed(0)
    clusters = torch.randn(7, 96, generator=g) * 30
    book = Codebook.product(clusters, reg)
    assert book.vocab_size == 21 and book.dim == 98
    # frames: embedding near a random cluster + the pitch of a 110 Hz voice, a 240 Hz voice, and silence (unvoiced)
    tones = [(_harmonic(110.0), 1), (_harmonic(240.0), 2), (torch.zeros(SR), 0)]
    for wav, want_register in tones:
        p = pitch_features(wav, 8, cfg)[2:6]
        k = torch.randint(0, 7, (4,), generator=g)
        x = clusters[k] + torch.randn(4, 96, generator=g)
        units = book.quantize(torch.cat([x, p], 1))
        assert units.tolist() == (want_register * 7 + k).tolist()
    # a voiced frame just under 160 Hz and one just over fall into the low and high registers
    for f0, want in ((150.0, 1), (172.0, 2)):
        p = pitch_features(_harmonic(f0), 8, cfg)[2:6]
        units = book.quantize(torch.cat([clusters[:1].expand(4, 96), p], 1))
        assert units.tolist() == [want * 7] * 4, f0


@pytest.mark.parametrize("bad", [{"f0_min": 0.0}, {"f0_max": 9000.0}, {"f0_min": 300.0, "f0_max": 200.0},
                                 {"scale": -1.0}, {"window": float("nan")}, {"hop": True}, {"scal": 2.0}])
def test_bad_pitch_settings_are_refused(bad):
    with pytest.raises(ValueError):
        PitchConfig.from_dict({**PitchConfig().to_dict(), **bad})


def test_encoder_with_pitch_appends_two_dims_and_its_bundle_checks_the_settings(tmp_path):
    torch.manual_seed(0)
    cfg = SpeechEmbeddingConfig(pitch=PitchConfig(scale=40.0))
    with pytest.raises(ValueError, match="hop"):
        SpeechEmbeddingConfig(pitch=PitchConfig(hop=320))
    enc = SpeechEmbeddingEncoder(cfg)
    for p in enc.parameters():
        torch.nn.init.normal_(p, std=0.05)
    assert enc.dim == 98 and SpeechEmbeddingEncoder().dim == 96
    wav = _harmonic(200.0, 1.5)
    out = enc.extract([wav])[0]
    assert out.shape == (enc.num_frames(len(wav)), 98)
    assert torch.equal(out[:, 96:], pitch_features(wav, out.shape[0], cfg.pitch))
    plain = SpeechEmbeddingEncoder()
    plain.load_state_dict({k: v for k, v in enc.state_dict().items() if k != "pitch_config"})
    assert torch.equal(out[:, :96], plain.extract([wav])[0])  # the embedding itself is unchanged

    lm_cfg = UnitLMConfig(vocab_size=24, embed_dim=32, ffn_dim=64, layers=2, heads=4, max_positions=256)
    fp = save_bundle(tmp_path / "b", kind="gslm", name="se-pitch", encoder_cfg=cfg, encoder_state=enc.state_dict(),
                     centroids=torch.randn(20, 98), lm_cfg=lm_cfg, lm_state=UnitLM(lm_cfg).state_dict(),
                     dictionary=natural_dictionary(20))
    bb = Backbone.load(tmp_path / "b")
    assert bb.fingerprint == fp and bb.encoder.cfg.pitch == cfg.pitch and bb.info()["encoder"]["dim"] == 98
    assert bb.info()["encoder"]["pitch"] == cfg.pitch.to_dict()  # GET /v1/backbone shows the pitch stream
    assert torch.equal(bb.encoder.extract([wav])[0], out)
    # editing the settings in backbone.json (not fingerprinted) is caught against the weights (fingerprinted)
    meta = json.loads((tmp_path / "b" / "backbone.json").read_text())
    meta["encoder"]["pitch"]["scale"] = 80.0
    (tmp_path / "b" / "backbone.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="pitch"):
        Backbone.load(tmp_path / "b")
    meta["encoder"]["pitch"]["scale"] = "loud"
    (tmp_path / "b" / "backbone.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="finite number"):
        Backbone.load(tmp_path / "b")
    del meta["encoder"]["pitch"]
    (tmp_path / "b" / "backbone.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="has a pitch stream .pitch_config. but backbone.json has no encoder.pitch"):
        Backbone.load(tmp_path / "b")


def test_real_voices_fall_on_either_side_of_the_reference():
    """A real female voice (alsa test recording; test set, never trained on) has a median F0 above 160 Hz."""
    import soundfile as sf
    import soxr

    wav, sr = sf.read("/usr/share/sounds/alsa/Front_Center.wav", dtype="float32")
    x = torch.from_numpy(soxr.resample(wav, sr, SR).astype(np.float32))
    est, voiced = yin(frame_segments(x, len(x) // CFG.hop, CFG), CFG)
    assert voiced.sum() >= 3 and 165.0 < est[voiced].median().item() < 300.0

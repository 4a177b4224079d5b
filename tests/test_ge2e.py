"""GE2E speaker embedding (speechprompt/ge2e.py) against Resemblyzer 0.1.4's own code, its importer
(importers/ge2e.py), and the bundles that carry it as a voice prefix (voice.py ``source="ge2e"``)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from speechprompt.backbone import Backbone, natural_dictionary, save_backbone, save_bundle
from speechprompt.ge2e import GE2EEncoder, partial_slices
from speechprompt.importers import ge2e as imp
from speechprompt.unit_lm import UnitLM, UnitLMConfig
from speechprompt.voice import VoiceConfig, VoiceError, VoicePrefix
from speechprompt.whisper import WhisperConfig, WhisperEncoder
from tests.ge2e_formula import formula_state, formula_wav

REF = json.loads((Path(__file__).parent / "fixtures" / "ge2e_reference.json").read_text())


def _encoder() -> GE2EEncoder:
    enc = GE2EEncoder()
    enc.load_state_dict({k: torch.from_numpy(v) for k, v in formula_state().items()})
    return enc.eval()


@pytest.mark.parametrize("n", [9000, 36800])
def test_mel_partials_and_embedding_match_resemblyzer(n):
    """Parity with Resemblyzer's VoiceEncoder.embed_utterance and librosa's melspectrogram (the fixture was written
    by scripts/ge2e_reference.py from their code, on formula weights and a formula waveform)."""
    ref, enc, wav = REF[str(n)], _encoder(), torch.from_numpy(formula_wav(n))
    mel = enc.mel(wav)
    assert mel.shape[0] == ref["mel_frames"]
    np.testing.assert_allclose(mel[[0, 5, 40]].numpy(), np.array(ref["mel_rows_0_5_40"]), rtol=2e-4, atol=1e-7)
    assert [list(s) for s in partial_slices(n)] == ref["slices"] and len(ref["slices"]) == ref["partials"]
    got = enc.embed([wav])[0].numpy()
    np.testing.assert_allclose(got, np.array(ref["embed"]), rtol=0, atol=2e-5)
    assert abs(np.linalg.norm(got) - 1) < 1e-5 and (got >= 0).all()


def test_level_is_normalised_both_ways_and_clips_are_independent():
    enc, a, b = _encoder(), torch.from_numpy(formula_wav(20000)), torch.from_numpy(formula_wav(30000))
    both = enc.embed([a, b])
    torch.testing.assert_close(enc.embed([a * 0.01])[0], both[0], rtol=0, atol=1e-5)  # -70 dBFS in, same vector
    torch.testing.assert_close(enc.embed([a * 20])[0], both[0], rtol=0, atol=1e-5)  # louder than -30 dBFS too
    torch.testing.assert_close(enc.embed([b])[0], both[1], rtol=0, atol=0)
    assert not torch.allclose(both[0], both[1], atol=1e-3)
    assert enc.embed([]).shape == (0, 256)
    with pytest.raises(ValueError, match="1-D"):
        enc.embed([torch.zeros(2, 100)])


def test_partials_follow_resemblyzers_coverage_rule():
    # 1.6 s + 0.77 s steps: a second partial only when 75 % of it lies inside the clip
    assert partial_slices(100) == [(0, 160)]
    assert partial_slices(160 * 77 + int(0.75 * 25600)) == [(0, 160), (77, 237)]
    assert partial_slices(160 * 77 + int(0.70 * 25600)) == [(0, 160)]


def _wheel(path: Path, state: dict, extra_members: dict | None = None) -> Path:
    buf = io.BytesIO()
    torch.save({"model_state": state}, buf)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("resemblyzer/pretrained.pt", buf.getvalue())
        z.writestr("Resemblyzer-0.1.4.dist-info/LICENSE", "Apache License 2.0\n")
        for k, v in (extra_members or {}).items():
            z.writestr(k, v)
    return path


def test_importer_checks_the_digest_and_every_tensor(tmp_path, monkeypatch):
    state = {k: torch.from_numpy(v) for k, v in formula_state().items()}
    wheel = _wheel(tmp_path / "r.whl", {**state, "similarity_weight": torch.tensor([10.0]),
                                        "similarity_bias": torch.tensor([-5.0])})
    with pytest.raises(imp.GE2EImportError, match="SHA-256"):  # the real pin refuses any other file
        imp.fetch(tmp_path / "cache", wheel=wheel)
    assert not (tmp_path / "cache" / "pretrained.pt").exists()
    with zipfile.ZipFile(wheel) as z:
        digest = hashlib.sha256(z.read("resemblyzer/pretrained.pt")).hexdigest()
    monkeypatch.setattr(imp, "PRETRAINED_SHA256", digest)
    path = imp.fetch(tmp_path / "cache", wheel=wheel)
    assert (tmp_path / "cache" / "LICENSE").read_text().startswith("Apache")
    assert json.loads((tmp_path / "cache" / "source.json").read_text())["pretrained_sha256"] == digest
    sd = imp.convert(path)
    assert set(sd) == set(state) and all(torch.equal(sd[k], state[k]) for k in state)  # similarity_* dropped
    # a missing tensor, a wrong shape, and a pickled object are refused
    for bad, match in (({k: v for k, v in state.items() if k != "linear.bias"}, "missing"),
                       ({**state, "linear.bias": torch.zeros(3)}, "shape")):
        p = tmp_path / f"bad{len(match)}.pt"
        torch.save({"model_state": bad}, p)
        with pytest.raises(imp.GE2EImportError, match=match):
            imp.convert(p)
    p = tmp_path / "pickle.pt"
    torch.save({"model_state": state, "hook": Path("/x")}, p)  # not a tensor-only file: weights_only refuses
    with pytest.raises(imp.GE2EImportError, match="weights-only"):
        imp.convert(p)
    with pytest.raises(imp.GE2EImportError, match="no resemblyzer/pretrained.pt"):
        with zipfile.ZipFile(tmp_path / "empty.whl", "w") as z:
            z.writestr("x.txt", "")
        imp.fetch(tmp_path / "cache2", wheel=tmp_path / "empty.whl")


def test_ge2e_voice_settings():
    cfg = VoiceConfig(source="ge2e", layer=0, dim=256, codes=(4, 3))
    assert not cfg.reads_encoder and VoiceConfig().reads_encoder
    assert VoiceConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in (dict(layer=1, dim=256), dict(layer=0, dim=128)):
        with pytest.raises(VoiceError, match="ge2e voice has layer 0"):
            VoiceConfig(source="ge2e", codes=(2,), **bad)
    with pytest.raises(VoiceError, match="block >= 1"):
        VoiceConfig(layer=0)


def _ge2e_bundle(folder: Path) -> tuple[str, VoicePrefix]:
    torch.manual_seed(0)
    enc = WhisperEncoder(WhisperConfig.tiny(layers=2))
    cfg = VoiceConfig(source="ge2e", layer=0, dim=256, codes=(3, 2))
    vp = VoicePrefix(cfg)
    vp.ge2e.load_state_dict({k: torch.from_numpy(v) for k, v in formula_state().items()})
    for c in vp.stages():
        c.copy_(torch.nn.functional.normalize(torch.randn_like(c), dim=1))
    k = 8
    lm_cfg = UnitLMConfig(vocab_size=4 + k + 5, embed_dim=32, ffn_dim=64, layers=1, heads=4, max_positions=256)
    fp = save_bundle(folder, kind="gslm", name="ge2e-tiny", encoder_cfg=enc.cfg, encoder_state=enc.state_dict(),
                     centroids=torch.randn(k, 64), lm_cfg=lm_cfg, lm_state=UnitLM(lm_cfg).state_dict(),
                     dictionary=natural_dictionary(k + 5), voice_cfg=cfg, voice_state=vp.file_state())
    return fp, vp


def test_a_ge2e_voice_bundle_stores_float16_weights_and_serves_their_codes(tmp_path):
    fp, vp = _ge2e_bundle(tmp_path / "b")
    with safe_open(str(tmp_path / "b" / "voice.safetensors"), "pt") as f:
        assert f.get_tensor("ge2e.lstm.weight_hh_l2").dtype == torch.float16
        assert f.get_tensor("stage_0").dtype == torch.float32 and "ge2e.mel_filters" not in f.keys()
    bb = Backbone.load(tmp_path / "b")
    assert bb.fingerprint == fp and bb.num_units == 13 and bb.voice.ge2e.lstm.weight_hh_l2.dtype == torch.float32
    assert save_backbone(bb, tmp_path / "again") == fp  # float16 in, float16 back out: the same bytes
    wavs = [torch.from_numpy(formula_wav(12000)), torch.from_numpy(formula_wav(30000)) * 0.3]
    units = bb.unit_extractor().extract(wavs)
    rounded = _encoder()
    rounded.load_state_dict({k: v.half().float() for k, v in rounded.state_dict().items()})
    served = bb.voice.ge2e.embed(wavs)  # the server computes with the weights as stored (float16 values) ...
    assert torch.equal(served, rounded.embed(wavs)) and not torch.allclose(served, _encoder().embed(wavs), atol=1e-6)
    want = vp.codes(served) + 8  # ... and its codes are the prefix
    for u, w in zip(units, want, strict=True):
        assert u.units[:2].tolist() == w.tolist() and u.durations[:2].tolist() == [0, 0] and (u.units[2:] < 8).all()

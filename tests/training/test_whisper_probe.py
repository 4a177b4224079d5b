"""scripts/whisper_probe.py: the CTranslate2 weight reader, Whisper's log-mel front end and the torch encoder's
wiring (the encoder's parity with CTranslate2 on the real weights is a measurement, docs/results.md)."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
import torch

from tests.scripts import load_script


@pytest.fixture(scope="module")
def wp():
    return load_script("whisper_probe")


def write_ct2(path, variables: dict, version: int = 6) -> None:
    """A CTranslate2 model.bin as ModelSpec.save lays it out (dtype ids: 0 float32, 2 int16, 4 float16)."""
    ids = {np.dtype(np.float32): 0, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def string(s: str) -> bytes:
        return struct.pack("H", len(s) + 1) + s.encode() + b"\0"

    body = struct.pack("I", version) + string("WhisperSpec") + struct.pack("I", 3) + struct.pack("I", len(variables))
    for name, a in variables.items():
        a = np.asarray(a)
        body += string(name) + struct.pack("B", a.ndim) + b"".join(struct.pack("I", d) for d in a.shape)
        body += struct.pack("B", ids[a.dtype]) + struct.pack("I", a.nbytes) + a.tobytes()
    path.write_bytes(body + struct.pack("I", 0))


def tiny_whisper(d: int = 16, layers: int = 2, heads: int = 2, seed: int = 0) -> dict:
    """Random encoder variables of a tiny Whisper in CTranslate2's names (fp16, as the packages ship them)."""
    g = np.random.default_rng(seed)

    def r(*shape):
        return (0.2 * g.standard_normal(shape)).astype(np.float16)

    v = {"encoder/conv1/weight": r(d, 80, 3), "encoder/conv1/bias": r(d), "encoder/conv2/weight": r(d, d, 3),
         "encoder/conv2/bias": r(d), "encoder/position_encodings/encodings": r(1500, d),
         "encoder/num_heads": np.array(heads, dtype=np.int16), "encoder/layer_norm/gamma": np.ones(d, np.float16),
         "encoder/layer_norm/beta": np.zeros(d, np.float16), "decoder/embeddings/weight": r(10, d)}
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        for part in ("self_attention", "ffn"):
            v[p + f"{part}/layer_norm/gamma"] = np.ones(d, np.float16)
            v[p + f"{part}/layer_norm/beta"] = np.zeros(d, np.float16)
        v[p + "self_attention/linear_0/weight"], v[p + "self_attention/linear_0/bias"] = r(3 * d, d), r(3 * d)
        v[p + "self_attention/linear_1/weight"], v[p + "self_attention/linear_1/bias"] = r(d, d), r(d)
        v[p + "ffn/linear_0/weight"], v[p + "ffn/linear_0/bias"] = r(4 * d, d), r(4 * d)
        v[p + "ffn/linear_1/weight"], v[p + "ffn/linear_1/bias"] = r(d, 4 * d), r(d)
    return v


def test_reader_keeps_the_encoder_widens_fp16_and_refuses_other_versions(wp, tmp_path):
    v = tiny_whisper()
    write_ct2(tmp_path / "model.bin", v)
    w = wp.read_ct2(tmp_path / "model.bin")
    assert "embeddings/weight" not in w and len(w) == sum(k.startswith("encoder/") for k in v)
    assert w["conv1/weight"].dtype == torch.float32 and w["conv1/weight"].shape == (16, 80, 3)
    assert torch.equal(w["conv1/weight"], torch.from_numpy(v["encoder/conv1/weight"].astype(np.float32)))
    assert int(w["num_heads"]) == 2
    write_ct2(tmp_path / "old.bin", v, version=5)
    with pytest.raises(ValueError, match="version 5; accepted: 6"):
        wp.read_ct2(tmp_path / "old.bin")
    write_ct2(tmp_path / "int8.bin", {**v, "encoder/conv1/weight": np.ones((16, 80, 3), np.int16)})
    with pytest.raises(ValueError, match="conv1/weight has CTranslate2 dtype id 2"):  # quantised weights need scales
        wp.read_ct2(tmp_path / "int8.bin")


def test_log_mel_puts_a_tone_in_its_mel_band(wp):
    f = wp.mel_filters()
    assert f.shape == (80, 201) and (f >= 0).all()
    # values of faster-whisper's filterbank (FeatureExtractor.get_mel_filters(16000, 400, 80), librosa's Slaney mel)
    assert f[0, :3].tolist() == pytest.approx([0.0, 0.024862594, 0.0], rel=1e-6)
    assert int(f[40].argmax()) == 43 and float(f[40].max()) == pytest.approx(0.01473556574143909, rel=1e-6)
    assert float(f[79].sum()) == pytest.approx(0.024925339738858847, rel=1e-5)
    peaks = f.argmax(1)
    assert (peaks[1:] >= peaks[:-1]).all()  # bands rise in frequency
    centre = 15 * 45.245640471924965 / 81 * 200 / 3  # band 14's centre: linear part of the Slaney scale, ~559 Hz
    t = torch.arange(16000) / 16000
    lm = wp.log_mel(0.3 * torch.sin(2 * torch.pi * centre * t))
    assert lm.shape == (80, 100)
    assert int(lm.mean(1).argmax()) == 14
    assert float(lm.max() - lm.min()) <= 2.0 + 1e-6  # clipped to 8 (log10) below the maximum, then / 4


def test_encoder_shapes_residual_wiring_and_final_norm(wp, tmp_path):
    v = tiny_whisper()
    write_ct2(tmp_path / "model.bin", v)
    enc = wp._encoder_class()(wp.read_ct2(tmp_path / "model.bin"))
    assert (enc.n_layers, enc.heads) == (2, 2)
    mel = torch.randn(80, 200)
    out = enc(mel)
    assert sorted(out) == ["1", "2", "final"] and all(h.shape == (100, 16) for h in out.values())
    assert torch.allclose(out["final"].mean(1), torch.zeros(100), atol=1e-5)
    for k in list(enc.w):  # zero every block's output projections: each block passes its input through
        if k.endswith(("linear_1/weight", "linear_1/bias")):
            enc.w[k] = torch.zeros_like(enc.w[k])
    x = torch.nn.functional.gelu(torch.nn.functional.conv1d(mel[None], enc.w["conv1/weight"], enc.w["conv1/bias"],
                                                            padding=1))
    x = torch.nn.functional.gelu(torch.nn.functional.conv1d(x, enc.w["conv2/weight"], enc.w["conv2/bias"], stride=2,
                                                            padding=1))[0].T
    x = x + enc.w["position_encodings/encodings"][:100]
    assert torch.allclose(enc(mel)["2"], x, atol=1e-5)


def test_a_block_equals_multihead_attention_and_a_gelu_mlp(wp, tmp_path):
    """One block against torch's own MultiheadAttention (q, k, v from the fused linear_0) and a GELU MLP."""
    v = tiny_whisper(layers=1, seed=3)
    for k in ("self_attention", "ffn"):  # non-trivial norms
        v[f"encoder/layer_0/{k}/layer_norm/gamma"] = (1 + 0.3 * np.arange(16) / 16).astype(np.float16)
        v[f"encoder/layer_0/{k}/layer_norm/beta"] = (0.1 * np.ones(16)).astype(np.float16)
    write_ct2(tmp_path / "model.bin", v)
    enc = wp._encoder_class()(wp.read_ct2(tmp_path / "model.bin"))
    w = {k: torch.from_numpy(a.astype(np.float32)) for k, a in v.items() if a.dtype == np.float16}
    mel = torch.randn(80, 60)
    x = torch.nn.functional.gelu(torch.nn.functional.conv1d(mel[None], w["encoder/conv1/weight"],
                                                            w["encoder/conv1/bias"], padding=1))
    x = torch.nn.functional.gelu(torch.nn.functional.conv1d(x, w["encoder/conv2/weight"], w["encoder/conv2/bias"],
                                                            stride=2, padding=1))[0].T
    x = x + w["encoder/position_encodings/encodings"][:30]
    p = "encoder/layer_0/"
    mha = torch.nn.MultiheadAttention(16, 2, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(w[p + "self_attention/linear_0/weight"])
        mha.in_proj_bias.copy_(w[p + "self_attention/linear_0/bias"])
        mha.out_proj.weight.copy_(w[p + "self_attention/linear_1/weight"])
        mha.out_proj.bias.copy_(w[p + "self_attention/linear_1/bias"])
        ln1 = torch.nn.functional.layer_norm(x, (16,), w[p + "self_attention/layer_norm/gamma"],
                                             w[p + "self_attention/layer_norm/beta"], 1e-5)
        x = x + mha(ln1[None], ln1[None], ln1[None], need_weights=False)[0][0]
        ln2 = torch.nn.functional.layer_norm(x, (16,), w[p + "ffn/layer_norm/gamma"], w[p + "ffn/layer_norm/beta"],
                                             1e-5)
        h = torch.nn.functional.gelu(ln2 @ w[p + "ffn/linear_0/weight"].T + w[p + "ffn/linear_0/bias"])
        x = x + h @ w[p + "ffn/linear_1/weight"].T + w[p + "ffn/linear_1/bias"]
        assert torch.allclose(enc(mel)["1"], x, atol=1e-5)


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

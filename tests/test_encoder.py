"""HubertEncoder + fairseq importer: parity with fairseq's own HubertModel on a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from speechprompt.encoder import ClipTooShort, EncoderInputError, HubertConfig, HubertEncoder, _buckets
from speechprompt.importers.hubert import (
    HubertImportError,
    convert_state_dict,
    hubert_config_from_fairseq,
    load_fairseq_hubert,
    parse_conv_layers,
)

pytest.importorskip("fairseq")
from tests import fairseq_fixtures as fx  # noqa: E402

pytestmark = [pytest.mark.fairseq, pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")]
TOL = 1e-5
LENGTHS = [400, 401, 719, 1601, 16000, 16000 + 321]  # receptive field, +1, odd N, 1 s (T=49 odd), T=50


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(fairseq model, checkpoint path, fairseq model cfg, task cfg) of a 3-layer post-LN HuBERT."""
    torch.manual_seed(0)
    model, mcfg, tcfg, dicts = fx.build_fairseq_hubert(seed=0)
    path = fx.save_fairseq_checkpoint(tmp_path_factory.mktemp("hubert") / "hubert.pt", model, mcfg, tcfg, dicts)
    return model, path, mcfg, tcfg


def _encoder(path, layer, **kw) -> HubertEncoder:
    cfg, sd = load_fairseq_hubert(path, layer)
    enc = HubertEncoder(cfg, **kw)
    enc.load_state_dict(sd)
    return enc.eval()


def _wav(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, generator=g) + 0.02


@pytest.mark.parametrize("style", ["cfg", "dictconfig", "args"])
def test_import_config_and_keys(tiny, tmp_path, style):
    model, _, mcfg, tcfg = tiny
    path = fx.save_fairseq_checkpoint(tmp_path / f"{style}.pt", model, mcfg, tcfg, [None], style=style)
    cfg, sd = load_fairseq_hubert(path, output_layer=2)
    assert (cfg.embed_dim, cfg.layers, cfg.heads, cfg.ffn_dim) == (48, 3, 4, 64)
    assert cfg.conv_layers == ((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2
    assert (cfg.output_layer, cfg.normalize, cfg.extractor_mode, cfg.layer_norm_first) == (2, False, "default", False)
    assert "encoder.pos_conv.0.weight" in sd and not any("weight_g" in k or "weight_v" in k for k in sd)
    assert not any(k.startswith(("mask_emb", "final_proj", "label_embs", "encoder.layers.2.")) for k in sd)
    # folded weight == the weight fairseq's weight_norm pre-forward hook computes and convolves with
    model.encoder.pos_conv(torch.zeros(1, 48, 4))
    torch.testing.assert_close(sd["encoder.pos_conv.0.weight"], model.encoder.pos_conv[0].weight, rtol=0, atol=0)
    fairseq_sd = model.state_dict()
    for k, v in sd.items():
        if k in fairseq_sd:
            assert torch.equal(v, fairseq_sd[k]), k


def test_base_defaults_match_fairseq():
    from dataclasses import asdict

    from fairseq.models.hubert.hubert import HubertConfig as FairseqHubertConfig

    fairseq_defaults = {k: v for k, v in asdict(FairseqHubertConfig()).items() if k != "label_rate"}
    assert hubert_config_from_fairseq(fairseq_defaults, {"normalize": False}, 6) == HubertConfig()
    with torch.device("meta"):  # shapes only
        enc = HubertEncoder(HubertConfig())
    assert (enc.sample_rate, enc.hop_size, enc.min_samples, enc.dim, enc.output_layer) == (16000, 320, 400, 768, 6)
    assert len(enc.encoder.layers) == 6


@pytest.mark.parametrize("n", LENGTHS)
def test_single_clip_parity(tiny, n):
    model, path, _, _ = tiny
    enc = _encoder(path, 2)
    wav = _wav(n, n)
    ref = fx.fairseq_reader_features(model, wav, output_layer=2)
    (ours,) = enc.extract([wav])
    assert ours.shape == ref.shape == ((n - 400) // 320 + 1, 48)
    assert (ours - ref).abs().max().item() <= TOL


def test_batched_equals_fairseq_per_clip(tiny):
    model, path, _, _ = tiny
    enc = _encoder(path, 3)  # all layers
    wavs = [_wav(n, i) for i, n in enumerate(LENGTHS[::-1] + [5000, 400])]
    batched = enc.extract(wavs)
    for wav, ours in zip(wavs, batched, strict=True):
        ref = fx.fairseq_reader_features(model, wav, output_layer=3)
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max().item() <= TOL
        assert (ours - enc.extract([wav])[0]).abs().max().item() <= TOL  # batched == our own per-clip path


def test_reference_attention_equals_sdpa(tiny):
    _, path, _, _ = tiny
    wavs = [_wav(n, 7) for n in (16000, 3000, 401)]
    fused = _encoder(path, 3).extract(wavs)
    plain = _encoder(path, 3, attention="reference").extract(wavs)
    for a, b in zip(fused, plain, strict=True):
        assert (a - b).abs().max().item() <= TOL


def test_fairseq_pad_to_multiple_does_not_touch_real_frames(tiny):
    model, _, _, _ = tiny
    wav = _wav(16000, 3)  # 49 frames: odd -> fairseq pads one masked frame
    with_pad = fx.fairseq_reader_features(model, wav, output_layer=3)
    model.encoder.required_seq_len_multiple = 1
    try:
        without = fx.fairseq_reader_features(model, wav, output_layer=3)
    finally:
        model.encoder.required_seq_len_multiple = 2
    assert with_pad.shape[0] % 2 == 1
    assert (with_pad - without).abs().max().item() <= 1e-6


@pytest.mark.parametrize("n", [3 * 1000, 2 * 1000 + 650, 2 * 1000 + 250, 1000 + 399])
def test_chunking_matches_reader(tiny, n):
    model, path, _, _ = tiny
    enc = _encoder(path, 2, max_chunk=1000)  # tail of 250 / 399 samples: 0 frames (the real reader would crash)
    wavs = [_wav(n, 11), _wav(1777, 12)]
    outs = enc.extract(wavs)
    for wav, ours in zip(wavs, outs, strict=True):
        ref = fx.fairseq_reader_features(model, wav, output_layer=2, max_chunk=1000)
        assert ours.shape == ref.shape and ours.shape[0] == enc.num_frames(wav.numel())
        assert (ours - ref).abs().max().item() <= TOL


def test_pre_ln_layer_norm_extractor_normalize(tmp_path):
    """hubert-large-style settings: layer-norm conv blocks, pre-LN layers, waveform normalisation, conv bias."""
    model, mcfg, tcfg, dicts = fx.build_fairseq_hubert(seed=1, normalize=True, extractor_mode="layer_norm",
                                                       layer_norm_first=True, conv_bias=True)
    path = fx.save_fairseq_checkpoint(tmp_path / "large_style.pt", model, mcfg, tcfg, dicts)
    for layer in (1, 3):
        enc = _encoder(path, layer)
        assert enc.cfg.normalize and enc.cfg.layer_norm_first and enc.cfg.extractor_mode == "layer_norm"
        wavs = [_wav(n, n) for n in (401, 16000, 5555)]
        for wav, ours in zip(wavs, enc.extract(wavs), strict=True):
            ref = fx.fairseq_reader_features(model, wav, output_layer=layer, normalize=True)
            assert (ours - ref).abs().max().item() <= TOL


def test_short_and_malformed_clips(tiny):
    _, path, _, _ = tiny
    enc = _encoder(path, 1)
    with pytest.raises(ClipTooShort) as e:
        enc.extract([_wav(800, 0), _wav(399, 1)])
    assert isinstance(e.value, ValueError) and e.value.index == 1 and e.value.min_samples == 400
    assert "399 samples" in str(e.value)
    with pytest.raises(ClipTooShort):
        enc.extract([torch.zeros(0)])
    with pytest.raises(EncoderInputError):
        enc.extract([torch.zeros(2, 800)])
    assert enc.extract([]) == []
    assert [enc.num_frames(n) for n in (399, 400, 719, 720, 16000)] == [0, 1, 1, 2, 49]


def test_importer_rejects_mismatched_weights(tiny, tmp_path):
    model, path, _, _ = tiny
    cfg, _ = load_fairseq_hubert(path, 2)
    good = model.state_dict()
    missing = {k: v for k, v in good.items() if k != "encoder.layers.1.fc1.bias"}
    with pytest.raises(HubertImportError, match=r"missing \['encoder.layers.1.fc1.bias'\]"):
        convert_state_dict(cfg, missing)
    with pytest.raises(HubertImportError, match=r"unexpected \['encoder.extra'\]"):
        convert_state_dict(cfg, {**good, "encoder.extra": torch.zeros(1)})
    with pytest.raises(HubertImportError, match="unexpected.*encoder.layers.3"):  # beyond the model's 3 layers
        convert_state_dict(cfg, {**good, "encoder.layers.3.fc1.bias": torch.zeros(64)})
    with pytest.raises(HubertImportError, match="wrong shapes.*layer_norm.weight"):
        convert_state_dict(cfg, {**good, "layer_norm.weight": torch.zeros(7)})
    no_g = {k: v for k, v in good.items() if not k.endswith("weight_g")}
    with pytest.raises(HubertImportError, match="weight norm incomplete"):
        convert_state_dict(cfg, no_g)


def test_conv_spec_parser_is_not_eval():
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == HubertConfig().conv_layers
    for bad in ("__import__('os').system('true')", "[(1,2)]", "[(1,2,3)] * 'a'", "[x for x in ()]", "[(1,2,3)"):
        with pytest.raises(HubertImportError):
            parse_conv_layers(bad)


def test_config_roundtrip_and_validation():
    cfg = HubertConfig.tiny()
    assert HubertConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown HubertConfig fields"):
        HubertConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})
    with pytest.raises(ValueError, match="output_layer"):
        HubertConfig(output_layer=13)
    with pytest.raises(ValueError, match="divisible"):
        HubertConfig(embed_dim=100)
    enc = HubertEncoder(cfg).eval()
    (f,) = enc.extract([torch.randn(16000)])
    assert f.shape == (49, 32) and torch.isfinite(f).all()


def test_length_buckets_bound_padding():
    lengths = sorted([200, 198, 150, 149, 120, 51, 50, 50, 7, 1, 1], reverse=True)
    buckets = _buckets(lengths, torch.device("cpu"))
    rows = [(b.rows.start, b.rows.stop) for b in buckets]
    assert rows[0][0] == 0 and rows[-1][1] == sum(lengths)  # contiguous cover of the packed frames
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
    assert sum(b.size for b in buckets) == len(lengths) and 1 < len(buckets) < len(lengths)
    for b in buckets:
        real = b.rows.stop - b.rows.start
        assert b.size * b.max_len <= 1.25 * real
        assert (b.keep is None) == (b.size * b.max_len == real)
    with pytest.raises(ValueError, match="max_chunk"):
        HubertEncoder(HubertConfig.tiny(), max_chunk=399)


def test_importer_rejects_unsupported_configs():
    for model, msg in (({"_name": "hubert_ctc"}, "not a pretrained HuBERT"),
                       ({"_name": "wav2vec2"}, "not a pretrained HuBERT"),
                       ({"layer_type": "conformer"}, "layer_type"),
                       ({"pos_conv_depth": 5}, "pos_conv_depth")):
        with pytest.raises(HubertImportError, match=msg):
            hubert_config_from_fairseq(model, {}, 6)
    with pytest.raises(HubertImportError, match="output_layer"):
        hubert_config_from_fairseq({}, {}, 13)


_UNPICKLED = []


def _side_effect():
    _UNPICKLED.append(True)
    return 0


class _Payload:
    def __reduce__(self):
        return (_side_effect, ())


def test_importer_never_runs_pickled_code(tiny, tmp_path):
    from speechprompt.importers.checkpoint import CheckpointError

    model, _, _, _ = tiny
    path = tmp_path / "payload.pt"
    torch.save({"args": None, "cfg": {"model": {}, "task": {}}, "model": model.state_dict(), "x": _Payload()}, path)
    with pytest.raises(CheckpointError):
        load_fairseq_hubert(path, 2)
    assert _UNPICKLED == []

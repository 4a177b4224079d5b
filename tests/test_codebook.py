"""Codebook (nearest centroid) vs scikit-learn k-means, dedup invariants, and the composed UnitExtractor."""

from __future__ import annotations

import itertools

import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans, MiniBatchKMeans

from speechprompt.codebook import Codebook, CodebookImportError, dedup, load_kmeans_centroids
from speechprompt.encoder import ClipTooShort, HubertConfig, HubertEncoder
from speechprompt.units import UnitExtractor, Units


def _blobs(n: int, d: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    return (centres[rng.integers(0, k, n)] + rng.normal(0, 1.5, (n, d))).astype(np.float32)


@pytest.mark.parametrize("cls", [KMeans, MiniBatchKMeans])
def test_quantize_matches_sklearn_predict(tmp_path, cls):
    train = _blobs(800, 24, 12, seed=0)
    km = cls(n_clusters=12, n_init=1, random_state=0).fit(train)
    path = tmp_path / "km.bin"
    joblib.dump(km, path)  # the GSLM km.bin format
    centroids = load_kmeans_centroids(path)
    assert centroids.dtype == torch.float32 and tuple(centroids.shape) == (12, 24)
    cb = Codebook(centroids)
    feats = _blobs(1000, 24, 12, seed=1)
    ours = cb.quantize(torch.from_numpy(feats))
    assert ours.dtype == torch.int64 and ours.shape == (1000,)
    np.testing.assert_array_equal(ours.numpy(), km.predict(feats))
    assert len(set(ours.tolist())) > 6  # the test is not trivially one cluster


def test_quantize_is_nearest_centroid_and_first_on_ties():
    c = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    cb = Codebook(c)
    x = torch.tensor([[0.1, 0.0], [0.9, 0.1], [0.5, 0.0], [0.0, 4.0], [0.0, 2.4]])
    # brute force argmin of squared distance (numpy argmin: first index on ties)
    expect = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    assert cb.quantize(x).tolist() == expect.tolist() == [0, 1, 0, 3, 0]
    assert cb.vocab_size == 4 and cb.dim == 2
    assert cb.quantize(torch.zeros(0, 2)).shape == (0,)
    with pytest.raises(ValueError, match=r"\[T, 2\]"):
        cb.quantize(torch.zeros(3, 5))
    for bad in (torch.zeros(3), torch.zeros(0, 2), torch.tensor([[float("nan"), 0.0]])):
        with pytest.raises(ValueError):
            Codebook(bad)


def test_load_kmeans_centroids_errors(tmp_path):
    no_centres = tmp_path / "dict.bin"
    joblib.dump({"n_clusters": 3}, no_centres)
    with pytest.raises(CodebookImportError, match="without cluster_centers_"):
        load_kmeans_centroids(no_centres)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(CodebookImportError, match="cannot load"):
        load_kmeans_centroids(garbage)
    raw = tmp_path / "array.bin"
    joblib.dump(np.eye(3, 4), raw)
    assert torch.equal(load_kmeans_centroids(raw), torch.eye(3, 4))


def test_dedup_invariants():
    g = torch.Generator().manual_seed(0)
    values = torch.randint(0, 5, (60,), generator=g)
    runs = torch.randint(1, 6, (60,), generator=g)
    units = values.repeat_interleave(runs)  # [T]
    u, d = dedup(units)
    assert u.dtype == d.dtype == torch.int64
    assert int(d.sum()) == units.numel()
    assert torch.equal(u.repeat_interleave(d), units)  # lossless run-length code
    assert bool((u[1:] != u[:-1]).all()) and bool((d >= 1).all())
    # SpeechPrompt reduce_quantized (itertools.groupby) gives the same sequence
    assert u.tolist() == [k for k, _ in itertools.groupby(units.tolist())]
    assert [t.numel() for t in dedup(torch.zeros(0, dtype=torch.long))] == [0, 0]
    with pytest.raises(ValueError):
        dedup(torch.zeros(2, 3, dtype=torch.long))


@pytest.fixture(scope="module")
def extractor():
    torch.manual_seed(0)
    enc = HubertEncoder(HubertConfig.tiny()).eval()
    with torch.no_grad():  # centroids drawn from real features so that units vary
        feats = torch.cat(enc.extract([torch.randn(16000) * 0.3]))
    cb = Codebook(feats[torch.randperm(feats.shape[0])[:8]] + 0.01)
    return UnitExtractor.from_parts(enc, cb, deduplicate=True)


def test_unit_extractor_contract(extractor):
    assert (extractor.sample_rate, extractor.hop_size, extractor.vocab_size) == (16000, 320, 8)
    g = np.random.default_rng(0)
    wavs = [g.normal(0, 0.3, n).astype(np.float32) for n in (400, 7000, 16000)] + [torch.randn(3333) * 0.3]
    out = extractor.extract(wavs)
    assert all(isinstance(u, Units) for u in out) and len(out) == 4
    for w, u in zip(wavs, out, strict=True):
        assert u.frames == extractor.encoder.num_frames(len(w)) == (len(w) - 400) // 320 + 1
        assert int(u.durations.sum()) == u.frames  # invariant
        assert u.units.dtype == u.durations.dtype == torch.int64
        assert int(u.units.min()) >= 0 and int(u.units.max()) < extractor.vocab_size
    # composition: dedup(quantize(features)) per clip, batched path == clip by clip
    plain = UnitExtractor.from_parts(extractor.encoder, extractor.codebook, deduplicate=False)
    for w, u in zip(wavs, out, strict=True):
        (f,) = extractor.encoder.extract([torch.as_tensor(w)])
        frames = extractor.codebook.quantize(f)
        (p,) = plain.extract([w])
        assert torch.equal(p.units, frames) and torch.equal(p.durations, torch.ones_like(frames))
        du, dd = dedup(frames)
        assert torch.equal(u.units, du) and torch.equal(u.durations, dd)
    assert any(len(u.units) < u.frames for u in out)  # dedup did something
    with pytest.raises(ClipTooShort):
        extractor.extract([np.zeros(100, np.float32)])


def test_unit_extractor_rejects_dim_mismatch(extractor):
    with pytest.raises(ValueError, match="dim"):
        UnitExtractor.from_parts(extractor.encoder, Codebook(torch.zeros(3, 7)))


@pytest.mark.fairseq
@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_gslm_pipeline_parity_with_fairseq_and_sklearn(tmp_path):
    """fairseq HuBERT features -> sklearn predict -> groupby (GSLM speech2unit) == our UnitExtractor."""
    pytest.importorskip("fairseq")
    from speechprompt.importers.hubert import load_fairseq_hubert
    from tests import fairseq_fixtures as fx

    model, mcfg, tcfg, dicts = fx.build_fairseq_hubert(seed=3)
    cfg, sd = load_fairseq_hubert(fx.save_fairseq_checkpoint(tmp_path / "h.pt", model, mcfg, tcfg, dicts), 2)
    enc = HubertEncoder(cfg).eval()
    enc.load_state_dict(sd)
    g = torch.Generator().manual_seed(5)
    wavs = [0.3 * torch.randn(n, generator=g) for n in (16000, 9001, 401)]
    ref_feats = [fx.fairseq_reader_features(model, w, output_layer=2).numpy() for w in wavs]
    km = MiniBatchKMeans(n_clusters=6, n_init=3, random_state=0).fit(np.concatenate(ref_feats))
    joblib.dump(km, tmp_path / "km.bin")
    ex = UnitExtractor.from_parts(enc, Codebook(load_kmeans_centroids(tmp_path / "km.bin")))
    for f, u in zip(ref_feats, ex.extract(wavs), strict=True):
        ref_units = [k for k, _ in itertools.groupby(km.predict(f).tolist())]
        assert u.units.tolist() == ref_units


def test_a_product_codebook_is_stored_as_its_factors_and_quantises_the_same(tmp_path):
    from safetensors.torch import load_file

    from speechprompt.backbone import Backbone, BundleError, natural_dictionary, save_backbone, save_bundle
    from speechprompt.unit_lm import UnitLM, UnitLMConfig
    from speechprompt.whisper import WhisperConfig, WhisperEncoder

    g = torch.Generator().manual_seed(0)
    clusters, registers = torch.randn(7, 62, generator=g), torch.tensor([[0.0, 0.0], [40.0, -20.0], [40.0, 20.0]])
    cb = Codebook.product(clusters, registers)
    for r in range(3):  # unit r * C + c = [cluster c, register r]
        for c in range(7):
            assert torch.equal(cb.centroids[r * 7 + c], torch.cat([clusters[c], registers[r]]))
    assert cb.vocab_size == 21 and set(cb.file_state()) == {"clusters", "registers"}
    assert torch.equal(Codebook.from_file(cb.file_state()).centroids, cb.centroids)
    assert set(Codebook(cb.centroids).file_state()) == {"centroids"}
    with pytest.raises(ValueError, match="do not expand"):
        Codebook(cb.centroids, (clusters, registers[:2]))
    with pytest.raises(ValueError, match="accepted: centroids, or clusters"):
        Codebook.from_file({"clusters": clusters})

    enc = WhisperEncoder(WhisperConfig.tiny(layers=1))
    enc_cfg, enc_state = enc.cfg, enc.state_dict()
    lm_cfg = UnitLMConfig(vocab_size=25, embed_dim=16, ffn_dim=32, layers=1, heads=2, max_positions=64)
    common = dict(kind="gslm", name="p", encoder_cfg=enc_cfg, encoder_state=enc_state, centroids=cb.centroids,
                  lm_cfg=lm_cfg, lm_state=UnitLM(lm_cfg).state_dict(), dictionary=natural_dictionary(21))
    fp_full = save_bundle(tmp_path / "full", **common)
    fp = save_bundle(tmp_path / "compact", **common, codebook_state=cb.file_state())
    full, compact = tmp_path / "full" / "codebook.safetensors", tmp_path / "compact" / "codebook.safetensors"
    assert fp != fp_full and compact.stat().st_size < full.stat().st_size / 2
    assert set(load_file(str(compact))) == {"clusters", "registers"}
    bb = Backbone.load(tmp_path / "compact")
    assert torch.equal(bb.codebook.centroids, cb.centroids) and bb.spec.codebook_size == 21
    feats = torch.randn(50, 64, generator=g) * 3 + torch.tensor([0.0] * 62 + [30.0, 0.0])
    assert torch.equal(bb.codebook.quantize(feats), Backbone.load(tmp_path / "full").codebook.quantize(feats))
    assert save_backbone(bb, tmp_path / "again") == fp  # re-saved as factors: the same fingerprint
    with pytest.raises(ValueError, match="does not expand"):
        save_bundle(tmp_path / "bad", **{**common, "centroids": cb.centroids + 1}, codebook_state=cb.file_state())
    from safetensors.torch import save_file
    save_file({"clusters": clusters}, str(compact))
    with pytest.raises(BundleError, match="accepted: centroids"):
        Backbone.load(tmp_path / "compact", verify=False)

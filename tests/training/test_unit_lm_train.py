"""The unit LM trainer's factored embedding for product codebooks (build-default --factored-lm)."""

from types import SimpleNamespace

import pytest
import torch

from speechprompt.training.unit_lm_train import FactoredEmbedding, init_fairseq_, train_unit_lm
from speechprompt.unit_lm import UnitLM, UnitLMConfig

K, R = 6, 3  # clusters x pitch registers: units r*K + k


def _cfg(vocab: int) -> SimpleNamespace:
    lm = UnitLMConfig(vocab_size=vocab, embed_dim=16, ffn_dim=32, layers=1, heads=2, max_positions=256)
    return SimpleNamespace(seed=3, lm=lm, lm_lr=5e-3, lm_batch_tokens=200, lm_epochs=3)


def _data(n: int, seed: int) -> list[torch.Tensor]:
    """Sequences whose cluster follows a cycle and whose register wanders: learnable, with every unit present."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = (torch.arange(12) + int(torch.randint(K, (1,), generator=g))) % K
        r = torch.randint(R, (12,), generator=g)
        out.append(r * K + k)
    return out


def _register_offsets(w: torch.Tensor) -> torch.Tensor:
    """``[R, K, d]``: each unit's row minus the row of the same cluster in register 0."""
    units = w[4:].reshape(R, K, -1)
    return units - units[:1]


def test_factored_training_leaves_a_plain_table_whose_rows_are_cluster_plus_register():
    train, valid = _data(60, 0), _data(8, 1)
    lm, hist = train_unit_lm(_cfg(4 + K * R), train, valid, lambda _m: None, factors=(K, R))
    assert not any("parametrizations" in k for k in lm.state_dict())  # the bundle's format, unchanged
    assert lm.embed_tokens.weight.shape == (4 + K * R, 16) and lm.embed_tokens.weight.requires_grad
    off = _register_offsets(lm.embed_tokens.weight.detach())
    # register r's offset is the same vector for every cluster (B[r] - B[0]), and not zero: it was trained
    assert torch.allclose(off, off[:, :1].expand_as(off), atol=1e-5)
    assert off[1:].abs().amax() > 1e-3
    assert hist["valid_loss"][-1] < hist["valid_loss"][0] and len(hist["epoch"]) == 3

    plain, _ = train_unit_lm(_cfg(4 + K * R), train, valid, lambda _m: None)
    off = _register_offsets(plain.embed_tokens.weight.detach())
    assert not torch.allclose(off, off[:, :1].expand_as(off), atol=1e-3)  # without factors each row is free


def test_factors_must_match_the_vocabulary():
    with pytest.raises(ValueError, match="6 x 4"):
        train_unit_lm(_cfg(4 + K * R), _data(4, 0), _data(2, 1), lambda _m: None, factors=(K, 4))
    emb = FactoredEmbedding(torch.zeros(4 + K * R, 8), K, R)
    assert emb(torch.zeros(0)).shape == (4 + K * R, 8)


def test_centroid_features_tie_the_cluster_part_to_the_centroids():
    """With cluster features (build-default --centroid-lm) a cluster's part starts as a linear map of its standardised
    centroid: clusters with equal centroids start with equal rows, different ones apart; training keeps the table
    factored as cluster + register."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(K, 5, generator=g)
    feats[1] = feats[0]  # two clusters at one centroid
    emb = FactoredEmbedding(torch.zeros(4 + K * R, 8), K, R, cluster_features=feats)
    units = emb(torch.zeros(0))[4:].reshape(R, K, -1)
    assert torch.equal(units[:, 0], units[:, 1])
    assert (units[:, 0] - units[:, 2]).abs().amax() > 1e-3
    with pytest.raises(ValueError, match=r"cluster_features must be \[6, D\]"):
        FactoredEmbedding(torch.zeros(4 + K * R, 8), K, R, cluster_features=feats[:4])

    train, valid = _data(60, 0), _data(8, 1)
    lm, hist = train_unit_lm(_cfg(4 + K * R), train, valid, lambda _m: None, factors=(K, R, feats))
    assert not any("parametrizations" in k or "features" in k for k in lm.state_dict())
    off = _register_offsets(lm.embed_tokens.weight.detach())
    assert torch.allclose(off, off[:, :1].expand_as(off), atol=1e-5)
    assert hist["valid_loss"][-1] < hist["valid_loss"][0]


def test_initial_draws_keep_the_committed_builds_reproducible():
    """The order of the random draws is part of every build's fingerprint: untied (v5, ``1ba1637b``) the cluster part
    is drawn before the register part; tied (v6, ``86b0a52f``) the register part before the centroid map. A
    reordering rebuilt v5 with another fingerprint once (2026-12-05); this pins both orders."""
    d, k, r = 8, 5, 3
    std = (d ** -0.5) / 2 ** 0.5
    weight = torch.zeros(4 + k * r, d)
    torch.manual_seed(7)
    untied = FactoredEmbedding(weight, k, r)
    torch.manual_seed(7)
    a, b = torch.randn(k, d) * std, torch.randn(r, d) * std
    assert torch.equal(untied.cluster.data, a) and torch.equal(untied.register.data, b)
    torch.manual_seed(7)
    tied = FactoredEmbedding(weight, k, r, cluster_features=torch.randn(k, 6, generator=torch.Generator().manual_seed(1)))
    torch.manual_seed(7)
    b, p = torch.randn(r, d) * std, torch.randn(6, d) * std / 6 ** 0.5
    assert torch.equal(tied.register.data, b) and torch.equal(tied.project.data, p) and not tied.cluster.data.any()


def test_extra_rows_after_the_units_train_as_rows_of_their_own():
    """A voice prefix's tokens (speechprompt/voice.py) sit after the product codebook's units: ``extra_tokens`` keeps
    them out of the cluster + register factoring, and they are trained (they occur in the sequences)."""
    with pytest.raises(ValueError, match=r"6 x 3 \+ 2 rows"):
        FactoredEmbedding(torch.zeros(4 + K * R, 8), K, R, extra=2)
    weight = torch.randn(4 + K * R + 2, 8, generator=torch.Generator().manual_seed(3))
    emb = FactoredEmbedding(weight, K, R, extra=2)
    assert torch.equal(emb(torch.zeros(0))[-2:], weight[-2:]) and emb(torch.zeros(0)).shape == weight.shape
    voice = [K * R, K * R + 1]
    train = [torch.cat([torch.tensor([voice[i % 2]]), u]) for i, u in enumerate(_data(60, 0))]
    valid = [torch.cat([torch.tensor([voice[0]]), u]) for u in _data(8, 1)]
    cfg = _cfg(4 + K * R + 2)
    torch.manual_seed(cfg.seed + 1)  # the trainer's own draw of the initial table
    init = init_fairseq_(UnitLM(cfg.lm)).embed_tokens.weight.detach()[-2:].clone()
    lm, hist = train_unit_lm(cfg, train, valid, lambda _m: None, factors=(K, R), extra_tokens=2)
    off = _register_offsets(lm.embed_tokens.weight.detach()[: 4 + K * R])
    assert torch.allclose(off, off[:, :1].expand_as(off), atol=1e-5)  # the units stay factored
    assert (lm.embed_tokens.weight.detach()[-2:] - init).abs().amax() > 1e-3  # the extra rows were trained
    assert hist["valid_loss"][-1] < hist["valid_loss"][0]

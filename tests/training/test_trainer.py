"""Prompt training on a tiny random backbone: loss goes down, the package is valid and serves identically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechprompt.backbone import make_random_bundle
from speechprompt.package import BackboneMismatch, read_package
from speechprompt.training.choose import pick_readout, train_best_readout
from speechprompt.training.evaluate import evaluate_package, predict
from speechprompt.training.trainer import (
    Recipe,
    TrainingError,
    fixed_verbalizer,
    raw_logits,
    score,
    train_prompts,
)

from .conftest import toy_units

LABELS = ["a", "b", "c"]


def _train(backbone, recipe: Recipe):
    train, dev = toy_units(48, 1), toy_units(15, 2)
    lm = backbone.unit_lm
    return train, dev, train_prompts(lm, "toy", LABELS, train, dev, fingerprint=backbone.fingerprint,
                                     kind=backbone.spec.kind, recipe=recipe, extra_meta={"note": "test"})


def test_few_steps_lower_the_loss_and_write_a_valid_package(backbone):
    train, dev, res = _train(backbone, Recipe(max_epochs=4, batch_size=8, patience=10))
    hist = res.history
    assert len(hist["step"]) == 24 and len(hist["dev_loss"]) == 4  # 4 epochs x 6 batches
    first, last = sum(hist["train_loss"][:6]) / 6, sum(hist["train_loss"][-6:]) / 6
    assert last < first * 0.8, (first, last)
    pkg = read_package(res.package.data)  # a reader accepts exactly what was written
    c = backbone.spec.unit_lm
    assert pkg.version == res.package.version
    assert pkg.deep_key.shape == (c.layers, 5, c.embed_dim) and pkg.verbalizer.shape == (3 + 4, c.vocab_size)
    assert pkg.meta.labels == tuple(LABELS) and pkg.meta.backbone_fingerprint == backbone.fingerprint
    t = pkg.meta.training
    assert t["recipe"]["lr"] == 5e-3 and t["recipe"]["betas"] == [0.9, 0.98] and t["recipe"]["prompt_length"] == 5
    assert t["data"] == {"train": 48, "dev": 15} and t["note"] == "test"
    assert t["trainable_params"] == 2 * c.layers * 5 * c.embed_dim + c.embed_dim + 7 * c.vocab_size
    assert t["dev"]["loss"] == pytest.approx(min(hist["dev_loss"]))  # best epoch kept


@pytest.mark.parametrize("readout", ["separator", "mean"])
def test_serving_path_equals_training_forward(backbone, readout):
    """PromptBank (server) and prompted_class_logits (trainer) give the same probabilities, for either read-out."""
    train, dev, res = _train(backbone, Recipe(max_epochs=1, batch_size=16, readout=readout))
    from speechprompt.training.trainer import PromptParams

    assert res.package.meta.readout == readout
    assert res.package.meta.training["recipe"].get("readout", "separator") == readout
    params = PromptParams(backbone.unit_lm, 3, Recipe(readout=readout))
    with torch.no_grad():
        params.deep_key.copy_(res.package.deep_key)
        params.deep_value.copy_(res.package.deep_value)
        params.separator.copy_(res.package.separator)
        params.verbalizer.copy_(res.package.verbalizer)
    p_train, _, _ = score(backbone.unit_lm, params.eval(), dev[0])
    p_serve = predict(backbone.unit_lm, res.package, dev[0])
    assert torch.allclose(p_train, torch.from_numpy(p_serve), atol=1e-5)
    other = PromptParams(backbone.unit_lm, 3, Recipe(readout="mean" if readout == "separator" else "separator"))
    other.load_state_dict(params.state_dict())
    p_other, _, _ = score(backbone.unit_lm, other.eval(), dev[0])
    assert not torch.allclose(p_other, p_train, atol=1e-3)  # the read-out is what the server applied


def test_verbalizer_only_with_mean_readout_uses_the_cached_path_exactly(backbone):
    from speechprompt.training.trainer import PromptParams

    _, dev, res = _train(backbone, Recipe(max_epochs=1, deep_prompts=False, readout="mean"))
    params = PromptParams(backbone.unit_lm, 3, Recipe(deep_prompts=False, readout="mean"))
    with torch.no_grad():
        params.verbalizer.copy_(res.package.verbalizer)
    cached = raw_logits(backbone.unit_lm, params.separator, dev[0], readout="mean")
    p_cached, _, _ = score(backbone.unit_lm, params, dev[0], raw=cached)
    p_full, _, _ = score(backbone.unit_lm, params, dev[0])
    served = torch.from_numpy(predict(backbone.unit_lm, res.package, dev[0]))
    assert torch.allclose(p_cached, p_full, atol=1e-5) and torch.allclose(p_full, served, atol=1e-5)


def test_fixed_verbalizer_maps_classes_to_most_frequent_units(backbone):
    units = [torch.tensor([5, 5, 5, 7, 7, 2]), torch.tensor([7, 9, 5])]  # counts: 5:4, 7:3, 2:1, 9:1
    vb, tokens = fixed_verbalizer(units, 3, 24)
    assert tokens == [4 + 5, 4 + 7, 4 + 2]  # ties broken by unit id (2 before 9)
    assert vb.shape == (7, 24) and torch.equal(vb.sum(1), torch.ones(7))
    assert [int(r.argmax()) for r in vb] == [0, 1, 2, 3, 9, 11, 6]
    _, _, res = _train(backbone, Recipe(max_epochs=2, verbalizer="fixed"))
    assert res.package.meta.training["fixed_verbalizer_tokens"] == [int(r.argmax()) for r in res.package.verbalizer[4:]]
    assert res.trainable_params == 2 * backbone.spec.unit_lm.layers * 5 * 32 + 32  # no verbalizer weights


def test_verbalizer_only_package_has_no_prompts_and_serves(backbone):
    _, dev, res = _train(backbone, Recipe(max_epochs=1, deep_prompts=False))
    pkg = read_package(res.package.data)
    assert pkg.meta.prompt_length == 0 and pkg.deep_key.shape[1] == 0
    assert torch.equal(pkg.separator, backbone.unit_lm.embed_tokens.weight[0])  # the LM's own <s>
    served = predict(backbone.unit_lm, pkg, dev[0])
    assert served.shape == (15, 3)
    from speechprompt.training.trainer import PromptParams

    params = PromptParams(backbone.unit_lm, 3, Recipe(deep_prompts=False))
    with torch.no_grad():
        params.verbalizer.copy_(pkg.verbalizer)
    cached = raw_logits(backbone.unit_lm, params.separator, dev[0])  # the fast training path
    p_cached, _, _ = score(backbone.unit_lm, params, dev[0], raw=cached)
    p_full, _, _ = score(backbone.unit_lm, params, dev[0])
    assert torch.allclose(p_cached, p_full, atol=1e-5) and torch.allclose(p_full, torch.from_numpy(served), atol=1e-5)


def test_package_for_another_backbone_is_refused(backbone, tmp_path):
    from speechprompt.backbone import Backbone

    _, dev, res = _train(backbone, Recipe(max_epochs=1))
    make_random_bundle(tmp_path / "other", seed=1)
    other = Backbone.load(tmp_path / "other")
    with pytest.raises(BackboneMismatch) as e:
        evaluate_package(other, res.package, dev[0], [LABELS[y] for y in dev[1]])
    assert backbone.fingerprint[:16] in str(e.value) and other.fingerprint[:16] in str(e.value)
    assert e.value.status == 409


def test_bad_options_raise(backbone):
    with pytest.raises(TrainingError):
        train_prompts(backbone.unit_lm, "t", LABELS, ([], []), toy_units(3, 0), fingerprint="x")
    with pytest.raises(TrainingError):
        _train(backbone, Recipe(verbalizer="random"))
    with pytest.raises(TrainingError, match="readout must be one of separator, mean"):
        _train(backbone, Recipe(readout="max"))


def test_best_readout_keeps_the_run_with_the_higher_dev_accuracy_and_records_both(backbone):
    """Each run equals a plain train_prompts call with that read-out; the kept package is the dev winner's tensors
    (ties: lower dev loss, then the separator) and records every run's dev metrics; the test split is never seen."""
    train, dev = toy_units(48, 1), toy_units(15, 2)
    lm, recipe = backbone.unit_lm, Recipe(max_epochs=2, batch_size=16)
    plain = {r: train_prompts(lm, "toy", LABELS, train, dev, fingerprint=backbone.fingerprint,  # mean first here
                              recipe=Recipe(max_epochs=2, batch_size=16, readout=r)) for r in ("mean", "separator")}
    seen = []
    res = train_best_readout(lm, "toy", LABELS, train, dev, fingerprint=backbone.fingerprint, recipe=recipe,
                             on_readout=seen.append)
    assert seen == ["separator", "mean"]
    sel = res.package.meta.training["readout_selection"]
    assert sel["by"] == "dev accuracy" and set(sel) == {"by", "separator", "mean"}
    for r, x in plain.items():
        assert {k: v for k, v in sel[r].items() if k != "seconds"} == {**x.dev, "best_epoch": x.best_epoch}
        assert sel[r]["seconds"] > 0
    want = pick_readout({r: x.dev for r, x in plain.items()})
    pkg, ref = res.package, plain[want].package
    assert pkg.meta.readout == want and res.dev == plain[want].dev
    for name in ("deep_key", "deep_value", "separator", "verbalizer"):
        assert torch.equal(getattr(pkg, name), getattr(ref, name))
    assert read_package(pkg.data).meta.training["readout_selection"] == sel  # the file carries it
    assert abs(res.seconds - sel["separator"]["seconds"] - sel["mean"]["seconds"]) < 0.02  # the time of both runs


def test_pick_readout_prefers_accuracy_then_loss_then_the_separator():
    assert pick_readout({"separator": {"accuracy": 0.5, "loss": 0.1}, "mean": {"accuracy": 0.6, "loss": 0.9}}) == "mean"
    assert pick_readout({"mean": {"accuracy": 0.5, "loss": 0.9}, "separator": {"accuracy": 0.6, "loss": 0.1}}) \
        == "separator"
    assert pick_readout({"separator": {"accuracy": 0.6, "loss": 0.5}, "mean": {"accuracy": 0.6, "loss": 0.4}}) == "mean"
    assert pick_readout({"mean": {"accuracy": 0.6, "loss": 0.4}, "separator": {"accuracy": 0.6, "loss": 0.5}}) == "mean"
    assert pick_readout({"mean": {"accuracy": 0.6, "loss": 0.4}, "separator": {"accuracy": 0.6, "loss": 0.4}}) \
        == "separator"
    assert pick_readout({"separator": {"accuracy": 0.6, "loss": 0.4}}) == "separator"


def test_best_readout_keeps_the_mean_when_the_label_lies_early_in_the_clip(backbone):
    """Each class marked by its unit at the start only, then 40 noise units before the separator: on this tiny LM
    the mean state reads it better on dev, so the mean package (format version 2) is the one kept."""
    def early_marked(n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        units, ys = [], []
        for i in range(n):
            y = i % 3
            units.append(torch.cat([torch.full((4,), y), torch.randint(3, 20, (40,), generator=g)]))
            ys.append(y)
        return units, ys

    res = train_best_readout(backbone.unit_lm, "toy", LABELS, early_marked(48, 1), early_marked(15, 2),
                             fingerprint=backbone.fingerprint, recipe=Recipe(max_epochs=3, batch_size=16))
    sel = res.package.meta.training["readout_selection"]
    assert sel["mean"]["accuracy"] > sel["separator"]["accuracy"] + 0.1
    assert res.package.meta.readout == "mean" and res.package.meta.format_version == 2


def register_marked(n: int, seed: int, by: str):
    """20 units read as 5 clusters x 4 registers (unit r * 5 + c). ``by="cluster"``: class y is three occurrences of
    cluster y, each in a random register, among clusters 3-4 (the fold makes the mark one unit); ``by="register"``:
    class y is every unit in register y + 1, clusters random (the fold erases the mark)."""
    g = torch.Generator().manual_seed(seed)
    units, ys = [], []
    for i in range(n):
        y = i % 3
        m = int(torch.randint(8, 14, (1,), generator=g))
        if by == "cluster":
            c = torch.randint(3, 5, (m,), generator=g)
            c[torch.randperm(m, generator=g)[:3]] = y
            u = torch.randint(0, 4, (m,), generator=g) * 5 + c
        else:
            u = torch.randint(0, 5, (m,), generator=g) + (y + 1) * 5
        units.append(u)
        ys.append(y)
    return units, ys


def test_a_unit_view_trains_on_folded_units_and_serves_them_the_same_way(backbone):
    """train_prompts with a view equals training on the folded units by hand; the package names the view (format
    version 3) and the serving path folds the raw units the same way."""
    from speechprompt.unit_views import UnitView

    view = UnitView(5, 4)
    train, dev = register_marked(48, 1, "cluster"), register_marked(15, 2, "cluster")
    lm, recipe = backbone.unit_lm, Recipe(max_epochs=2, batch_size=16)
    res = train_prompts(lm, "toy", LABELS, train, dev, fingerprint=backbone.fingerprint, recipe=recipe, unit_view=view)
    fold = lambda split: ([view.apply(u) for u in split[0]], split[1])  # noqa: E731
    by_hand = train_prompts(lm, "toy", LABELS, fold(train), fold(dev), fingerprint=backbone.fingerprint, recipe=recipe)
    for name in ("deep_key", "deep_value", "separator", "verbalizer"):
        assert torch.equal(getattr(res.package, name), getattr(by_hand.package, name))
    pkg = read_package(res.package.data)
    assert pkg.meta.view == view and pkg.meta.to_header()["format_version"] == "3" and by_hand.package.meta.view is None
    served = predict(lm, pkg, dev[0])  # raw units: the bank folds them
    assert np.allclose(served, predict(lm, by_hand.package, fold(dev)[0]), atol=1e-5)
    assert not np.allclose(served, predict(lm, by_hand.package, dev[0]), atol=1e-4)  # unfolded rows score otherwise


@pytest.mark.parametrize("by, kept", [("cluster", "clusters"), ("register", "units")])
def test_best_unit_view_keeps_the_dev_winner_and_records_both(backbone, by, kept):
    """A label carried by the cluster (registers random) is read better folded; one carried by the register alone
    is erased by the fold: the dev split picks the view each time, and the package records both runs."""
    from speechprompt.training.choose import pick_unit_view, train_best_unit_view
    from speechprompt.unit_views import UnitView

    view = UnitView(5, 4)
    train, dev = register_marked(60, 1, by), register_marked(30, 2, by)
    lm, recipe = backbone.unit_lm, Recipe(max_epochs=30, batch_size=8, lr=2e-2)
    seen = []
    res = train_best_unit_view(lm, "toy", LABELS, train, dev, view=view, fingerprint=backbone.fingerprint,
                               recipe=recipe, on_view=seen.append)
    assert seen == ["units", "clusters"]
    sel = res.package.meta.training["unit_view_selection"]
    assert set(sel) == {"by", "units", "clusters"} and sel["by"] == "dev accuracy"
    assert pick_unit_view({v: sel[v] for v in ("units", "clusters")}) == kept
    assert (res.package.meta.view is not None) == (kept == "clusters")
    assert abs(sel["clusters"]["accuracy"] - sel["units"]["accuracy"]) > 0.25  # a clear winner, not a tie
    alone = train_prompts(lm, "toy", LABELS, train, dev, fingerprint=backbone.fingerprint, recipe=recipe,
                          unit_view=view if kept == "clusters" else None)
    assert torch.equal(res.package.verbalizer, alone.package.verbalizer) and res.dev == alone.dev
    once = train_best_unit_view(lm, "toy", LABELS, train, dev, view=None, fingerprint=backbone.fingerprint,
                                recipe=recipe)  # no product codebook: one run, nothing recorded
    assert "unit_view_selection" not in once.package.meta.training and once.package.meta.view is None


def test_pick_unit_view_prefers_accuracy_then_loss_then_the_units():
    from speechprompt.training.choose import pick_unit_view

    assert pick_unit_view({"units": {"accuracy": 0.5, "loss": 0.1}, "clusters": {"accuracy": 0.6, "loss": 0.9}}) \
        == "clusters"
    assert pick_unit_view({"clusters": {"accuracy": 0.6, "loss": 0.4}, "units": {"accuracy": 0.6, "loss": 0.5}}) \
        == "clusters"
    assert pick_unit_view({"clusters": {"accuracy": 0.6, "loss": 0.4}, "units": {"accuracy": 0.6, "loss": 0.4}}) \
        == "units"

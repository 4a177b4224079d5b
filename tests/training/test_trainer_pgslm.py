"""Prompt training on a tiny random pGSLM backbone: three-stream rows, the loss goes down, the package says pgslm,
and the trainer's scores equal the serving path (PGSLMPromptBank via evaluate.predict and the server Runtime)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechprompt.package import read_package
from speechprompt.runtime import Runtime
from speechprompt.training.choose import train_best_readout
from speechprompt.training.evaluate import evaluate_package, predict
from speechprompt.training.trainer import (
    PromptParams,
    Recipe,
    TrainingError,
    raw_logits,
    score,
    train_prompts,
)

from .conftest import toy_prosody_units, toy_units

LABELS = ["a", "b", "c"]
N = 20  # units of the tiny pGSLM


def _train(bb, recipe: Recipe):
    train, dev = toy_prosody_units(48, 1), toy_prosody_units(15, 2)
    res = train_prompts(bb.unit_lm, "toy", LABELS, train, dev, fingerprint=bb.fingerprint, prosody=bb.prosody,
                        recipe=recipe)
    return train, dev, res


def _params(bb, pkg, recipe=Recipe()):
    params = PromptParams(bb.unit_lm, len(LABELS), recipe)
    with torch.no_grad():
        for name in ("deep_key", "deep_value", "separator", "verbalizer"):
            if isinstance(getattr(params, name, None), torch.nn.Parameter):
                getattr(params, name).copy_(getattr(pkg, name))
    return params.eval()


def test_few_steps_lower_the_loss_and_write_a_pgslm_package(pgslm_backbone):
    bb = pgslm_backbone
    _, _, res = _train(bb, Recipe(max_epochs=4, batch_size=8, patience=10))
    hist = res.history
    assert len(hist["step"]) == 24 and len(hist["dev_loss"]) == 4
    first, last = sum(hist["train_loss"][:6]) / 6, sum(hist["train_loss"][-6:]) / 6
    assert last < first * 0.8, (first, last)
    pkg = read_package(res.package.data)
    c = bb.spec.unit_lm
    assert pkg.meta.backbone_kind == "pgslm" and pkg.meta.backbone_fingerprint == bb.fingerprint
    assert pkg.deep_key.shape == (c.layers, 5, c.embed_dim) and pkg.verbalizer.shape == (3 + 4, N + 4)
    assert res.trainable_params == 2 * c.layers * 5 * c.embed_dim + c.embed_dim + 7 * (N + 4)
    # separator init scale = the spread of the pGSLM unit embeddings (ids 0..n-1, not GSLM's 4..)
    sep0 = PromptParams(bb.unit_lm, 3, Recipe()).separator
    assert sep0.std().item() == pytest.approx(bb.unit_lm.embed_tokens.weight[:N].std().item(), rel=0.35)


def test_trainer_scores_equal_the_serving_path(pgslm_backbone):
    bb = pgslm_backbone
    _, dev, res = _train(bb, Recipe(max_epochs=2, batch_size=16))
    params = _params(bb, res.package)
    p_train, loss, acc = score(bb.unit_lm, params, dev[0], dev[1], prosody=bb.prosody)
    p_serve = predict(bb.unit_lm, res.package, dev[0], prosody=bb.prosody)  # PGSLMPromptBank
    assert torch.allclose(p_train, torch.from_numpy(p_serve), atol=1e-5)
    rt = Runtime(bb)  # the server's runtime: package checks (fingerprint, kind) + PGSLMPromptBank
    rt.add_task("toy", res.package)
    served = np.stack(rt.classify(dev[0], ["toy"] * len(dev[0])))
    assert np.allclose(served, p_serve, atol=1e-6)
    m = evaluate_package(bb, res.package, dev[0], [LABELS[y] for y in dev[1]])
    assert m["accuracy"] == pytest.approx(acc) and m["n"] == 15
    assert m["accuracy"] == pytest.approx(float((served.argmax(1) == np.array(dev[1])).mean()))
    # the prosody streams are used: another F0 contour changes the answer
    moved = [type(p)(p.units, p.durations, p.frames, p.f0.flip(0), p.f0_stats) for p in dev[0]]
    assert not np.allclose(predict(bb.unit_lm, res.package, moved, prosody=bb.prosody), p_serve, atol=1e-4)


def test_verbalizer_only_uses_the_lms_own_eos_and_the_cached_logits(pgslm_backbone):
    bb = pgslm_backbone
    _, dev, res = _train(bb, Recipe(max_epochs=1, deep_prompts=False))
    pkg = read_package(res.package.data)
    assert pkg.meta.prompt_length == 0 and torch.equal(pkg.separator, bb.unit_lm.embed_tokens.weight[N + 2])
    params = _params(bb, pkg, Recipe(deep_prompts=False))
    cached = raw_logits(bb.unit_lm, params.separator, dev[0], prosody=bb.prosody)
    p_cached, _, _ = score(bb.unit_lm, params, dev[0], raw=cached, prosody=bb.prosody)
    p_full, _, _ = score(bb.unit_lm, params, dev[0], prosody=bb.prosody)
    served = predict(bb.unit_lm, pkg, dev[0], prosody=bb.prosody)
    assert torch.allclose(p_cached, p_full, atol=1e-5) and torch.allclose(p_full, torch.from_numpy(served), atol=1e-5)


def test_fixed_verbalizer_reads_pgslm_unit_tokens(pgslm_backbone):
    bb = pgslm_backbone
    train, _, res = _train(bb, Recipe(max_epochs=1, verbalizer="fixed"))
    counts = torch.bincount(torch.cat([p.units for p in train[0]]), minlength=N)
    top = sorted(range(N), key=lambda u: (-int(counts[u]), u))[:3]
    assert res.package.meta.training["fixed_verbalizer_tokens"] == top  # unit i is token i in a UnitDictionary
    assert [int(r.argmax()) for r in res.package.verbalizer] == [N, N + 1, N + 2, N + 3] + top


def test_pgslm_misuse_raises(pgslm_backbone, backbone):
    bb = pgslm_backbone
    train, dev = toy_prosody_units(6, 1), toy_prosody_units(3, 2)
    with pytest.raises(TrainingError, match="Prosody"):  # rows need the backbone's prosody
        train_prompts(bb.unit_lm, "t", LABELS, train, dev, fingerprint=bb.fingerprint, recipe=Recipe(max_epochs=1))
    with pytest.raises(TrainingError, match="ProsodyUnits"):  # bare unit tensors carry no prosody
        train_prompts(bb.unit_lm, "t", LABELS, toy_units(6, 1), toy_units(3, 2), fingerprint=bb.fingerprint,
                      prosody=bb.prosody, recipe=Recipe(max_epochs=1))
    with pytest.raises(TrainingError, match="kind"):
        train_prompts(bb.unit_lm, "t", LABELS, train, dev, fingerprint=bb.fingerprint, kind="gslm",
                      prosody=bb.prosody, recipe=Recipe(max_epochs=1))
    with pytest.raises(TrainingError, match="readout 'mean' is for GSLM backbones"):
        train_prompts(bb.unit_lm, "t", LABELS, train, dev, fingerprint=bb.fingerprint, prosody=bb.prosody,
                      recipe=Recipe(max_epochs=1, readout="mean"))
    from speechprompt.unit_views import UnitView

    with pytest.raises(TrainingError, match="a unit view is for GSLM backbones"):
        train_prompts(bb.unit_lm, "t", LABELS, train, dev, fingerprint=bb.fingerprint, prosody=bb.prosody,
                      recipe=Recipe(max_epochs=1), unit_view=UnitView(5, 4))
    res = train_prompts(backbone.unit_lm, "t", LABELS, toy_units(6, 1), toy_units(3, 2),
                        fingerprint=backbone.fingerprint, recipe=Recipe(max_epochs=1))
    assert res.package.meta.backbone_kind == "gslm"  # the default kind follows the LM


def test_best_readout_on_a_pgslm_backbone_trains_the_separator_once(pgslm_backbone):
    train, dev = toy_prosody_units(48, 1), toy_prosody_units(15, 2)
    seen = []
    res = train_best_readout(pgslm_backbone.unit_lm, "toy", LABELS, train, dev, fingerprint=pgslm_backbone.fingerprint,
                             prosody=pgslm_backbone.prosody, recipe=Recipe(max_epochs=1), on_readout=seen.append)
    assert seen == ["separator"] and res.package.meta.readout == "separator"
    assert set(res.package.meta.training["readout_selection"]) == {"by", "separator"}

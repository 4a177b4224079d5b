"""SpeechPrompt v2 prompting: our batched prefix-K/V forward vs the official step-by-step semantics."""

from __future__ import annotations

import pytest
import torch

from speechprompt.importers.prompt import import_prompt
from speechprompt.importers.unit_lm import convert_unit_lm
from speechprompt.package import PackageMeta, new_package
from speechprompt.prompting import PromptBank, make_rows, prompted_class_logits, read_out
from speechprompt.unit_lm import UnitLM
from tests.lm_fixtures import build_fairseq_lm, official_prompted_logits, save_like_fairseq_train, write_dict

pytestmark = pytest.mark.fairseq
K = 20  # units
FP = "f" * 64


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    write_dict(d, K)
    args, cfg, fs = build_fairseq_lm(d, ["--decoder-normalize-before"])
    c, sd = convert_unit_lm({"cfg": cfg, "model": fs.state_dict()})
    lm = UnitLM(c).eval()
    lm.load_state_dict(sd)
    return fs, lm.requires_grad_(False), d


def random_package(lm: UnitLM, task: str, n_classes: int, plen: int = 5, seed: int = 0, readout: str = "separator"):
    g = torch.Generator().manual_seed(seed)
    L, d, V = lm.cfg.layers, lm.cfg.embed_dim, lm.cfg.vocab_size
    meta = PackageMeta(task=task, labels=tuple(f"c{i}" for i in range(n_classes)), backbone_fingerprint=FP,
                       prompt_length=plen, readout=readout)
    return new_package(meta, deep_key=torch.randn(L, plen, d, generator=g), deep_value=torch.randn(L, plen, d, generator=g),
                       input_prompt=torch.randn(plen, d, generator=g), separator=torch.randn(d, generator=g),
                       verbalizer=torch.randn(n_classes + 4, V, generator=g) * 0.3)


def units(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(seed))


def official_scores(fs, pkg, u: torch.Tensor) -> torch.Tensor:
    """[C+4] at the separator position, or (readout "mean") of the mean state: the output projection is linear and
    bias-free, so the logits of the mean state are the mean of the official per-position logits."""
    tokens, _ = make_rows([u])
    logits = official_prompted_logits(fs, tokens, pkg.deep_key, pkg.deep_value, pkg.separator, pkg.input_prompt)
    return pkg.verbalizer @ (logits.mean(0) if pkg.meta.readout == "mean" else logits[-1])


@pytest.mark.parametrize("n", [1, 6, 40])
def test_matches_official_step_by_step(models, n):
    fs, lm, _ = models
    pkg = random_package(lm, "t", 5)
    u = units(n, n)
    ref = official_scores(fs, pkg, u)
    tokens, last = make_rows([u])
    for reference in (False, True):
        ours = prompted_class_logits(lm, tokens, last, pkg.deep_key[None], pkg.deep_value[None], pkg.separator[None],
                                     pkg.verbalizer[None], reference=reference)[0]
        assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    bank = PromptBank(lm)
    bank.add("t", pkg)
    probs = bank.classify([u], ["t"])[0]
    assert torch.allclose(probs, ref[4:].softmax(-1), atol=1e-5)


@pytest.mark.parametrize("n", [1, 13])
def test_mean_readout_matches_official_positions(models, n):
    fs, lm, _ = models
    pkg = random_package(lm, "m", 4, readout="mean")
    assert pkg.meta.readout == "mean"
    u = units(n, 50 + n)
    ref = official_scores(fs, pkg, u)
    assert not torch.allclose(ref, official_scores(fs, random_package(lm, "m", 4), u), atol=1e-3)  # not the separator
    tokens, last = make_rows([u])
    ours = prompted_class_logits(lm, tokens, last, pkg.deep_key[None], pkg.deep_value[None], pkg.separator[None],
                                 pkg.verbalizer[None], readout="mean")[0]
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    bank = PromptBank(lm)
    bank.add("m", pkg)
    assert torch.allclose(bank.classify([u], ["m"])[0], ref[4:].softmax(-1), atol=1e-5)
    with pytest.raises(ValueError, match="readout 'max'; accepted: separator, mean"):
        prompted_class_logits(lm, tokens, last, None, None, pkg.separator[None], pkg.verbalizer[None], readout="max")


def test_read_out_ignores_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    tokens = torch.tensor([[2, 7, 0, 1], [2, 5, 6, 0]])  # row 0 is padded (pad id 1) after its separator
    last = torch.tensor([2, 3])
    out = read_out(hidden, tokens, last, torch.tensor([True, False]))
    assert torch.equal(out[0], hidden[0, :3].mean(0))  # positions 0..2, not the pad
    assert torch.equal(out[1], hidden[1, 3])  # the separator's state
    assert torch.equal(read_out(hidden, tokens, last), hidden[[0, 1], [2, 3]])


def test_input_prompt_is_inert_under_deep_prompts(models):
    fs, lm, _ = models
    pkg = random_package(lm, "t", 3)
    u = units(9, 1)
    tokens, _ = make_rows([u])
    a = official_prompted_logits(fs, tokens, pkg.deep_key, pkg.deep_value, pkg.separator, pkg.input_prompt)
    b = official_prompted_logits(fs, tokens, pkg.deep_key, pkg.deep_value, pkg.separator, pkg.input_prompt * 0 + 7.0)
    assert torch.allclose(a, b, atol=1e-6)


def test_mixed_batch_equals_one_by_one(models):
    fs, lm, _ = models
    bank = PromptBank(lm, capacity=1)  # forces slot growth too
    pkgs = [random_package(lm, "a", 2, 5, 1), random_package(lm, "b", 7, 3, 2), random_package(lm, "c", 4, 5, 3),
            random_package(lm, "m", 3, 5, 4, readout="mean")]  # rows of both read-outs share the forward
    for p in pkgs:
        bank.add(p.meta.task, p)
    us = [units(n, i) for i, n in enumerate([3, 25, 11, 1, 8, 17, 2, 30])]
    keys = ["a", "b", "c", "c", "a", "b", "m", "m"]
    batched = bank.classify(us, keys)
    for u, k, out in zip(us, keys, batched):
        single = bank.classify([u], [k])[0]
        pkg = next(p for p in pkgs if p.meta.task == k)
        ref = official_scores(fs, pkg, u)[4:].softmax(-1)
        assert out.shape == (pkg.num_classes,)
        assert torch.allclose(out, single, atol=1e-5) and torch.allclose(out, ref, atol=1e-5)


def test_prompt_length_zero_equals_plain_lm(models):
    fs, lm, _ = models
    L, d, V = lm.cfg.layers, lm.cfg.embed_dim, lm.cfg.vocab_size
    identity_verbalizer = torch.zeros(V, V)
    identity_verbalizer[torch.arange(V), torch.arange(V)] = 1.0
    meta = PackageMeta(task="plain", labels=tuple(str(i) for i in range(V - 4)), backbone_fingerprint=FP,
                       prompt_length=0)
    sep = lm.embed_tokens.weight[0].clone()  # the LM's own <s> embedding: nothing replaced
    pkg = new_package(meta, deep_key=torch.zeros(L, 0, d), deep_value=torch.zeros(L, 0, d),
                      input_prompt=torch.zeros(0, d), separator=sep, verbalizer=identity_verbalizer)
    u = units(12, 5)
    tokens, last = make_rows([u])
    with torch.no_grad():
        plain = fs(tokens)[0][0, -1]  # fairseq's own LM, no prompts at all
    out = prompted_class_logits(lm, tokens, last, pkg.deep_key[None], pkg.deep_value[None], pkg.separator[None],
                                pkg.verbalizer[None])[0]
    assert torch.allclose(out, plain, atol=1e-5)
    bank = PromptBank(lm)
    bank.add("plain", pkg)
    bank.add("other", random_package(lm, "other", 3))  # a prompted row in the same batch must not disturb it
    probs = bank.classify([u, u], ["plain", "other"])[0]
    assert torch.allclose(probs, plain[4:].softmax(-1), atol=1e-5)


def test_official_prompt_checkpoint_import(models, tmp_path):
    fs, lm, d = models
    pkg = random_package(lm, "x", 4, seed=9)
    L = lm.cfg.layers
    official = {"decoder.prefix_embed_prompts.weight": pkg.input_prompt, "decoder.sep_embed.weight": pkg.separator[None],
                "decoder.prompt_linear_verbalizer.weight": pkg.verbalizer}
    for i in range(L):
        official[f"decoder.deep_key_embed_prompts.{i}.weight"] = pkg.deep_key[i]
        official[f"decoder.deep_value_embed_prompts.{i}.weight"] = pkg.deep_value[i]
    args, cfg, _ = build_fairseq_lm(d, ["--decoder-normalize-before"])
    path = save_like_fairseq_train(tmp_path / "checkpoint_best.pt", torch.nn.Module(), args=args, extra_model=official)
    imported = import_prompt(path, task="intent", labels=["a", "b", "c", "d"], backbone_fingerprint=FP, num_layers=L)
    u = units(15, 3)
    bank = PromptBank(lm)
    bank.add("intent", imported)
    ref = official_scores(fs, pkg, u)[4:].softmax(-1)
    assert torch.allclose(bank.classify([u], ["intent"])[0], ref, atol=1e-5)
    assert imported.meta.labels == ("a", "b", "c", "d") and imported.meta.prompt_length == 5


def test_gradients_reach_prompts_only(models):
    _, lm, _ = models
    pkg = random_package(lm, "t", 3)
    dk, dv = pkg.deep_key.clone().requires_grad_(), pkg.deep_value.clone().requires_grad_()
    sep, verb = pkg.separator.clone().requires_grad_(), pkg.verbalizer.clone().requires_grad_()
    tokens, last = make_rows([units(7, 0), units(3, 1)])
    out = prompted_class_logits(lm, tokens, last, dk[None].expand(2, -1, -1, -1), dv[None].expand(2, -1, -1, -1),
                                sep[None].expand(2, -1), verb[None].expand(2, -1, -1))
    torch.nn.functional.cross_entropy(out, torch.tensor([4, 5])).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (dk, dv, sep, verb))
    assert all(p.grad is None for p in lm.parameters())


def test_remove_and_unknown_task(models):
    _, lm, _ = models
    bank = PromptBank(lm)
    bank.add("a", random_package(lm, "a", 2))
    assert "a" in bank and bank.nbytes("a") > 0
    bank.remove("a")
    with pytest.raises(KeyError, match="not resident"):
        bank.classify([units(3, 0)], ["a"])


def test_memory_of_a_removed_task_returns_and_the_others_keep_their_answers(models):
    _, lm, _ = models
    bank = PromptBank(lm)
    small = random_package(lm, "small", 2, plen=3, seed=1)
    bank.add("small", small)
    baseline = bank.allocated_bytes()
    before = bank.classify([units(6, 1)], ["small"])[0]
    big = [random_package(lm, f"big{i}", 40, plen=400, seed=2 + i) for i in range(9)]  # also grows the slots
    for i, pkg in enumerate(big):
        bank.add(f"big{i}", pkg)
    assert bank.allocated_bytes() > 20 * baseline
    for i in range(9):
        bank.remove(f"big{i}")
    assert bank.allocated_bytes() == baseline
    torch.testing.assert_close(bank.classify([units(6, 1)], ["small"])[0], before)
    bank.add("again", random_package(lm, "again", 3, plen=4, seed=9))  # freed slots are reused
    bank.remove("small")
    assert bank.classify([units(6, 1)], ["again"])[0].shape == (3,)

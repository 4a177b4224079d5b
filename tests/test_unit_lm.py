"""Parity of our unit LM with fairseq's transformer_lm, loaded by fairseq itself from the same checkpoint."""

from __future__ import annotations

import pytest
import torch

from speechprompt.importers.checkpoint import CheckpointError, load_fairseq_checkpoint
from speechprompt.importers.unit_lm import convert_unit_lm, import_unit_lm, read_dict_txt
from speechprompt.unit_lm import UnitLM
from tests.lm_fixtures import TINY, build_fairseq_lm, fairseq_load, save_like_fairseq_train, write_dict

pytestmark = pytest.mark.fairseq
NUM_UNITS = 20


def rows(lengths: list[int], seed: int = 0) -> torch.Tensor:
    """Right-padded ``[B, T]`` rows ``[</s>, units..., <s>]`` of the given unit counts."""
    g = torch.Generator().manual_seed(seed)
    t = torch.full((len(lengths), max(lengths) + 2), 1, dtype=torch.long)
    for b, n in enumerate(lengths):
        t[b, 0] = 2
        t[b, 1:n + 1] = torch.randint(4, 4 + NUM_UNITS, (n,), generator=g)
        t[b, n + 1] = 0
    return t


def ours_from(path):
    cfg, sd = convert_unit_lm(load_fairseq_checkpoint(path))
    lm = UnitLM(cfg).eval()
    lm.load_state_dict(sd)
    return lm


VARIANTS = {
    "hydra_pre_ln": (["--decoder-normalize-before"], False),
    "hydra_post_ln_no_final": (["--no-decoder-final-norm"], False),
    "hydra_learned_pos_gelu": (["--decoder-normalize-before", "--decoder-learned-pos", "--activation-fn", "gelu"], False),
    "legacy_args_pre_ln": (["--decoder-normalize-before"], True),
    "legacy_args_post_ln": ([], True),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    write_dict(d, NUM_UNITS)
    extra, legacy = VARIANTS[request.param]
    args, cfg, model = build_fairseq_lm(d, extra)
    path = save_like_fairseq_train(d / "checkpoint_best.pt", model, cfg=None if legacy else cfg,
                                   args=args if legacy else None)
    return fairseq_load(path, d), ours_from(path), d


@pytest.mark.parametrize("lengths", [[1], [7], [33], [5, 12, 1, 30]])
def test_logits_match_fairseq(pair, lengths):
    ref_model, ours, _ = pair
    tokens = rows(lengths)
    with torch.no_grad():
        ours_logits = ours.logits(ours(tokens))
        for b, n in enumerate(lengths):  # fairseq one row at a time, unpadded
            ref = ref_model(tokens[b:b + 1, :n + 2])[0][0]
            assert torch.allclose(ours_logits[b, :n + 2], ref, atol=1e-5), (b, (ours_logits[b, :n + 2] - ref).abs().max())


def test_batched_fairseq_with_padding_matches(pair):
    ref_model, ours, _ = pair
    tokens = rows([3, 9, 6], seed=1)
    with torch.no_grad():
        ref, ours_logits = ref_model(tokens)[0], ours.logits(ours(tokens))
    real = tokens.ne(1)
    assert torch.allclose(ours_logits[real], ref[real], atol=1e-5)


def test_config_read_from_checkpoint(pair):
    ref_model, ours, _ = pair
    dec = ref_model.decoder
    assert ours.cfg.layers == len(dec.layers) and ours.cfg.embed_dim == dec.embed_dim
    assert ours.cfg.normalize_before == dec.layers[0].normalize_before
    assert (ours.layer_norm is None) == (dec.layer_norm is None)
    assert ours.cfg.learned_pos == dec.embed_positions.__class__.__name__.startswith("Learned")


def test_import_with_dictionary_order(tmp_path):
    order = list(range(NUM_UNITS))[::-1]  # frequency-sorted dict.txt whose order is not natural
    write_dict(tmp_path, NUM_UNITS, order)
    args, cfg, model = build_fairseq_lm(tmp_path, ["--decoder-normalize-before"])
    path = save_like_fairseq_train(tmp_path / "ck.pt", model, cfg=cfg)
    cfg2, sd, dictionary = import_unit_lm(path, tmp_path / "dict.txt")
    assert dictionary[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and dictionary[4:] == [str(u) for u in order]
    assert torch.equal(sd["embed_tokens.weight"], model.decoder.embed_tokens.weight)


def test_bad_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_fairseq_checkpoint(tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_fairseq_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "d.txt").write_text("0 12\nbroken\n")
    with pytest.raises(CheckpointError, match="expected"):
        read_dict_txt(tmp_path / "d.txt")


def test_unsafe_pickle_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": {}, "x": Evil()}))
    with pytest.raises(CheckpointError, match="allowed classes"):
        load_fairseq_checkpoint(tmp_path / "evil.pt")


def test_every_activation_fairseq_accepts_imports_and_matches(tmp_path):
    from fairseq import utils

    for name in utils.get_available_activation_fns():
        d = tmp_path / name
        write_dict(d, NUM_UNITS)
        _, cfg, model = build_fairseq_lm(d, ["--decoder-normalize-before", "--activation-fn", name])
        path = save_like_fairseq_train(d / "checkpoint_best.pt", model, cfg=cfg)
        ours, theirs = ours_from(path), fairseq_load(path, d)
        t = rows([9])
        with torch.no_grad():
            assert torch.allclose(ours.logits(ours(t)), theirs(t)[0], atol=1e-5), name


def test_adaptive_input_lm_is_refused_naming_the_option(tmp_path):
    write_dict(tmp_path, NUM_UNITS)
    tiny = [a for a in TINY if a != "--share-decoder-input-output-embed"]
    _, cfg, model = build_fairseq_lm(tmp_path, ["--decoder-normalize-before", "--adaptive-input",
                                                "--adaptive-input-cutoff", "10", "--adaptive-input-factor", "2"],
                                     arch_args=tiny)
    path = save_like_fairseq_train(tmp_path / "checkpoint_best.pt", model, cfg=cfg)
    with pytest.raises(CheckpointError, match="--adaptive-input") as e:
        convert_unit_lm(load_fairseq_checkpoint(path))
    assert "embed_tokens" not in str(e.value)

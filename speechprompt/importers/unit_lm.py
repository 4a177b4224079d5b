"""Convert a fairseq ``transformer_lm`` checkpoint (GSLM ``hubert100_lm/checkpoint_best.pt`` + ``dict.txt``).

Configuration comes from what the checkpoint stores (``cfg.model`` or legacy ``args``), with fairseq's
``base_lm_architecture`` defaults for absent fields (``fairseq/models/transformer_lm.py``). Keys are fairseq's
``decoder.*`` keys without the prefix; ``upgrade_state_dict_named`` semantics are applied (``decoder.version`` <= 2
means no final layer norm; a missing ``output_projection`` is the tied embedding).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor

from ..unit_lm import ACTIVATIONS, UnitLM, UnitLMConfig, state_dict_mismatch
from .checkpoint import CheckpointError, load_fairseq_checkpoint, model_config

UNSUPPORTED = ("adaptive_input", "character_embeddings", "layernorm_embedding", "cross_self_attention",
               "adaptive_softmax_cutoff", "decoder_layers_to_keep", "tie_adaptive_weights")


PADDING_WORD = re.compile(r"madeupword\d{4}")  # fairseq Dictionary.finalize(padding_factor=8) fill-ins


def is_padding_word(symbol: str) -> bool:
    """True for the ``madeupwordNNNN`` entries fairseq-preprocess adds to pad a dictionary to a multiple of 8."""
    return PADDING_WORD.fullmatch(symbol) is not None


def read_dict_txt(path: str | os.PathLike) -> list[str]:
    """fairseq ``Dictionary.load``: ``<s>, <pad>, </s>, <unk>`` then one symbol per ``"<symbol> <count>"`` line."""
    symbols = ["<s>", "<pad>", "</s>", "<unk>"]
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip().split(" ")
        if len(parts) < 2:
            raise CheckpointError(f"{path}:{n}: expected '<symbol> <count>', got {line!r}")
        symbols.append(parts[0])
    return symbols


def check_supported(model: dict) -> None:
    """Raise ``CheckpointError`` naming the first training option (``--adaptive-input``, ...) whose model this
    runtime cannot run; checked before any key is looked at, so the refusal names the cause."""
    for key in UNSUPPORTED:
        if model.get(key):
            raise CheckpointError(f"this LM was trained with --{key.replace('_', '-')} ({key}={model.get(key)!r}), "
                                  "which is not supported: only plain token embeddings and a (tied) linear output")


def unit_lm_config(model: dict, version: float, vocab_size: int) -> UnitLMConfig:
    """fairseq LM model config (already arch-resolved at training) -> ``UnitLMConfig``.

    Raises ``CheckpointError`` for features this runtime does not implement (adaptive input/softmax, ...).
    """
    g = model.get
    check_supported(model)
    if g("activation_fn", "relu") not in ACTIVATIONS:
        raise CheckpointError(f"unsupported activation_fn {g('activation_fn')!r}; accepted: {', '.join(ACTIVATIONS)}")
    dim = g("decoder_embed_dim", 512)
    if g("decoder_input_dim", dim) != dim or g("decoder_output_dim", dim) != dim:
        raise CheckpointError("decoder_input_dim/decoder_output_dim different from decoder_embed_dim is unsupported")
    # fairseq 0.12 builds from the stored value (absent -> False); fairseq <= 0.10 forced pre-LN in build_model and
    # stored the forced True in args, so both eras read the stored value. Old (no_tie_adaptive_proj) models had no
    # final norm (base_lm_architecture).
    no_final = bool(g("no_decoder_final_norm", False)) or "no_tie_adaptive_proj" in model
    if "decoder_final_norm" in model:
        no_final = not model["decoder_final_norm"]
    normalize_before = bool(g("decoder_normalize_before", False))
    max_pos = g("max_target_positions") or g("tokens_per_sample") or 1024
    return UnitLMConfig(vocab_size=vocab_size, embed_dim=dim, ffn_dim=g("decoder_ffn_embed_dim", 2048),
                        layers=g("decoder_layers", 6), heads=g("decoder_attention_heads", 8),
                        activation=str(g("activation_fn", "relu")), normalize_before=normalize_before,
                        final_norm=not no_final and version > 2, learned_pos=bool(g("decoder_learned_pos", False)),
                        no_token_positional_embeddings=bool(g("no_token_positional_embeddings", False)),
                        max_positions=int(max_pos), scale_embedding=not g("no_scale_embedding", False),
                        share_input_output_embed=bool(g("share_decoder_input_output_embed", False)))


def convert_unit_lm(state: dict, vocab_size: int | None = None) -> tuple[UnitLMConfig, dict[str, Tensor]]:
    """A loaded fairseq LM checkpoint -> (config, our state dict), every key and shape checked."""
    sd = {k[len("decoder."):]: v for k, v in state["model"].items() if k.startswith("decoder.")}
    model, _ = model_config(state)
    version = float(sd.pop("version", torch.tensor([1.0]))[0]) if "version" in sd else 1.0
    sd.pop("embed_positions._float_tensor", None)
    check_supported(model)
    if "embed_tokens.weight" not in sd:
        raise CheckpointError("checkpoint has no decoder.embed_tokens.weight")
    vocab = vocab_size or sd["embed_tokens.weight"].shape[0]
    cfg = unit_lm_config(model, version, vocab)
    out = sd.pop("output_projection.weight", None)
    if not cfg.share_input_output_embed:
        sd["output_projection.weight"] = out if out is not None else sd.pop("embed_out")
    if not cfg.final_norm:
        sd.pop("layer_norm.weight", None)
        sd.pop("layer_norm.bias", None)
    want = UnitLM(cfg).state_dict()
    if (problem := state_dict_mismatch(sd, want)) is not None:
        raise CheckpointError(f"unit LM keys do not match the configured architecture: {problem}")
    return cfg, {k: sd[k].float() for k in want}


def import_unit_lm(checkpoint: str | os.PathLike, dict_txt: str | os.PathLike
                   ) -> tuple[UnitLMConfig, dict[str, Tensor], list[str]]:
    """``checkpoint_best.pt`` + ``dict.txt`` -> (config, state dict, dictionary in its own order)."""
    dictionary = read_dict_txt(dict_txt)
    state = load_fairseq_checkpoint(checkpoint)
    cfg, sd = convert_unit_lm(state)
    if cfg.vocab_size != len(dictionary):
        raise CheckpointError(f"dict.txt gives {len(dictionary)} symbols but the embedding has {cfg.vocab_size}")
    return cfg, sd, dictionary

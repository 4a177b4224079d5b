"""Tiny fairseq ``transformer_lm`` models built and saved with fairseq's own API (as fairseq-train writes them).

Also a step-by-step reference of the official SpeechPrompt v2 prompted forward (``fairseq_usr/
transformer_prompt_decoder.py``): fairseq's own attention modules fed the replaced key/value inputs, prompt
positions kept in the sequence.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

logging.getLogger("fairseq").setLevel(logging.WARNING)
logging.getLogger("hydra").setLevel(logging.WARNING)
warnings.filterwarnings("ignore")

TINY = ["--decoder-layers", "2", "--decoder-embed-dim", "32", "--decoder-input-dim", "32",
        "--decoder-output-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "4",
        "--share-decoder-input-output-embed", "--tokens-per-sample", "256", "--sample-break-mode", "eos"]


def write_dict(folder: Path, num_units: int, order: list[int] | None = None) -> Path:
    """``dict.txt`` with units in ``order`` (default natural), counts decreasing."""
    folder.mkdir(parents=True, exist_ok=True)
    order = order if order is not None else list(range(num_units))
    p = folder / "dict.txt"
    p.write_text("".join(f"{u} {1000 - i}\n" for i, u in enumerate(order)))
    return p


BIG = ["--decoder-input-dim", "1024", "--decoder-output-dim", "1024", "--decoder-normalize-before",
       "--share-decoder-input-output-embed", "--tokens-per-sample", "3072", "--sample-break-mode", "eos"]


def build_fairseq_lm(data: Path, extra: list[str] | None = None, seed: int = 0, arch: str = "transformer_lm",
                     arch_args: list[str] | None = None):
    """(args, cfg, model) for ``--arch transformer_lm`` built through fairseq's options/tasks API."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    torch.manual_seed(seed)
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), "--task", "language_modeling", "--arch", arch,
                                                *(TINY if arch_args is None else arch_args), *(extra or [])])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    with torch.no_grad():  # non-trivial layer norms so the norms are really tested
        for n, p in model.named_parameters():
            if "layer_norm" in n:
                p.add_(torch.randn_like(p) * 0.2)
    return args, cfg, model.eval()


def save_like_fairseq_train(path: Path, model, cfg=None, args=None, extra_model: dict | None = None) -> Path:
    """Checkpoint dict as ``Trainer.state_dict`` writes it (``cfg`` hydra-era, or legacy ``args``)."""
    from fairseq import checkpoint_utils

    sd = dict(model.state_dict())
    sd.update(extra_model or {})
    state = {"args": args, "cfg": cfg, "model": sd,
             "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "Adam",
                                    "lr_scheduler_state": {"best": 1.0}, "num_updates": 10}],
             "extra_state": {"epoch": 45, "train_iterator": {"epoch": 45}}, "last_optimizer_state": None}
    if cfg is None:
        del state["cfg"]
    checkpoint_utils.torch_persistent_save(state, str(path))
    return path


def fairseq_load(path: Path, data: Path):
    """Load with fairseq's own loader (trusted test file: weights_only disabled for fairseq's torch.load)."""
    from fairseq import checkpoint_utils

    old = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides={"data": str(data)})
    finally:
        if old is None:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
    return models[0].eval()


@torch.no_grad()
def official_prompted_logits(model, tokens: torch.Tensor, deep_key: torch.Tensor, deep_value: torch.Tensor,
                             separator: torch.Tensor, input_prompt: torch.Tensor) -> torch.Tensor:
    """SpeechPrompt v2 forward, step by step as the official prompt decoder does (one row).

    tokens ``[1, T]``; deep prompts ``[L, l, d]``; separator ``[d]``; input prompt ``[l, d]`` -> logits ``[T, V]``.
    """
    dec = model.decoder
    plen = deep_key.shape[1]
    emb = dec.embed_tokens(tokens).clone()
    emb[tokens.eq(0)] = separator  # sep replaces <s> before scaling
    x = dec.embed_scale * emb + dec.embed_positions(tokens)  # positions from the original tokens
    x = torch.cat([input_prompt.unsqueeze(0), x], dim=1)  # [1, l+T, d]
    pad = torch.cat([torch.zeros(1, plen, dtype=torch.bool), tokens.eq(dec.padding_idx)], dim=1)
    x = x.transpose(0, 1)  # [l+T, 1, d]
    attn_mask = dec.buffered_future_mask(x)
    for i, layer in enumerate(dec.layers):
        residual = x
        if layer.normalize_before:
            x = layer.self_attn_layer_norm(x)
        k_in, v_in = x.clone(), x.clone()
        k_in[:plen] = deep_key[i].unsqueeze(1)
        v_in[:plen] = deep_value[i].unsqueeze(1)
        x, _ = layer.self_attn(query=x, key=k_in, value=v_in, key_padding_mask=pad if pad.any() else None,
                               attn_mask=attn_mask, need_weights=False)
        x = residual + x
        if not layer.normalize_before:
            x = layer.self_attn_layer_norm(x)
        residual = x
        if layer.normalize_before:
            x = layer.final_layer_norm(x)
        x = layer.fc2(layer.activation_fn(layer.fc1(x)))
        x = residual + x
        if not layer.normalize_before:
            x = layer.final_layer_norm(x)
    if dec.layer_norm is not None:
        x = dec.layer_norm(x)
    return dec.output_layer(x.transpose(0, 1))[0, plen:]

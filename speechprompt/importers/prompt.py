"""Convert an official SpeechPrompt v2 prompt checkpoint (``GSLM/prompt`` ``checkpoint_best.pt``) into a package.

Official keys (``fairseq_usr/transformer_prompt_decoder.py``): ``decoder.prefix_embed_prompts.weight [l, d]``,
``decoder.deep_key_embed_prompts.{i}.weight [l, d]``, ``decoder.deep_value_embed_prompts.{i}.weight [l, d]``,
``decoder.sep_embed.weight [1, d]``, ``decoder.prompt_linear_verbalizer.weight [C+4, V]``. Class i of the learnable
verbalizer is output 4+i; the labels (in that class order) are not in the checkpoint and must be given.
"""

from __future__ import annotations

import os

import torch

from ..package import NUM_SPECIAL, PackageMeta, TaskPackage, new_package
from .checkpoint import CheckpointError, load_fairseq_checkpoint


def convert_prompt_state(sd: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Official prompt keys -> package tensors (deep_key/deep_value ``[L, l, d]``, ...). Raises ``CheckpointError``."""
    sd = {k[len("decoder."):] if k.startswith("decoder.") else k: v for k, v in sd.items()}
    try:
        dk = torch.stack([sd[f"deep_key_embed_prompts.{i}.weight"] for i in range(num_layers)])
        dv = torch.stack([sd[f"deep_value_embed_prompts.{i}.weight"] for i in range(num_layers)])
        sep = sd["sep_embed.weight"].reshape(-1)
        verb = sd["prompt_linear_verbalizer.weight"]
    except KeyError as e:
        raise CheckpointError(f"not a SpeechPrompt v2 prompt checkpoint with a linear verbalizer: missing {e}") from None
    ip = sd.get("prefix_embed_prompts.weight", torch.zeros(dk.shape[1], dk.shape[2]))
    return {"deep_key": dk.float(), "deep_value": dv.float(), "input_prompt": ip.float(), "separator": sep.float(),
            "verbalizer": verb.float()}


def import_prompt(checkpoint: str | os.PathLike, *, task: str, labels: list[str], backbone_fingerprint: str,
                  num_layers: int, backbone_kind: str = "gslm") -> TaskPackage:
    """Official prompt checkpoint -> ``TaskPackage`` for the given backbone (labels in class-index order)."""
    state = load_fairseq_checkpoint(checkpoint)
    t = convert_prompt_state(state["model"], num_layers)
    if t["verbalizer"].shape[0] != len(labels) + NUM_SPECIAL:
        raise CheckpointError(f"verbalizer has {t['verbalizer'].shape[0]} outputs = C+4 with C="
                              f"{t['verbalizer'].shape[0] - NUM_SPECIAL}, but {len(labels)} labels were given")
    meta = PackageMeta(task=task, labels=tuple(labels), backbone_fingerprint=backbone_fingerprint,
                       backbone_kind=backbone_kind, prompt_length=int(t["deep_key"].shape[1]),
                       training={"source": "official SpeechPrompt v2 checkpoint", "file": os.fspath(checkpoint)})
    return new_package(meta, **t)

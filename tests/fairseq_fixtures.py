"""Tiny fairseq models built with fairseq's own classes, and checkpoints saved the way fairseq saves them.

Plain functions only (the lead may add unit-LM helpers here). Nothing here loads a checkpoint through fairseq:
fairseq's ``checkpoint_utils`` calls ``torch.load`` with torch 2.13's ``weights_only=True`` default, so the
reference models are built in-process and only OUR importer reads the files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

logging.getLogger("fairseq").setLevel(logging.WARNING)

# The real HuBERT conv kernels / strides (hop 320, 400-sample receptive field) with few channels.
TINY_CONV = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"
TINY_HUBERT = dict(conv_feature_layers=TINY_CONV, encoder_embed_dim=48, encoder_layers=3,
                   encoder_attention_heads=4, encoder_ffn_embed_dim=64, conv_pos=128, conv_pos_groups=16)


def fairseq_hubert_configs(normalize: bool = False, **model_overrides):
    """(fairseq ``HubertConfig``, ``HubertPretrainingConfig``) for a tiny HuBERT (overrides: fairseq field names)."""
    from fairseq.models.hubert.hubert import HubertConfig
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig

    fields = {**TINY_HUBERT, **model_overrides}
    model_cfg = HubertConfig(label_rate=50.0, **fields)
    model_cfg._name = "hubert"
    task_cfg = HubertPretrainingConfig(data="/unused", labels=["km"], label_rate=50.0, normalize=normalize)
    task_cfg._name = "hubert_pretraining"
    return model_cfg, task_cfg


def build_fairseq_hubert(seed: int = 0, normalize: bool = False, num_labels: int = 10, **model_overrides):
    """A random tiny fairseq ``HubertModel`` in eval mode -> (model, model_cfg, task_cfg, dictionaries).

    Every parameter (incl. layer-norm scales, zero-initialised biases and the weight-norm ``weight_g``) is
    perturbed so a mis-mapped key cannot go unnoticed.
    """
    from fairseq.data.dictionary import Dictionary
    from fairseq.models.hubert.hubert import HubertModel

    model_cfg, task_cfg = fairseq_hubert_configs(normalize, **model_overrides)
    dictionary = Dictionary()
    for i in range(num_labels):
        dictionary.add_symbol(str(i))
    torch.manual_seed(seed)
    model = HubertModel(model_cfg, task_cfg, [dictionary])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval(), model_cfg, task_cfg, [dictionary]


def save_fairseq_checkpoint(path, model, model_cfg, task_cfg, dictionaries, style: str = "cfg") -> Path:
    """Write ``model`` the way ``fairseq.trainer.Trainer.state_dict`` + ``checkpoint_utils.torch_persistent_save``
    do. ``style``: "cfg" (hydra era, ``cfg`` a plain dict as fairseq >= 0.10 stores it, like hubert_base_ls960.pt),
    "dictconfig" (``cfg`` an OmegaConf DictConfig object) or "args" (legacy argparse Namespace, ``cfg`` None).
    """
    from fairseq.checkpoint_utils import torch_persistent_save
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": OmegaConf.structured(model_cfg), "task": OmegaConf.structured(task_cfg)})
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    args = None
    if style == "args":
        flat = {**container["task"], **container["model"]}
        flat.pop("_name")
        args, container = argparse.Namespace(arch="hubert", task="hubert_pretraining", **flat), None
    elif style == "dictconfig":
        container = OmegaConf.create(container)
    elif style != "cfg":
        raise ValueError(f"unknown checkpoint style {style!r}")
    state = {
        "args": args,
        "cfg": container,
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "HubertCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {"dictionaries": dictionaries},
        "extra_state": {"metrics": {}, "previous_training_time": 0.0},
    }
    torch_persistent_save(state, str(path))
    return Path(path)


@torch.no_grad()
def fairseq_reader_features(model, wav: torch.Tensor, output_layer: int, normalize: bool = False,
                            max_chunk: int = 1_600_000) -> torch.Tensor:
    """GSLM ``HubertFeatureReader.get_feats`` by hand: ``[N] -> [T, D]`` (layer norm over the clip if
    ``normalize``, ``extract_features`` per ``max_chunk`` chunk, frames concatenated).

    Chunks shorter than 400 samples are skipped (the real reader would crash on them).
    """
    x = wav.float()
    if normalize:
        x = F.layer_norm(x, x.shape)
    x = x.view(1, -1)
    feats = []
    for start in range(0, x.size(1), max_chunk):
        chunk = x[:, start : start + max_chunk]
        if chunk.size(1) < 400:
            continue
        f, _ = model.extract_features(source=chunk, padding_mask=None, mask=False, output_layer=output_layer)
        feats.append(f)
    return torch.cat(feats, 1).squeeze(0)

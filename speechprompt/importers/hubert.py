"""Import an official fairseq HuBERT checkpoint (``hubert_base_ls960.pt`` format) as ``(HubertConfig, state_dict)``.

Import-time only, for a file the operator chose: the checkpoint is read by ``checkpoint.load_fairseq_checkpoint``
(``torch.load(weights_only=True)`` with exactly the fairseq config / dictionary classes allowed), never executed.

Conversion (fairseq ``fairseq/models/hubert/hubert.py``, ``fairseq/models/wav2vec/wav2vec2.py``):
- config from hydra-era ``cfg['model']`` / ``cfg['task']`` (``normalize``, ``sample_rate``) or legacy ``args``;
  fields absent from a legacy Namespace take fairseq ``HubertConfig`` defaults;
- ``encoder.pos_conv.0.{weight_g, weight_v}`` (``weight_norm(dim=2)``) folded into a plain
  ``encoder.pos_conv.0.weight`` with ``torch._weight_norm`` -- the op fairseq's forward uses, so the folded
  weight is bit-identical to the one fairseq convolves with;
- pretraining-only keys (``mask_emb``, ``final_proj.*``, ``label_embs_concat``, ``target_glu.*``) and
  transformer layers above ``output_layer`` dropped; every remaining key and shape checked against
  :class:`~speechprompt.encoder.HubertEncoder`.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..encoder import HubertConfig, HubertEncoder
from .checkpoint import CheckpointError, load_fairseq_checkpoint

_PRETRAIN_ONLY = re.compile(r"^(mask_emb|label_embs_concat|final_proj\..*|target_glu\..*)$")
_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.")
_POS_CONV = "encoder.pos_conv.0."
_DEFAULT_CONV = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"  # fairseq HubertConfig.conv_feature_layers


class HubertImportError(CheckpointError):
    """The checkpoint is not a HuBERT model this encoder can reproduce (config or weights)."""


def load_fairseq_hubert(path: str | os.PathLike, output_layer: int) -> tuple[HubertConfig, dict[str, Tensor]]:
    """Read a fairseq HuBERT checkpoint -> (config keeping ``output_layer`` layers, f32 state dict).

    Raises :class:`HubertImportError` (a ``CheckpointError``) naming the unsupported setting, or the missing /
    unexpected / mis-shaped keys.
    """
    state = load_fairseq_checkpoint(path)
    model_cfg, task_cfg = _configs(state)
    cfg = hubert_config_from_fairseq(model_cfg, task_cfg, output_layer)
    return cfg, convert_state_dict(cfg, state["model"])


def hubert_config_from_fairseq(model: Mapping[str, Any], task: Mapping[str, Any], output_layer: int) -> HubertConfig:
    """fairseq ``HubertConfig`` + ``HubertPretrainingConfig`` fields (plain mappings) -> our ``HubertConfig``."""
    name = model.get("_name") or model.get("arch") or "hubert"
    if not str(name).startswith("hubert") or any(t in str(name) for t in ("ctc", "seq2seq")):
        raise HubertImportError(f"model '{name}' is not a pretrained HuBERT (fine-tuned wrappers are not supported)")
    unsupported = {
        "layer_type": (model.get("layer_type", "transformer"), "transformer"),
        "pos_conv_depth": (model.get("pos_conv_depth", 1), 1),
        "conv_pos_batch_norm": (model.get("conv_pos_batch_norm", False), False),
    }
    bad = {k: v for k, (v, ok) in unsupported.items() if v != ok}
    if bad:
        raise HubertImportError(f"unsupported HuBERT settings: {bad}")
    try:
        return HubertConfig(
            conv_layers=parse_conv_layers(model.get("conv_feature_layers", _DEFAULT_CONV)),
            extractor_mode=model.get("extractor_mode", "default"),
            conv_bias=bool(model.get("conv_bias", False)),
            embed_dim=int(model.get("encoder_embed_dim", 768)),
            layers=int(model.get("encoder_layers", 12)),
            heads=int(model.get("encoder_attention_heads", 12)),
            ffn_dim=int(model.get("encoder_ffn_embed_dim", 3072)),
            activation=model.get("activation_fn", "gelu"),
            layer_norm_first=bool(model.get("layer_norm_first", False)),
            conv_pos=int(model.get("conv_pos", 128)),
            conv_pos_groups=int(model.get("conv_pos_groups", 16)),
            output_layer=int(output_layer),
            normalize=bool(task.get("normalize", False)),
            sample_rate=int(task.get("sample_rate", 16000)),
        )
    except ValueError as e:
        raise HubertImportError(str(e)) from None


def parse_conv_layers(spec: str | list) -> tuple[tuple[int, int, int], ...]:
    """fairseq ``conv_feature_layers`` string (a Python list expression fairseq ``eval``s) -> triples.

    Evaluated over a whitelist of AST nodes only: list/tuple displays, int literals, ``list + list`` and
    ``list * int``. Raises :class:`HubertImportError` on anything else.
    """
    if not isinstance(spec, str):
        return tuple(tuple(int(v) for v in c) for c in spec)

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
                return left + right
            if isinstance(node.op, ast.Mult) and isinstance(left, list) and type(right) is int:
                return left * right
        raise HubertImportError(f"cannot parse conv_feature_layers {spec!r}")

    try:
        value = ev(ast.parse(spec, mode="eval"))
    except SyntaxError:
        raise HubertImportError(f"cannot parse conv_feature_layers {spec!r}") from None
    if not isinstance(value, list) or not all(isinstance(c, tuple) and len(c) == 3 for c in value):
        raise HubertImportError(f"conv_feature_layers must be a list of (dim, kernel, stride): {spec!r}")
    return tuple(value)


def convert_state_dict(cfg: HubertConfig, fairseq_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """fairseq ``HubertModel.state_dict()`` -> ``HubertEncoder`` state dict (f32, layers < output_layer).

    Raises :class:`HubertImportError` naming missing, unexpected or mis-shaped keys.
    """
    sd = dict(fairseq_state)
    _fold_pos_conv_weight_norm(sd)
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        layer = _LAYER_KEY.match(key)
        if _PRETRAIN_ONLY.match(key) or (layer and cfg.output_layer <= int(layer.group(1)) < cfg.layers):
            continue
        out[key] = value
    with torch.device("meta"):  # shapes only, no allocation
        expected = {k: tuple(v.shape) for k, v in HubertEncoder(cfg).state_dict().items()}
    unexpected = sorted(set(out) - set(expected))
    missing = sorted(set(expected) - set(out))
    shapes = [f"{k}: {tuple(out[k].shape)} != {expected[k]}" for k in expected if k in out
              and tuple(out[k].shape) != expected[k]]
    if missing or unexpected or shapes:
        raise HubertImportError("HuBERT checkpoint does not match its config: "
                                f"missing {missing}; unexpected {unexpected}; wrong shapes {shapes}")
    return {k: out[k].detach().to(torch.float32).contiguous() for k in expected}


def _fold_pos_conv_weight_norm(sd: dict[str, Tensor]) -> None:
    """Replace weight-norm parameters of ``encoder.pos_conv.0`` (old ``weight_g/weight_v`` or new
    ``parametrizations.weight.original0/1``) by ``weight = g * v / ||v||`` (norm over all dims but 2)."""
    for g_key, v_key in (("weight_g", "weight_v"),
                         ("parametrizations.weight.original0", "parametrizations.weight.original1")):
        g, v = sd.pop(_POS_CONV + g_key, None), sd.pop(_POS_CONV + v_key, None)
        if g is None and v is None:
            continue
        if g is None or v is None:
            raise HubertImportError(f"pos_conv weight norm incomplete: need both {_POS_CONV}{g_key} and {v_key}")
        if _POS_CONV + "weight" in sd:
            raise HubertImportError("pos_conv has both a plain weight and weight-norm parameters")
        sd[_POS_CONV + "weight"] = torch._weight_norm(v.float(), g.float(), 2)


def _configs(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model cfg, task cfg) as plain dicts from hydra-era ``cfg`` or legacy ``args``."""
    if state.get("cfg") is not None:
        cfg = _plain(state["cfg"])
        if not isinstance(cfg.get("model"), Mapping):
            raise HubertImportError("checkpoint cfg has no 'model' section")
        return dict(cfg["model"]), dict(cfg.get("task") or {})
    if state.get("args") is not None:
        args = vars(state["args"])
        return dict(args), dict(args)  # legacy Namespace: model and task options side by side
    raise HubertImportError("checkpoint has neither 'cfg' nor 'args'")


def _plain(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, dict):
        return cfg
    from omegaconf import OmegaConf  # DictConfig only exists when omegaconf could unpickle it

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - unresolvable interpolations (e.g. label_rate) are not fields we read
        return OmegaConf.to_container(cfg, resolve=False)


__all__ = ["HubertImportError", "convert_state_dict", "hubert_config_from_fairseq", "load_fairseq_hubert",
           "parse_conv_layers"]

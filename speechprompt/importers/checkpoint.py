"""Reading fairseq checkpoints an operator chose, without executing arbitrary pickled code.

torch 2.13 loads with ``weights_only=True``: only tensors, containers and allow-listed classes are rebuilt. fairseq
checkpoints also hold an ``argparse.Namespace`` (legacy ``args``), OmegaConf containers (``cfg``) and, for HuBERT,
fairseq ``Dictionary`` objects in ``task_state``; exactly those classes are allowed here. This path is for files the
operator downloaded (``import-gslm``); nothing a client uploads ever reaches it.
"""

from __future__ import annotations

import argparse
import collections
import os
import typing
from pathlib import Path
from typing import Any

import torch


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not hold what the importer expects."""


def _safe_classes() -> list:
    classes: list = [argparse.Namespace, collections.OrderedDict, collections.defaultdict, typing.Any, dict, list, int,
                     float, str, bool, tuple, set]
    try:  # OmegaConf containers as pickled by fairseq's hydra-era checkpoints
        import omegaconf
        from omegaconf import base, listconfig, nodes

        classes += [omegaconf.DictConfig, omegaconf.ListConfig, base.ContainerMetadata, base.Metadata,
                    nodes.AnyNode, nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode,
                    nodes.EnumNode, listconfig.ListConfig]
    except ImportError:
        pass
    try:  # HuBERT's task_state holds fairseq dictionaries
        from fairseq.data.dictionary import Dictionary

        classes.append(Dictionary)
    except ImportError:
        pass
    return classes


def load_fairseq_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load`` a fairseq checkpoint with only the needed classes allowed. Raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_safe_classes()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unpickling refusal with its cause
        raise CheckpointError(f"cannot load {path} with the allowed classes only: {e}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a fairseq checkpoint (no 'model' state dict)")
    return state


def model_config(state: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The model's stored configuration as a plain dict, and whether it came from a legacy ``args`` Namespace."""
    if state.get("cfg") is not None:
        cfg = state["cfg"]
        model = cfg["model"] if "model" in cfg else None
        if model is None:
            raise CheckpointError("checkpoint cfg has no 'model' section")
        try:
            from omegaconf import OmegaConf

            if not isinstance(model, dict):
                model = OmegaConf.to_container(model, resolve=False)
        except ImportError:
            model = dict(model)
        return dict(model), False
    if state.get("args") is not None:
        return dict(vars(state["args"])), True
    raise CheckpointError("checkpoint has neither 'cfg' nor 'args'")

"""``prosody.safetensors``: a pGSLM bundle's prosody definition on disk (F0 bin edges and speaker statistics belong to
the backbone, so they count in its fingerprint; ``docs/pgslm.md``).

``Prosody`` -> deterministic safetensors bytes (tensors ``f0_bin_edges [bins-1]`` f64, ``speaker_f0_stats [S, 4]``
f64; metadata: format, format version, config JSON, speaker names) and back. Loading never unpickles: a file that is
not this format raises :class:`~speechprompt.prosody.ProsodyError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .package import canonical_safetensors
from .prosody import F0Summary, Prosody, ProsodyConfig, ProsodyError

PROSODY_FILE = "prosody.safetensors"
PROSODY_FORMAT_VERSION = 1
STAT_FIELDS = ("f0_mean", "f0_std", "logf0_mean", "logf0_std")


def prosody_bytes(p: Prosody) -> bytes:
    """Serialize: tensors ``f0_bin_edges [bins-1]`` f64 (discrete F0) and ``speaker_f0_stats [S, 4]`` f64
    (f0_mean, f0_std, logf0_mean, logf0_std); metadata: format, config JSON, speaker names JSON. Deterministic."""
    tensors: dict[str, Tensor] = {}
    if p.f0_bin_edges is not None:
        tensors["f0_bin_edges"] = p.f0_bin_edges.to(torch.float64).contiguous()
    names = sorted(p.speakers)
    if names:
        tensors["speaker_f0_stats"] = torch.tensor([[getattr(p.speakers[s], k) for k in STAT_FIELDS] for s in names],
                                                   dtype=torch.float64)
    meta = {"format": "speechprompt-prosody", "format_version": str(PROSODY_FORMAT_VERSION),
            "config": json.dumps(p.config.to_dict(), sort_keys=True), "speakers": json.dumps(names)}
    return canonical_safetensors(st_save(tensors, metadata=meta))


def save_prosody(p: Prosody, path: str | os.PathLike) -> None:
    """Write :func:`prosody_bytes` of ``p`` to ``path``."""
    Path(path).write_bytes(prosody_bytes(p))


def load_prosody(path: str | os.PathLike) -> Prosody:
    """Read ``prosody.safetensors``. Raises :class:`ProsodyError` if it is not a valid prosody file."""
    data = Path(path).read_bytes()
    try:
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
        tensors = st_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise ProsodyError(f"{path} is not a valid safetensors file: {e}") from None
    if meta.get("format") != "speechprompt-prosody" or int(meta.get("format_version", "0")) > PROSODY_FORMAT_VERSION:
        raise ProsodyError(f"{path} is not a supported speechprompt prosody file")
    try:
        config = ProsodyConfig.from_dict(json.loads(meta["config"]))
        names = json.loads(meta.get("speakers", "[]"))
    except (KeyError, TypeError, ValueError) as e:
        raise ProsodyError(f"{path}: malformed prosody metadata: {e!r}") from None
    table = tensors.get("speaker_f0_stats", torch.zeros(0, 4, dtype=torch.float64))
    if table.shape != (len(names), 4):
        raise ProsodyError(f"{path}: speaker_f0_stats {list(table.shape)} does not fit {len(names)} speakers")
    speakers = {s: F0Summary(*row.tolist()) for s, row in zip(names, table)}
    return Prosody(config, tensors.get("f0_bin_edges"), speakers)


__all__ = ["PROSODY_FILE", "PROSODY_FORMAT_VERSION", "load_prosody", "prosody_bytes", "save_prosody"]

"""Import the GE2E speaker encoder shipped in PyPI ``Resemblyzer`` 0.1.4 as a :class:`~speechprompt.ge2e.GE2EEncoder`
state dict (the voice prefix's ``ge2e`` source, ``voice.py``).

The wheel (Apache-2.0, Resemble AI / Corentin Jemine) holds ``resemblyzer/pretrained.pt``: a torch checkpoint (the
legacy pickle format, CUDA storages) ``{"step", "model_state": {lstm.*, linear.*, similarity_weight,
similarity_bias}, "optimizer_state"}``, trained on LibriSpeech, VoxCeleb 1 and 2 (real voices). ``fetch(dest)`` runs ``pip download`` (the package index, never a model hub; wheels only, so no
package code runs), refuses the file unless its SHA-256 is :data:`PRETRAINED_SHA256`, and keeps it with the wheel's
LICENSE; :func:`convert` reads it with ``torch.load(weights_only=True)`` (tensors only; nothing in it is executed) and
checks every name and shape. The GE2E loss's similarity scale and bias are dropped (training only).
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from ..backbone import sha256_file
from ..ge2e import GE2EEncoder
from .wheels import download_wheels

PACKAGE = "resemblyzer==0.1.4"
PRETRAINED_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"  # resemblyzer/pretrained.pt
LICENSE = "Apache-2.0 (Resemblyzer 0.1.4, PyPI; GE2E trained on LibriSpeech, VoxCeleb 1 and 2)"
TRAINING_ONLY = ("similarity_weight", "similarity_bias")


class GE2EImportError(Exception):
    """The wheel could not be fetched, ``pretrained.pt``'s SHA-256 differs, or a tensor is missing or misshapen."""


def fetch(dest: str | Path, wheel: str | Path | None = None) -> Path:
    """``dest/pretrained.pt``, taken once from the Resemblyzer wheel (``wheel``, or :data:`PACKAGE` by ``pip
    download``); also writes ``dest/LICENSE`` and ``dest/source.json``. Raises :class:`GE2EImportError` when pip fails,
    the wheel lacks the file, or its SHA-256 is not :data:`PRETRAINED_SHA256`."""
    sha256 = PRETRAINED_SHA256
    dest = Path(dest)
    out = dest / "pretrained.pt"
    if out.is_file() and sha256_file(out) == sha256:
        return out
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            wheel = download_wheels((PACKAGE,), tmp, GE2EImportError)[0]
        try:
            with zipfile.ZipFile(wheel) as z:
                names = z.namelist()
                if "resemblyzer/pretrained.pt" not in names:
                    raise GE2EImportError(f"{Path(wheel).name} has no resemblyzer/pretrained.pt")
                blob = z.read("resemblyzer/pretrained.pt")
                licence = next((z.read(n) for n in names if n.endswith(".dist-info/LICENSE")), None)
        except zipfile.BadZipFile as e:
            raise GE2EImportError(f"{wheel}: not a wheel ({e})") from None
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_bytes(blob)
    digest = sha256_file(tmp_out)
    if digest != sha256:
        tmp_out.unlink()
        raise GE2EImportError(f"resemblyzer/pretrained.pt has SHA-256 {digest}, expected {sha256}")
    if licence is not None:
        (dest / "LICENSE").write_bytes(licence)
    tmp_out.replace(out)
    (dest / "source.json").write_text(json.dumps({"package": PACKAGE, "licence": LICENSE,
                                                  "pretrained_sha256": digest}, indent=1) + "\n")
    return out


def convert(path: str | Path) -> dict[str, Tensor]:
    """``pretrained.pt`` -> the :class:`GE2EEncoder` state dict (float32). Raises :class:`GE2EImportError` for a file
    that is not a weights-only checkpoint with ``model_state``, or a missing, extra or misshapen tensor."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same refusal
        raise GE2EImportError(f"{path}: not a weights-only torch checkpoint ({type(e).__name__}: {e})") from None
    state = ck.get("model_state") if isinstance(ck, dict) else None
    if not isinstance(state, dict):
        raise GE2EImportError(f"{path}: expected a dict with 'model_state' (Resemblyzer's format)")
    want = {k: v.shape for k, v in GE2EEncoder().state_dict().items()}
    have = {k: v for k, v in state.items() if k not in TRAINING_ONLY}
    if set(have) != set(want):
        raise GE2EImportError(f"{path}: tensors differ from GE2E's; missing {sorted(set(want) - set(have))}, "
                              f"unexpected {sorted(set(have) - set(want))}")
    for k, v in have.items():
        if not isinstance(v, Tensor) or v.shape != want[k]:
            raise GE2EImportError(f"{path}: {k} has shape {tuple(getattr(v, 'shape', ()))}, expected {tuple(want[k])}")
    return {k: v.float().contiguous() for k, v in have.items()}


__all__ = ["LICENSE", "PACKAGE", "PRETRAINED_SHA256", "GE2EImportError", "convert", "fetch"]

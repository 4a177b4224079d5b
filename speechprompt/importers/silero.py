"""Import Silero VAD v6 (16 kHz) from the PyPI package ``silero-vad`` as ``SileroVAD`` weights (safetensors).

``silero-vad`` 6.2.3 (MIT, Silero Team) ships its network as ONNX graphs and TorchScript; its
``silero_vad_16k.safetensors`` holds other (older) weights than its graphs. :func:`fetch` takes the 16 kHz opset-15
graph :data:`ONNX_NAME` from the installed package (``pip install silero-vad``, the ``teachers`` extra) or, when it is
not installed, from the wheel (``pip download``: the package index, never a model hub), and refuses it unless its
SHA-256 is :data:`ONNX_SHA256`. :func:`convert` reads the graph's initializers with ``onnx`` (protobuf: nothing in the
file is executed or unpickled) and renames them to ``silero_vad.WEIGHT_NAMES``, checking every shape;
:func:`write_weights` saves them as safetensors for ``SileroVAD.load``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from ..silero_vad import SileroVAD
from ..training.manifest import replace_file
from .wheels import download_wheels

PACKAGE = "silero-vad==6.2.3"
ONNX_NAME = "silero_vad_16k_op15.onnx"
ONNX_SHA256 = "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49"
LICENSE = "MIT (Silero Team; PyPI silero-vad 6.2.3, silero_vad_16k_op15.onnx)"
# our name (silero_vad.WEIGHT_NAMES, the package's tinygrad port's) -> the ONNX graph's initializer
ONNX_NAMES = {"stft_conv.weight": "model.stft.forward_basis_buffer",
              **{f"conv{k + 1}.{p}": f"model.encoder.{k}.reparam_conv.{p}" for k in range(4) for p in ("weight", "bias")},
              **{f"lstm_cell.{p}": f"model.decoder.rnn.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
              "final_conv.weight": "model.decoder.decoder.2.weight", "final_conv.bias": "model.decoder.decoder.2.bias"}


class SileroImportError(Exception):
    """The graph could not be found or fetched, its SHA-256 differs, or an initializer is missing or misshapen."""


def installed_onnx() -> Path | None:
    """The installed ``silero_vad`` package's :data:`ONNX_NAME`, found without importing the package; None when it is
    not installed."""
    spec = importlib.util.find_spec("silero_vad")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / ONNX_NAME
        if path.is_file():
            return path
    return None


def fetch(dest: str | Path) -> Path:
    """``dest/`` :data:`ONNX_NAME`, copied from the installed package or else extracted from :data:`PACKAGE`'s wheel;
    also writes ``dest/source.json``. Raises :class:`SileroImportError` when neither has it or its SHA-256 is not
    :data:`ONNX_SHA256`."""
    dest = Path(dest)
    path = installed_onnx()
    if path is not None:
        data = path.read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            (wheel,) = download_wheels((PACKAGE,), tmp, SileroImportError)
            with zipfile.ZipFile(wheel) as z:
                names = [n for n in z.namelist() if n.endswith(f"/data/{ONNX_NAME}")]
                if not names:
                    raise SileroImportError(f"{PACKAGE}'s wheel has no {ONNX_NAME}")
                data = z.read(names[0])
    digest = hashlib.sha256(data).hexdigest()
    if digest != ONNX_SHA256:
        where = f"the installed package ({path})" if path is not None else f"{PACKAGE}'s wheel"
        raise SileroImportError(f"{ONNX_NAME} from {where} has SHA-256 {digest}, expected {ONNX_SHA256} ({PACKAGE})")
    dest.mkdir(parents=True, exist_ok=True)
    source = json.dumps({"package": PACKAGE, "file": ONNX_NAME, "licence": LICENSE, "sha256": digest}, indent=1)
    replace_file(dest / "source.json", (source + "\n").encode())
    replace_file(dest / ONNX_NAME, data)
    return dest / ONNX_NAME


def convert(onnx_path: str | Path) -> dict[str, Tensor]:
    """The graph's weights under ``silero_vad.WEIGHT_NAMES`` (f32). Raises :class:`SileroImportError` when the file is
    not an ONNX model or an initializer is missing or has another shape than ``SileroVAD``'s."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's errors vary by version
        raise SileroImportError(f"{onnx_path}: not an ONNX model ({type(e).__name__})") from None
    init = {i.name: i for i in model.graph.initializer}
    shapes = {k.replace("lstm.", "lstm_cell.").removesuffix("_l0"): tuple(v.shape)
              for k, v in SileroVAD().state_dict().items()}
    out = {}
    for ours, theirs in ONNX_NAMES.items():
        if theirs not in init:
            raise SileroImportError(f"{onnx_path}: no initializer {theirs!r}")
        try:
            w = torch.from_numpy(numpy_helper.to_array(init[theirs]).copy()).float()
        except ValueError as e:  # dims that do not match the stored data
            raise SileroImportError(f"{onnx_path}: initializer {theirs!r} cannot be read ({e})") from None
        if tuple(w.shape) != shapes[ours]:
            raise SileroImportError(f"{onnx_path}: {theirs} has shape {tuple(w.shape)}, expected {shapes[ours]}")
        out[ours] = w.contiguous()
    return out


def write_weights(onnx_path: str | Path, out: str | Path) -> Path:
    """:func:`convert` the graph and save it as safetensors at ``out`` (``manifest.replace_file``: written whole, then
    renamed)."""
    from safetensors.torch import save

    replace_file(out, save(convert(onnx_path), metadata={"source": LICENSE}))
    return Path(out)


__all__ = ["ONNX_SHA256", "PACKAGE", "SileroImportError", "convert", "fetch", "installed_onnx", "write_weights"]

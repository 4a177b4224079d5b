"""Helpers the benchmarks share (``bench_server.py``, ``bench_precision.py``): progress lines, the machine in words,
device sync, process RSS, random task prompt packages, speech-like clips and best-of-N interleaved timing."""

from __future__ import annotations

import os
import platform
import sys
import time

import loadgen
import numpy as np
import torch

from speechprompt.package import PackageMeta, TaskPackage, new_package
from speechprompt.runtime import Runtime

PROMPT_LENGTH = 5  # SpeechPrompt v2 default (gslm_reference.md)
CLASSES = 10


def log(msg: str) -> None:
    """Progress on stderr (stdout carries only the results)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at start), torch threads: "
            f"{threads}, torch {torch.__version__}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def random_package(task: str, fingerprint: str, L: int, d: int, V: int, seed: int) -> TaskPackage:
    """A task prompt package with random prompts (``[L, 5, d]``), separator and verbalizer ``[C+4, V]``."""
    g = torch.Generator().manual_seed(seed)
    meta = PackageMeta(task=task, labels=tuple(f"c{i}" for i in range(CLASSES)), backbone_fingerprint=fingerprint,
                       prompt_length=PROMPT_LENGTH)
    deep = [torch.randn(L, PROMPT_LENGTH, d, generator=g) for _ in range(2)]  # key, value prompts
    return new_package(meta, *deep, torch.randn(PROMPT_LENGTH, d, generator=g), torch.randn(d, generator=g),
                       torch.randn(CLASSES + 4, V, generator=g) * 0.05)


def lm_dims(rt: Runtime) -> tuple[int, int, int]:
    c = rt.backbone.spec.unit_lm
    return c.layers, c.embed_dim, c.vocab_size


def clip(seconds: float, seed: int) -> np.ndarray:
    """``[N]`` f32 @ 16 kHz speech-like clip (loadgen's generator)."""
    return loadgen.speech_like(seconds, seed).astype(np.float32) / 32768.0


def best_interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Warm each function once, then run them in turn ``repeats`` times; best (lowest) seconds per name.
    Interleaving + best-of keeps other load on a shared machine from favouring one side."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            best[k] = min(best[k], fn())
    return best


def encoder_words(e) -> str:
    """The dense model in words: HuBERT shapes, or speech_embedding (the default v2's, ``encoder.type``)."""
    if hasattr(e, "embed_dim"):
        return (f"HuBERT {e.layers}x{e.embed_dim} (layer {e.output_layer} read, conv {len(e.conv_layers)}x"
                f"{e.conv_layers[0][0]} ch)")
    return f"{e.type} ({len(e.layers)} conv layers, {getattr(e, 'hop_frames', e.step_frames) * e.mel_hop / e.sample_rate * 1e3:.0f} ms frames)"

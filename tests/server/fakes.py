"""A fake runtime for batcher / registry / HTTP tests: the Runtime interface with deterministic toy math.

Units: one per 20 ms frame (HuBERT frame count ``(N - 400) // 320 + 1``) from the mean of the frame's
window, then deduplicated. Class probabilities: ``softmax(verbalizer[4:] @ histogram(tokens))`` with the
row's own task verbalizer, so the answer depends on the clip AND on the task version's content.
"""

from __future__ import annotations

import io
import threading
import time
from types import SimpleNamespace

import numpy as np
import torch

from speechprompt.package import PackageMeta, check_compatible, new_package, write_package
from speechprompt.units import Units

K, L, D, PLEN = 20, 2, 8, 2
V = K + 4
FINGERPRINT = "fa4e" * 16


def fake_units(wav: np.ndarray) -> Units:
    """[N] f32 @16 kHz -> Units: frame means quantised into K bins, deduplicated."""
    n = (len(wav) - 400) // 320 + 1
    means = np.array([wav[i * 320:i * 320 + 400].mean() for i in range(n)])
    frames = np.clip(((np.tanh(means * 20) + 1) / 2 * K).astype(np.int64), 0, K - 1)
    units, counts = torch.unique_consecutive(torch.from_numpy(frames), return_counts=True)
    return Units(units, counts, n)


def fake_probs(verbalizer: np.ndarray, units) -> np.ndarray:
    """Class probabilities [C] of one row (the toy 'unit LM')."""
    units = getattr(units, "units", units)  # a Units object (what the batcher passes) or a bare tensor
    hist = np.bincount(np.asarray(units) + 4, minlength=V) / max(1, len(units))
    logits = verbalizer[4:] @ hist
    e = np.exp(logits - logits.max())
    return (e / e.sum()).astype(np.float32)


def expected_probs(pkg, data: bytes) -> np.ndarray:
    """One-by-one reference for a clip's bytes: decode, fake units, the task version's own verbalizer -> ``[C]``."""
    from speechprompt.audio import decode_audio

    return fake_probs(pkg.verbalizer.numpy().astype(np.float64), fake_units(decode_audio(data).samples).units)


class FakeRuntime:
    """Implements what the server uses of ``speechprompt.runtime.Runtime``; records every model call."""

    def __init__(self, fingerprint: str = FINGERPRINT, delay_s: float = 0.0, task_bytes: int = 1000):
        self.fingerprint = fingerprint
        self.units_key = fingerprint  # as a bundle without a level floor, in fp32 (Runtime.units_key)
        self.delay_s = delay_s
        self.task_bytes = task_bytes
        self.tasks: dict[str, np.ndarray] = {}
        self.calls: list[tuple[str, int]] = []  # ("encode", clips) / ("lm", rows) / ("add"|"remove", 1)
        self.threads: set[str] = set()
        self.fail_add: set[str] = set()  # versions whose add_task raises
        self.gate = threading.Event()
        self.gate.set()  # clear() to hold the model thread inside classify
        self.bank = SimpleNamespace(nbytes=lambda key: self.task_bytes)
        self.backbone = SimpleNamespace(
            spec=SimpleNamespace(kind="gslm"),
            info=lambda: {"kind": "gslm", "name": "fake", "fingerprint": self.fingerprint})

    def _note(self, what: str, n: int) -> None:
        self.calls.append((what, n))
        self.threads.add(threading.current_thread().name)

    def check(self, pkg) -> None:
        check_compatible(pkg, fingerprint=self.fingerprint, kind="gslm", layers=L, dim=D, vocab_size=V)

    def extract_units(self, wavs):
        self._note("encode", len(wavs))
        return [fake_units(np.asarray(w)) for w in wavs]

    def add_task(self, key: str, pkg) -> None:
        self._note("add", 1)
        self.check(pkg)
        if pkg.version in self.fail_add:
            raise RuntimeError(f"device refused {key}")
        self.tasks[key] = pkg.verbalizer.numpy().astype(np.float64)

    def unit_tokens(self):
        return torch.arange(K) + 4

    def remove_task(self, key: str) -> None:
        self._note("remove", 1)
        self.tasks.pop(key, None)

    def classify(self, units, keys):
        self._note("lm", len(keys))
        self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        missing = [k for k in keys if k not in self.tasks]
        if missing:
            raise KeyError(f"not resident: {missing}")
        return [fake_probs(self.tasks[k], u) for u, k in zip(units, keys, strict=True)]

    def rows(self) -> list[int]:
        return [n for what, n in self.calls if what == "lm"]


def make_package(task: str, labels=("yes", "no", "up"), *, winner: int | None = None, seed: int = 0,
                 fingerprint: str = FINGERPRINT, layers: int = L, dim: int = D, vocab: int = V,
                 prompt_length: int = PLEN):
    """A real task prompt package for the fake backbone; ``winner`` makes that class win for any clip."""
    g = torch.Generator().manual_seed(seed)
    verb = torch.randn(len(labels) + 4, vocab, generator=g)
    if winner is not None:
        verb[4 + winner] += 100.0
    meta = PackageMeta(task=task, labels=tuple(labels), backbone_fingerprint=fingerprint,
                       prompt_length=prompt_length, created="2024-01-01T00:00:00+00:00", training={"seed": seed})
    return new_package(meta, torch.randn(layers, prompt_length, dim, generator=g),
                       torch.randn(layers, prompt_length, dim, generator=g),
                       torch.randn(prompt_length, dim, generator=g), torch.randn(dim, generator=g), verb)


def nan_package() -> bytes:
    """A well-formed package whose verbalizer holds a NaN."""
    p = make_package("kws")
    vb = p.verbalizer.clone()
    vb[4, 0] = float("nan")
    return write_package(p.meta, deep_key=p.deep_key, deep_value=p.deep_value, input_prompt=p.input_prompt,
                         separator=p.separator, verbalizer=vb)


def torch_save_bytes() -> bytes:
    """What ``torch.save`` writes (a zip of pickles): must never be unpickled."""
    buf = io.BytesIO()
    torch.save({"deep_key": torch.zeros(2, 2, 8)}, buf)
    return buf.getvalue()

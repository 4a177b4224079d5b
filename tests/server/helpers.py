"""Small helpers the server tests share: a free loopback port, polling for a condition, a random task prompt
package."""

from __future__ import annotations

import socket
import time

import torch

from speechprompt.package import PackageMeta, new_package


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, step: float = 0.01) -> float:
    """Seconds until ``cond()`` is true; fails after ``timeout`` s."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, f"not reached within {timeout} s"
        time.sleep(step)
    return time.monotonic() - start


def make_package(task: str, seed: int, *, L: int = 2, plen: int = 2, d: int = 8, V: int = 24, C: int = 3,
                 fingerprint: str = "ab" * 32):
    """A random task prompt package (the store never checks the backbone: any fingerprint will do)."""
    g = torch.Generator().manual_seed(seed)
    meta = PackageMeta(task=task, labels=tuple(f"c{i}" for i in range(C)), backbone_fingerprint=fingerprint,
                       prompt_length=plen)
    return new_package(meta, torch.randn(L, plen, d, generator=g), torch.randn(L, plen, d, generator=g),
                       torch.randn(plen, d, generator=g), torch.randn(d, generator=g),
                       torch.randn(C + 4, V, generator=g))

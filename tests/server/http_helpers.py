"""Shared audio, headers, assertions and waits for the server tests."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import soundfile as sf

ADMIN = {"Authorization": "Bearer s3cret"}


def wav_bytes(seconds: float = 0.3, rate: int = 16000, channels: int = 1, seed: int = 0,
              fmt: str = "WAV", subtype: str | None = None) -> bytes:
    """A deterministic noisy chirp as file bytes (different seeds -> different units)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * (100 + 300 * seed % 700) * t * (1 + t)) + 0.2 * rng.standard_normal(t.size)
    data = np.stack([mono * (0.5 + 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


WAV = {"Content-Type": "audio/wav"}


def assert_problem(resp, status: int, code: str) -> dict:
    """``resp`` is an RFC 9457 problem with this status and type ``/problems/<code>``; returns its body."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["type"] == f"/problems/{code}" and body["status"] == status and body["title"] and body["detail"]
    return body


async def wait_until(cond, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)

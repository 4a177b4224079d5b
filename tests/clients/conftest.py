"""Fixtures for the client tests: a live server reached only through its base URL.

By default a fake server (``fake_server.py``, the v1 contract on uvicorn in a thread) is started once per
session. To run the same tests against a real server, set ``SPEECHPROMPT_TEST_URL`` (and
``SPEECHPROMPT_TEST_TOKEN`` for upload/delete); tests that need injected faults (429/503/504 on demand)
are then skipped. Tasks used by the tests are uploaded through the API with packages built for the
server's own backbone (``GET /v1/backbone``), so no other coupling exists.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from clients import NotFound, SpeechPromptClient

from .fake_server import ADMIN_TOKEN, ServerThread, create_app, make_package_bytes

REAL_RECORDING = Path("/usr/share/sounds/alsa/Front_Center.wav")


@dataclass
class LiveServer:
    """A server under test: its base URL, the admin token, and whether ``/_fake/`` fault injection exists."""

    url: str
    token: str | None
    fake: bool

    def inject(self, path: str, status: int, count: int = 1, headers: dict[str, str] | None = None,
               body: dict[str, Any] | None = None, text: str | None = None) -> None:
        """Make the next ``count`` requests whose path starts with ``path`` answer ``status`` (fake only)."""
        spec: dict[str, Any] = {"path": path, "status": status, "count": count, "headers": headers or {}}
        if text is not None:
            spec["text"] = text
        else:
            spec["body"] = body or {}
        httpx.post(f"{self.url}/_fake/faults", json=spec).raise_for_status()

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_fake/faults").raise_for_status()

    def requests(self, path: str) -> int:
        """How many requests reached ``path`` since the last ``clear`` (fake only)."""
        return int(httpx.get(f"{self.url}/_fake/requests").json().get(path, 0))


@pytest.fixture(scope="session")
def live() -> Iterator[LiveServer]:
    url = os.environ.get("SPEECHPROMPT_TEST_URL")
    if url:
        yield LiveServer(url.rstrip("/"), os.environ.get("SPEECHPROMPT_TEST_TOKEN"), fake=False)
        return
    server = ServerThread(create_app()).start()
    try:
        yield LiveServer(server.url, ADMIN_TOKEN, fake=True)
    finally:
        server.stop()


@pytest.fixture
def faults(live: LiveServer) -> Iterator[LiveServer]:
    """The live server with fault injection; skips the test on a real server."""
    if not live.fake:
        pytest.skip("needs the fake server's fault injection")
    live.clear()
    yield live
    live.clear()


@pytest.fixture
def client(live: LiveServer) -> Iterator[SpeechPromptClient]:
    with SpeechPromptClient(live.url, token=live.token, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def backbone_info(live: LiveServer) -> dict[str, Any]:
    return httpx.get(f"{live.url}/v1/backbone", timeout=30).json()


@pytest.fixture(scope="session")
def make_package(backbone_info: dict[str, Any]):
    """``make_package(task, labels, seed=0, **overrides)`` -> safetensors bytes valid for the live backbone."""
    def make(task: str, labels: list[str], seed: int = 0, backbone: dict[str, Any] | None = None) -> bytes:
        return make_package_bytes(task, labels, backbone or backbone_info, seed=seed)
    return make


LABELS = ["alpha", "beta", "gamma", "delta"]


@pytest.fixture(scope="session")
def test_task(live: LiveServer, make_package) -> Iterator[str]:
    """A task uploaded for this session (labels ``LABELS``), deleted afterwards."""
    if not live.token:
        pytest.skip("set SPEECHPROMPT_TEST_TOKEN to upload the test task")
    name = f"clienttest-{uuid.uuid4().hex[:8]}"
    with SpeechPromptClient(live.url, token=live.token) as c:
        c.upload(name, make_package(name, LABELS, seed=42))
        yield name
        try:
            c.delete(name)
        except NotFound:
            pass


def wav_bytes(seconds: float = 0.5, rate: int = 16000, channels: int = 1, freq: float = 440.0,
              subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    """A sine tone (amplitude 0.3) as audio file bytes."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    data = np.stack([x] * channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, data, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def same_scores(a, b, tol: float = 1e-5) -> bool:
    """Scores of two answers for the same clip and task version agree: same labels in the same order, and
    probabilities within ``tol`` (a real server batches requests differently, which moves float32 results
    in the 7th digit). Accepts ``Score`` sequences or ``{label: score}`` dicts."""
    pa = list(a.items()) if isinstance(a, dict) else [(s.label, s.score) for s in a]
    pb = list(b.items()) if isinstance(b, dict) else [(s.label, s.score) for s in b]
    return [x for x, _ in pa] == [x for x, _ in pb] and all(abs(u - v) <= tol for (_, u), (_, v) in zip(pa, pb))


@pytest.fixture
def recording() -> Path:
    if not REAL_RECORDING.is_file():
        pytest.skip(f"{REAL_RECORDING} missing (Debian alsa-utils)")
    return REAL_RECORDING

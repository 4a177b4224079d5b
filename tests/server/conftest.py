"""Fixtures for the server tests: an in-process server (ASGI transport, lifespan run, fake or real runtime)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio
import torch
from fastapi import FastAPI

from server.app import create_app
from server.service import Service
from server.settings import Settings

torch.set_num_threads(1)


@dataclass
class Server:
    app: FastAPI
    client: httpx.AsyncClient
    service: Service
    settings: Settings


@pytest_asyncio.fixture
async def make_server(tmp_path):
    """``await make_server(runtime=..., **settings)`` -> Server with its lifespan running (closed at the end)."""
    stack = contextlib.AsyncExitStack()

    async def factory(runtime: Any = None, *, runtime_factory=None, wait: bool = True, **overrides) -> Server:
        values: dict[str, Any] = dict(store=str(tmp_path / "store"), admin_token="s3cret", max_batch_wait_ms=2.0,
                                      store_poll_interval_s=0.05, bundle_dir=tmp_path / "no-bundle")
        values.update(overrides)
        settings = Settings(**values)
        if runtime_factory is None and runtime is not None:
            runtime_factory = lambda s: runtime  # noqa: E731
        app = create_app(settings, runtime_factory)  # None: the real loader (settings.bundle_dir)
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sp.test", timeout=30))
        if wait:
            await app.state.service.wait_ready(20)
        return Server(app, client, app.state.service, settings)

    yield factory
    await stack.aclose()

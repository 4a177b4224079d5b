"""Entry point: ``run(settings)`` serves the app with uvicorn (``speechprompt serve`` calls it)."""

from __future__ import annotations

import logging

import uvicorn

from .app import create_app
from .settings import Settings


def run(settings: Settings | None = None) -> None:
    """Serve until interrupted, on ``settings.host:settings.port``."""
    settings = settings or Settings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=10)


if __name__ == "__main__":
    run()

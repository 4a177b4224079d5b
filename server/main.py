"""Entry point: ``run(settings)`` serves the app with uvicorn (``speechprompt serve`` calls it)."""

from __future__ import annotations

import logging

import uvicorn

from .app import create_app
from .settings import Settings
from .timeouts import timed_h11


def run(settings: Settings | None = None) -> None:
    """Serve until interrupted, on ``settings.host:settings.port``; slow headers and bodies are cut off
    after ``settings.header_timeout_s`` / ``body_timeout_s`` (``server/timeouts.py``). On SIGTERM/SIGINT
    uvicorn closes the listening socket (new connections are refused, so readiness fails at once), answers
    every request already received or being received (``Connection: close``), waits for them up to
    ``settings.drain_timeout_s`` seconds, then runs the lifespan shutdown (model loop stopped)."""
    settings = settings or Settings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=settings.drain_timeout_s,
                http=timed_h11(settings.header_timeout_s, settings.body_timeout_s))


if __name__ == "__main__":
    run()

"""Entry point: ``run(settings)`` serves the app with uvicorn (``speechprompt serve`` calls it)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from .app import create_app
from .settings import Settings
from .timeouts import timed_h11


def run(settings: Settings | None = None) -> None:
    """Serve until interrupted, on ``settings.host:settings.port``; slow headers and bodies are cut off
    after ``settings.header_timeout_s`` / ``body_timeout_s`` (``server/timeouts.py``). On SIGTERM/SIGINT
    uvicorn closes the listening socket (new connections are refused, so readiness fails at once), answers
    every request already received or being received (``Connection: close``), waits for them up to
    ``settings.drain_timeout_s`` seconds, then runs the lifespan shutdown (model loop stopped).

    The port is bound before the lifespan loads the backbone, so a port in use (or not ours to bind) stops
    the process at once, before the model load, with the OS error, the address and exit status 3; a failed
    startup (a bad bundle or store) exits with status 3 too, as ``uvicorn.run``."""
    settings = settings or Settings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=settings.drain_timeout_s,
                            http=timed_h11(settings.header_timeout_s, settings.body_timeout_s))
    try:
        sock = config.bind_socket()  # logs the OS error and exits (3) when the address is taken
    except SystemExit:
        logging.getLogger("server.main").error(
            "cannot listen on %s:%d; nothing was loaded (stop the other process or choose another port: --port, "
            "SPEECHPROMPT_PORT)", settings.host, settings.port)
        raise
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(3)

if __name__ == "__main__":
    run()

"""Entry point: ``run(settings)`` serves the app with uvicorn (``speechprompt serve`` calls it)."""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn

from .app import create_app
from .settings import Settings
from .timeouts import timed_h11


def check_can_listen(host: str, port: int) -> None:
    """Bind (then close) a probe socket on every address ``host`` resolves to, as asyncio's ``create_server``
    will (``SO_REUSEADDR``; IPv6 sockets IPv6-only), so that a port in use or not ours to bind stops the process
    before the lifespan starts loading the backbone. Raises ``OSError`` (with the address) when one fails."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, addr in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(addr)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {addr[0]!r} port {addr[1]}: {exc.strerror}") from exc


def run(settings: Settings | None = None) -> None:
    """Serve until interrupted, on ``settings.host:settings.port``; slow headers and bodies are cut off
    after ``settings.header_timeout_s`` / ``body_timeout_s`` (``server/timeouts.py``). On SIGTERM/SIGINT
    uvicorn closes the listening socket (new connections are refused, so readiness fails at once), answers
    every request already received or being received (``Connection: close``), waits for them up to
    ``settings.drain_timeout_s`` seconds, then runs the lifespan shutdown (model loop stopped).

    A port in use (or not ours to bind) is found by :func:`check_can_listen` before uvicorn starts: the process
    logs the address and the OS error and exits with status 3 (uvicorn's startup-failure status) without
    starting the backbone load. A backbone or store that fails to load does not stop the process: ``/readyz``
    answers 503 and says why (``server/service.py``)."""
    settings = settings or Settings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    try:
        check_can_listen(settings.host, settings.port)
    except OSError as exc:
        logging.getLogger("server.main").error(
            "%s; nothing was loaded (stop the other process or choose another port: --port, SPEECHPROMPT_PORT)", exc)
        sys.exit(3)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=settings.drain_timeout_s,
                http=timed_h11(settings.header_timeout_s, settings.body_timeout_s))


if __name__ == "__main__":
    run()

"""Slow-client timeouts at the connection level: uvicorn's h11 protocol plus two timers.

uvicorn bounds only the idle time *between* requests (``timeout_keep_alive``), and any byte received cancels
that timer, so a client sending one header byte every few seconds (slowloris) or a body at 1 byte/s holds a
connection, and a task, forever. :func:`timed_h11` returns the protocol class the server runs with:

- header timer: armed when a connection opens and again after each response; if the next request's
  headers are not complete ``header_timeout_s`` later, the connection is closed (nothing is answered: no
  request exists yet to answer);
- body backstop: armed when a request's headers are complete; if its body is still not complete
  ``body_timeout_s + BODY_GRACE_S`` later (a route that never reads the body, or an answer already sent),
  the connection is closed. Routes that read the body answer 408 themselves at ``body_timeout_s``
  (``server/bodies.py::read_capped``).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

BODY_GRACE_S = 1.0  # the route's own 408 at body_timeout_s comes first; this closes what is left


class TimedH11Protocol(H11Protocol):
    """H11Protocol with a header deadline per request and a body deadline backstop."""

    header_timeout_s = 10.0
    body_timeout_s = 20.0

    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _body_cycle: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header timer of the first request."""
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel both timers, then let uvicorn clean up."""
        self._cancel_timers()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        """Parse as uvicorn does; once a request's headers are in, swap the header timer for the body one."""
        super().handle_events()
        state = self.conn.their_state
        if state is not h11.IDLE and self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if state is h11.SEND_BODY and self._body_cycle is not self.cycle:
            self._body_cycle = self.cycle
            self._body_timer = self.loop.call_later(self.body_timeout_s + BODY_GRACE_S,
                                                    self._body_expired, self.cycle)

    def on_response_complete(self) -> None:
        """After an answer, the next request on this connection gets its own header deadline."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE and self._header_timer is None:
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_expired)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _close(self) -> None:
        self._cancel_timers()
        if not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self.transport.close()

    def _headers_expired(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE:  # still no complete request line + headers
            self.logger.info("closing %s: request headers not complete within %.1f s",
                             self._peer(), self.header_timeout_s)
            self._close()

    def _body_expired(self, cycle: object) -> None:
        self._body_timer = None
        if self.cycle is cycle and self.conn.their_state is h11.SEND_BODY:
            self.logger.info("closing %s: request body not complete within %.1f s",
                             self._peer(), self.body_timeout_s + BODY_GRACE_S)
            self._close()

    def _peer(self) -> str:
        return "%s:%d" % self.client if self.client else "a client"


def timed_h11(header_timeout_s: float, body_timeout_s: float) -> type[TimedH11Protocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with these deadlines (seconds)."""
    return type("TimedH11Protocol", (TimedH11Protocol,),
                {"header_timeout_s": float(header_timeout_s), "body_timeout_s": float(body_timeout_s)})

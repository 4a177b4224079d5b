"""Waiting for work on the event loop while watching the client: one race of the work against the client's
disconnect (ASGI ``http.disconnect``) and a deadline; the loser is cancelled (a cancelled batcher job is skipped by
the model loop if it has not started). Used by classify (``inference.py``) and windows (``windows.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .errors import ClientGone, DeadlineExceeded


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def while_connected(aw: Any, receive: Any, deadline: float | None = None,
                          what: str = "it waited for the model") -> Any:
    """Await ``aw`` unless the client disconnects first (``ClientGone``) or ``deadline`` (monotonic s) passes
    (``DeadlineExceeded``); ``aw`` is cancelled then. ``receive``: the ASGI receive channel, or None."""
    work = asyncio.ensure_future(aw)
    gone = asyncio.ensure_future(_disconnected(receive)) if receive is not None else None
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        await asyncio.wait({work} | ({gone} if gone else set()), timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        if gone is not None:
            gone.cancel()
        if not work.done():
            work.cancel()
    if work.done() and not work.cancelled():
        return work.result()
    if gone is not None and gone.done():
        raise ClientGone("the client disconnected")
    raise DeadlineExceeded(f"the request's deadline passed while {what}")

"""Graceful drain on SIGTERM, with a REAL server process (what a Kubernetes rollout or scale-down does):
requests in flight when the signal arrives are answered (200, the right task), new connections are refused,
and the process exits 0; a request still running after ``SPEECHPROMPT_DRAIN_TIMEOUT_S`` is cut off."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from .helpers import make_package
from .http_helpers import wav_bytes
from .live import ADMIN, LiveServer

pytestmark = pytest.mark.slow


async def send_in_two_halves(port: int, path: str, body: bytes, pause_s: float, sent: asyncio.Event) -> bytes:
    """POST ``body`` on a raw socket: headers and half the body, ``sent`` is set, a pause, the rest; returns
    everything the server answered until it closed the connection (b"" when it was cut off)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: audio/wav\r\nContent-Length: {len(body)}\r\n\r\n")
    writer.write(head.encode() + body[: len(body) // 2])
    await writer.drain()
    sent.set()
    await asyncio.sleep(pause_s)
    try:
        writer.write(body[len(body) // 2:])
        await writer.drain()
        return await reader.read()
    except ConnectionError:
        return b""
    finally:
        writer.close()


def in_progress(srv: LiveServer) -> float:
    """The server's ``sp_http_requests_in_progress`` gauge, read from ``/metrics`` (this scrape counts)."""
    for line in srv.http.get("/metrics").text.splitlines():
        if line.startswith("sp_http_requests_in_progress "):
            return float(line.split()[1])
    raise AssertionError("no sp_http_requests_in_progress in /metrics")


def wait_in_progress(srv: LiveServer, n: int, timeout_s: float = 1.0) -> bool:
    """True once the gauge reads ``n``; False after ``timeout_s`` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if in_progress(srv) == n:
            return True
        time.sleep(0.01)
    return False


def start(tmp_path, **env: str) -> LiveServer:
    srv = LiveServer(tmp_path, **env).__enter__()
    r = srv.http.put("/v1/tasks/drain-task", content=make_package("drain-task", 3, **srv.dims()).data, headers=ADMIN)
    assert r.status_code == 201, r.text
    return srv


def test_sigterm_answers_requests_in_flight_then_exits(tmp_path):
    srv = start(tmp_path, SPEECHPROMPT_DRAIN_TIMEOUT_S="20")

    async def scenario() -> list[bytes]:
        events = [asyncio.Event() for _ in range(4)]
        calls = [asyncio.create_task(send_in_two_halves(srv.port, "/v1/tasks/drain-task/classify",
                                                        wav_bytes(0.4, seed=i), 1.5, ev))
                 for i, ev in enumerate(events)]
        await asyncio.gather(*(ev.wait() for ev in events))
        # the halves are in the kernel; wait until the server has parsed all four requests' headers (before that a
        # connection is idle to uvicorn, and a drain closes it unanswered: not a request in flight)
        assert await asyncio.to_thread(wait_in_progress, srv, 4 + 1), srv.tail()  # + 1: the scrape itself
        srv.proc.send_signal(signal.SIGTERM)  # every request is half-uploaded now
        await asyncio.sleep(0.5)
        with pytest.raises(OSError):  # the listening socket is closed: a new connection is refused
            await asyncio.open_connection("127.0.0.1", srv.port)
        return await asyncio.gather(*calls)

    try:
        answers = asyncio.run(scenario())
        for raw in answers:
            assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
            assert b'"task":"drain-task"' in raw  # and the server closed the connection after it (read to EOF)
        # uvicorn re-raises the signal once it has shut down cleanly: killed by SIGTERM, after the lifespan end
        assert srv.proc.wait(10) in (0, -signal.SIGTERM), srv.tail()
        assert "Application shutdown complete" in srv.tail()
    finally:
        srv.__exit__(None, None, None)


def test_a_request_longer_than_the_drain_timeout_is_cut_off(tmp_path):
    srv = start(tmp_path, SPEECHPROMPT_DRAIN_TIMEOUT_S="1")

    async def scenario() -> tuple[bytes, float]:
        sent = asyncio.Event()  # the body's second half would come 6 s later: the drain must not wait for it
        call = asyncio.create_task(send_in_two_halves(srv.port, "/v1/tasks/drain-task/classify",
                                                      wav_bytes(0.4), 6.0, sent))
        await sent.wait()
        assert await asyncio.to_thread(wait_in_progress, srv, 1 + 1), srv.tail()  # in flight, not an idle connection
        srv.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        while srv.proc.poll() is None and time.monotonic() - t0 < 15:
            await asyncio.sleep(0.05)
        exit_s = time.monotonic() - t0
        return await call, exit_s

    try:
        answer, exit_s = asyncio.run(scenario())
        assert 0.9 <= exit_s < 4.0, f"exited {exit_s:.1f} s after SIGTERM with a 1 s drain timeout (it waited for it)"
        assert not answer.startswith(b"HTTP/1.1 200")
    finally:
        srv.__exit__(None, None, None)

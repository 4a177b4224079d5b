"""Slow clients against a REAL uvicorn process (raw sockets): slowloris connections that never finish their
headers, and bodies sent at 1 byte/s, are closed within a bound while normal requests still answer in time."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from server.settings import Settings

from .helpers import make_package
from .http_helpers import WAV, wav_bytes
from .live import ADMIN, LiveServer

pytestmark = pytest.mark.slow

HEADER_S, BODY_S = 2.0, 3.0


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("slow"), SPEECHPROMPT_HEADER_TIMEOUT_S=str(HEADER_S),
                    SPEECHPROMPT_BODY_TIMEOUT_S=str(BODY_S)) as srv:
        pkg = make_package("slow-task", 1, **srv.dims())
        r = srv.http.put("/v1/tasks/slow-task", content=pkg.data, headers=ADMIN)
        assert r.status_code == 201, r.text
        yield srv


async def closed_after(reader: asyncio.StreamReader, limit_s: float) -> tuple[float, bytes]:
    """Read until the server closes the connection -> (seconds it took, bytes received); fails after limit_s."""
    start, got = time.monotonic(), b""
    try:
        async with asyncio.timeout(limit_s):
            while chunk := await reader.read(65536):
                got += chunk
    except ConnectionError:
        pass
    except TimeoutError:
        raise AssertionError(f"connection still open after {limit_s} s (received {got[:80]!r})") from None
    return time.monotonic() - start, got


async def drip(writer: asyncio.StreamWriter, data: bytes, every_s: float) -> None:
    """Send ``data`` one byte every ``every_s`` seconds until the connection breaks."""
    try:
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
            await asyncio.sleep(every_s)
    except (ConnectionError, RuntimeError):
        pass


def test_slowloris_connections_are_closed_and_normal_requests_answer_within_5s(live):
    async def main() -> None:
        conns = [await asyncio.open_connection("127.0.0.1", live.port) for _ in range(200)]
        drips = [asyncio.create_task(drip(w, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100, 0.5))
                 for _, w in conns]
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        start = time.monotonic()  # a normal client while 200 slowloris connections are held
        r = await loop.run_in_executor(None, lambda: live.http.post("/v1/tasks/slow-task/classify",
                                                                     content=wav_bytes(0.4), headers=WAV))
        assert r.status_code == 200 and time.monotonic() - start < 5, (r.status_code, r.text)
        closed = await asyncio.gather(*(closed_after(rd, HEADER_S + 4) for rd, _ in conns))
        assert all(got == b"" for _, got in closed)  # closed without an answer: no request existed
        for t in drips:
            t.cancel()
        for _, w in conns:
            w.close()
    asyncio.run(main())
    assert live.http.get("/healthz").status_code == 200


def test_keep_alive_connection_sending_the_next_headers_slowly_is_closed(live):
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        await reader.readexactly(int(re.search(rb"(?i)content-length: (\d+)", head).group(1)))
        task = asyncio.create_task(drip(writer, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"a" * 100, 0.5))
        seconds, got = await closed_after(reader, HEADER_S + 4)
        assert got == b"" and seconds < HEADER_S + 2
        task.cancel()
        writer.close()
    asyncio.run(main())


@pytest.mark.parametrize("path", ["/v1/tasks/slow-task/classify", "/v1/classify?tasks=slow-task"])
def test_body_at_one_byte_per_second_is_refused_408_and_closed(live, path):
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        body = wav_bytes(0.4)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        task = asyncio.create_task(drip(writer, body, 1.0))
        seconds, got = await closed_after(reader, BODY_S + 4)
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        assert b"application/problem+json" in got and b"/problems/request_timeout" in got
        assert seconds < BODY_S + 2
        task.cancel()
        writer.close()
    asyncio.run(main())


def test_slow_upload_is_refused_408(live):
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(f"PUT /v1/tasks/other HTTP/1.1\r\nHost: x\r\nAuthorization: {ADMIN['Authorization']}\r\n"
                     "Content-Type: application/octet-stream\r\nContent-Length: 5000\r\n\r\n".encode())
        task = asyncio.create_task(drip(writer, b"x" * 5000, 1.0))
        _, got = await closed_after(reader, BODY_S + 4)
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        task.cancel()
        writer.close()
    asyncio.run(main())


def test_slow_body_to_a_route_that_never_reads_it_is_closed(live):
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        task = asyncio.create_task(drip(writer, b"x" * 5000, 1.0))
        seconds, got = await closed_after(reader, BODY_S + 6)
        assert got.startswith(b"HTTP/1.1 404"), got[:200]  # answered at once, then cut off at the backstop
        assert seconds < BODY_S + 4
        task.cancel()
        writer.close()
    asyncio.run(main())


def test_default_timeouts_are_bounded():
    s = Settings()
    assert 0 < s.header_timeout_s <= 10 and 0 < s.body_timeout_s <= 30

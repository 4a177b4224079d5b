"""Time to a 429 under overload, measured with raw sockets (an httpx client alone adds seconds at 512
concurrent connections): N connections at once each send one classify request (headers + WAV body) and read
the status line; prints p50/p95 seconds to a 429, p50 to a 200, the counts, Retry-After values and the
server's decode counter before/after (rejected requests must not be decoded).

    python bench/overload_429.py --url http://127.0.0.1:8000 --task commands-en --concurrency 320
    (with SPEECHPROMPT_QUEUE_CAPACITY=32: 10x overload)

Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import statistics
import sys
import time
import wave
from urllib.parse import urlsplit

import numpy as np


def clip(seed: int, seconds: float = 1.0) -> bytes:
    """A 16 kHz 16-bit WAV of noise (every seed different, so no units-cache hits)."""
    pcm = (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 3000).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(pcm)
    return buf.getvalue()


async def one(host: str, port: int, path: str, body: bytes) -> tuple[int, float, str | None]:
    """Send one request on a fresh connection -> (status, seconds to the status line, Retry-After)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: audio/wav\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    try:
        writer.write(head + body)
        try:
            await writer.drain()
        except ConnectionError:  # refused before the body was read: the server may close early
            pass
        status_line = await reader.readline()
        seconds = time.perf_counter() - start
        headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        m = re.search(r"(?im)^retry-after:\s*(\d+)", headers)
        return int(status_line.split()[1]), seconds, m.group(1) if m else None
    except (ConnectionError, asyncio.IncompleteReadError, IndexError):
        return 0, time.perf_counter() - start, None
    finally:
        writer.close()


async def decode_count(host: str, port: int) -> float:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    text = (await reader.read()).decode()
    writer.close()
    m = re.search(r"^sp_request_decode_duration_seconds_count (\S+)", text, re.M)
    return float(m.group(1)) if m else float("nan")


async def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--task", default="commands-en")
    ap.add_argument("--concurrency", type=int, default=320)
    a = ap.parse_args(argv)
    u = urlsplit(a.url)
    if u.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback URLs only")
    bodies = [clip(i) for i in range(a.concurrency)]
    before = await decode_count(u.hostname, u.port or 80)
    results = await asyncio.gather(*(one(u.hostname, u.port or 80, f"/v1/tasks/{a.task}/classify", b)
                                     for b in bodies))
    after = await decode_count(u.hostname, u.port or 80)
    t429 = sorted(s for st, s, _ in results if st == 429)
    t200 = sorted(s for st, s, _ in results if st == 200)
    retry = sorted({int(r) for st, _, r in results if st == 429 and r})
    q = lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")  # noqa: E731
    print(f"concurrency {a.concurrency}: {len(t200)} x 200, {len(t429)} x 429, "  # noqa: T201
          f"{len(results) - len(t200) - len(t429)} other")
    print(f"time to 429: p50 {q(t429, 0.5):.3f} s, p95 {q(t429, 0.95):.3f} s; "  # noqa: T201
          f"time to 200: p50 {statistics.median(t200) if t200 else float('nan'):.3f} s")
    print(f"Retry-After values: {retry}; decodes during the run: {after - before:.0f} "  # noqa: T201
          f"(requests not refused: {len(results) - len(t429)})")


if __name__ == "__main__":
    asyncio.run(main())

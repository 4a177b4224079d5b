"""RSS of a server process before a burst, at its peak, and after idle: the server gives freed memory back
(``server/memory.py``, malloc_trim once idle), so idle RSS returns within 25 % of the pre-burst value.

    python bench/memory_after_burst.py --url http://127.0.0.1:8000 --pid PID --task commands-en \\
        --concurrency 128 --seconds 10 --idle 60

Loopback only; PID is the server's process id (RSS read from /proc).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from server.memory import rss_bytes  # noqa: E402


def clip(seed: int, seconds: float) -> bytes:
    """A 44.1 kHz 16-bit WAV of noise (resampled and decoded by the server; every seed different)."""
    pcm = (np.random.default_rng(seed).standard_normal(int(44100 * seconds)) * 3000).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(44100), w.writeframes(pcm)
    return buf.getvalue()


def burst(url: str, task: str, concurrency: int, seconds: float) -> dict[int, int]:
    """``concurrency`` classify requests at once -> count per status."""
    bodies = [clip(i, seconds) for i in range(concurrency)]
    with httpx.Client(base_url=url, timeout=120) as c, ThreadPoolExecutor(concurrency) as pool:
        codes = list(pool.map(lambda b: c.post(f"/v1/tasks/{task}/classify", content=b,
                                               headers={"Content-Type": "audio/wav"}).status_code, bodies))
    return {k: codes.count(k) for k in set(codes)}


def measure(url: str, pid: int, task: str, concurrency: int, seconds: float, idle_s: float,
            target: float = 1.25) -> dict:
    """Warm up, record RSS, burst, then poll RSS for up to ``idle_s`` until it is within ``target`` x the
    pre-burst value. Returns the figures (MB) and the seconds it took (None if never)."""
    burst(url, task, 4, seconds)  # warm-up: first-call allocations are not the burst's
    time.sleep(3)
    before = rss_bytes(pid)
    peak = before
    statuses = burst(url, task, concurrency, seconds)
    peak = max(peak, rss_bytes(pid))
    start, back_after = time.monotonic(), None
    while time.monotonic() - start < idle_s:
        if rss_bytes(pid) <= target * before:
            back_after = round(time.monotonic() - start, 1)
            break
        time.sleep(0.5)
    mb = 1 / 2**20
    return {"before_mb": round(before * mb), "peak_mb": round(peak * mb), "after_mb": round(rss_bytes(pid) * mb),
            "back_within_target_after_s": back_after, "statuses": statuses}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--task", default="commands-en")
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--idle", type=float, default=60.0)
    a = ap.parse_args(argv)
    if urlsplit(a.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback URLs only")
    print(measure(a.url, a.pid, a.task, a.concurrency, a.seconds, a.idle))


if __name__ == "__main__":
    main()

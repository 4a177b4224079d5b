"""Closed-loop HTTP load generator for the classify endpoints: loopback only, fixed request count, time limit.

``concurrency`` workers share one request counter; each sends its next request as soon as its last answer
arrived, until ``requests`` were sent or ``time_limit_s`` has passed (then it stops by itself: every request's
timeout is cut to the time left). Clips are synthetic speech-like WAVs (16-bit PCM, 16 kHz) built with the
standard library; with ``unique`` every request's PCM differs in the least significant bits of its first 24
samples, so the server's units cache never hits and every request pays decode + HuBERT + k-means + unit LM.

Refuses any URL whose host is not a loopback address (it never sends load off this machine) and ignores
proxy settings from the environment.

    python bench/loadgen.py --url http://127.0.0.1:8000 --tasks kws,emo --requests 100 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import socket
import sys
import time
import wave
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import numpy as np

RATE = 16000
ID_BITS = 24  # samples whose least significant bit carries the request index (unique PCM per request)


class NotLoopback(ValueError):
    """The target URL's host resolves to an address that is not loopback."""


def check_loopback(url: str) -> None:
    """Raise ``NotLoopback`` unless every address ``url``'s host resolves to is a loopback address."""
    host = urlsplit(url).hostname
    if not host:
        raise NotLoopback(f"no host in {url!r}")
    try:
        addrs = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addrs = {ipaddress.ip_address(a[4][0]) for a in socket.getaddrinfo(host, None)}
        except socket.gaierror as e:
            raise NotLoopback(f"cannot resolve {host!r}: {e}") from None
    if not addrs or not all(a.is_loopback for a in addrs):
        raise NotLoopback(f"{host!r} resolves to {sorted(map(str, addrs))}; load is only sent to loopback")


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """``[N]`` int16 @ 16 kHz: a syllable-rate (3-5 Hz) modulated harmonic tone with a gliding pitch + noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 110 + (40 * seed) % 90 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + seed % 3) * t)
    x = 0.25 * env * voiced + 0.03 * rng.standard_normal(t.size)
    return (np.clip(x, -1, 1) * 32000).astype(np.int16)


def wav_bytes(pcm: np.ndarray) -> bytes:
    """int16 mono PCM ``[N]`` -> RIFF/WAVE bytes at 16 kHz."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def tagged(pcm: np.ndarray, index: int) -> np.ndarray:
    """A copy of ``pcm`` whose first ``ID_BITS`` samples carry ``index`` in their least significant bit."""
    out = pcm.copy()
    bits = (index >> np.arange(ID_BITS)) & 1
    out[:ID_BITS] = (out[:ID_BITS] & ~np.int16(1)) | bits.astype(np.int16)
    return out


@dataclass
class LoadResult:
    """What one load run saw: latencies (s) of 200 answers, status counts, wall time (s)."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    wall_s: float = 0.0
    stopped_by_time: bool = False

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3) if self.latencies else float("nan")

    @property
    def throughput(self) -> float:
        """Answered requests per second over the run's wall time."""
        return self.ok / self.wall_s if self.wall_s else 0.0


async def run_load(url: str, tasks: list[str], clips: list[np.ndarray], *, requests: int, concurrency: int,
                   time_limit_s: float, multi: int = 0, unique: bool = True, top_k: int = 1,
                   request_timeout_s: float = 60.0) -> LoadResult:
    """Send ``requests`` classify requests with ``concurrency`` workers (closed loop) to ``url``.

    Request i sends clip ``i % len(clips)`` (tagged with i when ``unique``) to task ``tasks[i % len(tasks)]``
    (``POST /v1/tasks/{task}/classify``), or, with ``multi`` = K > 0, to K consecutive tasks at once
    (``POST /v1/classify?tasks=...``). Raises ``NotLoopback`` for a non-loopback URL.
    """
    check_loopback(url)
    res = LoadResult()
    counter = iter(range(requests))
    start = time.perf_counter()
    deadline = start + time_limit_s
    headers = {"Content-Type": "audio/wav"}

    def target(i: int) -> tuple[str, dict]:
        if multi:
            names = [tasks[(i + j) % len(tasks)] for j in range(multi)]
            return "/v1/classify", {"tasks": ",".join(dict.fromkeys(names)), "top_k": top_k}
        return f"/v1/tasks/{tasks[i % len(tasks)]}/classify", {"top_k": top_k}

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            left = deadline - time.perf_counter()
            if left <= 0:
                res.stopped_by_time = True
                return
            pcm = clips[i % len(clips)]
            body = wav_bytes(tagged(pcm, i) if unique else pcm)
            path, params = target(i)
            res.sent += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(path, params=params, content=body, headers=headers,
                                      timeout=min(request_timeout_s, left))
                key = str(r.status_code)
            except httpx.TimeoutException:
                key = "timeout"
            except httpx.TransportError as e:
                key = type(e).__name__
            res.statuses[key] = res.statuses.get(key, 0) + 1
            if key == "200":
                res.latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, trust_env=False, limits=limits) as client:
        workers = [asyncio.create_task(worker(client)) for _ in range(concurrency)]
        try:
            await asyncio.wait_for(asyncio.gather(*workers), time_limit_s + 5.0)
        except TimeoutError:
            res.stopped_by_time = True
            for w in workers:
                w.cancel()
    res.wall_s = time.perf_counter() - start
    return res


def table_row(label: str, res: LoadResult, concurrency: int) -> str:
    """One markdown row: load, answers, throughput, p50/p99 latency, non-200 outcomes."""
    other = ", ".join(f"{k}: {v}" for k, v in sorted(res.statuses.items()) if k != "200") or "none"
    return (f"| {label} | {concurrency} | {res.ok}/{res.sent} | {res.throughput:.2f} | "
            f"{res.percentile_ms(50):.0f} | {res.percentile_ms(99):.0f} | {other} |")


TABLE_HEAD = ("| load | concurrency | answered/sent | req/s | p50 ms | p99 ms | other outcomes |\n"
              "|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--tasks", default="", help="comma-separated task names (default: every task GET /v1/tasks lists)")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--time-limit", type=float, default=60.0, help="stop after this many seconds (s)")
    ap.add_argument("--clip-seconds", default="1.0,1.5,2.0,2.5", help="lengths of the synthetic clips (s)")
    ap.add_argument("--multi", type=int, default=0, help="K > 0: one clip x K tasks per request (/v1/classify)")
    ap.add_argument("--repeat-clips", action="store_true", help="send identical clips (units cache hits)")
    a = ap.parse_args()
    try:
        check_loopback(a.url)
    except NotLoopback as e:
        sys.exit(f"refused: {e}")
    tasks = [t for t in a.tasks.split(",") if t]
    if not tasks:
        with httpx.Client(base_url=a.url, trust_env=False, timeout=10) as c:
            tasks = [t["task"] for t in c.get("/v1/tasks").json()["tasks"] if t.get("version")]
    if not tasks:
        sys.exit("no task to send load to (upload one first)")
    clips = [speech_like(float(s), seed=i) for i, s in enumerate(a.clip_seconds.split(","))]
    res = asyncio.run(run_load(a.url, tasks, clips, requests=a.requests, concurrency=a.concurrency,
                               time_limit_s=a.time_limit, multi=a.multi, unique=not a.repeat_clips))
    print(TABLE_HEAD)
    what = f"{a.requests} requests, {len(tasks)} tasks" + (f", {a.multi} tasks/request" if a.multi else "")
    print(table_row(what, res, a.concurrency))
    if res.stopped_by_time:
        print(f"(stopped by the time limit of {a.time_limit:g} s)")


if __name__ == "__main__":
    main()

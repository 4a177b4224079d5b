"""Redis prompt store: cold load Redis -> device of a GSLM-size package, and propagation across replicas.

1. Cold load (target p99 <= 50 ms): a GSLM-size package (L=12, l=5, d=1024, V=104, C=12; ~0.52 MB) is put
   by one store and loaded by another whose local copy does not have it: Redis GET + digest check ->
   ``read_package`` + ``check_compatible`` (the registry's validation) -> ``PromptBank.add`` (prefix K/V
   projections at every layer) on the chosen device, with a GSLM-shaped unit LM (random weights).
2. Propagation (target <= 1 s): store -> store (PUT on one, change callback on the other), and between two
   REAL server processes (tiny random bundle): PUT returns on A -> B answers with the new version.
3. Convergence after a Redis restart (target <= 5 s): a change made without a message, Redis restarted.

Starts its own redis-server on a free loopback port. Prints markdown table rows.
Usage: python bench/bench_redis.py [--loads 50] [--props 50] [--restarts 5] [--server-props 10] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.stores import open_store  # noqa: E402
from speechprompt.package import check_compatible, read_package  # noqa: E402
from speechprompt.prompting import PromptBank  # noqa: E402
from speechprompt.unit_lm import UnitLM, UnitLMConfig  # noqa: E402
from tests.server.test_redis_store import RedisServer, make_package, silent_put, wait_for  # noqa: E402

FP = "be" * 32
GSLM = dict(L=12, plen=5, d=1024, V=104, C=12, fingerprint=FP)


def pct(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def row(what: str, xs: list[float], target: str) -> str:
    p50, p99 = pct(xs)
    return f"| {what} | {len(xs)} | {p50:.2f} ms | {p99:.2f} ms | {target} |"


def cold_loads(srv: RedisServer, folder: Path, n: int, device: str) -> list[str]:
    cfg = UnitLMConfig(ffn_dim=1024)  # GSLM attention shapes; the FFN width plays no part in loading a prompt
    lm = UnitLM(cfg).to(device).eval().requires_grad_(False)
    bank = PromptBank(lm, capacity=4)
    writer = open_store(srv.url(cache_dir=folder / "writer"))
    reader = open_store(srv.url(cache_dir=folder / "reader"))  # a replica; every version is new to its local copy
    pkgs = [make_package("emo", i, **GSLM) for i in range(n + 1)]
    total, get, validate, add = [], [], [], []
    try:
        for i, pkg in enumerate(pkgs):
            writer.put("emo", pkg.version, pkg.data)
            wait_for(lambda v=pkg.version: reader.snapshot().get("emo") == v, 2.0, step=0.0005)
            t0 = time.perf_counter()
            data = reader.read("emo", pkg.version)
            t1 = time.perf_counter()
            got = read_package(data)
            check_compatible(got, fingerprint=FP, kind="gslm", layers=cfg.layers, dim=cfg.embed_dim,
                             vocab_size=cfg.vocab_size)
            t2 = time.perf_counter()
            with torch.inference_mode():
                bank.add(f"emo@{got.version}", got)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t3 = time.perf_counter()
            bank.remove(f"emo@{got.version}")
            if i == 0:
                continue  # warm-up (allocations, first script load)
            total.append(t3 - t0)
            get.append(t1 - t0)
            validate.append(t2 - t1)
            add.append(t3 - t2)
    finally:
        writer.close()
        reader.close()
    size = len(pkgs[0].data) / 1e6
    return [row(f"cold load Redis -> {device}: GSLM-size package ({size:.2f} MB)", total, "p99 <= 50 ms"),
            row("... Redis GET + digest + local copy write", get, ""),
            row("... validate (read_package + check_compatible)", validate, ""),
            row(f"... PromptBank.add (prefix K/V, 12 layers) on {device}", add, "")]


def store_propagation(srv: RedisServer, folder: Path, n: int) -> str:
    a, b = open_store(srv.url(cache_dir=folder / "pa")), open_store(srv.url(cache_dir=folder / "pb"))
    a.snapshot(), b.snapshot()
    seen = threading.Event()
    b.on_change(seen.set)
    times = []
    try:
        for i in range(n):
            pkg = make_package("kws", 1000 + i)
            seen.clear()
            t0 = time.perf_counter()
            a.put("kws", pkg.version, pkg.data)
            wait_for(lambda v=pkg.version: seen.is_set() and b.snapshot().get("kws") == v, 2.0, step=0.0002)
            times.append(time.perf_counter() - t0)
    finally:
        a.close()
        b.close()
    return row("propagation store A put -> store B knows (pub/sub)", times, "<= 1 s")


def restart_convergence(srv: RedisServer, folder: Path, n: int) -> str:
    """Redis stopped (with an RDB save) while a change nobody was told about waits in it, then started:
    time from the start until both replicas' stores are back in sync with it."""
    stores = [open_store(srv.url(cache_dir=folder / f"rc{i}", health_check_s=1, timeout_s=0.5)) for i in (0, 1)]
    times = []
    try:
        for i in range(n):
            pkg = make_package("vad", 3000 + i)
            silent_put(srv.client(), "vad", pkg)
            srv.stop(save=True)
            wait_for(lambda: all(s.degraded() for s in stores), 5.0)
            t0 = time.perf_counter()
            srv.start()
            wait_for(lambda v=pkg.version: all(s.degraded() is None and s.snapshot().get("vad") == v
                                               for s in stores), 10.0, step=0.001)
            times.append(time.perf_counter() - t0)
    finally:
        for s in stores:
            s.close()
    return row("convergence after a Redis restart (redis-server start -> 2 stores in sync)", times, "<= 5 s")


def server_propagation(srv: RedisServer, folder: Path, n: int) -> str:
    from speechprompt.backbone import make_random_bundle
    from tests.server.test_replicas import ADMIN, Replica

    fingerprint = make_random_bundle(folder / "bundle", seed=5)
    dims = dict(L=2, plen=5, d=32, V=24, fingerprint=fingerprint)  # make_random_bundle's tiny unit LM
    reps = [Replica(name, folder, folder / "bundle", srv.url()) for name in ("a", "b")]
    times = []
    try:
        for r in reps:
            r.start()
        for r in reps:
            r.wait_ready()
        a, b = reps
        for i in range(n + 1):
            pkg = make_package("kws", 2000 + i, **dims)
            assert a.http.put("/v1/tasks/kws", content=pkg.data, headers=ADMIN).status_code == 201
            t0 = time.perf_counter()
            wait_for(lambda v=pkg.version: b.http.get("/v1/tasks/kws").json().get("version") == v, 5.0, step=0.002)
            if i:
                times.append(time.perf_counter() - t0)
        assert b.serves("kws", pkg.version)
    finally:
        for r in reps:
            r.stop()
    return row("propagation replica A PUT -> replica B serves it (2 server processes)", times, "<= 1 s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loads", type=int, default=50)
    ap.add_argument("--props", type=int, default=50)
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--server-props", type=int, default=10, help="0 skips the server processes")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    srv = RedisServer(folder / "redis")
    srv.start()
    rows = []
    try:
        rows += cold_loads(srv, folder, a.loads, a.device)
        rows.append(store_propagation(srv, folder, a.props))
        rows.append(restart_convergence(srv, folder, a.restarts))
        if a.server_props:
            rows.append(server_propagation(srv, folder, a.server_props))
    finally:
        srv.stop(save=False)
    print(f"# Redis prompt store ({platform.processor() or platform.machine()}, torch threads {a.threads}, "
          f"device {a.device}, redis on loopback)")
    print("| metric | n | p50 | p99 | target |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()

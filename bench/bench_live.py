"""The live-server part of ``bench_server.py``: ``python -m server.main`` on a free 127.0.0.1 port with a file store
in a temp folder and an admin token, then upload -> servable latency and latency under load (``loadgen.py``,
loopback only)."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import loadgen
import numpy as np
from bench_common import log, random_package

from speechprompt.package import TaskPackage

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``python -m server.main`` on a free 127.0.0.1 port with a file store in ``folder``."""

    def __init__(self, bundle: Path, folder: Path, device: str, threads: int, rows: int):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.log = folder / "server.log"
        self.env = {**os.environ, "SPEECHPROMPT_BUNDLE_DIR": str(bundle), "SPEECHPROMPT_STORE": str(folder / "store"),
                    "SPEECHPROMPT_ADMIN_TOKEN": self.token, "SPEECHPROMPT_HOST": "127.0.0.1",
                    "SPEECHPROMPT_PORT": str(self.port), "SPEECHPROMPT_DEVICE": device,
                    "SPEECHPROMPT_MAX_BATCH_ROWS": str(rows), "OMP_NUM_THREADS": str(threads),
                    "MKL_NUM_THREADS": str(threads)}
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=120, trust_env=False)
        self.admin = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/octet-stream"}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LiveServer:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "server.main"], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        end = time.monotonic() + 600
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            try:
                if self.http.get("/readyz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not ready within 600 s")

    def __exit__(self, *exc) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def put(self, pkg: TaskPackage) -> None:
        r = self.http.put(f"/v1/tasks/{pkg.meta.task}", content=pkg.data, headers=self.admin)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"PUT {pkg.meta.task}: {r.status_code} {r.text}")

    def classify(self, task: str, wav: bytes) -> dict:
        r = self.http.post(f"/v1/tasks/{task}/classify", content=wav, headers={"Content-Type": "audio/wav"})
        if r.status_code != 200:
            raise RuntimeError(f"classify {task}: {r.status_code} {r.text}")
        return r.json()

    def batch_rows(self) -> tuple[float, float]:
        """(rows, batches) the model loop has run so far, from ``sp_batch_rows`` on /metrics."""
        m = {ln.split()[0]: float(ln.split()[1]) for ln in self.http.get("/metrics").text.splitlines()
             if ln.startswith("sp_batch_rows_")}
        return m.get("sp_batch_rows_sum", 0.0), m.get("sp_batch_rows_count", 0.0)

    def state(self, task: str) -> tuple[str, str]:
        body = self.http.get(f"/v1/tasks/{task}").json()
        return body["state"], body["version"]


def live(srv: LiveServer, a: argparse.Namespace) -> dict:
    info = srv.http.get("/v1/backbone").json()
    fp, c = info["fingerprint"], info["unit_lm"]
    L, d, V = c["layers"], c["embed_dim"], c["vocab_size"]
    wav = loadgen.wav_bytes(loadgen.speech_like(a.upload_clip_s, seed=99))
    srv.put(random_package("upload", fp, L, d, V, seed=5000))
    for _ in range(3):  # first call encodes; later ones hit the units cache
        srv.classify("upload", wav)
    alone = []
    for _ in range(10):
        t = time.perf_counter()
        srv.classify("upload", wav)
        alone.append(time.perf_counter() - t)
    put_s, listed_s, servable_s = [], [], []
    for i in range(a.uploads):
        pkg = random_package("upload", fp, L, d, V, seed=5001 + i)
        t = time.perf_counter()
        srv.put(pkg)
        put_s.append(time.perf_counter() - t)
        if srv.state("upload") != ("resident", pkg.version):
            raise RuntimeError(f"after its PUT, version {pkg.version} is not the resident current version")
        listed_s.append(time.perf_counter() - t)
        while srv.classify("upload", wav)["version"] != pkg.version:
            if time.perf_counter() - t > 30:
                raise RuntimeError(f"version {pkg.version} not served after 30 s")
        servable_s.append(time.perf_counter() - t)
    log(f"  uploads: PUT p50 {np.median(put_s) * 1e3:.0f} ms, servable p50 {np.median(servable_s) * 1e3:.0f} ms")
    tasks = [f"load{i}" for i in range(a.load_tasks)]
    for i, t in enumerate(tasks):
        srv.put(random_package(t, fp, L, d, V, seed=6000 + i))
    lens = np.linspace(a.clip_min_s, a.clip_max_s, 4)
    clips = [loadgen.speech_like(float(s), seed=i) for i, s in enumerate(lens)]
    rows0, batches0 = srv.batch_rows()
    res = asyncio.run(loadgen.run_load(srv.url, tasks, clips, requests=a.load_requests, concurrency=a.concurrency,
                                       time_limit_s=a.load_time_limit, unique=True))
    log(f"  load: {res.ok}/{res.sent} answered, p50 {res.percentile_ms(50):.0f} ms")
    rows1, batches1 = srv.batch_rows()
    ms = lambda v, q: float(np.percentile(v, q) * 1e3)  # noqa: E731
    return {"put": (ms(put_s, 50), ms(put_s, 99)), "listed": (ms(listed_s, 50), ms(listed_s, 99)),
            "servable": (ms(servable_s, 50), ms(servable_s, 99)), "alone": ms(alone, 50), "load": res,
            "rows_mean": (rows1 - rows0) / max(batches1 - batches0, 1.0), "clips": (float(lens[0]), float(lens[-1]))}

"""Two REAL server processes (uvicorn, tiny random backbone bundle) on loopback ports sharing one REAL
redis-server: uploads and deletes propagate within 1 s, a Redis restart during traffic fails no request for
resident tasks and converges within 5 s, and a replica started while Redis is down serves its local copy.

The store poll interval stays at its default (2 s): propagation within 1 s comes from the push path
(pub/sub -> ``PromptStore.on_change`` -> registry refresh).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from speechprompt.backbone import make_random_bundle

from .helpers import free_port, make_package, wait_for
from .http_helpers import WAV, wav_bytes
from .live import stop_process
from .redis_procs import RedisServer, silent_put

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian redis-server")]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "replica-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CLIP = wav_bytes(0.4, seed=7)


class Replica:
    """``python -m server.main`` on a free 127.0.0.1 port, configured by environment variables."""

    def __init__(self, name: str, folder: Path, bundle: Path, redis_url: str):
        self.name, self.port = name, free_port()
        self.log = folder / f"{name}.log"
        self.cache = folder / f"copy-{name}"
        self.env = {**os.environ, "SPEECHPROMPT_BUNDLE_DIR": str(bundle), "SPEECHPROMPT_ADMIN_TOKEN": TOKEN,
                    "SPEECHPROMPT_STORE": f"{redis_url}?cache_dir={self.cache}&health_check_s=0.5&timeout_s=0.5",
                    "SPEECHPROMPT_HOST": "127.0.0.1", "SPEECHPROMPT_PORT": str(self.port),
                    "SPEECHPROMPT_MAX_BATCH_WAIT_MS": "2", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "server.main"], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited:\n{self.tail()}"
            try:
                r = self.http.get("/readyz")
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def classify(self, task: str) -> httpx.Response:
        return self.http.post(f"/v1/tasks/{task}/classify", content=CLIP, headers=WAV)

    def serves(self, task: str, version: str) -> bool:
        r = self.classify(task)
        return r.status_code == 200 and r.json()["version"] == version

    def degraded(self) -> str | None:
        """The store's reason from /readyz (None when in sync); /readyz stays 200 either way."""
        r = self.http.get("/readyz")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == ("degraded" if body["store"]["degraded"] else "ready")
        return body["store"]["degraded"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replicas")
    fingerprint = make_random_bundle(folder / "bundle", seed=5)  # every replica loads this same bundle
    lm = json.loads((folder / "bundle" / "backbone.json").read_text())["unit_lm"]
    dims = dict(L=lm["layers"], d=lm["embed_dim"], V=lm["vocab_size"], plen=5, fingerprint=fingerprint)
    redis_srv = RedisServer(folder / "redis")
    redis_srv.start()
    a, b = (Replica(n, folder, folder / "bundle", redis_srv.url()) for n in ("a", "b"))
    try:
        a.start()
        b.start()
        a.wait_ready()
        b.wait_ready()
        yield redis_srv, a, b, dims
    finally:
        a.stop()
        b.stop()
        redis_srv.stop(save=False)


@contextlib.contextmanager
def traffic(replicas, tasks: list[str]):
    """Classify ``tasks`` in a loop on every replica (one thread each) while the block runs; yields the list of
    ``(replica, task, status, version or error text)`` results, complete once the block has ended."""
    results: list[tuple[str, str, int, str | None]] = []
    stop = threading.Event()

    def loop(rep: Replica) -> None:
        client = httpx.Client(base_url=f"http://127.0.0.1:{rep.port}", timeout=10)
        end = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < end and len(results) < 5000:
            for task in tasks:
                r = client.post(f"/v1/tasks/{task}/classify", content=CLIP, headers=WAV)
                results.append((rep.name, task, r.status_code,
                                r.json().get("version") if r.status_code == 200 else r.text))
        client.close()

    threads = [threading.Thread(target=loop, args=(rep,)) for rep in replicas]
    for t in threads:
        t.start()
    try:
        yield results
    finally:
        stop.set()
        for t in threads:
            t.join(15)


def put(replica: Replica, pkg) -> None:
    r = replica.http.put(f"/v1/tasks/{pkg.meta.task}", content=pkg.data, headers=ADMIN)
    assert r.status_code in (200, 201), r.text


def test_upload_to_a_is_servable_on_b_within_1s(cluster):
    _, a, b, dims = cluster
    pkg = make_package("kws", 1, C=4, **dims)
    put(a, pkg)
    took = wait_for(lambda: b.serves("kws", pkg.version), 1.0)
    assert took < 1.0
    ra, rb = a.classify("kws").json(), b.classify("kws").json()
    assert ra["label"] == rb["label"]  # same bundle, same package: the same answer on every replica
    np.testing.assert_allclose([s["score"] for s in ra["scores"]], [s["score"] for s in rb["scores"]], atol=1e-5)


def test_new_version_and_delete_propagate(cluster):
    _, a, b, dims = cluster
    v1, v2 = make_package("emo", 1, **dims), make_package("emo", 2, **dims)
    put(a, v1)
    wait_for(lambda: b.serves("emo", v1.version), 1.0)
    put(b, v2)
    assert wait_for(lambda: a.serves("emo", v2.version), 1.0) < 1.0
    assert a.http.delete("/v1/tasks/emo", headers=ADMIN).status_code == 200
    assert wait_for(lambda: b.classify("emo").status_code == 404, 1.0) < 1.0
    assert b.http.get("/v1/tasks/emo").status_code == 404


def test_redis_restart_during_traffic_fails_nothing_and_converges(cluster):
    redis_srv, a, b, dims = cluster
    v1, v2 = make_package("vad", 1, C=2, **dims), make_package("vad", 2, C=2, **dims)
    put(a, v1)
    wait_for(lambda: b.serves("vad", v1.version), 1.0)
    with traffic((a, b), ["vad"]) as results:
        silent_put(redis_srv.client(), "vad", v2)  # a change nobody hears about: only a resync finds it
        redis_srv.stop(save=True)
        wait_for(lambda: a.degraded() is not None and b.degraded() is not None, 5, step=0.05)
        assert a.http.put("/v1/tasks/vad", content=v2.data, headers=ADMIN).status_code == 503
        down_at = len(results)
        time.sleep(0.5)  # serve a while without Redis
        during = len(results) - down_at
        redis_srv.start()
        took = wait_for(lambda: all(r.serves("vad", v2.version) and r.degraded() is None for r in (a, b)), 5,
                        step=0.05)
        time.sleep(0.3)
    failed = [x for x in results if x[2] != 200]
    assert not failed, failed[:5]
    assert during > 0  # requests were answered while Redis was down
    assert {v for *_, v in results} <= {v1.version, v2.version}
    assert took <= 5.0


def test_replica_started_while_redis_is_down_serves_its_local_copy(cluster):
    redis_srv, a, b, dims = cluster
    pkg = make_package("lang", 3, C=3, **dims)
    put(a, pkg)
    wait_for(lambda: b.serves("lang", pkg.version), 1.0)
    want = a.classify("lang").json()
    b.stop()
    redis_srv.stop(save=True)
    try:
        b.start()
        ready = b.wait_ready()
        assert ready["status"] == "degraded" and "unreachable" in ready["store"]["degraded"]
        got = b.classify("lang").json()
        assert got["version"] == pkg.version and got["label"] == want["label"]
        np.testing.assert_allclose([s["score"] for s in got["scores"]], [s["score"] for s in want["scores"]],
                                   atol=1e-5)
        other = make_package("lang", 4, C=3, **dims)
        r = b.http.put("/v1/tasks/lang", content=other.data, headers=ADMIN)
        assert r.status_code == 503 and b.classify("lang").json()["version"] == pkg.version
    finally:
        redis_srv.start()
    assert wait_for(lambda: b.degraded() is None, 5, step=0.05) <= 5.0
    if b.proc is None:
        b.start()
        b.wait_ready()


def test_redis_killed_and_restarted_empty_under_load_loses_no_task(cluster):
    redis_srv, a, b, dims = cluster
    seeds = [make_package(name, 10 + i, C=2, **dims) for i, name in enumerate(("seed-a", "seed-b"))]
    for pkg in seeds:
        put(a, pkg)
        wait_for(lambda p=pkg: b.serves(p.meta.task, p.version), 1.0)
    with traffic((a, b), [p.meta.task for p in seeds]) as results:
        redis_srv.kill()
        redis_srv.start()  # empty: restarted without persistence
        r = redis_srv.client()
        wait_for(lambda: {t.decode() for t in r.hkeys("sp:tasks")} >= {"seed-a", "seed-b"}, 5, step=0.05)
        late = make_package("late", 20, C=2, **dims)
        put(b, late)  # the seeding script's next upload: must not make anyone forget seed-a / seed-b
        wait_for(lambda: a.serves("late", late.version), 2.0)
        time.sleep(0.5)
    failed = [x for x in results if x[2] != 200]
    assert results and not failed, failed[:5]
    for rep in (a, b):
        for pkg in (*seeds, late):
            assert rep.serves(pkg.meta.task, pkg.version), (rep.name, pkg.meta.task)
        assert wait_for(lambda rep=rep: rep.degraded() is None, 5, step=0.05) < 5
        ready = rep.http.get("/readyz").text
        assert str(redis_srv.port) not in ready and "copy-" not in ready

"""A REAL server process for tests that need real sockets: ``python -m server.main`` (uvicorn) on a free
loopback port with a tiny random backbone bundle and a file store, configured by environment variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from speechprompt.backbone import make_random_bundle

from .helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "live-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def stop_process(proc: subprocess.Popen | None) -> None:
    """Terminate ``proc`` (SIGTERM, then SIGKILL after 15 s) and reap it."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class LiveServer:
    """One server process in ``folder``; ``env`` adds SPEECHPROMPT_* settings."""

    def __init__(self, folder: Path, **env: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.port = folder, free_port()
        self.bundle = folder / "bundle"
        if not (self.bundle / "backbone.json").exists():
            make_random_bundle(self.bundle, seed=5)
        self.log = folder / "server.log"
        self.env = {**os.environ, "SPEECHPROMPT_BUNDLE_DIR": str(self.bundle), "SPEECHPROMPT_ADMIN_TOKEN": TOKEN,
                    "SPEECHPROMPT_STORE": str(folder / "store"), "SPEECHPROMPT_HOST": "127.0.0.1",
                    "SPEECHPROMPT_PORT": str(self.port), "SPEECHPROMPT_MAX_BATCH_WAIT_MS": "2",
                    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **env}
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def dims(self) -> dict:
        """Sizes a package for this bundle needs (make_package keyword arguments)."""
        spec = json.loads((self.bundle / "backbone.json").read_text())
        lm = spec["unit_lm"]
        return dict(L=lm["layers"], d=lm["embed_dim"], V=lm["vocab_size"], fingerprint=spec["fingerprint"])

    def __enter__(self) -> LiveServer:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "server.main"], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        stop_process(self.proc)

    def wait_ready(self, timeout: float = 90) -> None:
        """Poll /readyz until 200; fails with the server's log if it exits or times out."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None and self.proc.poll() is None, f"server exited:\n{self.tail()}"
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        """The end of the server's log."""
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

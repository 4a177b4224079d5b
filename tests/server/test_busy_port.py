"""A port already in use stops a REAL server process before it loads anything (server/main.py): uvicorn's
error line, the address in our own line, exit status 3, and no lifespan startup in the log. With the port
freed, the same settings serve (positive control)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from .live import ROOT, LiveServer

pytestmark = pytest.mark.slow


def test_a_busy_port_exits_3_before_the_backbone_loads_and_a_free_one_serves(tmp_path):
    srv = LiveServer(tmp_path / "srv")
    holder = socket.socket()
    holder.bind(("127.0.0.1", srv.port))
    holder.listen()
    try:
        proc = subprocess.run([sys.executable, "-m", "server.main"], cwd=ROOT, env=srv.env, capture_output=True,
                              text=True, timeout=120)
    finally:
        holder.close()
    log = proc.stdout + proc.stderr
    assert proc.returncode == 3, log
    assert "Address already in use" in log and f"cannot listen on 127.0.0.1:{srv.port}" in log
    assert "application startup" not in log.lower() and "precision" not in log, log
    with srv:
        assert srv.http.get("/readyz").status_code == 200

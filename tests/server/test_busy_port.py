"""A port already in use stops a REAL server process before it loads anything (server/main.py): one error line
with the address, exit status 3, and no lifespan startup in the log. With the port freed, the same settings
serve (positive control)."""

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
    assert f"cannot listen on '127.0.0.1' port {srv.port}: Address already in use" in log
    assert "application startup" not in log.lower() and "precision" not in log, log
    with srv:
        assert srv.http.get("/readyz").status_code == 200


def test_check_can_listen_names_the_address_and_leaves_the_port_free():
    from server.main import check_can_listen

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on '127.0.0.1' port {port}"):
            check_can_listen("127.0.0.1", port)
    check_can_listen("127.0.0.1", port)  # free now; the probe closes its socket, so binding again works
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))

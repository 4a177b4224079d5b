"""A REAL redis-server on loopback for the tests (start, stop with or without saving, SIGKILL and come back empty),
a TCP proxy that closes idle connections or freezes (a silently dead peer), and a put that publishes nothing (a
missed message). Used by ``test_redis_store.py`` and ``test_replicas.py``."""

from __future__ import annotations

import selectors
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .helpers import free_port, wait_for


class RedisServer:
    """One redis-server on 127.0.0.1 (no automatic saves; ``stop(save=True)`` writes an RDB that the next
    ``start`` loads, like a Redis with persistence; ``stop(save=False)`` loses everything)."""

    def __init__(self, folder: Path):
        self.dir, self.port = Path(folder), free_port()
        self.dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--daemonize", "yes", "--dir", str(self.dir),
                        "--dbfilename", "dump.rdb", "--logfile", str(self.dir / "redis.log"),
                        "--pidfile", str(self.dir / "redis.pid")], check=True, timeout=10)
        client = self.client()
        wait_for(lambda: _answers(client), 5)
        client.close()

    def kill(self) -> None:
        """SIGKILL the server and drop its RDB file: the next ``start`` comes back EMPTY (no persistence)."""
        import os
        import signal

        os.kill(int((self.dir / "redis.pid").read_text()), signal.SIGKILL)
        client = self.client()
        wait_for(lambda: not _answers(client), 5)
        client.close()
        (self.dir / "dump.rdb").unlink(missing_ok=True)
        (self.dir / "redis.pid").unlink(missing_ok=True)

    def stop(self, save: bool = True) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "save" if save else "nosave"],
                       capture_output=True, timeout=10)
        client = self.client()
        wait_for(lambda: not _answers(client), 5)
        client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))

    def url(self, port: int | None = None, **opts) -> str:
        query = "&".join(f"{k}={v}" for k, v in opts.items())
        return f"redis://127.0.0.1:{port or self.port}/0" + (f"?{query}" if query else "")


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Proxy:
    """A loopback TCP proxy to Redis that closes connections idle for ``idle_s`` (as a load balancer or NAT
    does) and can be ``frozen`` (stops forwarding, keeps sockets open: a silently dead peer)."""

    def __init__(self, target_port: int, idle_s: float | None = None):
        self.target, self.idle_s = target_port, idle_s
        self.frozen = threading.Event()
        self.closed_idle = 0
        self._stop = threading.Event()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.settimeout(0.05)
        self.port = self._srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(conn, up), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                if self.idle_s is not None and time.monotonic() - last > self.idle_s:
                    self.closed_idle += 1
                    return
                if self.frozen.is_set():
                    time.sleep(0.02)
                    continue
                for key, _ in sel.select(timeout=0.02):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
                    last = time.monotonic()
        except OSError:
            return
        finally:
            sel.close()
            a.close()
            b.close()

    def close(self) -> None:
        self._stop.set()
        self._srv.close()


def silent_put(r: redis.Redis, task: str, pkg, prefix: str = "sp:") -> None:
    """Change the state exactly as a put would, but publish nothing (a message that was missed)."""
    with r.pipeline(transaction=True) as p:
        p.set(f"{prefix}pkg:{task}:{pkg.version}", pkg.data).hset(f"{prefix}tasks", task, pkg.version)
        p.zadd(f"{prefix}versions:{task}", {pkg.version: 0}).incr(f"{prefix}seq").execute()

"""A Redis replica's local copy of the prompt store: what it last knew, to serve through Redis outages and to
restore a Redis that came back empty (``server/stores/redis_sync.py``)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from pathlib import Path

from .base import digest

log = logging.getLogger(__name__)

VERSION_RE = re.compile(r"[0-9a-f]{16}")
SUFFIX = ".safetensors"


def _atomic_write(path: Path, data: bytes, *, fsync: bool) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class LocalCopy:
    """The replica's copy of what it last knew: ``<dir>/state.json`` ({epoch, seq, tasks}) and
    ``<dir>/<task>/<version>.safetensors`` for every package it has read. Files are replaced atomically
    (package files without fsync: a torn one fails its digest check and is fetched again)."""

    def __init__(self, folder: str | os.PathLike):
        self.dir = Path(folder)
        self.lock = threading.Lock()  # one writer at a time: a save never removes a folder being written

    def load(self) -> tuple[str | None, int, dict[str, str]]:
        try:
            state = json.loads((self.dir / "state.json").read_text())
            tasks = {str(t): str(v) for t, v in state["tasks"].items() if VERSION_RE.fullmatch(str(v))}
            return state.get("epoch"), int(state.get("seq", 0)), tasks
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, 0, {}

    def save(self, epoch: str | None, seq: int, tasks: dict[str, str]) -> None:
        """Record the state (callers hold ``lock``); folders of tasks not in ``tasks`` are removed."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.dir / "state.json", json.dumps({"epoch": epoch, "seq": seq, "tasks": tasks}).encode(),
                          fsync=True)
            for d in self.dir.iterdir():  # tasks that are gone: their files go too
                if d.is_dir() and d.name not in tasks:
                    shutil.rmtree(d, ignore_errors=True)
        except OSError as e:
            log.warning("cannot write the local copy %s: %s", self.dir, e)

    def read(self, task: str, version: str) -> bytes | None:
        try:
            data = (self.dir / task / f"{version}{SUFFIX}").read_bytes()
        except OSError:
            return None
        return data if digest(data) == version else None

    def write(self, task: str, version: str, data: bytes, *, current: bool) -> None:
        """Keep ``data`` (callers hold ``lock``); when it is the task's current version, older files of the
        task are dropped."""
        d = self.dir / task
        try:
            d.mkdir(parents=True, exist_ok=True)
            _atomic_write(d / f"{version}{SUFFIX}", data, fsync=False)
            if current:
                for p in d.glob(f"*{SUFFIX}"):
                    if p.stem != version:
                        p.unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot write %s@%s to the local copy %s: %s", task, version, self.dir, e)

"""A prompt store in a folder: ``<root>/<task>/<version>.safetensors`` + ``<root>/<task>/CURRENT``.

``CURRENT`` holds the current version (16 hex). Writes are atomic: the package goes to a ``*.tmp`` file,
is fsynced and renamed (``os.replace``), then ``CURRENT`` is replaced the same way, then the folder is
fsynced. An operator may also drop a package by hand into ``<root>/<task>/`` under any name ending in
``.safetensors``: the newest choice wins, i.e. the version ``CURRENT`` names (dated by CURRENT's own
mtime) unless a complete package file was written after it (then that file's content is current).

A half-written file is never served: ``*.tmp`` files are ignored, a file named ``<16 hex>.safetensors``
must have that digest, and any file must be a complete safetensors frame (8-byte header length + JSON
header + exactly the data bytes the header declares). Digests are cached by (mtime, size), so polling a
large store costs one ``stat`` per file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from pathlib import Path

from ..errors import StoreUnavailable
from .base import PromptStore, check_task_name, digest

log = logging.getLogger(__name__)

SUFFIX = ".safetensors"
CURRENT = "CURRENT"
VERSION_RE = re.compile(r"[0-9a-f]{16}")


def complete_safetensors(data: bytes) -> bool:
    """True when ``data`` is a whole safetensors file (header parses and data ends where it says)."""
    if len(data) < 10:
        return False
    hlen = int.from_bytes(data[:8], "little")
    if hlen <= 0 or 8 + hlen > len(data):
        return False
    try:
        header = json.loads(data[8:8 + hlen])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    if not isinstance(header, dict):
        return False
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    return max(ends, default=0) == len(data) - 8 - hlen


def _fsync_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path + .tmp``, fsync it and rename it over ``path``."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore(PromptStore):
    """The default store: one folder per task, one file per version.

    A put keeps the task's newest ``keep_versions`` package files plus every version :meth:`in_use` names
    (versions this process still serves) and deletes the older ones. Puts and deletes of this process run one
    at a time (``_write_lock``), so their order is the order they return in.
    """

    def __init__(self, root: str | os.PathLike, keep_versions: int = 3):
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        self.root = Path(root)
        self.keep_versions = keep_versions
        self._digests: dict[Path, tuple[int, int, str | None]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()

    def describe(self) -> str:
        return f"folder {self.root}"

    def kind(self) -> str:
        return "folder"

    def _task_dir(self, task: str) -> Path:
        return self.root / check_task_name(task)

    def list_tasks(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and _valid_name(p.name))

    def _file_digest(self, path: Path) -> str | None:
        """Digest of a complete package file (cached by mtime+size), or None if incomplete/unreadable."""
        try:
            st = path.stat()
        except OSError:
            return None
        with self._lock:
            cached = self._digests.get(path)
        if cached and cached[:2] == (st.st_mtime_ns, st.st_size):
            return cached[2]
        try:
            data = path.read_bytes()
        except OSError:
            return None
        ver = digest(data) if complete_safetensors(data) else None
        if ver is not None and VERSION_RE.fullmatch(path.stem) and path.stem != ver:
            ver = None  # named for another content: a partial or corrupted write
        with self._lock:
            self._digests[path] = (st.st_mtime_ns, st.st_size, ver)
        return ver

    def _versions(self, task_dir: Path) -> list[tuple[int, str, Path]]:
        """(mtime, version, path) of every complete package file in a task folder."""
        out = []
        for p in task_dir.glob(f"*{SUFFIX}"):
            ver = self._file_digest(p)
            if ver is not None:
                try:
                    out.append((p.stat().st_mtime_ns, ver, p))
                except OSError:
                    continue
        return out

    def current_version(self, task: str) -> str | None:
        """The newest choice wins: CURRENT (as of its own mtime) or a complete file dropped in after it."""
        d = self._task_dir(task)
        if not d.is_dir():
            return None
        choices = [(mtime, 0, ver) for mtime, ver, _ in self._versions(d)]
        cur = d / CURRENT
        try:
            named, mtime = cur.read_text().strip(), cur.stat().st_mtime_ns
        except FileNotFoundError:
            named = None
        except OSError as e:
            log.error("cannot read %s: %s", cur, e)
            raise StoreUnavailable(f"cannot read the current version of task {task!r}; see the server log") from None
        if named is not None:
            if not (VERSION_RE.fullmatch(named) and self._file_digest(d / f"{named}{SUFFIX}") == named):
                return None  # CURRENT names a missing or partial file: nothing new is servable yet
            choices.append((mtime, 1, named))
        return max(choices)[2] if choices else None

    def read(self, task: str, version: str) -> bytes | None:
        d = self._task_dir(task)
        candidates = [d / f"{version}{SUFFIX}"] if VERSION_RE.fullmatch(version) else []
        candidates += [p for _, v, p in self._versions(d) if v == version] if d.is_dir() else []
        for path in candidates:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if digest(data) == version:
                return data
        return None

    def put(self, task: str, version: str, data: bytes) -> None:
        if digest(data) != version:
            raise ValueError(f"version {version} is not the digest of the data")
        d = self._task_dir(task)
        with self._write_lock:
            try:
                d.mkdir(parents=True, exist_ok=True)
                target = d / f"{version}{SUFFIX}"
                if self._file_digest(target) != version:
                    _fsync_write(target, data)
                else:
                    os.utime(target)  # an older version uploaded again is the newest one now
                _fsync_write(d / CURRENT, f"{version}\n".encode())
                _fsync_dir(d)
            except OSError as e:
                log.error("cannot write task %s to %s: %s", task, self.root, e)
                raise StoreUnavailable(f"cannot write task {task!r} to the store; see the server log") from None
            self._prune(task, d, version)

    def _prune(self, task: str, d: Path, current: str) -> None:
        """Delete package files beyond the newest ``keep_versions`` (never ``current`` nor a version in use)."""
        keep = {current, *self.in_use(task)}
        newest: list[str] = []
        for _, ver, path in sorted(self._versions(d), key=lambda x: x[0], reverse=True):
            if ver not in newest and len(newest) < self.keep_versions:
                newest.append(ver)
            if ver in keep or ver in newest:
                continue
            try:
                path.unlink()
            except OSError as e:
                log.warning("cannot prune %s: %s", path, e)
            with self._lock:
                self._digests.pop(path, None)

    def delete(self, task: str) -> bool:
        d = self._task_dir(task)
        with self._write_lock:
            if not d.is_dir():
                return False
            trash = self.root / f".deleted-{task}-{uuid.uuid4().hex[:8]}"
            try:
                os.replace(d, trash)  # atomic: the task disappears at once, then the files go
                shutil.rmtree(trash, ignore_errors=True)
            except OSError as e:
                log.error("cannot delete task %s from %s: %s", task, self.root, e)
                raise StoreUnavailable(f"cannot delete task {task!r} from the store; see the server log") from None
            with self._lock:
                self._digests = {p: v for p, v in self._digests.items() if p.parent != d}
        return True


def _valid_name(name: str) -> bool:
    try:
        check_task_name(name)
    except Exception:  # noqa: BLE001
        return False
    return True

"""The prompt store interface: where task prompt packages live between restarts.

A store holds, per task, immutable versions (``version`` = ``speechprompt.package.digest(bytes)``, the
first 16 hex of the sha256 of the file) and a pointer to the CURRENT one. The registry only reads the
current version; it notices changes by polling :meth:`PromptStore.snapshot` (a store with push
notifications can still implement ``snapshot`` cheaply from its own cache).

All methods block (files, network): the server calls them from worker threads, never from the event
loop. Implementations: ``server/stores/file.py`` (a folder), ``server/stores/redis_store.py`` (Redis).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from typing import Any

from speechprompt.package import TASK_NAME_RE, digest

from ..errors import InvalidTaskName

__all__ = ["PromptStore", "check_task_name", "digest"]


def check_task_name(task: str) -> str:
    """Return ``task`` if it matches ``[a-z0-9][a-z0-9_-]{0,63}``, else raise ``InvalidTaskName`` (400).

    This is what keeps names like ``../x`` or ``a/b`` out of file paths and Redis keys.
    """
    if not isinstance(task, str) or not TASK_NAME_RE.fullmatch(task):
        raise InvalidTaskName(
            f"task name {task!r} is not allowed",
            accepted="1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
        )
    return task


class PromptStore(ABC):
    """Tasks -> immutable package versions + the current version of each task."""

    @abstractmethod
    def list_tasks(self) -> list[str]:
        """Names of the tasks the store holds (sorted)."""

    @abstractmethod
    def current_version(self, task: str) -> str | None:
        """The version new requests should use, or None when the task has no complete, valid version."""

    @abstractmethod
    def read(self, task: str, version: str) -> bytes | None:
        """The bytes of ``task@version`` (their digest is checked against ``version``), or None if absent."""

    @abstractmethod
    def put(self, task: str, version: str, data: bytes) -> None:
        """Store ``data`` (whose digest is ``version``) and make it the task's current version, atomically:
        a concurrent reader sees either the old current version or the new one, never a partial file."""

    @abstractmethod
    def delete(self, task: str) -> bool:
        """Remove the task and all its versions; False if it was not there."""

    def snapshot(self) -> dict[str, str | None]:
        """The poll hook: ``{task: current version or None}`` for every task in the store.

        A task missing from the snapshot was deleted; a task mapped to None exists but has nothing servable
        right now (e.g. a file still being copied in), so the registry keeps serving what it has.
        """
        return {task: self.current_version(task) for task in self.list_tasks()}

    def describe(self) -> str:
        """Where the store is (for logs and /readyz)."""
        return type(self).__name__

    def on_change(self, callback: Callable[[], None]) -> None:
        """Push hook: ``callback()`` is called (from any thread, no arguments) whenever the snapshot may have
        changed, so the registry can refresh at once instead of at its next poll. Stores without push
        notifications never call it (the default); polling ``snapshot`` still notices every change."""

    def degraded(self) -> str | None:
        """None while the store is reachable and in sync; else a sentence saying why not. A degraded store
        still answers ``snapshot``/``read`` from its last known state (the server keeps serving: degraded
        readiness in /readyz) and refuses ``put``/``delete`` with ``StoreUnavailable``."""
        return None

    def in_use(self, task: str) -> Collection[str]:
        """Versions of ``task`` this process still serves (never pruned); set by :meth:`track_in_use`."""
        fn = getattr(self, "_in_use", None)
        return fn(task) if fn is not None else ()

    def track_in_use(self, versions_of: Callable[[str], Collection[str]]) -> None:
        """The registry's hook: ``versions_of(task)`` names the versions it serves or has in flight."""
        self._in_use = versions_of

    def details(self) -> dict[str, Any]:
        """What an operator needs to know (locations, last error): for logs and the admin endpoint only."""
        return {"where": self.describe()}

    def kind(self) -> str:
        """A word for the kind of store (``folder``, ``redis``): what unauthenticated endpoints may show."""
        return "store"

    def units_cache(self, local: Any) -> Any:
        """The units cache the batcher should use: ``local`` (a ``server.units_cache.UnitsCache``) by default;
        a shared store may return a wrapper with the same interface (get/put/capacity/hits/misses)."""
        return local

    def close(self) -> None:
        """Release connections (no-op for stores without any)."""

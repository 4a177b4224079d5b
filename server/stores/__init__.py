"""Prompt stores: where task prompt packages live (a folder, or Redis). ``open_store`` picks one by URL."""

from __future__ import annotations

from .base import PromptStore


def open_store(location: str, *, keep_versions: int = 3) -> PromptStore:
    """``redis://...`` / ``rediss://...`` -> Redis store; anything else is a folder path -> FileStore.

    ``keep_versions``: stored versions kept per task (a Redis URL's own ``keep_versions`` option wins)."""
    if location.startswith(("redis://", "rediss://", "unix://")):
        from .redis_store import RedisStore  # imported only when asked for (redis-py is not needed otherwise)

        return RedisStore.from_url(location, keep_versions=keep_versions)
    from .file import FileStore

    return FileStore(location, keep_versions=keep_versions)


__all__ = ["PromptStore", "open_store"]

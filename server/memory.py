"""Giving memory back after a burst: glibc keeps freed heap pages (decode buffers, request bodies, torch
temporaries) in its arenas, so RSS stays at the burst's peak for good. ``malloc_trim(0)`` returns the free
pages to the OS; the service calls :func:`trim` once the server is idle after serving requests."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_libc = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _libc.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
    _libc = None


def trim() -> bool:
    """Return free heap memory to the OS (glibc ``malloc_trim``); False where that is not available."""
    if _libc is None:
        return False
    return bool(_libc.malloc_trim(0))


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux ``/proc``), in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0

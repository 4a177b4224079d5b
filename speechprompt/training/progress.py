"""Progress for the command-line glue: a tqdm bar on a terminal, plain periodic lines anywhere else.

tqdm redraws its bar with carriage returns; written to a file or a pipe (a log, ``| tee``, CI) that becomes one
ever-growing line (~100 kB per training run). :func:`progress` returns a tqdm bar when the stream is a terminal
and a :class:`LineProgress` otherwise: one line ``desc: n/total unit (rate/s) key=value ...`` every
``interval_s`` seconds and one at the end, each ending in a newline.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class LineProgress:
    """The part of tqdm's interface the commands use (``update``, ``set_postfix``, ``set_description``, ``refresh``,
    ``total``, ``n``, ``close``, context manager), printed as plain lines."""

    def __init__(self, desc: str = "", total: int | None = None, unit: str = "it", *, file: TextIO | None = None,
                 interval_s: float = 10.0, **_: Any):
        self.desc, self.total, self.unit, self.n = desc, total, unit, 0
        self.file = file if file is not None else sys.stderr
        self.interval_s = interval_s
        self.postfix: dict[str, Any] = {}
        self._start = self._last = time.monotonic()
        self._closed = False

    def update(self, k: int = 1) -> None:
        """Advance by ``k``; print a line when ``interval_s`` has passed since the last one."""
        self.n += k
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._print()

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = True, **kw: Any) -> None:
        """Values shown after the count (printed with the next line, not on their own)."""
        self.postfix = {**(values or {}), **kw}

    def set_description(self, desc: str, refresh: bool = True) -> None:
        """The label printed before the count from the next line on."""
        self.desc = desc

    def refresh(self) -> None:
        """Print a line now (tqdm's ``refresh``: e.g. the last state of one run before the next one starts, which a
        run shorter than ``interval_s`` would otherwise never show)."""
        if not self._closed:
            self._last = time.monotonic()
            self._print()

    def close(self) -> None:
        """Print the final line (once)."""
        if not self._closed:
            self._closed = True
            self._print()

    def _print(self) -> None:
        elapsed = time.monotonic() - self._start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        rate = f" ({self.n / elapsed:.1f} {self.unit}/s)" if elapsed > 0 else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {count} {self.unit}{rate} {elapsed:.0f} s{extra}", file=self.file, flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _iterate(bar: Any, iterable: Any):
    with bar:
        for item in iterable:
            yield item
            bar.update(1)


def progress(iterable: Any = None, *, file: TextIO | None = None, **kw: Any) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` otherwise (same keyword arguments: ``desc``,
    ``total``, ``unit``). With ``iterable``, returns an iterator over it that advances the progress."""
    stream = file if file is not None else sys.stderr
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(iterable, file=stream, **kw)
    if iterable is not None:
        kw.setdefault("total", len(iterable) if hasattr(iterable, "__len__") else None)
        return _iterate(LineProgress(file=stream, **kw), iterable)
    return LineProgress(file=stream, **kw)

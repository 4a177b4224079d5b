"""Which build a resumable build's stage files belong to: ``<work>/stages.json``, one key per stage.

A build that resumes from a ``--work`` folder (``build_default.py``) reuses a stage file only when the settings that
made it are the ones asked for now. Each stage is *claimed* (its key written) before its file is made, so the pieces
an interrupted stage left behind (``twins-000.npz``, ...) are checked too. A stage file with no record (a folder
made before these records existed) is adopted once, with a message, and recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

RECORD = "stages.json"


class StageMismatch(ValueError):
    """A stage file in the work folder was made with other settings than this build asks for.

    ``stage``: its name; ``differs``: ``{setting: (recorded, asked)}``.
    """

    def __init__(self, work: Path, stage: str, differs: dict[str, tuple]):
        self.stage, self.differs = stage, differs
        what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(differs.items()))
        super().__init__(f"{work} holds stage '{stage}' of another build ({what}); resume only the same build: give "
                         f"a new --work folder, or delete that one to start over")


def digest_file(path: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a file's bytes (a stage key's input file, e.g. a corpus manifest)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class Stages:
    """The stage records of one work folder (``<work>/stages.json``, written atomically)."""

    def __init__(self, work: str | Path, say: Callable[[str], None] = print):
        self.work, self.say = Path(work), say
        path = self.work / RECORD
        self.keys: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}

    def claim(self, stage: str, key: dict, made: bool) -> None:
        """Check ``stage`` against its record, then record ``key`` for it.

        ``made``: whether any file of the stage is already in the work folder. Raises :class:`StageMismatch` when
        the recorded key differs from ``key``; a made stage with no record is adopted (with a message).
        """
        key = json.loads(json.dumps(key))  # the form it has once read back (tuples -> lists)
        old = self.keys.get(stage)
        if old is not None and old != key:
            differs = {k: (old.get(k), key.get(k)) for k in sorted(set(old) | set(key)) if old.get(k) != key.get(k)}
            raise StageMismatch(self.work, stage, differs)
        if old is None:
            if made:
                self.say(f"stage '{stage}': files without a record in {self.work}, taken as this build's")
            self.keys[stage] = key
            tmp = self.work / f"{RECORD}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(self.keys, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.work / RECORD)


__all__ = ["RECORD", "StageMismatch", "Stages", "digest_file"]

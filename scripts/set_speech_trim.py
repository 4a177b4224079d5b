#!/usr/bin/env python
r"""Name a speech trim in a task's package of a filesystem store (the served version becomes a new one).

    python scripts/set_speech_trim.py --store prompts_store --task vad --trim 0.5:0.25   # the vad demo, trimmed
    python scripts/set_speech_trim.py --store prompts_store --task vad --trim none       # back to the whole clip
    python scripts/set_speech_trim.py --task vad --trim 0.5:0.25 --when recording      # only for whole recordings
    (--when defaults to the current trim's: the committed vad and language-id demos name theirs for recordings)

The package's tensors stay; its ``speech_trim`` metadata (``speechprompt/speech_trim.py``: threshold and margin from
``--trim``, the other settings their defaults; ``--when recording``: applied only when a request says the clip is a
whole recording, ``speech_trim=recording``) changes, so its version (content digest) does too. The new version is
written, then ``CURRENT`` is replaced atomically; the old version's file stays (a running server may be serving it)
unless ``--prune`` (a demo store keeps one version per task).
A server then scores the task on the clip without its room-tone edges (``server/speech_trims.py``). What it gains and
costs the vad demo (which, as committed, names no trim): docs/results.md, "The trim as a task's own setting".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.package import read_package, with_metadata  # noqa: E402
from speechprompt.speech_trim import TRIM_WHEN, SpeechTrim  # noqa: E402
from speechprompt.training.manifest import replace_file  # noqa: E402


def set_trim(store: Path, task: str, trim: SpeechTrim | None, prune: bool = False, when: str | None = None) -> str:
    """Make ``task``'s current package in the file store ``store`` name ``trim`` (None: no trim), applied ``when``
    (``always`` or ``recording``; None: as the current package's trim, ``always`` when it has none) -> the new
    version; ``prune``: remove the task's other versions' files. Raises ``FileNotFoundError`` when the store has no
    current version of ``task``."""
    folder = store / task
    version = (folder / "CURRENT").read_text().strip()
    pkg = read_package((folder / f"{version}.safetensors").read_bytes(), stored=True)  # as the server reads it
    when = when or pkg.meta.trim_when
    new = with_metadata(pkg, speech_trim={**trim.to_dict(), "when": when} if trim else {})
    replace_file(folder / f"{new.version}.safetensors", new.data)
    replace_file(folder / "CURRENT", (new.version + "\n").encode())
    for old in folder.glob("*.safetensors"):
        if prune and old.stem != new.version:
            old.unlink()
    return new.version


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=ROOT / "prompts_store")
    ap.add_argument("--task", required=True)
    ap.add_argument("--trim", required=True, help="THRESHOLD:MARGIN_S (e.g. 0.5:0.25) or none")
    ap.add_argument("--when", choices=TRIM_WHEN, default=None,
                    help="always (every clip) or recording (only when a request says speech_trim=recording); "
                         "default: as the task's current trim (always when it has none)")
    ap.add_argument("--prune", action="store_true", help="remove the task's other versions' files")
    a = ap.parse_args()
    try:
        trim = SpeechTrim.parse(a.trim)
    except ValueError as e:
        ap.error(str(e))
    if trim is None and a.when is not None:
        ap.error("--when names when a trim applies; --trim none removes the trim")
    try:
        version = set_trim(a.store, a.task, trim, a.prune, a.when)
    except FileNotFoundError:
        ap.error(f"{a.store} has no current version of task {a.task!r} (a filesystem store: <store>/<task>/CURRENT)")
    when = read_package((a.store / a.task / f"{version}.safetensors").read_bytes()).meta.trim_when
    named = f"speech trim {a.trim}" + (" for recordings" if when == "recording" else "")
    sys.stdout.write(f"{a.task}: {version} ({named if trim else 'no speech trim'})\n")


if __name__ == "__main__":
    main()

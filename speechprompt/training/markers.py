"""Generated blocks in markdown docs: the text between two HTML-comment markers is rewritten by a script.

Used by ``scripts/run_suite.py``, ``compare_backbones.py``, ``data_scaling.py`` and the model-card scripts, so that
every number in those blocks is copied from a run and never typed by hand.
"""

from __future__ import annotations

from pathlib import Path


def replace_block(path: Path, begin: str, end: str, block: str, *, keep_markers: bool = True,
                  create: bool = True) -> str:
    """Rewrite ``path`` with ``block`` between the markers ``begin`` and ``end``; returns the new text.

    ``keep_markers``: the markers stay and ``block`` goes between them (a newline after ``begin``); otherwise
    ``block`` replaces the markers too (it must then carry its own). ``create``: markers missing from the file (or a
    missing file) are appended; otherwise ``ValueError`` names the file and the missing marker.
    """
    text = path.read_text() if path.exists() else ""
    missing = [m for m in (begin, end) if m not in text]
    if missing:
        if not create:
            raise ValueError(f"{path} has no marker {missing[0]!r}")
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    new = head + (f"{begin}\n{block}{end}" if keep_markers else block) + tail
    path.write_text(new)
    return new

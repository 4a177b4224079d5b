#!/usr/bin/env python
"""Build the real-human-speech corpus of issue 14 from its Debian allow-list (speechprompt/training/real_corpus.py).

    python scripts/build_real_corpus.py                       # every allow-listed package into .cache/real_corpus
    python scripts/build_real_corpus.py --cache /tmp/rc --packages asterisk-core-sounds-es-g722 --workers 2

Downloads with ``apt-get download`` (skipped for a ``.deb`` already in ``<cache>/debs/``), extracts with
``dpkg-deb -x``, converts to 16 kHz mono WAV (skipped for clips already converted: rerun to resume) and writes
``<cache>/manifest.jsonl`` and ``<cache>/sources.json``. A package off the allow-list is refused.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.training.real_corpus import (  # noqa: E402
    ALLOWED_PACKAGES,
    DEFAULT_CACHE,
    RealCorpusError,
    build_corpus,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder (default: %(default)s)")
    ap.add_argument("--packages", nargs="+", default=list(ALLOWED_PACKAGES),
                    help="allow-listed packages to include (default: all)")
    ap.add_argument("--workers", type=int, default=2, help="conversion processes (default: %(default)s)")
    ap.add_argument("--no-fetch", action="store_true", help="use only packages already extracted in the cache")
    args = ap.parse_args(argv)
    t0 = time.time()

    def progress(msg: str) -> None:
        sys.stdout.write(f"[{time.time() - t0:7.1f}s] {msg}\n")
        sys.stdout.flush()

    try:
        report = build_corpus(args.cache, args.packages, workers=args.workers, progress=progress,
                              fetch=not args.no_fetch)
    except RealCorpusError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    rows = report.rows
    hours = sum(r["duration"] for r in rows) / 3600.0
    kinds = Counter(r["kind"] for r in rows)
    speakers = {r["speaker"] for r in rows if r["kind"] == "speech"}
    progress(f"{len(rows)} clips ({kinds['speech']} speech, {kinds['nonspeech']} non-speech), {hours:.2f} h, "
             f"{len(speakers)} speakers; converted {report.converted}, already there {report.skipped}, "
             f"duplicates dropped {report.duplicates}; {time.time() - t0:.0f} s")
    progress(f"manifest: {args.cache / 'manifest.jsonl'}; sources: {args.cache / 'sources.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Write a copy of a speech_embedding bundle whose encoder settings name a level floor (``speechprompt/level.py``):

    python scripts/set_level_floor.py models/default --out models/default-v8 --peak 0.25 \
        --name speechprompt-default-v8        # how v8 was made from v7's weights (docs/model_card.md)

The weight files are written again unchanged, so the fingerprint stays the source's and every task package of the
source loads on the copy; ``backbone.json``'s encoder settings, ``settings_digest`` and name change, and with them the
units-cache key (``Backbone.units_key``). The source's precision gate is not copied (it was measured on the source's
units): rerun ``bench/precision_gate.py`` on the copy. ``--peak 0`` writes the copy without a floor. ``build-default --level-floor``
writes the same setting into a new build. Exits 2 (with the reason) for a bundle that is not speech_embedding, or
when the copy's fingerprint would differ from the source's.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.backbone import Backbone, save_backbone  # noqa: E402
from speechprompt.level import LevelFloor  # noqa: E402
from speechprompt.speech_embedding import SpeechEmbeddingConfig  # noqa: E402


def with_level_floor(src: Path, out: Path, peak: float, max_gain_db: float, name: str | None) -> str:
    """Copy bundle ``src`` to ``out`` with the floor (``peak`` 0: none) and ``name``; returns the fingerprint.
    Raises ``ValueError`` for another dense model, an invalid floor or a fingerprint that would change."""
    bb = Backbone.load(src)
    if not isinstance(bb.spec.encoder, SpeechEmbeddingConfig):
        raise ValueError(f"{src} has a {getattr(bb.spec.encoder, 'type', 'hubert')} dense model; the level floor is a "
                         "speech_embedding setting")
    floor = LevelFloor(peak, max_gain_db) if peak else None
    bb.spec = dataclasses.replace(bb.spec, encoder=dataclasses.replace(bb.spec.encoder, level_floor=floor),
                                  name=name or bb.spec.name)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fp = save_backbone(bb, tmp)
    if fp != bb.fingerprint:
        shutil.rmtree(tmp)
        raise ValueError(f"the copy's weights differ from {src}'s (fingerprint {fp[:16]}, not {bb.fingerprint[:16]})")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return fp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder to write (replaced)")
    ap.add_argument("--peak", type=float, default=0.25, help="the floor's peak, in (0, 1]; 0: no floor")
    ap.add_argument("--max-gain-db", type=float, default=40.0, help="the most a clip is raised (dB)")
    ap.add_argument("--name", default=None, help="the copy's bundle name (default: the source's)")
    a = ap.parse_args()
    try:
        fp = with_level_floor(a.bundle, a.out, a.peak, a.max_gain_db, a.name)
    except ValueError as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(2)
    sys.stdout.write(f"{a.out}: fingerprint {fp[:16]} (unchanged), level floor {a.peak or 'none'}\n")


if __name__ == "__main__":
    main()

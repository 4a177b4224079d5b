#!/usr/bin/env python
"""Write a copy of a speech_embedding bundle with other encoder settings: a level floor (``speechprompt/level.py``)
and an edge gate (``speechprompt/edge_gate.py``); a setting not named is the source's.

    python scripts/set_encoder_settings.py models/default --out models/default-v8 --peak 0.25 \
        --name speechprompt-default-v8        # how v8 was made from v7's weights (docs/model_card.md)
    python scripts/set_encoder_settings.py models/default --out models/default-v9 --edge-gate 0:0.2 \
        --name speechprompt-default-v9        # how v9 was made from v8 (docs/model_card.md)

The weight files are written again unchanged, so the fingerprint stays the source's and every task package of the
source loads on the copy; ``backbone.json``'s encoder settings, ``settings_digest`` and name change, and with them the
units-cache key (``Backbone.units_key``). The source's precision gate is not copied (it was measured on the source's
units): rerun ``bench/precision_gate.py`` on the copy. ``--peak 0`` writes the copy without a floor, ``--edge-gate
none`` without a gate. ``build-default --level-floor / --edge-gate`` write the same settings into a new build. Exits 2
(with the reason) for a bundle that is not speech_embedding, an invalid setting, or when the copy's fingerprint would
differ from the source's.
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
from speechprompt.edge_gate import EdgeGate  # noqa: E402
from speechprompt.level import LevelFloor  # noqa: E402
from speechprompt.speech_embedding import SpeechEmbeddingConfig  # noqa: E402

KEEP = object()  # a setting the command line did not name: the source's


def with_settings(src: Path, out: Path, name: str | None, floor=KEEP, gate=KEEP) -> str:
    """Copy bundle ``src`` to ``out`` with ``floor`` (a ``LevelFloor`` or None) and ``gate`` (an ``EdgeGate`` or
    None), each ``KEEP`` for the source's, and ``name``; returns the fingerprint. Raises ``ValueError`` for another
    dense model or a fingerprint that would change."""
    bb = Backbone.load(src)
    if not isinstance(bb.spec.encoder, SpeechEmbeddingConfig):
        raise ValueError(f"{src} has a {getattr(bb.spec.encoder, 'type', 'hubert')} dense model; the level floor and "
                         "the edge gate are speech_embedding settings")
    changes = {k: v for k, v in (("level_floor", floor), ("edge_gate", gate)) if v is not KEEP}
    bb.spec = dataclasses.replace(bb.spec, encoder=dataclasses.replace(bb.spec.encoder, **changes),
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
    ap.add_argument("--out", type=Path, required=True, help="folder to write (replaced: other files in it, such as "
                    "a precision_gate.json, are removed, also when it is the source)")
    ap.add_argument("--peak", type=float, default=None, help="the level floor's peak, in (0, 1]; 0: no floor")
    ap.add_argument("--max-gain-db", type=float, default=40.0, help="with --peak: the most a clip is raised (dB)")
    ap.add_argument("--edge-gate", default=None, help="THRESHOLD:MIN_RUN_S (v9: 0:0.2) or none")
    ap.add_argument("--name", default=None, help="the copy's bundle name (default: the source's)")
    a = ap.parse_args()
    try:
        floor = KEEP if a.peak is None else LevelFloor(a.peak, a.max_gain_db) if a.peak else None
        gate = KEEP if a.edge_gate is None else EdgeGate.parse(a.edge_gate)
        fp = with_settings(a.bundle, a.out, a.name, floor, gate)
    except ValueError as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(2)
    enc = Backbone.load(a.out).spec.encoder
    sys.stdout.write(f"{a.out}: fingerprint {fp[:16]} (unchanged), level floor "
                     f"{enc.level_floor.to_dict() if enc.level_floor else 'none'}, edge gate "
                     f"{enc.edge_gate.to_dict() if enc.edge_gate else 'none'}\n")


if __name__ == "__main__":
    main()

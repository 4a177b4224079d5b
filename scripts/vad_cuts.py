#!/usr/bin/env python
"""VAD on cut clips: the held-out ``vad`` test clips of ``scripts/real_speech_eval.py``, cut at random points.

A detector meets audio cut anywhere (a microphone buffer, a looped recording, a stream window), while the test split
holds whole prompts. This draws two windows per test clip in each length band (``speechprompt/training/cuts.py``;
a speech window that fell into a pause is dropped, so every ``speech`` cut holds >= 0.4 s of audio near the clip's
peak), writes them with a manifest under ``--out``, and scores each package on the whole clips and on each band
with ``speechprompt eval`` (the serving path). Nothing here trains anything.

    python scripts/vad_cuts.py --packages .cache/real_eval/new/packages/vad.v2.safetensors
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.training import cuts  # noqa: E402
from speechprompt.training import manifest as M  # noqa: E402

BANDS = {"1.0-1.5 s": (1.0, 1.5), "2.3-2.6 s": (2.3, 2.6)}


def make_cuts(manifest: Path, out: Path, per_clip: int = 2) -> dict[str, Path]:
    """Cut test manifests, one per band: ``{band: manifest path}`` (clips named by the source clip's bytes)."""
    tests = [e for e in M.read_manifest(manifest) if e.split == "test"]
    rows: dict[str, list] = {band: [] for band in BANDS}
    for e in tests:
        y = M.load_audio(e.path)
        clip = hashlib.sha256(Path(e.path).read_bytes()).hexdigest()
        for band, (lo, hi) in BANDS.items():
            folder = out / band.replace(" ", "")
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_clip):
                key = int(hashlib.sha256(f"{clip}:{band}:{j}".encode()).hexdigest()[:8], 16)
                kw = dict(low_s=lo, high_s=hi)
                c = cuts.speech_cut(y, key, **kw) if e.label == "speech" else cuts.random_cut(y, key, **kw)
                if c is not None:
                    path = folder / f"{clip[:16]}-{j}.wav"
                    sf.write(path, c, 16000)
                    rows[band].append((str(path), e.label, "test"))
    made = {}
    for band, band_rows in rows.items():
        made[band] = out / band.replace(" ", "") / "manifest.csv"
        with open(made[band], "w", newline="") as fh:
            csv.writer(fh).writerows([("path", "label", "split"), *band_rows])
    return made


def score(package: Path, manifest: Path, backbone: Path) -> dict:
    """``speechprompt eval`` of one package on one manifest's test split -> its metrics JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.json"
        subprocess.run([sys.executable, "-m", "speechprompt_cli", "eval", str(package), str(manifest), "--backbone",
                        str(backbone), "--json", str(out)], check=True, capture_output=True, cwd=ROOT)
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", type=Path, default=ROOT / ".cache" / "real_eval", help="real_speech_eval.py's --work")
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "vad_cuts", help="where the cut clips go")
    ap.add_argument("--packages", required=True, help="comma-separated vad packages to score")
    ap.add_argument("--backbone", type=Path, default=ROOT / "models" / "default")
    a = ap.parse_args()
    manifest = a.eval / "tasks" / "vad" / "manifest.csv"
    sets = {"whole clips": manifest, **make_cuts(manifest, a.out)}
    sys.stdout.write("| package | set | clips | accuracy | speech recall | noise recall |\n|---|---|---|---|---|---|\n")
    for pkg in [Path(p) for p in a.packages.split(",") if p]:
        for name, man in sets.items():
            m = score(pkg, man, a.backbone)
            pc = m["per_class"]
            sys.stdout.write(f"| {m['version']} | {name} | {m['n']} | {m['accuracy']:.3f} | "
                             f"{pc['speech']['recall']:.3f} ({pc['speech']['support']}) | "
                             f"{pc['noise']['recall']:.3f} ({pc['noise']['support']}) |\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""VAD on cut clips: the held-out ``vad`` test clips of ``scripts/real_speech_eval.py``, cut at random points.

A detector meets audio cut anywhere (a microphone buffer, a looped recording, a stream window), while the test split
holds whole prompts. This draws two windows per test clip in each length band (``speechprompt/training/cuts.py``;
a speech window that fell into a pause is dropped, so every ``speech`` cut holds >= 0.4 s of audio near the clip's
peak), writes them with a manifest under ``--out``, and scores each package on the whole clips and on each band
with ``speechprompt eval`` (the serving path). The ``mixed`` set joins every held-out speech clip to a held-out
non-speech clip (``speechprompt/training/mixes.py``: order drawn, speech first in about half, a pause of up to 0.3 s;
the noise cut to at most 2.5 s), labelled ``speech``: a voice followed or preceded by a sound, scored per order. The
``joined`` set joins two held-out sounds the same way, labelled ``noise``.
Nothing here trains anything.

    python scripts/vad_cuts.py --packages .cache/real_eval/new/packages/vad.v2.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.training import cuts, mixes, real_tasks  # noqa: E402
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
                key = real_tasks.text_key(f"{clip}:{band}:{j}")
                kw = dict(low_s=lo, high_s=hi)
                c = cuts.speech_cut(y, key, **kw) if e.label == "speech" else cuts.random_cut(y, key, **kw)
                if c is not None:
                    path = folder / f"{clip[:16]}-{j}.wav"
                    M.write_wav(path, c, 16000)
                    rows[band].append((str(path), e.label, "test"))
    made = {}
    for band, band_rows in rows.items():
        made[band] = out / band.replace(" ", "") / "manifest.csv"
        M.write_csv(made[band], band_rows, header=("path", "label", "split"))
    return made


def make_mixed(manifest: Path, out: Path) -> dict[str, Path]:
    """The ``mixed`` test manifests, one per order (``{"mixed, speech first": path, "mixed, noise first": path}``):
    one clip per held-out speech clip, joined to a held-out non-speech clip drawn from the speech clip's bytes (the
    same pairs wherever the corpus lies), all labelled ``speech``."""
    tests = [e for e in M.read_manifest(manifest) if e.split == "test"]
    noise = [e for e in tests if e.label == "noise"]
    folder = out / "mixed"
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {"mixed, speech first": [], "mixed, noise first": []}
    for e in [e for e in tests if e.label == "speech"]:
        clip = hashlib.sha256(Path(e.path).read_bytes()).hexdigest()
        key = int(clip[:8], 16)
        other = noise[key % len(noise)].path
        y, speech_first = mixes.mix(M.load_audio(e.path), M.load_audio(other), key)
        pair = hashlib.sha256(clip.encode() + Path(other).read_bytes()).hexdigest()  # both clips' bytes name it
        path = folder / f"{pair[:16]}.wav"
        if not path.exists():
            M.write_wav(path, y, 16000)
        rows["mixed, speech first" if speech_first else "mixed, noise first"].append((str(path), "speech", "test"))
    made = {}
    for name, order_rows in rows.items():
        made[name] = folder / f"{name.split(', ')[1].replace(' ', '-')}.csv"
        M.write_csv(made[name], order_rows, header=("path", "label", "split"))
    return made


def make_joined(manifest: Path, out: Path) -> dict[str, Path]:
    """The ``joined`` test manifest (``{"joined sounds": path}``): as many clips as there are held-out non-speech
    clips, each two different held-out sounds joined like a mix (``mixes.write_mixes(label="noise")``, seed 0),
    labelled ``noise``: does a package call any clip of two sounds ``speech``?"""
    tests = [e for e in M.read_manifest(manifest) if e.split == "test"]
    n = sum(e.label == "noise" for e in tests)
    rows = mixes.write_mixes(tests, out / "joined", n, seed=0, split="test", label="noise")
    path = out / "joined" / "joined.csv"
    M.write_csv(path, rows, header=("path", "label", "split"))
    return {"joined sounds": path}


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
    ap.add_argument("--sets", default="whole,cut,mixed,joined", help="which sets to score: whole, cut, mixed, joined")
    a = ap.parse_args()
    manifest = a.eval / "tasks" / "vad" / "manifest.csv"
    wanted = set(a.sets.split(","))
    if not wanted or not wanted <= {"whole", "cut", "mixed", "joined"}:
        ap.error(f"--sets: {a.sets!r}; accepted: a comma-separated subset of whole, cut, mixed, joined")
    sets = {"whole clips": manifest} if "whole" in wanted else {}
    if "cut" in wanted:
        sets |= make_cuts(manifest, a.out)
    if "mixed" in wanted:
        sets |= make_mixed(manifest, a.out)
    if "joined" in wanted:
        sets |= make_joined(manifest, a.out)
    sys.stdout.write("| package | set | clips | accuracy | speech recall | noise recall |\n|---|---|---|---|---|---|\n")
    for pkg in [Path(p) for p in a.packages.split(",") if p]:
        for name, man in sets.items():
            m = score(pkg, man, a.backbone)
            pc = m["per_class"]
            recall = {c: f"{pc[c]['recall']:.3f} ({pc[c]['support']})" if pc[c]["support"] else "-"
                      for c in ("speech", "noise")}
            sys.stdout.write(f"| {m['version']} | {name} | {m['n']} | {m['accuracy']:.3f} | "
                             f"{recall['speech']} | {recall['noise']} |\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()

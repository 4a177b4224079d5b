"""The agreement gate of the precision modes on a bundle, recorded next to it (``precision_gate.json``).

Clips: every ``test`` row of the suite's manifests (``.cache/suite/*/manifest.csv``) and of the real-speech
evaluation's manifests (``.cache/real_eval/tasks/*/manifest.csv``: speakers held out by
``real_corpus.speaker_split``, written by ``scripts/real_speech_eval.py``), each file once; where neither exists
(e.g. the GPU machine), ``--synthetic N`` speech-like clips. Tasks: every demo package in the store. For each mode:
frame-unit agreement with fp32, label agreement per task, max probability difference, speed-up over fp32 in the
same run (``speechprompt/precision_gate.py``). The server's ``auto`` precision reads the result.

    python bench/precision_gate.py                                   # models/default + prompts_store, CPU
    python bench/precision_gate.py --device cuda --modes bf16 --synthetic 200 --out $OUT/precision_gate.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import loadgen  # noqa: E402

from speechprompt.audio import decode_audio  # noqa: E402
from speechprompt.package import read_package  # noqa: E402
from speechprompt.precision import BF16_FLAGS, GATE_FILE, INT8_FLAGS, bundle_ids, cpu_flags  # noqa: E402
from speechprompt.precision_gate import THRESHOLDS, agreement, measure  # noqa: E402
from speechprompt.runtime import Runtime  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def test_clips(manifests: list[Path]) -> list[str]:
    """Paths of the ``test`` rows of the manifests, each once, in a stable order."""
    paths: set[str] = set()
    for m in manifests:
        with m.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get("split") == "test":
                    p = Path(row["path"])
                    paths.add(str(p if p.is_absolute() else m.parent / p))
    return sorted(paths)


def store_packages(store: Path) -> dict[str, object]:
    """``{task: TaskPackage}``: the CURRENT version of every task in a file store folder."""
    out = {}
    for cur in sorted(store.glob("*/CURRENT")):
        digest = cur.read_text().strip()
        out[cur.parent.name] = read_package((cur.parent / f"{digest}.safetensors").read_bytes())
    return out


def load(bundle: Path, device: str, mode: str, packages: dict) -> Runtime:
    rt = Runtime.load(bundle, device=device, precision=mode)
    for task, pkg in packages.items():
        rt.add_task(task, pkg)
    return rt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=ROOT / "models/default")
    ap.add_argument("--store", type=Path, default=ROOT / "prompts_store")
    ap.add_argument("--suite", type=Path, default=ROOT / ".cache/suite")
    ap.add_argument("--real", type=Path, default=ROOT / ".cache/real_eval/tasks")
    ap.add_argument("--modes", default="bf16,int8,fp32/bf16,bf16/fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-clips", type=int, default=0, help="0: all test clips")
    ap.add_argument("--synthetic", type=int, default=0, help="speech-like clips to add (always, or where no corpus)")
    ap.add_argument("--out", type=Path, default=None, help=f"default: <bundle>/{GATE_FILE}")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    suite = test_clips(sorted(a.suite.glob("*/manifest.csv")))
    real = test_clips(sorted(a.real.glob("*/manifest.csv")))
    paths = suite + [p for p in real if p not in set(suite)]
    if a.max_clips:
        paths = paths[:: max(1, len(paths) // a.max_clips)][: a.max_clips]
    wavs = [decode_audio(Path(p).read_bytes()).samples for p in paths]
    wavs = [w for w in wavs if w.size >= 400]
    wavs += [loadgen.speech_like(1.0 + (i % 4) * 0.5, i).astype(np.float32) / 32768 for i in range(a.synthetic)]
    packages = store_packages(a.store)
    tasks = sorted(packages)
    log(f"{len(wavs)} clips ({len(suite)} suite test, {len(real)} real-speech test, {a.synthetic} synthetic), "
        f"tasks {tasks}")
    ref_rt = load(a.bundle, a.device, "fp32", packages)
    ref = measure(ref_rt, wavs, tasks)
    log(f"fp32: {ref.seconds:.1f} s")
    flags = cpu_flags()
    result = {"fingerprint": ref_rt.fingerprint, "bundle": ref_rt.backbone.spec.name,
              "settings_digest": bundle_ids(a.bundle)[1],
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
              "device": a.device if a.device != "cpu" else platform.processor() or platform.machine(),
              "cpu_flags": sorted(f for f in flags if f in BF16_FLAGS + INT8_FLAGS or f.startswith("avx")),
              "threads": a.threads, "thresholds": THRESHOLDS, "tasks": tasks,
              "clips": {"suite_test": len(suite), "real_test": len(real), "synthetic": a.synthetic,
                        "used": len(wavs), "frames": sum(int(f.numel()) for f in ref.frames)},
              "reference_seconds": ref.seconds, "modes": {}}
    del ref_rt
    for mode in [m for m in a.modes.split(",") if m]:
        rt = load(a.bundle, a.device, mode, packages)
        # warm once on a few clips so one-off kernel set-up is not charged to the mode
        measure(rt, wavs[:4], tasks[:1])
        r = agreement(ref, measure(rt, wavs, tasks), rt)
        result["modes"][mode] = r
        log(f"{mode}: passed {r['passed']}, units {r['units_agree']:.4f}, labels min {r['min_labels_agree']:.4f}, "
            f"max dp {r['max_prob_diff']:.4f} (same units {r['max_prob_diff_same_units']:.4f}), {r['speedup']:.2f}x")
        del rt
    out = a.out or a.bundle / GATE_FILE
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(render(result))


def render(r: dict) -> str:
    """Markdown table of a gate result."""
    lines = [f"Agreement gate, {r['bundle']} ({r['fingerprint'][:16]}), {r['date']}, {r['device']}, torch {r['torch']}, "
             f"{r['threads']} thread(s); {r['clips']['used']} clips ({r['clips']['frames']} frames), tasks "
             f"{', '.join(r['tasks'])}; fp32 run {r['reference_seconds']:.1f} s", "",
             "| mode | passed | frame units = fp32 | labels = fp32 (min over tasks) | per task | max abs prob diff "
             "(same units) | speed-up vs fp32 (gate run) |", "|---|---|---|---|---|---|---|"]
    for mode, m in r["modes"].items():
        per = ", ".join(f"{t} {v:.4f}" for t, v in m["labels_agree"].items())
        lines.append(f"| {mode} | {'yes' if m['passed'] else 'NO'} | {m['units_agree']:.4f} | "
                     f"{m['min_labels_agree']:.4f} | {per} | {m['max_prob_diff']:.4f} "
                     f"({m['max_prob_diff_same_units']:.4f}) | {m['speedup']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

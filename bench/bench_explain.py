"""What explain=true costs: unit-LM time of a request's rows with occlusion explanations against the same request
without, on the default backbone and its demo tasks, one CPU thread, measured in one run.

    python bench/bench_explain.py [--bundle models/default] [--store prompts_store] [--tasks commands-en,language-id,vad]

Per clip length and ``explain_spans`` S: rows (tasks x (1 + min(units, S))), best-of-``--repeats`` milliseconds of
the batched forward(s) and the ratio to the plain request. Encoding is not included (it is the same with or without
explanations: the units are computed once). The clip is a real recording (alsa-utils; a test set, benchmarking only)
repeated to the length asked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_prompted_lm import best_of  # noqa: E402  (bench/ is on the path when run as a script)

from speechprompt.audio import decode_audio  # noqa: E402
from speechprompt.explain import occlude, occlusion_spans  # noqa: E402
from speechprompt.package import read_package  # noqa: E402
from speechprompt.runtime import Runtime  # noqa: E402

RECORDING = Path("/usr/share/sounds/alsa/Front_Center.wav")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "models" / "default"))
    ap.add_argument("--store", default=str(ROOT / "prompts_store"))
    ap.add_argument("--tasks", default="commands-en,language-id,vad")
    ap.add_argument("--seconds", default="1.43,5,10", help="clip lengths (s)")
    ap.add_argument("--spans", default="4,8,16", help="explain_spans values")
    ap.add_argument("--max-rows", type=int, default=32, help="rows per forward (SPEECHPROMPT_MAX_BATCH_ROWS)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rt = Runtime.load(args.bundle)
    tasks = args.tasks.split(",")
    for t in tasks:
        current = (Path(args.store) / t / "CURRENT").read_text().strip()
        rt.add_task(t, read_package((Path(args.store) / t / f"{current}.safetensors").read_bytes()))
    samples = decode_audio(RECORDING.read_bytes()).samples
    print(f"# {Path(args.bundle).name}, tasks {args.tasks}, 1 thread, forwards of <= {args.max_rows} rows")
    print("| clip (s) | units | explain_spans | rows | unit-LM ms | x plain |")
    print("|---|---|---|---|---|---|")
    for secs in (float(s) for s in args.seconds.split(",")):
        u = rt.extract_units([np.resize(samples, int(secs * 16000))])[0]
        plain = None
        for s in [0] + [int(x) for x in args.spans.split(",")]:
            spans = occlusion_spans(len(u.units), s) if s else []
            rows = [u] * len(tasks) + [occlude(u, a, b) for _ in tasks for a, b in spans]
            keys = tasks + [t for t in tasks for _ in spans]

            def run(rows=rows, keys=keys) -> None:
                for i in range(0, len(rows), args.max_rows):
                    rt.classify(rows[i:i + args.max_rows], keys[i:i + args.max_rows])

            ms = best_of(run, args.repeats) * 1e3
            plain = plain or ms
            print(f"| {secs:g} | {len(u.units)} | {s or '-'} | {len(rows)} | {ms:.1f} | {ms / plain:.1f} |")


if __name__ == "__main__":
    main()

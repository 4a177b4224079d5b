"""Run every benchmark in sequence with small defaults; their markdown goes to stdout, no file is written.

Order: HuBERT encoder (``bench_encoder.py``), prompted unit LM (``bench_prompted_lm.py``), server
(``bench_server.py``: P1, P2, P4, memory per task, upload -> servable, latency under load), decoding memory
(``bench_decode_memory.py``). Each script
measures its ratios within its own run; progress lines go to stderr. Exit status: the number of failed scripts.

    python bench/run_all.py                 # small defaults, ~4-5 min on 2 shared cores
    python bench/run_all.py --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def plan(device: str, threads: int) -> list[tuple[str, list[str]]]:
    """(script, arguments) in the order they run."""
    t = ["--threads", str(threads)]
    return [
        ("bench_encoder.py", [*t, "--reps", "2", "--budget-s", "60"]),
        ("bench_prompted_lm.py", [*t, "--rows", "16", "--repeats", "2", "--device", device]),
        ("bench_server.py", [*t, "--device", device]),
        ("bench_decode_memory.py", []),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every script (1 keeps a shared "
                    "machine's other load from stalling OpenMP barriers)")
    ap.add_argument("--only", default="", help="comma-separated script names to run (default: all)")
    a = ap.parse_args()
    only = {s for s in a.only.split(",") if s}
    failed = 0
    for script, args in plan(a.device, a.threads):
        if only and script not in only and script.removesuffix(".py") not in only:
            continue
        print(f"\n## {script} {' '.join(args)}\n", flush=True)
        t = time.perf_counter()
        rc = subprocess.run([sys.executable, str(HERE / script), *args], cwd=HERE.parent).returncode
        print(f"\n({script}: exit {rc}, {time.perf_counter() - t:.0f} s)", flush=True)
        failed += rc != 0
    sys.exit(failed)


if __name__ == "__main__":
    main()

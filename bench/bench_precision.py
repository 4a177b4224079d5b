"""Precision modes against fp32, in one run (issue 18): throughput at P2 settings, one clip x 10 tasks, P4 restated
as measured / bound, and resident memory for 1, 10, 100 tasks against one backbone process per task.

Per backbone (``models/default``, and GSLM shapes with random weights: HuBERT base + 100 units +
``transformer_lm_big``, written to a temp folder and deleted), every mode is loaded side by side and timed
interleaved (best of ``--repeats`` after one warm-up each), through the real model loop (``server.batcher``):

- P2 throughput: the P2 jobs of ``bench_server.py`` (one clip x one task, every job another task,
  ``max_rows=--rows``), units cache off (dense model + k-means + unit LM) and warm (unit LM only), jobs/s;
- one clip x 10 tasks: one job, units cache off, ms;
- P4 restated: one clip x N tasks (N = 1, 10, 100) measured, against the bound ``encode + N x row`` where
  ``encode`` is the clip's encoding alone and ``row`` is one row of a batch of 100 rows of that clip's units
  (``Runtime.classify`` on 100 tasks divided by 100);
- memory: RSS of a fresh process that loads the bundle and N tasks and classifies once (ours: one backbone for
  all tasks), against N times the RSS of such a process with one task (the official pipeline: one backbone
  per task process), computed from the one-task process.

    python bench/bench_precision.py --p4-repeats 1         # both backbones, ~20 min on 2 shared cores
    python bench/bench_precision.py --bundle models/default --modes fp32,fp32/bf16,bf16,int8
    python bench/bench_precision.py --device cuda --modes fp32,bf16,fp32/bf16 --gslm-modes fp32,bf16   # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_common import best_interleaved, clip, lm_dims, log, machine, random_package  # noqa: E402
from bench_server import GSLM_RANDOM, each_bundle, loop, random_units, run_jobs  # noqa: E402

from server.units_cache import UnitsCache  # noqa: E402
from speechprompt.precision import BF16_FLAGS, INT8_FLAGS, bundle_ids, cpu_flags, gate_matches, read_gate  # noqa: E402
from speechprompt.runtime import Runtime  # noqa: E402
from speechprompt.units import Units  # noqa: E402


def load(bundle: Path, mode: str, tasks: int, device: str = "cpu") -> tuple[Runtime, list[str]]:
    rt = Runtime.load(bundle, device=device, precision=mode)
    L, d, V = lm_dims(rt)
    keys = [f"t{i:03d}" for i in range(tasks)]
    for i, k in enumerate(keys):
        rt.add_task(k, random_package(k, rt.fingerprint, L, d, V, seed=i))
    return rt, keys


def p2_jobs(rt: Runtime, keys: list[str], n: int, warm: bool, units, wavs) -> tuple[UnitsCache, list]:
    cache, jobs = UnitsCache(n if warm else 0), []
    for i in range(n):
        if warm:
            u = units[i % len(units)]
            cache.put(f"job{i}", rt.fingerprint, Units(u, torch.ones_like(u), int(u.numel())))
            jobs.append((np.zeros(1, np.float32), f"job{i}", [keys[i % len(keys)]]))
        else:
            jobs.append((wavs[i % len(wavs)], f"job{i}", [keys[i % len(keys)]]))
    return cache, jobs


def timed_loops(rts: dict[str, Runtime], make_jobs, max_rows: int, repeats: int) -> dict[str, float]:
    """Best seconds per mode for the same jobs through each mode's model loop (modes interleaved)."""
    loops, fns = {}, {}
    for mode, rt in rts.items():
        cache, jobs = make_jobs(rt)
        loops[mode] = loop(rt, cache, max_rows)
        fns[mode] = (lambda b, j: lambda: run_jobs(b, j)[0])(loops[mode], jobs)
    try:
        return best_interleaved(fns, repeats)
    finally:
        for b in loops.values():
            b.stop()


def p4_restated(rt: Runtime, keys: list[str], wav: np.ndarray, ns: list[int], repeats: int) -> list[dict]:
    """Measured one-clip x N-task cost vs ``encode + N x row`` (row: one row of a batch of max(ns) rows)."""
    big = max(ns)
    units = rt.extract_units([wav])
    rows = units * big

    def encode() -> float:
        t = time.perf_counter()
        rt.extract_units([wav])
        return time.perf_counter() - t

    def batch() -> float:
        t = time.perf_counter()
        rt.classify(rows, keys[:big])
        return time.perf_counter() - t

    b = loop(rt, UnitsCache(0), big)
    fns = {"encode": encode, "batch": batch}
    for n in ns:
        fns[f"n{n}"] = (lambda n: lambda: run_jobs(b, [(wav, "p4", keys[:n])])[0])(n)
    try:
        best = best_interleaved(fns, repeats)
    finally:
        b.stop()
    row = best["batch"] / big
    return [{"n": n, "measured": best[f"n{n}"], "bound": best["encode"] + n * row, "encode": best["encode"],
             "row": row, "units": int(units[0].units.numel())} for n in ns]


def rss_child(bundle: Path, mode: str, tasks: int, threads: int) -> int:
    """RSS (bytes) of a fresh process with the bundle in ``mode``, ``tasks`` tasks resident, one classify done."""
    code = ("import sys, torch; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/bench']; torch.set_num_threads(int(sys.argv[5]));"
            "import bench_precision as b; rt, keys = b.load(b.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]));"
            "rt.classify(rt.extract_units([b.clip(2.0, 7)]) * len(keys), keys); import bench_common; print(bench_common.rss_bytes())")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), str(bundle), mode, str(tasks), str(threads)],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return int(out.stdout.strip().splitlines()[-1])


def bench_bundle(name: str, bundle: Path, a: argparse.Namespace, modes: list[str]) -> list[str]:
    log(f"{name}: loading {modes}")
    rts = {}
    for m in modes:
        rts[m], keys = load(bundle, m, max(a.rows, a.fan, 8), a.device)
    ref = rts["fp32"]
    K = ref.backbone.spec.codebook_size
    units = random_units(a.rows, 30, 60, K, seed=2)
    wavs = [clip(float(s), seed=i) for i, s in enumerate(np.linspace(1.0, 2.5, a.rows))]
    gate = read_gate(bundle) or {}
    gate_modes = gate.get("modes", {}) if gate_matches(gate, ref.fingerprint, bundle_ids(bundle)[1]) else {}
    out = [f"### {name} (fingerprint {ref.fingerprint[:12]})", "",
           f"machine: {machine(torch.device(a.device), a.threads)}", "",
           f"| mode | gate | P2 cache off ({a.p2_cold} jobs, {a.rows} rows/batch) jobs/s | vs fp32 | P2 units cached "
           f"({a.p2_warm} jobs) jobs/s | vs fp32 | one {a.clip_s:g} s clip x {a.fan} tasks ms | vs fp32 |",
           "|---|---|---|---|---|---|---|---|"]
    log(f"{name}: P2 cache off")
    cold = timed_loops(rts, lambda rt: p2_jobs(rt, keys, a.p2_cold, False, units, wavs), a.rows, a.repeats)
    log(f"{name}: P2 units cached")
    warm = timed_loops(rts, lambda rt: p2_jobs(rt, keys, a.p2_warm, True, units, wavs), a.rows, a.repeats)
    log(f"{name}: one clip x {a.fan} tasks")
    wav = clip(a.clip_s, seed=7)
    fan = timed_loops(rts, lambda rt: (UnitsCache(0), [(wav, "p4", keys[:a.fan])]), max(a.fan, a.rows), a.repeats)
    for m in modes:
        g = gate_modes.get(m)
        word = "reference" if m == "fp32" else ("not recorded" if g is None else
                                                f"{'passed' if g['passed'] else 'failed'} (units "
                                                f"{g['units_agree'] * 100:.2f}%, labels min "
                                                f"{g['min_labels_agree'] * 100:.2f}%)")
        out.append(f"| {m} | {word} | {a.p2_cold / cold[m]:.2f} | {cold['fp32'] / cold[m]:.2f}x | "
                   f"{a.p2_warm / warm[m]:.2f} | {warm['fp32'] / warm[m]:.2f}x | {fan[m] * 1e3:.1f} | "
                   f"{fan['fp32'] / fan[m]:.2f}x |")
    ns = [int(n) for n in a.p4_ns.split(",")]
    out += ["", f"P4 restated: one {a.clip_s:g} s clip x N tasks through the model loop (units cache off) against "
            f"the bound encode + N x (one row of a batch of {max(ns)})", "",
            "| mode | N | measured ms | bound ms (encode + N x row) | encode ms | row ms | measured / bound |",
            "|---|---|---|---|---|---|---|"]
    for m in [m for m in modes if m in a.p4_modes.split(",")]:
        log(f"{name}: P4 restated, {m}")
        rt, keys100 = load(bundle, m, max(ns), a.device)
        for r in p4_restated(rt, keys100, wav, ns, a.p4_repeats or a.repeats):
            out.append(f"| {m} | {r['n']} | {r['measured'] * 1e3:.1f} | {r['bound'] * 1e3:.1f} | "
                       f"{r['encode'] * 1e3:.1f} | {r['row'] * 1e3:.2f} | {r['measured'] / r['bound']:.2f} |")
        del rt
    out += ["", "Resident memory (RSS of a fresh process: bundle + N tasks + one classify): ours = one process for "
            "all N tasks; official = one backbone process per task, N x the one-task process", "",
            "| mode | N tasks | ours MB | official (N processes) MB | official / ours |", "|---|---|---|---|---|"]
    for m in [m for m in modes if m in a.mem_modes.split(",") and a.device == "cpu"]:
        log(f"{name}: memory, {m}")
        one = rss_child(bundle, m, 1, a.threads)
        for n in ns:
            ours = one if n == 1 else rss_child(bundle, m, n, a.threads)
            out.append(f"| {m} | {n} | {ours / 2**20:.0f} | {n * one / 2**20:.0f} | {n * one / ours:.1f}x |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", help=f"bundle folder or '{GSLM_RANDOM}' (default: models/default "
                    f"and {GSLM_RANDOM})")
    ap.add_argument("--modes", default="fp32,bf16,int8,fp32/bf16,bf16/fp32")
    ap.add_argument("--gslm-modes", default="fp32,bf16,int8", help="modes on GSLM shapes (its fp32 is slow here)")
    ap.add_argument("--p4-modes", default="fp32,bf16,int8")
    ap.add_argument("--mem-modes", default="fp32,bf16,int8")
    ap.add_argument("--p4-ns", default="1,10,100")
    ap.add_argument("--p4-repeats", type=int, default=0, help="repeats of P4 restated (default --repeats; on GSLM "
                    "shapes 100 rows take ~1 min per call on one core)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cuda: timings on the GPU (memory rows are CPU only)")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--p2-warm", type=int, default=16)
    ap.add_argument("--p2-cold", type=int, default=8)
    ap.add_argument("--fan", type=int, default=10)
    ap.add_argument("--clip-s", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    flags = cpu_flags()
    print(f"# precision benchmarks (bench/bench_precision.py), {time.strftime('%Y-%m-%d %H:%M %Z')}, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"# CPU flags: {' '.join(sorted(f for f in flags if f in BF16_FLAGS + INT8_FLAGS or f.startswith('avx')))}")
    print(f"# args: {json.dumps(vars(a))}")
    each_bundle(a.bundle or ["models/default", GSLM_RANDOM],
                lambda name, path, spec: bench_bundle(name, path, a, (a.gslm_modes if spec == GSLM_RANDOM
                                                                      else a.modes).split(",")))


if __name__ == "__main__":
    main()

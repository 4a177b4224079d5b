"""Server benchmarks (issue 5) on full GSLM shapes with random weights and on the default backbone.

Every ratio is measured within one run, on one backbone, on one machine (printed with the results):

- P1 cross-task batching: the same rows spread over N resident tasks (N = 1,000; each row another task) vs all
  rows on one task. Level: ``Runtime.classify`` in-process, the one unit-LM forward the model loop makes per batch.
- P2 batched server vs a server doing one task per forward at batch 1: the same jobs (one clip x one task each,
  every job another task) through the real model loop (``server.batcher.Batcher``, in-process, no HTTP) with
  ``max_rows=R`` vs ``max_rows=1``; units cache warm (unit LM only) and off (HuBERT + k-means per clip too).
- P4 one clip x 10 tasks vs one clip x 1 task: one job through the model loop, units cache off, so the cost
  includes encoding the clip (audio decoding is not included; it is the same for both).
- memory per resident task: exact prompt-bank slot bytes, allocated bank bytes / task, process RSS (CPU) or
  CUDA allocation growth while the N tasks were added.
- parity of the device forward vs CPU (only with ``--device cuda``): encoder features, frame units, class probs.
- live server (``python -m server.main`` on a free 127.0.0.1 port, file store in a temp dir, admin token set):
  upload -> servable latency (PUT a new version, then classify until the answer names it) and latency p50/p99
  at a stated load (``bench/loadgen.py``, loopback only, stops by itself).

The "gslm-random" backbone is HuBERT base (7 conv blocks of 512 channels, 768-dim, layer 6 read) + a
100-unit codebook + ``transformer_lm_big`` (12 x 1024, 16 heads, FFN 4096, V=104), random weights, written
to a temp folder (~780 MB) and deleted at the end. ``models/default`` is benchmarked too when it exists.

    python bench/bench_server.py                      # < 5 min on 2 cores (small defaults)
    python bench/bench_server.py --rows 64 --repeats 5 --uploads 50 --load-requests 200 --concurrency 16
    python bench/bench_server.py --device cuda --rows 64 --p2-jobs 256
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_common import (  # noqa: E402
    CLASSES,
    PROMPT_LENGTH,
    best_interleaved,
    clip,
    encoder_words,
    lm_dims,
    log,
    machine,
    random_package,
    rss_bytes,
    sync,
)
from bench_live import LiveServer, live  # noqa: E402

from server.batcher import Batcher  # noqa: E402
from server.units_cache import UnitsCache  # noqa: E402
from speechprompt.backbone import make_random_bundle  # noqa: E402
from speechprompt.encoder import HubertConfig  # noqa: E402
from speechprompt.runtime import Runtime  # noqa: E402
from speechprompt.unit_lm import UnitLMConfig  # noqa: E402
from speechprompt.units import Units  # noqa: E402

GSLM_RANDOM = "gslm-random"
PROBS_TOL = 1e-3  # device vs CPU: class probabilities from the same units
UNITS_EQUAL_MIN = 0.99  # device vs CPU: frames whose nearest centroid agrees (TF32 convs may flip near-ties)


# -- prompt bank: 1,000 resident tasks, memory, P1 -------------------------------------------------
def add_tasks(rt: Runtime, n: int) -> tuple[list[str], dict]:
    """Add ``n`` distinct random tasks to the runtime's prompt bank; returns keys and memory facts."""
    L, d, V = lm_dims(rt)
    dev = rt.backbone.device
    gc.collect()
    sync(dev)
    rss0, cuda0 = rss_bytes(), torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    keys, add_s = [], 0.0
    for i in range(n):
        key = f"t{i:04d}"
        pkg = random_package(key, rt.fingerprint, L, d, V, seed=i)
        t = time.perf_counter()
        rt.add_task(key, pkg)  # backbone check + prefix K/V projection into a bank slot
        sync(dev)
        add_s += (time.perf_counter() - t) / n
        keys.append(key)
        if (i + 1) % 250 == 0:
            log(f"  {i + 1}/{n} tasks resident")
    gc.collect()
    sync(dev)
    bank = rt.bank
    slots = (bank.pk, bank.pv, bank.pmask, bank.sep, bank.verb, bank.ncls)
    allocated = sum(t.numel() * t.element_size() for t in slots)
    grown = (torch.cuda.memory_allocated(dev) - cuda0) if dev.type == "cuda" else rss_bytes() - rss0
    return keys, {"slot": float(np.mean([bank.nbytes(k) for k in keys])), "allocated": allocated / n,
                  "capacity": int(bank.pk.shape[0]), "grown": grown / n, "add_s": add_s,
                  "grown_what": "CUDA allocated" if dev.type == "cuda" else "process RSS"}


def random_units(n: int, lo: int, hi: int, K: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, K, (m,), generator=g) for m in torch.randint(lo, hi + 1, (n,), generator=g).tolist()]


def p1(rt: Runtime, keys: list[str], units: list[torch.Tensor], repeats: int) -> dict:
    """Rows over many resident tasks (a fresh random draw of distinct tasks per call) vs one task."""
    dev, rows = rt.backbone.device, len(units)
    g = torch.Generator().manual_seed(1)

    def spread() -> float:
        ks = [keys[i] for i in torch.randperm(len(keys), generator=g)[:rows].tolist()]
        t = time.perf_counter()
        rt.classify(units, ks)
        sync(dev)
        return time.perf_counter() - t

    def one() -> float:
        t = time.perf_counter()
        rt.classify(units, [keys[0]] * rows)
        sync(dev)
        return time.perf_counter() - t

    best = best_interleaved({"spread": spread, "one": one}, repeats)
    return {"spread": rows / best["spread"], "one": rows / best["one"]}


# -- model loop (server.batcher) : P2, P4 -----------------------------------------------------------
def run_jobs(batcher: Batcher, jobs: list[tuple[np.ndarray, str, list[str]]]) -> tuple[float, list]:
    """Queue every job while the model thread is held, release it, wait for all answers.
    Returns (seconds from release to the last answer, JobResults)."""
    async def go():
        gate = threading.Event()
        batcher.call(gate.wait)  # the model thread waits here until every job is queued
        futs = [batcher.submit(s, dg, ks, time.monotonic() + 3600) for s, dg, ks in jobs]
        t = time.perf_counter()
        gate.set()
        out = await asyncio.gather(*futs)
        return time.perf_counter() - t, out
    took, out = asyncio.run(go())
    bad = [r for res in out for r in res.rows if isinstance(r, BaseException)]
    if bad:
        raise RuntimeError(f"{len(bad)} rows failed, first: {bad[0]!r}")
    return took, out


def loop(rt: Runtime, cache: UnitsCache, max_rows: int) -> Batcher:
    b = Batcher(rt, cache, rt.fingerprint, max_rows=max_rows, max_wait_s=0.0, capacity=100_000)
    b.start()
    return b


def p2(rt: Runtime, keys: list[str], n_jobs: dict[str, int], rows: int, units: list[torch.Tensor],
       clips: list[np.ndarray], repeats: int) -> dict:
    """The same jobs through a model loop batching up to ``rows`` rows vs one at batch 1, with the units cache
    warm and off; ``n_jobs[mode]`` jobs per run."""
    out = {}
    for mode, n in n_jobs.items():
        cache = UnitsCache(n if mode == "warm" else 0)
        jobs = []
        for i in range(n):
            digest = f"job{i}"
            if mode == "warm":
                u = units[i % len(units)]
                cache.put(digest, rt.fingerprint, Units(u, torch.ones_like(u), int(u.numel())))
                jobs.append((np.zeros(1, np.float32), digest, [keys[i % len(keys)]]))
            else:
                jobs.append((clips[i % len(clips)], digest, [keys[i % len(keys)]]))
        batched, single = loop(rt, cache, rows), loop(rt, cache, 1)
        try:
            best = best_interleaved({"batched": lambda: run_jobs(batched, jobs)[0],
                                     "single": lambda: run_jobs(single, jobs)[0]}, repeats)
        finally:
            batched.stop()
            single.stop()
        out[mode] = best
        log(f"  P2 {mode}: batched {best['batched']:.2f} s, batch 1 {best['single']:.2f} s")
    return out


def p4(rt: Runtime, keys: list[str], wav: np.ndarray, fan: int, repeats: int) -> dict:
    """One clip x ``fan`` tasks vs one clip x 1 task: one job each, units cache off (encoding included)."""
    b = loop(rt, UnitsCache(0), max(fan, 1))
    res: dict[str, list] = {"many": [], "one": []}

    def job(n: int, name: str):
        def fn() -> float:
            took, (r,) = run_jobs(b, [(wav, "p4", keys[:n])])
            res[name].append(r)
            return took
        return fn
    try:
        best = best_interleaved({"many": job(fan, "many"), "one": job(1, "one")}, repeats)
    finally:
        b.stop()
    med = {k: (float(np.median([r.encode_ms for r in v])), float(np.median([r.lm_ms for r in v])))
           for k, v in res.items()}
    return {"many": best["many"], "one": best["one"], "split": med, "units": int(len(res["one"][0].units.units))}


# -- parity: device vs CPU --------------------------------------------------------------------------
def parity(bundle: Path, rt: Runtime, keys: list[str], wavs: list[np.ndarray]) -> dict[str, dict]:
    """Same bundle on CPU and on the device: features, frame units, class probabilities (same units).

    Returns one entry per device setting: the server's defaults (cuDNN may use TF32 for the conv front end)
    and cuDNN TF32 off, so a units mismatch can be told apart from a real difference.
    """
    cpu = Runtime.load(bundle, device="cpu")
    L, d, V = lm_dims(rt)
    for i, k in enumerate(keys):
        cpu.add_task(k, random_package(k, rt.fingerprint, L, d, V, seed=i))
    units = [u.units for u in cpu.extract_units(wavs)]
    rows = [units[i % len(units)] for i in range(len(keys))]
    with torch.inference_mode():
        fc = cpu.backbone.encoder.extract([torch.from_numpy(w) for w in wavs])
        uc = [cpu.backbone.codebook.quantize(f) for f in fc]
    pc = cpu.classify(rows, keys)
    scale = max(float(f.abs().max()) for f in fc)
    out, default_tf32 = {}, torch.backends.cudnn.allow_tf32
    for setting, tf32 in (("defaults", default_tf32), ("cuDNN TF32 off", False)):
        torch.backends.cudnn.allow_tf32 = tf32
        try:
            with torch.inference_mode():
                fd = [f.cpu() for f in rt.backbone.encoder.extract([torch.from_numpy(w) for w in wavs])]
                ud = [rt.backbone.codebook.quantize(f.to(rt.backbone.device)).cpu() for f in fd]
            pd = rt.classify(rows, keys)
        finally:
            torch.backends.cudnn.allow_tf32 = default_tf32
        feat = max(float((a - b).abs().max()) for a, b in zip(fc, fd, strict=True))
        same = float(torch.cat([(a == b).float() for a, b in zip(uc, ud, strict=True)]).mean())
        probs = max(float(np.abs(a - b).max()) for a, b in zip(pc, pd, strict=True))
        out[setting] = {"feat": feat, "feat_rel": feat / scale, "units_equal": same, "probs": probs,
                        "ok": probs <= PROBS_TOL and same >= UNITS_EQUAL_MIN}
    del cpu
    return out


# -- one backbone ---------------------------------------------------------------------------------
def bench_bundle(name: str, bundle: Path, a: argparse.Namespace, device: torch.device) -> list[str]:
    lines, want = [], set(a.only.split(","))
    log(f"{name}: loading {bundle} on {device}")
    rt = Runtime.load(bundle, device=str(device))
    spec = rt.backbone.spec
    K = spec.codebook_size
    e, u = spec.encoder, spec.unit_lm
    lines.append(f"### {name}: {encoder_words(e)} + {K} units + unit LM {u.layers}x{u.embed_dim} "
                 f"(FFN {u.ffn_dim}, {u.heads} heads, V={u.vocab_size}); fingerprint {rt.fingerprint[:12]}")
    lines.append(f"machine: {machine(device, a.threads)}")
    lines.append("")
    lines.append("| measure | level | configuration | result | ratio (this run) | target |")
    lines.append("|---|---|---|---|---|---|")
    n_tasks = max(a.tasks if want & {"p1", "mem"} else 0, a.rows, a.fan, 8)
    log(f"{name}: adding {n_tasks} tasks")
    keys, mem = add_tasks(rt, n_tasks)
    units = random_units(a.rows, a.min_units, a.max_units, K, seed=2)
    ulen = f"{a.min_units}-{a.max_units} units"
    if "p1" in want:
        log(f"{name}: P1")
        r = p1(rt, keys, units, a.repeats)
        lines.append(f"| P1 rows over many tasks vs one | Runtime.classify (in-process) | {a.rows} rows x {ulen}; "
                     f"each row another of {len(keys)} resident tasks vs all rows on 1 task; best of {a.repeats} | "
                     f"{r['spread']:.2f} vs {r['one']:.2f} rows/s | {r['spread'] / r['one']:.3f}x | >= 0.97x |")
    if "mem" in want:
        lines.append(f"| memory per resident task | prompt bank ({mem['grown_what']}) | {len(keys)} tasks, prompt "
                     f"length {PROMPT_LENGTH}, {CLASSES} classes, f32 | slot {mem['slot'] / 1e6:.3f} MB; allocated "
                     f"{mem['allocated'] / 1e6:.3f} MB (capacity {mem['capacity']}); {mem['grown_what']} "
                     f"+{mem['grown'] / 1e6:.3f} MB; runtime.add_task {mem['add_s'] * 1e3:.1f} ms/task | - | - |")
    lens = np.linspace(a.clip_min_s, a.clip_max_s, max(a.rows, 2))
    wavs = [clip(float(s), seed=i) for i, s in enumerate(lens)]
    if "p2" in want:
        log(f"{name}: P2 ({a.p2_jobs} / {a.p2_cold_jobs} jobs)")
        n_jobs = {"warm": a.p2_jobs, "cold": a.p2_cold_jobs}
        r = p2(rt, keys, n_jobs, a.rows, units, wavs, a.repeats)
        for mode, what in (("warm", f"units cached ({ulen}): unit LM only"),
                           ("cold", f"units cache off: HuBERT + k-means per clip ({a.clip_min_s:g}-{a.clip_max_s:g} s)"
                                    " + unit LM")):
            b, s = r[mode]["batched"], r[mode]["single"]
            lines.append(f"| P2 batched vs one task per forward at batch 1 | model loop (Batcher, in-process) | "
                         f"{n_jobs[mode]} jobs of 1 clip x 1 task, every job another task; max_rows={a.rows} vs "
                         f"max_rows=1; {what}; best of {a.repeats} | {n_jobs[mode] / b:.2f} vs "
                         f"{n_jobs[mode] / s:.2f} jobs/s | {s / b:.2f}x | >= 3.5x |")
    if "p4" in want:
        log(f"{name}: P4")
        r = p4(rt, keys, clip(a.p4_clip_s, seed=7), a.fan, a.repeats)
        (e10, l10), (e1, l1) = r["split"]["many"], r["split"]["one"]
        lines.append(f"| P4 one clip x {a.fan} tasks vs x 1 task | model loop (Batcher, in-process) | one "
                     f"{a.p4_clip_s:g} s clip ({r['units']} units), units cache off (encoding included, decoding "
                     f"not); best of {a.repeats} | {r['many'] * 1e3:.0f} vs {r['one'] * 1e3:.0f} ms (encode "
                     f"{e10:.0f} / {e1:.0f} ms, unit LM {l10:.0f} / {l1:.0f} ms) | {r['many'] / r['one']:.2f}x | "
                     f"<= 1.3x |")
    if "parity" in want and device.type != "cpu":
        log(f"{name}: parity vs CPU")
        for setting, r in parity(bundle, rt, keys[:8], wavs[:4]).items():
            lines.append(f"| parity {device.type} vs CPU | Runtime (in-process) | 4 clips ({a.clip_min_s:g}-"
                         f"{a.clip_max_s:g} s), 8 tasks, {setting} | features max abs diff {r['feat']:.2e} (rel. "
                         f"{r['feat_rel']:.1e}); frame units equal {r['units_equal'] * 100:.2f}%; class probs max "
                         f"abs diff {r['probs']:.2e} | {'within' if r['ok'] else 'OUTSIDE'} tolerance | probs <= "
                         f"{PROBS_TOL:g}, units >= {UNITS_EQUAL_MIN * 100:g}% equal |")
    del rt, keys
    gc.collect()
    if want & {"upload", "load"}:
        folder = Path(tempfile.mkdtemp(prefix="sp-bench-live-"))
        try:
            log(f"{name}: starting a live server")
            with LiveServer(bundle, folder, str(device), a.threads, a.rows) as srv:
                r = live(srv, a)
            lines.append(f"| upload -> servable | HTTP (uvicorn subprocess, file store, loopback) | {a.uploads} PUTs"
                         f" of a new version of one task, each followed by classify until it names the new version"
                         f" ({a.upload_clip_s:g} s clip, units cached) | PUT (returns once resident and current) "
                         f"p50 {r['put'][0]:.0f} / p99 {r['put'][1]:.0f} ms; GET shows it resident p50 "
                         f"{r['listed'][0]:.0f} / p99 {r['listed'][1]:.0f} ms; a classify answers with it p50 "
                         f"{r['servable'][0]:.0f} / p99 {r['servable'][1]:.0f} ms (classify alone p50 "
                         f"{r['alone']:.0f} ms) | - | <= 100 ms |")
            res = r["load"]
            other = ", ".join(f"{k}: {v}" for k, v in sorted(res.statuses.items()) if k != "200") or "none"
            lines.append(f"| latency at a stated load | HTTP (bench/loadgen.py, closed loop) | {res.sent} requests, "
                         f"concurrency {a.concurrency}, {a.load_tasks} tasks, every clip new ({r['clips'][0]:g}-"
                         f"{r['clips'][1]:g} s: decode + HuBERT + unit LM), max_batch_rows={a.rows}, wait 5 ms | "
                         f"p50 {res.percentile_ms(50):.0f} / p99 {res.percentile_ms(99):.0f} ms; "
                         f"{res.throughput:.2f} req/s; {res.ok}/{res.sent} answered (other: {other}); mean "
                         f"{r['rows_mean']:.1f} rows/batch | - | - |")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return lines


def each_bundle(specs: list[str], bench, keep: Path | None = None) -> None:
    """For each bundle spec (a folder, or ``GSLM_RANDOM``: written to a temp folder, deleted afterwards unless
    ``keep``), print the lines ``bench(name, path, spec)`` returns."""
    for spec in specs:
        tmp = None
        if spec == GSLM_RANDOM:
            path = keep or Path(tempfile.mkdtemp(prefix="sp-bench-gslm-")) / "bundle"
            tmp = None if keep else path.parent
            if not (path / "backbone.json").exists():
                log(f"writing a random-weight GSLM-shape bundle to {path}")
                make_random_bundle(path, seed=0, num_units=100, encoder_cfg=HubertConfig(), lm_cfg=UnitLMConfig(),
                                   name="gslm-random-base")
            name = "GSLM shapes, random weights"
        else:
            path, name = (ROOT / spec if not Path(spec).is_absolute() else Path(spec)), spec
        try:
            lines = bench(name, path, spec)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        print()
        print("\n".join(lines), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", help=f"bundle folder, or '{GSLM_RANDOM}' (repeatable; default: "
                    f"{GSLM_RANDOM} and models/default if it exists)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared machine more threads "
                    "than free cores make OpenMP barriers stall, up to 10x slower and very noisy)")
    ap.add_argument("--rows", type=int, default=16, help="rows per batch (P1, P2) and the live max_batch_rows")
    ap.add_argument("--p2-jobs", type=int, default=None, help="jobs per P2 run, units cached (default: --rows)")
    ap.add_argument("--p2-cold-jobs", type=int, default=None, help="jobs per P2 run, units cache off "
                    "(default: half of --p2-jobs)")
    ap.add_argument("--tasks", type=int, default=1000, help="resident tasks for P1 and the memory figure")
    ap.add_argument("--min-units", type=int, default=30)
    ap.add_argument("--max-units", type=int, default=60)
    ap.add_argument("--clip-min-s", type=float, default=1.0)
    ap.add_argument("--clip-max-s", type=float, default=2.5)
    ap.add_argument("--p4-clip-s", type=float, default=2.0)
    ap.add_argument("--fan", type=int, default=10, help="tasks per clip in P4")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--upload-clip-s", type=float, default=1.0)
    ap.add_argument("--load-requests", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--load-tasks", type=int, default=8)
    ap.add_argument("--load-time-limit", type=float, default=120.0)
    ap.add_argument("--only", default="p1,mem,p2,p4,parity,upload,load", help="comma-separated sections")
    ap.add_argument("--keep-bundle", type=Path, default=None, help=f"write {GSLM_RANDOM} here and keep it")
    a = ap.parse_args()
    a.p2_jobs = a.p2_jobs or a.rows
    a.p2_cold_jobs = a.p2_cold_jobs or max(1, a.p2_jobs // 2)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    bundles = a.bundle or [GSLM_RANDOM] + (["models/default"] if (ROOT / "models/default/backbone.json").exists()
                                            else [])
    print(f"# server benchmarks (bench/bench_server.py), {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"# args: {json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()})}")
    each_bundle(bundles, lambda name, path, spec: bench_bundle(name, path, a, device), a.keep_bundle)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""How far the best real-speech teacher gets on the real-speech split with sequence-aware classifiers.

The real-speech table's strongest column is a logistic regression on *mean-pooled* speech_embedding frames (Google's
keyword-spotting embedding, 96-d every 80 ms: the dense stage of the default bundle). Mean pooling drops word order,
so that column could understate what the teacher holds. This script trains, on the same manifests (the same train /
dev / test clips and speaker split as ``real_speech_eval.py``; one ``--work`` folder per training draw), classifiers
that keep time:

- ``mean_sd_lr``: mean and s.d. over frames, standardised, logistic regression; C in {0.01, 0.1, 1, 10} picked on dev;
- ``fixed_lr``: each clip's frames linearly resampled to 16 frames and flattened (1536-d), the same regression
  (openWakeWord's recipe: a fixed window of embeddings);
- ``bigru``: a bidirectional GRU (64 units each way) over the standardised frames, mean over time, linear read-out;
  AdamW 1e-3, 40 epochs, the epoch picked on dev accuracy, seed = the draw's index;
- ``dtw_1nn``: the label of the train clip nearest in dynamic time warping of cosine distances (keyword and digits
  only: short clips), nothing picked.

Every choice is made on dev (train speakers); test accuracy is reported for the choice, never the best test value.
Writes ``<work>/ceiling.json`` per draw and the block between ``<!-- ceiling:begin -->`` and ``<!-- ceiling:end -->``
in ``docs/results.md``. Frames are cached in ``<work>/ceiling-frames-<task>.pt``.

Usage (after ``real_speech_eval.py`` made the draws' task folders)::

    .venv/bin/python scripts/real_ceiling.py --work .cache/real_eval .cache/real_eval_d1 .cache/real_eval_d2
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.backbone import Backbone  # noqa: E402
from speechprompt.training import manifest as M  # noqa: E402
from speechprompt.training.markers import replace_block  # noqa: E402

BEGIN, END = "<!-- ceiling:begin -->", "<!-- ceiling:end -->"
TASKS = ("language-id", "keyword", "digits", "vad")
TARGETS = {"language-id": 0.90, "keyword": 0.90, "digits": 0.90, "vad": 0.98}
METHODS = ("mean_sd_lr", "fixed_lr", "bigru", "dtw_1nn")
DTW_TASKS = {"keyword", "digits"}
Split = list[tuple[torch.Tensor, str]]  # (frames [T, D], label) per clip


def cache_key(bb: Backbone, manifest: Path) -> str:
    """What a draw's frames and cells depend on: the manifest's digest and the bundle's fingerprint."""
    return f"{M.manifest_digest(manifest)}:{bb.units_key[:16]}"


def frames(bb: Backbone, manifest: Path, cache: Path, key: str) -> dict[str, Split]:
    """The teacher's frames ``[T_i, D] f32`` (the dense stage's first D = speech_embedding dimensions; a pitch stream
    after them is left out, as in the table's column) of every clip of ``manifest``, by split; cached in ``cache``
    under ``key`` (:func:`cache_key`: another manifest or bundle recomputes them)."""
    if cache.exists():
        cached = torch.load(cache)
        if cached.get("key") == key:
            return cached["data"]
    examples = M.read_manifest(manifest)
    dims = bb.encoder.convs[-1].out_channels
    out: dict[str, Split] = {}
    with torch.inference_mode():
        for i in range(0, len(examples), 32):
            batch = examples[i:i + 32]
            feats = bb.encoder.extract([torch.from_numpy(M.load_audio(e.path)) for e in batch])
            for e, f in zip(batch, feats, strict=True):
                out.setdefault(e.split, []).append((f[:, :dims].clone(), e.label))
    torch.save({"key": key, "data": out}, cache)
    return out


def mean_sd(f: torch.Tensor) -> np.ndarray:
    """``[T, D] -> [2D]``: mean and s.d. (population; 0 for one frame) over time."""
    return torch.cat([f.mean(0), f.std(0, unbiased=False)]).numpy()


def fixed_length(f: torch.Tensor, n: int = 16) -> np.ndarray:
    """``[T, D] -> [n * D]``: the frames linearly resampled to ``n`` along time (ends kept), flattened time-major."""
    x = torch.nn.functional.interpolate(f.T[None], size=n, mode="linear", align_corners=True)[0]  # [D, n]
    return x.T.reshape(-1).numpy()


def lr_per_c(X: dict, y: dict, cs=(0.01, 0.1, 1.0, 10.0)) -> dict:
    """Standardised logistic regression fitted on ``X["train"] [n, F]`` / ``y["train"]`` for each C of ``cs``;
    returns ``{C: {"dev": accuracy, "test": accuracy}}`` in ``cs`` order (also used by ``whisper_probe.py``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(X["train"])
    acc = {}
    for c in cs:
        m = LogisticRegression(C=c, max_iter=3000).fit(sc.transform(X["train"]), y["train"])
        acc[c] = {s: float((m.predict(sc.transform(X[s])) == y[s]).mean()) for s in ("dev", "test")}
    return acc


def lr_on_dev(data: dict[str, Split], embed, cs=(0.01, 0.1, 1.0, 10.0)) -> dict:
    """Standardised logistic regression on ``embed(frames)`` (``[T, D] -> [F]``) of train; C picked on dev accuracy
    (first best), never on test. Returns ``{"dev", "test", "C"}`` for the picked C."""
    X = {s: np.stack([embed(f) for f, _ in v]) for s, v in data.items()}
    y = {s: np.array([lab for _, lab in v]) for s, v in data.items()}
    acc = lr_per_c(X, y, cs)
    c = max(acc, key=lambda k: acc[k]["dev"])  # first best
    return {"dev": acc[c]["dev"], "test": acc[c]["test"], "C": c}


def dtw_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dynamic time warping of ``a [n, D]`` and ``b [m, D]`` on cosine distance, steps (1,0), (0,1), (1,1),
    normalised by ``n + m``; 0 for a sequence against itself or a copy with frames repeated."""
    cost = (1 - torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T).numpy()
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    return float(max(acc[n, m], 0.0) / (n + m))


def dtw_1nn(data: dict[str, Split]) -> dict:
    """Test accuracy of the nearest train clip's label under :func:`dtw_distance`."""
    train = data["train"]
    hits = [min(train, key=lambda t: dtw_distance(f, t[0]))[1] == lab for f, lab in data["test"]]
    return {"test": float(np.mean(hits))}


class BiGRU(torch.nn.Module):
    """``[B, T, D]`` (padded) + lengths -> ``[B, C]`` logits: a bidirectional GRU, mean over valid frames, linear."""

    def __init__(self, dims: int, hidden: int, classes: int):
        super().__init__()
        self.rnn = torch.nn.GRU(dims, hidden, batch_first=True, bidirectional=True)
        self.out = torch.nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = torch.nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True)
        mask = (torch.arange(h.shape[1])[None] < torch.as_tensor(lengths)[:, None]).unsqueeze(-1).float()
        return self.out((h * mask).sum(1) / mask.sum(1))


def bigru(data: dict[str, Split], seed: int, epochs: int = 40, hidden: int = 64) -> dict:
    """Train :class:`BiGRU` on train (Gaussian input noise 0.1 on standardised frames, batches of 32); returns
    ``{"dev", "test", "epoch"}`` at the epoch (0-based) with the best dev accuracy (first best)."""
    torch.manual_seed(seed)
    labels = sorted({lab for v in data.values() for _, lab in v})
    index = {lab: i for i, lab in enumerate(labels)}
    stacked = torch.cat([f for f, _ in data["train"]])
    mu, sd = stacked.mean(0), stacked.std(0) + 1e-5

    def batch(items: Split):
        xs = [(f - mu) / sd for f, _ in items]
        return (torch.nn.utils.rnn.pad_sequence(xs, batch_first=True), [len(x) for x in xs],
                torch.tensor([index[lab] for _, lab in items]))

    model = BiGRU(stacked.shape[1], hidden, len(labels))
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=1e-2)
    train, best = data["train"], {"dev": -1.0, "test": 0.0, "epoch": -1}
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train)).tolist()
        for i in range(0, len(train), 32):
            x, lengths, y = batch([train[j] for j in order[i:i + 32]])
            loss = torch.nn.functional.cross_entropy(model(x + 0.1 * torch.randn_like(x), lengths), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = {}
            for s in ("dev", "test"):
                x, lengths, y = batch(data[s])
                acc[s] = float((model(x, lengths).argmax(1) == y).float().mean())
        if acc["dev"] > best["dev"]:
            best = {**acc, "epoch": epoch}
    return best


def save(out_file: Path, task: str, cells: dict) -> None:
    """Merge one task's cells into ``out_file``: read, merge and replace under a lock file, so runs of other tasks
    writing the same draw's file keep theirs; the replace is atomic."""
    with open(out_file.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = json.loads(out_file.read_text()) if out_file.exists() else {}
        current[task] = cells
        tmp = out_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(current, indent=1) + "\n")
        os.replace(tmp, out_file)


def say(msg: str) -> None:
    """One progress line on stdout, flushed."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def run_draw(bb: Backbone, work: Path, draw: int, tasks: list[str], log=say) -> dict:
    """Every method on every task of one draw's ``work`` folder; merged into ``work/ceiling.json`` (cells already
    there for the same :func:`cache_key` are kept, others recomputed); returns that file's content."""
    out_file = work / "ceiling.json"
    for task in tasks:
        done = json.loads(out_file.read_text()) if out_file.exists() else {}
        t0 = time.perf_counter()
        key = cache_key(bb, work / "tasks" / task / "manifest.csv")
        data = frames(bb, work / "tasks" / task / "manifest.csv", work / f"ceiling-frames-{task}.pt", key)
        r = done.get(task, {})
        if r.get("key") != key:
            r = {"key": key, "n_test": len(data["test"])}
        for method in METHODS:
            if method in r or (method == "dtw_1nn" and task not in DTW_TASKS):
                continue
            if method == "mean_sd_lr":
                r[method] = lr_on_dev(data, mean_sd)
            elif method == "fixed_lr":
                r[method] = lr_on_dev(data, fixed_length)
            elif method == "bigru":
                r[method] = bigru(data, seed=draw)
            else:
                r[method] = dtw_1nn(data)
            save(out_file, task, r)
            log(f"{work.name} {task} {method}: test {r[method]['test']:.3f} ({time.perf_counter() - t0:.0f} s)")
    return json.loads(out_file.read_text()) if out_file.exists() else {}


def render(draws: list[dict], table: dict, meta: dict) -> str:
    """The results block: mean (min-max) over draws of each method's test accuracy, beside the table's columns."""
    def cell(vals: list[float]) -> str:
        if not vals:
            return "-"
        shown = f"{np.mean(vals):.3f}" + (f" ({min(vals):.3f}-{max(vals):.3f})" if len(vals) > 1 else "")
        return shown + (f" [{len(vals)} of {len(draws)} draws]" if len(vals) < len(draws) else "")

    lines = [f"speech_embedding frames (the default's dense stage) with classifiers that keep time "
             f"(`scripts/real_ceiling.py`, {meta['date']}): mean (min-max) test accuracy over {len(draws)} training "
             "draws, every choice made on dev; the same clips and speaker split as the tables above.", "",
             "| task | target | mean-pooled LR (table) | mean + s.d. LR | 16 frames LR | biGRU | 1-NN DTW | "
             "prompts (table) | best of the four (mean) |", "|---|---|---|---|---|---|---|---|---|"]
    for task in TASKS:
        per = {m: [d[task][m]["test"] for d in draws if task in d and m in d[task]] for m in METHODS}
        if not any(per.values()):
            continue
        best = max(np.mean(v) for v in per.values() if v)
        row = table.get(task, {})
        lines.append(f"| {task} | {TARGETS[task]:.2f} | {row.get('se', '-')} | " + " | ".join(cell(per[m]) for m in METHODS)
                     + f" | {row.get('prompts', '-')} | {best:.3f} |")
    return "\n".join(lines) + "\n"


def table_cells(results_md: Path) -> dict:
    """The draws table's means (``prompts``, ``se``) per task from ``results_md``, as printed there."""
    text = results_md.read_text()
    block = text[text.index("<!-- draws:begin -->"):text.index("<!-- draws:end -->")]
    cells = {}
    for line in block.splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if len(parts) >= 7 and parts[0] in TASKS:
            cells[parts[0]] = {"prompts": parts[2].split()[0], "se": parts[6].split()[0]}
    return cells


def main() -> None:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, nargs="+", required=True,
                    help="real_speech_eval.py work folders, draw 0 first (their tasks/<task>/manifest.csv)")
    ap.add_argument("--bundle", type=Path, default=ROOT / "models" / "default",
                    help="a bundle whose dense stage is speech_embedding")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md", help="'none': print only")
    a = ap.parse_args()
    tasks = [t for t in a.tasks.split(",") if t]
    if set(tasks) - set(TASKS):
        ap.error(f"--tasks: unknown {sorted(set(tasks) - set(TASKS))}; accepted: {', '.join(TASKS)}")
    missing = [str(w) for w in a.work for t in tasks if not (w / "tasks" / t / "manifest.csv").exists()]
    if missing:
        ap.error(f"--work: no task manifest in {missing[0]} (run scripts/real_speech_eval.py there first)")
    torch.set_num_threads(a.threads)
    bb = Backbone.load(a.bundle)
    if not hasattr(bb.encoder, "convs"):
        ap.error(f"--bundle {a.bundle}: its dense stage is not speech_embedding")
    draws = [run_draw(bb, w.resolve(), i, tasks) for i, w in enumerate(a.work)]
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    if str(a.results) == "none":
        say(render(draws, {}, meta))
    else:
        replace_block(a.results, BEGIN, END, render(draws, table_cells(a.results), meta))


if __name__ == "__main__":
    main()

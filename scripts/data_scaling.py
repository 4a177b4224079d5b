#!/usr/bin/env python
"""How one task's accuracy grows with its training clips: the data-scaling table of docs/results.md.

    speechprompt make-suite .cache/suite8 --tasks commands-en --scale 8
    python scripts/run_suite.py --suite .cache/suite8 --work .cache/suite_runs8 --tasks commands-en \
        --variants v2,verbalizer_only --results none --demo ''
    python scripts/data_scaling.py --task commands-en --runs .cache/suite_runs .cache/suite_runs8 .cache/suite_runs32

Each ``--runs`` folder holds a ``run_suite.py`` run of one suite scale (``<fingerprint[:16]>/results.json`` for
``--backbone``); rows are ordered by the number of training clips. Suites of every scale share their clips'
random draws (``suite.py``: one generator per task, split and clip index), so a larger suite contains the smaller
one: its test split adds clips of the same held-out voices. ``run_suite.py --max-epochs`` raises the recipe's epoch
cap for the larger suites; the cap is a column. The table (between the ``scaling:begin/end`` markers of
``--results``) is copied from the runs, never typed by hand; the last column checks issue 3's target (deep prompts
>= ``--target`` on unseen voices and above logistic regression on unit histograms).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.training.evaluate import result_metric as accuracy  # noqa: E402
from speechprompt.training.markers import replace_block  # noqa: E402
from speechprompt.training.trainer import Recipe  # noqa: E402

BEGIN, END = "<!-- scaling:begin -->", "<!-- scaling:end -->"
COLUMNS = (("v2", "v2"), ("verbalizer_only", "verbalizer only"), ("logreg_hist", "LR unit hist"),
           ("logreg_feats", "LR mean feats"), ("probe_lm_last", "LR LM state at sep"),
           ("probe_lm_mean", "LR LM states mean"))
SPLITS = (("test", "unseen voices and accents"), ("test_engine", "unseen engine (flite)"))


def _cap(r: dict) -> int:
    """The v2 run's epoch cap (runs before ``--max-epochs`` existed used the recipe's)."""
    return r.get("v2", {}).get("max_epochs", Recipe().max_epochs)


def render(runs: list[dict], task: str, target: float, meta: str) -> str:
    """Markdown: per test split, one row per run (``runs``: that task's results dicts), ordered by train clips.

    The v2 cell carries the binomial standard error sqrt(p (1 - p) / n) of its test split; ``target met`` is
    ``yes`` when v2 >= ``target`` and v2 > LR unit hist on that split (a point check: whether the gap is beyond
    noise is for the reader, with the standard errors)."""
    runs = sorted(runs, key=lambda r: (r["sizes"]["train"], _cap(r)))
    lines = [meta, ""]
    for split, title in SPLITS:
        rows = []
        for r in runs:
            n = r["sizes"].get(split)
            v2, hist = accuracy(r, "v2", split), accuracy(r, "logreg_hist", split)
            if not n or v2 is None:
                continue
            cells = [f"{v2:.3f} ± {math.sqrt(v2 * (1 - v2) / n):.3f}"]
            cells += ["–" if (x := accuracy(r, k, split)) is None else f"{x:.3f}" for k, _ in COLUMNS[1:]]
            gap = "–" if hist is None else f"{v2 - hist:+.3f}"
            met = "yes" if hist is not None and v2 >= target and v2 > hist else "no"
            rows.append(f"| {r['sizes']['train']} | {_cap(r)} | {n} | " + " | ".join(cells) + f" | {gap} | {met} |")
        if rows:
            lines += [f"#### {task}, test: {title}", "",
                      "| train clips | max epochs | test clips | " + " | ".join(t for _, t in COLUMNS) +
                      f" | v2 - LR unit hist | target met (>= {target:.2f}, > LR unit hist) |",
                      "|---" * (len(COLUMNS) + 5) + "|", *rows, ""]
    lines += ["| train clips | max epochs | dev clips | v2 train s | v2 epochs (best) | v2 steps |",
              "|---|---|---|---|---|---|"]
    for r in runs:
        v = r.get("v2")
        if v:
            lines.append(f"| {r['sizes']['train']} | {_cap(r)} | {r['sizes']['dev']} | {v['seconds']} | {v['epochs']} "
                         f"({v['best_epoch']}) | {v['steps']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from speechprompt.backbone import Backbone

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="commands-en")
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="run_suite.py --work folders, one per scale")
    ap.add_argument("--backbone", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    a = ap.parse_args()
    bb = Backbone.load(a.backbone)
    runs = []
    for folder in a.runs:
        path = folder / bb.units_key[:16] / "results.json"
        if not path.exists():
            raise SystemExit(f"{path} missing: run scripts/run_suite.py --work {folder} --backbone {a.backbone} first")
        res = json.loads(path.read_text())
        if a.task not in res:
            raise SystemExit(f"{path} has no results for {a.task}")
        runs.append(res[a.task])
    meta = (f"Backbone `{bb.spec.name}` (`{bb.fingerprint[:16]}`), {datetime.now(timezone.utc):%Y-%m-%d}, one suite "
            "scale per row, the one recipe. Regenerated by `scripts/data_scaling.py`.")
    table = render(runs, a.task, a.target, meta)
    replace_block(a.results, BEGIN, END, table)
    sys.stdout.write(table)


if __name__ == "__main__":
    main()

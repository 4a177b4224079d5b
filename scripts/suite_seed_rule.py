#!/usr/bin/env python
"""Issue 14's suite rule against prompt-training noise: the synthetic suite at several prompt seeds on two bundles.

    for s in 100501 1 2 3 4 5; do
      python scripts/run_suite.py --backbone models/default-v1 --variants v2 --results none --demo '' \
          --prompt-seed $s --work .cache/suite_seeds/v1_$s
      python scripts/run_suite.py --backbone models/default --variants v2 --results none --demo '' \
          --prompt-seed $s --work .cache/suite_seeds/new_$s
    done
    python scripts/suite_seed_rule.py --old-runs .cache/suite_seeds/v1_* --new-runs .cache/suite_seeds/new_*

Tables (unseen voices; each side's prompt variant, SpeechPrompt v2 unless ``--old-variant`` / ``--new-variant`` name
another of ``run_suite.py``'s, e.g. ``v2_mean``; ``speechprompt/training/seed_stats.py``):
1. the rule against itself: each bundle's first ``--half`` runs against its other runs (the same bundle, suite and
   recipe; only the prompt seed differs), and whether "more than 2 points lower" fires;
2. new - old over all runs with a bootstrap interval over seeds, and the verdict: behind by more than 2 points, not
   behind by more than 2 points, or undecided at this many seeds.
3. with ``--suite``: the demos' recipe, ensembles (``speechprompt/ensembles.py``; 3 members with the default ``--half``): each bundle's packages of
   its first ``--half`` runs joined into one ensemble and those of its other runs into another, scored on the suite's
   unseen voices (units from ``--enc-work``, ``run_suite.py``'s cache, encoded when missing); the rule on the mean of
   the two ensembles, and each bundle's two ensembles against each other.
4. where the loss sits: the regressions each run also fits (they do not depend on the prompt seed; the first run's), on
   the mean-pooled dense features and on the unit histograms of each bundle, beside the prompts' means.
Runs are given in the order the first table splits them. Replaces the ``seedrule:begin/end`` block of ``--results``
(``none``: print only).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from compare_backbones import load_results  # noqa: E402

from speechprompt.training.evaluate import result_metric as metric  # noqa: E402
from speechprompt.training.markers import replace_block  # noqa: E402
from speechprompt.training.seed_stats import bootstrap_diff, rule_fires, verdict  # noqa: E402
from speechprompt.training.suite import TASKS  # noqa: E402

BEGIN, END = "<!-- seedrule:begin -->", "<!-- seedrule:end -->"


def scores(runs: list[dict], variant: str = "v2") -> dict[str, list[float]]:
    """Per task present in every run: the ``variant`` test cell of each run, higher is better (the vad EER negated)."""
    out = {}
    for n, task in TASKS.items():
        eer = task.metric == "eer"
        cells = [metric(r.get(n), variant, "test", eer) for r in runs]
        if runs and None not in cells:
            out[n] = [-c if eer else c for c in cells]
    return out


def _m(v: list[float], eer: bool) -> str:
    x = sum(v) / len(v)
    return f"{(-x if eer else x) + 0.0:.3f}"  # + 0.0: no "-0.000"


def self_table(name: str, sc: dict[str, list[float]], half: int, margin: float) -> list[str]:
    """Rows of table 1 for one bundle: mean of runs[:half], of runs[half:], the change, whether the rule fires."""
    rows = []
    for n, v in sc.items():
        eer = TASKS[n].metric == "eer"
        a, b = v[:half], v[half:]
        change = (sum(b) / len(b) - sum(a) / len(a))
        fires = rule_fires(a, b, margin) or rule_fires(b, a, margin)
        rows.append(f"| {name} | {n}{' (EER)' if eer else ''} | {_m(a, eer)} | {_m(b, eer)} | {change:+.3f} | "
                    f"{'**fires**' if fires else 'no'} |")
    return rows


def ensemble_scores(bb, runs: list[Path], half: int, suite: Path, enc_work: Path,
                    variant: str = "v2") -> dict[str, list[float]]:
    """Per task of ``suite``: the test score (higher is better, the vad EER negated) of the ensemble of
    ``runs[:half]``'s saved ``variant`` packages and of ``runs[half:]``'s (``<run>/<units_key[:16]>/packages/<task>.<variant>.safetensors``,
    written by ``run_suite.py``). Tasks a run has no package for are left out."""
    from run_suite import encode_task

    from speechprompt.ensembles import ensemble
    from speechprompt.package import read_package
    from speechprompt.training.evaluate import evaluate_package

    out = {}
    for n, task in TASKS.items():
        files = [r / bb.units_key[:16] / "packages" / f"{n}.{variant}.safetensors" for r in runs]
        if not (suite / n / "manifest.csv").exists() or not all(f.exists() for f in files):
            continue
        test = encode_task(bb, suite / n, enc_work)["test"]
        for part in (files[:half], files[half:]):
            m = evaluate_package(bb, ensemble([read_package(f.read_bytes(), stored=True) for f in part]),
                                 test["units"], test["labels"])
            out.setdefault(n, []).append(-m["eer"] if task.metric == "eer" else m["accuracy"])
    return out


def ensemble_table(old: dict[str, list[float]], new: dict[str, list[float]], margin: float) -> list[str]:
    """Rows of table 3: each bundle's two ensembles, whether they fire against each other, new - old of the means."""
    rows = ["", "**3. The demos' recipe: ensembles of 3** (each bundle's first seeds as one ensemble, its other seeds "
            "as another).", "", "| task | old E1 / E2 | old E1 vs E2 | new E1 / E2 | new E1 vs E2 | new - old | rule |",
            "|---|---|---|---|---|---|---|"]
    for n in [t for t in old if t in new]:
        eer = TASKS[n].metric == "eer"
        o, w = old[n], new[n]
        f = lambda v: " / ".join(_m([x], eer) for x in v)  # noqa: E731
        self_fire = lambda v: "**fires**" if rule_fires(v[:1], v[1:], margin) or rule_fires(v[1:], v[:1], margin) else "no"  # noqa: E731
        d = sum(w) / len(w) - sum(o) / len(o)
        rows.append(f"| {n}{' (EER)' if eer else ''} | {f(o)} | {self_fire(o)} | {f(w)} | {self_fire(w)} | {d:+.3f} | "
                    f"{'**fires**' if rule_fires(o, w, margin) else 'no'} |")
    return rows


def regression_table(old_run: dict, new_run: dict, old: dict[str, list[float]], new: dict[str, list[float]]) -> list[str]:
    """Rows of table 4: per task, LR on mean-pooled dense features and LR on unit histograms (``run_suite.logreg``) of
    each bundle, and the prompts' mean over seeds; where the features hold a task that the units lose, the loss is
    after the dense stage."""
    rows = ["", "**4. Where the loss sits**: logistic regression on each clip's mean-pooled dense features and on its unit "
            "histogram (the same for every prompt seed), beside the prompts' mean over seeds.", "",
            "| task | features LR old / new | unit histogram LR old / new | prompts old / new |", "|---|---|---|---|"]
    for n in [t for t in old if t in new]:
        eer = TASKS[n].metric == "eer"
        c = lambda r, k: metric(r.get(n), k, "test", eer)  # noqa: E731
        cells = [c(old_run, "logreg_feats"), c(new_run, "logreg_feats"), c(old_run, "logreg_hist"), c(new_run, "logreg_hist")]
        if None in cells:
            continue
        rows.append(f"| {n}{' (EER)' if eer else ''} | {cells[0]:.3f} / {cells[1]:.3f} | {cells[2]:.3f} / {cells[3]:.3f} | "
                    f"{_m(old[n], eer)} / {_m(new[n], eer)} |")
    return rows


def render(old: dict[str, list[float]], new: dict[str, list[float]], meta: dict) -> str:
    """Both tables as markdown (see the module docstring)."""
    half, margin, level = meta["half"], meta["margin"], meta["level"]
    lines = [f"Suite rule against prompt-training noise: {meta['old']} ({meta['n_old']} prompt seeds) and {meta['new']} "
             f"({meta['n_new']}), unseen voices, prompt variant {meta.get('variants', 'v2')}, {meta['date']}. Regenerated by "
             "`scripts/suite_seed_rule.py`. Accuracy (**EER** for `vad`, lower is better); a change is positive when "
             "better.", "",
             f"**1. The rule against itself**: each bundle's first {half} seeds ({meta['first_seeds']}) against its "
             f"other seeds; \"fires\" when either mean is more than {margin:.2f} worse than the other.", "",
             "| bundle | task | first seeds | other seeds | change | rule |", "|---|---|---|---|---|---|"]
    lines += self_table("old", old, half, margin) + self_table("new", new, half, margin)
    lines += ["", f"**2. New - old over all seeds**, {level:.0%} bootstrap interval over seeds (10,000 resamples, "
              "each bundle's seeds resampled on their own; seed noise only, one fixed test set).", "",
              "| task | old mean | new mean | new - old | interval | verdict |", "|---|---|---|---|---|---|"]
    for n in [t for t in old if t in new]:
        eer = TASKS[n].metric == "eer"
        d = bootstrap_diff(old[n], new[n], level=level)
        v = verdict(d, margin)
        lines.append(f"| {n}{' (EER)' if eer else ''} | {_m(old[n], eer)} | {_m(new[n], eer)} | {d.diff:+.3f} | "
                     f"{d.lo:+.3f} to {d.hi:+.3f} | {'**' + v + '**' if v == 'behind' else v} |")
    if meta.get("ensembles"):
        lines += ensemble_table(*meta["ensembles"], margin)
    if meta.get("first_runs"):
        lines += regression_table(*meta["first_runs"], old, new)
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, default=ROOT / "models" / "default-v1")
    ap.add_argument("--new", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--old-runs", type=Path, nargs="+", required=True, help="run_suite.py --work folders of --old")
    ap.add_argument("--new-runs", type=Path, nargs="+", required=True, help="run_suite.py --work folders of --new")
    ap.add_argument("--old-variant", default="v2", help="the old side's prompt variant (run_suite.py --variants)")
    ap.add_argument("--new-variant", default="v2", help="the new side's prompt variant")
    ap.add_argument("--half", type=int, default=3, help="table 1 splits each bundle's runs after this many")
    ap.add_argument("--margin", type=float, default=0.02, help="the rule's margin (2 points)")
    ap.add_argument("--level", type=float, default=0.9, help="the interval's coverage")
    ap.add_argument("--suite", type=Path, default=None, help="the suite folder: also score ensembles (table 3)")
    ap.add_argument("--enc-work", type=Path, default=ROOT / ".cache" / "suite_runs",
                    help="run_suite.py's --work folder whose unit caches the ensembles read")
    ap.add_argument("--results", default=str(ROOT / "docs" / "results.md"), help="'none': print only")
    a = ap.parse_args()
    for side in ("old_runs", "new_runs"):
        if not 2 <= a.half < len(getattr(a, side)) - 1:
            ap.error(f"--{side.replace('_', '-')}: need at least {a.half + 2} runs to split after --half {a.half} "
                     f"(two on each side), got {len(getattr(a, side))}")
    loaded = {side: [load_results(w, bundle) for w in getattr(a, f"{side}_runs")]
              for side, bundle in (("old", a.old), ("new", a.new))}
    variant = {"old": a.old_variant, "new": a.new_variant}
    seeds = {side: [next((t[variant[side]].get("seed") for t in r.values() if variant[side] in t), None) for r, _ in runs]
             for side, runs in loaded.items()}
    bb = {side: runs[0][1] for side, runs in loaded.items()}
    meta = {side: f"`{bb[side].spec.name}` (`{bb[side].fingerprint[:16]}`)" for side in bb}
    meta.update(half=a.half, margin=a.margin, level=a.level, n_old=len(a.old_runs), n_new=len(a.new_runs),
                first_seeds="; ".join(f"{side}: " + ", ".join(str(s) for s in seeds[side][:a.half]) for side in seeds),
                date=datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    meta["first_runs"] = (loaded["old"][0][0], loaded["new"][0][0])
    meta["variants"] = a.old_variant if a.old_variant == a.new_variant else f"{a.old_variant} (old), {a.new_variant} (new)"
    if a.suite:
        meta["ensembles"] = [ensemble_scores(runs[0][1], getattr(a, f"{side}_runs"), a.half, a.suite, a.enc_work,
                                             variant[side]) for side, runs in loaded.items()]
    table = render(*(scores([r for r, _ in loaded[side]], variant[side]) for side in ("old", "new")), meta)
    if a.results != "none":
        replace_block(Path(a.results), BEGIN, END, table)
    sys.stdout.write(table)


if __name__ == "__main__":
    main()

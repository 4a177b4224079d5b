#!/usr/bin/env python
"""Issue 14's suite rule against prompt-training noise: the synthetic suite at several prompt seeds on two bundles.

    for s in 100501 1 2 3 4 5; do
      python scripts/run_suite.py --backbone models/default-v1 --variants v2 --results none --demo '' \
          --prompt-seed $s --work .cache/suite_seeds/v1_$s
      python scripts/run_suite.py --backbone models/default --variants v2 --results none --demo '' \
          --prompt-seed $s --work .cache/suite_seeds/new_$s
    done
    python scripts/suite_seed_rule.py --suite .cache/suite \
        --old-runs .cache/suite_seeds/v1_{100501,1,2,3,4,5} --new-runs .cache/suite_seeds/new_{100501,1,2,3,4,5}

(List the runs in the order to split them: a shell glob sorts 1, 10, 100501, 2, ...)

Tables (unseen voices; each side's prompt variant, SpeechPrompt v2 unless ``--old-variant`` / ``--new-variant`` name
another of ``run_suite.py``'s, e.g. ``v2_mean``; ``speechprompt/training/seed_stats.py``):
1. the rule against itself: each bundle's first ``--half`` runs against its other runs (the same bundle, suite and
   recipe; only the prompt seed differs), and whether "more than 2 points lower" fires;
2. new - old over all runs with a bootstrap interval over seeds, and the verdict: behind by more than 2 points, not
   behind by more than 2 points, or undecided at this many seeds;
3. with ``--suite``: the demos' recipe, ensembles (``speechprompt/ensembles.py``): each bundle's packages of its
   first ``--half`` runs joined into one ensemble and those of its other runs into another, scored on the suite's
   unseen voices (units from ``--enc-work``, ``run_suite.py``'s cache, encoded when missing); the rule on the mean
   of the two ensembles, and each bundle's two ensembles against each other;
4. where the loss sits: the regressions each run also fits (they do not depend on the prompt seed; the first run's),
   on the mean-pooled dense features and on the unit histograms of each bundle, beside the prompts' means.
Replaces the ``<--block>:begin/end`` block of ``--results`` (default ``seedrule``; ``none``: print only).
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

Scores = dict[str, list[float]]  # task -> one score per run (or ensemble), higher is better


def scores(runs: list[dict], variant: str = "v2") -> Scores:
    """Per task present in every run: the ``variant`` test cell of each run's ``results.json`` (``run_suite.py``),
    higher is better (the vad EER negated)."""
    out = {}
    for n, task in TASKS.items():
        eer = task.metric == "eer"
        cells = [metric(r.get(n), variant, "test", eer) for r in runs]
        if runs and None not in cells:
            out[n] = [-c if eer else c for c in cells]
    return out


def _m(v: list[float], eer: bool) -> str:
    """The mean of ``v`` as printed: the EER back to its own sign, three decimals, never "-0.000"."""
    x = sum(v) / len(v)
    return f"{(-x if eer else x) + 0.0:.3f}"


def _name(n: str) -> str:
    return f"{n} (EER)" if TASKS[n].metric == "eer" else n


def _fires(a: list[float], b: list[float], margin: float) -> bool:
    """Either side's mean more than ``margin`` worse than the other's."""
    return rule_fires(a, b, margin) or rule_fires(b, a, margin)


def self_table(name: str, sc: Scores, half: int, margin: float) -> list[str]:
    """Rows of table 1 for one bundle: mean of runs[:half], of runs[half:], the change, whether the rule fires."""
    rows = []
    for n, v in sc.items():
        eer = TASKS[n].metric == "eer"
        a, b = v[:half], v[half:]
        change = sum(b) / len(b) - sum(a) / len(a)
        rows.append(f"| {name} | {_name(n)} | {_m(a, eer)} | {_m(b, eer)} | {change:+.3f} | "
                    f"{'**fires**' if _fires(a, b, margin) else 'no'} |")
    return rows


def ensemble_scores(bb, runs: list[Path], half: int, suite: Path, enc_work: Path, variant: str = "v2") -> Scores:
    """Per task of ``suite``: the test score (higher is better, the vad EER negated) of the ensemble of
    ``runs[:half]``'s saved ``variant`` packages and of ``runs[half:]``'s
    (``<run>/<units_key[:16]>/packages/<task>.<variant>.safetensors``, written by ``run_suite.py``). ``bb``: the
    runs' ``Backbone``. Tasks some run has no package for are left out. Raises what ``read_package``, ``ensemble``
    (``PackageInvalid``: packages of other backbones or shapes) and ``evaluate_package`` (``BackboneMismatch``) raise.
    """
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
            pkg = ensemble([read_package(f.read_bytes(), stored=True) for f in part])
            m = evaluate_package(bb, pkg, test["units"], test["labels"])
            out.setdefault(n, []).append(-m["eer"] if task.metric == "eer" else m["accuracy"])
    return out


def ensemble_table(old: Scores, new: Scores, margin: float, sizes: str) -> list[str]:
    """Rows of table 3: each bundle's two ensembles (``sizes``: their member counts, e.g. "3 / 3"), whether they fire
    against each other, new - old of the means and whether the rule fires on it."""
    rows = ["", f"**3. The demos' recipe: ensembles** ({sizes} members: each bundle's first seeds as one ensemble, "
            "its other seeds as another).", "",
            "| task | old E1 / E2 | old E1 vs E2 | new E1 / E2 | new E1 vs E2 | new - old | rule |",
            "|---|---|---|---|---|---|---|"]
    for n in [t for t in old if t in new]:
        eer = TASKS[n].metric == "eer"
        o, w = old[n], new[n]
        pair = [" / ".join(_m([x], eer) for x in v) for v in (o, w)]
        self_fire = ["**fires**" if _fires(v[:1], v[1:], margin) else "no" for v in (o, w)]
        d = sum(w) / len(w) - sum(o) / len(o)
        rows.append(f"| {_name(n)} | {pair[0]} | {self_fire[0]} | {pair[1]} | {self_fire[1]} | {d:+.3f} | "
                    f"{'**fires**' if rule_fires(o, w, margin) else 'no'} |")
    return rows


def regression_table(old_run: dict, new_run: dict, old: Scores, new: Scores) -> list[str]:
    """Rows of table 4: per task, LR on mean-pooled dense features and LR on unit histograms (``run_suite.logreg``)
    of each bundle's first run, and the prompts' mean over seeds; where the features hold a task that the units
    lose, the loss is after the dense stage. No rows (runs without the regressions): no table."""
    head = ["", "**4. Where the loss sits**: logistic regression on each clip's mean-pooled dense features and on its "
            "unit histogram (the same for every prompt seed), beside the prompts' mean over seeds.", "",
            "| task | features LR old / new | unit histogram LR old / new | prompts old / new |", "|---|---|---|---|"]
    rows = []
    for n in [t for t in old if t in new]:
        eer = TASKS[n].metric == "eer"
        cells = [metric(r.get(n), k, "test", eer) for k in ("logreg_feats", "logreg_hist") for r in (old_run, new_run)]
        if None in cells:
            continue
        rows.append(f"| {_name(n)} | {cells[0]:.3f} / {cells[1]:.3f} | {cells[2]:.3f} / {cells[3]:.3f} | "
                    f"{_m(old[n], eer)} / {_m(new[n], eer)} |")
    return head + rows if rows else []


def render(old: Scores, new: Scores, meta: dict) -> str:
    """The tables of the module docstring as markdown. ``meta``: ``old`` / ``new`` (bundle labels), ``n_old`` /
    ``n_new`` (runs), ``half``, ``margin``, ``level``, ``first_seeds`` (label), ``date``; optional ``variants``
    (label, default "v2"), ``ensembles`` (``(old, new)`` of :func:`ensemble_scores`, with ``ensemble_sizes``) and
    ``first_runs`` (each side's first ``results.json``, for table 4)."""
    half, margin, level = meta["half"], meta["margin"], meta["level"]
    lines = [f"Suite rule against prompt-training noise: {meta['old']} ({meta['n_old']} prompt seeds) and "
             f"{meta['new']} ({meta['n_new']}), unseen voices, prompt variant {meta.get('variants', 'v2')}, "
             f"{meta['date']}. Regenerated by `scripts/suite_seed_rule.py`. Accuracy (**EER** for `vad`, lower is "
             "better); a change is positive when better."]
    if half:  # 0: no split (too few runs on a side), tables 2 and 4 only
        lines += ["", f"**1. The rule against itself**: each bundle's first {half} seeds ({meta['first_seeds']}) "
                  f"against its other seeds; \"fires\" when either mean is more than {margin:.2f} worse than the "
                  "other.", "", "| bundle | task | first seeds | other seeds | change | rule |", "|---|---|---|---|---|---|"]
        lines += self_table("old", old, half, margin) + self_table("new", new, half, margin)
    lines += ["", f"**2. New - old over all seeds**, {level:.0%} bootstrap interval over seeds (10,000 resamples, "
              "each bundle's seeds resampled on their own; seed noise only, one fixed test set).", "",
              "| task | old mean | new mean | new - old | interval | verdict |", "|---|---|---|---|---|---|"]
    for n in [t for t in old if t in new]:
        eer = TASKS[n].metric == "eer"
        d = bootstrap_diff(old[n], new[n], level=level)
        v = verdict(d, margin)
        lines.append(f"| {_name(n)} | {_m(old[n], eer)} | {_m(new[n], eer)} | {d.diff:+.3f} | "
                     f"{d.lo:+.3f} to {d.hi:+.3f} | {'**' + v + '**' if v == 'behind' else v} |")
    if meta.get("ensembles"):
        lines += ensemble_table(*meta["ensembles"], margin, meta.get("ensemble_sizes", "?"))
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
    ap.add_argument("--half", type=int, default=3, help="table 1 splits each bundle's runs after this many (0: no "
                    "table 1 nor 3, for sides with fewer runs)")
    ap.add_argument("--margin", type=float, default=0.02, help="the rule's margin (2 points)")
    ap.add_argument("--level", type=float, default=0.9, help="the interval's coverage, in (0, 1)")
    ap.add_argument("--suite", type=Path, default=None, help="the suite folder: also score ensembles (table 3)")
    ap.add_argument("--enc-work", type=Path, default=ROOT / ".cache" / "suite_runs",
                    help="run_suite.py's --work folder whose unit caches the ensembles read")
    ap.add_argument("--results", default=str(ROOT / "docs" / "results.md"), help="'none': print only")
    ap.add_argument("--block", default="seedrule", help="the marker name of the block in --results to replace")
    a = ap.parse_args()
    if a.half < 2 and a.half != 0:
        ap.error(f"--half: each part needs >= 2 runs for a mean with a spread (or 0: no split), got {a.half}")
    if not 0.0 < a.level < 1.0:
        ap.error(f"--level: a coverage in (0, 1), got {a.level}")
    for side in ("old_runs", "new_runs"):
        if len(getattr(a, side)) < a.half + 2:  # --half 0: the bootstrap's two runs
            ap.error(f"--{side.replace('_', '-')}: need at least {a.half + 2} runs to split after --half {a.half} "
                     f"(two or more after it), got {len(getattr(a, side))}")
    loaded = {side: [load_results(w, bundle) for w in getattr(a, f"{side}_runs")]
              for side, bundle in (("old", a.old), ("new", a.new))}
    variant = {"old": a.old_variant, "new": a.new_variant}
    sc = {side: scores([r for r, _ in loaded[side]], variant[side]) for side in loaded}
    for side in sc:
        if not sc[side]:
            ap.error(f"--{side}-variant {variant[side]}: no task has that variant's test cell in every --{side}-runs "
                     "folder (run_suite.py --variants names the variants)")
    seeds = {side: [next((t[variant[side]].get("seed") for t in r.values() if variant[side] in t), None)
                    for r, _ in runs] for side, runs in loaded.items()}
    bb = {side: runs[0][1] for side, runs in loaded.items()}
    meta = {side: f"`{bb[side].spec.name}` (`{bb[side].fingerprint[:16]}`)" for side in bb}
    meta.update(half=a.half, margin=a.margin, level=a.level, n_old=len(a.old_runs), n_new=len(a.new_runs),
                first_seeds="; ".join(f"{s}: " + ", ".join(map(str, seeds[s][:a.half])) for s in seeds),
                date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
                first_runs=(loaded["old"][0][0], loaded["new"][0][0]),
                variants=a.old_variant if a.old_variant == a.new_variant
                else f"{a.old_variant} (old), {a.new_variant} (new)")
    if a.suite and a.half:
        meta["ensembles"] = [ensemble_scores(bb[side], getattr(a, f"{side}_runs"), a.half, a.suite, a.enc_work,
                                             variant[side]) for side in ("old", "new")]
        sizes = {f"{a.half} / {len(getattr(a, f'{s}_runs')) - a.half}" for s in ("old", "new")}
        meta["ensemble_sizes"] = " and ".join(sorted(sizes))
    table = render(sc["old"], sc["new"], meta)
    if a.results != "none":
        replace_block(Path(a.results), f"<!-- {a.block}:begin -->", f"<!-- {a.block}:end -->", table)
    sys.stdout.write(table)


if __name__ == "__main__":
    main()

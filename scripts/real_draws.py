#!/usr/bin/env python
"""The real-speech table over several training draws: mean (min-max) of every cell (issue 14).

    python scripts/real_speech_eval.py --columns new --draw 1 --work .cache/real_eval_d1 --results none
    python scripts/real_speech_eval.py --columns new --draw 2 --work .cache/real_eval_d2 --results none
    python scripts/real_draws.py .cache/real_eval .cache/real_eval_d1 .cache/real_eval_d2

(add ``--columns old --old-backbone models/default-v1`` runs on the same ``--work`` folders for the old default's
column: they train on the same draw's clips)

Each ``--draw`` redraws what the training side gets beyond its real clips (channel twins, TTS voices, generated
non-speech) and the prompts' seed; the speaker split and the test clips stay. One draw moved cells by up to 0.13
(docs/results.md, "Rerun on 2026-12-04"), so a difference between columns means something only beyond this spread.
The block goes to docs/results.md between the ``draws:begin/end`` markers, only when every draw is of the default
backbone (``models/default``); another backbone's block is printed and the script exits with an error.

``--readout dev-pick``: where a draw trained both read-outs (``--variants v2,v2_mean``), the prompts' cell is the one
with the higher dev accuracy (a tie: the lower dev loss), never the test's; folders of several builds of one recipe
(other ``--lm-seed``s) can be passed together, and the header counts the builds (backbone fingerprints).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.training import real_tasks  # noqa: E402
from speechprompt.training.markers import replace_block  # noqa: E402

BEGIN, END = "<!-- draws:begin -->", "<!-- draws:end -->"
PROMPTS = ("new default (prompts)", ("new", "v2"))
REGRESSIONS = (("LR unit hist (new)", ("new", "logreg_hist")), ("MFCC + LR", ("logreg_mfcc",)),
               ("speech_embedding + LR", ("logreg_speech_embedding",)))
COLUMNS = (PROMPTS, ("old default (prompts)", ("old", "v2"))) + REGRESSIONS  # old: when a draw ran --columns old


READOUT_VARIANTS = ("v2", "v2_mean")  # the separator's and the mean state's read-out (prompting.py)
READOUTS = ("separator", "dev-pick")  # how the new backbone's prompt cell is chosen (render, --readout)


def dev_pick(new: dict) -> str | None:
    """Of the read-out variants a draw trained on the new backbone (``new``: one task's ``"new"`` results), the one
    with the higher dev accuracy; a tie goes to the lower dev loss (a variant without one loses the tie), then to the
    first of :data:`READOUT_VARIANTS` (the separator). None when neither was run."""
    have = [v for v in READOUT_VARIANTS if isinstance(new.get(v), dict) and "dev" in new[v]]
    return min(have, key=lambda v: (-new[v]["dev"]["accuracy"], new[v]["dev"].get("loss", float("inf"))),
               default=None)  # min keeps the first of equal keys: READOUT_VARIANTS' order


def _map_new(runs: list[dict], change) -> list[dict]:
    """Copies of ``runs`` with each task's new-backbone results ``new`` replaced by ``change(new)`` (dropped when it
    gives None); the input is unchanged."""
    out = []
    for run in runs:
        run = {t: dict(r) for t, r in run.items()}
        for r in run.values():
            if isinstance(r.get("new"), dict):
                new = change(r.pop("new"))
                if new is not None:
                    r["new"] = new
        out.append(run)
    return out


def picked(runs: list[dict]) -> list[dict]:
    """``runs`` with each task's ``new.v2`` replaced by its :func:`dev_pick` (copies; the input is unchanged). The old
    default's column keeps its separator read-out."""
    return _map_new(runs, lambda new: {**new, "v2": new[v]} if (v := dev_pick(new)) is not None else new)


def only_backbones(runs: list[dict], prefixes: list[str]) -> list[dict]:
    """``runs`` keeping a task's new-backbone cells only where its fingerprint starts with one of ``prefixes``
    (copies): a work folder copied from another backbone's keeps that backbone's cells of the tasks it did not rerun,
    and they must not join the rows."""
    return _map_new(runs, lambda new: new if str(new.get("fingerprint", "")).startswith(tuple(prefixes)) else None)


def fingerprints_by_task(runs: list[dict]) -> dict[str, set[str]]:
    """Task -> the new-backbone fingerprints its cells come from, over ``runs``."""
    fps: dict[str, set[str]] = {}
    for run in runs:
        for t, r in run.items():
            if isinstance(r.get("new"), dict) and "fingerprint" in r["new"]:
                fps.setdefault(t, set()).add(r["new"]["fingerprint"])
    return fps


def cell(result: dict, path: tuple[str, ...], field: str = "accuracy") -> float | None:
    """Test ``field`` (accuracy; ``n``: clips) of one column of one task's results (None when it was not run)."""
    for k in path:
        result = result.get(k, {}) if isinstance(result, dict) else {}
    return result["test"][field] if "test" in result else None


def spread(values: list[float]) -> str:
    """``0.412 (0.395-0.430)``: mean, then min-max over the draws."""
    if not values:
        return "-"
    m = sum(values) / len(values)
    return f"{m:.3f} ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else f"{m:.3f}"


def render(runs: list[dict], fingerprints: set[str], readout: str = "separator") -> str:
    """The markdown block: one row per task, one column per method, over the runs that have the cell
    (``readout="dev-pick"``: the prompts' cell of each run is :func:`dev_pick`'s)."""
    if readout not in READOUTS:
        raise ValueError(f"readout {readout!r}; accepted: {', '.join(READOUTS)}")
    if readout == "dev-pick":
        runs = picked(runs)
    head = "| task | draws | " + " | ".join(c for c, _ in COLUMNS) + " | prompts - best regression (per draw) |"
    builds = f"{len(fingerprints)} builds: backbones" if len(fingerprints) > 1 else "backbone"
    how = "; prompts: the read-out the dev split picks in each draw" if readout == "dev-pick" else ""
    lines = [f"Over {len(runs)} training draws (`scripts/real_draws.py`; {builds} "
             f"{', '.join(f'`{f[:16]}`' for f in sorted(fingerprints))}{how}): mean (min-max) test accuracy of each "
             "cell on the same test clips.", "", head, "|" + "---|" * (head.count("|") - 1)]
    for name in real_tasks.TASK_NAMES:
        rs = [r[name] for r in runs if name in r and cell(r[name], PROMPTS[1]) is not None]
        if not rs:
            continue
        vals = [[v for r in rs if (v := cell(r, path)) is not None] for _, path in COLUMNS]
        cols = [spread(v) + (f" [{len(v)} of {len(rs)} draws]" if 0 < len(v) < len(rs) else "") for v in vals]
        gaps = [cell(r, PROMPTS[1]) - max(v for _, p in REGRESSIONS if (v := cell(r, p)) is not None) for r in rs]
        lines.append(f"| {name} | {len(rs)} | " + " | ".join(cols) + f" | {' / '.join(f'{g:+.3f}' for g in gaps)} |")
    return "\n".join(lines) + "\n"


def foreign_backbones(fps: set[str], default: Path = ROOT / "models" / "default") -> set[str]:
    """The fingerprints in ``fps`` that are not the default backbone's (``default``'s ``backbone.json``): results.md's
    draws block describes the default, so a trial backbone's draws are printed, never written there."""
    return fps - {json.loads((default / "backbone.json").read_text())["fingerprint"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", nargs="+", type=Path, help="real_speech_eval.py --work folders, one per draw")
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md", help="'none': print only")
    ap.add_argument("--readout", choices=READOUTS, default="separator",
                    help="the new backbone's prompt cell: the separator read-out (v2), or per draw the read-out with "
                         "the better dev accuracy (v2 or v2_mean)")
    ap.add_argument("--backbones", default="",
                    help="comma-separated fingerprint prefixes: only these backbones' cells join the rows (needed when "
                         "a folder copied from another backbone keeps that one's cells of other tasks)")
    a = ap.parse_args()
    runs = [json.loads((w / "results.json").read_text()) for w in a.work]
    if a.backbones:
        runs = only_backbones(runs, [p for p in a.backbones.split(",") if p])
    by_task = fingerprints_by_task(runs)
    for t, f in sorted(by_task.items()):
        if len(f) > 1 and not a.backbones:
            sys.stderr.write(f"note: {t} pools {len(f)} backbones ({', '.join(sorted(x[:8] for x in f))}); "
                             "--backbones keeps only the ones named\n")
    fps = set().union(*by_task.values())
    block = render(runs, fps, a.readout)
    sys.stdout.write(block)
    if str(a.results) != "none":
        if foreign := foreign_backbones(fps):
            sys.exit(f"not written to {a.results}: its draws block is the default backbone's, and these draws are of "
                     f"{', '.join(sorted(f[:8] for f in foreign))} (printed above; --results none prints only)")
        replace_block(a.results, BEGIN, END, block)


if __name__ == "__main__":
    main()

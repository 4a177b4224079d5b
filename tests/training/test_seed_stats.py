"""seed_stats: the suite rule's difference of means with a bootstrap interval over prompt seeds, and
scripts/suite_seed_rule.py's tables built from it."""

import json
import sys

import numpy as np
import pytest

from speechprompt.backbone import Backbone
from speechprompt.package import read_package
from speechprompt.training import seed_stats as S
from speechprompt.training.evaluate import predict
from tests.scripts import load_script


def test_interval_of_two_runs_matches_the_exact_resampling_distribution():
    """old = [0, 1] resampled gives a mean of 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4; new = [0, 0] has no spread.
    So new - old is -1 a quarter of the time and 0 a quarter: the 5 % and 95 % quantiles are exactly -1 and 0."""
    d = S.bootstrap_diff([0.0, 1.0], [0.0, 0.0], level=0.9, seed=0)
    assert d.diff == -0.5 and (d.lo, d.hi) == (-1.0, 0.0) and (d.n_old, d.n_new) == (2, 2)
    # at 40 % the 30 % and 70 % quantiles both fall inside the half of the draws whose old mean is 0.5
    d40 = S.bootstrap_diff([0.0, 1.0], [0.0, 0.0], level=0.4)
    assert (d40.lo, d40.hi) == (-0.5, -0.5)


def test_runs_without_spread_give_the_difference_itself_and_a_verdict_on_it():
    d = S.bootstrap_diff([0.80, 0.80, 0.80], [0.75, 0.75, 0.75])
    assert d.diff == pytest.approx(-0.05) and d.lo == pytest.approx(-0.05) and d.hi == pytest.approx(-0.05)
    assert S.verdict(d) == S.BEHIND
    assert S.verdict(S.bootstrap_diff([0.80, 0.80], [0.79, 0.79])) == S.NOT_BEHIND


def test_interval_widens_with_the_spread_and_is_reproducible():
    tight = S.bootstrap_diff([0.60, 0.61, 0.59], [0.55, 0.56, 0.54], seed=3)
    wide = S.bootstrap_diff([0.50, 0.70, 0.60], [0.45, 0.65, 0.55], seed=3)
    assert tight.diff == pytest.approx(-0.05) and wide.diff == pytest.approx(-0.05)
    assert tight.lo < -0.05 < tight.hi and wide.lo < tight.lo and wide.hi > tight.hi
    assert S.verdict(tight) == S.BEHIND and S.verdict(wide) == S.UNDECIDED
    assert S.bootstrap_diff([0.50, 0.70, 0.60], [0.45, 0.65, 0.55], seed=3) == wide


def test_verdict_boundaries():
    assert S.verdict(S.SeedDiff(-0.04, -0.05, -0.021, 0.9, 3, 3)) == S.BEHIND
    assert S.verdict(S.SeedDiff(-0.03, -0.05, -0.02, 0.9, 3, 3)) == S.UNDECIDED  # the margin itself is not beyond it
    assert S.verdict(S.SeedDiff(0.0, -0.02, 0.02, 0.9, 3, 3)) == S.NOT_BEHIND
    assert S.verdict(S.SeedDiff(0.0, -0.03, 0.02, 0.9, 3, 3), margin=0.05) == S.NOT_BEHIND


def test_refusals():
    with pytest.raises(ValueError, match=r"need a flat list of >= 2 runs on each side, got shapes \(1,\) old"):
        S.bootstrap_diff([0.5], [0.5, 0.6])
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        S.bootstrap_diff([0.5, 0.6], [0.5, 0.6], resamples=0)
    with pytest.raises(ValueError, match="level must be in"):
        S.bootstrap_diff([0.5, 0.6], [0.5, 0.6], level=1.0)
    with pytest.raises(ValueError, match="need >= 1 run"):
        S.rule_fires([], [0.5])


def test_rule_fires_only_beyond_the_margin():
    assert S.rule_fires([0.60, 0.60], [0.57, 0.57]) and not S.rule_fires([0.60, 0.60], [0.59, 0.59])
    assert not S.rule_fires([0.60], [0.70])
    # exactly 2 points on k / 100 clips is at the margin, not beyond it (0.74 - 0.76 < -0.02 in floats)
    assert not S.rule_fires([0.76], [0.74]) and not S.rule_fires([0.60], [0.58]) and S.rule_fires([0.76], [0.73])
    assert S.verdict(S.SeedDiff(-0.02, 0.74 - 0.76, 0.74 - 0.76, 0.9, 3, 3)) == S.NOT_BEHIND


def _run(acc: float, eer: float) -> dict:
    return {"question": {"v2": {"test": {"accuracy": acc}}}, "vad": {"v2": {"test": {"accuracy": 0.9, "eer": eer}}}}


def test_script_tables_split_each_bundle_and_judge_new_against_old():
    mod = load_script("suite_seed_rule")
    old = mod.scores([_run(a, e) for a, e in [(0.60, 0.01), (0.62, 0.01), (0.64, 0.01), (0.61, 0.01)]])
    new = mod.scores([_run(a, e) for a, e in [(0.50, 0.00), (0.56, 0.00), (0.52, 0.00), (0.51, 0.00)]])
    assert old["vad"] == [-0.01] * 4  # EER negated: higher is better everywhere
    meta = {"old": "o", "new": "n", "n_old": 4, "n_new": 4, "date": "d", "half": 2, "margin": 0.02, "level": 0.9,
            "first_seeds": "old: 1, 2; new: 1, 2"}
    lines = mod.render(old, new, meta).splitlines()
    # old: first two seeds 0.610, other two 0.625 (no fire); new: 0.530 vs 0.515 (no fire)
    assert "| old | question | 0.610 | 0.625 | +0.015 | no |" in lines
    assert "| new | question | 0.530 | 0.515 | -0.015 | no |" in lines
    assert "| new | vad (EER) | 0.000 | 0.000 | +0.000 | no |" in lines
    row = next(x for x in lines if x.startswith("| question | 0.617 | 0.522 | -0.095 |"))
    assert row.endswith("| **behind** |")
    vad = next(x for x in lines if x.startswith("| vad (EER) | 0.010 | 0.000 | +0.010 |"))
    assert vad.endswith("| not behind |")
    assert not any(x.startswith("**4.") for x in lines)  # no regressions in the runs: no table 4
    unsplit = mod.render(old, new, {**meta, "half": 0}).splitlines()  # --half 0: no table 1, table 2 the same
    assert not any(x.startswith("**1.") or x.startswith("| old |") for x in unsplit) and row in unsplit
    assert mod.regression_table({}, {}, old, new) == []
    fired = mod.self_table("x", {"question": [0.60, 0.60, 0.50, 0.52]}, 2, 0.02)
    assert fired == ["| x | question | 0.600 | 0.510 | -0.090 | **fires** |"]


@pytest.mark.parametrize(("args", "message"), [
    (["--half", "2", "--new-runs", "n0", "n1", "n2"], "--new-runs: need at least 4 runs to split after --half 2"),
    (["--half", "1", "--new-runs", "n0", "n1", "n2"], "--half: each part needs >= 2 runs"),
    (["--half", "0", "--new-runs", "n0"], "--new-runs: need at least 2 runs to split after --half 0"),
    (["--level", "1.5", "--new-runs", "n0", "n1", "n2", "n3", "n4"], "--level: a coverage in (0, 1), got 1.5"),
])
def test_script_refuses_settings_it_cannot_judge(args, message, monkeypatch, capsys):
    mod = load_script("suite_seed_rule")
    monkeypatch.setattr(sys, "argv", ["suite_seed_rule.py", "--old-runs", *(f"o{i}" for i in range(6)), *args,
                                      "--results", "none"])
    with pytest.raises(SystemExit) as e:
        mod.main()
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_script_end_to_end_scores_ensembles_as_the_mean_of_their_members(bundle_dir, wav_folder, tmp_path,
                                                                         monkeypatch, capsys):
    """Four run_suite.py runs (prompt seeds 1-4) on a tiny bundle, then the script with ``--suite``: table 3's
    ensembles score what averaging each member's own class probabilities scores; table 2 compares a bundle with
    itself: a difference of zero and the interval of the runs' own cells resampled on both sides."""
    suite = tmp_path / "suite"
    rows = []
    for label, src in (("female", "tone"), ("male", "noise")):
        clips = sorted((wav_folder / src).glob("*.wav"))
        rows += [f"{c},{label},{split}" for i, split in enumerate(("train", "dev", "test"))
                 for c in clips[4 * i:4 * i + 4]]
    (suite / "gender").mkdir(parents=True)
    (suite / "gender" / "manifest.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    run_suite = load_script("run_suite")
    runs = [tmp_path / f"run{s}" for s in (1, 2, 3, 4)]
    for s, work in zip((1, 2, 3, 4), runs):
        monkeypatch.setattr(sys, "argv", [
            "run_suite.py", "--suite", str(suite), "--backbone", str(bundle_dir), "--work", str(work), "--results", "none",
            "--demo", "", "--variants", "v2,v2_mean", "--max-epochs", "2", "--prompt-seed", str(s),
            "--store", str(tmp_path / "st")])
        run_suite.main()
    mod = load_script("suite_seed_rule")
    monkeypatch.setattr(sys, "argv", ["suite_seed_rule.py", "--old", str(bundle_dir), "--new", str(bundle_dir),
                                      "--old-runs", *map(str, runs), "--new-runs", *map(str, runs), "--half", "2",
                                      "--suite", str(suite), "--enc-work", str(tmp_path / "enc"), "--results", "none"])
    mod.main()
    out = capsys.readouterr().out.splitlines()
    bb = Backbone.load(bundle_dir)
    test = run_suite.encode_task(bb, suite / "gender", tmp_path / "enc")["test"]
    accs = []
    for part in (runs[:2], runs[2:]):
        pkgs = [read_package(next(r.glob("*/packages/gender.v2.safetensors")).read_bytes()) for r in part]
        probs = np.mean([predict(bb.unit_lm, p, test["units"]) for p in pkgs], axis=0)
        labels = ["female", "male"]
        accs.append(float(np.mean([labels[i] == y for i, y in zip(probs.argmax(1), test["labels"])])))
    (row,) = [x for x in out if x.startswith("| gender | ") and x.count("|") == 8]
    assert row.startswith(f"| gender | {accs[0]:.3f} / {accs[1]:.3f} | ")
    assert row.endswith("| +0.000 | no |")
    assert "**3. The demos' recipe: ensembles** (2 / 2 members: each bundle's first seeds as one ensemble, its other " \
        "seeds as another)." in out
    (verdict_row,) = [x for x in out if x.startswith("| gender | ") and x.count("|") == 7]
    results = [json.loads(next(r.glob("*/results.json")).read_text())["gender"] for r in runs]
    cells = [r["v2"]["test"]["accuracy"] for r in results]
    d = S.bootstrap_diff(cells, cells)
    assert verdict_row.endswith(f"| +0.000 | {d.lo:+.3f} to {d.hi:+.3f} | {S.verdict(d)} |")
    # table 4: the first run's regressions (feature LR, unit-histogram LR) of each side and the prompts' means
    f, h = (results[0][k]["test"]["accuracy"] for k in ("logreg_feats", "logreg_hist"))
    m = sum(cells) / len(cells)
    assert f"| gender | {f:.3f} / {f:.3f} | {h:.3f} / {h:.3f} | {m:.3f} / {m:.3f} |" in out
    # another variant on one side (the mean read-out): its own cells and packages, named in the header
    argv = sys.argv[:]
    monkeypatch.setattr(sys, "argv", [*argv[:-2], "--new-variant", "v2_mean", "--results", "none"])
    mod.main()
    out = capsys.readouterr().out.splitlines()
    assert "prompt variant v2 (old), v2_mean (new)," in out[0]
    mean_cells = [r["v2_mean"]["test"]["accuracy"] for r in results]
    d = S.bootstrap_diff(cells, mean_cells)
    (verdict_row,) = [x for x in out if x.startswith("| gender | ") and x.count("|") == 7]
    assert verdict_row.replace("**", "") == (f"| gender | {m:.3f} | {sum(mean_cells) / 4:.3f} | {d.diff:+.3f} | "
                                             f"{d.lo:+.3f} to {d.hi:+.3f} | {S.verdict(d)} |")
    monkeypatch.setattr(sys, "argv", [*argv[:-2], "--new-variant", "v1_fixed", "--results", "none"])
    with pytest.raises(SystemExit) as e:
        mod.main()
    assert e.value.code == 2 and "--new-variant v1_fixed: no task has that variant's test cell" in capsys.readouterr().err
    # --results and --block: the tables go between that block's markers, the rest of the file stays
    doc = tmp_path / "results.md"
    doc.write_text("before\n<!-- mean:begin -->\nold\n<!-- mean:end -->\nafter\n")
    monkeypatch.setattr(sys, "argv", [*argv[:-2], "--new-variant", "v2_mean", "--results", str(doc), "--block", "mean"])
    mod.main()
    text = doc.read_text()
    assert text.startswith("before\n<!-- mean:begin -->\nSuite rule against prompt-training noise:")
    assert text.endswith("<!-- mean:end -->\nafter\n") and "\nold\n" not in text and verdict_row in text

"""scripts/run_suite.py on a tiny pGSLM bundle: the per-task cache holds units + durations + F0 + F0 statistics
(YAAPT in worker processes, equal to the serving extractor), and a task runs end to end (baselines, probes, a
prompt variant) without touching docs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechprompt.prosody import ProsodyUnits
from speechprompt.runtime import Runtime
from speechprompt.training import manifest as M
from tests.scripts import load_script


@pytest.fixture(scope="module")
def run_suite():
    return load_script("run_suite")


def _task(root: Path, wav_folder: Path) -> Path:
    """A 'gender' task folder whose clips are the tone / noise fixture clips (2 per class and split)."""
    rows = []
    for label, src in (("female", "tone"), ("male", "noise")):
        clips = sorted((wav_folder / src).glob("*.wav"))
        for i, split in enumerate(("train", "dev", "test")):
            rows += [f"{c},{label},{split}" for c in clips[2 * i:2 * i + 2]]
    (root / "gender").mkdir(parents=True)
    (root / "gender" / "manifest.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return root / "gender"


def test_encode_task_caches_prosody_and_equals_the_serving_extractor(run_suite, pgslm_backbone, wav_folder,
                                                                      tmp_path, monkeypatch):
    bb, task = pgslm_backbone, _task(tmp_path / "suite", wav_folder)
    data = run_suite.encode_task(bb, task, tmp_path / "work", jobs=2)
    assert {s: len(d["units"]) for s, d in data.items()} == {"train": 4, "dev": 4, "test": 4}
    examples = sorted(M.read_manifest(task / "manifest.csv"), key=lambda e: ("train", "dev", "test").index(e.split))
    served = Runtime(bb).extract_units([M.load_audio(e.path) for e in examples])  # the server's units + YAAPT
    mine = [p for s in ("train", "dev", "test") for p in data[s]["units"]]  # encode_task groups by split
    for a, b in zip(mine, served, strict=True):
        assert isinstance(a, ProsodyUnits) and torch.equal(a.units, b.units) and torch.equal(a.durations, b.durations)
        assert torch.equal(a.f0, b.f0) and a.f0_stats == b.f0_stats and a.frames == b.frames
    assert data["train"]["prosody"].shape == (4, 10) and np.isfinite(data["train"]["prosody"]).all()
    monkeypatch.setattr(run_suite, "extract_prosody", lambda *a, **k: pytest.fail("YAAPT ran again"))
    again = run_suite.encode_task(bb, task, tmp_path / "work", jobs=2)  # from the npz cache
    assert all(torch.equal(a.f0, b.f0) and a.f0_stats == b.f0_stats
               for a, b in zip(again["test"]["units"], data["test"]["units"]))


def test_main_runs_a_pgslm_task_without_touching_docs(run_suite, pgslm_bundle_dir, wav_folder, tmp_path,
                                                     monkeypatch):
    _task(tmp_path / "suite", wav_folder)
    args = ["run_suite.py", "--suite", str(tmp_path / "suite"), "--backbone", str(pgslm_bundle_dir), "--work",
            str(tmp_path / "work"), "--results", "none", "--demo", "", "--variants", "verbalizer_only",
            "--jobs", "1", "--store", str(tmp_path / "store"), "--max-epochs", "3", "--prompt-seed", "7"]
    monkeypatch.setattr(sys, "argv", args)
    run_suite.main()
    (res_file,) = (tmp_path / "work").glob("*/results.json")
    r = json.loads(res_file.read_text())["gender"]
    assert set(r) >= {"verbalizer_only", "logreg_hist", "logreg_feats", "logreg_prosody", "probe_lm_last"}
    assert "v2" not in r and r["verbalizer_only"]["test"]["n"] == 4
    assert r["verbalizer_only"]["max_epochs"] == 3 and r["verbalizer_only"]["epochs"] <= 3  # --max-epochs reached
    assert r["verbalizer_only"]["seed"] == 7  # --prompt-seed reached the recipe
    assert not (tmp_path / "store").exists()  # --demo '': no packages copied
    (pkg,) = (res_file.parent / "packages").glob("gender.verbalizer_only.safetensors")
    from speechprompt.package import read_package

    assert read_package(pkg.read_bytes()).meta.backbone_kind == "pgslm"


@pytest.mark.parametrize("source", ["whisper-block-mean", "ge2e"])
def test_encode_task_units_carry_the_voice_prefix_the_server_adds(run_suite, source, wav_folder, tmp_path):
    """Prompts train on the units ``encode_task`` caches: with a voice prefix they start with the same voice tokens
    as the served ones, whether the vector comes from the encoder's pass or from the waveform (GE2E)."""
    from speechprompt.backbone import Backbone
    from tests.test_ge2e import _ge2e_bundle
    from tests.test_voice import _voice_bundle

    (_ge2e_bundle if source == "ge2e" else _voice_bundle)(tmp_path / "b")
    bb, task = Backbone.load(tmp_path / "b"), _task(tmp_path / "suite", wav_folder)
    data = run_suite.encode_task(bb, task, tmp_path / "work", jobs=1)
    examples = sorted(M.read_manifest(task / "manifest.csv"), key=lambda e: ("train", "dev", "test").index(e.split))
    served = bb.unit_extractor().extract([M.load_audio(e.path) for e in examples])
    mine = [u for s in ("train", "dev", "test") for u in data[s]["units"]]
    assert len(mine) == len(served) == 12
    for a, b in zip(mine, served, strict=True):
        assert torch.equal(a, b.units) and (a[:2] >= 8).all() and (a[2:] < 8).all()


def test_main_chooses_the_unit_view_on_a_product_codebook_and_reruns_a_cell_made_otherwise(
        run_suite, product_bundle_dir, bundle_dir, wav_folder, tmp_path, monkeypatch):
    """--unit-view auto on a product codebook: the v2 cell trains both views, records the selection and the view kept
    (its package names it); a later run with the default (units) retrains that cell instead of reusing it, and so does
    --unit-view clusters (one run on the clusters view); on a plain codebook auto is one run and the cell says units."""
    from speechprompt.package import read_package
    from speechprompt.training.choose import pick_unit_view

    _task(tmp_path / "suite", wav_folder)

    def main(bundle, *more):
        args = ["run_suite.py", "--suite", str(tmp_path / "suite"), "--backbone", str(bundle), "--work",
                str(tmp_path / "work" / bundle.name), "--results", "none", "--demo", "", "--variants", "v2",
                "--max-epochs", "2", *more]
        monkeypatch.setattr(sys, "argv", args)
        run_suite.main()
        (res_file,) = (tmp_path / "work" / bundle.name).glob("*/results.json")
        return json.loads(res_file.read_text())["gender"]["v2"], res_file.parent / "packages" / "gender.v2.safetensors"

    cell, pkg_file = main(product_bundle_dir, "--unit-view", "auto")
    sel = cell["unit_view_selection"]
    assert cell["unit_views"] == "auto" and cell["unit_view"] == pick_unit_view({v: sel[v] for v in ("units", "clusters")})
    pkg = read_package(pkg_file.read_bytes())
    assert (pkg.meta.view is not None) == (cell["unit_view"] == "clusters") and pkg.version == cell["version"]
    again, pkg_file = main(product_bundle_dir)
    assert again["unit_views"] == "units" and "unit_view_selection" not in again and again["unit_view"] == "units"
    assert read_package(pkg_file.read_bytes()).meta.view is None
    forced, pkg_file = main(product_bundle_dir, "--unit-view", "clusters")
    assert (forced["unit_views"], forced["unit_view"]) == ("clusters", "clusters") and "unit_view_selection" not in forced
    assert read_package(pkg_file.read_bytes()).meta.view is not None
    clusters_run = {k: sel["clusters"][k] for k in ("accuracy", "loss")}  # auto's clusters run, the same seed
    assert forced["dev"] == clusters_run and forced["best_epoch"] == sel["clusters"]["best_epoch"]
    plain, _ = main(bundle_dir, "--unit-view", "auto")
    assert plain["unit_views"] == "units" and "unit_view_selection" not in plain


@pytest.mark.parametrize(("seed", "winner"), [(5, "separator"), (1, "mean")])
def test_v2_auto_keeps_the_read_out_the_dev_split_picks(run_suite, bundle_dir, wav_folder, tmp_path, monkeypatch,
                                                        seed, winner):
    """``--variants v2_auto`` trains with both read-outs from one seed and keeps the dev winner: its cell equals the
    plain run (``v2`` or ``v2_mean``) that ``choose.pick_readout`` picks from their dev metrics (at seed 5 the
    separator wins on this toy task, at seed 1 the mean)."""
    from speechprompt.training.choose import pick_readout

    _task(tmp_path / "suite", wav_folder)
    monkeypatch.setattr(sys, "argv", [
        "run_suite.py", "--suite", str(tmp_path / "suite"), "--backbone", str(bundle_dir), "--work", str(tmp_path / "w"),
        "--results", "none", "--demo", "", "--variants", "v2,v2_mean,v2_auto", "--max-epochs", "3", "--prompt-seed", str(seed),
        "--store", str(tmp_path / "store")])
    run_suite.main()
    (res_file,) = (tmp_path / "w").glob("*/results.json")
    r = json.loads(res_file.read_text())["gender"]
    pick = pick_readout({"separator": r["v2"]["dev"], "mean": r["v2_mean"]["dev"]})
    same = r["v2" if pick == "separator" else "v2_mean"]
    assert pick == winner and r["v2_auto"]["readout"] == pick and r["v2_auto"]["dev"] == same["dev"]
    assert r["v2_auto"]["test"] == same["test"] and r["v2_auto"]["best_epoch"] == same["best_epoch"]
    (pkg,) = (res_file.parent / "packages").glob("gender.v2_auto.safetensors")
    from speechprompt.package import read_package

    meta = read_package(pkg.read_bytes()).meta
    assert meta.readout == pick and set(meta.training["readout_selection"]) == {"by", "separator", "mean"}

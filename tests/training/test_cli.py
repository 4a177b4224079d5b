"""`speechprompt train` / `eval` end to end on a tiny random backbone and a folder of synthetic clips."""

from __future__ import annotations

import json

import torch
import typer
from typer.testing import CliRunner

from speechprompt.backbone import make_random_bundle
from speechprompt.package import read_package, with_metadata
from speechprompt.training.cli import register

app = typer.Typer()
register(app)


def test_train_writes_package_curves_report_and_uploads(bundle_dir, wav_folder, tmp_path, monkeypatch):
    sent = {}

    class Resp:
        status_code, text = 201, '{"version": "x"}'

    def fake_put(url, content, headers, timeout):
        sent.update(url=url, content=content, headers=headers)
        return Resp()

    monkeypatch.setattr("httpx.put", fake_put)
    out = tmp_path / "pkg" / "tones.safetensors"
    args = ["train", str(wav_folder), "--task", "tones", "--backbone", str(bundle_dir), "--out", str(out),
            "--max-epochs", "3", "--cache-dir", str(tmp_path / "cache"), "--dev-frac", "0.2", "--test-frac", "0.2",
            "--upload", "http://srv:8000", "--token", "secret"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    pkg = read_package(out.read_bytes())
    assert pkg.meta.task == "tones" and pkg.meta.labels == ("noise", "tone")
    t = pkg.meta.training
    assert t["data_sizes"]["train"] == 2 * 14 - 2 * 3 - 2 * 3 and t["data_sizes"]["dev"] == 6
    assert set(t["test"]["test"]) >= {"accuracy", "macro_f1", "eer", "n"} and t["test"]["test"]["n"] == 6
    assert t["recipe"]["prompt_length"] == 5 and t["backbone_name"] == "random-tiny"
    for suffix in (".curves.png", ".test.confusion.png", ".verbalizer.png"):
        assert out.with_suffix(suffix).read_bytes()[:4] == b"\x89PNG"
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["version"] == pkg.version and report["test"]["test"]["confusion"]
    assert sent["url"] == "http://srv:8000/v1/tasks/tones" and sent["content"] == out.read_bytes()
    assert sent["headers"]["Authorization"] == "Bearer secret"
    # the progress line's kept_* fields name the epoch the package keeps, whose dev accuracy the summary reports
    last = [ln for ln in r.output.splitlines() if ln.startswith("train tones: ")][-1]
    assert f"kept_epoch={t['best_epoch']} kept_dev_acc={report['dev']['accuracy']:.3f}" in last, last
    assert f"dev acc {report['dev']['accuracy']:.3f}" in r.output
    # the second run reads every clip's units from the cache
    r = CliRunner().invoke(app, args[:-4] + ["--out", str(tmp_path / "again.safetensors")])
    assert "28 cached, 0 computed" in r.output, r.output

    # eval: JSON with per-class report; identical to the package's own test metrics
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(wav_folder.rglob("*.wav"))))
    js = tmp_path / "eval.json"
    r = CliRunner().invoke(app, ["eval", str(out), str(manifest), "--backbone", str(bundle_dir), "--json", str(js),
                                 "--cache-dir", str(tmp_path / "cache"), "--confusion", str(tmp_path / "cm.png")])
    assert r.exit_code == 0, r.output
    m = json.loads(js.read_text())
    assert m["n"] == 28 and sum(map(sum, m["confusion"])) == 28 and set(m["per_class"]) == {"noise", "tone"}
    assert "eer" in m and (tmp_path / "cm.png").exists()
    # a file store's task folder: its CURRENT version is scored (the same numbers); a folder without one is refused
    store = tmp_path / "store" / "tones"
    store.mkdir(parents=True)
    (store / f"{pkg.version}.safetensors").write_bytes(out.read_bytes())
    (store / "CURRENT").write_text(pkg.version + "\n")
    r = CliRunner().invoke(app, ["eval", str(store), str(manifest), "--backbone", str(bundle_dir), "--json",
                                 str(tmp_path / "store.json"), "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "store.json").read_text())["confusion"] == m["confusion"]
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "store"), str(manifest), "--backbone", str(bundle_dir)])
    assert r.exit_code == 2 and "without a CURRENT file" in r.output
    for named in ("deadbeefdeadbeef", ""):  # CURRENT naming a missing version, or empty
        (store / "CURRENT").write_text(named)
        r = CliRunner().invoke(app, ["eval", str(store), str(manifest), "--backbone", str(bundle_dir)])
        assert r.exit_code == 2 and "holds no such package" in r.output, r.output

    # a package for another backbone is refused with a clear error
    make_random_bundle(tmp_path / "other", seed=5)
    r = CliRunner().invoke(app, ["eval", str(out), str(manifest), "--backbone", str(tmp_path / "other"),
                                 "--cache-dir", str(tmp_path / "other-cache")])
    assert r.exit_code == 3 and "was made for backbone" in r.output
    assert "units:" not in r.output and not any(p.is_file() for p in (tmp_path / "other-cache").rglob("*"))


def test_train_and_eval_on_a_pgslm_bundle_run_yaapt_once_per_clip(pgslm_bundle_dir, wav_folder, tmp_path,
                                                                   monkeypatch):
    import numpy as np

    import speechprompt.prosody as prosody_mod
    from speechprompt.training.manifest import UnitsCache

    calls = []
    real = prosody_mod.frame_f0
    monkeypatch.setattr(prosody_mod, "frame_f0", lambda wav, cfg: calls.append(len(wav)) or real(wav, cfg))
    out, cache = tmp_path / "tones.safetensors", tmp_path / "cache"
    args = ["train", str(wav_folder), "--task", "tones", "--backbone", str(pgslm_bundle_dir), "--out", str(out),
            "--max-epochs", "2", "--cache-dir", str(cache), "--dev-frac", "0.2", "--test-frac", "0.2"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(calls) == 28 and "0 cached, 28 computed" in r.output  # one YAAPT run per clip
    pkg = read_package(out.read_bytes())
    assert pkg.meta.backbone_kind == "pgslm" and pkg.meta.training["backbone_name"] == "random-tiny-pgslm"
    entries = sorted(UnitsCache(cache, pkg.meta.backbone_fingerprint).root.rglob("*.npz"))
    assert len(entries) == 28
    with np.load(entries[0]) as z:  # the cache holds the prosody with the units
        assert set(z.files) == {"units", "durations", "f0", "f0_stats"} and len(z["f0"]) == len(z["units"])
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(wav_folder.rglob("*.wav"))))
    js = tmp_path / "eval.json"
    r = CliRunner().invoke(app, ["eval", str(out), str(manifest), "--backbone", str(pgslm_bundle_dir), "--json",
                                 str(js), "--cache-dir", str(cache)])
    assert r.exit_code == 0, r.output
    assert len(calls) == 28 and "28 cached, 0 computed" in r.output  # eval reads the cached prosody
    assert json.loads(js.read_text())["n"] == 28


def test_train_readout_mean_writes_a_mean_package_and_bad_readouts_are_usage_errors(bundle_dir, pgslm_bundle_dir,
                                                                                    wav_folder, tmp_path):
    out = tmp_path / "tones.safetensors"
    base = ["train", str(wav_folder), "--task", "tones", "--max-epochs", "1", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out)]
    r = CliRunner().invoke(app, base + ["--backbone", str(bundle_dir), "--readout", "mean"])
    assert r.exit_code == 0, r.output
    pkg = read_package(out.read_bytes())
    assert pkg.meta.readout == "mean" and pkg.meta.format_version == 2
    assert pkg.meta.training["recipe"]["readout"] == "mean"
    r = CliRunner().invoke(app, base + ["--backbone", str(bundle_dir), "--readout", "max"])
    assert r.exit_code == 2 and "'max' is not one of" in r.output and "'separator'" in r.output
    fresh = tmp_path / "fresh-cache"  # refused when the backbone loads: not one clip encoded first
    r = CliRunner().invoke(app, base + ["--backbone", str(pgslm_bundle_dir), "--readout", "mean", "--cache-dir",
                                        str(fresh)])
    assert r.exit_code == 2 and "is for GSLM backbones" in r.output
    assert "units:" not in r.output and not any(p.is_file() for p in fresh.rglob("*"))


def test_train_readout_auto_keeps_the_dev_winner_and_says_so(bundle_dir, pgslm_bundle_dir, wav_folder, tmp_path):
    out = tmp_path / "tones.safetensors"
    base = ["train", str(wav_folder), "--task", "tones", "--max-epochs", "2", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out), "--readout", "auto"]
    r = CliRunner().invoke(app, base + ["--backbone", str(bundle_dir)])
    assert r.exit_code == 0, r.output
    pkg = read_package(out.read_bytes())
    sel = pkg.meta.training["readout_selection"]
    assert set(sel) == {"by", "separator", "mean"}
    best = max(("separator", "mean"), key=lambda k: (sel[k]["accuracy"], -sel[k]["loss"], k == "separator"))
    assert pkg.meta.readout == best and f"read-out {best} (dev accuracy separator " in r.output
    assert "training tones with the separator read-out" in r.output and "with the mean read-out" in r.output
    # each run's last progress line is printed before the next run starts, however short the run
    assert r.output.index("train tones (separator read-out): ") < r.output.index("with the mean read-out")
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["readout"] == best and report["dev"]["accuracy"] == sel[best]["accuracy"]
    assert report["readout_selection"] == sel
    assert abs(report["train_seconds"] - (sel["separator"]["seconds"] + sel["mean"]["seconds"])) < 0.07  # both runs
    r = CliRunner().invoke(app, base + ["--backbone", str(pgslm_bundle_dir)])  # pGSLM: the separator only
    assert r.exit_code == 0, r.output
    pkg = read_package(out.read_bytes())
    assert pkg.meta.readout == "separator" and set(pkg.meta.training["readout_selection"]) == {"by", "separator"}


def test_train_unit_view_auto_on_a_product_codebook_keeps_the_dev_winner(product_bundle_dir, bundle_dir, wav_folder,
                                                                       tmp_path):
    """--unit-view auto trains with the units and the clusters view on a product codebook and keeps the dev winner;
    on a plain codebook it trains once; clusters is refused there; the default reads the units as they are."""
    from speechprompt.backbone import Backbone
    from speechprompt.training.choose import pick_unit_view
    from speechprompt.training.evaluate import evaluate_package
    from speechprompt.unit_views import UnitView

    out = tmp_path / "tones.safetensors"
    base = ["train", str(wav_folder), "--task", "tones", "--max-epochs", "2", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out)]
    r = CliRunner().invoke(app, base + ["--backbone", str(product_bundle_dir)])  # the default: the units
    assert r.exit_code == 0, r.output
    pkg = read_package(out.read_bytes())
    assert pkg.meta.view is None and "unit_view_selection" not in pkg.meta.training and "unit view" not in r.output
    r = CliRunner().invoke(app, base + ["--backbone", str(product_bundle_dir), "--unit-view", "auto"])
    assert r.exit_code == 0, r.output
    pkg = read_package(out.read_bytes())
    sel = pkg.meta.training["unit_view_selection"]
    best = pick_unit_view({v: sel[v] for v in ("units", "clusters")})
    assert (pkg.meta.view == UnitView(5, 4)) == (best == "clusters") and f"unit view {best} (dev accuracy" in r.output
    tie = sel["units"]["accuracy"] == sel["clusters"]["accuracy"]
    assert ("a tie, so the lower dev loss" in r.output) == tie
    assert "training tones with the units view" in r.output and "with the clusters view" in r.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["unit_view"] == best and report["unit_view_selection"] == sel
    r = CliRunner().invoke(app, base + ["--backbone", str(product_bundle_dir), "--unit-view", "clusters",
                                        "--readout", "auto"])
    assert r.exit_code == 0, r.output
    pkg = read_package(out.read_bytes())
    assert pkg.meta.view == UnitView(5, 4) and set(pkg.meta.training["readout_selection"]) == {"by", "separator", "mean"}
    assert "unit_view_selection" not in pkg.meta.training and "with the mean read-out" in r.output
    bb = Backbone.load(product_bundle_dir)
    units = [torch.tensor([0, 5, 10, 15, 1, 6])]
    assert evaluate_package(bb, pkg, units, ["tone"])["n"] == 1  # fits its own backbone's codebook
    r = CliRunner().invoke(app, base + ["--backbone", str(bundle_dir), "--unit-view", "auto"])  # plain: one run
    assert r.exit_code == 0, r.output
    pkg = read_package(out.read_bytes())
    assert pkg.meta.view is None and "unit_view_selection" not in pkg.meta.training
    assert "unit view units (this backbone has no product codebook" in r.output  # says why auto trained once
    fresh = tmp_path / "fresh-cache"
    r = CliRunner().invoke(app, base + ["--backbone", str(bundle_dir), "--unit-view", "clusters", "--cache-dir",
                                        str(fresh)])
    assert r.exit_code == 2 and "no product codebook" in r.output
    assert "units:" not in r.output and not any(p.is_file() for p in fresh.rglob("*"))  # refused before encoding


def test_train_help_lists_the_choices_the_trainer_and_package_accept():
    from speechprompt.choices import READOUTS
    from speechprompt.training import cli
    from speechprompt.training.trainer import VERBALIZERS

    assert cli.READOUT_CHOICES == READOUTS and cli.VERBALIZER_CHOICES == VERBALIZERS
    r = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert r.exit_code == 0
    assert "<separator|mean|auto>" in r.output and "<learnable|fixed>" in r.output
    r = CliRunner().invoke(app, ["train", ".", "--task", "t", "--verbalizer", "linear"])
    assert r.exit_code == 2 and "'linear' is not one of" in r.output and "'fixed'" in r.output


def test_train_keys_its_units_cache_on_the_bundles_units_key(wav_folder, tmp_path, encoder):
    """A bundle with a level floor (v8) has v7's fingerprint but other units: `speechprompt train` must cache them
    apart, under Backbone.units_key, so a cache filled on v7 is never read for v8 (or back)."""
    import torch

    from speechprompt.backbone import Backbone, natural_dictionary, save_bundle
    from speechprompt.level import LevelFloor
    from speechprompt.speech_embedding import SpeechEmbeddingConfig
    from speechprompt.unit_lm import UnitLM, UnitLMConfig

    lm_cfg = UnitLMConfig(vocab_size=24, embed_dim=32, ffn_dim=64, layers=1, heads=4, max_positions=256)
    save_bundle(tmp_path / "v8", kind="gslm", name="floored", encoder_cfg=SpeechEmbeddingConfig(level_floor=LevelFloor()),
                encoder_state=encoder.state_dict(), centroids=torch.randn(20, 96, generator=torch.Generator().manual_seed(0)),
                lm_cfg=lm_cfg, lm_state=UnitLM(lm_cfg).state_dict(), dictionary=natural_dictionary(20))
    bb, cache = Backbone.load(tmp_path / "v8"), tmp_path / "cache"
    assert bb.units_key != bb.fingerprint
    r = CliRunner().invoke(app, ["train", str(wav_folder), "--task", "tones", "--backbone", str(tmp_path / "v8"),
                                 "--out", str(tmp_path / "t.safetensors"), "--max-epochs", "1", "--cache-dir", str(cache),
                                 "--dev-frac", "0.2", "--test-frac", "0.2"])
    assert r.exit_code == 0, r.output
    assert [p.name for p in cache.iterdir()] == [bb.units_key[:16]]
    assert read_package((tmp_path / "t.safetensors").read_bytes()).meta.backbone_fingerprint == bb.fingerprint


def test_train_members_writes_an_ensemble_whose_later_members_take_the_first_ones_choices(product_bundle_dir,
                                                                                          wav_folder, tmp_path):
    """--members 3: seeds seed, seed+1, seed+2 in one package; with --readout auto the first member chooses on dev
    and the others train with its read-out; the report's dev is the ensemble's; `ensemble` joins packages."""
    import numpy as np

    from speechprompt.backbone import Backbone
    from speechprompt.training.evaluate import predict

    out = tmp_path / "tones.safetensors"
    base = ["train", str(wav_folder), "--task", "tones", "--max-epochs", "2", "--cache-dir", str(tmp_path / "cache"),
            "--backbone", str(product_bundle_dir), "--seed", "7"]
    r = CliRunner().invoke(app, base + ["--out", str(out), "--members", "3", "--readout", "auto"])
    assert r.exit_code == 0, r.output
    pkg = read_package(out.read_bytes())
    assert pkg.meta.members == 3 and len(pkg.more) == 2
    runs = pkg.meta.training["ensemble_of"]
    assert [m["training"]["recipe"]["seed"] for m in runs] == [7, 8, 9]
    assert "readout_selection" in runs[0]["training"] and "readout_selection" not in runs[1]["training"]
    assert "member 2 of 3 (seed 8)" in r.output and "member 3 of 3 (seed 9)" in r.output
    assert "member 1 of 3 (seed 7) makes the auto choices on dev" in r.output
    assert "ensemble of 3 members: dev accuracy" in r.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["members"] == 3 and report["dev"] == pkg.meta.training["ensemble_dev"]
    assert report["members_dev"] == [m["training"]["dev"] for m in runs]
    assert report["readout_selection"] == runs[0]["training"]["readout_selection"]
    # each member alone is the package a plain run with its seed and the chosen read-out gives
    alone = tmp_path / "seed8.safetensors"
    r = CliRunner().invoke(app, base + ["--out", str(alone), "--seed", "8", "--readout", pkg.meta.readout])
    assert r.exit_code == 0, r.output
    single = read_package(alone.read_bytes())
    assert torch.equal(single.verbalizer, pkg.more[0].verbalizer) and torch.equal(single.deep_key, pkg.more[0].deep_key)
    # the ensemble's dev accuracy is its mean probability's, on the dev clips
    bb = Backbone.load(product_bundle_dir)
    seeds = [tmp_path / f"s{s}.safetensors" for s in (7, 9)]
    for s, f in zip((7, 9), seeds, strict=True):
        assert CliRunner().invoke(app, base + ["--out", str(f), "--seed", str(s), "--readout",
                                               pkg.meta.readout]).exit_code == 0
    joined = tmp_path / "joined.safetensors"
    r = CliRunner().invoke(app, ["ensemble", str(seeds[0]), str(alone), str(seeds[1]), "--out", str(joined)])
    assert r.exit_code == 0 and "3 members" in r.output, r.output
    j = read_package(joined.read_bytes())
    units = [torch.tensor([0, 5, 10, 15, 1, 6]), torch.tensor([3, 8, 2])]
    assert np.allclose(predict(bb.unit_lm, j, units), predict(bb.unit_lm, pkg, units), atol=1e-6)
    r = CliRunner().invoke(app, ["ensemble", str(seeds[0]), "--out", str(joined)])
    assert r.exit_code == 2 and "2 to 8 members" in r.output
    before = seeds[0].read_bytes()
    r = CliRunner().invoke(app, ["ensemble", str(seeds[0]), str(seeds[1]), "--out", str(seeds[0])])
    assert r.exit_code == 2 and "is one of the input packages" in r.output and seeds[0].read_bytes() == before
    r = CliRunner().invoke(app, ["ensemble", str(seeds[0]), str(seeds[0]), "--out", str(joined)])
    assert r.exit_code == 0 and "is given more than once" in r.output, r.output
    pair = tmp_path / "pair.safetensors"
    r = CliRunner().invoke(app, ["ensemble", str(seeds[0]), str(seeds[1]), "--out", str(pair)])
    assert r.exit_code == 0 and "more than once" not in r.output, r.output
    r = CliRunner().invoke(app, ["ensemble", str(pair), str(seeds[1]), "--out", str(tmp_path / "j2.safetensors")])
    assert r.exit_code == 0 and "is given more than once" in r.output, r.output  # a member inside an ensemble too
    link = tmp_path / "link.safetensors"
    link.hardlink_to(seeds[1])
    r = CliRunner().invoke(app, ["ensemble", str(seeds[0]), str(seeds[1]), "--out", str(link)])
    assert r.exit_code == 2 and "is one of the input packages" in r.output  # a hard link to an input is the input
    from speechprompt.unit_views import UnitView

    clusters = tmp_path / "clusters.safetensors"  # seed 7's tensors reading the clusters view: a mixed ensemble
    view = UnitView.of_codebook(bb.codebook).to_dict()
    clusters.write_bytes(with_metadata(read_package(before), unit_view=view).data)
    r = CliRunner().invoke(app, ["ensemble", str(seeds[1]), str(clusters), "--out", str(joined)])
    assert r.exit_code == 0 and "2 members (unit views: units, clusters)" in r.output, r.output
    assert read_package(joined.read_bytes()).meta.member_unit_views == ({}, view)
    r = CliRunner().invoke(app, ["ensemble", str(seeds[0]), str(clusters), "--out", str(joined)])
    assert r.exit_code == 0 and "more than once" not in r.output, r.output  # one member's tensors on two views
    r = CliRunner().invoke(app, ["ensemble", str(clusters), str(clusters), "--out", str(joined)])
    assert "2 members (unit view: clusters)" in r.output and "more than once" in r.output, r.output
    r = CliRunner().invoke(app, base + ["--out", str(out), "--members", "2", "--unit-view", "auto"])
    assert r.exit_code == 0, r.output
    pkg = read_package(out.read_bytes())  # the second member reads the view the first one's dev split kept
    first, second = (m["training"] for m in pkg.meta.training["ensemble_of"])
    kept = "clusters" if pkg.meta.view else "units"
    assert "unit_view_selection" in first and "unit_view_selection" not in second
    assert f"unit view {kept} (dev accuracy" in r.output and "member 2 of 2 (seed 8)" in r.output

"""``speechprompt build-default --lm-layers``: passed to the build's child process, refused below 1 before anything
starts, and applied by the child to the unit LM's depth alone; a build without ``--name`` is named by its recipe
(``build_default_cli``)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from speechprompt.training import build_default_cli as cli


def test_lm_layers_reaches_the_child_only_when_given(monkeypatch):
    from typer.testing import CliRunner

    from speechprompt_cli import app

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda args, env: calls.append(args) or 0)
    assert CliRunner().invoke(app, ["build-default", "--out", "y"]).exit_code == 0
    assert "--lm-layers" not in calls[-1]  # v7's three layers unless asked
    assert CliRunner().invoke(app, ["build-default", "--out", "y", "--lm-layers", "6"]).exit_code == 0
    assert calls[-1][calls[-1].index("--lm-layers") + 1] == "6"
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--lm-layers", "0"])
    assert result.exit_code == 2 and "--lm-layers must be an integer >= 1; got 0" in result.output and len(calls) == 2
    assert CliRunner().invoke(app, ["build-default", "--out", "y", "--edge-gate", "0:0.1"]).exit_code == 0
    assert calls[-1][calls[-1].index("--edge-gate") + 1] == "0:0.1"
    for bad in ("0.2", "x:0.2", "0:0.2:1", "0.5:0.2", "0:-1"):  # refused before a child starts
        result = CliRunner().invoke(app, ["build-default", "--out", "y", "--edge-gate", bad])
        assert result.exit_code == 2 and "--edge-gate" in result.output and len(calls) == 3, bad
    assert "--hop-frames" not in calls[-1]  # 80 ms frames, as v2-v9, unless asked
    assert CliRunner().invoke(app, ["build-default", "--out", "y", "--hop-frames", "4"]).exit_code == 0
    assert calls[-1][calls[-1].index("--hop-frames") + 1] == "4"
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--hop-frames", "3"])
    assert result.exit_code == 2 and "--hop-frames: hop_frames must be a whole divisor" in result.output and len(calls) == 4


@pytest.mark.parametrize("argv, layers", [([], 1), (["--lm-layers", "4"], 4)])
def test_the_child_changes_only_the_unit_lm_depth(monkeypatch, argv, layers):
    seen = []
    monkeypatch.setattr(cli, "build_default", lambda out, cfg, **kw: seen.append(cfg) or {
        "fingerprint": "f", "total_s": 0, "final": {}, "bundle_bytes": 0})
    monkeypatch.setattr(sys, "argv", ["build_default", "--small", "--out", "z", "--log-json", "z.json", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code in (0, None)
    small = cli.DefaultBuildConfig.small()
    (cfg,) = seen
    assert cfg.lm.layers == layers  # --small's one layer, or the option's
    assert replace(cfg, lm=replace(cfg.lm, layers=small.lm.layers), name=small.name) == small  # nothing else moved


@pytest.mark.parametrize("argv, name", [
    ([], "speechprompt-default-v9"),  # v9's recipe: the default's name
    (["--level-floor", "0.25"], "speechprompt-default-v9"), (["--level-floor", "0"], "trial"),  # v7's: a trial now
    (["--edge-gate", "0.0:0.20"], "speechprompt-default-v9"), (["--edge-gate", "0:.2"], "speechprompt-default-v9"),
    (["--edge-gate", "none"], "trial"), (["--edge-gate", "NONE"], "trial"),  # v8's: a trial now
    (["--name", "mine"], "mine"),
    (["--units", "300", "--pitch-scale", "40", "--lm-layers", "3", "--lm-epochs", "8"], "speechprompt-default-v9"),
    (["--lm-layers", "6"], "speechprompt-trial-fb001fef"),  # pinned: the digest of {lm: ...} alone
    (["--lm-layers", "6", "--lm-epochs", "8"], "speechprompt-trial-fb001fef"), (["--seed", "1"], "trial"), (["--voice-dropout", "0.3", "--voice-codes", "16,16",
                                                                    "--voice-source", "ge2e"], "trial"),
    (["--small"], "speechprompt-small-v3"), (["--small", "--seed", "2"], "speechprompt-small-v3"),
    (["--small", "--lm-layers", "4"], "trial"),
    (["--lm-seed", "0"], "speechprompt-default-v9"),  # the unit LM's seed is --seed's: v9's build
    (["--hop-frames", "8"], "speechprompt-default-v9"), (["--hop-frames", "4"], "trial"),  # 40 ms frames: a trial
    (["--whisper-layer", "3", "--whisper-pool", "4", "--voice-layer", "2"], "speechprompt-default-v9")])  # unread
def test_a_build_without_name_is_named_by_its_recipe(monkeypatch, argv, name):
    seen = []
    monkeypatch.setattr(cli, "build_default", lambda out, cfg, **kw: seen.append(cfg) or {
        "fingerprint": "f", "total_s": 0, "final": {}, "bundle_bytes": 0})
    monkeypatch.setattr(sys, "argv", ["build_default", "--out", "z", "--log-json", "z.json", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code in (0, None)
    (cfg,) = seen
    if name == "trial":  # any other setting: a trial name, the same for the same settings, never the default's
        assert cfg.name.startswith("speechprompt-trial-") and len(cfg.name) == len("speechprompt-trial-") + 8
        assert cli.bundle_name(cfg, "--small" in argv) == cfg.name
        assert cli.bundle_name(replace(cfg, lm_epochs=cfg.lm_epochs + 1), "--small" in argv) != cfg.name
    else:
        assert cfg.name == name


@pytest.mark.parametrize("argv, code", [(["--lm-layers", "6"], 2), (["--lm-layers", "6", "--out", "z"], 2),
                                        (["--lm-layers", "6", "--out", "z", "--log-json", "z.json"], 0),
                                        (["--lm-layers", "6", "--name", "mine"], 0), ([], 0)])
def test_a_trial_never_replaces_the_committed_default_unless_named(monkeypatch, argv, code):
    """Without ``--name``, settings other than v9's may not write ``models/default`` or its training log (the
    defaults of ``--out`` and ``--log-json``); v9's own command and a named build may."""
    seen = []
    monkeypatch.setattr(cli, "build_default", lambda out, cfg, **kw: seen.append((out, kw["log_path"])) or {
        "fingerprint": "f", "total_s": 0, "final": {}, "bundle_bytes": 0})
    monkeypatch.setattr(sys, "argv", ["build_default", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert (e.value.code or 0) == code and len(seen) == (code == 0)


@pytest.mark.parametrize("flag", [["--lm-layers", "0"], ["--lm-epochs", "0"], ["--units", "1"]])
def test_build_default_child_refuses_a_bad_size_itself(tmp_path, flag):
    """Run directly (not through ``speechprompt build-default``), the child refuses the same sizes with exit 2."""
    r = subprocess.run([sys.executable, "-m", "speechprompt.training.build_default", "--small", "--out",
                        str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--real-cache", str(tmp_path / "none"),
                        "--log-json", str(tmp_path / "log.json"), *flag], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and f"{flag[0]} must be an integer" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


@pytest.mark.parametrize("same, other", [
    (["--seed", "1", "--lm-seed", "1"], ["--seed", "1"]),
    (["--dense", "whisper-base", "--voice-codes", "16,16", "--voice-source", "ge2e", "--voice-layer", "3"],
     ["--dense", "whisper-base", "--voice-codes", "16,16", "--voice-source", "ge2e"]),
    (["--voice-source", "ge2e", "--lm-epochs", "9"], ["--lm-epochs", "9"]),
    (["--dense", "whisper-base", "--hop-frames", "4"], ["--dense", "whisper-base"])])  # a speech_embedding setting
def test_settings_a_build_does_not_read_do_not_change_its_name_or_logged_settings(monkeypatch, same, other):
    seen = []
    monkeypatch.setattr(cli, "build_default", lambda out, cfg, **kw: seen.append(cfg) or {
        "fingerprint": "f", "total_s": 0, "final": {}, "bundle_bytes": 0})
    for argv in (same, other):
        monkeypatch.setattr(sys, "argv", ["build_default", "--out", "z", "--log-json", "z.json", *argv])
        with pytest.raises(SystemExit) as e:
            cli.main()
        assert e.value.code in (0, None)
    assert seen[0] == seen[1] and seen[0].name.startswith("speechprompt-trial-")
    read = cli.effective(replace(seen[0], dense="whisper-base", whisper_layer=3))  # read by a Whisper build: kept
    assert read.whisper_layer == 3 and cli.bundle_name(read) != cli.bundle_name(replace(read, whisper_layer=5))

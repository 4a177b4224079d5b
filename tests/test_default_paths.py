"""Defaults (models/default, prompts_store, .cache/units) work from any folder: taken from the installation
when the current folder lacks them, and a missing bundle names the option or setting to pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from server.service import load_runtime
from server.settings import Settings
from speechprompt.backbone import BundleError
from speechprompt.paths import INSTALL_ROOT, default_path
from speechprompt.training.cli import _load_examples


def test_defaults_resolve_from_the_installation_outside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.bundle_dir == INSTALL_ROOT / "models/default" and (s.bundle_dir / "backbone.json").is_file()
    assert s.store == str(INSTALL_ROOT / "prompts_store")
    (tmp_path / "prompts_store").mkdir()  # a folder of the user's own, here, wins
    assert Settings().store == "prompts_store"
    assert default_path("no/such/thing") == Path("no/such/thing")


def test_cli_from_another_folder_uses_the_installed_bundle(tmp_path):
    code = ("from speechprompt_cli import app; import typer.main as m; "
            "cmd = m.get_command(app).commands['train']; "
            "print([p.default for p in cmd.params if p.name == 'backbone'][0])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(INSTALL_ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(INSTALL_ROOT / "models/default")


def test_missing_bundle_names_the_option_to_pass(tmp_path, capsys):
    with pytest.raises(typer.Exit):
        _load_examples([], tmp_path / "nowhere", tmp_path / "cache")
    assert "pass the backbone bundle folder with --backbone DIR" in capsys.readouterr().err
    with pytest.raises(BundleError, match="SPEECHPROMPT_BUNDLE_DIR"):
        load_runtime(Settings(bundle_dir=tmp_path / "nowhere", store=str(tmp_path / "s")))


def test_serve_with_bad_settings_says_each_one_in_a_line_and_exits_2(tmp_path):
    """An operator's bad SPEECHPROMPT_* values: one line each, named as set, exit 2, no traceback, no server."""
    import os

    env = dict(os.environ, SPEECHPROMPT_PRECISION="bogus", SPEECHPROMPT_MAX_BATCH_ROWS="0")
    r = subprocess.run([sys.executable, "-m", "speechprompt_cli", "serve", "--port", "1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 2 and lines[0].startswith("error: setting SPEECHPROMPT_PRECISION: ") and "bogus" in lines[0]
    assert lines[1].startswith("error: setting SPEECHPROMPT_MAX_BATCH_ROWS: ")

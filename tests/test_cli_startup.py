"""The ``speechprompt`` command imports torch only for the commands that need it (speechprompt_cli._mount)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = ("import sys; sys.argv = ['speechprompt'] + sys.argv[1:]; import speechprompt_cli as c; "
         "names = sorted(x.name or '' for x in c.app.registered_commands); "
         "print('torch' in sys.modules, ','.join(n for n in names if n.startswith('build-')))")


def _probe(*args: str) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True).stdout
    torch_loaded, builds = out.split()[0], (out.split() + [""])[1]
    return torch_loaded, builds


@pytest.mark.parametrize("argv", [["classify", "--help"], ["tasks"], ["--debug", "health"], ["train", "--help"]])
def test_http_and_training_commands_start_without_torch(argv):
    assert _probe(*argv) == ("False", "")


@pytest.mark.parametrize("argv", [["--help"], ["build-default", "--help"], ["build-pgslm"], ["no-such-command"]])
def test_help_builds_and_unknown_names_mount_every_command(argv):
    assert _probe(*argv) == ("True", "build-backbone,build-default,build-pgslm")


def test_the_installed_command_still_lists_and_runs_the_build_commands():
    """End to end through ``python -m speechprompt_cli``: top-level help lists the builds, a build's help answers,
    a typo is refused with typer's usage error, and a client command's help works without them."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "speechprompt_cli", *a], capture_output=True, text=True,  # noqa: E731
                                    env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    top = run("--help")
    assert top.returncode == 0 and all(n in top.stdout for n in ("build-default", "build-pgslm", "classify"))
    assert run("build-pgslm", "--help").returncode == 0
    typo = run("clasify")
    assert typo.returncode == 2 and "No such command" in typo.stderr
    helped = run("classify", "--help")
    assert helped.returncode == 0 and "--task" in helped.stdout

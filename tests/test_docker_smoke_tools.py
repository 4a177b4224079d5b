"""docker/smoke.sh installs the host tools it needs (dockerd from docker.io, debootstrap, docker-compose) when
they are missing, as root, instead of stopping at ``dockerd: command not found``; not root, it says what to
install. apt-get and id are fakes here: nothing is installed on the test machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_APT = """#!/bin/bash
echo "$*" >> "$(dirname "$0")/apt.log"
if [ "$1" = install ]; then
  for tool in dockerd debootstrap docker-compose; do printf '#!/bin/sh\\n' > "$(dirname "$0")/$tool"; \
chmod +x "$(dirname "$0")/$tool"; done
fi
"""


def fake_bin(tmp_path: Path, uid: int) -> Path:
    """A PATH with only the coreutils the script's first steps use, a fake apt-get and a fake id."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mkdir", "date", "cat", "chmod"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "apt-get").write_text(FAKE_APT)
    (bin_dir / "id").write_text(f"#!/bin/bash\necho {uid}\n")
    for f in ("apt-get", "id"):
        (bin_dir / f).chmod(0o755)
    return bin_dir


def run_tools(bin_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": str(bin_dir), "SMOKE_DIR": str(tmp_path / "smoke"), "DOCKER": "", "HOME": str(tmp_path)}
    return subprocess.run([str(bin_dir / "bash"), str(ROOT / "docker/smoke.sh"), "tools"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_smoke_installs_docker_io_and_debootstrap_when_missing_as_root(tmp_path):
    bin_dir = fake_bin(tmp_path, 0)
    res = run_tools(bin_dir, tmp_path)
    assert res.returncode == 0, res.stderr
    log = (bin_dir / "apt.log").read_text().splitlines()
    assert log[0] == "update -qq"
    assert log[1].startswith("install") and {"docker.io", "debootstrap", "docker-compose"} <= set(log[1].split())
    assert os.access(bin_dir / "dockerd", os.X_OK)
    assert run_tools(bin_dir, tmp_path).returncode == 0  # present now: nothing installed again
    assert len((bin_dir / "apt.log").read_text().splitlines()) == 2


def test_smoke_not_root_says_what_to_install(tmp_path):
    bin_dir = fake_bin(tmp_path, 1000)
    res = run_tools(bin_dir, tmp_path)
    assert res.returncode == 1 and "needs docker.io debootstrap docker-compose" in res.stderr
    assert not (bin_dir / "apt.log").exists()

"""The README's quick start, for real: `make serve` (a live uvicorn process on the default backbone and the demo
tasks), then the README's own curl commands and Python snippet on a real human recording (alsa-utils)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RECORDING = Path("/usr/share/sounds/alsa/Front_Center.wav")
pytestmark = pytest.mark.skipif(not RECORDING.exists(), reason="alsa-utils recordings not installed")


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    assert "make serve" in code_blocks(section("Set-up"), "bash")[0]
    if (ROOT / ".venv" / ".installed").exists() and shutil.which("make"):
        cmd = ["make", "-s", "serve", f"PORT={port}"]  # exactly the README's command
    else:  # the command `make serve` runs, for checkouts installed another way
        cmd = [sys.executable, "-m", "speechprompt_cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stdout.read().decode()[-3000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("server not ready within 120 s")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_runs_the_default_backbone_with_demo_tasks(server):
    base = f"http://127.0.0.1:{server}"
    backbone = httpx.get(f"{base}/v1/backbone").json()
    meta = json.loads((ROOT / "models" / "default" / "backbone.json").read_text())
    assert backbone["fingerprint"] == meta["fingerprint"] and not (meta.get("extra") or {}).get("random")
    tasks = {t["task"] for t in httpx.get(f"{base}/v1/tasks").json()["tasks"]}
    assert len(tasks) >= 4 and tasks == {p.name for p in (ROOT / "prompts_store").iterdir() if p.is_dir()}


def test_readme_curl_commands(server):
    block = code_blocks(section("Classify a real recording"), "bash")[0].replace("127.0.0.1:8000", f"127.0.0.1:{server}")
    commands = [c for c in re.split(r"(?<!\\)\n", block) if c.strip()]
    outputs = [json.loads(subprocess.run(["bash", "-c", c], capture_output=True, text=True, check=True).stdout)
               for c in commands]
    single, multi, listing = outputs
    labels = {t["task"]: t["labels"] for t in listing["tasks"]}
    assert single["label"] in labels[single["task"]] and len(single["scores"]) == 3
    assert single["audio"]["input_sample_rate"] == 48000 and single["audio"]["resampled"] is True
    assert single["version"] == next(t["version"] for t in listing["tasks"] if t["task"] == single["task"])
    assert [r["task"] for r in multi["results"]] == re.search(r"tasks=([\w,-]+)", commands[1]).group(1).split(",")
    assert all(r["label"] in labels[r["task"]] for r in multi["results"])
    shown = json.loads(code_blocks(section("Classify a real recording"), "json")[0].replace("...", ""))
    assert (shown["task"], shown["version"], shown["label"]) == (single["task"], single["version"], single["label"])
    assert abs(shown["scores"][0]["score"] - single["scores"][0]["score"]) < 0.02  # the sample answer is this one
    assert single["backbone"].startswith(shown["backbone"])
    said = {r["task"]: r["label"] for r in multi["results"]}
    assert "language-id` answers `" + said["language-id"] + "`" in section("Classify a real recording")
    assert multi["units_cache_hit"] is True  # as the README says of the second request


def test_readme_python_snippet(server, capsys):
    code = code_blocks(section("Classify a real recording"), "python")[0].replace("127.0.0.1:8000",
                                                                                 f"127.0.0.1:{server}")
    exec(compile(code, "README.md", "exec"), {})
    label, version, _ = capsys.readouterr().out.split(" ", 2)
    tasks = httpx.get(f"http://127.0.0.1:{server}/v1/tasks").json()["tasks"]
    task = next(t for t in tasks if t["version"] == version)
    assert label in task["labels"]


def test_readme_explain_commands(server):
    block = code_blocks(section("Classify a real recording"), "bash")[1].replace("127.0.0.1:8000", f"127.0.0.1:{server}")
    explained, top = [json.loads(subprocess.run(["bash", "-c", c], capture_output=True, text=True,
                                                check=True).stdout) for c in block.splitlines() if c.strip()]
    ex = explained["explanation"]
    assert ex["label"] == explained["label"] and len(ex["spans"]) == min(8, explained["audio"]["units"])
    assert ex["spans"][0]["start"] == 0.0 and abs(ex["spans"][-1]["end"] - explained["audio"]["duration_s"]) < 1e-3
    verbalizer = httpx.get(f"http://127.0.0.1:{server}/v1/tasks/vad/verbalizer?top_k=5").json()  # the whole reply
    assert top == verbalizer["top"] and all(len(v) == 5 for v in top.values())  # the line prints the top units only
    assert verbalizer["task"] == "vad"
    units = httpx.get(f"http://127.0.0.1:{server}/v1/backbone").json()["codebook_size"]  # 300 on the default v5
    assert sorted(verbalizer["top"]) == sorted(verbalizer["labels"]) and len(verbalizer["unit_label"]) == units
    assert verbalizer["units"] == units and len(verbalizer["weights"][0]) == units


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_readme_train_command_on_a_folder_of_labels(tmp_path):
    """The README's `speechprompt train ... --readout auto` on data/<label>/ clips (espeak-ng), with a short epoch
    cap: it writes the package and the report, says which read-out it kept, and the package serves that read-out."""
    from speechprompt.package import read_package

    block = code_blocks(section("Train your own task"), "bash")[0]
    lines = block.splitlines()
    at = next(i for i, line in enumerate(lines) if " train " in line)
    train = lines[at]
    assert train.startswith(".venv/bin/speechprompt train data ") and "--readout auto" in train
    subprocess.run(["bash", "-ec", "\n".join(lines[:at])], cwd=tmp_path, check=True)  # the README's toy data
    assert {p.name for p in (tmp_path / "data").iterdir()} == {"yes", "no"}
    assert all(len(list((tmp_path / "data" / w).glob("*.wav"))) == 10 for w in ("yes", "no"))
    argv = train.split()[1:] + ["--max-epochs", "3", "--backbone", str(ROOT / "models" / "default"),
                                "--cache-dir", str(tmp_path / "units")]
    r = subprocess.run([sys.executable, "-m", "speechprompt_cli", *argv], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "yesno.report.json").read_text())
    pkg = read_package((tmp_path / "yesno.safetensors").read_bytes())
    assert report["readout"] == pkg.meta.readout in ("separator", "mean")
    assert f"read-out {pkg.meta.readout} (dev accuracy separator" in r.stdout
    assert set(pkg.meta.training["readout_selection"]) == {"by", "separator", "mean"}

"""The gate on the product as shipped: a real server process on ``models/default`` with the committed demo store,
asked through the Python client for language-id and gender with ``gate=vad:speech``. A voice is an answer that
applies; noise, which still gets a language and a gender from tasks with no "none" class, is marked as not."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from clients import SpeechPromptClient, cli

from .live import ROOT, LiveServer

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="needs espeak-ng")


def wav(y: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_gate_marks_noise_not_applicable_and_a_voice_applicable(tmp_path):
    shutil.copytree(ROOT / "prompts_store", tmp_path / "store")
    voice = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", "please call me back tomorrow morning"],
                           capture_output=True, check=True).stdout
    noise = wav((0.1 * np.random.default_rng(4).standard_normal(32000)).astype(np.float32), 16000)
    with LiveServer(tmp_path / "srv", SPEECHPROMPT_BUNDLE_DIR=str(ROOT / "models" / "default"),
                    SPEECHPROMPT_STORE=str(tmp_path / "store")) as srv, SpeechPromptClient(srv.url) as client:
        said = {}
        for name, clip in (("voice", voice), ("noise", noise)):
            res = client.classify_multi(["language-id", "gender"], clip, gate="vad:speech")
            assert set(res.ok) == {"language-id", "gender"} and not res.failed
            said[name] = res
        for name, passed in (("voice", True), ("noise", False)):
            g = said[name].gate
            assert g["task"] == "vad" and g["label"] == "speech" and g["passed"] is passed, (name, g)
            assert (g["probability"] >= 0.5) is passed and g["version"]
            assert {r.applicable for r in said[name].ok.values()} == {passed}
            assert all(r.label and r.scores for r in said[name].ok.values())  # answers are kept, only marked
        plain = client.classify_multi(["language-id"], noise)
        assert plain.gate is None and plain.ok["language-id"].applicable is None
        one = client.classify("gender", noise, gate="vad:speech", gate_threshold=0.5)
        assert one.applicable is False and one.gate == one.raw["gate"] and one.gate["passed"] is False
        assert one.gate["probability"] == pytest.approx(said["noise"].gate["probability"], abs=1e-5)

        # the command line: --gate with --tasks gives each row an "applicable" cell
        (tmp_path / "voice.wav").write_bytes(voice)
        (tmp_path / "noise.wav").write_bytes(noise)
        app = typer.Typer()
        cli.register(app)
        out = CliRunner().invoke(app, ["classify", str(tmp_path / "voice.wav"), str(tmp_path / "noise.wav"),
                                       "--tasks", "gender", "--gate", "vad:speech", "--format", "json",
                                       "--no-progress", "--url", srv.url], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        rows = json.loads(out.stdout)
        assert [(r["file"].rsplit("/", 1)[1], r["task"], r["applicable"]) for r in rows] == [
            ("voice.wav", "gender", True), ("noise.wav", "gender", False)]
        for r, name in zip(rows, ("voice", "noise"), strict=True):  # the gate's probability on every row
            assert r["gate_probability"] == pytest.approx(said[name].gate["probability"], abs=1e-5)
            assert r["gate"]["task"] == "vad" and r["gate"]["passed"] is r["applicable"]
        # a gate task the server does not have: the answers are printed, unmarked, and the CLI says so (exit 1)
        miss = CliRunner().invoke(app, ["classify", str(tmp_path / "voice.wav"), "--tasks", "gender", "--gate",
                                        "nosuchtask:speech", "--format", "json", "--no-progress", "--url", srv.url])
        assert miss.exit_code == 1, miss.output
        [row] = json.loads(miss.stdout)
        assert row["label"] in ("female", "male") and row["applicable"] is None and row["gate_probability"] is None
        assert "gate nosuchtask:speech was not applied (1 file: 404" in miss.stderr and "nosuchtask" in miss.stderr
        # --gate on the single-task route (--task): the same gate outcome, one row per file
        single = CliRunner().invoke(app, ["classify", str(tmp_path / "voice.wav"), str(tmp_path / "noise.wav"),
                                          "--task", "gender", "--gate", "vad:speech", "--format", "json",
                                          "--no-progress", "--url", srv.url], catch_exceptions=False)
        assert single.exit_code == 0, single.output
        for r, name in zip(json.loads(single.stdout), ("voice", "noise"), strict=True):
            assert r["task"] == "gender" and r["applicable"] is said[name].gate["passed"]
            assert r["gate_probability"] == pytest.approx(said[name].gate["probability"], abs=1e-5)

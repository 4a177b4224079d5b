"""CLI commands (``clients.cli.register``) on a local typer app, against the live server."""

from __future__ import annotations

import csv
import io
import json
import socket

import pytest
import typer
from typer.testing import CliRunner

from clients import cli

from .conftest import LABELS, same_scores, wav_bytes


def _name(task_json: dict) -> str:
    """A task's name in raw JSON (``tasks --format json`` prints the server's objects as they are)."""
    return task_json.get("name") or task_json["task"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()
    cli.register(a)
    return a


@pytest.fixture
def run(app, live):
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None, url: bool = True):
        full = list(args) + (["--url", live.url] if url else [])
        return runner.invoke(app, full, env=env, catch_exceptions=False)
    return invoke


@pytest.fixture
def clips(tmp_path):
    paths = []
    for i in range(12):
        p = tmp_path / f"clip_{i:02d}.wav"
        p.write_bytes(wav_bytes(0.3 + 0.02 * i, rate=16000 if i % 2 else 44100, freq=150.0 + 40 * i))
        paths.append(p)
    return paths


def test_classify_many_json(run, client, test_task, clips):
    res = run("classify", *map(str, clips), "--task", test_task, "--format", "json", "--concurrency", "4")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["file"] for r in rows] == [str(p) for p in clips]  # input order, despite concurrency
    for p, row in zip(clips, rows):
        ref = client.classify(test_task, p)
        assert row["task"] == test_task and row["version"] == ref.version and row["error"] is None
        assert row["label"] == ref.label and row["score"] == pytest.approx(ref.score, abs=1e-5)
        assert same_scores(row["scores"], ref.scores) and set(row["scores"]) == set(LABELS)
        assert row["duration_s"] == pytest.approx(ref.audio.duration_s)
    assert "12/12" in res.stderr  # the progress bar reached the end
    assert "12 files, 12 results, 0 failed" in res.stderr


def test_classify_csv_to_file_with_failures(run, client, test_task, clips, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"this is not audio at all " * 10)
    out = tmp_path / "out.csv"
    files = [str(clips[0]), str(bad), str(clips[1])]
    res = run("classify", *files, "--tasks", f"{test_task},no-such-task", "--top-k", "2", "--format", "csv",
              "--output", str(out))
    assert res.exit_code == 1  # some rows failed
    assert res.stdout == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert tuple(rows[0]) == cli.CSV_COLUMNS
    assert [(r["file"], r["task"]) for r in rows] == [(f, t) for f in files for t in (test_task, "no-such-task")]
    by = {(r["file"], r["task"]): r for r in rows}
    for clip in clips[:2]:
        ok = by[(str(clip), test_task)]
        ref = client.classify(test_task, clip, top_k=2)
        assert ok["label"] == ref.label and float(ok["score"]) == pytest.approx(ref.score, abs=1e-5)
        assert ok["error"] == "" and same_scores(json.loads(ok["scores"]), ref.scores)
        assert by[(str(clip), "no-such-task")]["error"].startswith("404 ")
    for task in (test_task, "no-such-task"):  # undecodable file: every task of it fails with 415
        assert by[(str(bad), task)]["error"].startswith("415 ") and by[(str(bad), task)]["label"] == ""
    assert "3 files, 6 results, 4 failed" in res.stderr


def test_classify_where_every_request_fails_says_what_happened(run, clips):
    res = run("classify", *map(str, clips[:3]), "--task", "no-such-task", "--format", "json")
    assert res.exit_code == 1
    assert "3 files, 3 results, 3 failed" in res.stderr
    assert "error: every request failed, no file was classified: 3 x 404 unknown_task (" in res.stderr
    assert "no-such-task" in res.stderr.split("every request failed")[1]


def test_classify_table(run, client, test_task, clips, recording):
    res = run("classify", str(recording), str(clips[0]), "--task", test_task, "--no-progress")
    assert res.exit_code == 0, res.output
    ref = client.classify(test_task, recording)
    assert recording.name in res.stdout and clips[0].name in res.stdout
    assert ref.label in res.stdout and f"{ref.score:.3f}" in res.stdout
    assert f"{test_task}@{ref.version[:8]}" in res.stdout  # the task version each answer used, in the table too
    assert "classify" not in res.stderr.split("files")[0]  # no progress bar


def test_classify_usage_errors(run, test_task, clips):
    assert run("classify", str(clips[0])).exit_code == 2
    assert run("classify", str(clips[0]), "--task", test_task, "--tasks", test_task).exit_code == 2
    assert run("classify", "/no/such/file.wav", "--task", test_task).exit_code == 2


def test_admin_and_info_commands(run, client, make_package, tmp_path, live):
    pkg = tmp_path / "pkg.safetensors"
    pkg.write_bytes(make_package("clienttest-cli", ["left", "right"], seed=5))
    env = {"SPEECHPROMPT_ADMIN_TOKEN": live.token or ""}
    up = run("upload", "clienttest-cli", str(pkg), env=env)
    assert up.exit_code == 0, up.output
    version = json.loads(up.stdout)["version"]
    assert version == client.task("clienttest-cli").version

    listed = json.loads(run("tasks", "--format", "json").stdout)
    assert {_name(t): t["version"] for t in listed}["clienttest-cli"] == version
    table = run("tasks").stdout
    assert "clienttest-cli" in table and version in table
    one = json.loads(run("task", "clienttest-cli").stdout)
    assert one["labels"] == ["left", "right"] and one["version"] == version

    denied = run("delete", "clienttest-cli", "--token", "wrong")
    assert denied.exit_code == 1 and "403" in denied.stderr
    gone = run("delete", "clienttest-cli", env=env)
    assert gone.exit_code == 0 and json.loads(gone.stdout) == {"task": "clienttest-cli", "deleted": True}
    missing = run("task", "clienttest-cli")
    assert missing.exit_code == 1 and "404" in missing.stderr

    assert json.loads(run("backbone").stdout) == client.backbone().raw
    health = run("health")
    assert health.exit_code == 0 and json.loads(health.stdout)["ready"] is True


def test_url_from_env_and_unreachable(run, live, test_task, clips):
    res = run("tasks", "--format", "json", env={"SPEECHPROMPT_URL": live.url}, url=False)
    assert res.exit_code == 0 and test_task in {_name(t) for t in json.loads(res.stdout)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    res = run("health", env={"SPEECHPROMPT_URL": dead}, url=False)
    assert res.exit_code == 3 and "cannot reach" in res.stderr
    res = run("classify", str(clips[0]), "--task", test_task, "--retries", "0", env={"SPEECHPROMPT_URL": dead},
              url=False)
    assert res.exit_code == 3 and "every request failed" in res.stderr and "1 x no answer (POST" in res.stderr


def test_health_not_ready(run, faults):
    faults.inject("/readyz", 503, body={"type": "/problems/not_ready", "title": "Not ready", "status": 503,
                                        "detail": "loading"})
    res = run("health")
    assert res.exit_code == 1 and json.loads(res.stdout)["readyz"]["detail"] == "loading"


def test_classify_retries_through_429(run, faults, test_task, clips):
    path = f"/v1/tasks/{test_task}/classify"
    faults.inject(path, 429, count=2, headers={"Retry-After": "0"},
                  body={"type": "/problems/queue_full", "title": "Too many requests", "status": 429, "detail": "x"})
    res = run("classify", *map(str, clips[:3]), "--task", test_task, "--format", "json", "--retries", "2")
    assert res.exit_code == 0, res.output
    assert all(r["error"] is None for r in json.loads(res.stdout))
    assert faults.requests(path) == 5


def test_failure_summary_counts_the_details_it_does_not_show():
    empty = {"status": 415, "type": "https://x/problems/undecodable_audio", "detail": "an empty payload (0 bytes)"}
    text = dict(empty, detail="it looks like plain text")
    rows = [cli.error_row(f"{i}.wav", "t", e) for i, e in enumerate((empty, text, empty))]
    rows.append(cli.error_row("x.wav", "t", {"detail": "connection refused"}))
    assert cli.failure_summary(rows) == ("3 x 415 undecodable_audio (an empty payload (0 bytes); +1 other detail); "
                                         "1 x no answer (connection refused)")
    assert cli.failure_summary(rows[:1]) == "1 x 415 undecodable_audio (an empty payload (0 bytes))"


def test_classify_summary_says_one_file(run, test_task, clips):
    res = run("classify", str(clips[0]), "--task", "no-such-task", "--format", "json")
    assert res.exit_code == 1 and "1 file, 1 result, 1 failed" in res.stderr

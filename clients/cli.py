"""CLI commands that talk to a running server: ``register(app)`` adds them to a typer app.

Commands: ``classify FILE... --task T | --tasks a,b``, ``tasks``, ``task NAME``, ``upload NAME FILE``,
``delete NAME``, ``backbone``, ``health``, ``stream FILE | --mic --tasks a,b`` (``stream_cli.py``). The server URL comes from ``--url`` or ``$SPEECHPROMPT_URL``
(default ``http://127.0.0.1:8000``), the admin token from ``--token`` or ``$SPEECHPROMPT_ADMIN_TOKEN``.

Results go to stdout (or ``--output``); progress, summaries and errors go to stderr, so
``classify ... --format json > out.json`` yields clean JSON. Exit codes: 0 success, 1 an error answer
from the server (or any failed file/task in ``classify``), 2 bad usage, 3 server unreachable.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .client import DEFAULT_URL, TOKEN_ENV, URL_ENV, AsyncSpeechPromptClient, RetryPolicy, SpeechPromptClient
from .errors import ProblemError, SpeechPromptError, TransportError
from .models import ClassifyResult, MultiClassifyResult, TaskFailure
from .stream_cli import stream_cmd

EXIT_PROBLEM, EXIT_UNREACHABLE = 1, 3
CSV_COLUMNS = ("file", "task", "version", "label", "score", "scores", "duration_s", "total_ms", "units_cache_hit",
               "applicable", "gate_probability", "scored_s", "error")

URL_OPT = typer.Option(DEFAULT_URL, "--url", envvar=URL_ENV, help="server base URL")
TOKEN_OPT = typer.Option(None, "--token", envvar=TOKEN_ENV, help="admin Bearer token", show_default=False)
TIMEOUT_OPT = typer.Option(60.0, "--timeout", min=0.1, help="per-request timeout (s)")


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class TrimMode(str, Enum):
    """A request's ``speech_trim`` (docs/api.md, "Room tone")."""

    on = "on"
    off = "off"
    package = "package"
    recording = "recording"


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn client errors into a one-line message on stderr and an exit code."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TransportError as e:
            _err(f"error: cannot reach the server: {e}")
            raise typer.Exit(EXIT_UNREACHABLE) from None
        except ProblemError as e:
            _err(f"error: {e}")
            if e.accepted is not None:
                _err(f"accepted: {json.dumps(e.accepted)}")
            raise typer.Exit(EXIT_PROBLEM) from None
    return wrapper


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


# ---- classify: rows -----------------------------------------------------------------------------------------

def result_row(file: str, r: ClassifyResult, gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """One output row: a file classified by one task (``error`` None); ``gate``: the request's gate outcome
    (its probability is the row's ``gate_probability``; the whole object is kept under ``gate``); ``speech_trim``:
    the answer's trim facts (JSON only) and ``scored_s``, ``"start-end"`` seconds when the trim cut room tone."""
    trim = r.speech_trim
    cut = trim and trim.get("applied", True) and trim.get("cut")
    return {"file": file, "task": r.task, "version": r.version, "label": r.label, "score": r.score,
            "scores": {s.label: s.score for s in r.scores}, "duration_s": r.audio.duration_s,
            "total_ms": r.timings.total_ms, "units_cache_hit": r.units_cache_hit, "applicable": r.applicable,
            "gate_probability": (gate or {}).get("probability"), "gate": gate, "speech_trim": trim,
            "scored_s": f"{trim['start_s']:.2f}-{trim['end_s']:.2f}" if cut else None, "error": None}


def error_row(file: str, task: str, error: dict[str, Any]) -> dict[str, Any]:
    """One output row for a failure; ``error`` is the problem document (or ``{"detail": ...}``)."""
    return {"file": file, "task": task, "version": None, "label": None, "score": None, "scores": {},
            "duration_s": None, "total_ms": None, "units_cache_hit": None, "applicable": None,
            "gate_probability": None, "gate": None, "speech_trim": None, "scored_s": None, "error": error}


def _rows_from(file: str, res: ClassifyResult | MultiClassifyResult) -> list[dict[str, Any]]:
    if isinstance(res, ClassifyResult):
        return [result_row(file, res, res.gate)]
    return [error_row(file, r.task, r.error.to_dict()) if isinstance(r, TaskFailure) else result_row(file, r, res.gate)
            for r in res.results]


def gate_failures(rows: list[dict[str, Any]]) -> str:
    """Why a requested gate was not applied (its task unknown, failed, ...): ``"2 files: 404 unknown_task: ..."``
    from the first such file's gate error; empty when every gate was scored."""
    bad = {r["file"]: r["gate"]["error"] for r in rows if r.get("gate") and r["gate"].get("error")}
    return f"{len(bad)} file{'s' * (len(bad) != 1)}: {_error_text(next(iter(bad.values())))}" if bad else ""


async def classify_files(url: str, files: list[Path], tasks: list[str], multi: bool, top_k: int | None,
                         concurrency: int, retries: int, timeout: float,
                         on_done: Callable[[], None] = lambda: None, gate: str | None = None,
                         speech_trim: str | None = None) -> list[dict[str, Any]]:
    """Classify ``files`` with at most ``concurrency`` requests in flight; rows in input order (file, task).
    ``gate``: ``task:label``, each row's ``applicable`` says whether the gate passed (one task or many);
    ``speech_trim``: the request's ``recording`` / ``on`` / ``off`` / ``package`` (None: not sent)."""
    sem = asyncio.Semaphore(concurrency)
    retry = RetryPolicy(max_retries=retries)
    async with AsyncSpeechPromptClient(url, timeout=timeout, retry=retry, max_connections=concurrency) as client:
        async def one(path: Path) -> list[dict[str, Any]]:
            async with sem:
                try:
                    if multi:
                        res: Any = await client.classify_multi(tasks, path, top_k=top_k, gate=gate,
                                                               speech_trim=speech_trim)
                    else:
                        res = await client.classify(tasks[0], path, top_k=top_k, gate=gate, speech_trim=speech_trim)
                    rows = _rows_from(str(path), res)
                except ProblemError as e:
                    rows = [error_row(str(path), t, e.to_dict()) for t in tasks]
                except (SpeechPromptError, OSError) as e:
                    rows = [error_row(str(path), t, {"detail": str(e)}) for t in tasks]
            on_done()
            return rows
        per_file = await asyncio.gather(*(one(p) for p in files))
    return [row for rows in per_file for row in rows]


# ---- classify: output formats -------------------------------------------------------------------------------

def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    status = error.get("status")
    code = str(error.get("type", "")).rsplit("/", 1)[-1]
    head = " ".join(str(x) for x in (status, code) if x and x != "about:blank")
    return f"{head}: {error.get('detail', '')}" if head else str(error.get("detail", ""))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def failure_summary(rows: list[dict[str, Any]]) -> str:
    """What went wrong, grouped: ``"9 x 404 unknown_task (no task named 'x')"``, most frequent first; the
    first detail of each group is shown, and how many other details it holds (``"; +1 other detail"``)."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r["error"]:
            head = _error_text(r["error"]).split(":", 1)[0] if r["error"].get("status") else "no answer"
            groups.setdefault(head, []).append(str(r["error"].get("detail", "")))
    parts = sorted(groups.items(), key=lambda kv: -len(kv[1]))

    def details(ds: list[str]) -> str:
        others = len(set(ds)) - 1
        return ds[0] + (f"; +{_count(others, 'other detail')}" if others else "")
    return "; ".join(f"{len(ds)} x {head} ({details(ds)})" for head, ds in parts)


def render_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with ``CSV_COLUMNS``; ``scores`` is a JSON object cell, ``error`` is ``"<status> <code>: <detail>"``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        cells = {k: ("" if r[k] is None else r[k]) for k in CSV_COLUMNS}  # (the gate and trim objects: JSON only)
        cells["scores"] = json.dumps(r["scores"], ensure_ascii=False) if r["scores"] else ""
        cells["error"] = _error_text(r["error"])
        w.writerow(cells)
    return buf.getvalue()


def render_table(rows: list[dict[str, Any]], console: Console) -> None:
    gated = any(r.get("applicable") is not None for r in rows)  # a column only when a gate answered
    trimmed = any(r.get("scored_s") for r in rows)  # a column only when a speech trim cut room tone
    table = Table(show_lines=False)
    for col, kw in (("file", {"overflow": "fold"}), ("task@version", {}), ("label", {}), ("score", {"justify": "right"}),
                    ("others", {"overflow": "fold"}), ("ms", {"justify": "right"})) + ((("applies", {}),) if gated else ()) \
            + ((("scored s", {}),) if trimmed else ()):
        table.add_column(col, **kw)
    for r in rows:
        if r["error"]:
            table.add_row(r["file"], r["task"], f"[red]{_error_text(r['error'])}[/red]", "", "", "",
                          *[""] * (gated + trimmed))
            continue
        others = ", ".join(f"{k} {v:.3f}" for k, v in r["scores"].items() if k != r["label"])
        ms = "" if r["total_ms"] is None else f"{r['total_ms']:.0f}"
        score = "" if r["score"] is None else f"{r['score']:.3f}"
        applies = {True: "yes", False: "[yellow]no[/yellow]", None: ""}[r.get("applicable")]
        task = f"{r['task']}@{r['version'][:8]}" if r["version"] else r["task"]  # the version used (full: -f json/csv)
        table.add_row(r["file"], task, r["label"], score, others, ms, *[applies] * gated,
                      *[r.get("scored_s") or ""] * trimmed)
    console.print(table)


def _emit(rows: list[dict[str, Any]], fmt: Format, output: Path | None) -> None:
    if fmt is Format.table:
        if output is None:
            render_table(rows, Console(width=160))
        else:
            with output.open("w", encoding="utf-8") as fh:
                render_table(rows, Console(file=fh, width=160, no_color=True))
        return
    text = json.dumps(rows, indent=2, ensure_ascii=False) + "\n" if fmt is Format.json else render_csv(rows)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


# ---- commands -----------------------------------------------------------------------------------------------

def classify(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="audio files"),
    task: str | None = typer.Option(None, "--task", "-t", help="one task"),
    tasks: str | None = typer.Option(None, "--tasks", help="many tasks, comma-separated (one request per file)"),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="scores to return per task"),
    gate: str | None = typer.Option(None, "--gate", help="<task>:<label>, e.g. vad:speech; each answer says whether "
                                    "it applies (that task's probability of the label >= 0.5)"),
    speech_trim: TrimMode | None = typer.Option(None, "--speech-trim", help="recording: the files are whole "
                                                "microphone recordings: cut the room tone before and after the voice "
                                                "(Silero VAD) for the tasks whose package asks for it on recordings; "
                                                "on: for every task; off: for none; package (the server's default): "
                                                "the tasks whose package asks for it on every clip"),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="output format"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write results here instead of stdout"),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, max=256, help="requests in flight"),
    retries: int = typer.Option(3, "--retries", min=0, help="retries on 429/503 (honouring Retry-After)"),
    progress: bool | None = typer.Option(None, "--progress/--no-progress",
                                         help="progress bar on stderr (default: on for more than one file)"),
    url: str = URL_OPT,
    timeout: float = TIMEOUT_OPT,
) -> None:
    """Classify audio files with one task (--task) or many (--tasks a,b)."""
    if (task is None) == (tasks is None):
        raise typer.BadParameter("give exactly one of --task or --tasks")
    task_list = [task] if task is not None else [t.strip() for t in tasks.split(",") if t.strip()]
    if not task_list:
        raise typer.BadParameter("--tasks is empty")
    show = len(files) > 1 if progress is None else progress
    t0 = time.perf_counter()
    bar = Progress(TextColumn("classify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not show)
    with bar:
        handle = bar.add_task("classify", total=len(files))
        rows = asyncio.run(classify_files(url, files, task_list, tasks is not None, top_k, concurrency, retries,
                                          timeout, on_done=lambda: bar.advance(handle), gate=gate,
                                          speech_trim=None if speech_trim is None else speech_trim.value))
    _emit(rows, fmt, output)
    failed = sum(1 for r in rows if r["error"])
    if show or failed or output is not None:
        _err(f"{_count(len(files), 'file')}, {_count(len(rows), 'result')}, {failed} failed in {time.perf_counter() - t0:.2f} s"
             + (f": {failure_summary(rows)}" if failed else ""))
    not_gated = gate_failures(rows)
    if not_gated:
        _err(f"error: the gate {gate} was not applied ({not_gated}); the answers have no 'applicable'")
    if rows and failed == len(rows):
        _err(f"error: every request failed, no file was classified: {failure_summary(rows)}")
    unreachable = [r for r in rows if r["error"] and "status" not in r["error"]]
    if rows and len(unreachable) == len(rows):
        raise typer.Exit(EXIT_UNREACHABLE)
    if failed or not_gated:
        raise typer.Exit(EXIT_PROBLEM)


@_handle_errors
def tasks_cmd(
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json"),
    url: str = URL_OPT,
    timeout: float = TIMEOUT_OPT,
) -> None:
    """List the server's tasks."""
    with SpeechPromptClient(url, timeout=timeout) as c:
        items = c.tasks()
    if fmt is not Format.table:
        _print_json([t.raw for t in items])
        return
    table = Table()
    for col in ("name", "version", "labels", "state", "size_bytes", "created"):
        table.add_column(col, overflow="fold")
    for t in items:
        table.add_row(t.name, t.version, ", ".join(t.labels), t.state or "", str(t.size_bytes or ""), t.created or "")
    Console(width=160).print(table)


@_handle_errors
def task_cmd(name: str = typer.Argument(..., help="task name"), url: str = URL_OPT,
             timeout: float = TIMEOUT_OPT) -> None:
    """Describe one task (labels, version, backbone, metadata) as JSON."""
    with SpeechPromptClient(url, timeout=timeout) as c:
        _print_json(c.task(name).raw)


@_handle_errors
def upload_cmd(
    name: str = typer.Argument(..., help="task name"),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="package (.safetensors)"),
    token: str | None = TOKEN_OPT,
    url: str = URL_OPT,
    timeout: float = TIMEOUT_OPT,
) -> None:
    """Upload a task prompt package (needs the admin token)."""
    with SpeechPromptClient(url, token=token, timeout=timeout) as c:
        res = c.upload(name, file)
    _print_json({"task": res.task, "version": res.version})


@_handle_errors
def delete_cmd(name: str = typer.Argument(..., help="task name"), token: str | None = TOKEN_OPT,
               url: str = URL_OPT, timeout: float = TIMEOUT_OPT) -> None:
    """Delete a task (needs the admin token)."""
    with SpeechPromptClient(url, token=token, timeout=timeout) as c:
        res = c.delete(name)
    _print_json({"task": res.task, "deleted": res.deleted})


@_handle_errors
def backbone_cmd(url: str = URL_OPT, timeout: float = TIMEOUT_OPT) -> None:
    """Show the loaded backbone (kind, name, fingerprint, sizes) as JSON."""
    with SpeechPromptClient(url, timeout=timeout) as c:
        _print_json(c.backbone().raw)


@_handle_errors
def health_cmd(url: str = URL_OPT, timeout: float = TIMEOUT_OPT) -> None:
    """Liveness and readiness; exit code 0 only when the server is ready."""
    with SpeechPromptClient(url, timeout=timeout) as c:
        live = c.health()
        ready = c.ready()
    _print_json({"url": url, "healthz": live, "ready": ready.ready, "readyz": ready.body})
    if not ready.ready:
        raise typer.Exit(EXIT_PROBLEM)


def register(app: typer.Typer) -> None:
    """Add the client commands to ``app`` (the ``speechprompt`` CLI mounts them at top level)."""
    app.command("classify")(classify)
    app.command("tasks")(tasks_cmd)
    app.command("task")(task_cmd)
    app.command("upload")(upload_cmd)
    app.command("delete")(delete_cmd)
    app.command("backbone")(backbone_cmd)
    app.command("health")(health_cmd)
    app.command("stream")(stream_cmd)


def main() -> None:  # pragma: no cover - convenience entry point: python -m clients.cli
    app = typer.Typer(add_completion=False, help="SpeechPrompt server client")
    register(app)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

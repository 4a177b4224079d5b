"""``speechprompt stream FILE --tasks a,b`` and ``speechprompt stream --mic --tasks a,b``: live results per window.

A file (16-bit PCM WAV) is streamed as fast as the server scores it (``--realtime`` paces it like live audio);
``--mic`` records with ALSA's ``arecord`` (raw S16_LE mono 16 kHz, ``--device``, ``--seconds``) until the time
is up or Ctrl-C, then asks for the summary. Each result is a line on stdout (``--format json``: one JSON object
per line, the last one the summary); errors go to stderr. Exit codes as for the other client commands: 1 the
server refused or ended the stream or arecord failed, 2 bad usage (no arecord), 3 server unreachable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import typer

from .client import DEFAULT_URL, URL_ENV
from .errors import TransportError
from .stream import StreamError, StreamResult, StreamSummary, stream

MIC_RATE = 16000


class RecordingFailed(RuntimeError):
    """``arecord`` ended with an error (no capture device, busy device, bad ``--device``)."""

FRAME_BYTES = MIC_RATE // 4 * 2  # 250 ms of S16_LE mono


def mic_frames(device: str | None, seconds: float | None) -> Iterator[bytes]:
    """Raw S16_LE mono 16 kHz frames from ``arecord`` (ends when it ends, or on Ctrl-C)."""
    cmd = ["arecord", "-q", "-t", "raw", "-f", "S16_LE", "-c", "1", "-r", str(MIC_RATE)]
    if device:
        cmd += ["-D", device]
    if seconds:
        cmd += ["-d", str(max(1, round(seconds)))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        while frame := proc.stdout.read(FRAME_BYTES):
            yield frame
    except KeyboardInterrupt:
        pass
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(5)
    if proc.returncode not in (0, -15) and proc.stderr is not None:
        raise RecordingFailed(f"arecord failed: {proc.stderr.read().decode(errors='replace').strip()[-300:]}")


def line(event: StreamResult | StreamSummary) -> str:
    """Human line: ``0.00-2.00 s  vad=speech 0.91  gender=female 0.80`` or the summary with spans."""
    if isinstance(event, StreamResult):
        parts = [f"{t}={v.label} {v.scores[v.label]:.2f}" for t, v in event.tasks.items()]
        return f"{event.start:7.2f}-{event.end:7.2f} s  " + "  ".join(parts)
    out = [f"summary: {event.duration:.2f} s, {event.windows} windows"]
    for t, s in event.tasks.items():
        spans = ", ".join(f"{sp['label']} {sp['start']:.2f}-{sp['end']:.2f}" for sp in s.spans)
        out.append(f"  {t} ({s.version}): {s.label}; spans: {spans}")
    return "\n".join(out)


def stream_cmd(
    file: Path | None = typer.Argument(None, exists=True, dir_okay=False, readable=True,
                                       help="a 16-bit PCM WAV file (omit with --mic)"),
    tasks: str = typer.Option(..., "--tasks", "-t", help="comma-separated task names"),
    mic: bool = typer.Option(False, "--mic", help="record from the microphone with arecord instead of a file"),
    device: str | None = typer.Option(None, "--device", "-D", help="arecord capture device (e.g. default, hw:1)"),
    seconds: float | None = typer.Option(None, "--seconds", min=1, help="with --mic: stop after this long"),
    window: float | None = typer.Option(None, "--window", min=0.025, help="window length (s; server default)"),
    hop: float | None = typer.Option(None, "--hop", min=0.001, help="seconds between windows (server default)"),
    realtime: bool = typer.Option(False, "--realtime", help="send a file at the speed it plays"),
    fmt: str = typer.Option("text", "--format", "-f", help="text or json (one object per line)"),
    url: str = typer.Option(DEFAULT_URL, "--url", envvar=URL_ENV, help="server base URL"),
) -> None:
    """Stream a file or the microphone to /v1/stream; print each window's labels, then the summary."""
    if (file is None) == (not mic):
        raise typer.BadParameter("give a FILE or --mic (not both)")
    if mic and shutil.which("arecord") is None:
        typer.echo("error: --mic needs arecord (Debian package alsa-utils)", err=True)
        raise typer.Exit(2)
    audio = mic_frames(device, seconds) if mic else file
    options = {"sample_rate": MIC_RATE} if mic else {"realtime": realtime}
    try:
        for event in stream(url, tasks, audio, window=window, hop=hop, **options):
            if fmt == "json":
                kind = "result" if isinstance(event, StreamResult) else "summary"
                typer.echo(json.dumps({"type": kind, **asdict(event)}, ensure_ascii=False))
            else:
                typer.echo(line(event))
    except (StreamError, RecordingFailed) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except TransportError as e:
        typer.echo(f"error: cannot reach the server: {e}", err=True)
        raise typer.Exit(3) from None
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None

"""Windowed classify of 1, 2, 5 and 10-minute files on a real server process: cost per audio second and peak RSS.

    python bench/bench_long_audio.py                       # models/default, tasks vad + gender, window 2 s hop 1 s
    python bench/bench_long_audio.py --minutes 1,2 --tasks vad

Starts ``python -m server.main`` (uvicorn) on the bundle and a copy of the demo store, with
``SPEECHPROMPT_MAX_LONG_AUDIO_SECONDS`` above the longest file, then POSTs each file to
``/v1/classify?tasks=...&long_audio=window`` (best of ``--repeats``). The files are espeak-ng sentences
alternating with quiet noise (16 kHz PCM16 WAV). Prints, per length: windows, seconds, milliseconds per audio
second, that cost relative to the 1-minute file (measured in this run: ~1.0 means linear), and the server's
peak RSS (VmHWM) after the file, against its RSS when idle before the first file.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
SENTENCES = ("turn the lights on in the kitchen please", "what is the weather like tomorrow morning",
             "open the door and close the window", "play some music in the living room")


def long_clip(seconds: float, tmp: Path) -> bytes:
    """Speech (espeak-ng, resampled to 16 kHz) and 1.5 s of quiet noise, repeated to ``seconds``; PCM16 WAV."""
    rng = np.random.default_rng(0)
    parts = []
    for i, text in enumerate(SENTENCES):
        path = tmp / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
        sub = tmp / f"s{i}_16k.wav"
        subprocess.run(["sox", str(path), "-r", str(RATE), str(sub)], check=True)
        parts += [sf.read(sub, dtype="float32")[0], 0.003 * rng.standard_normal(int(1.5 * RATE)).astype(np.float32)]
    unit = np.concatenate(parts)
    x = np.resize(unit, int(seconds * RATE))
    buf = io.BytesIO()
    sf.write(buf, x, RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "models/default"))
    ap.add_argument("--store", default=str(ROOT / "prompts_store"))
    ap.add_argument("--tasks", default="vad,gender")
    ap.add_argument("--minutes", default="1,2,5,10")
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--hop", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    minutes = [float(m) for m in a.minutes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench_long_"))
    store = tmp / "store"
    shutil.copytree(a.store, store)
    port = free_port()
    env = {**os.environ, "SPEECHPROMPT_BUNDLE_DIR": a.bundle, "SPEECHPROMPT_STORE": str(store),
           "SPEECHPROMPT_PORT": str(port), "SPEECHPROMPT_MAX_LONG_AUDIO_SECONDS": str(60 * max(minutes) + 1),
           "SPEECHPROMPT_REQUEST_DEADLINE_S": "120", "OMP_NUM_THREADS": str(a.threads),
           "MKL_NUM_THREADS": str(a.threads)}
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "server.main"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    rows = []
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=1800)
        for _ in range(600):
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit(f"server not ready; log: {tmp / 'server.log'}")
        idle = rss_kib(proc.pid)["VmRSS"]
        query = f"tasks={a.tasks}&long_audio=window&window={a.window}&hop={a.hop}&top_k=1"
        for m in minutes:
            data = long_clip(60 * m, tmp)
            best = float("inf")
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                r = http.post(f"/v1/classify?{query}", content=data, headers={"Content-Type": "audio/wav"})
                best = min(best, time.perf_counter() - t0)
                r.raise_for_status()
            first = r.json()["results"][0]
            rows.append({"minutes": m, "windows": first["long_audio"]["windows"], "s": best,
                         "ms_per_audio_s": 1000 * best / (60 * m), "hwm_mib": rss_kib(proc.pid)["VmHWM"] / 1024,
                         "rss_mib": rss_kib(proc.pid)["VmRSS"] / 1024,
                         "labels": len({w["label"] for w in first["windows"]})})
            print(f"{m:g} min: {best:.1f} s", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    base = rows[0]["ms_per_audio_s"]
    print(f"Windowed classify, tasks {a.tasks}, window {a.window:g} s, hop {a.hop:g} s, {a.threads} thread(s); "
          f"bundle {Path(a.bundle).name}; idle server RSS {idle / 1024:.0f} MiB\n")
    print("| file | windows | seconds | ms per audio s | vs 1st | peak RSS (MiB) | RSS after (MiB) | labels seen |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['minutes']:g} min | {r['windows']} | {r['s']:.1f} | {r['ms_per_audio_s']:.1f} | "
              f"{r['ms_per_audio_s'] / base:.2f} | {r['hwm_mib']:.0f} | {r['rss_mib']:.0f} | {r['labels']} |")


if __name__ == "__main__":
    main()

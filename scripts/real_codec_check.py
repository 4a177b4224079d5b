#!/usr/bin/env python
r"""Real voices as phones and browsers send them: held-out real-speech clips as M4A, WebM, low-rate 3GP and at other
microphone levels (issue 14).

    python scripts/real_speech_eval.py --draw 0 ...    # once: the draw's task manifests and held-out packages
    python scripts/real_codec_check.py --work .cache/real_eval_v7_d0 --out .cache/codec_check

The server decodes M4A/MP4/3GP, WebM and ADTS AAC (``speechprompt/audio_containers.py``). Each test clip of a
``real_speech_eval.py`` work folder (speakers held out of the backbone and of the prompts) is encoded with ffmpeg the
way a phone or browser would, decoded by the server's own ``decode_audio``, and classified by that draw's held-out v2
package for the task. Per task and format: accuracy and the share of clips whose label is the same as for the WAV.
The formats (``FORMATS``): an AAC-LC voice memo (M4A, 64 kb/s, 44.1 kHz), a MediaRecorder recording (WebM Opus,
24 kb/s, 48 kHz), a low-rate phone clip (3GP AAC, 12 kb/s, 8 kHz: telephone band), and two microphone levels as
16-bit WAV: 30 dB quieter, and 12 dB louder (clipped at full scale). Encoded files are kept in
``--out`` (by clip content and format); the result goes to ``--out/results.json`` and is printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.audio import AudioError  # noqa: E402
from speechprompt.backbone import Backbone  # noqa: E402
from speechprompt.package import read_package  # noqa: E402
from speechprompt.training import manifest as M  # noqa: E402
from speechprompt.training.evaluate import predict  # noqa: E402

# name -> (file suffix, ffmpeg output arguments)
FORMATS = {
    "m4a-aac-64k": (".m4a", ["-ar", "44100", "-c:a", "aac", "-b:a", "64k"]),
    "webm-opus-24k": (".webm", ["-ar", "48000", "-c:a", "libopus", "-b:a", "24k"]),
    "3gp-aac-12k-8khz": (".3gp", ["-ar", "8000", "-c:a", "aac", "-b:a", "12k"]),
    "wav-quiet-30db": (".wav", ["-af", "volume=-30dB", "-c:a", "pcm_s16le"]),  # a distant or quiet microphone
    "wav-clipped-12db": (".wav", ["-af", "volume=12dB", "-c:a", "pcm_s16le"]),  # a hot input: clipped at full scale
}
TASKS = ("language-id", "keyword", "digits", "vad", "gender")


def encode(src: Path, fmt: str, out: Path) -> Path:
    """``src`` as ``fmt`` (a key of ``FORMATS``) under ``out``, named by the source's bytes; made once."""
    suffix, args = FORMATS[fmt]
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:20]
    path = out / fmt / f"{digest}{suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"tmp-{path.name}")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-ac", "1", *args, str(tmp)], check=True)
        tmp.replace(path)
    return path


def check_task(bb: Backbone, extractor, cache: M.UnitsCache, work: Path, task: str, out: Path) -> dict:
    """``{"n", "wav": accuracy, "wav_refused", <format>: {"accuracy", "same_label", "refused"}}`` for ``task``'s test
    clips in ``work``; a refused clip counts as wrong and as a changed label."""
    pkg = read_package((work / "new" / "packages" / f"{task}.v2.safetensors").read_bytes())
    tests = [e for e in M.read_manifest(work / "tasks" / task / "manifest.csv") if e.split == "test"]
    labels = list(pkg.meta.labels)
    truth = np.array([labels.index(e.label) for e in tests])

    def labels_of(paths: list[Path]) -> np.ndarray:
        """Each clip's label index, or -1 where the server refuses the decoded file (its 4xx, e.g. a lossy
        decoder's overshoot past audio.MAX_PEAK)."""
        wavs = {}
        for i, p in enumerate(paths):
            try:
                wavs[i] = M.load_audio(p)
            except AudioError:
                pass
        got = np.full(len(paths), -1)
        if wavs:
            units = M.compute_units(list(wavs.values()), extractor, cache)
            got[list(wavs)] = predict(bb.unit_lm, pkg, units).argmax(axis=1)
        return got

    wav = labels_of([Path(e.path) for e in tests])
    row = {"n": len(tests), "wav": float((wav == truth).mean()), "wav_refused": int((wav < 0).sum())}
    for fmt in FORMATS:
        got = labels_of([encode(Path(e.path), fmt, out) for e in tests])
        row[fmt] = {"accuracy": float((got == truth).mean()), "same_label": float((got == wav).mean()),
                    "refused": int((got < 0).sum())}
    return row


def table(results: dict) -> str:
    """The Markdown table of ``results`` (task -> ``check_task`` row)."""
    head = "| task | test clips | WAV | " + " | ".join(FORMATS) + " |"
    lines = [head, "|" + "---|" * (3 + len(FORMATS))]
    for task, r in results.items():
        cells = [f"{r[f]['accuracy']:.3f} ({r[f]['same_label']:.0%} same"
                 + (f"; {r[f]['refused']} refused)" if r[f].get("refused") else ")") for f in FORMATS]
        lines.append(f"| {task} | {r['n']} | {r['wav']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "real_eval_v7_d0",
                    help="a real_speech_eval.py work folder (tasks/<task>/manifest.csv, new/packages/<task>.v2)")
    ap.add_argument("--backbone", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "codec_check")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bb = Backbone.load(a.backbone)
    extractor = bb.unit_extractor()
    cache = M.UnitsCache(a.out / "units", bb.units_key)
    results = {t: check_task(bb, extractor, cache, a.work, t, a.out) for t in a.tasks.split(",")}
    a.out.mkdir(parents=True, exist_ok=True)
    M.replace_file(a.out / "results.json", (json.dumps({"backbone": bb.fingerprint, "work": str(a.work),
                                                        "tasks": results}, indent=1) + "\n").encode())
    sys.stdout.write(table(results) + "\n")


if __name__ == "__main__":
    main()

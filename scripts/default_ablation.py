#!/usr/bin/env python
"""Ablation of the default backbone on the real-speech tasks: what the real-speech dense model and the real speech in
the codebook contribute. Writes the ``ablation:begin/end`` block of docs/model_card.md.

    python scripts/default_ablation.py   # after build-default (its stage files) and scripts/real_speech_eval.py

Rows, all scored with the same logistic regression (``run_suite.logreg``) on the same speaker split:
1. v1 units (HuBERT trained on TTS; from the evaluation's results.json);
2. speech_embedding units, k-means fitted on the TTS corpus only (the build's TTS features, same seed);
3. speech_embedding units, k-means on TTS + real + channel twins (= the default);
4. speech_embedding units with a larger codebook (``--sizes``, default 300 and 1000 units), k-means on the same
   sampled frames as the default's 100 (what the codebook size costs, without a unit LM for it);
5. speech_embedding features, mean-pooled (no quantisation at all);
and the prompted unit LM (SpeechPrompt v2) on v1 and on v2, from the evaluation.
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
sys.path.insert(0, str(ROOT / "scripts"))

from run_suite import histograms, logreg  # noqa: E402

from speechprompt.backbone import Backbone  # noqa: E402
from speechprompt.codebook import Codebook, dedup  # noqa: E402
from speechprompt.training import manifest as M  # noqa: E402
from speechprompt.training.build_backbone import NUM_UNITS, fit_kmeans, subsample_rows  # noqa: E402
from speechprompt.training.build_default import DefaultBuildConfig, _load_clips  # noqa: E402
from speechprompt.training.markers import replace_block  # noqa: E402
from speechprompt.training.real_tasks import TASK_NAMES  # noqa: E402

BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"


def tts_codebook(work: Path, seed: int, frames: int) -> Codebook:
    """k-means (100) on the build's TTS features only (training utterances, clean + sox twins)."""
    _, meta = _load_clips(work / "tts.npz")
    feats = torch.load(work / "feats.pt", weights_only=True)[: len(meta)]
    train = [f for f, m in zip(feats, meta, strict=True) if not m["valid"]]
    return Codebook(torch.from_numpy(fit_kmeans(subsample_rows(train, frames, seed), NUM_UNITS, seed)))


def all_codebook(work: Path, seed: int, frames: int, k: int) -> Codebook:
    """k-means (``k``) on the frames the default's codebook is fitted on (TTS + real + twins, same sample)."""
    return Codebook(torch.from_numpy(fit_kmeans(subsample_rows(torch.load(work / "feats.pt", weights_only=True),
                                                               frames, seed), k, seed)))


def task_data(task_dir: Path, bb: Backbone, books: dict[str, Codebook]) -> dict:
    examples = M.read_manifest(task_dir / "manifest.csv")
    data: dict = {}
    with torch.inference_mode():
        for i in range(0, len(examples), 32):
            batch = examples[i:i + 32]
            feats = bb.encoder.extract([torch.from_numpy(M.load_audio(e.path)) for e in batch])
            for e, f in zip(batch, feats, strict=True):
                d = data.setdefault(e.split, {"labels": [], "feats": [], **{k: [] for k in books}})
                d["labels"].append(e.label)
                d["feats"].append(f.mean(0).numpy())
                for k, cb in books.items():
                    d[k].append(dedup(cb.quantize(f))[0])
    for d in data.values():
        d["feats"] = np.stack(d["feats"])
        for k in books:
            d[k] = histograms(d[k], books[k].vocab_size)
    return data


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def main() -> None:
    class Fmt(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=Fmt)
    ap.add_argument("--backbone", type=Path, default=ROOT / "models" / "default", help="the default's bundle")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "build_default",
                    help="build-default's stage files (tts.npz, feats.pt)")
    ap.add_argument("--eval", type=Path, default=ROOT / ".cache" / "real_eval",
                    help="scripts/real_speech_eval.py's --work (tasks.json, tasks/, results.json)")
    ap.add_argument("--card", type=Path, default=ROOT / "docs" / "model_card.md", help="where the table goes")
    ap.add_argument("--render-only", action="store_true", help="re-read the regressions of the last run")
    ap.add_argument("--sizes", default="300,1000", help="larger codebooks to compare with the default's 100")
    a = ap.parse_args()
    torch.set_num_threads(2)
    cfg = DefaultBuildConfig()
    bb = Backbone.load(a.backbone)
    sizes = [int(k) for k in a.sizes.split(",") if k]
    books = {} if a.render_only else {"tts_only": tts_codebook(a.work, cfg.seed, cfg.codebook_frames),
                                      "default": bb.codebook,
                                      **{f"k{k}": all_codebook(a.work, cfg.seed, cfg.codebook_frames, k) for k in sizes}}
    info = json.loads((a.eval / "tasks.json").read_text())
    rows = {"v1 units (HuBERT trained on TTS) + LR": {}, "speech_embedding units, codebook on TTS only + LR": {},
            "speech_embedding units, codebook on TTS + real + twins (default) + LR": {},
            **{f"speech_embedding units, {k} units (same frames) + LR": {} for k in sizes},
            "speech_embedding features, mean-pooled (no units) + LR": {},
            "SpeechPrompt v2 prompts on v1": {}, "SpeechPrompt v2 prompts on v2 (default)": {}}
    names = [n for n in TASK_NAMES if n in info]
    cache = a.eval / f"ablation-{bb.fingerprint[:16]}.json"  # the regressions; --render-only re-reads them
    accs = json.loads(cache.read_text()) if a.render_only else {}
    for name in [n for n in names if n not in accs]:
        data = task_data(a.eval / "tasks" / name, bb, books)
        accs[name] = {k: logreg(data, info[name]["labels"], k, 0)["test"]["accuracy"]
                      for k in ("tts_only", "default", *(f"k{k}" for k in sizes), "feats")}
    cache.write_text(json.dumps(accs, indent=1) + "\n")
    results = json.loads((a.eval / "results.json").read_text())  # read last: the evaluation may still be writing
    for name in names:
        acc, r = accs[name], results.get(name, {})
        keys = list(rows)
        rows[keys[0]][name] = r.get("old", {}).get("logreg_hist", {}).get("test", {}).get("accuracy")
        rows[keys[1]][name], rows[keys[2]][name] = acc["tts_only"], acc["default"]
        for i, k in enumerate(sizes):
            rows[keys[3 + i]][name] = acc.get(f"k{k}")
        rows[keys[-3]][name] = acc["feats"]
        rows[keys[-2]][name] = r.get("old", {}).get("v2", {}).get("test", {}).get("accuracy")
        rows[keys[-1]][name] = r.get("new", {}).get("v2", {}).get("test", {}).get("accuracy")
    lines = ["Real-speech tasks, held-out speakers, test accuracy (`scripts/default_ablation.py`; same split and "
             "training clips as [results.md](results.md#real-human-speech-held-out-speakers)).", "",
             "| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {k} | " + " | ".join(fmt(v.get(n)) for n in names) + " |" for k, v in rows.items()]
    replace_block(a.card, BEGIN, END, "\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

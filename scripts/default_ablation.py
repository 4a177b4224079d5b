#!/usr/bin/env python
"""Ablation of the default backbone on the real-speech tasks: what the real-speech dense model, the real speech in
the codebook and the pitch stream contribute. Writes the ``ablation:begin/end`` block of docs/model_card.md.

    python scripts/default_ablation.py   # after build-default (its stage files) and scripts/real_speech_eval.py

It reads the 80 ms stage files (``feats.pt``, ``pitch-<scale>.pt``), the frames of every committed default; a build
with ``--hop-frames`` writes its features as ``feats-h<hop>.pt``, which this ablation does not read.

Rows, all scored with the same logistic regression (``run_suite.logreg``) on the same speaker split:
1. v1 units (HuBERT trained on TTS; from the evaluation's results.json);
2. speech_embedding units (no pitch), k-means fitted on the TTS corpus only (the build's TTS features, same seed);
3. speech_embedding units (no pitch), k-means on TTS + real + channel twins (v2's recipe, on the same sampled frames);
4. the same with a larger codebook (``--sizes``, default 300 and 1000 units);
5. speech_embedding + pitch units, one k-means over both (v3's recipe at weight 40; ``--pitch-scales``, default 20,
   40 and 80; ``build-default --pitch-scale``), 100 units on the same sampled frames;
6. the default's own units (v7: speech_embedding + pitch as a product codebook, 300 clusters x 4 registers);
7. speech_embedding features, mean-pooled (no quantisation, no pitch);
and the prompted unit LM (SpeechPrompt v2) on v1 and on the default, from the evaluation. The regressions are kept in
``<eval>/ablation-<fingerprint>.json`` with each task's manifest digest; a rerun recomputes only the tasks whose clips
(or codebook rows) changed, ``--render-only`` redraws the table from that file.
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
from speechprompt.pitch import PitchConfig, pitch_features  # noqa: E402
from speechprompt.training import manifest as M  # noqa: E402
from speechprompt.training.build_default import DefaultBuildConfig  # noqa: E402
from speechprompt.training.default_stages import load_clips as _load_clips  # noqa: E402
from speechprompt.training.default_stages import with_pitch as _with_pitch  # noqa: E402
from speechprompt.training.kmeans import NUM_UNITS, fit_kmeans, subsample_rows  # noqa: E402
from speechprompt.training.markers import replace_block  # noqa: E402
from speechprompt.training.real_tasks import TASK_NAMES  # noqa: E402

BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"
SE_DIM = 96  # speech_embedding's own dimensions; a pitch stream follows them


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


def pitch_codebook(work: Path, seed: int, frames: int, pitch: PitchConfig) -> Codebook:
    """k-means (100) on the default's sampled frames with the pitch stream appended (``build-default --pitch-scale``;
    the pitch frames are the build's ``pitch-<scale>.pt`` stage file, computed here when missing)."""
    clips = [c for n in ("tts", "real", "twins") for c in _load_clips(work / f"{n}.npz")[0]]
    feats = _with_pitch(torch.load(work / "feats.pt", weights_only=True), clips, pitch,
                        work / f"pitch-{pitch.scale:g}.pt", print)
    del clips
    return Codebook(torch.from_numpy(fit_kmeans(subsample_rows(feats, frames, seed), NUM_UNITS, seed)))


def task_data(task_dir: Path, bb: Backbone, books: dict[str, Codebook], pitches: dict[str, PitchConfig]) -> dict:
    """Per split: labels, mean-pooled embeddings and the unit histogram of every codebook in ``books``: ``default``
    quantises the bundle's own features, those named in ``pitches`` the embedding with that pitch stream appended,
    the others the embedding alone (the first 96 dimensions)."""
    examples = M.read_manifest(task_dir / "manifest.csv")
    data: dict = {}
    with torch.inference_mode():
        for i in range(0, len(examples), 32):
            batch = examples[i:i + 32]
            wavs = [torch.from_numpy(M.load_audio(e.path)) for e in batch]
            feats = bb.encoder.extract(wavs)
            condition = getattr(bb.encoder.cfg, "condition", None)
            for e, w, f in zip(batch, wavs, feats, strict=True):
                d = data.setdefault(e.split, {"labels": [], "feats": [], **{k: [] for k in books}})
                d["labels"].append(e.label)
                se = f[:, :SE_DIM]
                d["feats"].append(se.mean(0).numpy())
                for k, cb in books.items():
                    pw = condition(w) if condition is not None else w  # the clip the bundle's pitch stream reads
                    x = f if k == "default" else \
                        torch.cat([se, pitch_features(pw, f.shape[0], pitches[k])], 1) if k in pitches else se
                    d[k].append(dedup(cb.quantize(x))[0])
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
    ap.add_argument("--render-only", action="store_true",
                    help="re-read the regressions of the last run (fails when a task's clips or rows changed since)")
    ap.add_argument("--sizes", default="300,1000", help="larger codebooks of the embedding alone, to compare with its 100 clusters")
    ap.add_argument("--pitch-scales", default="20,40,80",
                    help="pitch-stream weights of one k-means over embedding + pitch (40: v3's recipe)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    cfg = DefaultBuildConfig()
    bb = Backbone.load(a.backbone)
    sizes = [int(k) for k in a.sizes.split(",") if k]
    pitches = {f"p{float(x):g}": PitchConfig(scale=float(x)) for x in a.pitch_scales.split(",") if x}
    fitters = {"tts_only": lambda: tts_codebook(a.work, cfg.seed, cfg.codebook_frames),  # fitted only when needed
               "k100": lambda: all_codebook(a.work, cfg.seed, cfg.codebook_frames, 100),
               "default": lambda: bb.codebook,
               **{f"k{k}": (lambda k=k: all_codebook(a.work, cfg.seed, cfg.codebook_frames, k)) for k in sizes},
               **{k: (lambda p=p: pitch_codebook(a.work, cfg.seed, cfg.codebook_frames, p)) for k, p in pitches.items()}}
    info = json.loads((a.eval / "tasks.json").read_text())
    rows = {"v1 units (HuBERT trained on TTS) + LR": {},
            "speech_embedding units, codebook on TTS only + LR": {"key": "tts_only"},
            "speech_embedding units, codebook on TTS + real + twins (v2's recipe) + LR": {"key": "k100"},
            **{f"speech_embedding units, {k} units (same frames) + LR": {"key": f"k{k}"} for k in sizes},
            **{f"speech_embedding + pitch (scale {p.scale:g}) units, 100 (same frames) + LR": {"key": k}
               for k, p in pitches.items()},
            f"the default's units ({bb.spec.extra.get('dense_model', 'its dense model')}) + LR": {"key": "default"},
            "speech_embedding features, mean-pooled (no units, no pitch) + LR": {"key": "feats"},
            "SpeechPrompt v2 prompts on v1": {}, "SpeechPrompt v2 prompts on the default": {}}
    names = [n for n in TASK_NAMES if n in info]
    cache = a.eval / f"ablation-{bb.units_key[:16]}.json"  # the regressions; --render-only re-reads them
    accs = json.loads(cache.read_text()) if cache.exists() else {}
    digests = {n: M.manifest_digest(a.eval / "tasks" / n / "manifest.csv") for n in names}  # changed clips: redone
    stale = [n for n in names if not set(fitters) <= set(accs.get(n, {})) or accs[n].get("digest") != digests[n]]
    if a.render_only and stale:
        sys.exit(f"--render-only: no regressions for the current clips of {stale} in {cache}; run without it")
    books = {k: fit() for k, fit in fitters.items()} if stale else {}
    for name in stale:
        data = task_data(a.eval / "tasks" / name, bb, books, pitches)
        accs[name] = {k: logreg(data, info[name]["labels"], k, 0)["test"]["accuracy"] for k in (*books, "feats")}
        accs[name]["digest"] = digests[name]
        cache.write_text(json.dumps(accs, indent=1) + "\n")
    results = json.loads((a.eval / "results.json").read_text())  # read last: the evaluation may still be writing
    keys = {label: row.pop("key", None) for label, row in rows.items()}
    for name in names:
        acc, r = accs[name], results.get(name, {})
        for label, key in keys.items():
            rows[label][name] = acc.get(key) if key else None
        labels = list(rows)
        rows[labels[0]][name] = r.get("old", {}).get("logreg_hist", {}).get("test", {}).get("accuracy")
        rows[labels[-2]][name] = r.get("old", {}).get("v2", {}).get("test", {}).get("accuracy")
        rows[labels[-1]][name] = r.get("new", {}).get("v2", {}).get("test", {}).get("accuracy")
    lines = ["Real-speech tasks, held-out speakers, test accuracy (`scripts/default_ablation.py`; same split and "
             "training clips as [results.md](results.md#real-human-speech-held-out-speakers)).", "",
             "| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {k} | " + " | ".join(fmt(v.get(n)) for n in names) + " |" for k, v in rows.items()]
    replace_block(a.card, BEGIN, END, "\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

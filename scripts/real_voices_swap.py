#!/usr/bin/env python
r"""More real voices per class: the held-out speakers swapped into training, fold by fold (issue 14).

    python scripts/real_voices_swap.py --folds 2 --demo language-id,gender
    python scripts/real_voices_swap.py --tasks vad --demo vad --demo-only --mixes 600 --dev-mixes 75 \
        --noise-mixes 600 --demo-seeds 100501,1,2 --demo-ensemble --work .cache/real_swap_nmix --results none  # vad demo

Every explanation of the real-speech table (docs/results.md) ends in "one to three voices per class": this measures
it. The test speakers of the split ``real_speech_eval.py`` uses (held out of the backbone's build too) are dealt into
``--folds`` folds by speaker (non-speech by file group), label by label; for each fold, a model trained on the split's
train side *plus the other folds' test speakers* (their clips get channel twins like every train clip; every eighth
clip goes to dev, as for train speakers) is tested on that fold's speakers. Pooled over the folds, every test clip of
the split is tested once, by a model that never heard its speaker, so the pooled accuracy compares cell by cell with
the split's own table on the same clips; only the number of training voices differs. The backbone is the same and
never saw any test speaker.

``--demo`` then trains the listed tasks on every speaker (train and test sides) and installs those packages in
``--store``: what a user gets from the allow-list when nobody is held out (their accuracy is the swap's estimate, not
a measurement: no allow-listed voice is left to test them on).

Results: ``--work/results.json`` (a finished fold of a task is kept unless --force) and docs/results.md between the
``swap:begin/end`` markers, beside the split's cells read from ``--split-results``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from real_draws import cell  # noqa: E402
from real_speech_eval import REAL_MIRRORS, free_baselines, made_by, same_backbone, write_tasks  # noqa: E402
from run_suite import encode_task, install_demo, run_task, say  # noqa: E402

from speechprompt.backbone import Backbone  # noqa: E402
from speechprompt.ensembles import ensemble  # noqa: E402
from speechprompt.package import read_package  # noqa: E402
from speechprompt.training import manifest as M  # noqa: E402
from speechprompt.training import real_corpus, real_tasks  # noqa: E402
from speechprompt.training.evaluate import evaluate_package  # noqa: E402
from speechprompt.training.markers import replace_block  # noqa: E402
from speechprompt.training.real_augment import augment_train  # noqa: E402

BEGIN, END = "<!-- swap:begin -->", "<!-- swap:end -->"
COLUMNS = (("prompts", ("new", "v2")), ("LR unit hist", ("new", "logreg_hist")), ("MFCC + LR", ("logreg_mfcc",)),
           ("speech_embedding + LR", ("logreg_speech_embedding",)))


def voice_of(row: dict) -> str:
    """Who a clip belongs to for the folds: its speaker id, or for non-speech its file group (``real_tasks``)."""
    return row.get("speaker") or real_tasks._nonspeech_group(row)


def deal_folds(examples: list[M.Example], voice: dict[str, str], folds: int, seed: int) -> dict[str, int]:
    """``{voice: fold}`` for the voices of the test split: grouped by their most frequent label, each group in
    hash order (``seed``) dealt round-robin, so every fold gets voices of as many labels as it can."""
    labels: dict[str, Counter] = defaultdict(Counter)
    for e in examples:
        if e.split == "test":
            labels[voice[e.path]][e.label] += 1
    by_label: dict[str, list[str]] = defaultdict(list)
    for v, c in labels.items():
        by_label[c.most_common(1)[0][0]].append(v)
    out, i = {}, 0
    for lab in sorted(by_label):
        for v in sorted(by_label[lab], key=lambda v: real_tasks.text_key(f"{seed}:{v}")):
            out[v] = i % folds
            i += 1
    return out


def swap_manifest(examples: list[M.Example], rows: dict[str, dict], fold_of: dict[str, int], fold: int | None,
                  out: Path) -> Counter:
    """Write ``out/manifest.csv``: the split's train/dev clips, the test clips of ``fold`` as test and every other
    test clip as train (every eighth, by its corpus key, dev); ``fold=None``: every test clip trains. Returns the
    clips per split."""
    out.mkdir(parents=True, exist_ok=True)
    n: Counter = Counter()
    lines = []
    for e in examples:
        s = e.split
        if s == "test" and (fold is None or fold_of[voice_of(rows[e.path])] != fold):
            s = real_tasks._with_dev(real_tasks.row_key(rows[e.path]), "train")
        lines.append([e.path, e.label, s])
        n[s] += 1
    M.write_csv(out / "manifest.csv", lines, header=["path", "label", "split"])
    return n


def balanced(metrics: dict) -> float:
    """Class-balanced accuracy of ``evaluate.compute_metrics`` output: the mean recall over classes with clips.
    Raises ``ValueError`` when no class has a clip."""
    recalls = [r["recall"] for r in metrics["per_class"].values() if r["support"]]
    if not recalls:
        raise ValueError("balanced accuracy of an empty split: no class has a clip")
    return sum(recalls) / len(recalls)


def best_draw(runs: list[dict]) -> int:
    """Which of several demo runs (``run_task`` results of one task, one per prompt seed) to install: the index of the
    best class-balanced dev accuracy of its v2 package (``v2.dev_metrics``, :func:`balanced`), then the best plain
    dev accuracy, then the first. Balanced, because a dev split of 367 speech and 129 noise clips (the vad demo's)
    ranks a draw mostly by its speech clips (until 2026-12-05 the rule was plain dev accuracy; a run without
    ``dev_metrics`` is still ranked by it). Dev only: no allow-listed voice is left to test a demo."""
    def key(i: int) -> tuple[float, float]:
        v2 = runs[i]["v2"]
        acc = v2["dev"]["accuracy"]
        return (balanced(v2["dev_metrics"]) if "dev_metrics" in v2 else acc, acc)
    return max(range(len(runs)), key=key)


def demo_package(files: list[Path], best: int, as_ensemble: bool):
    """The package a demo installs from its draws' package files: the ``best`` one, or with ``as_ensemble`` (and
    more than one draw) all of them as one ensemble package (``speechprompt/ensembles.py``), in draw order."""
    if as_ensemble and len(files) > 1:
        return ensemble([read_package(f.read_bytes()) for f in files])
    return read_package(files[best].read_bytes())


def pooled(folds: list[dict], path: tuple[str, ...]) -> dict | None:
    """Accuracy over every fold's test clips (each clip once) of one result cell, and its clips."""
    cells = [(cell(f, path), cell(f, path, "n")) for f in folds]  # (accuracy, clips) of each fold
    if any(a is None for a, _ in cells):
        return None
    n = sum(k for _, k in cells)
    return {"accuracy": sum(a * k for a, k in cells) / n, "n": n}


def render(results: dict, split: dict, meta: dict) -> str:
    """The markdown block: per task, the split's cell and the swapped folds' pooled cell for each column."""
    head = ("| task | test clips / speakers | folds | " + " | ".join(f"{c}: split -> swapped" for c, _ in COLUMNS) +
            " | train speakers (split -> swapped) |")
    lines = [f"Held-out speakers swapped into training (`scripts/real_voices_swap.py`, {meta['date']}, backbone "
             f"`{meta['fingerprint'][:16]}`, {meta['folds']} folds). Test accuracy on the same clips: the split's "
             "model (train side only) -> the models that also heard the other folds' test speakers.", "",
             head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results.items():
        cells = []
        for _, path in COLUMNS:
            p, s = pooled(r["folds"], path), cell(split.get(name, {}), path)
            a = "-" if s is None else f"{s:.3f}"
            cells.append(f"{a} -> {p['accuracy']:.3f}" if p else f"{a} -> -")
        lines.append(f"| {name} | {r['test_clips']} / {r['test_speakers']} | {len(r['folds'])} | " + " | ".join(cells) +
                     f" | {r['train_speakers']} -> {r['train_speakers'] + r['test_speakers'] * (len(r['folds']) - 1) // len(r['folds'])} (mean) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    class Fmt(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=Fmt)
    ap.add_argument("--real-cache", type=Path, default=ROOT / ".cache" / "real_corpus")
    ap.add_argument("--backbone", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "real_swap", help="manifests, units, packages, results")
    ap.add_argument("--aug", type=Path, default=ROOT / ".cache" / "real_eval" / "aug",
                    help="channel twins, TTS clips, generated and varied sounds, joins (named by content: shared with "
                         "real_speech_eval.py's --work)")
    ap.add_argument("--split-results", type=Path, default=ROOT / ".cache" / "real_eval" / "results.json",
                    help="real_speech_eval.py's results on the split, for the table's left-hand cells")
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md", help="'none': docs untouched")
    ap.add_argument("--store", type=Path, default=ROOT / "prompts_store", help="where --demo packages go")
    ap.add_argument("--demo", default="", help="tasks to train on every speaker and install in --store")
    ap.add_argument("--tasks", default=",".join(real_tasks.TASK_NAMES))
    ap.add_argument("--folds", type=int, default=2, help="folds of the test speakers")
    ap.add_argument("--seed", type=int, default=0, help="the split's seed (real_speech_eval.py --seed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-epochs", type=int, default=40)
    ap.add_argument("--twins", type=int, default=1)
    ap.add_argument("--tts-voices", type=int, default=24)
    ap.add_argument("--generated-nonspeech", type=int, default=600)
    ap.add_argument("--mixes", type=int, default=0,
                    help="vad: speech clips made of a train speech clip and a train non-speech clip "
                         "(real_speech_eval.py --mixes; give the run its own --work: results are cached by backbone)")
    ap.add_argument("--dev-mixes", type=int, default=0, help="vad: mixes of dev clips, into dev (early stopping)")
    ap.add_argument("--noise-mixes", type=int, default=0, help="vad: noise clips of two train sounds (mixes.py)")
    ap.add_argument("--noise-variants", type=int, default=0,
                    help="vad: faster / slower / reversed copies of every train sound (sound_variants.py)")
    ap.add_argument("--pads", type=int, default=0, help="every task: copies of every train clip with 0.2-2 s of room "
                    "tone before and after (training/pads.py)")
    ap.add_argument("--demo-seeds", default="", help="prompt seeds for --demo (default: the recipe's); the draw with "
                    "the best class-balanced dev accuracy is installed (best_draw), every draw is kept in results.json")
    ap.add_argument("--demo-ensemble", action="store_true", help="install the --demo-seeds draws together as one "
                    "ensemble package (speechprompt/ensembles.py: the mean of their probabilities) instead of the best")
    ap.add_argument("--demo-only", action="store_true", help="train the --demo packages, skip the folds")
    ap.add_argument("--unit-view", choices=("units", "clusters"), default="units",
                    help="the units every package here reads (run_suite.run_task): clusters = a product codebook's "
                    "clusters, pitch registers folded (docs/prompting.md)")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    wanted = [t for t in a.tasks.split(",") if t]
    if set(wanted) - set(real_tasks.TASK_NAMES) or a.folds < 2:
        ap.error(f"--tasks: one of {', '.join(real_tasks.TASK_NAMES)}; --folds >= 2")
    a.work, a.real_cache, a.aug = a.work.resolve(), a.real_cache.resolve(), a.aug.resolve()
    torch.set_num_threads(a.threads)
    corpus = real_corpus.read_manifest(a.real_cache / "manifest.jsonl")
    info = write_tasks(corpus, a.real_cache, a.work / "split", 0.3, a.seed, set(wanted))
    segs = real_tasks.segment_long(corpus, a.real_cache, a.work / "segments")
    rows = {str(a.real_cache / r["path"]): r for r in segs}
    rows |= {r["path"]: r for r in segs if Path(r["path"]).is_absolute()}
    bb = Backbone.load(a.backbone)
    res_file = a.work / "results.json"
    results = json.loads(res_file.read_text()) if res_file.exists() and not a.force else {}
    demos = {d for d in a.demo.split(",") if d}
    for name in wanted:
        examples = M.read_manifest(a.work / "split" / name / "manifest.csv")
        fold_of = deal_folds(examples, {e.path: voice_of(rows[e.path]) for e in examples}, a.folds, a.seed)
        r = results.setdefault(name, {"folds": []})
        r |= {"test_clips": sum(e.split == "test" for e in examples), "test_speakers": len(fold_of),
              "train_speakers": len({voice_of(rows[e.path]) for e in examples if e.split != "test"}),
              "fold_of": fold_of}
        runs = [(None, "all")] if name in demos else []  # the demo first
        runs += [] if a.demo_only else [(f, f"fold{f}") for f in range(a.folds)]
        def done(res: dict) -> bool:  # trained on this backbone with this unit view (older results: the units)
            return same_backbone(res, bb) and res.get("unit_view", "units") == a.unit_view

        for fold, tag in runs:
            if fold is not None and len(r["folds"]) > fold and done(r["folds"][fold]):
                continue
            if fold is None and done(r.get("all", {})):
                continue
            task_dir = a.work / tag / name
            sizes = swap_manifest(examples, rows, fold_of, fold, task_dir)
            added = augment_train(task_dir, a.aug, a.twins, a.tts_voices, a.seed, a.generated_nonspeech, mixes=a.mixes,
                                  dev_mixes=a.dev_mixes, noise_mixes=a.noise_mixes, noise_variants=a.noise_variants,
                                  pads=a.pads)
            say(f"{name} {tag}: {dict(sizes)} clips + {added}")
            data = encode_task(bb, task_dir, a.work / tag / "units" / M.manifest_digest(task_dir / "manifest.csv"))
            who = "every allow-listed speaker" if fold is None else f"test speakers of fold {fold} held out"
            seeds = [int(x) for x in a.demo_seeds.split(",") if x] if fold is None and a.demo_seeds else [None]
            draws = [(s, a.work / tag / (f"seed{s}" if s is not None else "")) for s in seeds]
            trained = [run_task(bb, name, data, w, ["v2"], w / "curves", None, a.max_epochs, labels=info[name]["labels"],
                                probes=False, seed=s, mirrors=f"real speech ({REAL_MIRRORS[name]}; {who})",
                                unit_view=a.unit_view)
                       for s, w in draws]
            for (_, w), run in zip(draws, trained) if len(trained) > 1 else ():  # what best_draw ranks by
                pkg = read_package((w / "packages" / f"{name}.v2.safetensors").read_bytes())
                run["v2"]["dev_metrics"] = evaluate_package(bb, pkg, data["dev"]["units"], data["dev"]["labels"])
            best = best_draw(trained)
            res = {"new": trained[best], "unit_view": a.unit_view} | made_by(bb) | (
                {"draws": trained} if len(trained) > 1 else {})
            if fold is None:
                r["all"] = res
                demo = demo_package([w / "packages" / f"{name}.v2.safetensors" for _, w in draws], best,
                                    a.demo_ensemble)
                if demo.meta.members > 1:
                    res["ensemble"] = {"version": demo.version, "members": demo.meta.members,
                                       "dev_metrics": evaluate_package(bb, demo, data["dev"]["units"],
                                                                       data["dev"]["labels"])}
                install_demo(a.store, name, demo.version, demo.data)
            else:
                res |= free_baselines(task_dir, info[name]["labels"], bb)
                r["folds"] = r["folds"][:fold] + [res] + r["folds"][fold + 1:]
            a.work.mkdir(parents=True, exist_ok=True)
            M.replace_file(res_file, (json.dumps(results, indent=1) + "\n").encode())  # never in place (cp -al)
    split = json.loads(a.split_results.read_text()) if a.split_results.exists() else {}
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "fingerprint": bb.fingerprint, "folds": a.folds}
    shown = {n: results[n] for n in real_tasks.TASK_NAMES if n in results and len(results[n]["folds"]) == a.folds}
    if str(a.results) != "none" and shown:
        replace_block(a.results, BEGIN, END, render(shown, split, meta))


if __name__ == "__main__":
    main()

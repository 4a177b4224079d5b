#!/usr/bin/env python
"""Real-speech evaluation (issue 14): held-out speakers of the allow-listed corpus, several backbones and baselines.

    python scripts/build_real_corpus.py           # once: .cache/real_corpus (Debian packages)
    python scripts/real_speech_eval.py --old-backbone models/default-v1 --max-epochs 40 --demo language-id,vad,gender

Tasks (``speechprompt/training/real_tasks.py``): language-id, keyword, digits, vad (speech vs non-speech) and gender,
a speaker in train or test, never both (the same split as ``build-default`` uses, so test speakers never reached the
backbone either). Per task and backbone: SpeechPrompt v2 prompts (the suite's ``trainer.Recipe``) and logistic
regression on unit histograms; backbone-free baselines: MFCC mean/std + LR and speech_embedding (mean-pooled) + LR.
Training sets grow by ``speechprompt/training/real_augment.py`` (channel twins, TTS renditions, generated and varied
non-speech, cuts, joins; the flags below); test clips are never touched.
Results go to ``--work/results.json`` (tasks already there are skipped unless --force; a task whose clips changed is
recomputed) and to docs/results.md between the ``real:begin/end`` markers. ``--demo`` copies the new backbone's v2
packages to ``--store`` (the old demo's task names and labels: ``vad`` = noise/speech, ``gender`` = female/male).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from run_suite import encode_task, install_demo, logreg, ran_with, run_task, say, views_of  # noqa: E402

from speechprompt.backbone import Backbone  # noqa: E402
from speechprompt.package import read_package  # noqa: E402
from speechprompt.training import manifest as M  # noqa: E402
from speechprompt.training import real_corpus, real_tasks  # noqa: E402
from speechprompt.training.evaluate import accuracy_by_group, predict  # noqa: E402
from speechprompt.training.hubert_pretrain import _DCT, _FB, HubertPretrainModel, _deltas  # noqa: E402
from speechprompt.training.markers import replace_block  # noqa: E402
from speechprompt.training.real_augment import augment_train  # noqa: E402

BEGIN, END = "<!-- real:begin -->", "<!-- real:end -->"
REAL_MIRRORS = {"language-id": "allow-listed Debian speech, 8 languages", "keyword": "hedgewars voice packs",
                "digits": "asterisk telephone voices, es/fr/it/ru",
                "vad": "speech vs music / effects / tones", "gender": "asterisk and fillets-ng voices"}


def mfcc_stats(wav: np.ndarray) -> np.ndarray:
    """``[N]`` f32 -> ``[78]``: mean and s.d. over frames of 13 MFCC + deltas (no per-utterance normalisation)."""
    x = torch.as_tensor(wav, dtype=torch.float32)
    t = max(1, HubertPretrainModel.frames(len(x)))
    x = torch.nn.functional.pad(x, (0, max(0, (t - 1) * 320 + 400 - len(x))))
    frames = x[: (t - 1) * 320 + 400].unfold(0, 400, 320)
    frames = frames - frames.mean(-1, keepdim=True)
    frames = torch.cat([frames[:, :1], frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1) * torch.hamming_window(400)
    c = torch.log((torch.fft.rfft(frames, n=512).abs() ** 2) @ _FB.t() + 1e-6) @ _DCT.t()  # [T, 13]
    f = torch.cat([c, _deltas(c), _deltas(_deltas(c))], dim=1)
    return torch.cat([f.mean(0), f.std(0, unbiased=False)]).numpy()


def write_tasks(rows: list[dict], cache: Path, out: Path, frac: float, seed: int, only: set[str] | None = None) -> dict:
    """Task manifests under ``out/<task>/manifest.csv`` (``only``: just these tasks' files); returns the descriptions
    (sizes, chance) of every task."""
    split = real_tasks.eval_split(rows, frac, seed)
    rows = real_tasks.segment_long(rows, cache, out.parent / "segments")  # music, long recordings: 5 s pieces
    tasks = real_tasks.make_tasks(rows, split, cache, test_fraction=frac)
    by_path = {str(cache / r["path"]): r for r in rows}  # an absolute row path stays itself
    info = {}
    for name, examples in tasks.items():
        info[name] = real_tasks.describe(examples, by_path)
        if only is not None and name not in only:
            continue
        (out / name).mkdir(parents=True, exist_ok=True)
        M.write_csv(out / name / "manifest.csv", [(e.path, e.label, e.split) for e in examples],
                    header=["path", "label", "split"])
        # beside the manifest, not in it (its digest keys the cached cells): who speaks each test clip
        M.replace_file(out / name / "test_speakers.json", (json.dumps(
            {e.path: real_tasks.speaker_of(by_path[e.path]) if e.path in by_path else "?"
             for e in examples if e.split == "test"}, indent=0) + "\n").encode())
    info["_split"] = {"test_fraction": frac, "seed": seed,
                      "test_speakers": sorted(k for k, v in split.items() if v == "test"),
                      "train_speakers": sorted(k for k, v in split.items() if v == "train")}
    return info


def test_speakers(task_dir: Path) -> list[str]:
    """The speaker (or non-speech group) of each test clip of a task, in manifest order (``test_speakers.json``
    beside the manifest; a task folder written before it existed gives ``?`` for every clip). Raises
    ``FileNotFoundError`` when the folder has no ``manifest.csv``."""
    f = task_dir / "test_speakers.json"
    who = json.loads(f.read_text()) if f.exists() else {}
    return [who.get(e.path, "?") for e in M.read_manifest(task_dir / "manifest.csv") if e.split == "test"]


def by_speaker(cell: dict, bb: Backbone, package: Path, test: dict, speakers: list[str]) -> None:
    """Add ``test_by_speaker`` (``evaluate.accuracy_by_group``) to a variant's ``cell`` from its saved ``package``
    and the task's encoded ``test`` split (units and labels in manifest order, as ``speakers``). A cell that has it
    is left alone; a missing package file, or one that is not the cell's version (another run rewrote it), gives
    ``None`` (recorded, so later runs do not encode the task again for it). Raises ``read_package``'s errors for a
    damaged file and ``EvaluationError`` for a pGSLM backbone without prosody."""
    if "test_by_speaker" in cell:
        return
    pkg = read_package(package.read_bytes()) if package.exists() else None
    if pkg is None or pkg.version != cell.get("version"):
        cell["test_by_speaker"] = None
        return
    probs = predict(bb.unit_lm, pkg, test["units"], prosody=getattr(bb, "prosody", None))
    names = list(pkg.meta.labels)
    cell["test_by_speaker"] = accuracy_by_group(test["labels"], [names[i] for i in probs.argmax(1)], speakers)


def speech_embedding_bundle(new: Backbone | None, fallback: Path) -> Backbone:
    """The bundle whose dense model gives the speech_embedding + LR column: the new backbone when it runs
    speech_embedding (v2-v7), else the bundle at ``fallback`` (``--se-backbone``; a Whisper or HuBERT bundle has
    other features)."""
    if new is not None and getattr(new.spec.encoder, "type", "") == "speech_embedding":
        return new
    return Backbone.load(fallback)


def free_baselines(task_dir: Path, labels: list[str], se_backbone: Backbone) -> dict:
    """MFCC mean/std + LR and speech_embedding (mean-pooled, its own 96 dimensions: a pitch stream after them is left
    out, so the column is the same for a bundle with or without one) + LR on the task's splits."""
    examples = M.read_manifest(task_dir / "manifest.csv")
    data: dict = {}
    se_dims = se_backbone.encoder.convs[-1].out_channels
    with torch.inference_mode():
        for i in range(0, len(examples), 16):
            batch = examples[i:i + 16]
            wavs = [M.load_audio(e.path) for e in batch]
            se = se_backbone.encoder.extract([torch.from_numpy(w) for w in wavs])
            for e, w, f in zip(batch, wavs, se, strict=True):
                d = data.setdefault(e.split, {"labels": [], "mfcc": [], "se": []})
                d["labels"].append(e.label)
                d["mfcc"].append(mfcc_stats(w))
                d["se"].append(f[:, :se_dims].mean(0).numpy())
    for d in data.values():
        d["mfcc"], d["se"] = np.stack(d["mfcc"]), np.stack(d["se"])
    return {"logreg_mfcc": logreg(data, labels, "mfcc", 0), "logreg_speech_embedding": logreg(data, labels, "se", 0)}


def _acc(r: dict | None) -> str:
    return "-" if not r or "test" not in r else f"{r['test']['accuracy']:.3f}"


def render(results: dict, info: dict, meta: dict) -> str:
    cols = ["new default (v2 prompts)", "old default (v2 prompts)", "LR unit hist (new)", "LR unit hist (old)", "MFCC + LR",
            "speech_embedding + LR"]
    lines = [f"Held-out speakers of the allow-listed real speech (`scripts/real_speech_eval.py`, {meta['date']}; new "
             f"default `{meta['new'][:16]}`, old default `{meta['old'][:16]}`). Test accuracy; chance = majority "
             "class of the test split.", "",
             "| task | classes | " + " | ".join(cols) + " | chance | test clips / speakers | train clips / speakers (before twins and TTS) |",
             "|---|---|" + "---|" * (len(cols) + 3)]
    for name, r in results.items():
        i = info[name]
        new, old = r.get("new", {}), r.get("old", {})
        cells = [_acc(new.get("v2")), _acc(old.get("v2")), _acc(new.get("logreg_hist")), _acc(old.get("logreg_hist")),
                 _acc(r.get("logreg_mfcc")), _acc(r.get("logreg_speech_embedding"))]
        lines.append(f"| {name} | {i['classes']} | " + " | ".join(cells) + f" | {i['chance']} | "
                     f"{i['test']['clips']} / {i['test']['speakers']} | {i['train']['clips']} / {i['train']['speakers']} |")
    missing = any("| - |" in line for line in lines[4:])
    lines += ["", ("A `-`: not run (the old default's prompts or unit histograms on that task did not fit the "
                   "session's CPU time; `--columns old` adds them). " if missing else "") +
              "Speakers are the corpus's speaker ids (see above); those of `vad` include the non-speech groups (music, "
              "effects, tones of one package each).",
              "", "Labels: " + "; ".join(f"{n}: {', '.join(info[n]['labels'])}" for n in results), ""]
    return "\n".join(lines)


def made_by(bb: Backbone) -> dict:
    """What a result records of the backbone that made it: its fingerprint, and its units key where that differs
    (a bundle with a level floor has v7's fingerprint but other units)."""
    return {"fingerprint": bb.fingerprint} | ({"units_key": bb.units_key} if bb.units_key != bb.fingerprint else {})


def same_backbone(done: dict, bb: Backbone) -> bool:
    """Whether ``done`` (a result dict, ``made_by``) was computed on ``bb``'s units."""
    return done.get("units_key", done.get("fingerprint")) == bb.units_key


def reusable(done: dict, bb: Backbone) -> dict:
    """The cells of one column that were computed on this backbone's units (``same_backbone``); ``{}`` when the column
    was made on another one (a rebuilt default): every prompt variant and regression is then recomputed."""
    return done if same_backbone(done, bb) else {}


def main() -> None:
    class Fmt(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=Fmt)
    ap.add_argument("--real-cache", type=Path, default=ROOT / ".cache" / "real_corpus",
                    help="the corpus scripts/build_real_corpus.py wrote (manifest.jsonl + wav/)")
    ap.add_argument("--backbone", type=Path, default=ROOT / "models" / "default", help="the new default's bundle")
    ap.add_argument("--old-backbone", type=Path, default=None,
                    help="the previous default (models/default-v1), for its column; without it 'old' is skipped")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "real_eval",
                    help="task manifests, augmented clips, unit caches, packages and results.json")
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md", help="'none': docs untouched")
    ap.add_argument("--store", type=Path, default=ROOT / "prompts_store", help="where --demo packages go")
    ap.add_argument("--demo", default="", help="tasks whose new-backbone v2 package goes to --store")
    ap.add_argument("--tasks", default=",".join(real_tasks.TASK_NAMES), help="comma-separated task names")
    ap.add_argument("--test-fraction", type=float, default=0.3, help="share of speakers held out for test")
    ap.add_argument("--seed", type=int, default=0, help="speaker split and augmentation seed")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--max-epochs", type=int, default=None,
                    help="cap on prompt-training epochs (default: the suite recipe's 60; docs/results.md used 40)")
    ap.add_argument("--twins", type=int, default=1, help="channel-augmented copies of every train clip")
    ap.add_argument("--tts-voices", type=int, default=24,
                    help="TTS voices speaking each keyword / digit word, and per language for gender (every sixth goes to dev)")
    ap.add_argument("--generated-nonspeech", type=int, default=600,
                    help="generated non-speech clips added to vad's training set (nonspeech.generate)")
    for flag, what in (("mixes", "speech clips of a real train voice joined to a real train sound (mixes.py)"),
                       ("dev-mixes", "the same of dev clips, into dev (early stopping)"),
                       ("noise-mixes", "noise clips of two train sounds; with --dev-mixes 1 in 8 more of dev's"),
                       ("cuts", "random 1-2.6 s windows of every real train clip, cut anywhere (training/cuts.py)"),
                       ("noise-variants", "faster / slower / reversed copies of every real train sound "
                                          "(training/sound_variants.py)")):
        ap.add_argument(f"--{flag}", type=int, default=0, help=f"vad: {what}")
    ap.add_argument("--pads", type=int, default=0, help="every task: copies of every real train clip with 0.2-2 s of "
                    "room tone before and after (training/pads.py); give the run its own --work")
    ap.add_argument("--columns", default="new,old", help="backbones to (re)run now: new, old or new,old")
    ap.add_argument("--se-backbone", type=Path, default=ROOT / "models" / "default",
                    help="a bundle with the speech_embedding dense model, for that baseline when 'new' is not run or has "
                    "another dense model")
    ap.add_argument("--variants", default="v2", help="prompt variants on the new backbone ('' = baselines only)")
    ap.add_argument("--old-variants", default="v2", help="prompt variants on the old backbone ('' = baselines only)")
    ap.add_argument("--force", action="store_true", help="recompute tasks already in results.json")
    ap.add_argument("--unit-view", choices=("units", "clusters", "auto"), default="units",
                    help="units: the units as they are (the recipe); on a product codebook, clusters: train each "
                    "variant on the clusters view; auto: on both, keep the dev winner (run_suite.run_task)")
    ap.add_argument("--draw", type=int, default=0, help="N > 0: another draw of the training augmentation (twins, TTS "
                    "voices, generated and varied non-speech, mixes: seed + N) and of the prompts' seed (N); speaker split and "
                    "test clips unchanged; needs its own --work")
    a = ap.parse_args()
    if a.draw and a.work == ap.get_default("work"):
        ap.error("--draw: give the draw its own --work (twins are cached by clip, not by draw)")
    columns = {c for c in a.columns.split(",") if c}
    if not columns <= {"new", "old"}:
        ap.error(f"--columns: {a.columns!r}; accepted: new, old or new,old")
    unknown = set(a.tasks.split(",")) - set(real_tasks.TASK_NAMES)
    if unknown:
        ap.error(f"--tasks: unknown {sorted(unknown)}; accepted: {', '.join(real_tasks.TASK_NAMES)}")
    if "old" in columns and not a.old_backbone:
        say("old column skipped: no --old-backbone given")
    a.work, a.real_cache = a.work.resolve(), a.real_cache.resolve()  # manifests hold absolute paths
    torch.set_num_threads(a.threads)
    rows = real_corpus.read_manifest(a.real_cache / "manifest.jsonl")
    task_root = a.work / "tasks"
    wanted = set(a.tasks.split(","))
    info = write_tasks(rows, a.real_cache, task_root, a.test_fraction, a.seed, wanted)
    for name in [t for t in info if t in wanted]:
        info[name]["train_added"] = augment_train(task_root / name, a.work / "aug", a.twins, a.tts_voices, a.seed + a.draw,
                                                  a.generated_nonspeech, a.cuts, a.mixes, a.dev_mixes, a.noise_mixes,
                                                  a.noise_variants, a.pads)
    a.work.mkdir(parents=True, exist_ok=True)
    M.replace_file(a.work / "tasks.json", (json.dumps(info, indent=1) + "\n").encode())
    res_file = a.work / "results.json"
    results = json.loads(res_file.read_text()) if res_file.exists() and not a.force else {}

    def write_results(current: dict) -> None:  # a new file each time (manifest.replace_file)
        M.replace_file(res_file, (json.dumps(current, indent=1) + "\n").encode())

    def save(name: str) -> None:  # merge this task into the file: runs of other tasks may write it meanwhile
        current = json.loads(res_file.read_text()) if res_file.exists() else {}
        current.setdefault(name, {}).update(results[name])  # keeps the other run's column of this task
        write_results(current)

    backbones = {}
    if "new" in columns:
        backbones["new"] = Backbone.load(a.backbone)
    if a.old_backbone and "old" in columns:
        backbones["old"] = Backbone.load(a.old_backbone)
    se_backbone = speech_embedding_bundle(backbones.get("new"), a.se_backbone)
    for name in [t for t in a.tasks.split(",") if t in info]:
        labels = info[name]["labels"]
        r = results.setdefault(name, {})
        digest = M.manifest_digest(task_root / name / "manifest.csv")
        current = json.loads(res_file.read_text()) if res_file.exists() else {}
        if current.get(name, {}).get("digest") not in (None, digest):  # the task's data changed: all cells stale
            del current[name]  # (in the file too: save() merges)
            write_results(current)
        r.clear()
        r.update(current.get(name, {}), digest=digest)  # what other runs already wrote for this task
        for key, bb in backbones.items():
            variants = [v for v in (a.variants if key == "new" else a.old_variants).split(",") if v]
            done = reusable(r.get(key, {}), bb)
            mode = views_of(bb, a.unit_view)[0]
            if "logreg_hist" in done and all("test_by_speaker" in done.get(v, {}) and ran_with(done[v], mode)
                                             for v in variants):
                continue
            t0 = time.perf_counter()
            data = encode_task(bb, task_root / name, a.work / "units" / digest)
            say(f"{name} [{key}]: encoded in {time.perf_counter() - t0:.0f}s")
            r[key] = run_task(bb, name, data, a.work / key, variants, a.work / key / "curves", done, a.max_epochs,
                              labels=labels, probes=False, mirrors=f"real speech ({REAL_MIRRORS[name]})",
                              seed=a.draw or None, unit_view=a.unit_view)
            r[key] |= made_by(bb)
            speakers = test_speakers(task_root / name)
            for v in variants:
                by_speaker(r[key][v], bb, a.work / key / "packages" / f"{name}.{v}.safetensors", data["test"],
                           speakers)
                if r[key][v]["test_by_speaker"]:
                    say(f"  {name} {v} by test speaker: " + ", ".join(
                        f"{g} {c['correct']}/{c['n']}" for g, c in r[key][v]["test_by_speaker"].items()))
            save(name)
        if "logreg_mfcc" not in r:
            r |= free_baselines(task_root / name, labels, se_backbone)
            save(name)
        say(f"{name}: " + ", ".join(f"{k} {_acc(v.get('v2') if k in backbones else v)}" for k, v in r.items()
                                    if isinstance(v, dict)))
    results = json.loads(res_file.read_text()) if res_file.exists() else results  # every task, from all runs
    fps = {k: next((r[k]["fingerprint"] for r in results.values() if k in r), "-") for k in ("new", "old")}
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), **fps}
    shown = {n: results[n] for n in real_tasks.TASK_NAMES if n in results}
    if str(a.results) != "none":
        replace_block(a.results, BEGIN, END, render(shown, info, meta))
        (a.results.parent / "results" / "real_tasks.json").write_text(json.dumps(info, indent=1) + "\n")
    for name in [d for d in a.demo.split(",") if d in results and "v2" in results[d].get("new", {})]:
        install_demo(a.store, name, results[name]["new"]["v2"]["version"],
                     (a.work / "new" / "packages" / f"{name}.v2.safetensors").read_bytes())

if __name__ == "__main__":
    main()

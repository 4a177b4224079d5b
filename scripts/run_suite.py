#!/usr/bin/env python
"""Train and evaluate every task of the synthetic suite on one backbone; write docs/results.md + demo packages.

    python scripts/run_suite.py --suite .cache/suite --backbone models/default \
        --demo commands-en,intent,language-id,vad

Per task: units + mean-pooled encoder features of every clip (one encoder pass, cached under --work), then
(1) v2: deep prompts + separator + learnable verbalizer, (2) v1-style fixed verbalizer (labels -> frequent units),
(3) the learnable verbalizer alone (no prompts), all with the one ``trainer.Recipe`` (``--variants`` picks some;
``v2_mean``, v2 read from the mean hidden state, and ``v2_auto``, v2 trained with both read-outs and the dev
split's pick kept, run only when named);
(4) logistic regression on unit histograms and (5) on mean-pooled encoder features (scikit-learn defaults, no
tuning). Prompt variants are scored through the serving path (``PromptBank``). Results go to
``--work/<fingerprint[:16]>/results.json`` (tasks already there are skipped unless --force) and into docs/results.md
between the ``results:begin/end`` markers (``--results none``: docs untouched, curves under --work).

A pGSLM bundle as ``--backbone``: the cache also holds durations, per-unit F0 and each clip's F0 statistics (YAAPT
once per clip, in ``--jobs`` processes); prompts train on the three-stream rows (``PGSLMPromptBank`` serves them),
the probes read the pGSLM, and (6) a logistic regression on simple prosody features (F0 level / spread / slope,
speaking rate, durations; ``prosody_features``) is added as the baseline for prosody tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.backbone import Backbone  # noqa: E402
from speechprompt.codebook import dedup  # noqa: E402
from speechprompt.training import manifest as M  # noqa: E402
from speechprompt.training.choose import train_best_readout, train_best_unit_view  # noqa: E402
from speechprompt.training.evaluate import attach_metrics, compute_metrics, evaluate_package, plot_curves  # noqa: E402
from speechprompt.training.lm_rows import row_builder  # noqa: E402
from speechprompt.training.markers import replace_block  # noqa: E402
from speechprompt.training.prosody_units import extract_prosody, from_arrays, to_arrays  # noqa: E402
from speechprompt.training.suite import TASKS  # noqa: E402
from speechprompt.training.trainer import Recipe, train_prompts  # noqa: E402
from speechprompt.unit_views import UnitView  # noqa: E402
from speechprompt.units import Units, with_prefix  # noqa: E402

VARIANTS = {"v2": Recipe(), "v1_fixed": Recipe(verbalizer="fixed"), "verbalizer_only": Recipe(deep_prompts=False),
            "v2_mean": Recipe(readout="mean"),  # v2 with the label read from the mean hidden state (prompting.py)
            "v2_auto": Recipe()}  # v2 trained with each read-out, the dev split keeps one (choose.train_best_readout)
TEST_SPLITS = ("test", "test_seen", "test_engine")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def say(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def _encode(bb: Backbone, examples: list, jobs: int) -> dict[str, np.ndarray]:
    """One encoder pass over the clips (+ YAAPT for pGSLM) -> the arrays of a task cache (see :func:`encode_task`)."""
    items, feats, wavs = [], [], []
    with torch.inference_mode():
        for i in range(0, len(examples), 16):
            batch = [M.load_audio(e.path) for e in examples[i : i + 16]]
            wavs_t = [torch.from_numpy(w) for w in batch]
            if bb.voice is not None and bb.voice.cfg.reads_encoder:  # frames and voice vectors from one encoder pass, as UnitExtractor
                frames, vectors = bb.encoder.extract_with_means(wavs_t, bb.voice.cfg.layer)
                prefix = bb.voice.codes(vectors) + bb.codebook.vocab_size
            else:
                frames, prefix = bb.encoder.extract(wavs_t), None
                if bb.voice is not None:  # a voice read from the waveform (ge2e)
                    prefix = bb.voice.prefix(bb.encoder, wavs_t) + bb.codebook.vocab_size
            for j, f in enumerate(frames):  # [T, D], same path as UnitExtractor
                u, dur = dedup(bb.codebook.quantize(f).cpu())
                if prefix is not None:
                    u, dur = with_prefix(u, dur, prefix[j])
                items.append(Units(u, dur, int(dur.sum())))
                feats.append(f.mean(0).cpu().numpy())
            if bb.spec.kind == "pgslm":
                wavs += batch
    if bb.spec.kind == "pgslm":
        t0 = time.perf_counter()
        items = extract_prosody(bb.prosody, wavs, items, jobs)
        secs = sum(len(w) for w in wavs) / 16000
        say(f"  YAAPT: {secs:.0f} s of audio in {time.perf_counter() - t0:.0f} s wall ({jobs} processes)")
    arrays = [to_arrays(x) for x in items]
    out = {k: np.concatenate([a[k] for a in arrays]) for k in ("units", "durations")}
    out |= {"lens": np.array([len(a["units"]) for a in arrays]), "feats": np.stack(feats)}
    if bb.spec.kind == "pgslm":
        out |= {"f0": np.concatenate([a["f0"] for a in arrays]), "f0_stats": np.stack([a["f0_stats"] for a in arrays])}
    return out


def encode_task(bb: Backbone, task_dir: Path, work: Path, jobs: int = 2) -> dict:
    """``{split: {"units": [...], "feats": [N, D] f32, "labels": [str]}}`` (cached npz per task and fingerprint).

    ``units``: unit tensors ``[M]`` i64 (GSLM) or ``ProsodyUnits`` (pGSLM: durations, per-unit F0 and the clip's
    F0 statistics are cached too; YAAPT runs in ``jobs`` processes, once per clip).
    """
    cache = work / bb.units_key[:16] / f"{task_dir.name}.npz"
    examples = M.read_manifest(task_dir / "manifest.csv")
    pgslm = bb.spec.kind == "pgslm"
    if cache.exists():
        with np.load(cache) as z:
            z = {k: z[k] for k in z.files}
    if not cache.exists() or (pgslm and "f0" not in z):
        z = _encode(bb, examples, jobs)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **z)
    offs = np.concatenate([[0], np.cumsum(z["lens"])])
    out: dict = {}
    for i, e in enumerate(examples):
        d = out.setdefault(e.split, {"units": [], "feats": [], "labels": []})
        sl = slice(offs[i], offs[i + 1])
        if pgslm:
            d["units"].append(from_arrays(z["units"][sl], z["durations"][sl], z["f0"][sl], z["f0_stats"][i]))
        else:
            d["units"].append(torch.from_numpy(z["units"][sl].astype(np.int64)))
        d["feats"].append(z["feats"][i])
        d["labels"].append(e.label)
    for d in out.values():
        d["feats"] = np.stack(d["feats"]).astype(np.float32)
        if pgslm:
            d["prosody"] = prosody_features(d["units"])
    return out


def histograms(units: list, k: int) -> np.ndarray:
    """Normalised unit counts ``[N, K]`` (bag of deduplicated units; tensors or ``Units``)."""
    h = np.stack([np.bincount((u.units if isinstance(u, Units) else u).numpy(), minlength=k)[:k]
                  for u in units]).astype(np.float32)
    return h / np.maximum(h.sum(1, keepdims=True), 1)


def prosody_features(items: list) -> np.ndarray:
    """``[N, 10]`` simple prosody features per clip from its ``ProsodyUnits`` (20 ms unit frames):
    mean and s.d. of log-F0 over voiced frames (clip statistics), p90/p10 log-ratio and least-squares slope
    (per second) of the voiced segment log-F0, voiced share of the units; rate: units per second, mean and s.d. of
    log run length, voiced runs (~syllable nuclei) per second of the voiced span, log length of that span (first to
    last voiced unit). Unvoiced clips get zeros for the F0 features."""
    rows = []
    for p in items:
        st, f0, d = p.f0_stats, p.f0.numpy(), p.durations.numpy().astype(np.float64)
        secs = max(float(d.sum()) * 0.02, 1e-3)
        v = f0 > 0
        end = np.cumsum(d) * 0.02
        t = (end - d * 0.01)[v]
        lf = np.log(f0[v]) if v.any() else np.zeros(0)
        sm = st.summary() if st.n else None
        slope = float(np.polyfit(t, lf, 1)[0]) if v.sum() > 1 else 0.0
        spread = float(np.percentile(lf, 90) - np.percentile(lf, 10)) if v.any() else 0.0
        span = float(t[-1] - t[0]) + 0.02 if v.any() else 0.02
        onsets = int(v[0]) + int((v[1:] & ~v[:-1]).sum()) if len(v) else 0
        rows.append([sm.logf0_mean if sm else 0.0, sm.logf0_std if sm else 0.0, spread, slope, float(v.mean()),
                     len(d) / secs, float(np.log(d).mean()), float(np.log(d).std()), onsets / span, np.log(span)])
    return np.nan_to_num(np.array(rows, dtype=np.float32))


def logreg(data: dict, labels: list[str], key: str, k: int) -> dict:
    """Logistic regression (scikit-learn defaults, standardized inputs) on train, scored on the test splits.

    ``key``: ``hist`` (unit histograms), ``feats`` (mean-pooled encoder features) or a per-split array in
    ``data[split][key]`` (the LM probes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    idx = {lab: i for i, lab in enumerate(labels)}
    X = (lambda d: histograms(d["units"], k)) if key == "hist" else (lambda d: d[key])
    t0 = time.perf_counter()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(X(data["train"]), [idx[x] for x in data["train"]["labels"]])
    res = {"seconds": round(time.perf_counter() - t0, 2), "params": int(clf[-1].coef_.size + clf[-1].intercept_.size)}
    for s in TEST_SPLITS:
        if s in data:
            p = clf.predict_proba(X(data[s]))
            res[s] = compute_metrics([idx[x] for x in data[s]["labels"]], p.argmax(1).tolist(), labels, p)
    return res


@torch.no_grad()
def lm_probes(bb: Backbone, data: dict, labels: list[str]) -> dict:
    """Where is the task information? LR on the frozen unit LM's hidden state at the separator (no prompts,
    the LM's own ``<s>``; pGSLM: ``</s>``) and on its hidden states averaged over all positions."""
    rows_of = row_builder(bb.unit_lm, bb.prosody)
    sep = bb.unit_lm.embed_tokens.weight[rows_of.sep_token]
    for d in data.values():
        last, mean = [], []
        for i in range(0, len(d["units"]), 64):
            rows = rows_of.build(d["units"][i : i + 64])
            h = rows_of.hidden(rows, sep.expand(rows.tokens.shape[0], -1))  # [B, T, d]
            last.append(h[torch.arange(len(rows.last)), rows.last])
            m = rows.tokens.ne(rows_of.pad).float().unsqueeze(-1)
            mean.append((h * m).sum(1) / m.sum(1))
        d["lm_last"], d["lm_mean"] = torch.cat(last).numpy(), torch.cat(mean).numpy()
    return {f"probe_{k}": logreg(data, labels, k, 0) for k in ("lm_last", "lm_mean")}


def views_of(bb: Backbone, unit_view: str) -> tuple[str, UnitView | None]:
    """What ``run_task`` runs for a ``--unit-view`` of ``units`` / ``clusters`` / ``auto``: ``(mode, view)``, where
    ``mode`` is what a cell records (``units`` wherever the bundle has no product codebook or is not GSLM: nothing to
    fold) and ``view`` the clusters view to train on or choose against (None for ``units``)."""
    view = UnitView.of_codebook(bb.codebook) if unit_view != "units" and bb.spec.kind == "gslm" else None
    return (unit_view, view) if view is not None else ("units", None)


def ran_with(cell: dict, mode: str) -> bool:
    """Whether a variant's result ``cell`` was trained with the unit-view ``mode`` (:func:`views_of`; cells made
    before views existed read the units)."""
    return cell.get("unit_views", "units") == mode


def run_task(bb: Backbone, name: str, data: dict, work: Path, variants: list[str], curves: Path,
             out: dict | None = None, max_epochs: int | None = None, labels: list[str] | None = None,
             probes: bool = True, mirrors: str | None = None, seed: int | None = None,
             unit_view: str = "units") -> dict:
    """Train/score the missing ``variants`` and baselines of one task (``out``: its results so far).

    ``max_epochs``: the recipe's epoch cap for larger suites (default: the recipe's 60; early stopping still decides).
    ``labels``: the classes (default: the suite task's); ``probes``: also run the LM probes; ``mirrors``: what the
    task stands for, recorded in the package (default: the suite task's ``mirrors``); ``seed``: the prompt training
    seed (default: the recipe's; other seeds measure how much a cell moves with the initialisation and batch order).
    ``unit_view``: ``units`` (every clip's units as they are: the recipe), ``clusters`` (on a product codebook, each
    variant trains on the clusters view, ``unit_views.py``) or ``auto`` (each variant trains on both and keeps the dev
    winner, ``choose.train_best_unit_view``); measured in docs/results.md, "The clusters view". A cell records the
    choice it ran (``unit_views``) and is retrained when another is asked for.
    """
    labels = list(labels or TASKS[name].labels)
    idx = {lab: i for i, lab in enumerate(labels)}
    tr, dv = data["train"], data["dev"]
    out = {**(out or {}), "classes": len(labels), "sizes": {s: len(d["labels"]) for s, d in data.items()}}
    mode, view = views_of(bb, unit_view)
    for variant in [v for v in variants if v not in out or not ran_with(out[v], mode)]:
        recipe = VARIANTS[variant] if max_epochs is None else replace(VARIANTS[variant], max_epochs=max_epochs)
        recipe = recipe if seed is None else replace(recipe, seed=seed)
        if variant == "v2_auto" and mode == "auto":
            raise ValueError("v2_auto picks the read-out on dev; with --unit-view auto pick one thing at a time")
        fit = (train_best_unit_view, {"view": view}) if mode == "auto" else \
            (train_best_readout if variant == "v2_auto" else train_prompts, {"unit_view": view})
        res = fit[0](bb.unit_lm, name, labels, (tr["units"], [idx[x] for x in tr["labels"]]),
                     (dv["units"], [idx[x] for x in dv["labels"]]), fingerprint=bb.fingerprint, kind=bb.spec.kind,
                     prosody=bb.prosody, recipe=recipe, **fit[1],
                     extra_meta={"data_sizes": out["sizes"], "backbone_name": bb.spec.name,
                                 "suite_task": mirrors or TASKS[name].mirrors})
        metrics = {s: evaluate_package(bb, res.package, data[s]["units"], data[s]["labels"])
                   for s in TEST_SPLITS if s in data}
        pkg = attach_metrics(res.package, metrics)
        (work / "packages").mkdir(parents=True, exist_ok=True)
        (work / "packages" / f"{name}.{variant}.safetensors").write_bytes(pkg.data)
        if variant == "v2":
            curves.mkdir(parents=True, exist_ok=True)
            plot_curves(res.history, curves / f"curves-{name}.png", f"{name} (v2)")
        out[variant] = {"params": res.trainable_params, "seconds": round(res.seconds, 1), "epochs": len(
            res.history["epoch"]), "best_epoch": res.best_epoch, "steps": len(res.history["step"]),
            "max_epochs": recipe.max_epochs, "seed": recipe.seed, "dev": res.dev, "version": pkg.version,
            "unit_views": mode, "unit_view": "clusters" if pkg.meta.view else "units",
            **({"unit_view_selection": pkg.meta.training["unit_view_selection"]} if mode == "auto" else {}),
            **({"readout": pkg.meta.readout} if variant == "v2_auto" else {}), **metrics}
        test = f", test acc {metrics['test']['accuracy']:.3f}" if "test" in metrics else ""  # none: every clip trains
        chosen = f", {out[variant]['unit_view']} view" if view is not None else ""
        say(f"  {name} {variant}: {res.seconds:.0f}s, {out[variant]['steps']} steps, dev acc "
            f"{res.dev['accuracy']:.3f}{test}{chosen}")
    for key in ("hist", "feats") + (("prosody",) if "prosody" in tr else ()):
        if f"logreg_{key}" not in out:
            out[f"logreg_{key}"] = logreg(data, labels, key, bb.num_units)
    return out if "probe_lm_last" in out or not probes else out | lm_probes(bb, data, labels)


def _cell(r: dict | None, split: str, eer: bool) -> str:
    if not r or split not in r:
        return "–"
    m = r[split]
    return f"{m['eer']:.3f}" if eer and "eer" in m else f"{m['accuracy']:.3f}"


def render(results: dict, meta: dict) -> str:
    cols = ["v2", "v1_fixed", "verbalizer_only", "logreg_hist", "logreg_feats"]
    head = "| v2 (learnable) | v1 fixed | verbalizer only | LR unit hist | LR mean feats |"
    if any("logreg_prosody" in r for r in results.values()):  # pGSLM runs: the prosody-feature baseline too
        cols, head = cols + ["logreg_prosody"], head + " LR prosody feats |"
    lines = [f"Backbone `{meta['backbone']}` (fingerprint `{meta['fingerprint'][:16]}`), suite seed {meta['seed']}, "
             f"{meta['date']}, {meta['threads']} CPU thread(s). Accuracy; **EER** (lower is better) for `vad`.", ""]
    for split, title in (("test", "Test: unseen voices and accents (held out from train and from the backbone)"),
                         ("test_seen", "Test: seen voices (new clips)"),
                         ("test_engine", "Test: unseen TTS engine (flite; English tasks only)")):
        lines += [f"### {title}", "", "| task | classes | " + head[2:], "|---" * (len(cols) + 2) + "|"]
        for name, r in results.items():
            eer = TASKS[name].metric == "eer"
            cells = " | ".join(_cell(r.get(c), split, eer) for c in cols)
            lines.append(f"| {name}{' (EER)' if eer else ''} | {r['classes']} | {cells} |")
        lines.append("")
    lines += ["### Probes: where is the task information? (test split, unseen voices)", "",
              "| task | v2 | LR on LM state at the separator | LR on LM states, mean over positions | "
              "LR unit hist |", "|---|---|---|---|---|"]
    for name, r in results.items():
        eer = TASKS[name].metric == "eer"
        lines.append(f"| {name} | " + " | ".join(_cell(r.get(c), "test", eer) for c in (
            "v2", "probe_lm_last", "probe_lm_mean", "logreg_hist")) + " |")
    lines += ["", "### Size and cost", "", "| task | train / dev clips | v2 params | v1 params | verbalizer-only params | "
              "v2 train s (epochs) | v1 train s | verbalizer-only s |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s, v = r["sizes"], {k: r.get(k) or {} for k in VARIANTS}
        params = " | ".join(f"{v[k]['params']:,}" if v[k] else "–" for k in VARIANTS)
        secs = [str(v[k].get("seconds", "–")) for k in VARIANTS]
        epochs = f" ({v['v2']['epochs']})" if v["v2"] else ""
        lines.append(f"| {name} | {s['train']} / {s['dev']} | {params} | {secs[0]}{epochs} | {secs[1]} | {secs[2]} |")
    total = sum(r[v]["seconds"] for r in results.values() for v in VARIANTS if v in r)
    lines += ["", f"Total prompt training time: {total / 60:.1f} min.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", type=Path, default=ROOT / ".cache" / "suite")
    ap.add_argument("--backbone", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "suite_runs")
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md",
                    help="markdown file to write the tables into; 'none': leave docs untouched")
    ap.add_argument("--store", type=Path, default=ROOT / "prompts_store")
    ap.add_argument("--tasks", default="", help="comma list (default: every task in the suite folder)")
    ap.add_argument("--demo", default="commands-lt,language-id,gender,vad",
                    help="tasks whose v2 packages are copied to --store ('' for none; the committed commands-en "
                         "comes from the 32x suite: docs/results.md, 'More training clips')")
    ap.add_argument("--variants", default="v2,v1_fixed,verbalizer_only", help=f"comma list of prompt variants of {list(VARIANTS)}")
    ap.add_argument("--jobs", type=int, default=2, help="processes for YAAPT (pGSLM backbones)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-epochs", type=int, default=None,
                    help="epoch cap of the prompt variants (default: the recipe's; for larger --scale suites)")
    ap.add_argument("--force", action="store_true", help="re-run tasks already in results.json")
    ap.add_argument("--prompt-seed", type=int, default=None,
                    help="prompt training seed (default: the recipe's 100501); use another --work per seed")
    ap.add_argument("--unit-view", choices=("units", "clusters", "auto"), default="units",
                    help="units: the units as they are (the recipe); on a product codebook, clusters: train each "
                    "variant on the clusters view; auto: on both, keep the dev winner (docs/results.md, 'The clusters "
                    "view')")
    a = ap.parse_args()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    if set(variants) - set(VARIANTS):
        ap.error(f"unknown variants {sorted(set(variants) - set(VARIANTS))}; choose from {list(VARIANTS)}")
    docs = str(a.results) != "none"
    torch.set_num_threads(a.threads)
    bb = Backbone.load(a.backbone)
    work = a.work / bb.units_key[:16]
    res_file = work / "results.json"
    results = json.loads(res_file.read_text()) if res_file.exists() and not a.force else {}
    names = [t for t in (a.tasks.split(",") if a.tasks else TASKS) if (a.suite / t / "manifest.csv").exists()]
    baselines = ["logreg_hist", "logreg_feats", "probe_lm_last"] + (["logreg_prosody"] if bb.spec.kind == "pgslm" else [])
    mode = views_of(bb, a.unit_view)[0]
    for name in names:
        done = results.get(name, {})
        if all(k in done for k in variants + baselines) and all(ran_with(done[v], mode) for v in variants):
            continue
        t0 = time.perf_counter()
        data = encode_task(bb, a.suite / name, a.work, a.jobs)
        say(f"{name}: encoded in {time.perf_counter() - t0:.0f}s")
        curves = ROOT / "docs" / "results" if docs else work / "curves"
        results[name] = run_task(bb, name, data, work, variants, curves, results.get(name), a.max_epochs,
                                 seed=a.prompt_seed, unit_view=a.unit_view)
        res_file.parent.mkdir(parents=True, exist_ok=True)
        res_file.write_text(json.dumps(results, indent=1) + "\n")
    results = {n: results[n] for n in TASKS if n in results}
    if not docs:
        say(f"results: {res_file} (docs untouched)")
    seed = json.loads((a.suite / "suite.json").read_text()).get("seed", 0) if (a.suite / "suite.json").exists() else 0
    meta = {"backbone": bb.spec.name, "fingerprint": bb.fingerprint, "seed": seed, "threads": a.threads,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    if docs:
        replace_block(a.results, BEGIN, END, render(results, meta))
    for name in [d for d in a.demo.split(",") if d in results and "v2" in results[d]]:
        install_demo(a.store, name, results[name]["v2"]["version"],
                     (work / "packages" / f"{name}.v2.safetensors").read_bytes())


def install_demo(store: Path, name: str, version: str, data: bytes) -> None:
    """Make ``data`` (a package whose version is ``version``) the only version of ``name`` in a file store."""
    folder = store / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.safetensors"):  # the store keeps only the demo version
        if old.stem != version:
            old.unlink()
    (folder / f"{version}.safetensors").write_bytes(data)
    (folder / "CURRENT.tmp").write_text(version + "\n")
    os.replace(folder / "CURRENT.tmp", folder / "CURRENT")
    say(f"demo package {name} {version} -> {folder}")

if __name__ == "__main__":
    main()

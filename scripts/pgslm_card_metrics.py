"""Recompute the default pGSLM's model-card figures (per-stream validation losses, GSLM comparison, prosody usage).

    python scripts/pgslm_card_metrics.py                 # full run: writes docs/pgslm_card_metrics.json,
                                                         # docs/img/pgslm_*.png and the card's metrics block
    python scripts/pgslm_card_metrics.py --check 3       # recompute 3 items of each set, compare with the JSON
    python scripts/pgslm_card_metrics.py --render-only   # figures and card block from the stored JSON + build log

Everything is recomputed from the committed bundles (``models/pgslm-default`` and, for the comparison, the GSLM bundle
``models/default-v1`` whose encoder and codebook it shares) and the deterministic synthesized eval set of
``scripts/model_card_metrics.py`` (``ppl_specs``: corpus validation utterances, ``corpus.is_valid``, never trained on;
English sentences by held-out voices):
- per utterance, teacher-forced on pGSLM's own batch (``pgslm_train.speech_ulm_batch``, one clip at a time, prosody
  from ``Runtime``'s extractor, utterance-mean F0): summed NLL (nats), scored targets and argmax hits of the token,
  duration and F0 streams; and the GSLM unit LM's summed NLL on the same units (token perplexity without prosody);
- duration / F0-bin usage of the model inputs on the corpus validation utterances;
- the known clip's units, durations and F0 bins (``tests/test_default_pgslm.py`` checks a fresh extraction).
Per-item values are stored, so ``--check`` can recompute a few and compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.backbone import Backbone  # noqa: E402
from speechprompt.runtime import Runtime  # noqa: E402
from speechprompt.training import backbone_metrics as bm  # noqa: E402
from speechprompt.training import corpus as corpus_mod  # noqa: E402
from speechprompt.training.build_pgslm import stream_usage  # noqa: E402
from speechprompt.training.pgslm_train import STREAMS, speech_ulm_batch, speech_ulm_losses  # noqa: E402

BEGIN = "<!-- pgslm-metrics:begin (scripts/pgslm_card_metrics.py writes this block) -->"
END = "<!-- pgslm-metrics:end -->"
FIELDS = ("nll", "targets", "correct")


def _gslm_card():
    """``scripts/model_card_metrics.py`` (eval set, item keys, known clip are shared with the GSLM card)."""
    spec = importlib.util.spec_from_file_location("model_card_metrics", ROOT / "scripts" / "model_card_metrics.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mc = _gslm_card()


@torch.no_grad()
def item_metrics(rt: Runtime, gslm: Backbone, wav) -> tuple[dict, object]:
    """One clip -> ({stream: [nll, targets, correct]} for the pGSLM + ``"gslm": [nll, targets]``, ProsodyUnits)."""
    bb = rt.backbone
    pu = rt.extract_units([wav])[0]
    terms = speech_ulm_losses(bb.unit_lm, speech_ulm_batch([pu], bb.prosody, bb.unit_lm.streams))
    out = {s: [round(float(terms[f"{s}_loss"]), 5), int(terms[f"{s}_n"]), int(terms[f"{s}_correct"])]
           for s in STREAMS}
    nll, n = bm.unit_lm_nll(gslm.unit_lm, [pu.units], gslm.unit_to_token)[0]
    out["gslm"] = [round(nll, 5), n]
    return out, pu


def compute(bundle: Path, gslm_bundle: Path, limit: int | None = None) -> dict:
    """All per-item metrics; ``limit`` keeps only the first items of each set (for ``--check``)."""
    torch.set_num_threads(2)
    rt, gslm = Runtime.load(bundle), Backbone.load(gslm_bundle)
    out = {"bundle_fingerprint": rt.fingerprint, "gslm_fingerprint": gslm.fingerprint, "seed": mc.SEED, "items": {}}
    valid_units = []
    for name, specs in mc.ppl_specs().items():
        specs = specs[:limit] if limit else specs
        audio = corpus_mod.synthesize_corpus(specs, mc.SEED, jobs=1).clean
        out["items"][name] = {}
        for spec, wav in zip(specs, audio):
            out["items"][name][mc.item_key(spec)], pu = item_metrics(rt, gslm, wav)
            if name == "corpus_valid":
                valid_units.append(pu)
    out["usage_valid"] = stream_usage(valid_units, rt.backbone.prosody)
    wav = next(iter(corpus_mod.synthesize_words([mc.KNOWN_CLIP["text"]], [tuple(mc.KNOWN_CLIP["voice"])]).values()))
    pu = rt.extract_units([wav])[0]
    out["known_clip"] = {**mc.KNOWN_CLIP, "units": pu.units.tolist(), "durations": pu.durations.tolist(),
                         "f0_bins": rt.backbone.prosody.f0_values(pu).tolist(),
                         "f0_hz": [round(float(x), 2) for x in pu.f0]}
    return out


def summary(m: dict) -> dict:
    """Per eval set: utterances; per stream mean NLL per target, accuracy, targets; token perplexity of the pGSLM
    and of the GSLM unit LM on the same units."""
    s = {}
    for name, items in m["items"].items():
        v = list(items.values())
        row = {"utterances": len(v)}
        for st in STREAMS:
            nll, n, hit = (sum(x[st][i] for x in v) for i in range(3))
            row[st] = {"loss": round(nll / n, 4), "acc": round(hit / n, 4), "targets": n}
        row["token_ppl"] = round(math.exp(row["token"]["loss"]), 3)
        g_nll, g_n = sum(x["gslm"][0] for x in v), sum(x["gslm"][1] for x in v)
        row["gslm_token_ppl"] = round(math.exp(g_nll / g_n), 3)
        s[name] = row
    return s


def _pct(counts: list[int]) -> list[float]:
    total = sum(counts) or 1
    return [100 * c / total for c in counts]


def render_block(m: dict, log: dict) -> str:
    """Markdown of the card's metrics block (numbers only from the metrics JSON and the build log)."""
    s, c, p, f, t = summary(m), log["corpus"], log["parameters"], log["final"], log["training"]
    w = log["config"]["loss_weights"]
    lines = [BEGIN, "", f"Bundle fingerprint: `{m['bundle_fingerprint']}`  ", f"Reused encoder and codebook: those "
             f"of `{log['source_bundle']['name']}` (fingerprint `{log['source_bundle']['fingerprint']}`), byte-identical "
             f"files: `encoder.safetensors` sha256 `{log['source_files']['encoder.safetensors'][:16]}...`, "
             f"`codebook.safetensors` sha256 `{log['source_files']['codebook.safetensors'][:16]}...`", "",
             "| corpus | value |", "|---|---|",
             f"| training speech | {c['train_seconds'] / 3600:.2f} h, {c['clips']} clips ({c['train_utterances']} "
             f"utterances, {c['words']} words, {c['distinct_voices']} voice settings) |",
             f"| validation speech (held out from training) | {c['valid_seconds'] / 60:.1f} min "
             f"({c['valid_utterances']} utterances) |",
             *mc.minutes_rows(c),
             f"| YAAPT | {log['yaapt']['clips']} clips, {log['yaapt']['failed']} failed, "
             f"{log['yaapt']['unvoiced_clips']} without a voiced frame; {log['yaapt']['voiced_frames']:,} voiced "
             f"5 ms frames for the F0 bins |",
             "", "| model | value |", "|---|---|",
             f"| multi-stream unit LM parameters | {p['unit_lm']:,} ({log['config']['layers']} layers, "
             f"d={log['config']['embed_dim']}, {log['config']['heads']} heads, FFN {log['config']['ffn_dim']}) |",
             f"| encoder parameters (reused) / codebook | {p['encoder']:,} / {p['codebook'] // 100} dims x 100 units |",
             f"| bundle size (all files) | {log['bundle_bytes'] / 2**20:.2f} MiB |",
             f"| build time (2 shared CPU cores) | {log['total_s'] / 60:.1f} min (" + ", ".join(
                 f"{k} {v / 60:.1f}" for k, v in log["timings_s"].items()) + " min; load average "
             f"{log['load_average']['start'][0]:.1f} at start, {log['load_average']['end'][0]:.1f} at end) |",
             f"| loss weights (token; duration; F0) | {w[0]}; {w[1]}; {w[2]} |",
             f"| epochs / best epoch | {len(t['epoch'])} / {t['best_epoch']} |",
             "", "F0 bin edges (mean-normalised log-F0, 31 edges -> 32 bins): "
             + ", ".join(f"{x:.3f}" for x in log["f0_bin_edges"]) + ".", "",
             f"Validation utterances of the build (best epoch): weighted loss {f['loss']:.3f} per source token; token "
             f"NLL {f['token_loss']:.3f} nats (perplexity {f['token_ppl']:.3f}, accuracy {f['token_acc']:.3f}); duration "
             f"NLL {f['duration_loss']:.3f} (accuracy {f['duration_acc']:.3f}); F0 NLL {f['f0_loss']:.3f} (accuracy "
             f"{f['f0_acc']:.3f}); {f['token_targets']} targets per stream.", "",
             "| eval set (teacher-forced) | utterances | token ppl pGSLM | token ppl GSLM, same units | token acc | "
             "duration NLL / acc | F0 NLL / acc |", "|---|---|---|---|---|---|---|"]
    for name, r in s.items():
        lines.append(f"| {name.replace('_', ' ')} | {r['utterances']} | {r['token_ppl']:.3f} | {r['gslm_token_ppl']:.3f} "
                     f"| {r['token']['acc']:.3f} | {r['duration']['loss']:.3f} / {r['duration']['acc']:.3f} | "
                     f"{r['f0']['loss']:.3f} / {r['f0']['acc']:.3f} |")
    u = m["usage_valid"]
    d = _pct(u["duration_counts"])
    fb = _pct(u["f0_bin_counts"])
    lines += ["", f"Inputs on the corpus validation utterances ({u['segments']} unit segments): duration 1 / 2 / 3 / >=4 "
              f"frames {d[0]:.1f} / {d[1]:.1f} / {d[2]:.1f} / {sum(d[3:]):.1f} %, longer than the cap of 20: "
              f"{100 * u['duration_over_cap']:.2f} %; unvoiced segments before interpolation "
              f"{100 * u['unvoiced_segments']:.1f} %; F0 bins used {sum(x > 0 for x in u['f0_bin_counts'])} of 32, "
              f"largest bin {max(fb):.1f} %.", "", END]
    return "\n".join(lines)


def figures(m: dict, log: dict, img: Path) -> None:
    """``pgslm_training.png`` (per-stream train/validation loss by epoch), ``pgslm_duration_usage.png`` and
    ``pgslm_f0_usage.png`` (input histograms, training clips from the build log, validation from the JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    t = log["training"]
    fig, ax = plt.subplots(1, 3, figsize=(11, 3.2))
    for a, s in zip(ax, STREAMS):
        a.plot(t["epoch"], t[f"train_{s}_loss"], label="train")
        a.plot(t["epoch"], [v[f"{s}_loss"] for v in t["valid"]], label="validation")
        a.axvline(t["best_epoch"], color="grey", lw=0.8, ls=":")
        a.set(xlabel="epoch", ylabel="NLL (nats/target)", title=f"{s.replace('f0', 'F0')} stream")
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(img / "pgslm_training.png", dpi=90)
    for key, fname, xlabel, first in (("duration_counts", "pgslm_duration_usage.png", "duration (20 ms frames, capped)", 1),
                                      ("f0_bin_counts", "pgslm_f0_usage.png", "F0 bin", 0)):
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for usage, label, off in ((log["usage_train"], "training clips", -0.2), (m["usage_valid"], "validation", 0.2)):
            pct = _pct(usage[key])
            ax.bar([first + i + off for i in range(len(pct))], pct, width=0.4, label=label)
        ax.set(xlabel=xlabel, ylabel="% of unit segments", title=xlabel.split(" ")[0] + " input usage")
        ax.legend()
        fig.tight_layout()
        fig.savefig(img / fname, dpi=90)
    plt.close("all")


def check(stored: dict, fresh: dict, tol: float = 1e-3) -> list[str]:
    """Mismatches between freshly recomputed items and the stored ones (empty list = all equal)."""
    bad = []
    for k in ("bundle_fingerprint", "gslm_fingerprint"):
        if fresh[k] != stored[k]:
            bad.append(f"{k} differs from the one the metrics were computed on")
    for name, items in fresh["items"].items():
        for key, v in items.items():
            want = stored["items"][name].get(key)
            if want is None:
                bad.append(f"{name} {key}: not in the stored metrics")
                continue
            for part, vals in v.items():
                w = want[part]
                if vals[1:] != w[1:] or abs(vals[0] - w[0]) > tol * max(1.0, abs(w[0])):
                    bad.append(f"{name} {key} {part}: stored {w} fresh {vals}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in (("bundle", "models/pgslm-default"), ("gslm", "models/default-v1"),
                          ("json", "docs/pgslm_card_metrics.json"), ("log", "docs/pgslm_training_log.json"),
                          ("card", "docs/pgslm_model_card.md"), ("img", "docs/img")):
        ap.add_argument(f"--{name}", type=Path, default=ROOT / default)
    ap.add_argument("--check", type=int, default=0, help="recompute N items of each set and compare")
    ap.add_argument("--render-only", action="store_true", help="rewrite figures and card from the stored JSON")
    args = ap.parse_args(argv)
    if args.check:
        bad = check(json.loads(args.json.read_text()), compute(args.bundle, args.gslm, limit=args.check))
        sys.stdout.write(("\n".join(bad) if bad else "recomputed items match the stored metrics") + "\n")
        return 1 if bad else 0
    if args.render_only:
        m = json.loads(args.json.read_text())
    else:
        m = compute(args.bundle, args.gslm)
        args.json.write_text(json.dumps(m, indent=0) + "\n")
    log = json.loads(args.log.read_text())
    figures(m, log, args.img)
    mc.write_card(args.card, render_block(m, log), BEGIN, END)
    sys.stdout.write(json.dumps(summary(m), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

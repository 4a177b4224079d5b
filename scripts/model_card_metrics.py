"""Recompute the default backbone's model-card figures (ABX, unit LM perplexity, unit statistics) from a bundle.

    python scripts/model_card_metrics.py                 # full run: writes docs/model_card_metrics.json,
                                                         # the figures in docs/img/ and the card's metrics block
    python scripts/model_card_metrics.py --check 3       # recompute 3 items of each kind, compare with the JSON

Everything is recomputed from the committed bundle (``models/default-v1``, the previous default) and a deterministic synthesized eval
set (TTS is deterministic; ``speechprompt.training.corpus``):
- ABX: orthographic minimal pairs (``backbone_metrics.minimal_pairs``) spoken by two voice sets, the corpus
  voices (``ABX_CORPUS_VOICES``) and voices the backbone never heard (``ABX_HELD_OUT_VOICES``: held-out espeak-ng
  accents/variants, a held-out MBROLA voice, festival kal and the held-out engine flite); across-voice triplets;
  DTW over the bundle's layer features (cosine) and over its frame-level units (0/1).
- Perplexity: the unit LM on deduplicated units of the corpus validation utterances (``corpus.is_valid``; never
  trained on) and of English sentences by held-out voices.
- Unit statistics of the validation utterances: usage histogram, entropy, mean run length.
Per-item values are stored, so ``--check`` can recompute a few of them and compare exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.backbone import Backbone  # noqa: E402
from speechprompt.training import backbone_metrics as bm  # noqa: E402
from speechprompt.training import corpus as corpus_mod  # noqa: E402
from speechprompt.training.markers import replace_block  # noqa: E402

BEGIN, END = "<!-- metrics:begin (scripts/model_card_metrics.py writes this block) -->", "<!-- metrics:end -->"
SEED = 0
ABX_PAIRS = 30
VALID_UTTERANCES = 60  # validation indices 39, 79, ...: never trained on (45 fall inside the 120-min plan)
HELD_OUT_SENTENCES = 4  # per held-out voice
HELD_OUT_SENTENCE_VOICES: tuple[tuple[str, str], ...] = (
    ("flite", "kal16"), ("flite", "slt"), ("flite", "awb"), ("flite", "rms"),
    ("espeak-ng", "en-gb-scotland+f4"), ("espeak-ng", "en-029+m6"), ("mbrola", "mb-us3"),
    ("festival", "kal_diphone"), ("piper", "joe"),
)
KNOWN_CLIP = {"text": "yes no up down left right on off stop go", "voice": ["espeak-ng", "en-us"]}
_PLAIN_AUG = {"pitch_cents": 0, "reverb": 0, "telephone": False, "snr_db": None, "noise_color": "white", "gain": 0.7}


def ppl_specs() -> dict[str, list[corpus_mod.UtteranceSpec]]:
    """The perplexity eval set: corpus validation utterances, English sentences by held-out voices."""
    valid = [corpus_mod.plan_utterance(SEED, i) for i in range(corpus_mod.VALID_EVERY - 1,
                                                                corpus_mod.VALID_EVERY * VALID_UTTERANCES,
                                                                corpus_mod.VALID_EVERY)]
    held, k = [], 0
    for engine, voice in HELD_OUT_SENTENCE_VOICES:
        for _ in range(HELD_OUT_SENTENCES):
            idx = 10_000_000 + k
            text = corpus_mod.random_text(np.random.default_rng([SEED, idx]), "en", ascii_only=True)
            held.append(corpus_mod.UtteranceSpec(idx, engine, voice, "en", text, 170, 50, 1.0, dict(_PLAIN_AUG)))
            k += 1
    return {"corpus_valid": valid, "held_out_voices": held}


def item_key(spec: corpus_mod.UtteranceSpec) -> str:
    return f"{spec.index}:{spec.engine}:{spec.voice}"


def unit_ppl(bb: Backbone, specs: list[corpus_mod.UtteranceSpec]) -> tuple[dict, list[torch.Tensor]]:
    """Per-utterance (summed NLL nats, tokens) and frame-level units."""
    audio = corpus_mod.synthesize_corpus(specs, SEED, jobs=1).clean
    feats = [bb.encoder.extract([torch.from_numpy(a)])[0] for a in audio]  # one clip at a time: subset-stable
    frame_units = [bb.codebook.quantize(f) for f in feats]
    deduped = [torch.unique_consecutive(u) for u in frame_units]
    if bb.voice is not None:  # the unit LM reads each clip's voice prefix first (speechprompt/voice.py)
        deduped = [torch.cat([bb.voice.prefix(bb.encoder, [torch.from_numpy(a)])[0] + bb.codebook.vocab_size, u])
                   for a, u in zip(audio, deduped, strict=True)]
    nll = bm.unit_lm_nll(bb.unit_lm, deduped, bb.unit_to_token)
    return {item_key(s): [round(n, 5), t] for s, (n, t) in zip(specs, nll)}, frame_units


def abx(bb: Backbone, pairs: list[tuple[str, str]], voice_list) -> dict:
    """Per-triplet errors ``{"w1|w2|va|vx": {"features": e, "units": e}}`` (A=w1@va, B=w2@va, X=w1@vx)."""
    words = sorted({w for p in pairs for w in p})
    clips = corpus_mod.synthesize_words(words, list(voice_list))
    items = sorted(clips)
    feats = [bb.encoder.extract([torch.from_numpy(clips[i])])[0] for i in items]  # one at a time: subset-stable
    reps_f = {(w, bm.voice_key(e, v)): f for (w, e, v), f in zip(items, feats)}
    reps_u = {k: bb.codebook.quantize(f) for k, f in reps_f.items()}
    trip = bm.abx_triplets(pairs, [bm.voice_key(e, v) for e, v in voice_list])
    ef, eu = bm.abx_errors(trip, reps_f, "cosine"), bm.abx_errors(trip, reps_u, "units")
    return {f"{t.a[0]}|{t.b[0]}|{t.a[1]}|{t.x[1]}": {"features": a, "units": b} for t, a, b in zip(trip, ef, eu)}


def compute(bundle: Path, pairs_n: int = ABX_PAIRS, limit: int | None = None) -> dict:
    """All per-item metrics; ``limit`` keeps only the first items of each kind (for ``--check``)."""
    torch.set_num_threads(2)
    bb = Backbone.load(bundle)
    pairs = bm.minimal_pairs(pairs_n, SEED)
    out = {"bundle_fingerprint": bb.fingerprint, "seed": SEED, "pairs": [list(p) for p in pairs], "abx": {},
           "ppl": {}}
    for name, vl in (("corpus_voices", bm.ABX_CORPUS_VOICES), ("held_out_voices", bm.ABX_HELD_OUT_VOICES)):
        use_pairs = pairs[:1] if limit else pairs
        use_voices = vl[:max(2, limit)] if limit else vl
        out["abx"][name] = {"voices": [bm.voice_key(e, v) for e, v in vl], "triplets": abx(bb, use_pairs, use_voices)}
    frame_units = None
    for name, specs in ppl_specs().items():
        specs = specs[:limit] if limit else specs
        out["ppl"][name], fu = unit_ppl(bb, specs)
        if name == "corpus_valid":
            frame_units = fu
    out["unit_stats"] = bm.unit_stats(frame_units, bb.codebook.vocab_size)
    wav = next(iter(corpus_mod.synthesize_words([KNOWN_CLIP["text"]], [tuple(KNOWN_CLIP["voice"])]).values()))
    units = bb.codebook.quantize(bb.encoder.extract([torch.from_numpy(wav)])[0]).tolist()
    out["known_clip"] = {**KNOWN_CLIP, "units": units}
    return out


def summary(m: dict) -> dict:
    """Aggregates shown in the model card."""
    s = {"abx_error_pct": {}, "ppl": {}}
    for name, a in m["abx"].items():
        trip = a["triplets"].values()
        s["abx_error_pct"][name] = {k: round(100 * float(np.mean([t[k] for t in trip])), 2)
                                    for k in ("features", "units")}
        s["abx_error_pct"][name]["triplets"] = len(a["triplets"])
    for name, items in m["ppl"].items():
        n, t = sum(v[0] for v in items.values()), sum(v[1] for v in items.values())
        s["ppl"][name] = {"perplexity": round(math.exp(n / t), 3), "utterances": len(items), "tokens": t}
    u = m["unit_stats"]
    s["units"] = {k: round(u[k], 3) if isinstance(u[k], float) else u[k]
                  for k in ("units_used", "entropy_bits", "mean_run_length_frames", "frames")}
    return s


def minutes_rows(c: dict) -> list[str]:
    """The card's "minutes by engine / language" table rows from a build log's ``corpus`` facts."""
    return ["| minutes by " + what + " | " + ", ".join(f"{k} {v}" for k, v in c[f"minutes_by_{what}"].items()) + " |"
            for what in ("engine", "language")]


def render_block(m: dict, log: dict) -> str:
    """Markdown of the card's metrics block (numbers only from the metrics JSON and the training log)."""
    s = summary(m)
    c, p = log["corpus"], log["parameters"]
    lines = [BEGIN, "", f"Bundle fingerprint: `{m['bundle_fingerprint']}`", "",
             "| corpus | value |", "|---|---|",
             f"| training speech | {c['train_seconds'] / 3600:.2f} h ({c['train_utterances']} utterances, "
             f"{c['words']} words, {c['distinct_voices']} voice settings) |",
             f"| validation speech (held out from all training) | {c['valid_seconds'] / 60:.1f} min "
             f"({c['valid_utterances']} utterances) |",
             *minutes_rows(c),
             "", "| model | value |", "|---|---|",
             f"| encoder parameters (kept layers) | {p['encoder']:,} |",
             f"| chosen layer | {log['layer_choice']['chosen_layer']} |",
             f"| codebook | {p['codebook'] // 100 if p['codebook'] else 0} dims x 100 units |",
             f"| unit LM parameters | {p['unit_lm']:,} |",
             f"| bundle size | {log['bundle_bytes'] / 2**20:.2f} MiB |",
             f"| build time (2 CPU cores) | {log['total_s'] / 60:.1f} min |",
             f"| final HuBERT masked-prediction loss / accuracy | {log['final']['hubert_loss']:.3f} / "
             f"{log['final']['hubert_masked_acc']:.3f} |",
             f"| unit LM validation loss (nats/token, best epoch) | {log['final']['lm_valid_loss']:.3f} |",
             "", "| ABX error (across voices, minimal pairs) | features (cosine DTW) | units (0/1 DTW) | triplets |",
             "|---|---|---|---|"]
    for name, v in s["abx_error_pct"].items():
        lines.append(f"| {name.replace('_', ' ')} | {v['features']:.2f} % | {v['units']:.2f} % | {v['triplets']} |")
    lines += ["", "| unit LM perplexity | perplexity | utterances | tokens |", "|---|---|---|---|"]
    for name, v in s["ppl"].items():
        lines.append(f"| {name.replace('_', ' ')} | {v['perplexity']:.3f} | {v['utterances']} | {v['tokens']} |")
    lc = log["layer_choice"]
    lines += ["", "Layer choice (across-voice ABX error of features, corpus voices, "
              f"{lc['pairs']} pairs, {lc['triplets']} triplets): "
              + ", ".join(f"layer {k} {100 * v:.2f} %" for k, v in lc["abx_error_by_layer"].items())
              + f"; MFCC baseline {100 * lc['abx_error_mfcc']:.2f} %."]
    u = s["units"]
    lines += ["", f"Units on the validation utterances: {u['units_used']} of 100 used, entropy {u['entropy_bits']:.3f} "
              f"bits, mean run length {u['mean_run_length_frames']:.3f} frames ({u['frames']} frames).", "", END]
    return "\n".join(lines)


def write_card(card: Path, block: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the card's text between the ``begin`` and ``end`` markers (included) by ``block``."""
    try:
        replace_block(card, begin, end, block, keep_markers=False, create=False)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def figures(m: dict, log: dict, img: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    h = log["hubert"]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(h["step"], h["loss"])
    ax[0].set(xlabel="step", ylabel="masked-prediction loss", title="HuBERT (iteration 1, MFCC targets)")
    ax[1].plot(h["step"], h["acc"])
    ax[1].set(xlabel="step", ylabel="masked-frame accuracy")
    fig.tight_layout()
    fig.savefig(img / "hubert_training.png", dpi=90)
    lm = log["unit_lm"]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(lm["epoch"], lm["train_loss"], label="train")
    ax.plot(lm["epoch"], lm["valid_loss"], label="validation")
    ax.set(xlabel="epoch", ylabel="loss (nats/token)", title="unit LM")
    ax.legend()
    fig.tight_layout()
    fig.savefig(img / "unit_lm_training.png", dpi=90)
    lc = log["layer_choice"]["abx_error_by_layer"]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.bar([int(k) for k in lc], [100 * v for v in lc.values()])
    ax.set(xlabel="HuBERT layer", ylabel="ABX error % (corpus voices)", title="layer choice")
    fig.tight_layout()
    fig.savefig(img / "layer_choice.png", dpi=90)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.bar(range(len(m["unit_stats"]["usage"])), [100 * u for u in m["unit_stats"]["usage"]])
    ax.set(xlabel="unit", ylabel="% of frames", title="unit usage (validation utterances)")
    fig.tight_layout()
    fig.savefig(img / "unit_usage.png", dpi=90)
    plt.close("all")


def check(stored: dict, fresh: dict, tol: float = 1e-3) -> list[str]:
    """Mismatches between freshly recomputed items and the stored ones (empty list = all equal)."""
    bad = []
    if fresh["bundle_fingerprint"] != stored["bundle_fingerprint"]:
        bad.append("bundle fingerprint differs from the one the metrics were computed on")
    for name, a in fresh["abx"].items():
        for k, v in a["triplets"].items():
            if stored["abx"][name]["triplets"].get(k) != v:
                bad.append(f"abx {name} {k}: stored {stored['abx'][name]['triplets'].get(k)} fresh {v}")
    for name, items in fresh["ppl"].items():
        for k, (n, t) in items.items():
            sn, st = stored["ppl"][name][k]
            if st != t or abs(sn - n) > tol * max(1.0, abs(sn)):
                bad.append(f"ppl {name} {k}: stored {(sn, st)} fresh {(n, t)}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "models/default-v1")
    ap.add_argument("--json", type=Path, default=ROOT / "docs/model_card_metrics.json")
    ap.add_argument("--log", type=Path, default=ROOT / "docs/backbone_training_log.json")
    ap.add_argument("--card", type=Path, default=ROOT / "docs/model_card_v1.md")
    ap.add_argument("--img", type=Path, default=ROOT / "docs/img")
    ap.add_argument("--check", type=int, default=0, help="recompute N items of each kind and compare")
    ap.add_argument("--render-only", action="store_true", help="rewrite figures and card from the stored JSON")
    args = ap.parse_args(argv)
    if args.render_only:
        m, log = json.loads(args.json.read_text()), json.loads(args.log.read_text())
        figures(m, log, args.img)
        write_card(args.card, render_block(m, log))
        return 0
    if args.check:
        bad = check(json.loads(args.json.read_text()), compute(args.bundle, limit=args.check))
        sys.stdout.write(("\n".join(bad) if bad else "recomputed items match the stored metrics") + "\n")
        return 1 if bad else 0
    m = compute(args.bundle)
    args.json.write_text(json.dumps(m, indent=0) + "\n")
    log = json.loads(args.log.read_text())
    figures(m, log, args.img)
    write_card(args.card, render_block(m, log))
    sys.stdout.write(json.dumps(summary(m), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

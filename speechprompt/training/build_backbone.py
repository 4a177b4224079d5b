"""Build the default backbone from synthesized speech: ``speechprompt build-backbone --out models/default``.

Pipeline (deterministic from ``seed``; 25-45 min on 2 shared CPU cores at the default size):
1. corpus (``corpus.py``): multilingual TTS (espeak-ng, MBROLA, festival) + a noisy twin of every clip;
2. targets: 39-d MFCC on the encoder frame grid -> k-means (100) on clean clips (HuBERT iteration 1);
3. HuBERT masked-prediction pretraining (``hubert_pretrain.py``): noisy (p=0.6) or clean input, clean targets;
4. layer choice: across-voice ABX error (``backbone_metrics.py``) of each layer's features on minimal pairs
   spoken by corpus voices (never the held-out ones); the lowest error wins;
5. 100-unit k-means codebook on that layer (clean + noisy frames), units of every clip, dedup;
6. unit LM (fairseq ``transformer_lm`` layout, ``speechprompt.unit_lm.UnitLM``) trained on
   ``[</s>, u1..un] -> [u1..un, </s>]`` per utterance (fairseq ``--sample-break-mode eos``), validation
   utterances (``corpus.is_valid``) held out for perplexity;
7. bundle via ``speechprompt.backbone.save_bundle`` (the format the GSLM import writes) + a training log
   (``docs/backbone_training_log.json``, for the model card's curves and tables).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from speechprompt.backbone import natural_dictionary, save_bundle
from speechprompt.codebook import Codebook, dedup
from speechprompt.encoder import HubertConfig, HubertEncoder
from speechprompt.training import backbone_metrics as bm
from speechprompt.training import corpus as corpus_mod
from speechprompt.training import voices
from speechprompt.training.hubert_pretrain import HubertPretrainModel, PretrainConfig, encoder_state, mfcc
from speechprompt.training.kmeans import NUM_UNITS, fit_kmeans, subsample_rows
from speechprompt.training.unit_lm_train import train_unit_lm
from speechprompt.unit_lm import UnitLMConfig

log = logging.getLogger(__name__)
CROP_BUCKETS_S = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)  # HuBERT training crop lengths (seconds)


@dataclass(frozen=True)
class BuildConfig:
    """Sizes and schedule of one build (``small()`` for tests and dry runs)."""

    seed: int = 0
    minutes: float = 120.0
    jobs: int = 2
    threads: int = 2
    target_clusters: int = 100
    hubert: PretrainConfig = PretrainConfig(conv_dim=64, embed_dim=256, layers=4, heads=4, ffn_dim=768,
                                            mask_prob=0.65, feature_grad_mult=1.0, pred_nomask_weight=0.5)
    hubert_steps: int = 1200
    hubert_batch_seconds: float = 32.0
    hubert_crop_seconds: float = 4.0
    hubert_lr: float = 5e-4
    noisy_prob: float = 0.6
    abx_pairs: int = 30
    codebook_frames: int = 150_000
    noisy_units_fraction: float = 0.3
    lm: UnitLMConfig = UnitLMConfig(vocab_size=NUM_UNITS + 4, embed_dim=256, ffn_dim=768, layers=3, heads=4,
                                    max_positions=2048)
    lm_epochs: int = 3
    lm_batch_tokens: int = 4000
    lm_lr: float = 2e-3
    name: str = "speechprompt-default-v1"

    @classmethod
    def small(cls, seed: int = 0) -> BuildConfig:
        """A few-minute build: same pipeline, tiny corpus and models."""
        return cls(seed=seed, minutes=4.0, hubert=PretrainConfig(conv_dim=32, embed_dim=64, layers=3, heads=4,
                                                                  ffn_dim=128, final_dim=32),
                   hubert_steps=20, hubert_batch_seconds=16.0, noisy_units_fraction=1.0, abx_pairs=6, codebook_frames=20_000,
                   lm=UnitLMConfig(vocab_size=NUM_UNITS + 4, embed_dim=64, ffn_dim=128, layers=2, heads=4,
                                   max_positions=2048), lm_epochs=2, name="speechprompt-small")


def hubert_config(p: PretrainConfig, output_layer: int) -> HubertConfig:
    """The inference-side ``HubertConfig`` of a pretraining config, cut at ``output_layer``."""
    return HubertConfig(conv_layers=tuple((p.conv_dim, k, s) for k, s in zip(p.conv_kernels, p.conv_strides)),
                        embed_dim=p.embed_dim, layers=p.layers, heads=p.heads, ffn_dim=p.ffn_dim,
                        conv_pos=p.pos_conv_kernel, conv_pos_groups=p.pos_conv_groups, output_layer=output_layer)


# --------------------------------------------------------------------------------------------- HuBERT training

def train_hubert(cfg: BuildConfig, corpus: corpus_mod.Corpus, train_idx: list[int], targets: list[torch.Tensor],
                 say: Callable[[str], None]) -> tuple[HubertPretrainModel, dict]:
    """Masked prediction on length-bucketed crops (no padding: the conv front end's group norm sees only audio)."""
    torch.manual_seed(cfg.seed)
    model = HubertPretrainModel(cfg.hubert)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.hubert_lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    warm = max(1, cfg.hubert_steps // 12)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.02, (cfg.hubert_steps - s) / (cfg.hubert_steps - warm + 1))))
    order = sorted(train_idx, key=lambda i: len(corpus.clean[i]))
    rng = np.random.default_rng([cfg.seed, 1])
    gen = torch.Generator().manual_seed(cfg.seed)
    hist = {"step": [], "loss": [], "acc": [], "seconds": []}
    t0 = time.time()
    model.train()
    buckets = [400 + 320 * int(sec * 50) for sec in CROP_BUCKETS_S if sec <= cfg.hubert_crop_seconds]
    for step in range(cfg.hubert_steps):
        centre = int(rng.integers(len(order)))
        near = len(corpus.clean[order[centre]])
        crop = max([b for b in buckets if b <= near] or [buckets[0]])
        b = max(2, int(cfg.hubert_batch_seconds * 16000 // crop))  # fixed (crop, b) shapes: CPU conv kernels reused
        lo = max(0, min(centre - b // 2, len(order) - b))
        batch = order[lo:lo + b]
        crop = min([crop] + [len(corpus.clean[i]) for i in batch])
        crop = max([bk for bk in buckets if bk <= crop] or [(crop - 400) // 320 * 320 + 400])
        t = HubertPretrainModel.frames(crop)
        wavs, tg = [], []
        for i in batch:
            n_frames_full = len(targets[i])
            j = int(rng.integers(0, max(1, min(n_frames_full - t, (len(corpus.clean[i]) - crop) // 320) + 1)))
            src = corpus.noisy[i] if rng.random() < cfg.noisy_prob else corpus.clean[i]
            wavs.append(torch.from_numpy(src[j * 320: j * 320 + crop]))
            tg.append(targets[i][j:j + t])
        wav, tgt = torch.stack(wavs), torch.stack(tg)
        loss, st = model.loss(wav, tgt, torch.zeros_like(tgt, dtype=torch.bool), gen)
        acc = st["masked_acc"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == cfg.hubert_steps - 1:
            hist["step"].append(step)
            hist["loss"].append(round(st["masked_loss"], 4))
            hist["acc"].append(round(acc, 4))
            hist["seconds"].append(round(time.time() - t0, 1))
            if step % 50 == 0 or step == cfg.hubert_steps - 1:
                say(f"hubert step {step}/{cfg.hubert_steps} masked loss {st['masked_loss']:.3f} acc {acc:.3f} "
                    f"({time.time() - t0:.0f}s)")
    return model.eval(), hist


def encoder_at(model: HubertPretrainModel, cfg: BuildConfig, layer: int) -> tuple[HubertEncoder, HubertConfig, dict]:
    """The inference ``HubertEncoder`` (layers 1..layer) loaded strictly from the trained model."""
    hcfg = hubert_config(cfg.hubert, layer)
    state = encoder_state(model, layer)
    enc = HubertEncoder(hcfg)
    enc.load_state_dict(state, strict=True)
    return enc.eval(), hcfg, state


def extract(enc: HubertEncoder, wavs: list[np.ndarray], batch: int = 24) -> list[torch.Tensor]:
    out = []
    for s in range(0, len(wavs), batch):
        out += enc.extract([torch.from_numpy(w) for w in wavs[s:s + batch]])
    return out


def choose_layer(model: HubertPretrainModel, cfg: BuildConfig, say) -> tuple[int, dict]:
    """Across-voice ABX error (cosine DTW) per layer on minimal pairs by corpus voices; lowest wins."""
    pairs = bm.minimal_pairs(cfg.abx_pairs, cfg.seed)
    words = sorted({w for p in pairs for w in p})
    clips = corpus_mod.synthesize_words(words, list(bm.ABX_CORPUS_VOICES))
    keys = [bm.voice_key(e, v) for e, v in bm.ABX_CORPUS_VOICES]
    triplets = bm.abx_triplets(pairs, keys)
    items = sorted(clips)
    with torch.no_grad():
        per_layer = [dict() for _ in range(cfg.hubert.layers)]
        for item in items:
            outs = model.layer_outputs(torch.from_numpy(clips[item])[None])
            for li, o in enumerate(outs):
                per_layer[li][(item[0], bm.voice_key(item[1], item[2]))] = o[0]
    errs = {}
    for li in range(cfg.hubert.layers):
        errs[li + 1] = float(np.mean(bm.abx_errors(triplets, per_layer[li])))
        say(f"layer {li + 1}: across-voice ABX error {errs[li + 1]:.4f}")
    best = min(errs, key=lambda k: (errs[k], k))
    mfcc_err = float(np.mean(bm.abx_errors(triplets, {(w, bm.voice_key(e, v)): mfcc(clips[(w, e, v)])
                                                      for (w, e, v) in items})))
    say(f"MFCC baseline: across-voice ABX error {mfcc_err:.4f}")
    return best, {"abx_error_by_layer": errs, "abx_error_mfcc": mfcc_err, "pairs": len(pairs), "triplets": len(triplets),
                  "voices": keys, "chosen_layer": best}


# --------------------------------------------------------------------------------------------- the pipeline

def build_backbone(out: str | Path, cfg: BuildConfig, log_path: str | Path | None = None,
                   say: Callable[[str], None] = log.info) -> dict:
    """Run the whole build; writes the bundle to ``out`` and returns the training log (also written to
    ``log_path`` as JSON when given)."""
    torch.set_num_threads(cfg.threads)
    t_start, timings = time.time(), {}

    def lap(name):
        timings[name] = round(time.time() - t_start - sum(timings.values()), 1)
        say(f"[{name}] {timings[name]:.0f}s (total {time.time() - t_start:.0f}s)")

    specs = corpus_mod.plan_corpus(cfg.minutes, cfg.seed)
    corpus = corpus_mod.synthesize_corpus(specs, cfg.seed, jobs=cfg.jobs)
    train_idx = [i for i, s in enumerate(specs) if not corpus_mod.is_valid(s.index)]
    valid_idx = [i for i, s in enumerate(specs) if corpus_mod.is_valid(s.index)]
    lap("corpus")

    feats = [mfcc(corpus.clean[i]) for i in range(len(specs))]
    centers = torch.from_numpy(fit_kmeans(subsample_rows([feats[i] for i in train_idx], 200_000, cfg.seed),
                                          cfg.target_clusters, cfg.seed))
    targets = [Codebook(centers).quantize(f) for f in feats]
    lap("mfcc_targets")

    model, hubert_hist = train_hubert(cfg, corpus, train_idx, targets, say)
    lap("hubert")

    layer, layer_info = choose_layer(model, cfg, say)
    lap("layer_choice")

    enc, hcfg, enc_state = encoder_at(model, cfg, layer)
    clean_f = extract(enc, corpus.clean)
    noisy_idx = [i for i in train_idx if np.random.default_rng([cfg.seed, 3, i]).random() < cfg.noisy_units_fraction]
    noisy_f = dict(zip(noisy_idx, extract(enc, [corpus.noisy[i] for i in noisy_idx])))
    sample = subsample_rows([clean_f[i] for i in train_idx] + list(noisy_f.values()), cfg.codebook_frames, cfg.seed)
    codebook = Codebook(torch.from_numpy(fit_kmeans(sample, NUM_UNITS, cfg.seed)))
    frame_units = {"clean": [codebook.quantize(f) for f in clean_f],
                   "noisy": {i: codebook.quantize(f) for i, f in noisy_f.items()}}
    lap("codebook")

    lm_train = [dedup(frame_units["clean"][i])[0] for i in train_idx] + \
        [dedup(u)[0] for u in frame_units["noisy"].values()]
    lm_valid_frames = [frame_units["clean"][i] for i in valid_idx]
    lm_valid = [dedup(u)[0] for u in lm_valid_frames]
    lm, lm_hist = train_unit_lm(cfg, lm_train, lm_valid, say)
    lap("unit_lm")

    stats = bm.unit_stats(lm_valid_frames, NUM_UNITS)
    facts = corpus_facts(specs, corpus, train_idx, valid_idx)
    extra = {"built_by": "speechprompt build-backbone", "seed": cfg.seed, "chosen_layer": layer,
             "layer_choice": "lowest across-voice ABX error (cosine DTW) on corpus voices",
             "corpus_hours": round(facts["train_seconds"] / 3600, 3),
             "held_out": voices.corpus_summary()["held_out"]}
    lm_state = {k: v for k, v in lm.state_dict().items()}
    fp = save_bundle(out, kind="gslm", name=cfg.name, encoder_cfg=hcfg, encoder_state=enc_state,
                     centroids=codebook.centroids, lm_cfg=cfg.lm, lm_state=lm_state,
                     dictionary=natural_dictionary(NUM_UNITS), extra=extra)
    lap("bundle")
    params = {"encoder": sum(v.numel() for v in enc_state.values()),
              "unit_lm": sum(p.numel() for p in lm.parameters()), "codebook": int(codebook.centroids.numel())}
    result = {"fingerprint": fp, "config": _jsonable(asdict(cfg)), "corpus": facts, "timings_s": timings,
              "total_s": round(time.time() - t_start, 1), "hubert": hubert_hist, "layer_choice": layer_info,
              "unit_lm": lm_hist, "unit_stats_valid": stats, "parameters": params,
              "bundle_bytes": sum(p.stat().st_size for p in Path(out).iterdir()),
              "final": {"hubert_loss": hubert_hist["loss"][-1], "hubert_masked_acc": hubert_hist["acc"][-1],
                        "lm_valid_loss": min(lm_hist["valid_loss"]),
                        "lm_valid_ppl": round(math.exp(min(lm_hist["valid_loss"])), 3)}}
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(json.dumps(result, indent=1) + "\n")
    return result


def corpus_facts(specs, corpus, train_idx, valid_idx) -> dict:
    secs = [len(x) / 16000 for x in corpus.clean]
    by_engine: dict[str, float] = {}
    by_lang: dict[str, float] = {}
    for s, d in zip(specs, secs):
        by_engine[s.engine] = by_engine.get(s.engine, 0.0) + d
        by_lang[s.lang] = by_lang.get(s.lang, 0.0) + d
    return {"utterances": len(specs), "train_utterances": len(train_idx), "valid_utterances": len(valid_idx),
            "train_seconds": round(sum(secs[i] for i in train_idx), 1),
            "valid_seconds": round(sum(secs[i] for i in valid_idx), 1),
            "minutes_by_engine": {k: round(v / 60, 2) for k, v in sorted(by_engine.items())},
            "minutes_by_language": {k: round(v / 60, 2) for k, v in sorted(by_lang.items())},
            "distinct_voices": len({s.voice for s in specs}),
            "words": sum(len(s.text.split()) for s in specs), **voices.corpus_summary()}


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _run_build(out: Path, seed: int, minutes: float | None, small: bool, hubert_steps: int | None,
               log_json: Path, say: Callable[[str], None]) -> dict:
    cfg = BuildConfig.small(seed) if small else BuildConfig(seed=seed)
    if minutes is not None:
        cfg = replace(cfg, minutes=minutes)
    if hubert_steps is not None:
        cfg = replace(cfg, hubert_steps=hubert_steps)
    return build_backbone(out, cfg, log_json, say=say)


def _options(typer):
    return dict(
        out=typer.Option(Path("models/default"), help="bundle folder to write"),
        seed=typer.Option(0, help="seed of every random choice (corpus, training, k-means)"),
        minutes=typer.Option(None, help="corpus size in minutes (default 120; --small: 4)"),
        small=typer.Option(False, help="tiny corpus and models (minutes; for tests and dry runs)"),
        hubert_steps=typer.Option(None, help="HuBERT training steps (default 1200)"),
        log_json=typer.Option(Path("docs/backbone_training_log.json"), help="training log (JSON)"),
    )


def run_build_child(module: str, opts: dict[str, object], switches: dict[str, bool]) -> int:
    """Run ``python -m module`` with ``--key value`` for every non-None option and ``--switch`` for every true flag,
    in a child process started with ``OMP_WAIT_POLICY=PASSIVE``; returns its exit status.

    Why a child: on a shared 2-core machine, OpenMP threads that spin while waiting make every op many times
    slower (measured: 50 MFCCs 15 s -> 0.06 s), and the policy must be set before torch starts its pool.
    """
    import os
    import subprocess
    import sys

    flags = [x for k, v in opts.items() if v is not None for x in (k, str(v))] + [k for k, on in switches.items() if on]
    return subprocess.call([sys.executable, "-m", module, *flags], env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def register(app) -> None:
    """Add ``build-backbone`` to a typer app (the ``speechprompt`` CLI mounts it); the build runs in a child process
    (:func:`run_build_child`)."""
    import typer

    o = _options(typer)

    @app.command("build-backbone")
    def build_backbone_cmd(out: Path = o["out"], seed: int = o["seed"], minutes: float = o["minutes"],
                           small: bool = o["small"], hubert_steps: int = o["hubert_steps"],
                           log_json: Path = o["log_json"]) -> None:
        """Synthesize a TTS corpus and train the default backbone (HuBERT + k-means + unit LM) from it."""
        raise typer.Exit(run_build_child("speechprompt.training.build_backbone",
                                         {"--out": out, "--seed": seed, "--log-json": log_json, "--minutes": minutes,
                                          "--hubert-steps": hubert_steps}, {"--small": small}))


def _main() -> None:
    import typer

    o = _options(typer)

    def run(out: Path = o["out"], seed: int = o["seed"], minutes: float = o["minutes"], small: bool = o["small"],
            hubert_steps: int = o["hubert_steps"], log_json: Path = o["log_json"]) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        result = _run_build(out, seed, minutes, small, hubert_steps, log_json, say=log.info)
        typer.echo(json.dumps({k: result[k] for k in ("fingerprint", "total_s", "final", "bundle_bytes")}))

    typer.run(run)


if __name__ == "__main__":
    _main()

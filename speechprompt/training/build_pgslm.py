"""Build the default pGSLM on the default backbone: ``speechprompt build-pgslm --from models/default
--out models/pgslm-default``.

Pipeline (deterministic from ``seed``; about 24 min on 2 shared CPU cores at the default size):
1. corpus: the GSLM build's own plan (``corpus.plan_corpus(minutes, seed)`` + ``synthesize_corpus``), all 120
   minutes, clean clips only (the noisy twins' pitch shifts, reverb and noise would make YAAPT's F0 the
   augmentation's, not the voice's; YAAPT at ~0.15 s per second of audio and core is the build's largest step);
2. units + durations with the source bundle's encoder and codebook (``UnitExtractor``, dedup), so the pGSLM reads
   exactly the units the GSLM bundle produces;
3. frame F0 per clip with YAAPT and pGSLM's parameters (``prosody.frame_f0``; a process pool), mean voiced F0 per
   unit segment and the clip's voiced-frame statistics (``Prosody.from_frames``);
4. F0 bin edges: 31 edges = 32 equal-mass bins of mean-normalised log-F0 over the training clips' voiced frames,
   exactly as pGSLM's ``examples/textless_nlp/pgslm/quantize_f0.py`` (100 000-bin histogram, nearest cumulative
   percentile); the mean is each clip's own (utterance normalisation, the server default, docs/pgslm.md);
5. a ``transformer_ulm`` (``MultiStreamUnitLM``, discrete duration capped at 20 and 32 F0 bins, stream shifts 1,1)
   trained with fairseq's ``speech_unit_lm_criterion`` on ``CodeDataset`` batches (``pgslm_train.py``): token,
   duration and F0 NLL summed over unmasked targets, weighted, divided by the batch's source tokens; validation on
   ``corpus.is_valid`` utterances; the epoch with the lowest weighted validation loss is kept;
6. bundle via ``importers.pgslm.write_pgslm_bundle``: ``encoder.safetensors`` and ``codebook.safetensors`` are the
   source bundle's own files (byte-identical, checked) + a training log (``docs/pgslm_training_log.json``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from speechprompt.backbone import Backbone, sha256_file
from speechprompt.importers.pgslm import write_pgslm_bundle
from speechprompt.pgslm import PGSLMConfig, StreamConfig
from speechprompt.prosody import F0_TRACKERS, Prosody, ProsodyConfig, ProsodyUnits
from speechprompt.training import corpus as corpus_mod
from speechprompt.training.build_backbone import _jsonable, corpus_facts, run_build_child
from speechprompt.training.default_stages import stage_corpus
from speechprompt.training.pgslm_f0 import f0_bin_edges, frame_tracks, normalized_log_f0_frames
from speechprompt.training.pgslm_train import train_pgslm
from speechprompt.units import UnitExtractor

log = logging.getLogger(__name__)
F0_MODES = ("utterance", "absolute")


@dataclass(frozen=True)
class PGSLMBuildConfig:
    """Corpus, model size and schedule of one build (``small()`` for tests and dry runs).

    ``loss_weights``: token, duration, F0 (``--loss-weights``); the pGSLM README's example gives duration 0.5 (with
    F0 off, as that example ignores the F0 input); the discrete-prosody checkpoints predict F0 too, so F0 gets the
    same 0.5 here.
    """

    seed: int = 0
    minutes: float = 120.0
    jobs: int = 2
    threads: int = 2
    unit_batch: int = 16
    layers: int = 3
    embed_dim: int = 256
    heads: int = 4
    ffn_dim: int = 768
    max_positions: int = 2048
    epochs: int = 6
    batch_tokens: int = 4000
    lr: float = 2e-3
    loss_weights: tuple[float, float, float] = (1.0, 0.5, 0.5)
    f0: str = "utterance"  # F0 stream: "utterance" (log-F0 minus the clip's mean, the recipe) or "absolute" (log-F0)
    f0_tracker: str = "yaapt"  # "yaapt" (the recipe, 5 ms frames) or "yin" (pitch.yin, 20 ms frames; ~100x faster)
    name: str = "speechprompt-pgslm-default-v1"

    @classmethod
    def small(cls, seed: int = 0) -> PGSLMBuildConfig:
        """A build of well under a minute: 40 utterances (one of them validation), a 2-layer d=64 LM."""
        return cls(seed=seed, minutes=2.67, layers=2, embed_dim=64, heads=4, ffn_dim=128, epochs=2,
                   batch_tokens=1500, name="speechprompt-pgslm-small")

    def model_config(self, n_units: int) -> PGSLMConfig:
        """``discrete_prosody_shift_1_1`` streams (``StreamConfig`` defaults) over ``n_units`` units."""
        return PGSLMConfig.make(StreamConfig(n_units=n_units), embed_dim=self.embed_dim, ffn_dim=self.ffn_dim,
                                layers=self.layers, heads=self.heads, max_positions=self.max_positions)


# --------------------------------------------------------------------------------------------- the pipeline

def stream_usage(items: list[ProsodyUnits], prosody: Prosody) -> dict:
    """Histograms of the model's inputs over ``items``: capped duration values (index 1..cap) and F0 bins
    (0..bins-1), as counts, plus the fraction of unit segments longer than the cap and of unvoiced segments."""
    c = prosody.config
    durs = torch.cat([p.durations for p in items])
    capped = prosody.duration_values(durs)
    bins = torch.cat([prosody.f0_values(p) for p in items])
    return {"duration_counts": torch.bincount(capped, minlength=c.max_token_duration + 1)[1:].tolist(),
            "f0_bin_counts": torch.bincount(bins, minlength=c.f0_bins).tolist(),
            "segments": int(durs.numel()),
            "duration_over_cap": round(float((durs > c.max_token_duration).float().mean()), 6),
            "unvoiced_segments": round(float(torch.cat([p.f0 for p in items]).eq(0).float().mean()), 6)}


def build_pgslm(src: str | Path, out: str | Path, cfg: PGSLMBuildConfig, log_path: str | Path | None = None,
                say: Callable[[str], None] = log.info, stage_work: str | Path | None = None) -> dict:
    """Run the whole build; writes the bundle to ``out`` and returns the training log (also written to ``log_path``).

    ``stage_work``: train on ``build-default``'s stage files (:func:`stage_corpus`: TTS + real speech + twins)
    instead of synthesizing the clean TTS plan of ``cfg.minutes``.

    Raises ``BundleError`` for an unusable source bundle and ``RuntimeError`` if the written encoder/codebook are not
    byte-identical to the source's.
    """
    torch.set_num_threads(cfg.threads)
    src, out = Path(src), Path(out)
    t_start, timings, load = time.time(), {}, {"start": [round(x, 2) for x in os.getloadavg()]}

    def lap(name):
        timings[name] = round(time.time() - t_start - sum(timings.values()), 1)
        say(f"[{name}] {timings[name]:.0f}s (total {time.time() - t_start:.0f}s)")

    if cfg.f0 not in F0_MODES:  # before any corpus or unit work
        raise ValueError(f"f0 must be one of {F0_MODES}, not {cfg.f0!r}")
    if cfg.f0_tracker not in F0_TRACKERS:
        raise ValueError(f"f0_tracker must be one of {F0_TRACKERS}, not {cfg.f0_tracker!r}")
    bb = Backbone.load(src)
    if bb.spec.kind != "gslm":
        raise ValueError(f"build-pgslm reuses a GSLM bundle's encoder and codebook; {src} is {bb.spec.kind}")
    if bb.voice is not None:
        raise ValueError(f"{src} has a voice prefix (speechprompt/voice.py), which a pGSLM bundle cannot carry; build "
                         "the pGSLM from a bundle without one")
    src_meta = json.loads((src / "backbone.json").read_text())
    if stage_work is not None:
        clips, train_idx, valid_idx, facts = stage_corpus(stage_work)
    else:
        specs = corpus_mod.plan_corpus(cfg.minutes, cfg.seed)
        corpus = corpus_mod.synthesize_corpus(specs, cfg.seed, jobs=cfg.jobs)
        corpus.noisy = [np.zeros(0, np.float32)] * len(specs)  # clean clips only; free the twins
        train_idx = [i for i, s in enumerate(specs) if not corpus_mod.is_valid(s.index)]
        valid_idx = [i for i, s in enumerate(specs) if corpus_mod.is_valid(s.index)]
        clips, facts = corpus.clean, {**corpus_facts(specs, corpus, train_idx, valid_idx), "clips": "clean"}
    lap("corpus")

    extractor = UnitExtractor.from_parts(bb.encoder, bb.codebook, deduplicate=True)
    units = []
    for s in range(0, len(clips), cfg.unit_batch):
        units += extractor.extract(clips[s:s + cfg.unit_batch])
    lap("units")

    # discrete, durations capped at 20, 32 bins, log + mean + interpolate, utterance mean; the unit hop of the source
    # encoder (320 samples for HuBERT, 1280 for speech_embedding), so F0 frames align with its units
    absolute = cfg.f0 == "absolute"
    pcfg = ProsodyConfig(hop_size=extractor.hop_size, normalize_f0_mean=not absolute, f0_tracker=cfg.f0_tracker,
                         frame_space_ms=20.0 if cfg.f0_tracker == "yin" else 5.0)
    tracks = frame_tracks([extractor.encoded_part(c) for c in clips], pcfg, cfg.jobs)  # the part the units cover
    lap("f0_track")

    normed = np.concatenate([normalized_log_f0_frames(tracks[i], not absolute).numpy() for i in train_idx])
    edges = f0_bin_edges(normed, pcfg.f0_bins)
    prosody = Prosody(pcfg, edges)
    items = [prosody.from_frames(t, u) for t, u in zip(tracks, units, strict=True)]
    train_items, valid_items = [items[i] for i in train_idx], [items[i] for i in valid_idx]
    lap("f0_bins")

    lm_cfg = cfg.model_config(bb.codebook.vocab_size)
    lm, hist = train_pgslm(cfg, lm_cfg, train_items, valid_items, prosody, say)
    lap("pgslm")

    best = hist["valid"][hist["best_epoch"] - 1]
    extra = {"built_by": "speechprompt build-pgslm", "seed": cfg.seed,
             "source_bundle": {"name": src_meta["name"], "fingerprint": src_meta["fingerprint"]},
             "corpus": f"build-default stage files ({facts['train_hours']:g} h)" if stage_work is not None
             else f"build-backbone plan, {cfg.minutes:g} min, clean clips",
             "f0_bin_edges": "quantize_f0.py recipe over the training clips' voiced frames, "
                             + ("log-F0 (absolute)" if absolute else "utterance-mean log-F0"),
             "loss_weights": list(cfg.loss_weights)}
    from safetensors.torch import load_file

    fp = write_pgslm_bundle(out, name=cfg.name, encoder_cfg=bb.spec.encoder,
                            encoder_state=load_file(str(src / "encoder.safetensors")),
                            centroids=bb.codebook.centroids, codebook_state=load_file(str(src / "codebook.safetensors")),
                            lm_cfg=lm_cfg, lm_state=lm.state_dict(), prosody=prosody, extra=extra)
    for n in ("encoder.safetensors", "codebook.safetensors"):
        if sha256_file(out / n) != src_meta["files"][n]:
            raise RuntimeError(f"{out / n} is not byte-identical to {src / n}")
    lap("bundle")
    load["end"] = [round(x, 2) for x in os.getloadavg()]
    voiced = [t is not None and bool((t != 0).any()) for t in tracks]
    result = {"fingerprint": fp, "config": _jsonable(asdict(cfg)), "source_bundle": extra["source_bundle"],
              "source_files": {n: src_meta["files"][n] for n in ("encoder.safetensors", "codebook.safetensors")},
              "corpus": facts,
              "timings_s": timings, "total_s": round(time.time() - t_start, 1), "load_average": load,
              "yaapt": {"clips": len(tracks), "failed": sum(t is None for t in tracks),
                        "unvoiced_clips": len(tracks) - sum(voiced), "voiced_frames": int(normed.size)},
              "f0_bin_edges": [round(float(x), 6) for x in edges], "prosody": pcfg.to_dict(),
              "usage_train": stream_usage(train_items, prosody), "training": hist,
              "parameters": {"unit_lm": sum(p.numel() for p in lm.parameters()),
                             "encoder": sum(p.numel() for p in bb.encoder.parameters()),
                             "codebook": int(bb.codebook.centroids.numel())},
              "bundle_bytes": sum(p.stat().st_size for p in out.iterdir()),
              "final": {"best_epoch": hist["best_epoch"], **best}}
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(json.dumps(result, indent=1) + "\n")
    return result


def _options(typer):
    from speechprompt.paths import default_path

    return dict(
        src=typer.Option(default_path("models/default"), "--from", help="GSLM bundle whose encoder and codebook are reused"),
        out=typer.Option(Path("models/pgslm-default"), help="pgslm bundle folder to write"),
        seed=typer.Option(0, help="seed of the corpus plan (use the source bundle's) and of training"),
        minutes=typer.Option(None, help="corpus size in minutes (default 120; --small: 2.67)"),
        small=typer.Option(False, help="tiny corpus and model (under a minute; for tests and dry runs)"),
        epochs=typer.Option(None, help="training epochs (default 6)"),
        log_json=typer.Option(Path("docs/pgslm_training_log.json"), help="training log (JSON)"),
        f0=typer.Option("utterance", help="F0 stream: 'utterance' (log-F0 minus the clip mean: the pGSLM recipe) or "
                        "'absolute' (log-F0 unnormalised: keeps how high a voice is, e.g. for gender)"),
        f0_tracker=typer.Option("yaapt", help="F0 tracker: 'yaapt' (the pGSLM recipe, 5 ms frames) or 'yin' "
                                "(speechprompt/pitch.py, 20 ms frames: ~3 ms per 2 s clip instead of ~0.3 s)"),
        name=typer.Option(None, help="bundle name (default speechprompt-pgslm-default-v1)"),
        stage_work=typer.Option(None, help="train on build-default's stage files in this folder (TTS + real speech + "
                                "channel twins, e.g. .cache/build_default) instead of the clean TTS plan"),
    )


def register(app) -> None:
    """Add ``build-pgslm`` to a typer app (the ``speechprompt`` CLI mounts it). Like ``build-backbone``, the build
    runs in a child process with ``OMP_WAIT_POLICY=PASSIVE`` (``build_backbone.run_build_child``)."""
    import typer

    o = _options(typer)

    @app.command("build-pgslm")
    def build_pgslm_cmd(src: Path = o["src"], out: Path = o["out"], seed: int = o["seed"],
                        minutes: float = o["minutes"], small: bool = o["small"], epochs: int = o["epochs"],
                        log_json: Path = o["log_json"], f0: str = o["f0"], f0_tracker: str = o["f0_tracker"],
                        name: str = o["name"], stage_work: Path = o["stage_work"]) -> None:
        """Train a pGSLM (multi-stream unit LM + F0 bins) on a GSLM bundle's units and its build corpus."""
        if f0 not in F0_MODES:
            typer.echo(f"--f0 must be one of {', '.join(F0_MODES)}; got {f0!r}", err=True)
            raise typer.Exit(2)
        if f0_tracker not in F0_TRACKERS:
            typer.echo(f"--f0-tracker must be one of {', '.join(F0_TRACKERS)}; got {f0_tracker!r}", err=True)
            raise typer.Exit(2)
        raise typer.Exit(run_build_child("speechprompt.training.build_pgslm",
                                         {"--from": src, "--out": out, "--seed": seed, "--log-json": log_json,
                                          "--minutes": minutes, "--epochs": epochs, "--f0": f0,
                                          "--f0-tracker": f0_tracker, "--name": name, "--stage-work": stage_work},
                                         {"--small": small}))


def _main() -> None:
    import typer

    o = _options(typer)

    def run(src: Path = o["src"], out: Path = o["out"], seed: int = o["seed"], minutes: float = o["minutes"],
            small: bool = o["small"], epochs: int = o["epochs"], log_json: Path = o["log_json"], f0: str = o["f0"],
            f0_tracker: str = o["f0_tracker"], name: str = o["name"], stage_work: Path = o["stage_work"]) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        cfg = PGSLMBuildConfig.small(seed) if small else PGSLMBuildConfig(seed=seed)
        cfg = replace(cfg, f0=f0, f0_tracker=f0_tracker, **{k: v for k, v in (("minutes", minutes), ("epochs", epochs), ("name", name))
                                     if v is not None})
        result = build_pgslm(src, out, cfg, log_json, say=log.info, stage_work=stage_work)
        typer.echo(json.dumps({k: result[k] for k in ("fingerprint", "total_s", "final", "bundle_bytes")}))

    typer.run(run)


if __name__ == "__main__":
    _main()

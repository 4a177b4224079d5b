"""Official pGSLM files -> a backbone bundle of kind ``pgslm``; and their download.

Files (gslm_reference.md section 4; fairseq ``examples/textless_nlp/pgslm/README.md``): HuBERT base + km100 (the
GSLM speech2unit), a ``ulm_checkpoints/{continuous,discrete}_{no_prosody,prosody}_shift_1_1.pt`` multi-stream LM,
the F0 bin edges (``torch.save({32: np.ndarray[31]})``, ``quantize_f0.py``; the released file is
``vocoder/blizzard2013/mean_norm_log_f0_seg_bin.th``) and speaker F0 statistics (``f0_stats.pt``,
``data_utils.dump_speaker_f0_stat``: ``{speaker: {f0_mean, f0_std, logf0_mean, logf0_std}}``).

The model and stream configuration come from the checkpoint (``cfg.model`` + ``cfg.task``, or legacy ``args``):
dictionary sizes from the embeddings, flags (discrete/continuous streams, shifts, ignored inputs, log-F0, mean/std
normalisation, interpolation, ``max_token_duration``) from the task. The bundle is a GSLM bundle plus
``prosody.safetensors`` and a ``"prosody"`` section in ``backbone.json`` (docs/pgslm.md).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..backbone import fingerprint_of, save_bundle, settings_digest, sha256_file
from ..pgslm import SPECIALS, MultiStreamUnitLM, PGSLMConfig, StreamConfig, unit_dictionary
from ..prosody import F0Summary, Prosody, ProsodyConfig
from ..prosody_file import PROSODY_FILE, save_prosody
from ..unit_lm import state_dict_mismatch
from .checkpoint import CheckpointError, load_fairseq_checkpoint, model_config
from .gslm import BASE, Remote, gslm_files
from .unit_lm import unit_lm_config

VARIANTS = ("discrete_prosody_shift_1_1", "discrete_no_prosody_shift_1_1", "continuous_prosody_shift_1_1",
            "continuous_no_prosody_shift_1_1")


def pgslm_files(variant: str = "discrete_prosody_shift_1_1") -> list[Remote]:
    """HuBERT base, km100, the multi-stream LM ``variant``, the F0 bin edges and the speaker F0 statistics."""
    if variant not in VARIANTS:
        raise ValueError(f"pGSLM checkpoints are {VARIANTS}, not {variant!r}")
    voc = f"{BASE}/textless_nlp/pgslm/vocoder/blizzard2013"
    return [*gslm_files(100)[:2], Remote(f"{BASE}/textless_nlp/pgslm/ulm_checkpoints/{variant}.pt", f"{variant}.pt"),
            Remote(f"{voc}/mean_norm_log_f0_seg_bin.th", "mean_norm_log_f0_seg_bin.th"),
            Remote(f"{voc}/f0_stats.pt", "f0_stats.pt")]


def task_config(state: dict[str, Any]) -> dict[str, Any]:
    """The stored task configuration as a plain dict (``cfg.task`` or the legacy ``args`` Namespace)."""
    cfg = state.get("cfg")
    if cfg is not None and "task" in cfg and cfg["task"] is not None:
        task = cfg["task"]
        if not isinstance(task, dict):
            from omegaconf import OmegaConf

            task = OmegaConf.to_container(task, resolve=False)
        return dict(task)
    if state.get("args") is not None:
        return dict(vars(state["args"]))
    raise CheckpointError("checkpoint has no task configuration")


def _shifts(text: str) -> tuple[int, int]:
    try:
        dur, f0 = (int(v) for v in str(text).split(","))
    except ValueError:
        raise CheckpointError(f"stream_shifts {text!r} is not 'dur,f0'") from None
    return dur, f0


def convert_pgslm(state: dict[str, Any]) -> tuple[PGSLMConfig, dict[str, Tensor], ProsodyConfig]:
    """A loaded fairseq ``transformer_ulm`` checkpoint -> (model config, our state dict, stream flags as a prosody
    config), every key and shape checked. Raises ``CheckpointError``."""
    model, _ = model_config(state)
    task = task_config(state)
    name = str(model.get("_name") or model.get("arch") or "")
    if not name.startswith("transformer_ulm") or task.get("_name", task.get("task", "speech_unit_modeling")) \
            != "speech_unit_modeling":
        raise CheckpointError(f"not a pGSLM checkpoint (model {name!r}, task {task.get('_name', task.get('task'))!r})")
    sd = {k[len("decoder."):]: v for k, v in state["model"].items() if k.startswith("decoder.")}
    version = float(sd.pop("version")[0]) if "version" in sd else 1.0
    sd.pop("embed_positions._float_tensor", None)
    sd.pop("output_projection.weight", None)  # built by TransformerDecoder, unused by transformer_ulm (features_only)
    if "embed_tokens.weight" not in sd or "project_out_dim.weight" not in sd:
        raise CheckpointError("checkpoint lacks decoder.embed_tokens.weight / decoder.project_out_dim.weight")
    vocab = sd["embed_tokens.weight"].shape[0]
    g = task.get
    discrete_dur, discrete_f0 = bool(g("discrete_duration", False)), bool(g("discrete_f0", False))
    max_dur = int(g("max_token_duration", 20))
    f0_size = sd["embed_other_list.1.weight"].shape[0] if discrete_f0 and "embed_other_list.1.weight" in sd else 1
    dur_shift, f0_shift = _shifts(g("stream_shifts", "0,0"))
    streams = StreamConfig(n_units=vocab - len(SPECIALS), discrete_duration=discrete_dur,
                           duration_size=max_dur + 1 + len(SPECIALS) if discrete_dur else 1, discrete_f0=discrete_f0,
                           f0_size=f0_size, duration_shift=dur_shift, f0_shift=f0_shift,
                           ignore_duration_input=bool(g("ignore_duration_input", False)),
                           ignore_f0_input=bool(g("ignore_f0_input", False)))
    # transformer_ulm.build_model runs base_lm_architecture, which forces decoder_normalize_before=True on the copy
    # of the config it builds from; the stored cfg keeps the parser's value, so it is not read here.
    lm = replace(unit_lm_config(model, version, vocab), normalize_before=True, padding_idx=streams.pad,
                 share_input_output_embed=True)
    cfg = PGSLMConfig(lm, streams)
    if sd["project_out_dim.weight"].shape[0] != sum(streams.channel_sizes):
        raise CheckpointError(f"project_out_dim has {sd['project_out_dim.weight'].shape[0]} outputs; the task flags "
                              f"give {streams.channel_sizes}")
    if not cfg.lm.final_norm:
        sd.pop("layer_norm.weight", None)
        sd.pop("layer_norm.bias", None)
    want = MultiStreamUnitLM(cfg).state_dict()
    if (problem := state_dict_mismatch(sd, want)) is not None:
        raise CheckpointError(f"pGSLM keys do not match the configured architecture: {problem}")
    prosody_cfg = ProsodyConfig(discrete_duration=discrete_dur, max_token_duration=max_dur, discrete_f0=discrete_f0,
                                f0_bins=streams.f0_bins if discrete_f0 else ProsodyConfig.f0_bins,
                                log_f0=bool(g("log_f0", False)),
                                normalize_f0_mean=bool(g("normalize_f0_mean", False)),
                                normalize_f0_std=bool(g("normalize_f0_std", False)),
                                interpolate_f0=bool(g("interpolate_f0", False)))
    return cfg, {k: sd[k].float() for k in want}, prosody_cfg


def _torch_load_plain(path: Path) -> Any:
    """``torch.load`` allowing only numpy arrays/dtypes besides plain containers (operator-chosen files only)."""
    safe = [np.ndarray, np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32))]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        for fn in ("_reconstruct", "scalar"):
            try:
                safe.append(getattr(__import__(mod, fromlist=[fn]), fn))
            except (ImportError, AttributeError):
                pass
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any refusal with its cause
        raise CheckpointError(f"cannot load {path} with the allowed classes only: {e}") from None


def read_f0_bin_edges(path: str | os.PathLike, bins: int) -> Tensor:
    """``*_mean_norm_log_f0_bin.th`` (``{bins: array[bins-1]}``) -> edges ``[bins-1]`` f64. Raises ``CheckpointError``."""
    obj = _torch_load_plain(Path(path))
    if not isinstance(obj, dict) or bins not in obj:
        found = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} holds no F0 edges for {bins} bins (found {found})")
    edges = torch.as_tensor(np.asarray(obj[bins]), dtype=torch.float64)
    if edges.shape != (bins - 1,):
        raise CheckpointError(f"{path}: {bins} bins need {bins - 1} edges, got {list(edges.shape)}")
    return edges


def read_f0_stats(path: str | os.PathLike) -> dict[str, F0Summary]:
    """``f0_stats.pt`` / ``*.f0_stat.pt`` -> per-speaker summaries (a single flat entry becomes speaker ``"*"``)."""
    obj = _torch_load_plain(Path(path))
    if isinstance(obj, dict) and "logf0_mean" in obj:
        obj = {"*": obj}
    try:
        return {str(s): F0Summary(*(float(v[k]) for k in ("f0_mean", "f0_std", "logf0_mean", "logf0_std")))
                for s, v in obj.items()}
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a pGSLM F0 statistics file: {e!r}") from None


def write_pgslm_bundle(out: str | os.PathLike, *, name: str, encoder_cfg, encoder_state: dict[str, Tensor],
                       centroids: Tensor, lm_cfg: PGSLMConfig, lm_state: dict[str, Tensor], prosody: Prosody,
                       extra: dict | None = None, codebook_state: dict[str, Tensor] | None = None) -> str:
    """A GSLM bundle (``backbone.save_bundle``; ``codebook_state`` as there, e.g. a product codebook's factors) +
    ``prosody.safetensors`` + the ``"prosody"`` section, written in a temp folder and renamed into place; returns the
    fingerprint (which covers ``prosody.safetensors``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged = work / "bundle"
        save_bundle(staged, kind="pgslm", name=name, encoder_cfg=encoder_cfg, encoder_state=encoder_state,
                    centroids=centroids, lm_cfg=lm_cfg, lm_state=lm_state,
                    dictionary=unit_dictionary(lm_cfg.streams.n_units), extra=extra, codebook_state=codebook_state)
        save_prosody(prosody, staged / PROSODY_FILE)
        meta = json.loads((staged / "backbone.json").read_text())
        meta["files"][PROSODY_FILE] = sha256_file(staged / PROSODY_FILE)
        meta["fingerprint"] = fingerprint_of(meta["files"])
        meta["prosody"] = prosody.config.to_dict()
        meta["settings_digest"] = settings_digest(meta)  # the prosody section is a setting too
        (staged / "backbone.json").write_text(json.dumps(meta, indent=1) + "\n")
        if out.exists():
            os.replace(out, work / "old")
        os.replace(staged, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta["fingerprint"]


def make_random_pgslm_bundle(folder: str | os.PathLike, seed: int = 0, *, num_units: int = 20,
                             prosody_config: ProsodyConfig | None = None, name: str = "random-tiny-pgslm") -> str:
    """A tiny ``pgslm`` bundle with random weights, for tests and benchmarks only (never a served default); the
    pGSLM counterpart of ``backbone.make_random_bundle``. Returns its fingerprint.

    Parts: ``HubertConfig.tiny()`` encoder, ``num_units`` random centroids, a 2-layer d=32 multi-stream unit LM
    (vocab ``num_units + 4``, 1024 positions) whose streams follow ``prosody_config`` (default ``ProsodyConfig()``:
    discrete durations capped at 20 and 32 F0 bins, shifts 1,1 = ``discrete_prosody_shift_1_1``), and, for discrete
    F0, 31 bin edges evenly spaced over [-0.6, 0.6] in mean-normalised log-F0 (the released edges are quantiles of
    LibriLight log-F0; any sorted edges exercise the same code).
    """
    from ..encoder import HubertConfig, HubertEncoder

    torch.manual_seed(seed)  # the modules' own (fairseq-like) initialisation, made deterministic
    pcfg = prosody_config or ProsodyConfig()
    streams = StreamConfig(n_units=num_units, discrete_duration=pcfg.discrete_duration,
                           duration_size=pcfg.max_token_duration + 1 + len(SPECIALS) if pcfg.discrete_duration else 1,
                           discrete_f0=pcfg.discrete_f0, f0_size=pcfg.f0_bins + len(SPECIALS) if pcfg.discrete_f0 else 1)
    lm_cfg = PGSLMConfig.make(streams, embed_dim=32, ffn_dim=64, layers=2, heads=4, max_positions=1024)
    enc_cfg = HubertConfig.tiny()
    enc, lm = HubertEncoder(enc_cfg), MultiStreamUnitLM(lm_cfg)
    centroids = torch.randn(num_units, enc.dim)
    edges = torch.linspace(-0.6, 0.6, pcfg.f0_bins - 1, dtype=torch.float64) if pcfg.discrete_f0 else None
    return write_pgslm_bundle(folder, name=name, encoder_cfg=enc_cfg, encoder_state=enc.state_dict(),
                              centroids=centroids, lm_cfg=lm_cfg, lm_state=lm.state_dict(),
                              prosody=Prosody(pcfg, edges), extra={"random": True, "seed": seed})


def import_pgslm(hubert: Path, km_bin: Path, ulm_checkpoint: Path, out: Path, *, f0_bins: Path | None = None,
                 f0_stats: Path | None = None, layer: int = 6, name: str = "pgslm-hubert100",
                 normalization: str = "utterance") -> str:
    """Convert the official files into a ``pgslm`` bundle at ``out``; returns its fingerprint.

    ``f0_bins`` is required for discrete-F0 checkpoints; ``f0_stats`` (optional) keeps the speaker statistics for
    the speaker-mean variant. Raises ``CheckpointError`` / ``CodebookImportError`` / ``ProsodyError``.
    """
    from ..codebook import load_kmeans_centroids
    from .hubert import load_fairseq_hubert

    enc_cfg, enc_sd = load_fairseq_hubert(hubert, output_layer=layer)
    centroids = load_kmeans_centroids(km_bin)
    lm_cfg, lm_sd, pcfg = convert_pgslm(load_fairseq_checkpoint(ulm_checkpoint))
    if lm_cfg.streams.n_units != centroids.shape[0]:
        raise CheckpointError(f"pGSLM has {lm_cfg.streams.n_units} units but km.bin has {centroids.shape[0]}")
    if centroids.shape[1] != enc_cfg.embed_dim:
        raise CheckpointError(f"km.bin centroids are {centroids.shape[1]}-d but HuBERT features are {enc_cfg.embed_dim}-d")
    edges = None
    if pcfg.discrete_f0:
        if f0_bins is None:
            raise CheckpointError("a discrete-F0 pGSLM needs its F0 bin edges (mean_norm_log_f0_seg_bin.th)")
        edges = read_f0_bin_edges(f0_bins, pcfg.f0_bins)
    speakers = read_f0_stats(f0_stats) if f0_stats is not None else {}
    prosody = Prosody(ProsodyConfig(**{**pcfg.to_dict(), "normalization": normalization}), edges, speakers)
    sources = [p for p in (hubert, km_bin, ulm_checkpoint, f0_bins, f0_stats) if p is not None]
    extra = {"source": "official pGSLM", "files": {Path(p).name: sha256_file(Path(p)) for p in sources}}
    return write_pgslm_bundle(out, name=name, encoder_cfg=enc_cfg, encoder_state=enc_sd, centroids=centroids,
                              lm_cfg=lm_cfg, lm_state=lm_sd, prosody=prosody, extra=extra)


__all__ = ["VARIANTS", "convert_pgslm", "import_pgslm", "make_random_pgslm_bundle", "pgslm_files", "read_f0_bin_edges",
           "read_f0_stats", "task_config", "write_pgslm_bundle"]

"""Backbone bundles: one folder = encoder + k-means codebook + unit LM + dictionary, identified by a fingerprint.

Layout (docs/architecture.md): ``backbone.json`` + ``encoder.safetensors`` + ``codebook.safetensors`` +
``unit_lm.safetensors``. The fingerprint is the sha256 over the sorted ``name:sha256`` lines of the weight files,
so it changes with any weight and with nothing else; the settings in ``backbone.json`` (encoder, codebook, unit LM,
dictionary, prosody) are covered by its ``settings_digest`` instead (:func:`settings_digest`), checked on load, so a
hand edit is refused without changing any fingerprint. Loading reads safetensors only (no pickle at serve time);
official GSLM files are converted into this format once by ``importers/gslm.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .codebook import Codebook
from .dense import DenseConfig, DenseEncoder, build_dense, dense_config_from_dict
from .edge_gate import encoded_bounds
from .encoder import HubertConfig, HubertEncoder
from .pgslm import MultiStreamUnitLM, PGSLMConfig, check_prosody
from .pgslm import unit_token_map as pgslm_unit_token_map
from .prosody import Prosody, ProsodyConfig
from .prosody_file import PROSODY_FILE, load_prosody
from .unit_lm import UnitLM, UnitLMConfig, state_dict_mismatch
from .unit_views import UnitView
from .voice import VOICE_FILE, VoiceConfig, VoiceError, VoicePrefix

FORMAT_VERSION = 1
FILES = ("encoder.safetensors", "codebook.safetensors", "unit_lm.safetensors")
KIND_FILES = {"gslm": FILES, "pgslm": FILES + (PROSODY_FILE,)}
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


class BundleError(Exception):
    """A backbone bundle that is missing, malformed or whose weights do not match ``backbone.json``."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint_of(files: dict[str, str]) -> str:
    """sha256 over the sorted ``name:sha256`` lines of the weight files."""
    return hashlib.sha256("".join(f"{n}:{files[n]}\n" for n in sorted(files)).encode()).hexdigest()


def units_key(fingerprint: str, encoder: DenseConfig) -> str:
    """The units-cache key of a bundle (``Backbone.units_key``): ``fingerprint`` itself for an encoder without a level
    floor or an edge gate (every bundle before v8, so their caches stay valid), else sha256 over the fingerprint and
    those settings (v8's key, a floor alone, is unchanged by the gate's addition)."""
    floor, gate = getattr(encoder, "level_floor", None), getattr(encoder, "edge_gate", None)
    if floor is None and gate is None:
        return fingerprint
    text = f"{fingerprint}:level_floor={json.dumps(floor.to_dict() if floor else None, sort_keys=True)}"
    if gate is not None:
        text += f":edge_gate={json.dumps(gate.to_dict(), sort_keys=True)}"
    return hashlib.sha256(text.encode()).hexdigest()


SETTINGS = ("kind", "sample_rate", "encoder", "codebook", "unit_lm", "dictionary", "prosody", "voice")


def settings_digest(meta: dict) -> str:
    """sha256 over the canonical JSON of ``backbone.json``'s model settings (``SETTINGS``: not the name, ``extra``,
    the file digests or the fingerprint). Written with every bundle; a bundle written before it existed has none."""
    body = {k: meta[k] for k in SETTINGS if k in meta}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def natural_dictionary(num_units: int) -> list[str]:
    """fairseq dictionary for units in natural order: specials, then ``"0" .. "K-1"`` (unit i at index 4+i)."""
    return list(SPECIALS) + [str(i) for i in range(num_units)]


def unit_token_map(dictionary: tuple[str, ...] | list[str], num_units: int) -> Tensor:
    """Dictionary -> ``[K]`` i64: the LM token id of unit i (fairseq keeps dict.txt's own order).

    Raises ``BundleError`` unless the dictionary starts with the four fairseq specials and holds every unit once.
    """
    if tuple(dictionary[:4]) != SPECIALS:
        raise BundleError(f"dictionary must start with {SPECIALS}; got {list(dictionary[:4])}")
    index = {tok: i for i, tok in enumerate(dictionary)}
    missing = [str(u) for u in range(num_units) if str(u) not in index]
    if missing or len(index) != len(dictionary):
        raise BundleError(f"dictionary lacks units {missing[:5]} or has duplicate entries")
    return torch.tensor([index[str(u)] for u in range(num_units)], dtype=torch.long)


@dataclass(frozen=True)
class BackboneSpec:
    """What ``backbone.json`` says (besides file digests)."""

    kind: str
    name: str
    sample_rate: int
    encoder: DenseConfig  # HubertConfig, SpeechEmbeddingConfig or WhisperConfig (encoder.type)
    codebook_size: int
    unit_lm: UnitLMConfig
    dictionary: tuple[str, ...]
    fingerprint: str = ""
    extra: dict | None = None
    voice: VoiceConfig | None = None  # a voice prefix (voice.py): its tokens are unit ids codebook_size ..

    @property
    def num_units(self) -> int:
        """Unit ids the dictionary holds: the codebook's ``K`` plus the voice prefix's tokens."""
        return self.codebook_size + (self.voice.num_tokens if self.voice else 0)


class Backbone:
    """A loaded bundle: ``encoder`` (HuBERT, layer-L features), ``codebook`` ([K, D]), ``unit_lm``."""

    def __init__(self, spec: BackboneSpec, encoder: DenseEncoder, codebook: Codebook, unit_lm: UnitLM,
                 prosody: Prosody | None = None, voice: VoicePrefix | None = None):
        self.spec, self.encoder, self.codebook, self.unit_lm = spec, encoder, codebook, unit_lm
        self.prosody = prosody  # pgslm only: F0 bin edges and normalisation
        self.voice = voice  # gslm only, optional: the voice prefix (spec.voice's module)
        # counted before a precision mode may swap linears for int8 ones (which hold no nn.Parameter)
        self.parameter_count = sum(p.numel() for m in (encoder, unit_lm) for p in m.parameters())
        self.precision: dict = {"mode": "fp32", "encoder": "fp32", "unit_lm": "fp32"}  # precision.apply_precision sets it
        if spec.kind == "pgslm":
            try:
                self.unit_to_token = pgslm_unit_token_map(spec.dictionary, spec.codebook_size)
            except ValueError as e:
                raise BundleError(str(e)) from None
        else:
            self.unit_to_token = unit_token_map(spec.dictionary, spec.num_units)

    @property
    def fingerprint(self) -> str:
        return self.spec.fingerprint

    @property
    def units_key(self) -> str:
        """What a clip's units depend on, for units caches: the fingerprint, or, when the encoder settings name a
        level floor or an edge gate (``level.py``, ``edge_gate.py``: settings outside the weights), sha256 of the
        fingerprint and those settings."""
        return units_key(self.spec.fingerprint, self.spec.encoder)

    def encoded_span(self, wav: Tensor) -> tuple[float, float]:
        """``[N]`` samples at ``sample_rate`` (a tensor or numpy array) -> ``(start_s, end_s)``: the part the dense model
        reads, which its units tile (``explain.span_seconds``): the whole clip unless the encoder's edge gate drops
        silent edges (``edge_gate.py``)."""
        start, stop = encoded_bounds(self.spec.encoder, wav)
        return start / self.spec.sample_rate, stop / self.spec.sample_rate

    @property
    def num_units(self) -> int:
        """Unit ids a clip's units can hold (``spec.num_units``): a unit histogram's length."""
        return self.spec.num_units

    def unit_extractor(self):
        """The bundle's audio -> units path (``units.UnitExtractor``: encoder, codebook, dedup, voice prefix)."""
        from .units import UnitExtractor

        return UnitExtractor.from_parts(self.encoder, self.codebook, deduplicate=True, voice=self.voice)

    @property
    def device(self) -> torch.device:
        return next(self.unit_lm.parameters()).device

    def info(self) -> dict:
        """JSON description (``GET /v1/backbone``)."""
        c = self.spec.unit_lm
        return {"kind": self.spec.kind, "name": self.spec.name, "fingerprint": self.spec.fingerprint,
                "sample_rate": self.spec.sample_rate, "hop_size": self.encoder.hop_size,
                "encoder": {"type": getattr(self.spec.encoder, "type", "hubert"),
                            "layers_kept": self.spec.encoder.output_layer, "dim": self.encoder.dim,
                            **({"pitch": pitch.to_dict()} if (pitch := getattr(self.spec.encoder, "pitch", None))
                               else {}),
                            **({"level_floor": floor.to_dict()}
                               if (floor := getattr(self.spec.encoder, "level_floor", None)) else {}),
                            **({"edge_gate": gate.to_dict()}
                               if (gate := getattr(self.spec.encoder, "edge_gate", None)) else {})},
                "codebook_size": self.spec.codebook_size,
                # the clusters view a package may name on this backbone (unit_views.py; null: not a product codebook)
                "unit_view": view.to_dict() if self.spec.kind == "gslm" and (
                    view := UnitView.of_codebook(self.codebook)) else None,
                "unit_lm": {"layers": c.layers, "embed_dim": c.embed_dim, "heads": c.heads, "ffn_dim": c.ffn_dim,
                            "vocab_size": c.vocab_size},
                "parameters": self.parameter_count, "precision": self.precision,
                "device": str(self.device), **({"extra": self.spec.extra} if self.spec.extra else {}),
                **({"prosody": self.prosody.info()} if self.prosody is not None else {}),
                **({"voice": self.spec.voice.to_dict()} if self.spec.voice is not None else {})}

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True) -> Backbone:
        """Read a bundle folder; with ``verify`` every weight file's sha256 is checked against backbone.json.

        Raises ``BundleError`` (missing files, bad JSON, digest mismatch, unexpected weight keys/shapes, settings
        edited after the bundle was written: ``settings_digest``).
        """
        folder = Path(folder)
        try:
            meta = json.loads((folder / "backbone.json").read_text())
        except (OSError, ValueError) as e:
            raise BundleError(f"cannot read {folder / 'backbone.json'}: {e}") from None
        files, kind = meta.get("files", {}), meta.get("kind")
        if kind not in KIND_FILES:
            raise BundleError(f"unknown backbone kind {kind!r}; expected one of {sorted(KIND_FILES)}")
        want = KIND_FILES[kind] + ((VOICE_FILE,) if "voice" in meta else ())
        if sorted(files) != sorted(want):
            raise BundleError(f"backbone.json of a {kind} bundle{' with a voice prefix' if 'voice' in meta else ''} "
                              f"must list {list(want)}; has {sorted(files)}")
        if "voice" in meta and kind != "gslm":
            raise BundleError(f"a voice prefix is a gslm bundle's option; this bundle is {kind}")
        if verify:
            for n, digest in files.items():
                if not (folder / n).is_file() or sha256_file(folder / n) != digest:
                    raise BundleError(f"{folder / n} is missing or does not match its sha256 in backbone.json")
        if meta.get("fingerprint") != fingerprint_of(files):
            raise BundleError("backbone.json fingerprint does not match its file digests")
        try:
            voice_cfg = VoiceConfig.from_dict(meta["voice"]) if "voice" in meta else None
        except VoiceError as e:
            raise BundleError(f"backbone.json 'voice': {e}") from None
        spec = BackboneSpec(kind=meta["kind"], name=meta.get("name", folder.name), sample_rate=meta["sample_rate"],
                            encoder=_dense_config(meta["encoder"]), codebook_size=meta["codebook"]["size"],
                            unit_lm=UnitLMConfig.from_dict(meta["unit_lm"]), dictionary=tuple(meta["dictionary"]),
                            fingerprint=meta["fingerprint"], extra=meta.get("extra"), voice=voice_cfg)
        encoder, lm, prosody = build_dense(spec.encoder), None, None
        if spec.kind == "pgslm":
            try:
                lm = MultiStreamUnitLM(PGSLMConfig.from_dict(meta["unit_lm"]))
                prosody = load_prosody(folder / PROSODY_FILE)
                check_prosody(lm.streams, prosody)
            except (ValueError, TypeError) as e:  # ProsodyError is a ValueError
                raise BundleError(f"pgslm bundle {folder}: {e}") from None
            try:  # compared as configs: a field added later (f0_tracker) takes its default in older bundles
                same = ProsodyConfig.from_dict(meta.get("prosody") or {}) == prosody.config
            except (ValueError, TypeError):
                same = False
            if not same or "prosody" not in meta:
                raise BundleError("backbone.json 'prosody' differs from prosody.safetensors (the fingerprinted one)")
        else:
            lm = UnitLM(spec.unit_lm)
        enc_sd = load_file(str(folder / "encoder.safetensors"))
        if hasattr(encoder, "pitch_mismatch") and (why := encoder.pitch_mismatch(enc_sd)):
            raise BundleError(why)
        _load_strict(encoder, enc_sd, "encoder")
        _load_strict(lm, load_file(str(folder / "unit_lm.safetensors")), "unit_lm")
        try:
            codebook = Codebook.from_file(load_file(str(folder / "codebook.safetensors")))
        except ValueError as e:
            raise BundleError(f"{folder / 'codebook.safetensors'}: {e}") from None
        voice = None
        if voice_cfg is not None:
            if voice_cfg.reads_encoder and (not hasattr(encoder, "block_means") or
                                            voice_cfg.layer > spec.encoder.layers or voice_cfg.dim != spec.encoder.dim):
                raise BundleError(f"the voice prefix reads block {voice_cfg.layer} ({voice_cfg.dim} dimensions) of a "
                                  f"Whisper encoder; this bundle's encoder is {getattr(spec.encoder, 'type', 'hubert')} "
                                  f"with {getattr(spec.encoder, 'layers', '?')} blocks of "
                                  f"{getattr(spec.encoder, 'dim', '?')}")
            voice = VoicePrefix(voice_cfg)
            _load_strict(voice, load_file(str(folder / VOICE_FILE)), "voice")
        # last, so that an edit the checks above name (an unknown encoder type, pitch settings) keeps its own message
        if "settings_digest" in meta and meta["settings_digest"] != settings_digest(meta):
            raise BundleError(f"{folder / 'backbone.json'}: its settings ({', '.join(SETTINGS)}) differ from those the "
                              "bundle was written with (settings_digest); restore the file or rebuild the bundle")
        bb = cls(spec, encoder.eval(), codebook.eval(), lm.eval(), prosody, voice)
        for m in (bb.encoder, bb.codebook, bb.unit_lm) + ((voice,) if voice is not None else ()):
            m.to(device).requires_grad_(False)
        return bb


def _dense_config(d: dict) -> DenseConfig:
    try:
        return dense_config_from_dict(d)
    except (ValueError, TypeError) as e:
        raise BundleError(f"backbone.json 'encoder': {e}") from None


def _load_strict(module: torch.nn.Module, sd: dict[str, Tensor], what: str) -> None:
    if (problem := state_dict_mismatch(sd, module.state_dict())) is not None:
        raise BundleError(f"{what} weights do not fit its config: {problem}")
    module.load_state_dict(sd)


def save_bundle(folder: str | os.PathLike, *, kind: str, name: str, encoder_cfg: DenseConfig,
                encoder_state: dict[str, Tensor], centroids: Tensor, lm_cfg: UnitLMConfig, lm_state: dict[str, Tensor],
                dictionary: list[str], sample_rate: int = 16000, extra: dict | None = None,
                voice_cfg: VoiceConfig | None = None, voice_state: dict[str, Tensor] | None = None,
                codebook_state: dict[str, Tensor] | None = None) -> str:
    """Write a bundle atomically (into a temp folder, then renamed); returns the fingerprint. Weights are stored
    float32, except float16 tensors, which stay float16 (an imported encoder's own precision). With ``voice_cfg``
    the voice prefix's buffers (``voice_state``) go to ``voice.safetensors`` and its settings to ``"voice"``.
    ``codebook_state`` (``Codebook.file_state()``, e.g. a product codebook's factors) replaces ``{"centroids"}`` in
    ``codebook.safetensors``; it must expand to ``centroids`` (ValueError otherwise)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    if codebook_state is not None and not torch.equal(Codebook.from_file(codebook_state).centroids,
                                                      centroids.detach().cpu().float()):
        raise ValueError("codebook_state does not expand to the centroids given")
    state = {"encoder.safetensors": encoder_state, "codebook.safetensors": codebook_state or {"centroids": centroids},
             "unit_lm.safetensors": lm_state}
    if voice_cfg is not None:
        state[VOICE_FILE] = voice_state or {}
    files = {}
    for n, sd in state.items():
        # float16 tensors (Whisper's imported weights) stay float16, the rest is stored float32; modules load
        # them into their float32 parameters
        save_file({k: v.detach().to("cpu", torch.float16 if v.dtype == torch.float16 else torch.float32).contiguous()
                   for k, v in sd.items()}, str(tmp / n))
        files[n] = sha256_file(tmp / n)
    meta = {"format_version": FORMAT_VERSION, "kind": kind, "name": name, "sample_rate": sample_rate,
            "encoder": encoder_cfg.to_dict(), "codebook": {"size": int(centroids.shape[0]),
                                                           "dim": int(centroids.shape[1])},
            "unit_lm": lm_cfg.to_dict(), "dictionary": list(dictionary), "files": files,
            "fingerprint": fingerprint_of(files), **({"extra": extra} if extra else {}),
            **({"voice": voice_cfg.to_dict()} if voice_cfg is not None else {})}
    meta["settings_digest"] = settings_digest(meta)
    (tmp / "backbone.json").write_text(json.dumps(meta, indent=1) + "\n")
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        os.replace(folder, old)
        os.replace(tmp, folder)
        for p in old.iterdir():
            p.unlink()
        old.rmdir()
    else:
        os.replace(tmp, folder)
    return meta["fingerprint"]


def save_backbone(bb: Backbone, folder: str | os.PathLike) -> str:
    """Write a loaded backbone back to a bundle folder."""
    return save_bundle(folder, kind=bb.spec.kind, name=bb.spec.name, encoder_cfg=bb.spec.encoder,
                       encoder_state=bb.encoder.state_dict(), centroids=bb.codebook.centroids,
                       lm_cfg=bb.spec.unit_lm, lm_state=bb.unit_lm.state_dict(), dictionary=list(bb.spec.dictionary),
                       sample_rate=bb.spec.sample_rate, extra=bb.spec.extra, voice_cfg=bb.spec.voice,
                       voice_state=bb.voice.file_state() if bb.voice is not None else None,
                       codebook_state=bb.codebook.file_state())


def make_random_bundle(folder: str | os.PathLike, seed: int = 0, *, num_units: int = 20,
                       encoder_cfg: HubertConfig | None = None, lm_cfg: UnitLMConfig | None = None,
                       name: str = "random-tiny", registers: int = 0) -> str:
    """A tiny bundle with random weights, for tests and benchmarks only (never the default backbone). ``registers``
    > 0: a product codebook of ``num_units // registers`` clusters x ``registers`` registers of 2 dimensions
    (``Codebook.product``, as the default's pitch registers; ``num_units`` must be a multiple)."""
    torch.manual_seed(seed)  # the modules' own (fairseq-like) initialisation, made deterministic
    enc_cfg = encoder_cfg or HubertConfig.tiny()
    lm_cfg = lm_cfg or UnitLMConfig(vocab_size=num_units + 4, embed_dim=32, ffn_dim=64, layers=2, heads=4,
                                    max_positions=1024)
    enc, lm = HubertEncoder(enc_cfg), UnitLM(lm_cfg)
    centroids, codebook_state = torch.randn(num_units, enc.dim), None
    if registers:
        product = Codebook.product(torch.randn(num_units // registers, enc.dim - 2), torch.randn(registers, 2))
        centroids, codebook_state = product.centroids, product.file_state()
    return save_bundle(folder, kind="gslm", name=name, encoder_cfg=enc_cfg, encoder_state=enc.state_dict(),
                       centroids=centroids, lm_cfg=lm_cfg, lm_state=lm.state_dict(),
                       dictionary=natural_dictionary(num_units), extra={"random": True, "seed": seed},
                       codebook_state=codebook_state)

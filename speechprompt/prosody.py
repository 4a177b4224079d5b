"""Prosody streams for pGSLM: a duration and an F0 value per deduplicated unit, from the same units GSLM uses.

``[N] f32 @16 kHz + Units(units [M], durations [M]) -> ProsodyUnits(..., f0 [M] f32 Hz, f0_stats)`` (the expensive,
normalisation-independent part: one YAAPT run per clip, cached with the units), then per row
``duration_values -> [M]`` and ``f0_values -> [M]`` (the model's inputs; microseconds).

Follows fairseq ``fairseq/data/codedataset.py`` (``get_f0``, ``align_f0_to_durations``, ``interpolate_f0``,
``CodeDataset.preprocess_f0``, ``naive_quantize``), ``fairseq/tasks/speech_ulm_task.py`` (``UnitDictionary(clip=True)``
caps discrete durations at ``max_token_duration``) and ``examples/textless_nlp/pgslm/`` (``preprocess_f0.py``: a YAAPT
failure gives an all-unvoiced clip; ``prepare_dataset.py``: alignment tolerance 5 unit frames, statistics over the
voiced *frames*; ``data_utils.F0Stat``; ``quantize_f0.py``: bins = edges from training-set percentiles).

Normalisation (docs/pgslm.md): pGSLM subtracts the *speaker* mean log-F0 (``--normalize-f0-mean``, statistics per
speaker from the training manifest). A server classifying one clip has no speaker label and no speaker statistics,
so the default here is the *utterance* mean: the same statistic (mean log-F0 over the voiced YAAPT frames,
``F0Stat`` semantics, bit-exact) computed over the clip alone. The speaker-mean variant stays available for training
(pass a speaker's :class:`F0Summary`, e.g. :meth:`F0Stats.merge` over that speaker's clips, or imported statistics).

``librosa`` is not needed: ``librosa.util.normalize(x) * 0.95`` (max-abs peak normalisation) is :func:`peak_normalize`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from .units import Units

NORMALIZATIONS = ("utterance", "speaker")
F0_TRACKERS = ("yaapt", "yin")  # frame_f0: pGSLM's YAAPT, or pitch.py's YIN


class ProsodyError(ValueError):
    """Prosody that cannot be computed or a prosody file/config that is malformed."""


@dataclass(frozen=True)
class ProsodyConfig:
    """How the duration and F0 streams are made (defaults: the pGSLM README's training command, i.e. discrete
    streams, ``--log-f0 --normalize-f0-mean --interpolate-f0``, 32 F0 bins, durations capped at 20).

    YAAPT parameters are ``codedataset.get_f0``'s; ``align_tolerance`` is ``prepare_dataset._align_f0``'s
    ``frm_tol`` (unit frames); the F0 flags mirror the task flags a pGSLM checkpoint stores.
    """

    sample_rate: int = 16000
    hop_size: int = 320
    frame_length_ms: float = 20.0
    frame_space_ms: float = 5.0
    nccf_thresh1: float = 0.25
    tda_frame_length_ms: float = 25.0
    peak: float = 0.95
    align_tolerance: int = 5
    discrete_duration: bool = True
    max_token_duration: int = 20
    discrete_f0: bool = True
    f0_bins: int = 32
    log_f0: bool = True
    normalize_f0_mean: bool = True
    normalize_f0_std: bool = False
    interpolate_f0: bool = True
    normalization: str = "utterance"
    f0_tracker: str = "yaapt"  # "yaapt" (the recipe) or "yin" (pitch.yin: ~100x faster; frame_f0)

    def __post_init__(self):
        if self.f0_tracker not in F0_TRACKERS:
            raise ProsodyError(f"f0_tracker must be one of {F0_TRACKERS}, not {self.f0_tracker!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ProsodyError(f"normalization must be one of {NORMALIZATIONS}, not {self.normalization!r}")
        if self.normalize_f0_std and not self.normalize_f0_mean:
            raise ProsodyError("normalize_f0_std needs normalize_f0_mean (as pGSLM's task asserts)")
        if self.max_token_duration < 1 or self.f0_bins < 2:
            raise ProsodyError("max_token_duration must be >= 1 and f0_bins >= 2")

    @property
    def f0_code_ratio(self) -> float:
        """F0 frames per unit frame: ``hop / (sr * frame_space)`` (4.0 for HuBERT @ 16 kHz with 5 ms frames)."""
        return self.hop_size / (self.sample_rate * self.frame_space_ms / 1000.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ProsodyConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ProsodyError(f"unknown prosody config fields {unknown}")
        return cls(**d)


def peak_normalize(x: np.ndarray) -> np.ndarray:
    """``librosa.util.normalize(x)`` for 1-D ``x``: ``x / max|x|`` (left unscaled if ``max|x|`` < the dtype's tiny).

    Raises :class:`ProsodyError` on non-finite samples (librosa raises ``ParameterError``).
    """
    if not np.isfinite(x).all():
        raise ProsodyError("audio contains NaN or Inf samples")
    peak = np.max(np.abs(x)) if x.size else 0.0
    if peak < np.finfo(x.dtype).tiny:
        return x.copy()
    return x / peak


def frame_f0(wav: np.ndarray, cfg: ProsodyConfig) -> np.ndarray:
    """fairseq ``codedataset.get_f0``: ``[N]`` samples @ ``cfg.sample_rate`` -> F0 ``[F]`` f64 Hz per 5 ms frame, 0 =
    unvoiced. Audio is computed in float64 (``soundfile.read``'s dtype in the recipe), peak-normalised x 0.95,
    zero-padded by half a frame (160 samples) each side, then ``pYAAPT.yaapt`` with pGSLM's parameters.

    With ``cfg.f0_tracker == "yin"``: the same peak normalisation, then YIN (``pitch.yin``, 60-500 Hz, a 1024-sample
    difference window) on frames every ``frame_space_ms`` whose centres fall where YAAPT's frames start in the
    padded signal (frame ``i`` centred on sample ``i * space``), ``N // space + 1`` frames; ~3 ms of CPU per 2 s
    clip at 20 ms frames, where YAAPT takes ~0.3 s.
    """
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim != 1:
        raise ProsodyError(f"audio must be 1-D [N], got shape {x.shape}")
    if cfg.f0_tracker == "yin":
        return _yin_f0(peak_normalize(x) * cfg.peak, cfg)
    import amfm_decompy.basic_tools as basic
    import amfm_decompy.pYAAPT as pYAAPT

    to_pad = int(cfg.frame_length_ms / 1000 * cfg.sample_rate) // 2
    x = np.pad(peak_normalize(x) * cfg.peak, (to_pad, to_pad), "constant", constant_values=0)
    pitch = pYAAPT.yaapt(basic.SignalObj(x, cfg.sample_rate), frame_length=cfg.frame_length_ms,
                         frame_space=cfg.frame_space_ms, nccf_thresh1=cfg.nccf_thresh1,
                         tda_frame_length=cfg.tda_frame_length_ms)
    return pitch.samp_values


def _yin_f0(x: np.ndarray, cfg: ProsodyConfig) -> np.ndarray:
    from .pitch import PitchConfig, frame_segments, yin

    space = int(round(cfg.sample_rate * cfg.frame_space_ms / 1000.0))
    pc = PitchConfig(sample_rate=cfg.sample_rate, hop=space, centre=0)
    f0, voiced = yin(frame_segments(torch.from_numpy(x.astype(np.float32)), len(x) // space + 1, pc), pc)
    return torch.where(voiced, f0, torch.zeros_like(f0)).double().numpy()


def align_f0_to_durations(f0: Tensor, durations: Tensor, ratio: float, tol: float) -> Tensor:
    """fairseq ``codedataset.align_f0_to_durations``: frame F0 ``[F]`` f32 -> mean voiced F0 per segment ``[M]`` f32.

    The F0 track is cut or edge-padded to ``ratio * sum(durations)`` frames; segment i covers frames
    ``[int(o_i), int(o_i + ratio * d_i))``; a segment with no voiced frame gets 0. Raises :class:`ProsodyError` if
    the lengths differ by more than ``tol`` F0 frames (the recipe asserts).
    """
    targ_len = int(ratio * int(durations.sum()))
    diff = f0.size(0) - targ_len
    if abs(diff) > tol:
        raise ProsodyError(f"F0 track has {f0.size(0)} frames but the units cover {targ_len} (tolerance {tol})")
    if diff > 0:
        f0 = f0[:targ_len]
    elif diff < 0:
        f0 = torch.cat((f0, f0.new_full((-diff,), f0[-1] if f0.numel() else 0.0)), 0)
    out = torch.zeros(len(durations), dtype=f0.dtype)
    offset = 0.0
    for i, dur in enumerate(durations.tolist()):
        span = dur * ratio
        seg = f0[int(offset):int(offset + span)]
        seg = seg[seg != 0]
        if len(seg):
            out[i] = seg.mean()
        offset += span
    return out


@dataclass(frozen=True)
class F0Summary:
    """Normalisation statistics (pGSLM's ``*.f0_stat.pt`` entry): means/stds of F0 and log-F0 over voiced frames."""

    f0_mean: float
    f0_std: float
    logf0_mean: float
    logf0_std: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class F0Stats:
    """Sufficient statistics of voiced F0 frames, accumulated exactly like pGSLM's ``data_utils.F0Stat``.

    Sums are float32 values (``torch`` float32 sums, as ``F0Stat`` keeps them) stored as Python floats; ``n`` frames.
    """

    n: int = 0
    sum_f0: float = 0.0
    sum_f0_sq: float = 0.0
    sum_log: float = 0.0
    sum_log_sq: float = 0.0

    @classmethod
    def from_frames(cls, f0: Tensor) -> F0Stats:
        """Frame F0 ``[F]`` f32 (0 = unvoiced) -> statistics of its voiced frames (``F0Stat.update``)."""
        x = f0[f0 != 0].to(torch.float32)
        z = x.log()
        return cls(int(x.numel()), x.sum().item(), (x**2).sum().item(), z.sum().item(), (z**2).sum().item())

    @classmethod
    def merge(cls, stats: list[F0Stats]) -> F0Stats:
        """Combine clips in order (float32 running sums, as ``F0Stat`` updated clip by clip would give)."""
        acc = [None] * 4
        n = 0
        for s in stats:
            n += s.n
            vals = (s.sum_f0, s.sum_f0_sq, s.sum_log, s.sum_log_sq)
            acc = [torch.tensor(v, dtype=torch.float32) if a is None else a + torch.tensor(v, dtype=torch.float32)
                   for a, v in zip(acc, vals)]
        return cls(n, *(0.0 if a is None else a.item() for a in acc))

    def summary(self) -> F0Summary:
        """Means and (population) stds as ``F0Stat.mean/std/mean_log/std_log`` compute them in float32; NaN if n=0."""
        n = float(self.n)
        x, x2, z, z2 = (torch.tensor(v, dtype=torch.float32) for v in
                        (self.sum_f0, self.sum_f0_sq, self.sum_log, self.sum_log_sq))
        mean, mean_log = x / n, z / n
        return F0Summary(mean.item(), ((x2 / n - mean**2) ** 0.5).item(), mean_log.item(),
                         ((z2 / n - mean_log**2) ** 0.5).item())


@dataclass(frozen=True)
class ProsodyUnits(Units):
    """:class:`Units` plus the F0 of each unit segment; what the units cache keeps for a pGSLM backbone.

    ``f0 [M]`` f32 Hz: mean voiced F0 of each deduplicated segment (0 = unvoiced), before any log/normalisation.
    ``f0_stats``: the clip's voiced-frame statistics (its utterance mean; also mergeable into speaker statistics).
    """

    f0: Tensor  # [M] f32 Hz
    f0_stats: F0Stats


def interpolate_f0(f0: Tensor) -> Tensor:
    """fairseq ``codedataset.interpolate_f0``: linear interpolation over unvoiced (0) values between voiced ones;
    outside the first/last voiced value stays 0; unchanged with fewer than two voiced values."""
    from scipy.interpolate import interp1d

    t = np.arange(f0.shape[0])
    voiced = (f0 != 0).numpy()
    if voiced.sum() <= 1:
        return f0
    y = interp1d(t[voiced], f0.numpy()[voiced], bounds_error=False, kind="linear", fill_value=0)(t)
    return torch.tensor(y, dtype=f0.dtype)


def quantize_f0(x: Tensor, edges: Tensor) -> Tensor:
    """fairseq ``codedataset.naive_quantize``: bin = number of edges strictly below the value -> ``[M]`` i64."""
    return (x.view(-1, 1).to(edges.dtype) > edges.view(1, -1)).long().sum(dim=1)


class Prosody:
    """The backbone's prosody definition: config + F0 bin edges ``[bins-1]`` f64 + optional speaker statistics."""

    def __init__(self, config: ProsodyConfig, f0_bin_edges: Tensor | None = None,
                 speakers: dict[str, F0Summary] | None = None):
        if config.discrete_f0:
            if f0_bin_edges is None or f0_bin_edges.dim() != 1 or f0_bin_edges.numel() != config.f0_bins - 1:
                raise ProsodyError(f"discrete F0 needs {config.f0_bins - 1} bin edges, got "
                                   f"{None if f0_bin_edges is None else list(f0_bin_edges.shape)}")
            if not torch.isfinite(f0_bin_edges).all() or (f0_bin_edges[1:] < f0_bin_edges[:-1]).any():
                raise ProsodyError("F0 bin edges must be finite and non-decreasing")
            f0_bin_edges = f0_bin_edges.to(torch.float64)
        self.config, self.f0_bin_edges, self.speakers = config, f0_bin_edges, dict(speakers or {})

    # -- extraction (once per clip) ---------------------------------------------------------------------------
    def extract(self, wav: np.ndarray | Tensor, units: Units) -> ProsodyUnits:
        """One clip ``[N]`` @ ``sample_rate`` + its deduplicated units -> :class:`ProsodyUnits`.

        A YAAPT failure leaves the clip unvoiced (all segment F0 = 0), as pGSLM's ``preprocess_f0.py`` does.
        Raises :class:`ProsodyError` for non-finite audio or F0/unit lengths that disagree.
        """
        wav = wav.numpy() if isinstance(wav, Tensor) else wav
        x = np.asarray(wav, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ProsodyError("audio contains NaN or Inf samples")
        try:
            f0 = torch.from_numpy(frame_f0(x, self.config).astype(np.float32))
        except ProsodyError:
            raise
        except Exception:  # noqa: BLE001 - YAAPT throws in rare cases; the recipe then treats the clip as unvoiced
            f0 = None
        return self.from_frames(f0, units)

    def from_frames(self, f0: Tensor | None, units: Units) -> ProsodyUnits:
        """A clip's frame F0 track ``[F]`` f32 Hz (:func:`frame_f0`; None = YAAPT failed, all unvoiced) + its units
        -> :class:`ProsodyUnits` (segment F0 and voiced-frame statistics). Raises :class:`ProsodyError` if the
        track and the units disagree in length beyond the tolerance."""
        if f0 is None:
            seg, stats = torch.zeros(len(units.durations), dtype=torch.float32), F0Stats()
        else:
            ratio = self.config.f0_code_ratio
            seg = align_f0_to_durations(f0, units.durations, ratio, tol=self.config.align_tolerance * ratio)
            stats = F0Stats.from_frames(f0)
        return ProsodyUnits(units=units.units, durations=units.durations, frames=units.frames, f0=seg,
                            f0_stats=stats)

    # -- model inputs (per row) -------------------------------------------------------------------------------
    def duration_values(self, durations: Tensor) -> Tensor:
        """Run lengths ``[M]`` (20 ms frames) -> duration inputs: discrete models cap them at ``max_token_duration``
        (``UnitDictionary(n_units=max+1, clip=True)``) -> i64; continuous models take them uncapped as f32."""
        if self.config.discrete_duration:
            return durations.to(torch.long).clamp(max=self.config.max_token_duration)
        return durations.to(torch.float32)

    def stats_for(self, pu: ProsodyUnits, stats: F0Summary | None = None) -> F0Summary | None:
        """The statistics that normalise ``pu``: ``stats`` if given; else the clip's own (utterance normalisation).

        Raises :class:`ProsodyError` for speaker normalisation without statistics.
        """
        if stats is not None:
            return stats
        if self.config.normalization == "speaker" and (self.config.normalize_f0_mean or self.config.normalize_f0_std):
            raise ProsodyError("speaker normalisation needs the speaker's F0 statistics")
        return pu.f0_stats.summary()

    def normalize_f0(self, f0: Tensor, stats: F0Summary | None) -> Tensor:
        """``CodeDataset.preprocess_f0``: [interpolate] -> log on voiced values -> minus mean -> [/ std]; 0 stays 0."""
        c = self.config
        f0 = f0.clone().to(torch.float32)
        if c.interpolate_f0:
            f0 = interpolate_f0(f0)
        mask = f0 != 0
        if c.log_f0:
            f0[mask] = f0[mask].log()
        if c.normalize_f0_mean:
            mean = stats.logf0_mean if c.log_f0 else stats.f0_mean
            f0[mask] = f0[mask] - torch.tensor(mean, dtype=torch.float32)
        if c.normalize_f0_std:
            std = stats.logf0_std if c.log_f0 else stats.f0_std
            f0[mask] = f0[mask] / torch.tensor(std, dtype=torch.float32)
        return f0

    def encode_f0(self, values: Tensor) -> Tensor:
        """Normalised F0 -> model input: bins ``[M]`` i64 (discrete) or the values themselves f32 (continuous)."""
        return quantize_f0(values, self.f0_bin_edges) if self.config.discrete_f0 else values

    def f0_values(self, pu: ProsodyUnits, stats: F0Summary | None = None) -> Tensor:
        """Segment F0 ``[M]`` -> F0 inputs ``[M]`` (see :meth:`stats_for` for which statistics normalise)."""
        return self.encode_f0(self.normalize_f0(pu.f0, self.stats_for(pu, stats)))

    def speaker(self, name: str) -> F0Summary:
        """Imported statistics of one speaker. Raises :class:`ProsodyError` if unknown."""
        if name not in self.speakers:
            raise ProsodyError(f"no F0 statistics for speaker {name!r}")
        return self.speakers[name]

    def info(self) -> dict:
        return {**self.config.to_dict(), "speakers": len(self.speakers)}


class ProsodyExtractor:
    """Units and prosody of clips in one call: ``UnitExtractor`` (batched HuBERT + codebook + dedup) then one YAAPT
    run per clip. Results are :class:`ProsodyUnits` (a :class:`Units`), so a units cache stores the prosody too."""

    def __init__(self, unit_extractor, prosody: Prosody):
        c = prosody.config
        if (unit_extractor.sample_rate, unit_extractor.hop_size) != (c.sample_rate, c.hop_size):
            raise ProsodyError(f"prosody is defined for {c.sample_rate} Hz / hop {c.hop_size}, the unit extractor runs "
                               f"{unit_extractor.sample_rate} Hz / hop {unit_extractor.hop_size}")
        if not unit_extractor.deduplicate:
            raise ProsodyError("pGSLM streams are per deduplicated unit; the unit extractor must deduplicate")
        self.unit_extractor, self.prosody = unit_extractor, prosody

    @classmethod
    def from_parts(cls, unit_extractor, prosody: Prosody) -> ProsodyExtractor:
        return cls(unit_extractor, prosody)

    sample_rate = property(lambda self: self.unit_extractor.sample_rate, doc="input sample rate (Hz)")
    hop_size = property(lambda self: self.unit_extractor.hop_size, doc="samples per unit frame")

    def extract(self, wavs: list[np.ndarray | Tensor]) -> list[ProsodyUnits]:
        """Waveforms ``[N_i]`` f32 @ ``sample_rate`` -> one :class:`ProsodyUnits` per clip (F0 of the part of each
        clip the units cover: ``UnitExtractor.encoded_part``)."""
        units = self.unit_extractor.extract(wavs)
        part = getattr(self.unit_extractor, "encoded_part", lambda w: w)
        return [self.prosody.extract(part(w), u) for w, u in zip(wavs, units, strict=True)]


__all__ = ["F0Stats", "F0Summary", "Prosody", "ProsodyConfig", "ProsodyError", "ProsodyExtractor", "ProsodyUnits",
           "align_f0_to_durations", "frame_f0", "interpolate_f0", "peak_normalize", "quantize_f0"]

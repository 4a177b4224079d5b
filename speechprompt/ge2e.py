"""GE2E speaker embedding: waveform ``[N] f32 @16 kHz`` -> one L2-normed voice vector ``[256]`` per clip.

The speaker encoder of Wan et al. 2018 ("Generalized End-to-End Loss for Speaker Verification"), as Resemblyzer
0.1.4 ships it (PyPI ``Resemblyzer``, Apache-2.0; trained on LibriSpeech, VoxCeleb 1 and 2, so on real voices;
imported once by ``importers/ge2e.py``). This module follows Resemblyzer's ``voice_encoder.VoiceEncoder`` and
``audio.wav_to_mel_spectrogram``:

1. the clip is scaled to -30 dBFS (its mean square 10^-3);
2. 40 power mel bands (librosa ``melspectrogram`` defaults: |STFT|^2 of a 400-sample Hann window, hop 160 samples,
   centred with zero padding, Slaney filters), no log;
3. partial utterances of 160 frames (1.6 s), 1.3 per second (a step of 77 frames); the last is dropped when it covers
   under 75 % of its frames (unless it is the only one), and the waveform is zero-padded to the last partial's end;
4. a 3-layer LSTM (40 -> 256) per partial, its last layer's final hidden state -> Linear(256, 256) -> ReLU -> L2 norm;
5. the partials' mean, L2-normed.

Two choices differ from Resemblyzer's ``preprocess_wav`` (docs/model_card.md): the level is normalised down as well
as up (a power mel is level-sensitive, and a served clip's level is the channel's, not the speaker's), and long
silences are not trimmed (webrtcvad; the served units keep them too). Where Resemblyzer gives NaN, this gives a
number: a silent clip is left unscaled, and an all-zero partial or clip vector stays zero (norms floored at 1e-12).
On a GPU the LSTM runs without TF32, so its vectors stay those of the CPU build to float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder import checked_clip
from .whisper import slaney_mel_filters

GE2E_RECIPE = 1  # bump when the preprocessing above changes: a build's stage of GE2E vectors records it


@dataclass(frozen=True)
class GE2EConfig:
    """Resemblyzer's ``hparams``: 16 kHz, 25 ms windows every 10 ms, 40 mel bands, partials of 160 frames at 1.3 per
    second with 75 % minimum coverage, a 3 x 256 LSTM, 256-d embeddings, -30 dBFS."""

    sample_rate: int = 16000
    n_fft: int = 400
    hop: int = 160
    n_mels: int = 40
    partial_frames: int = 160
    rate: float = 1.3
    min_coverage: float = 0.75
    hidden: int = 256
    layers: int = 3
    dim: int = 256
    target_dbfs: float = -30.0


def partial_slices(n_samples: int, cfg: GE2EConfig = GE2EConfig()) -> list[tuple[int, int]]:
    """Mel-frame ranges ``[(start, stop)]`` of a clip's partial utterances (Resemblyzer
    ``VoiceEncoder.compute_partial_slices``): every ``round(16000 / 1.3 / 160) = 77`` frames a window of 160; the
    last is dropped if under ``min_coverage`` of it lies inside the ``n_samples`` samples and another remains."""
    n_frames = math.ceil((n_samples + 1) / cfg.hop)
    step = int(round(cfg.sample_rate / cfg.rate / cfg.hop))
    out = [(i, i + cfg.partial_frames) for i in range(0, max(1, n_frames - cfg.partial_frames + step + 1), step)]
    start = out[-1][0] * cfg.hop
    if (n_samples - start) / (cfg.partial_frames * cfg.hop) < cfg.min_coverage and len(out) > 1:
        out = out[:-1]
    return out


class GE2EEncoder(nn.Module):
    """Clips -> speaker vectors ``[B, 256]`` f32, L2-normed (:meth:`embed`). Parameters (Resemblyzer's
    ``model_state`` names): ``lstm.*`` (``nn.LSTM(40, 256, 3, batch_first=True)``) and ``linear.*``; buffers
    ``mel_filters`` ``[40, 201]`` and ``window`` ``[400]`` (computed, not stored)."""

    def __init__(self, cfg: GE2EConfig = GE2EConfig()):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.n_mels, cfg.hidden, cfg.layers, batch_first=True)
        self.linear = nn.Linear(cfg.hidden, cfg.dim)
        self.register_buffer("mel_filters", slaney_mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels),
                             persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def mel(self, wav: Tensor) -> Tensor:
        """``[N]`` f32 -> ``[1 + N // 160, 40]`` power mel frames (librosa ``melspectrogram``, centred, zero pad)."""
        spec = torch.stft(wav, self.cfg.n_fft, self.cfg.hop, self.cfg.n_fft, self.window, center=True,
                          pad_mode="constant", return_complex=True).abs() ** 2
        return (self.mel_filters @ spec).T

    def partials(self, mels: Tensor) -> Tensor:
        """``[P, 160, 40]`` partial mel windows -> ``[P, 256]`` L2-normed partial embeddings (``VoiceEncoder.forward``)."""
        _, (hidden, _) = self.lstm(mels)
        e = F.relu(self.linear(hidden[-1]))
        return e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def embed_one(self, wav: Tensor, index: int = 0) -> Tensor:
        """One clip ``[N]`` f32 @16 kHz -> ``[256]`` (steps 1-5 of the module docstring). Raises
        ``encoder.EncoderInputError`` for input that is not 1-D (``ClipTooShort`` when empty); ``index`` names the
        clip in the error."""
        wav = checked_clip(index, wav, 1, self.cfg.sample_rate).float().to(self.mel_filters.device)
        power = wav.pow(2).mean()
        if power > 0:
            wav = wav * (10 ** (self.cfg.target_dbfs / 20) / power.sqrt())
        slices = partial_slices(wav.numel(), self.cfg)
        need = slices[-1][1] * self.cfg.hop
        if need >= wav.numel():
            wav = F.pad(wav, (0, need - wav.numel()))
        mel = self.mel(wav)
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            e = self.partials(torch.stack([mel[a:b] for a, b in slices])).mean(0)
        return e / e.norm().clamp_min(1e-12)

    def embed(self, wavs: list[Tensor]) -> Tensor:
        """Clips ``[N_i]`` f32 @16 kHz -> ``[B, 256]`` f32 on the CPU (each clip at its own length). Raises
        ``encoder.EncoderInputError`` for a clip that is not 1-D and ``encoder.ClipTooShort`` for an empty one."""
        if not wavs:
            return torch.zeros(0, self.cfg.dim)
        return torch.stack([self.embed_one(w, i) for i, w in enumerate(wavs)]).cpu()


__all__ = ["GE2E_RECIPE", "GE2EConfig", "GE2EEncoder", "partial_slices"]

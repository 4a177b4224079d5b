"""Silero VAD (v6, 16 kHz) in torch: a speech probability for every 32 ms of a clip.

A port of the network in PyPI ``silero-vad`` 6.2.3 (MIT, Silero Team; ``silero_vad/tinygrad_model.py`` names its
layers; the weights are those of the package's ONNX graph, ``importers/silero.py``: the package's own
``silero_vad_16k.safetensors`` holds other, older ones). The package runs it chunk by chunk:
512 new samples (32 ms at 16 kHz) with the previous chunk's last 64 samples before them (zeros before the first), a
reflect pad of 64 after, a 256-point STFT as a fixed convolution (stride 128: 4 frames), four 1-D convolutions with
ReLU down to one 128-d vector per chunk, an LSTM cell whose state runs from chunk to chunk, ReLU, a 1x1 convolution
and a sigmoid. The chunks' inputs do not depend on the LSTM, so here every chunk goes through the convolutions at once
and ``nn.LSTM`` runs the cell over the chunk sequence: the same numbers as the package's loop (within 2e-5 of its
ONNX graph, tests/test_silero_vad.py), in one call. Unlike the package, a clip shorter than one chunk gets one
probability (the package refuses it). Trained by Silero on real speech in many languages and noises;
used here to find where speech begins and ends in a recording (``speech_trim.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SAMPLE_RATE = 16000
CHUNK = 512  # samples per probability (32 ms)
CONTEXT = 64  # samples of the previous chunk before each one
WEIGHT_NAMES = ("stft_conv.weight", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight",
                "conv3.bias", "conv4.weight", "conv4.bias", "lstm_cell.weight_ih", "lstm_cell.weight_hh",
                "lstm_cell.bias_ih", "lstm_cell.bias_hh", "final_conv.weight", "final_conv.bias")


class SileroVAD(nn.Module):
    """The silero-vad v6 16 kHz network (CPU unless moved). ``forward``: ``[N]`` f32 samples at 16 kHz ->
    ``[ceil(N / 512)]`` speech probabilities in [0, 1], one per 32 ms chunk (the last chunk zero-padded, as the
    package does; an empty tensor for an empty clip). Raises ``ValueError`` for a tensor that is not 1-D."""

    def __init__(self):
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, kernel_size=3, padding=1)
        self.lstm = nn.LSTM(128, 128)  # the package's LSTMCell, run over the chunk sequence
        self.final_conv = nn.Conv1d(128, 1, 1)

    @classmethod
    def load(cls, path: Path) -> SileroVAD:
        """The network with the weights of a safetensors file in the package's names (``WEIGHT_NAMES``), in eval
        mode. Raises ``ValueError`` when a name is missing or extra, or a shape differs."""
        from safetensors.torch import load_file

        state = load_file(str(path))
        if set(state) != set(WEIGHT_NAMES):
            raise ValueError(f"{path}: not silero-vad v6 16 kHz weights (names {sorted(state)})")
        renamed = {k.replace("lstm_cell.", "lstm.") + ("_l0" if k.startswith("lstm_cell.") else ""): v
                   for k, v in state.items()}
        model = cls()
        try:
            model.load_state_dict(renamed)
        except RuntimeError as e:
            raise ValueError(f"{path}: silero-vad weights of other shapes ({e})") from None
        return model.eval()

    @torch.no_grad()
    def forward(self, wav: Tensor) -> Tensor:
        if wav.dim() != 1:
            raise ValueError(f"silero-vad reads one clip [N]; got shape {tuple(wav.shape)}")
        n = int(wav.shape[0])
        if n == 0:
            return wav.new_zeros(0)
        x = F.pad(wav.float(), (CONTEXT, -n % CHUNK))  # zeros before the first chunk's context and after the last
        chunks = x.unfold(0, CHUNK + CONTEXT, CHUNK)  # [T, 576]
        x = F.pad(chunks.unsqueeze(1), (0, 64), mode="reflect")  # [T, 1, 640]
        x = self.stft_conv(x)  # [T, 258, 4]: real and imaginary parts of 129 bins
        x = (x[:, :129] ** 2 + x[:, 129:] ** 2).sqrt()
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = conv(x).relu()
        h, _ = self.lstm(x.squeeze(-1).unsqueeze(1))  # [T, 1, 128]: the state runs from chunk to chunk
        return self.final_conv(h.relu().permute(1, 2, 0)).sigmoid().reshape(-1)  # [T]


__all__ = ["CHUNK", "SAMPLE_RATE", "SileroVAD"]

"""HuBERT masked-prediction pretraining of a small encoder (first iteration: MFCC k-means targets).

Follows fairseq ``fairseq/models/hubert/hubert.py`` (``HubertModel``) and ``fairseq/criterions/hubert_criterion.py``:
conv feature extractor (default mode: GroupNorm on the first block) -> ``layer_norm`` -> ``post_extract_proj`` ->
span masking (``mask_prob`` x T / ``mask_length`` span starts, spans of ``mask_length`` 10, masked frames replaced
by ``mask_emb``; HuBERT base: 0.8) -> ``encoder.pos_conv`` + ``encoder.layer_norm`` -> post-LN transformer
layers -> ``final_proj`` -> cosine similarity with ``label_embs_concat`` / ``logit_temp`` (0.1) -> cross-entropy on masked frames
(``pred_masked_weight`` 1) plus ``pred_nomask_weight`` x cross-entropy on unmasked frames (fairseq's criterion
has both terms; HuBERT base uses 0 for the second, a short run learns faster with it). Conv gradients are scaled
by ``feature_grad_mult`` (HuBERT base 0.1).

Parameter names are fairseq's, so ``encoder_state(model, layers)`` returns exactly what
``speechprompt.encoder.HubertEncoder`` loads (pos-conv weight already plain: this trainer uses no weight norm).

MFCC targets (``mfcc``): 13 MFCC + deltas + delta-deltas on the encoder's own frame grid (25 ms window,
20 ms hop, so frame t of the targets is frame t of the encoder), per-utterance mean/variance normalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class PretrainConfig:
    """Small HuBERT: conv stack (HuBERT kernels/strides, hop 320) + post-LN transformer."""

    conv_dim: int = 128
    embed_dim: int = 256
    layers: int = 5
    heads: int = 4
    ffn_dim: int = 1024
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    final_dim: int = 64
    num_classes: int = 100
    mask_prob: float = 0.8
    mask_length: int = 10
    logit_temp: float = 0.1
    pred_nomask_weight: float = 0.0
    feature_grad_mult: float = 0.1
    dropout: float = 0.05

    conv_kernels: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_strides: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)


def conv_block(cin: int, cout: int, k: int, s: int, group_norm: bool) -> nn.Sequential:
    """fairseq ``ConvFeatureExtractionModel`` block: ``0`` conv (no bias), ``1`` dropout, [``2`` GroupNorm], GELU."""
    mods: list[nn.Module] = [nn.Conv1d(cin, cout, k, s, bias=False), nn.Identity()]
    if group_norm:
        mods.append(nn.GroupNorm(cout, cout, affine=True))
    mods.append(nn.GELU())
    return nn.Sequential(*mods)


class FeatureExtractor(nn.Module):
    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        blocks, cin = [], 1
        for i, (k, s) in enumerate(zip(cfg.conv_kernels, cfg.conv_strides)):
            blocks.append(conv_block(cin, cfg.conv_dim, k, s, group_norm=(i == 0)))
            cin = cfg.conv_dim
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, wav: Tensor) -> Tensor:  # [B, N] -> [B, C, T]; clips are cropped to equal length
        x = wav.unsqueeze(1)
        for b in self.conv_layers:
            x = b(x)
        return x


class EncoderLayer(nn.Module):
    """fairseq ``TransformerSentenceEncoderLayer`` (post-LN, GELU)."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        d = cfg.embed_dim
        self.heads = cfg.heads
        self.self_attn = nn.Module()
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, n, nn.Linear(d, d))
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, cfg.ffn_dim), nn.Linear(cfg.ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.dropout = cfg.dropout

    def attn(self, x: Tensor, key_pad: Tensor | None) -> Tensor:
        b, t, d = x.shape
        a = self.self_attn
        q, k, v = (p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)  # [B, H, T, hd]
                   for p in (a.q_proj, a.k_proj, a.v_proj))
        mask = None if key_pad is None else (~key_pad)[:, None, None, :]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return a.out_proj(o.transpose(1, 2).reshape(b, t, d))

    def forward(self, x: Tensor, key_pad: Tensor | None) -> Tensor:
        drop = self.dropout if self.training else 0.0
        x = self.self_attn_layer_norm(x + F.dropout(self.attn(x, key_pad), drop, self.training))
        h = F.dropout(F.gelu(self.fc1(x)), drop, self.training)
        return self.final_layer_norm(x + F.dropout(self.fc2(h), drop, self.training))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        k = cfg.pos_conv_kernel
        self.pos_conv = nn.Sequential(nn.Conv1d(cfg.embed_dim, cfg.embed_dim, k, padding=k // 2,
                                                groups=cfg.pos_conv_groups))
        std = math.sqrt(4 / (k * cfg.embed_dim))  # fairseq init
        nn.init.normal_(self.pos_conv[0].weight, mean=0, std=std)
        nn.init.zeros_(self.pos_conv[0].bias)
        self.even = k % 2 == 0  # SamePad removes the last frame
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.layers))

    def forward(self, x: Tensor, key_pad: Tensor | None, upto: int | None = None) -> list[Tensor]:
        """x ``[B, T, D]`` -> outputs of layers 1..upto (each ``[B, T, D]``)."""
        if key_pad is not None:
            x = x.masked_fill(key_pad.unsqueeze(-1), 0.0)
        pc = self.pos_conv(x.transpose(1, 2))
        if self.even:
            pc = pc[:, :, :-1]
        x = self.layer_norm(x + F.gelu(pc).transpose(1, 2))
        outs = []
        for layer in self.layers[: upto or len(self.layers)]:
            x = layer(x, key_pad)
            outs.append(x)
        return outs


class HubertPretrainModel(nn.Module):
    """HuBERT with fairseq parameter names plus the pretraining-only ``mask_emb``, ``final_proj``,
    ``label_embs_concat``."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = FeatureExtractor(cfg)
        self.layer_norm = nn.LayerNorm(cfg.conv_dim)
        # fairseq: only when the conv output width differs from the encoder width
        self.post_extract_proj = nn.Linear(cfg.conv_dim, cfg.embed_dim) if cfg.conv_dim != cfg.embed_dim else None
        self.mask_emb = nn.Parameter(torch.empty(cfg.embed_dim).uniform_())
        self.encoder = TransformerEncoder(cfg)
        self.final_proj = nn.Linear(cfg.embed_dim, cfg.final_dim)
        self.label_embs_concat = nn.Parameter(torch.empty(cfg.num_classes, cfg.final_dim).uniform_())

    @staticmethod
    def frames(n_samples: int) -> int:
        """Frames for ``n_samples`` at hop 320 (window 400)."""
        return 0 if n_samples < 400 else (n_samples - 400) // 320 + 1

    def local_features(self, wav: Tensor) -> Tensor:
        """``[B, N]`` -> ``[B, T, D]`` (conv, layer_norm, post_extract_proj)."""
        f = self.feature_extractor(wav)
        if self.training and self.cfg.feature_grad_mult != 1.0:
            f = f * self.cfg.feature_grad_mult + f.detach() * (1 - self.cfg.feature_grad_mult)
        x = self.layer_norm(f.transpose(1, 2))
        return self.post_extract_proj(x) if self.post_extract_proj is not None else x

    def layer_outputs(self, wav: Tensor, key_pad: Tensor | None = None, mask: Tensor | None = None,
                      upto: int | None = None) -> list[Tensor]:
        x = self.local_features(wav)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        return self.encoder(x, key_pad, upto)

    def loss(self, wav: Tensor, targets: Tensor, key_pad: Tensor, gen: torch.Generator) -> tuple[Tensor, dict]:
        """Masked-prediction loss. wav ``[B, N]``; targets ``[B, T]`` i64 (-1 = ignore); key_pad ``[B, T]`` bool.

        Returns (loss to minimise, {"masked_loss", "masked_acc"} floats).
        """
        b, t = targets.shape
        valid = ~key_pad & targets.ge(0)
        mask = span_mask(b, t, self.cfg.mask_prob, self.cfg.mask_length, gen) & valid
        x = self.layer_outputs(wav, key_pad, mask)[-1]  # [B, T, D]
        e = F.normalize(self.label_embs_concat, dim=-1)
        logits = F.normalize(self.final_proj(x), dim=-1) @ e.t() / self.cfg.logit_temp  # [B, T, K]
        masked = F.cross_entropy(logits[mask], targets[mask])
        stats = {"masked_loss": masked.item(),
                 "masked_acc": float((logits[mask].argmax(-1) == targets[mask]).float().mean())}
        nomask = valid & ~mask
        loss = masked
        if self.cfg.pred_nomask_weight > 0 and nomask.any():
            loss = loss + self.cfg.pred_nomask_weight * F.cross_entropy(logits[nomask], targets[nomask])
        return loss, stats


def span_mask(b: int, t: int, prob: float, length: int, gen: torch.Generator) -> Tensor:
    """fairseq ``compute_mask_indices`` (static lengths): ``prob * t / length`` span starts per row. ``[B, T]``."""
    n = max(1, int(prob * t / length + torch.rand(1, generator=gen).item()))
    mask = torch.zeros(b, t, dtype=torch.bool)
    if t <= length:
        mask[:, : max(1, t // 2)] = True
        return mask
    starts = torch.randint(0, t - length, (b, n), generator=gen)
    idx = (starts.unsqueeze(-1) + torch.arange(length)).view(b, -1)
    mask.scatter_(1, idx, True)
    return mask


def encoder_state(model: HubertPretrainModel, layers: int) -> dict[str, Tensor]:
    """fairseq-key state dict of the encoder up to ``layers`` transformer layers (no pretraining heads).

    The pos-conv weight is stored as ``encoder.pos_conv.0.weight`` (plain; weight norm folded).
    """
    out = {}
    for k, v in model.state_dict().items():
        if k in ("mask_emb", "label_embs_concat") or k.startswith("final_proj."):
            continue
        if k.startswith("encoder.layers."):
            if int(k.split(".")[2]) >= layers:
                continue
        out[k] = v.detach().clone()
    return out


# ---------------------------------------------------------------------------------------------------------------
# MFCC on the encoder frame grid
# ---------------------------------------------------------------------------------------------------------------

def _mel_fbank(n_fft: int, n_mels: int, sr: int, fmin: float = 20.0, fmax: float | None = None) -> Tensor:
    fmax = fmax or sr / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731  (HTK mel scale, as Kaldi)
    imel = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    pts = imel(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(freqs)), dtype=np.float32)
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        fb[m] = np.clip(np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), 0, None)
    return torch.from_numpy(fb)


_FB = _mel_fbank(512, 40, 16000)
_DCT = torch.from_numpy(np.array([[math.cos(math.pi * k * (n + 0.5) / 40) for n in range(40)]
                                  for k in range(13)], dtype=np.float32))


def _deltas(x: Tensor) -> Tensor:  # [T, F] regression deltas over +-2 frames
    p = F.pad(x.t().unsqueeze(0), (2, 2), mode="replicate")[0].t()
    return (2 * (p[4:] - p[:-4]) + (p[3:-1] - p[1:-3])) / 10.0


def mfcc(wav: np.ndarray | Tensor) -> Tensor:
    """``[N]`` f32 @16 kHz -> ``[T, 39]`` MFCC+d+dd, per-utterance CMVN; ``T = floor((N - 400) / 320) + 1``."""
    x = torch.as_tensor(wav, dtype=torch.float32)
    t = HubertPretrainModel.frames(len(x))
    if t == 0:
        return torch.zeros(0, 39)
    frames = x[: (t - 1) * 320 + 400].unfold(0, 400, 320)  # [T, 400]
    frames = frames - frames.mean(-1, keepdim=True)
    frames = torch.cat([frames[:, :1], frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1) * torch.hamming_window(400)
    power = torch.fft.rfft(frames, n=512).abs() ** 2  # [T, 257]
    c = torch.log(power @ _FB.t() + 1e-6) @ _DCT.t()  # [T, 13]
    feats = torch.cat([c, _deltas(c), _deltas(_deltas(c))], dim=1)
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-5) if t > 1 else feats

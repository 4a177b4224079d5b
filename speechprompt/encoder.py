"""HuBERT layer-L features, numerically equal to fairseq's ``HubertModel.extract_features``.

``[N] f32 @16 kHz -> [T, D] f32`` with ``T = floor((N - 400) / 320) + 1`` for HuBERT base (frame rate 50 Hz).

Source followed: fairseq ``fairseq/models/hubert/hubert.py`` (``extract_features``) and
``fairseq/models/wav2vec/wav2vec2.py`` (``ConvFeatureExtractionModel``, ``TransformerEncoder``,
``TransformerSentenceEncoderLayer``), applied per clip the way the GSLM ``HubertFeatureReader`` does
(``examples/textless_nlp/gslm/speech2unit/pretrained/hubert_feature_reader.py``): optional waveform layer norm
over the whole clip, chunks of ``max_chunk`` samples encoded independently, frames concatenated.

Parameter names equal fairseq's state-dict keys, with the weight-normed ``encoder.pos_conv.0`` folded into a
plain ``weight`` and only the first ``output_layer`` transformer layers kept.

Speed-ups over fairseq that keep its numbers: the conv front end runs per chunk (block 0's group norm
normalises over the whole chunk's time axis, so padding would change features), everything per frame
(layer norms, projections, FFN) runs on all chunks' frames packed into one matrix (one big GEMM instead of
one small GEMM per clip), and attention / the positional conv run on zero-padded ``[B, T_max]`` batches of
similar length (buckets with <= 25 % padding) with a key padding mask. Zeroing padded frames before
``pos_conv`` reproduces the zero padding a single clip sees at its end (fairseq does the same with
``index_put(x, padding_mask, 0)``), so batched equals per clip. The pos-conv weight norm is folded once at
import instead of being recomputed every forward. fairseq's extra padding of T to a multiple of
``required_seq_len_multiple`` only adds a masked key (no effect on real frames, tested) and is not reproduced.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_CHUNK = 1_600_000  # samples (100 s at 16 kHz), fairseq/GSLM HubertFeatureReader.max_chunk
_EPS = 1e-5  # fairseq LayerNorm / Fp32GroupNorm eps
_HUBERT_BASE_CONV = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


class EncoderInputError(ValueError):
    """A waveform the encoder cannot take (wrong rank, too short)."""


class ClipTooShort(EncoderInputError):
    """A clip shorter than the conv front end's receptive field (400 samples = 25 ms for HuBERT) has 0 frames."""

    def __init__(self, index: int, samples: int, min_samples: int, sample_rate: int):
        self.index, self.samples, self.min_samples = index, samples, min_samples
        super().__init__(
            f"clip {index} has {samples} samples ({samples / sample_rate * 1000:.1f} ms); HuBERT needs at least "
            f"{min_samples} samples ({min_samples / sample_rate * 1000:.1f} ms at {sample_rate} Hz) for one frame"
        )


@dataclass(frozen=True)
class HubertConfig:
    """HuBERT architecture (fairseq ``HubertConfig`` fields under shorter names) plus the layer we read.

    ``conv_layers``: (channels, kernel, stride) per conv block; ``layers``: transformer layers of the source
    model (only ``output_layer`` of them, 1-based as in fairseq's ``output_layer``, are built);
    ``normalize``: waveform layer norm (fairseq task ``normalize``; False for hubert_base_ls960);
    ``sample_rate``: input rate in Hz (fairseq task ``sample_rate``). Defaults = hubert_base_ls960, layer 6.
    Raises ValueError listing every inconsistent field.
    """

    conv_layers: tuple[tuple[int, int, int], ...] = _HUBERT_BASE_CONV
    extractor_mode: str = "default"
    conv_bias: bool = False
    embed_dim: int = 768
    layers: int = 12
    heads: int = 12
    ffn_dim: int = 3072
    activation: str = "gelu"
    layer_norm_first: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    output_layer: int = 6
    normalize: bool = False
    sample_rate: int = 16000

    def __post_init__(self):
        object.__setattr__(self, "conv_layers", tuple(tuple(int(v) for v in c) for c in self.conv_layers))
        problems = []
        if not self.conv_layers or any(len(c) != 3 or min(c) < 1 for c in self.conv_layers):
            problems.append(f"conv_layers must be non-empty (dim, kernel, stride) triples: {self.conv_layers}")
        if self.extractor_mode not in ("default", "layer_norm"):
            problems.append(f"extractor_mode must be 'default' or 'layer_norm', got {self.extractor_mode!r}")
        if self.activation not in _ACTIVATIONS:
            problems.append(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.heads < 1 or self.embed_dim % self.heads:
            problems.append(f"embed_dim {self.embed_dim} not divisible by heads {self.heads}")
        if self.conv_pos_groups < 1 or self.embed_dim % self.conv_pos_groups:
            problems.append(f"embed_dim {self.embed_dim} not divisible by conv_pos_groups {self.conv_pos_groups}")
        if not 1 <= self.output_layer <= self.layers:
            problems.append(f"output_layer must be in 1..{self.layers}, got {self.output_layer}")
        if problems:
            raise ValueError("invalid HubertConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """JSON-ready dict (lists instead of tuples), inverse of :meth:`from_dict`."""
        d = asdict(self)
        d["conv_layers"] = [list(c) for c in self.conv_layers]
        return d

    @classmethod
    def tiny(cls, output_layer: int = 2) -> HubertConfig:
        """A ~50k-parameter HuBERT for tests: the real conv kernels/strides (hop 320, 400-sample receptive field) with 32
        channels, 3 layers of width 32, 4 heads, FFN 64, pos conv 128/16."""
        return cls(conv_layers=tuple((32, k, s) for _, k, s in _HUBERT_BASE_CONV), embed_dim=32, layers=3, heads=4,
                   ffn_dim=64, output_layer=output_layer)

    @classmethod
    def from_dict(cls, d: dict) -> HubertConfig:
        """Build from :meth:`to_dict` output; raises ValueError naming unknown fields."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown HubertConfig fields: {sorted(unknown)}")
        return cls(**d)


def _block(cfg: HubertConfig, i: int, n_in: int) -> nn.Sequential:
    """One conv block with fairseq's module indices: 0 conv, 1 dropout (identity), 2 norm (if any); the GELU
    that follows in fairseq has no parameters and is applied in ``_FeatureExtractor.forward``."""
    dim, k, stride = cfg.conv_layers[i]
    conv = nn.Conv1d(n_in, dim, k, stride=stride, bias=cfg.conv_bias)
    if cfg.extractor_mode == "layer_norm":  # fairseq: Sequential(TransposeLast, Fp32LayerNorm, TransposeLast)
        return nn.Sequential(conv, nn.Identity(), nn.Sequential(nn.Identity(), nn.LayerNorm(dim), nn.Identity()))
    if i == 0:  # fairseq Fp32GroupNorm(dim, dim): per-channel norm over the chunk's time axis
        return nn.Sequential(conv, nn.Identity(), nn.GroupNorm(dim, dim))
    return nn.Sequential(conv)


class _FeatureExtractor(nn.Module):
    """fairseq ``ConvFeatureExtractionModel``: ``[N] -> [T, C]`` for ONE chunk (no padding allowed)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        dims = [1] + [c[0] for c in cfg.conv_layers]
        self.conv_layers = nn.ModuleList(_block(cfg, i, dims[i]) for i in range(len(cfg.conv_layers)))

    def forward(self, wav: Tensor) -> Tensor:
        x = wav.view(1, 1, -1)  # [1, 1, N]
        for block in self.conv_layers:
            x = block[0](x)  # [1, C, T']
            if len(block) > 2 and isinstance(block[2], nn.GroupNorm):
                x = F.group_norm(x, block[2].num_groups, block[2].weight, block[2].bias, _EPS)
            elif len(block) > 2:
                ln = block[2][1]
                x = F.layer_norm(x.transpose(1, 2), ln.normalized_shape, ln.weight, ln.bias, _EPS).transpose(1, 2)
            x = F.gelu(x)
        return x[0].t()  # [T, C] (a transposed view)


class _SelfAttention(nn.Module):
    """fairseq ``MultiheadAttention`` (self-attention, biases, q scaled by head_dim**-0.5)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: Tensor, buckets: list[_Bucket], fused: bool) -> Tensor:
        # x: [sum T, E] packed frames -> [sum T, E]; projections on all frames at once, attention per bucket
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)

        def attend(b: _Bucket) -> Tensor:
            B, T = b.size, b.max_len
            qb, kb, vb = (b.pad(t[b.rows]).view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
            if fused:  # [B, H, T, hd]; keep: [B, 1, 1, T] (True = real key) or None
                o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=b.keep)
            else:  # reference: softmax(q k^T / sqrt(hd) + mask) v, as fairseq's non-fused path
                scores = (qb * qb.shape[-1] ** -0.5) @ kb.transpose(-2, -1)  # [B, H, T, T]
                if b.keep is not None:
                    scores = scores.masked_fill(~b.keep, float("-inf"))
                o = scores.softmax(-1) @ vb
            return b.unpad(o.transpose(1, 2).reshape(B * T, -1))  # [frames of b, E]

        return self.out_proj(_per_bucket(attend, buckets, q))


class _EncoderLayer(nn.Module):
    """fairseq ``TransformerSentenceEncoderLayer`` (post-LN unless ``layer_norm_first``)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.pre_ln = cfg.layer_norm_first
        self.act = _ACTIVATIONS[cfg.activation]
        self.self_attn = _SelfAttention(cfg.embed_dim, cfg.heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=_EPS)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=_EPS)

    def forward(self, x: Tensor, buckets: list[_Bucket], fused: bool) -> Tensor:
        if self.pre_ln:
            x = x + self.self_attn(self.self_attn_layer_norm(x), buckets, fused)
            return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x + self.self_attn(x, buckets, fused))
        return self.final_layer_norm(x + self.fc2(self.act(self.fc1(x))))


class _TransformerEncoder(nn.Module):
    """fairseq wav2vec2 ``TransformerEncoder`` cut after the output layer (no final norm, as fairseq when
    ``layer`` is given)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        e, k = cfg.embed_dim, cfg.conv_pos
        self.pos_conv = nn.Sequential(nn.Conv1d(e, e, k, padding=k // 2, groups=cfg.conv_pos_groups))
        self.layer_norm = nn.LayerNorm(e, eps=_EPS)
        self.layers = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.output_layer))
        self.layer_norm_first = cfg.layer_norm_first

    def forward(self, x: Tensor, buckets: list[_Bucket], fused: bool) -> Tensor:
        # x: [sum T, E] packed frames -> [sum T, E]
        conv = self.pos_conv[0]

        def pos(b: _Bucket) -> Tensor:
            xb = b.pad(x[b.rows]).view(b.size, b.max_len, -1).transpose(1, 2)  # [B, E, T], padded frames = 0
            y = F.conv1d(xb, conv.weight, conv.bias, padding=conv.padding, groups=conv.groups)
            y = F.gelu(y[:, :, : b.max_len])  # SamePad: drop the extra frame of an even kernel
            return b.unpad(y.transpose(1, 2).reshape(b.size * b.max_len, -1))

        x = x + _per_bucket(pos, buckets, x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        for layer in self.layers:
            x = layer(x, buckets, fused)
        return x


class _Bucket:
    """Sequences whose frames are rows ``rows`` of the packed ``[sum T, ...]`` matrix, padded to ``[B * T_max]``
    for attention and the positional conv. ``keep [B, 1, 1, T_max]``: True on real frames (None if no padding)."""

    def __init__(self, lengths: list[int], start: int, device: torch.device):
        self.size, self.max_len = len(lengths), max(lengths)
        self.rows = slice(start, start + sum(lengths))
        self.keep = self.index = None
        if any(n != self.max_len for n in lengths):
            keep = torch.arange(self.max_len, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
            self.index = keep.flatten().nonzero().squeeze(1)  # flat padded positions of the real frames
            self.keep = keep[:, None, None, :]

    def pad(self, x: Tensor) -> Tensor:  # [frames, ...] -> [B * T_max, ...] with zeros at padded frames
        if self.index is None:
            return x
        return x.new_zeros((self.size * self.max_len,) + x.shape[1:]).index_copy_(0, self.index, x)

    def unpad(self, x: Tensor) -> Tensor:  # [B * T_max, ...] -> [frames, ...]
        return x if self.index is None else x.index_select(0, self.index)


def _buckets(lengths: list[int], device: torch.device, max_padding: float = 0.25) -> list[_Bucket]:
    """Split length-sorted (descending) sequences into consecutive buckets whose padded size stays within
    ``1 + max_padding`` of their real frames, so attention on padding costs little for mixed lengths."""
    out, start, i = [], 0, 0
    while i < len(lengths):
        j = i + 1
        while j < len(lengths) and (j + 1 - i) * lengths[i] <= (1 + max_padding) * sum(lengths[i : j + 1]):
            j += 1
        out.append(_Bucket(lengths[i:j], start, device))
        start, i = start + sum(lengths[i:j]), j
    return out


def _per_bucket(fn, buckets: list[_Bucket], like: Tensor) -> Tensor:
    """Apply ``fn(bucket) -> [frames of bucket, E]`` to every bucket, gathered into a packed ``[sum T, E]``."""
    if len(buckets) == 1:
        return fn(buckets[0])
    out = torch.empty_like(like)
    for b in buckets:
        out[b.rows] = fn(b)
    return out


class HubertEncoder(nn.Module):
    """HuBERT up to layer ``cfg.output_layer``: ``extract(list of [N_i] f32 @16 kHz) -> list of [T_i, D] f32``.

    ``attention``: "sdpa" (``F.scaled_dot_product_attention``) or "reference" (explicit softmax), for tests.
    ``max_chunk``: samples per independently encoded chunk (GSLM reader: 1_600_000).
    """

    def __init__(self, cfg: HubertConfig, *, attention: str = "sdpa", max_chunk: int = MAX_CHUNK):
        super().__init__()
        if attention not in ("sdpa", "reference"):
            raise ValueError(f"attention must be 'sdpa' or 'reference', got {attention!r}")
        self.cfg, self.attention, self.max_chunk = cfg, attention, max_chunk
        self.autocast_dtype: torch.dtype | None = None  # bf16 precision mode: autocast (``precision.py``)
        conv_dim = cfg.conv_layers[-1][0]
        self.feature_extractor = _FeatureExtractor(cfg)
        self.layer_norm = nn.LayerNorm(conv_dim, eps=_EPS)
        self.post_extract_proj = nn.Linear(conv_dim, cfg.embed_dim) if conv_dim != cfg.embed_dim else None
        self.encoder = _TransformerEncoder(cfg)
        self.min_samples = _receptive_field(cfg.conv_layers)  # 400 samples for HuBERT: 1 frame
        if max_chunk < self.min_samples:
            raise ValueError(f"max_chunk {max_chunk} is below the receptive field of {self.min_samples} samples")

    sample_rate = property(lambda self: self.cfg.sample_rate, doc="input sample rate (Hz)")
    hop_size = property(lambda self: math.prod(s for _, _, s in self.cfg.conv_layers), doc="samples per frame")
    dim = property(lambda self: self.cfg.embed_dim, doc="feature dimension D")
    output_layer = property(lambda self: self.cfg.output_layer, doc="1-based transformer layer returned")

    def num_frames(self, samples: int) -> int:
        """Frames ``extract`` returns for a clip of ``samples`` samples (chunking included)."""
        full, tail = divmod(samples, self.max_chunk)
        return full * _conv_frames(self.max_chunk, self.cfg.conv_layers) + _conv_frames(tail, self.cfg.conv_layers)

    @torch.no_grad()
    def extract(self, wavs: list[Tensor]) -> list[Tensor]:
        """Layer-L features per clip: ``[N_i] f32 -> [T_i, D] f32`` on the encoder's device.

        Equals fairseq ``extract_features(x[None], padding_mask=None, mask=False, output_layer=L)`` applied to
        each ``max_chunk`` chunk, concatenated; a trailing chunk shorter than ``min_samples`` (where fairseq's
        reader would crash) contributes 0 frames. Raises :class:`ClipTooShort` for clips under ``min_samples``
        (400) and :class:`EncoderInputError` for non-1-D input.
        """
        chunks, owner = self._chunks(wavs)
        if not chunks:
            return []
        if self.autocast_dtype is not None:  # convs, linears and attention in bf16; norms stay f32 (autocast)
            with torch.autocast(chunks[0].device.type, dtype=self.autocast_dtype):
                return [f.float() for f in self._extract_chunks(wavs, chunks, owner)]
        return self._extract_chunks(wavs, chunks, owner)

    def _extract_chunks(self, wavs: list[Tensor], chunks: list[Tensor], owner: list[int]) -> list[Tensor]:
        order = sorted(range(len(chunks)), key=lambda c: -chunks[c].numel())  # longest first, for bucketing
        feats = [self.feature_extractor(chunks[c]) for c in order]  # each [T_c, C]
        lengths = [f.shape[0] for f in feats]
        x = self.layer_norm(torch.cat(feats))  # [sum T, C]
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)  # [sum T, E]
        x = self.encoder(x, _buckets(lengths, x.device), self.attention == "sdpa")
        per_chunk: list[Tensor] = [x] * len(chunks)
        for c, f in zip(order, x.split(lengths), strict=True):
            per_chunk[c] = f
        out: list[list[Tensor]] = [[] for _ in wavs]
        for i, f in zip(owner, per_chunk, strict=True):
            out[i].append(f)
        return [parts[0] if len(parts) == 1 else torch.cat(parts) for parts in out]

    def _chunks(self, wavs: list[Tensor]) -> tuple[list[Tensor], list[int]]:
        device = next(self.parameters()).device
        chunks, owner = [], []
        for i, wav in enumerate(wavs):
            wav = checked_clip(i, wav, self.min_samples, self.sample_rate).to(device=device, dtype=torch.float32)
            if self.cfg.normalize:  # fairseq reader: F.layer_norm(x, x.shape) over the whole clip, before chunking
                wav = F.layer_norm(wav, wav.shape)
            for start in range(0, wav.numel(), self.max_chunk):
                chunk = wav[start : start + self.max_chunk]
                if chunk.numel() >= self.min_samples:
                    chunks.append(chunk)
                    owner.append(i)
        return chunks, owner


def checked_clip(i: int, wav, min_samples: int, sample_rate: int) -> Tensor:
    """Clip ``i`` as a tensor; raises :class:`EncoderInputError` unless 1-D, :class:`ClipTooShort` under ``min_samples``."""
    wav = torch.as_tensor(wav)
    if wav.dim() != 1:
        raise EncoderInputError(f"clip {i} must be a 1-D waveform [N], got shape {tuple(wav.shape)}")
    if wav.numel() < min_samples:
        raise ClipTooShort(i, wav.numel(), min_samples, sample_rate)
    return wav


def _conv_frames(samples: int, conv_layers) -> int:
    t = samples
    for _, k, s in conv_layers:
        t = (t - k) // s + 1 if t >= k else 0
    return t


def _receptive_field(conv_layers) -> int:
    r = 1
    for _, k, s in reversed(conv_layers):
        r = (r - 1) * s + k
    return r


__all__ = ["MAX_CHUNK", "ClipTooShort", "EncoderInputError", "HubertConfig", "HubertEncoder"]

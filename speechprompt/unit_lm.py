"""The unit LM: a fairseq ``transformer_lm``-compatible decoder over discrete speech units.

Follows fairseq ``fairseq/models/transformer_lm.py`` + ``fairseq/models/transformer/transformer_decoder.py`` +
``fairseq/modules/transformer_layer.py`` (``TransformerDecoderLayerBase``) as GSLM's ULM uses them
(``transformer_lm_big``: 12 layers, d=1024, 16 heads, FFN 4096, ReLU, pre-LN, final LN, sinusoidal positions,
embed scale sqrt(d), tied output). Parameter names are fairseq's decoder keys without the ``decoder.`` prefix, so
an official ``checkpoint_best.pt`` converts by renaming only.

Deep prompts (SpeechPrompt v2, ``fairseq_usr/transformer_prompt_decoder.py``) enter as per-row *prefix* keys and
values: the official model overwrites the first ``l`` key/value inputs of every layer with the prompts, so the
real tokens only ever see ``k_proj(P_K)`` / ``v_proj(P_V)`` at those positions. Those projections are passed in
here already computed (``PrefixKV``) and prepended to each layer's keys/values; see ``prompting.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAD_IDX = 1  # fairseq Dictionary: <s>=0, <pad>=1, </s>=2, <unk>=3


@dataclass(frozen=True)
class UnitLMConfig:
    """Architecture of a fairseq ``transformer_lm`` (defaults: GSLM's ``transformer_lm_big``)."""

    vocab_size: int = 104
    embed_dim: int = 1024
    ffn_dim: int = 4096
    layers: int = 12
    heads: int = 16
    activation: str = "relu"
    normalize_before: bool = True
    final_norm: bool = True
    learned_pos: bool = False
    no_token_positional_embeddings: bool = False
    max_positions: int = 3072
    scale_embedding: bool = True
    share_input_output_embed: bool = True
    padding_idx: int = PAD_IDX
    layer_norm_eps: float = 1e-5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UnitLMConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class SequenceTooLong(ValueError):
    """A row has more tokens than the unit LM has positions (``max_positions``); ``code`` is stable."""

    code = "sequence_too_long"

    def __init__(self, tokens: int, max_positions: int):
        units = max(0, max_positions - 2)
        super().__init__(f"the clip gives {tokens} unit-LM tokens (its units plus 2 markers), more than this unit LM's "
                         f"{max_positions} positions; send a shorter clip (long audio is not windowed)")
        self.tokens, self.max_positions = tokens, max_positions
        self.accepted = f"clips of at most {units} units after deduplication ({max_positions} positions)"


def _gelu_tanh(t: Tensor) -> Tensor:
    return F.gelu(t, approximate="tanh")


# Every name fairseq's ``utils.get_activation_fn`` accepts (``gelu_fast`` is its deprecated alias of gelu_accurate).
ACTIVATIONS = {"relu": F.relu, "relu_squared": lambda t: F.relu(t).pow(2), "gelu": F.gelu,
               "gelu_fast": _gelu_tanh, "gelu_accurate": _gelu_tanh, "tanh": torch.tanh,
               "linear": lambda t: t, "swish": F.silu}


def activation(name: str):
    """The activation function fairseq calls ``name``; ValueError naming the accepted ones otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; accepted: {', '.join(ACTIVATIONS)}") from None


def state_dict_mismatch(sd: dict[str, Tensor], want: dict[str, Tensor]) -> str | None:
    """Describe how ``sd`` differs from ``want`` (missing / unexpected keys, wrong shapes), or None if it fits."""
    missing, extra = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    bad = [f"{k} {list(sd[k].shape)} != {list(want[k].shape)}" for k in want if k in sd and sd[k].shape != want[k].shape]
    if missing or extra or bad:
        return f"missing {missing[:6]}, unexpected {extra[:6]}, wrong shape {bad[:4]}"
    return None


@dataclass
class PrefixKV:
    """Per-row prefix keys/values for every layer (already projected by ``k_proj``/``v_proj``).

    ``k``, ``v``: ``[B, L, H, l, hd]``; ``mask``: ``[B, l]`` bool, True where the prefix position exists
    (rows of tasks with shorter prompts are padded and masked out).
    """

    k: Tensor
    v: Tensor
    mask: Tensor | None = None


def sinusoidal_table(num: int, dim: int, padding_idx: int | None) -> Tensor:
    """fairseq ``SinusoidalPositionalEmbedding.get_embedding``: ``[num, dim]``, halves [sin | cos], pad row 0."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    ang = torch.arange(num, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
    emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    if dim % 2 == 1:
        emb = torch.cat([emb, torch.zeros(num, 1)], dim=1)
    if padding_idx is not None:
        emb[padding_idx, :] = 0
    return emb


def make_positions(tokens: Tensor, padding_idx: int) -> Tensor:
    """fairseq ``utils.make_positions``: non-pad tokens get ``padding_idx + 1, +2, ...``; pads get ``padding_idx``."""
    mask = tokens.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


class SelfAttention(nn.Module):
    """fairseq ``MultiheadAttention`` (self-attention, eval mode) with optional per-row prefix K/V.

    q is scaled by ``head_dim ** -0.5`` after ``q_proj`` (incl. bias), as fairseq does.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def split(self, x: Tensor) -> Tensor:  # [B, T, d] -> [B, H, T, hd]
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor, pk: Tensor | None = None, pv: Tensor | None = None,
                reference: bool = False, real: Tensor | None = None) -> Tensor:
        """x ``[B, T, d]``, or packed ``[N, d]`` with ``real [B, T]`` bool marking the N real tokens;
        mask ``[B, 1, T, l+T]`` bool (True = may attend); pk/pv ``[B, H, l, hd]``. Returns x's shape."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if real is not None:  # projections ran on real tokens only; attention needs [B, T] rows
            q, k, v = (t.new_zeros(*real.shape, t.shape[-1]).index_put_((real,), t) for t in (q, k, v))
        q, k, v = self.split(q), self.split(k), self.split(v)
        if pk is not None:
            k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)  # [B, H, l+T, hd]
        if reference:  # plain path, step by step as fairseq computes it
            w = torch.matmul(q * self.head_dim**-0.5, k.transpose(-1, -2))
            w = w.masked_fill(~mask, float("-inf")).softmax(-1)
            o = torch.matmul(w, v)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, t, _ = o.shape
        o = o.transpose(1, 2).reshape(b, t, -1)
        return self.out_proj(o[real] if real is not None else o)


class DecoderLayer(nn.Module):
    """fairseq ``TransformerDecoderLayerBase`` without cross-attention (pre- or post-LN)."""

    def __init__(self, cfg: UnitLMConfig):
        super().__init__()
        self.normalize_before = cfg.normalize_before
        self.self_attn = SelfAttention(cfg.embed_dim, cfg.heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        self.final_layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.act = activation(cfg.activation)

    def forward(self, x, mask, pk=None, pv=None, reference=False, real=None):
        """x ``[B, T, d]`` or packed ``[N, d]`` (then ``real [B, T]``): every op but attention is per token."""
        r = x
        h = self.self_attn_layer_norm(x) if self.normalize_before else x
        x = r + self.self_attn(h, mask, pk, pv, reference, real)
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)
        r = x
        h = self.final_layer_norm(x) if self.normalize_before else x
        x = r + self.fc2(self.act(self.fc1(h)))
        if not self.normalize_before:
            x = self.final_layer_norm(x)
        return x


class UnitLM(nn.Module):
    """fairseq ``transformer_lm`` decoder over units; optional per-row deep-prompt prefix and separator.

    ``forward(tokens [B, T] i64 right-padded with pad=1, prefix: PrefixKV | None, sep_embed [B, d] | None)``
    returns hidden states ``[B, T, d]`` after the final norm; ``logits(hidden)`` gives ``[B, T, V]`` (tied).
    The separator embedding replaces the embedding of every token with id 0 (``<s>``) before the sqrt(d)
    scaling, exactly as SpeechPrompt's prompt decoder does; positions are computed on the original tokens.
    """

    def __init__(self, cfg: UnitLMConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.embed_scale = math.sqrt(d) if cfg.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.padding_idx)
        if cfg.no_token_positional_embeddings:
            self.embed_positions = None
        elif cfg.learned_pos:  # fairseq LearnedPositionalEmbedding: num_embeddings = max_positions + pad + 1
            self.embed_positions = nn.Embedding(cfg.max_positions + cfg.padding_idx + 1, d,
                                                padding_idx=cfg.padding_idx)
        else:
            self.register_buffer("_sinusoidal", sinusoidal_table(cfg.max_positions + cfg.padding_idx + 1, d,
                                                                 cfg.padding_idx), persistent=False)
            self.embed_positions = None
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps) if (cfg.final_norm and cfg.normalize_before) else None
        if not cfg.share_input_output_embed:
            self.output_projection = nn.Linear(d, cfg.vocab_size, bias=False)

    @property
    def dim(self) -> int:
        return self.cfg.embed_dim

    def embed(self, tokens: Tensor, sep_embed: Tensor | None = None) -> Tensor:
        """``[B, T]`` ids -> ``[B, T, d]`` input of layer 0 (token x scale + positions)."""
        e = self.embed_tokens(tokens)
        if sep_embed is not None:
            e = torch.where(tokens.eq(0).unsqueeze(-1), sep_embed.unsqueeze(1).to(e.dtype), e)
        return self.add_positions(self.embed_scale * e, tokens)

    def add_positions(self, x: Tensor, tokens: Tensor) -> Tensor:
        """``x [B, T, d] + positions`` of ``tokens [B, T]`` (fairseq offsets; pads get the zero row)."""
        if self.cfg.no_token_positional_embeddings:
            return x
        self.check_length(int(tokens.ne(self.cfg.padding_idx).sum(1).max()) if tokens.numel() else 0)
        pos = make_positions(tokens, self.cfg.padding_idx)
        return x + (self.embed_positions(pos) if self.cfg.learned_pos else self._sinusoidal[pos].to(x.dtype))

    def check_length(self, tokens: int) -> None:
        """Raise ``SequenceTooLong`` unless a row of ``tokens`` tokens fits the positions (call before a forward)."""
        if not self.cfg.no_token_positional_embeddings and tokens > self.cfg.max_positions:
            raise SequenceTooLong(tokens, self.cfg.max_positions)

    def attention_mask(self, tokens: Tensor, prefix_mask: Tensor | None, prefix_len: int) -> Tensor:
        """``[B, 1, T, l+T]`` bool: causal over tokens, no pad keys, prefix keys where they exist."""
        b, t = tokens.shape
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        keys = tokens.ne(self.cfg.padding_idx)  # [B, T]
        m = causal.unsqueeze(0) & keys.unsqueeze(1)  # [B, T, T]
        m = m | torch.eye(t, dtype=torch.bool, device=tokens.device).unsqueeze(0)  # pad queries see themselves
        if prefix_len:
            pm = prefix_mask if prefix_mask is not None else torch.ones(b, prefix_len, dtype=torch.bool,
                                                                         device=tokens.device)
            m = torch.cat([pm.unsqueeze(1).expand(b, t, prefix_len), m], dim=2)
        return m.unsqueeze(1)

    def run_layers(self, x: Tensor, tokens: Tensor, prefix: PrefixKV | None = None, reference: bool = False) -> Tensor:
        """Layer-0 input ``[B, T, d]`` -> hidden ``[B, T, d]`` after the final norm, with optional prefix K/V.

        Rows of different lengths are packed: norms, projections and the FFN (most of the FLOPs) run on the real
        tokens only, attention on the padded ``[B, T]`` layout; pad positions come back as zeros. The
        ``reference`` path keeps everything padded and uses plain attention.
        """
        plen = 0 if prefix is None else prefix.k.shape[3]
        mask = self.attention_mask(tokens, None if prefix is None else prefix.mask, plen)
        real = tokens.ne(self.cfg.padding_idx)
        packed = not reference and not bool(real.all())
        if packed:
            x = x[real]  # [N, d]
        for i, layer in enumerate(self.layers):
            pk = pv = None
            if plen:
                pk, pv = prefix.k[:, i].to(x.dtype), prefix.v[:, i].to(x.dtype)
            x = layer(x, mask, pk, pv, reference, real if packed else None)
        x = self.layer_norm(x) if self.layer_norm is not None else x
        return x.new_zeros(*tokens.shape, x.shape[-1]).index_put_((real,), x) if packed else x

    def forward(self, tokens: Tensor, prefix: PrefixKV | None = None, sep_embed: Tensor | None = None,
                reference: bool = False) -> Tensor:
        return self.run_layers(self.embed(tokens, sep_embed), tokens, prefix, reference)

    def logits(self, hidden: Tensor) -> Tensor:
        """Output projection (tied to the input embedding unless configured apart): ``[..., d] -> [..., V]``."""
        if not self.cfg.share_input_output_embed:
            return self.output_projection(hidden)
        return F.linear(hidden, self.embed_tokens.weight)

    def project_prefix(self, deep_key: Tensor, deep_value: Tensor) -> tuple[Tensor, Tensor]:
        """Deep prompts ``[..., L, l, d]`` -> prefix K/V ``[..., L, H, l, hd]`` via each layer's k_proj/v_proj.

        Differentiable (used by training); the prompt bank calls it once per task at load time.
        """
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            att = layer.self_attn
            k, v = att.k_proj(deep_key[..., i, :, :]), att.v_proj(deep_value[..., i, :, :])  # [..., l, d]
            shape = k.shape[:-1] + (att.heads, att.head_dim)
            ks.append(k.view(shape).transpose(-2, -3))  # [..., H, l, hd]
            vs.append(v.view(shape).transpose(-2, -3))
        return torch.stack(ks, dim=-4), torch.stack(vs, dim=-4)

"""Training the unit LM (fairseq ``transformer_lm`` with ``language_modeling``, eos break mode) on unit sequences.

Used by both default builders (``build_default.py``, ``build_backbone.py``); ``init_fairseq_`` also by
``pgslm_train.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from speechprompt.package import NUM_SPECIAL
from speechprompt.training import backbone_metrics as bm
from speechprompt.unit_lm import UnitLM


class FactoredEmbedding(nn.Module):
    """A parametrisation of a product codebook's token embeddings ``[4 + R*K, d]``: the row of unit ``r*K + k``
    (``Codebook.product``: cluster ``k``, pitch register ``r``) is ``A[k] + B[r]``; the four specials keep
    rows of their own. The ``R`` tokens of one cluster then share ``A[k]`` (the unit LM does not have to learn each
    register of a word-like cluster apart), and with the tied output projection a next-unit logit is a cluster
    score plus a register score. Training only: ``train_unit_lm`` materialises the table afterwards, so the bundle
    holds a plain ``[V, d]`` embedding (build-default ``--factored-lm``; docs/results.md, "What was tried").
    ``extra``: rows after the units that keep rows of their own (a voice prefix's tokens, ``speechprompt/voice.py``)."""

    def __init__(self, weight: torch.Tensor, clusters: int, registers: int,
                 cluster_features: torch.Tensor | None = None, extra: int = 0):
        super().__init__()
        if weight.shape[0] != NUM_SPECIAL + clusters * registers + extra:
            raise ValueError(f"a factored embedding needs {NUM_SPECIAL} + {clusters} x {registers}"
                             f"{f' + {extra}' if extra else ''} rows, the unit LM has {weight.shape[0]}")
        d = weight.shape[1]
        std = (d ** -0.5) / math.sqrt(2.0)  # A[k] + B[r] then has fairseq's N(0, 1/d) spread
        self.clusters, self.registers = clusters, registers
        self.special = nn.Parameter(weight[:NUM_SPECIAL].detach().clone())
        # only when asked: a build without extra rows keeps v5-v7's parameters (and their bit-for-bit rebuilds)
        self.extra = nn.Parameter(weight[weight.shape[0] - extra:].detach().clone()) if extra else None
        if cluster_features is None:  # the clusters drawn before the registers, as v5 (1ba1637b) was built
            self.features = None
            self.cluster = nn.Parameter(torch.randn(clusters, d) * std)
            self.register = nn.Parameter(torch.randn(registers, d) * std)
        else:  # A[k] = f[k] P + a[k]: clusters with near centroids start with near embeddings (v6, 86b0a52f)
            self.register = nn.Parameter(torch.randn(registers, d) * std)
            if cluster_features.shape[0] != clusters:
                raise ValueError(f"cluster_features must be [{clusters}, D]; got {tuple(cluster_features.shape)}")
            f = cluster_features.detach().float()
            self.register_buffer("features", (f - f.mean(0)) / f.std(0).clamp_min(1e-6))  # [K, D] standardised
            self.project = nn.Parameter(torch.randn(f.shape[1], d) * std / math.sqrt(f.shape[1]))
            self.cluster = nn.Parameter(torch.zeros(clusters, d))  # the free part, from zero

    def forward(self, _weight: torch.Tensor) -> torch.Tensor:
        a = self.cluster if self.features is None else self.cluster + self.features @ self.project  # [K, d]
        units = (self.register[:, None, :] + a[None, :, :]).reshape(self.registers * self.clusters, -1)
        return torch.cat([self.special, units] + ([self.extra] if self.extra is not None else []))


def train_unit_lm(cfg, train: list[torch.Tensor], valid: list[torch.Tensor], say,
                  factors: tuple | None = None, extra_tokens: int = 0) -> tuple[UnitLM, dict]:
    """fairseq ``language_modeling`` (eos break mode) with Adam + inverse-sqrt-free linear schedule; keeps the
    epoch with the lowest validation loss.

    ``cfg``: a build config with ``seed``, ``lm`` (:class:`UnitLMConfig`), ``lm_lr``, ``lm_batch_tokens``,
    ``lm_epochs`` (``build_backbone.BuildConfig``, ``build_default.DefaultConfig``); ``train`` / ``valid``: unit
    sequences ``[M]`` i64 (deduplicated, ids 0..K-1; a voice prefix's ids after the codebook's); ``say``: a progress callback; ``factors``: ``(clusters,
    registers[, cluster features [K, D]])`` of a product codebook to train the embedding as :class:`FactoredEmbedding` (with
    cluster features, each cluster's part is a learnt linear map of its centroid plus a free part; the returned model has
    a plain embedding table); ``extra_tokens``: with ``factors``, the vocabulary's last rows that are not units of the
    product codebook (a voice prefix's tokens) and keep free rows. Returns the model (eval mode) and the history
    (losses, perplexity per epoch, best epoch). Raises ``ValueError`` when ``factors`` do not match the vocabulary."""
    torch.manual_seed(cfg.seed + 1)
    lm = init_fairseq_(UnitLM(cfg.lm))
    if factors is not None:
        parametrize.register_parametrization(lm.embed_tokens, "weight",
                                             FactoredEmbedding(lm.embed_tokens.weight, *factors, extra=extra_tokens),
                                             unsafe=True)
        # the unparametrised table stays among the parameters without a gradient: AdamW leaves it alone
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lm_lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    rng = np.random.default_rng([cfg.seed, 2])
    lens = np.array([len(u) for u in train])
    hist = {"epoch": [], "train_loss": [], "valid_loss": [], "valid_ppl": []}
    best, best_state = math.inf, None
    steps_per_epoch = max(1, int(lens.sum() + len(lens)) // cfg.lm_batch_tokens)
    total = steps_per_epoch * cfg.lm_epochs
    warm = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.05, (total - s) / total)))
    for ep in range(cfg.lm_epochs):
        lm.train()
        order = np.argsort(lens + rng.random(len(lens)) * 8)  # length-bucketed, shuffled within near lengths
        batches, cur, tok = [], [], 0
        for i in order:
            cur.append(int(i))
            tok += lens[i] + 1
            if tok >= cfg.lm_batch_tokens:
                batches.append(cur)
                cur, tok = [], 0
        if cur:
            batches.append(cur)
        losses = []
        for bi in rng.permutation(len(batches)):
            seqs = [train[i] for i in batches[bi]]
            inp, tgt = lm_rows(seqs)
            logits = lm.logits(lm(inp))
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), tgt.view(-1), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
        lm.eval()
        nll = bm.unit_lm_nll(lm, valid)
        vloss = sum(n for n, _ in nll) / sum(t for _, t in nll)
        hist["epoch"].append(ep + 1)
        hist["train_loss"].append(round(float(np.mean(losses)), 4))
        hist["valid_loss"].append(round(vloss, 4))
        hist["valid_ppl"].append(round(math.exp(vloss), 3))
        say(f"unit LM epoch {ep + 1}: train {np.mean(losses):.3f} valid {vloss:.3f} (ppl {math.exp(vloss):.2f})")
        if vloss < best:
            best, best_state = vloss, {k: v.clone() for k, v in lm.state_dict().items()}
    lm.load_state_dict(best_state)
    if factors is not None:
        parametrize.remove_parametrizations(lm.embed_tokens, "weight", leave_parametrized=True)
    hist["best_epoch"] = hist["epoch"][int(np.argmin(hist["valid_loss"]))]
    return lm.eval(), hist


def init_fairseq_(lm: UnitLM) -> UnitLM:
    """fairseq ``transformer_lm`` initialisation: embeddings N(0, d^-0.5) (pad row 0), xavier-uniform linears
    (q/k/v with gain 1/sqrt(2) as ``MultiheadAttention.reset_parameters``), zero biases."""
    d = lm.cfg.embed_dim
    with torch.no_grad():
        torch.nn.init.normal_(lm.embed_tokens.weight, mean=0.0, std=d ** -0.5)
        lm.embed_tokens.weight[lm.cfg.padding_idx].zero_()
        for name, mod in lm.named_modules():
            if isinstance(mod, torch.nn.Linear):
                gain = 2 ** -0.5 if name.split(".")[-1] in ("q_proj", "k_proj", "v_proj") else 1.0
                torch.nn.init.xavier_uniform_(mod.weight, gain=gain)
                if mod.bias is not None:  # pGSLM's project_out_dim has none
                    torch.nn.init.zeros_(mod.bias)
    return lm


def lm_rows(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Units ``[M]`` -> input ``[B, T]`` = ``[</s>, 4+u..]`` (pad 1) and target ``[B, T]`` = ``[4+u.., </s>]``."""
    t_max = max(len(s) for s in seqs) + 1
    inp = torch.full((len(seqs), t_max), 1, dtype=torch.long)
    tgt = torch.full((len(seqs), t_max), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        inp[i, 0] = 2
        inp[i, 1:len(s) + 1] = s + 4
        tgt[i, :len(s)] = s + 4
        tgt[i, len(s)] = 2
    return inp, tgt


__all__ = ["FactoredEmbedding", "init_fairseq_", "lm_rows", "train_unit_lm"]

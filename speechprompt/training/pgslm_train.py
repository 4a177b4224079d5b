"""Training the pGSLM unit LM (fairseq ``transformer_ulm`` with ``speech_unit_modeling``) on units + prosody.

Batches as fairseq's ``CodeDataset`` + ``Shifts`` + ``collater`` build them (``speech_ulm_batch``), the loss of its
``speech_unit_lm_criterion`` (``speech_ulm_losses``, ``weighted_loss``), its initialisation (``init_pgslm_``) and the
training loop (``train_pgslm``); the pipeline around them is ``build_pgslm.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from speechprompt.pgslm import MultiStreamUnitLM, PGSLMConfig, StreamConfig
from speechprompt.pgslm_prompting import DURATION_PAD, f0_pad_value, unshifted_streams
from speechprompt.prosody import Prosody, ProsodyUnits
from speechprompt.training.unit_lm_train import init_fairseq_

log = logging.getLogger(__name__)
STREAMS = ("token", "duration", "f0")


def _shift_one(seq: Tensor, left: int, right: int, pad) -> tuple[Tensor, Tensor]:
    """fairseq ``Shifts.shift_one``: pad ``left``/``right`` steps; mask True on the padding."""
    out = torch.cat([seq.new_full((left,), pad), seq, seq.new_full((right,), pad)])
    mask = torch.ones(len(out), dtype=torch.bool)
    mask[left:len(out) - right] = False
    return out, mask


def speech_ulm_batch(items: list[ProsodyUnits], prosody: Prosody, streams: StreamConfig) -> dict[str, Tensor | int]:
    """Clips -> a fairseq ``speech_unit_modeling`` sample (``CodeDataset.__getitem__`` + ``Shifts`` + ``collater``).

    Keys: ``src_tokens``, ``dur_src``, ``f0_src`` (inputs, ``[B, T]``), ``target``, ``dur_target``, ``f0_target``
    (``[B, T]``), ``mask``, ``dur_mask``, ``f0_mask`` (``[B, T]`` bool, True = not scored: a step whose input or
    target is a shift pad, and the right padding) and ``ntokens`` (sum of source lengths, the criterion's
    ``sample_size``). Utterance-mean normalisation unless ``prosody`` says otherwise.
    """
    extra = max(streams.duration_shift, streams.f0_shift)
    f0_pad = f0_pad_value(streams)
    rows = []
    for p in items:
        tok, dur, f0 = unshifted_streams(p, prosody, streams)
        if extra:
            tok, tmask = _shift_one(tok, 0, extra, streams.pad)
            dur, dmask = _shift_one(dur, streams.duration_shift, extra - streams.duration_shift, DURATION_PAD)
            f0, fmask = _shift_one(f0, streams.f0_shift, extra - streams.f0_shift, f0_pad)
        else:
            tmask, dmask, fmask = (torch.zeros(len(tok), dtype=torch.bool) for _ in range(3))
        rows.append({"src_tokens": tok[:-1], "target": tok[1:], "mask": tmask[1:] | tmask[:-1],
                     "dur_src": dur[:-1], "dur_target": dur[1:], "dur_mask": dmask[1:] | dmask[:-1],
                     "f0_src": f0[:-1], "f0_target": f0[1:], "f0_mask": fmask[1:] | fmask[:-1]})
    pads = {"src_tokens": streams.pad, "target": streams.pad, "mask": True, "dur_src": DURATION_PAD,
            "dur_target": DURATION_PAD, "dur_mask": True, "f0_src": f0_pad, "f0_target": f0_pad, "f0_mask": True}
    t_max = max(len(r["src_tokens"]) for r in rows)
    out: dict[str, Tensor | int] = {}
    for k, pad in pads.items():
        out[k] = torch.full((len(rows), t_max), pad, dtype=rows[0][k].dtype)
        for b, r in enumerate(rows):
            out[k][b, :len(r[k])] = r[k]
    out["ntokens"] = sum(len(r["src_tokens"]) for r in rows)
    return out


def speech_ulm_losses(lm: MultiStreamUnitLM, batch: dict) -> dict[str, Tensor]:
    """fairseq ``speech_unit_lm_criterion`` terms for discrete streams: per stream the summed NLL over unmasked
    targets (``{stream}_loss``), the number of such targets (``{stream}_n``) and of argmax hits (``{stream}_correct``)."""
    hidden = lm(batch["src_tokens"], batch["dur_src"], batch["f0_src"])
    out = {}
    for name, logits, tk, mk in zip(STREAMS, lm.stream_logits(hidden), ("target", "dur_target", "f0_target"),
                                    ("mask", "dur_mask", "f0_mask")):
        keep = ~batch[mk]
        lprob = F.log_softmax(logits.float(), dim=-1)
        nll = F.nll_loss(lprob.view(-1, lprob.size(-1)), batch[tk].view(-1), reduction="none")
        out[f"{name}_loss"] = (nll * keep.view(-1).float()).sum()
        out[f"{name}_n"] = keep.sum()
        out[f"{name}_correct"] = ((lprob.argmax(-1) == batch[tk]) & keep).sum()
    return out


def weighted_loss(terms: dict[str, Tensor], weights: tuple[float, float, float], ntokens: int) -> Tensor:
    """``speech_unit_lm_criterion``: ``sum_s w_s * loss_s`` over the streams, divided by ``ntokens``."""
    return sum(w * terms[f"{s}_loss"] for s, w in zip(STREAMS, weights)) / ntokens


def init_pgslm_(lm: MultiStreamUnitLM) -> MultiStreamUnitLM:
    """fairseq ``transformer_ulm`` initialisation: the ``transformer_lm`` one (``init_fairseq_``) plus the prosody
    embeddings N(0, d^-0.5) with their padding rows zeroed (``transformer_base.Embedding``)."""
    init_fairseq_(lm)
    d = lm.cfg.embed_dim
    with torch.no_grad():
        for emb in lm.embed_other_list:
            if emb is not None:
                torch.nn.init.normal_(emb.weight, mean=0.0, std=d ** -0.5)
                emb.weight[emb.padding_idx].zero_()
    return lm


@torch.no_grad()
def evaluate(lm: MultiStreamUnitLM, items: list[ProsodyUnits], prosody: Prosody, weights, batch: int = 16) -> dict:
    """Teacher-forced validation: per stream mean NLL per scored target (nats), accuracy, targets; the token
    perplexity; the criterion's weighted loss (per source token, as fairseq logs ``loss``)."""
    lm.eval()
    acc: dict[str, float] = {}
    ntokens = 0
    for s in range(0, len(items), batch):
        b = speech_ulm_batch(items[s:s + batch], prosody, lm.streams)
        for k, v in speech_ulm_losses(lm, b).items():
            acc[k] = acc.get(k, 0.0) + float(v)
        ntokens += b["ntokens"]
    out = {"loss": sum(w * acc[f"{s}_loss"] for s, w in zip(STREAMS, weights)) / ntokens}
    for s in STREAMS:
        out[f"{s}_loss"] = acc[f"{s}_loss"] / acc[f"{s}_n"]
        out[f"{s}_acc"] = acc[f"{s}_correct"] / acc[f"{s}_n"]
        out[f"{s}_targets"] = int(acc[f"{s}_n"])
    out["token_ppl"] = math.exp(out["token_loss"])
    return out


def _length_batches(lens: np.ndarray, batch_tokens: int, rng: np.random.Generator) -> list[list[int]]:
    order = np.argsort(lens + rng.random(len(lens)) * 8)  # length-bucketed, shuffled within near lengths
    batches, cur, tok = [], [], 0
    for i in order:
        cur.append(int(i))
        tok += int(lens[i]) + 2
        if tok >= batch_tokens:
            batches.append(cur)
            cur, tok = [], 0
    if cur:
        batches.append(cur)
    return [batches[j] for j in rng.permutation(len(batches))]


def train_pgslm(cfg, lm_cfg: PGSLMConfig, train: list[ProsodyUnits], valid: list[ProsodyUnits],
                prosody: Prosody, say: Callable[[str], None] = log.info) -> tuple[MultiStreamUnitLM, dict]:
    """AdamW (linear warm-up/decay, clip 1.0) on ``speech_ulm_batch`` batches of ~``batch_tokens`` source tokens,
    loss = ``weighted_loss``; keeps the epoch with the lowest weighted validation loss. Returns (model, history).

    ``cfg``: a build config with ``seed``, ``lr``, ``batch_tokens``, ``epochs``, ``loss_weights`` (token, duration,
    F0) (``build_pgslm.PGSLMBuildConfig``); ``say``: a progress callback."""
    torch.manual_seed(cfg.seed + 11)
    lm = init_pgslm_(MultiStreamUnitLM(lm_cfg))
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    rng = np.random.default_rng([cfg.seed, 12])
    lens = np.array([len(p.units) for p in train])
    steps = max(1, int((lens + 2).sum()) // cfg.batch_tokens + 1) * cfg.epochs
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.05, (steps - s) / steps)))
    hist: dict = {"epoch": [], "train_loss": [], **{f"train_{s}_loss": [] for s in STREAMS}, "valid": [],
                  "seconds": []}
    best, best_state, t0 = math.inf, None, time.time()
    for ep in range(cfg.epochs):
        lm.train()
        sums = dict.fromkeys(["loss", *STREAMS, "n"], 0.0)
        for idx in _length_batches(lens, cfg.batch_tokens, rng):
            batch = speech_ulm_batch([train[i] for i in idx], prosody, lm.streams)
            terms = speech_ulm_losses(lm, batch)
            loss = weighted_loss(terms, cfg.loss_weights, batch["ntokens"])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
            sched.step()
            sums["loss"] += loss.item() * batch["ntokens"]
            sums["n"] += batch["ntokens"]
            for s in STREAMS:
                sums[s] += terms[f"{s}_loss"].item() / max(1, int(terms[f"{s}_n"])) * batch["ntokens"]
        v = evaluate(lm, valid, prosody, cfg.loss_weights)
        hist["epoch"].append(ep + 1)
        hist["train_loss"].append(round(sums["loss"] / sums["n"], 4))
        for s in STREAMS:
            hist[f"train_{s}_loss"].append(round(sums[s] / sums["n"], 4))
        hist["valid"].append({k: round(x, 4) if isinstance(x, float) else x for k, x in v.items()})
        hist["seconds"].append(round(time.time() - t0, 1))
        say(f"pGSLM epoch {ep + 1}: train {hist['train_loss'][-1]:.3f} valid {v['loss']:.3f} (token ppl "
            f"{v['token_ppl']:.2f}, duration {v['duration_loss']:.3f}/{v['duration_acc']:.3f}, F0 "
            f"{v['f0_loss']:.3f}/{v['f0_acc']:.3f}) ({time.time() - t0:.0f}s)")
        if v["loss"] < best:
            best, best_state = v["loss"], {k: t.clone() for k, t in lm.state_dict().items()}
    lm.load_state_dict(best_state)
    hist["best_epoch"] = hist["epoch"][int(np.argmin([v["loss"] for v in hist["valid"]]))]
    return lm.eval(), hist


__all__ = ["STREAMS", "evaluate", "init_pgslm_", "speech_ulm_batch", "speech_ulm_losses", "train_pgslm",
           "weighted_loss"]

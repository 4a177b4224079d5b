"""Prompt training on a frozen unit LM (SpeechPrompt v2, ``GSLM/prompt/train.py`` + ``fairseq_usr/``).

One fixed recipe for every task (``Recipe`` defaults; gslm_reference.md section 5): deep prompts of length 5 at
every layer, a separator that replaces the ``<s>`` embedding, a linear verbalizer ``[C+4, V]`` on the raw LM
logits; Adam betas (0.9, 0.98), lr 5e-3 constant, gradient clip-norm 1.0, batch 32, early stopping on dev.

Loss (single-label contract, ``prompting.py``): cross-entropy over the C+4 verbalizer outputs at the separator
position with target ``4 + class``, averaged over the batch. The official criterion sums the NLL from the
separator to the final ``</s>`` and divides by all target tokens of the batch; with one label token per clip the
only difference that matters is that scale, which Adam (scale-invariant) ignores up to its epsilon and the
clip-norm threshold.

Verbalizers: ``learnable`` (v2), ``fixed`` (v1 ``freq`` method: class i is read at the i-th most frequent unit of
the train set; trained with the official full-vocabulary NLL; packaged as a one-hot ``[C+4, V]`` matrix so the
server runs the same code), and ``deep_prompts=False`` trains the learnable verbalizer alone (the separator stays
the LM's own ``<s>`` embedding; no prompt at all) as an ablation.

Backbones: a GSLM ``UnitLM`` trains on unit tensors ``[M]``; a pGSLM ``MultiStreamUnitLM`` trains on ``ProsodyUnits``
(units + durations + segment F0, from ``ProsodyExtractor``) with its ``Prosody`` passed as ``prosody=``: rows are
pGSLM's own three-stream input, the separator replaces ``</s>``, the verbalizer reads the token-stream logits
(docs/pgslm.md; the row layouts live in ``lm_rows.py``). The recipe is the same; the packages say
``backbone_kind="pgslm"``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechprompt.choices import READOUTS, VERBALIZERS
from speechprompt.package import NUM_SPECIAL, PackageMeta, TaskPackage, new_package
from speechprompt.prosody import Prosody, ProsodyUnits
from speechprompt.training.lm_rows import GSLMRows, TrainingError, row_builder
from speechprompt.unit_lm import UnitLM
from speechprompt.unit_views import UnitView

Item = Tensor | ProsodyUnits  # one clip: its units [M] i64 (GSLM) or its ProsodyUnits (pGSLM)


@dataclass(frozen=True)
class Recipe:
    """The one recipe (official values unless noted in docs/results.md)."""

    prompt_length: int = 5
    lr: float = 5e-3
    betas: tuple[float, float] = (0.9, 0.98)
    clip_norm: float = 1.0
    batch_size: int = 32
    max_epochs: int = 60  # ~480 updates on a few hundred clips (docs/results.md: pilot runs)
    patience: int = 10  # epochs without a lower dev loss (official --patience=1 counts epochs of 1000s of steps)
    verbalizer: str = "learnable"  # "learnable" (v2) | "fixed" (v1 freq)
    deep_prompts: bool = True
    readout: str = "separator"  # "separator" (v2) | "mean": the label read from the mean hidden state (prompting.py)
    prompt_init_std: float = 1.0  # nn.Embedding default N(0, 1), as the official prompts
    prompt_dropout: float = 0.1  # official ``prompt_dropout`` on the deep prompts (training only)
    verbalizer_dropout: float = 0.1  # official ``prompt_verbalizer_dropout`` on the learnable verbalizer outputs
    sep_init_std: float | None = None  # None: std of the LM's unit embeddings; official 1.0 (docs/results.md)
    seed: int = 100501
    max_steps: int | None = None  # hard cap (tests / budgets)

    def to_dict(self) -> dict:
        """The recipe as package metadata; ``readout`` only when it is not the separator (older packages'
        ``training.recipe`` stays as it was)."""
        d = asdict(self)
        if d["readout"] == "separator":
            del d["readout"]
        return d


@dataclass
class TrainResult:
    package: TaskPackage
    history: dict = field(default_factory=dict)  # step, train_loss, epoch, dev_loss, dev_acc lists
    best_epoch: int = 0
    dev: dict = field(default_factory=dict)  # {"loss", "accuracy"} at the best epoch
    seconds: float = 0.0
    trainable_params: int = 0


def unit_frequencies(units: Sequence[Tensor], num_units: int) -> Tensor:
    """Counts ``[K]`` of every unit over the given sequences."""
    counts = torch.zeros(num_units, dtype=torch.long)
    for u in units:
        counts += torch.bincount(u.long(), minlength=num_units)[:num_units]
    return counts


def fixed_verbalizer(train_units: Sequence[Tensor], num_classes: int, vocab_size: int,
                     unit_tokens: Tensor | None = None, special_tokens: Sequence[int] | None = None
                     ) -> tuple[Tensor, list[int]]:
    """v1 ``freq`` verbalizer: one-hot ``[C+4, V]`` (rows 0..3 -> the specials ``<s>, <pad>, </s>, <unk>``; class i
    -> token of the i-th most frequent train unit, ties by unit id) and the chosen token ids ``[C]``.

    ``unit_tokens [K]``/``special_tokens [4]``: the dictionary layout (default GSLM's: unit i = 4+i, specials 0..3;
    a pGSLM ``UnitDictionary`` has unit i = i, specials n..n+3).
    """
    k = vocab_size - NUM_SPECIAL
    if num_classes > k:
        raise TrainingError(f"a fixed verbalizer needs C <= {k} units; got {num_classes} classes")
    counts = unit_frequencies(train_units, k)
    order = sorted(range(k), key=lambda u: (-int(counts[u]), u))
    tokens = [NUM_SPECIAL + u if unit_tokens is None else int(unit_tokens[u]) for u in order[:num_classes]]
    specials = list(range(NUM_SPECIAL)) if special_tokens is None else list(special_tokens)
    vb = torch.zeros(num_classes + NUM_SPECIAL, vocab_size)
    for r, t in enumerate(specials + tokens):
        vb[r, t] = 1.0
    return vb, tokens


class PromptParams(nn.Module):
    """The trainable tensors of one task: deep prompts ``[L, l, d]`` x2, separator ``[d]``, verbalizer.

    The separator slot and the unit embeddings its init scale comes from follow the LM's row layout
    (``lm_rows.row_builder``: GSLM ``<s>``, pGSLM ``</s>``)."""

    def __init__(self, lm: UnitLM, num_classes: int, recipe: Recipe, fixed_vb: Tensor | None = None,
                 fixed_tokens: list[int] | None = None):
        super().__init__()
        layout = row_builder(lm)
        self.fixed_tokens = None if fixed_tokens is None else torch.tensor(fixed_tokens)
        cfg, g = lm.cfg, torch.Generator().manual_seed(recipe.seed)
        L, d, V, plen = cfg.layers, cfg.embed_dim, cfg.vocab_size, recipe.prompt_length
        self.deep = recipe.deep_prompts
        self.readout = recipe.readout
        self.p_prompt, self.p_verb = recipe.prompt_dropout, recipe.verbalizer_dropout
        if self.deep:
            self.deep_key = nn.Parameter(torch.randn(L, plen, d, generator=g) * recipe.prompt_init_std)
            self.deep_value = nn.Parameter(torch.randn(L, plen, d, generator=g) * recipe.prompt_init_std)
            std = recipe.sep_init_std
            if std is None:  # the spread of the LM's own unit embeddings (before the sqrt(d) scaling)
                std = float(layout.unit_embeddings().detach().std())
            self.separator = nn.Parameter(torch.randn(d, generator=g) * std)
        else:
            self.register_buffer("separator", lm.embed_tokens.weight[layout.sep_token].detach().clone())
        if fixed_vb is not None:
            self.register_buffer("verbalizer", fixed_vb.clone())
        else:  # nn.Linear(V, C+4, bias=False) default init: U(-1/sqrt(V), 1/sqrt(V))
            bound = 1 / math.sqrt(V)
            self.verbalizer = nn.Parameter(torch.rand(num_classes + NUM_SPECIAL, V, generator=g) * 2 * bound - bound)

    def forward(self, rows_of: GSLMRows, rows, verbalizer: Tensor | None = None) -> Tensor:
        """Rows of ``B`` clips (``rows_of.build``) -> verbalizer outputs ``[B, rows(verbalizer)]`` at the separator."""
        B = rows.tokens.shape[0]
        vb = self.verbalizer if verbalizer is None else verbalizer
        dk = dv = None
        if self.deep:  # one dropout mask per step for the whole batch, as the official [l, d] prompts
            dk = F.dropout(self.deep_key, self.p_prompt, self.training).expand(B, -1, -1, -1)
            dv = F.dropout(self.deep_value, self.p_prompt, self.training).expand(B, -1, -1, -1)
        return rows_of.class_logits(rows, dk, dv, self.separator.expand(B, -1), vb.expand(B, -1, -1),
                                    readout=self.readout)

    def to_package(self, lm: UnitLM, meta: PackageMeta) -> TaskPackage:
        """Package the current tensors (no deep prompts -> ``prompt_length`` 0, deep tensors ``[L, 0, d]``)."""
        cfg = lm.cfg
        plen = meta.prompt_length
        zeros = torch.zeros(cfg.layers, 0, cfg.embed_dim)
        dk = self.deep_key.detach() if self.deep else zeros
        dv = self.deep_value.detach() if self.deep else zeros
        return new_package(meta, deep_key=dk, deep_value=dv, input_prompt=torch.zeros(plen, cfg.embed_dim),
                           separator=self.separator.detach(), verbalizer=self.verbalizer.detach())


def _forward(rows_of: GSLMRows, params: PromptParams, units: Sequence[Item], raw: Tensor | None = None):
    """Verbalizer outputs ``[B, C+4]`` and, for the fixed (v1) verbalizer, the full logits ``[B, V]``.

    ``raw``: the LM logits at the separator ``[B, V]`` when they do not depend on trained tensors (no deep
    prompts, fixed separator): then only the verbalizer runs, which is exactly the same computation.
    """
    full_vocab = params.fixed_tokens is not None
    if raw is None:
        lm = rows_of.lm
        rows = rows_of.build(list(units), next(lm.parameters()).device)
        eye = torch.eye(lm.cfg.vocab_size, device=rows.tokens.device) if full_vocab else None
        out = params(rows_of, rows, verbalizer=eye)
    else:
        out = raw if full_vocab else raw @ params.verbalizer.T
    if full_vocab:  # the v1 path has no linear verbalizer, hence no verbalizer dropout (official)
        return out @ params.verbalizer.T, out
    return F.dropout(out, params.p_verb, params.training), None


def _loss(params: PromptParams, out: Tensor, full: Tensor | None, y: Tensor, reduction: str = "mean") -> Tensor:
    if full is not None:  # v1: NLL over the whole vocabulary at the label's unit token
        return F.cross_entropy(full, params.fixed_tokens.to(y.device)[y], reduction=reduction)
    return F.cross_entropy(out, y + NUM_SPECIAL, reduction=reduction)


@torch.no_grad()
def raw_logits(lm: UnitLM, separator: Tensor, units: Sequence[Item], batch_size: int = 64, *,
               prosody: Prosody | None = None, readout: str = "separator") -> Tensor:
    """LM logits ``[N, V]`` at the separator (or of the mean state, ``readout="mean"``) with no deep prompts (the
    verbalizer-only ablation's input).

    ``prosody``: the backbone's, for a pGSLM ``lm`` (items are then ``ProsodyUnits``)."""
    rows_of = row_builder(lm, prosody)
    eye = torch.eye(lm.cfg.vocab_size, device=separator.device)
    outs = []
    for i in range(0, len(units), batch_size):
        rows = rows_of.build(list(units[i : i + batch_size]), separator.device)
        B = rows.tokens.shape[0]
        outs.append(rows_of.class_logits(rows, None, None, separator.expand(B, -1), eye.expand(B, -1, -1),
                                         readout=readout))
    return torch.cat(outs)


@torch.no_grad()
def score(lm: UnitLM, params: PromptParams, units: Sequence[Item], y: Sequence[int] | None = None,
          batch_size: int = 64, raw: Tensor | None = None, *, prosody: Prosody | None = None
          ) -> tuple[Tensor, float | None, float | None]:
    """Class probabilities ``[N, C]`` (softmax over outputs 4..C+3, as the server), and with labels the mean
    training loss and accuracy. Puts ``params`` in eval mode (no dropout). ``prosody``: as :func:`raw_logits`."""
    params.eval()
    rows_of = row_builder(lm, prosody)
    C = params.verbalizer.shape[0] - NUM_SPECIAL
    probs, loss = [], 0.0
    for i in range(0, len(units), batch_size):
        out, full = _forward(rows_of, params, units[i : i + batch_size],
                             None if raw is None else raw[i : i + batch_size])
        probs.append(out[:, NUM_SPECIAL:].float().softmax(-1).cpu())
        if y is not None:
            yb = torch.as_tensor(list(y[i : i + batch_size]), device=out.device)
            loss += float(_loss(params, out, full, yb, reduction="sum"))
    p = torch.cat(probs) if probs else torch.zeros(0, C)
    if y is None:
        return p, None, None
    acc = float((p.argmax(1) == torch.as_tensor(list(y))).float().mean())
    return p, loss / len(units), acc


def train_prompts(
    lm: UnitLM,
    task: str,
    labels: Sequence[str],
    train: tuple[Sequence[Item], Sequence[int]],
    dev: tuple[Sequence[Item], Sequence[int]],
    *,
    fingerprint: str,
    kind: str | None = None,
    prosody: Prosody | None = None,
    recipe: Recipe = Recipe(),
    extra_meta: dict | None = None,
    on_step: Callable[[int, float], None] | None = None,
    on_eval: Callable[[int, float, float], None] | None = None,
    unit_view: UnitView | None = None,
) -> TrainResult:
    """Train one task's prompts on the frozen ``lm`` and return the package (best dev loss).

    ``train``/``dev``: (item per clip, class index per clip); items are units ``[M_i]`` i64 for a GSLM ``lm``,
    ``ProsodyUnits`` for a pGSLM ``MultiStreamUnitLM`` (then ``prosody`` = the backbone's ``Prosody``). ``kind``:
    the package's ``backbone_kind`` (default: the kind of ``lm``). ``on_step(step, loss)`` after every update;
    ``on_eval(epoch, dev_loss, dev_acc)`` after every epoch. ``unit_view``: train (and record in the package) on
    that view of every clip's units (``unit_views.py``: the clusters of a product codebook, pitch registers folded;
    the server folds the task's rows the same way); None: the units as given. Raises :class:`TrainingError` for
    empty splits, an unknown verbalizer or read-out, a ``kind`` that is not the LM's, pGSLM items without prosody, a
    pGSLM LM with ``readout="mean"`` or a ``unit_view``.
    """
    (tr_u, tr_y), (dv_u, dv_y) = train, dev
    if not tr_u or not dv_u:
        raise TrainingError(f"need train and dev clips; got {len(tr_u)} train, {len(dv_u)} dev")
    if recipe.verbalizer not in VERBALIZERS:
        raise TrainingError(f"verbalizer must be one of {', '.join(VERBALIZERS)}, got {recipe.verbalizer!r}")
    if recipe.readout not in READOUTS:
        raise TrainingError(f"readout must be one of {', '.join(READOUTS)}, got {recipe.readout!r}")
    rows_of = row_builder(lm, prosody)
    kind = kind or rows_of.kind
    if kind != rows_of.kind:
        raise TrainingError(f"kind {kind!r} does not match the unit LM, a {rows_of.kind} model")
    if recipe.readout != "separator" and kind != "gslm":
        raise TrainingError(f"readout {recipe.readout!r} is for GSLM backbones; a {kind} package reads the separator")
    if unit_view is not None:
        if kind != "gslm":
            raise TrainingError(f"a unit view is for GSLM backbones; a {kind} package reads the units as they are")
        tr_u, dv_u = [unit_view.apply(u) for u in tr_u], [unit_view.apply(u) for u in dv_u]
    torch.manual_seed(recipe.seed)
    lm.requires_grad_(False).eval()
    device = next(lm.parameters()).device
    C, V = len(labels), lm.cfg.vocab_size
    fixed_vb, fixed_tokens = (fixed_verbalizer([rows_of.units(u) for u in tr_u], C, V, rows_of.unit_tokens(),
                                               rows_of.special_tokens()) if recipe.verbalizer == "fixed" else (None, None))
    params = PromptParams(lm, C, recipe, fixed_vb, fixed_tokens).to(device)
    trainable = [p for p in params.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in trainable)
    opt = torch.optim.Adam(trainable, lr=recipe.lr, betas=recipe.betas)
    raw_tr = raw_dv = None
    if not recipe.deep_prompts:  # nothing before the verbalizer trains: run the frozen LM once per clip
        raw_tr = raw_logits(lm, params.separator, tr_u, prosody=prosody, readout=recipe.readout)
        raw_dv = raw_logits(lm, params.separator, dv_u, prosody=prosody, readout=recipe.readout)
    g = torch.Generator().manual_seed(recipe.seed)
    y_all = torch.as_tensor(list(tr_y), dtype=torch.long)
    hist = {"step": [], "train_loss": [], "epoch": [], "dev_loss": [], "dev_acc": []}
    best = (math.inf, None, 0, {})  # dev loss, state, epoch, dev metrics
    t0, step, bad = time.perf_counter(), 0, 0
    for epoch in range(1, recipe.max_epochs + 1):
        params.train()
        for idx in torch.randperm(len(tr_u), generator=g).split(recipe.batch_size):  # uniform shuffle
            out, full = _forward(rows_of, params, [tr_u[i] for i in idx], None if raw_tr is None else raw_tr[idx])
            loss = _loss(params, out, full, y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(trainable, recipe.clip_norm)
            opt.step()
            step += 1
            hist["step"].append(step)
            loss_v = float(loss.detach())
            hist["train_loss"].append(loss_v)
            if on_step:
                on_step(step, loss_v)
            if recipe.max_steps and step >= recipe.max_steps:
                break
        _, d_loss, d_acc = score(lm, params, dv_u, dv_y, raw=raw_dv, prosody=prosody)
        hist["epoch"].append(epoch)
        hist["dev_loss"].append(d_loss)
        hist["dev_acc"].append(d_acc)
        if on_eval:
            on_eval(epoch, d_loss, d_acc)
        if d_loss < best[0]:
            state = {k: v.detach().clone() for k, v in params.state_dict().items()}
            best, bad = (d_loss, state, epoch, {"loss": d_loss, "accuracy": d_acc}), 0
        else:
            bad += 1
        if bad >= recipe.patience or (recipe.max_steps and step >= recipe.max_steps):
            break
    params.load_state_dict(best[1])
    seconds = time.perf_counter() - t0
    training = {"recipe": recipe.to_dict(), "trainable_params": n_params, "steps": step, "epochs": epoch,
                "best_epoch": best[2], "train_seconds": round(seconds, 2), "dev": best[3],
                "data": {"train": len(tr_u), "dev": len(dv_u)}, **(extra_meta or {})}
    if fixed_tokens is not None:
        training["fixed_verbalizer_tokens"] = fixed_tokens
    meta = PackageMeta(task=task, labels=tuple(labels), backbone_fingerprint=fingerprint, backbone_kind=kind,
                       prompt_length=recipe.prompt_length if recipe.deep_prompts else 0, training=training,
                       readout=recipe.readout, unit_view=unit_view.to_dict() if unit_view else {})
    pkg = params.cpu().to_package(lm, meta)
    params.to(device)
    return TrainResult(pkg, hist, best[2], best[3], seconds, n_params)

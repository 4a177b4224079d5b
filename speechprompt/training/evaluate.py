"""Evaluation of task prompt packages: metrics, per-class report, confusion-matrix PNG.

Metrics follow the SpeechPrompt v2 paper's reporting (arXiv 2303.00733, Table 1): accuracy for most
tasks, macro-F1 alongside it, and the equal error rate (EER) for binary detection tasks (there: fake
speech detection; here: voice activity). The metric functions are pure numpy so they can be checked
against hand-computed values; :func:`predict` runs the serving path (``prompting.PromptBank``, or
``pgslm_prompting.PGSLMPromptBank`` on a pGSLM backbone), so an evaluation scores exactly what the server would
answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from speechprompt.package import TaskPackage, check_compatible, new_package


class EvaluationError(ValueError):
    """Inputs that cannot be scored (empty, mismatched lengths, unknown labels)."""


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``[C, C]`` i64: row = true class, column = predicted class."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1 or t.size == 0:
        raise EvaluationError(f"need two equal non-empty 1-D label lists, got {t.shape} and {p.shape}")
    if t.min() < 0 or p.min() < 0 or t.max() >= num_classes or p.max() >= num_classes:
        raise EvaluationError(f"class indices must lie in [0, {num_classes})")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def per_class_report(cm: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    pred = cm.sum(axis=0).astype(np.float64)
    true = cm.sum(axis=1).astype(np.float64)
    prec = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    rec = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        lab: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(true[i])}
        for i, lab in enumerate(labels)
    }


def equal_error_rate(scores: Sequence[float], is_positive: Sequence[bool]) -> float:
    """EER of a detector: the rate where false acceptance equals false rejection.

    A clip is accepted when ``score >= threshold``. Thresholds sweep the distinct scores from high to
    low; FAR (negatives accepted) rises and FRR (positives rejected) falls, and the EER is read where
    the two piecewise-linear curves cross (linear interpolation between neighbouring thresholds), as
    the ASVspoof evaluation does. Raises :class:`EvaluationError` without both classes present.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if s.shape != y.shape or n_pos == 0 or n_neg == 0:
        raise EvaluationError("EER needs scores for both positive and negative clips")
    far, frr = [0.0], [1.0]  # threshold above every score: nothing accepted
    for t in np.unique(s)[::-1]:
        acc = s >= t
        far.append(float((acc & ~y).sum()) / n_neg)
        frr.append(float((~acc & y).sum()) / n_pos)
    for i in range(1, len(far)):
        if frr[i] <= far[i]:
            d_prev, d_cur = frr[i - 1] - far[i - 1], frr[i] - far[i]  # > 0, then <= 0
            w = d_prev / (d_prev - d_cur)
            return far[i - 1] + w * (far[i] - far[i - 1])
    return far[-1]  # unreachable: at the lowest threshold FRR = 0 <= FAR


def compute_metrics(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    labels: Sequence[str],
    probs: np.ndarray | None = None,
    positive: int | None = None,
) -> dict:
    """All metrics as one JSON-ready dict.

    ``probs [N, C]`` are the class probabilities; with C == 2 (or ``positive`` given) the EER of the
    positive class's probability is added (default positive class: index 1, e.g. ``speech`` in VAD).
    """
    C = len(labels)
    cm = confusion_matrix(y_true, y_pred, C)
    report = per_class_report(cm, labels)
    out = {
        "n": int(cm.sum()),
        "accuracy": float(np.trace(cm) / cm.sum()),
        "macro_f1": float(np.mean([r["f1"] for r in report.values()])),
        "per_class": report,
        "confusion": cm.tolist(),
        "labels": list(labels),
    }
    if probs is not None and (C == 2 or positive is not None):
        pos = 1 if positive is None else positive
        y = np.asarray(y_true) == pos
        if y.any() and (~y).any():
            out["eer"] = equal_error_rate(np.asarray(probs)[:, pos], y)
            out["eer_positive"] = labels[pos]
    return out


def accuracy_by_group(y_true: Sequence[str], y_pred: Sequence[str], groups: Sequence[str]) -> dict[str, dict]:
    """Accuracy within each group of clips (e.g. each test speaker of a speaker-split task): per clip the true and
    predicted label and its group -> ``{group: {"n", "correct", "accuracy"}}``, groups in sorted order. A held-out
    split of a few voices is read voice by voice (docs/results.md: one voice can move a whole cell). Raises
    ``ValueError`` when the three lists differ in length."""
    if not len(y_true) == len(y_pred) == len(groups):
        raise ValueError(f"need one label, prediction and group per clip; got {len(y_true)}, {len(y_pred)}, "
                         f"{len(groups)}")
    tally: dict[str, list[int]] = {}
    for t, p, g in zip(y_true, y_pred, groups, strict=True):
        c = tally.setdefault(str(g), [0, 0])
        c[0] += t == p
        c[1] += 1
    return {g: {"n": n, "correct": k, "accuracy": k / n} for g, (k, n) in sorted(tally.items())}


def result_metric(task_results: dict | None, variant: str, split: str, eer: bool = False) -> float | None:
    """Accuracy (or, with ``eer``, the EER where present) of ``variant`` on ``split`` in one task's entry of a suite
    ``results.json`` (``scripts/run_suite.py``: ``{variant: {split: compute_metrics(...)}}``); None when missing."""
    m = (task_results or {}).get(variant, {}).get(split)
    if not m:
        return None
    return m["eer"] if eer and "eer" in m else m["accuracy"]


@torch.no_grad()
def predict(unit_lm, pkg: TaskPackage, units: list, batch_size: int = 32, prosody=None) -> np.ndarray:
    """Class probabilities ``[N, C]`` f32 for deduplicated unit sequences, via the serving path.

    GSLM ``unit_lm``: ``units`` are ``[M_i]`` i64 codebook indices, scored by ``prompting.PromptBank`` exactly as
    the server does (prefix K/V computed once, one LM forward per batch). pGSLM ``MultiStreamUnitLM``: ``units``
    are ``ProsodyUnits`` and ``prosody`` the backbone's ``Prosody``; scored by ``PGSLMPromptBank`` (the server's
    pGSLM bank). Raises :class:`EvaluationError` for a pGSLM LM without ``prosody``.
    """
    from speechprompt.pgslm import MultiStreamUnitLM
    from speechprompt.prompting import PromptBank

    if isinstance(unit_lm, MultiStreamUnitLM):
        from speechprompt.pgslm_prompting import PGSLMPromptBank

        if prosody is None:
            raise EvaluationError("a pGSLM unit LM is scored with its backbone's prosody")
        bank = PGSLMPromptBank(unit_lm, prosody)
    else:
        bank = PromptBank(unit_lm)
    bank.add("eval", pkg)
    rows: list[np.ndarray] = []
    for i in range(0, len(units), batch_size):
        chunk = units[i : i + batch_size]
        for p in bank.classify(chunk, ["eval"] * len(chunk)):
            rows.append(np.asarray(p.detach().cpu() if torch.is_tensor(p) else p, dtype=np.float32))
    return np.stack(rows) if rows else np.zeros((0, len(pkg.meta.labels)), np.float32)


def evaluate_package(
    backbone, pkg: TaskPackage, units: list, label_names: Sequence[str], positive: int | None = None
) -> dict:
    """Check the package fits ``backbone`` (raises ``BackboneMismatch``), predict, and score.

    ``units``: per clip, units ``[M_i]`` (GSLM) or ``ProsodyUnits`` (pGSLM). ``label_names``: the true label
    string of each clip; raises :class:`EvaluationError` for a label the package does not know.
    """
    c = backbone.spec.unit_lm
    check_compatible(pkg, fingerprint=backbone.fingerprint, kind=backbone.spec.kind, layers=c.layers,
                     dim=c.embed_dim, vocab_size=c.vocab_size, codebook=getattr(backbone, "codebook", None))
    labels = list(pkg.meta.labels)
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({lab for lab in label_names if lab not in index})
    if unknown:
        raise EvaluationError(f"labels {unknown} are not in the package's labels {labels}")
    probs = predict(backbone.unit_lm, pkg, units, prosody=getattr(backbone, "prosody", None))
    y_true = [index[lab] for lab in label_names]
    return compute_metrics(y_true, probs.argmax(axis=1).tolist(), labels, probs, positive)


def attach_metrics(pkg: TaskPackage, metrics: dict[str, dict]) -> TaskPackage:
    """The same tensors with ``training["test"][split]`` = accuracy / macro-F1 / EER / n of each scored split
    (a new file, hence a new version)."""
    summary = {s: {k: m[k] for k in ("accuracy", "macro_f1", "eer", "n") if k in m} for s, m in metrics.items()}
    meta = dataclasses.replace(pkg.meta, training={**pkg.meta.training, "test": summary})
    return new_package(meta, pkg.deep_key, pkg.deep_value, pkg.input_prompt, pkg.separator, pkg.verbalizer,
                       more=pkg.more)


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> None:
    """Write the confusion matrix (rows: true, columns: predicted) as a PNG with counts in cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(3.0, 1.2 + 0.45 * n), max(2.8, 1.0 + 0.45 * n)), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    hi = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if cm[i, j] > hi / 2 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(history: dict, path, title: str = "") -> None:
    """PNG: training loss per step (left axis) and dev loss / dev accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    a.plot(history["step"], history["train_loss"], lw=0.8, label="train loss (batch)")
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.legend(fontsize=7)
    b.plot(history["epoch"], history["dev_loss"], "o-", ms=3, label="dev loss")
    b.set_xlabel("epoch")
    b2 = b.twinx()
    b2.plot(history["epoch"], history["dev_acc"], "s-", ms=3, color="tab:green", label="dev accuracy")
    b2.set_ylim(0, 1.02)
    b.legend(loc="upper left", fontsize=7)
    b2.legend(loc="upper right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_verbalizer(weights: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "",
                    top_k: int = 3) -> list[list[int]]:
    """PNG of a learnable verbalizer's unit-to-label weights: ``weights [C, K]`` (centred over labels,
    ``speechprompt.explain.verbalizer_unit_weights``) as a heat map, each label's ``top_k`` units outlined.
    Returns the outlined units per label (largest weight first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    c, k = weights.shape
    top = [np.argsort(-row, kind="stable")[:top_k].tolist() for row in weights]
    lim = float(np.abs(weights).max()) or 1.0
    fig, ax = plt.subplots(figsize=(min(16.0, 2.5 + 0.09 * k), max(2.4, 1.2 + 0.35 * c)), dpi=100)
    im = ax.imshow(weights, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    for row, units in enumerate(top):
        for u in units:
            ax.add_patch(Rectangle((u - 0.5, row - 0.5), 1, 1, fill=False, lw=1.2, ec="black"))
    ax.set_yticks(range(c), labels, fontsize=7)
    ax.set_xlabel(f"unit (outlined: each label's top {top_k})")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="weight - mean over labels")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return top

"""Train a task's prompts more than one way and keep the run the dev split prefers (never the test split).

Two per-task choices are made this way: where the label is read (``train_best_readout``: the separator's state or the
mean state, docs/prompting.md "Read-out") and which units the prompts read (``train_best_unit_view``: the units or the
clusters view of a product codebook, ``speechprompt/unit_views.py``). Each run is a plain
:func:`~speechprompt.training.trainer.train_prompts` call from the same seed; the kept package records every run's
dev metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from speechprompt.choices import READOUTS
from speechprompt.package import new_package
from speechprompt.prosody import Prosody
from speechprompt.training.lm_rows import row_builder
from speechprompt.training.trainer import Item, Recipe, TrainResult, train_prompts
from speechprompt.unit_lm import UnitLM
from speechprompt.unit_views import UnitView


def _pick(dev: dict[str, dict], paper: str) -> str:
    """The run to keep from ``{name: {"accuracy", "loss"}}`` (dev metrics at each run's best epoch): the higher
    accuracy, then the lower loss, then ``paper`` (SpeechPrompt v2's own choice). Raises ``KeyError`` when a metric
    is missing."""
    return min(dev, key=lambda r: (-dev[r]["accuracy"], dev[r]["loss"], r != paper))


def pick_readout(dev: dict[str, dict]) -> str:
    """The read-out to keep (:func:`_pick`; ties go to ``separator``)."""
    return _pick(dev, "separator")


def train_best_readout(lm: UnitLM, task: str, labels: Sequence[str], train: tuple[Sequence[Item], Sequence[int]],
                       dev: tuple[Sequence[Item], Sequence[int]], *, recipe: Recipe = Recipe(),
                       prosody: Prosody | None = None, on_readout: Callable[[str], None] | None = None,
                       **kwargs) -> TrainResult:
    """Train once per read-out the LM supports and keep the package with the higher dev accuracy.

    The read-out is a per-task choice (docs/results.md, "Read-out"): the mean state helps short words, the
    separator's state helps what spans the clip (language, gender). This lets the dev split make it, never the
    test split. GSLM LMs try ``separator`` then ``mean``; a pGSLM LM reads the separator only, so it trains once.
    Every run uses ``recipe`` (its ``readout`` is ignored) with the same seed, so each equals a plain
    :func:`train_prompts` call with that read-out. The winner has the higher dev accuracy at its best epoch
    (:func:`pick_readout`). Its package's ``training["readout_selection"]`` records ``{"by": "dev accuracy",
    "<readout>": {"accuracy", "loss", "best_epoch", "seconds"}, ...}`` for every run. Other
    arguments are :func:`train_prompts`'; ``on_readout(name)`` is called before each run. Cost: one training
    per read-out; the result's ``seconds`` counts them all (the package's ``train_seconds``, the winner's alone). Raises what :func:`train_prompts` raises.
    """
    kind = kwargs.get("kind") or row_builder(lm, prosody).kind
    runs: dict[str, TrainResult] = {}
    for readout in READOUTS if kind == "gslm" else ("separator",):
        if on_readout:
            on_readout(readout)
        runs[readout] = train_prompts(lm, task, labels, train, dev, prosody=prosody,
                                      recipe=dataclasses.replace(recipe, readout=readout), **kwargs)
    return _kept(runs, pick_readout({r: x.dev for r, x in runs.items()}), "readout_selection")


def _kept(runs: dict[str, TrainResult], chosen: str, record: str) -> TrainResult:
    """``runs[chosen]`` with ``training[record]`` = ``{"by": "dev accuracy", <run>: {accuracy, loss, best_epoch,
    seconds}, ...}`` for every run (a new package, hence a new version) and ``seconds`` = all runs' time."""
    res = runs[chosen]
    selection = {"by": "dev accuracy"} | {r: {**x.dev, "best_epoch": x.best_epoch, "seconds": round(x.seconds, 2)}
                                          for r, x in runs.items()}
    pkg = res.package
    meta = dataclasses.replace(pkg.meta, training={**pkg.meta.training, record: selection})
    res.package = new_package(meta, pkg.deep_key, pkg.deep_value, pkg.input_prompt, pkg.separator, pkg.verbalizer,
                              more=pkg.more)
    res.seconds = sum(x.seconds for x in runs.values())
    return res


def pick_unit_view(dev: dict[str, dict]) -> str:
    """The view to keep, ``units`` or ``clusters`` (:func:`_pick`; ties go to ``units``)."""
    return _pick(dev, "units")


def train_best_unit_view(lm: UnitLM, task: str, labels: Sequence[str], train: tuple[Sequence[Item], Sequence[int]],
                         dev: tuple[Sequence[Item], Sequence[int]], *, view: UnitView | None,
                         fit: Callable[..., TrainResult] | None = None,
                         on_view: Callable[[str], None] | None = None, **kwargs) -> TrainResult:
    """Train on the units as they are and on the clusters ``view`` (``unit_views.py``), keep the higher dev accuracy.

    Which units a task should read is a per-task choice (docs/results.md, "The clusters view"): folding the pitch
    registers helps word tasks and would cost voice tasks; the dev split makes it, never the test split. ``view`` None
    (a backbone without a product codebook) trains once. ``fit`` is the training of one view (default
    :func:`train_prompts`; :func:`train_best_readout` nests the read-out choice in each view), called with
    ``unit_view`` and ``kwargs``, the same seed for both. The winner (:func:`pick_unit_view`) carries
    ``training["unit_view_selection"]`` ``{"by": "dev accuracy", "units": {"accuracy", "loss", "best_epoch",
    "seconds"}, "clusters": {...}}``; the result's ``seconds`` counts both runs. ``on_view(name)`` is called before each
    run. Raises what ``fit`` raises.
    """
    fit = fit or train_prompts
    runs: dict[str, TrainResult] = {}
    for name, v in (("units", None), ("clusters", view)) if view is not None else (("units", None),):
        if on_view:
            on_view(name)
        runs[name] = fit(lm, task, labels, train, dev, unit_view=v, **kwargs)
    if len(runs) == 1:
        return runs["units"]
    return _kept(runs, pick_unit_view({n: x.dev for n, x in runs.items()}), "unit_view_selection")

"""Train an ensemble package: K prompt sets for one task from K seeds (``speechprompt/ensembles.py``).

Averaging the class probabilities of three training runs raised every real-speech task of issue 14's split over the
mean of its runs (docs/results.md, "Ensembles of prompt packages"). Member m trains with ``recipe.seed + m``. Choices
the first member makes on the dev split (``--readout auto``, ``--unit-view auto``: ``choose.py``) hold for all: the
later members train with the read-out and unit view the first one kept (one package has one read-out; members may
read different unit views, ``member_unit_views``, but a mixed ensemble trained here did not beat one view at equal cost:
docs/results.md, "Per-member unit views").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from speechprompt.ensembles import ensemble
from speechprompt.package import with_metadata
from speechprompt.package_fields import MAX_MEMBERS
from speechprompt.prosody import Prosody
from speechprompt.training.evaluate import predict
from speechprompt.training.lm_rows import TrainingError
from speechprompt.training.trainer import Item, Recipe, TrainResult, train_prompts
from speechprompt.unit_lm import UnitLM

_CHOICE_ARGS = ("view", "fit", "on_view", "on_readout", "unit_view")  # the first member's choices, not the others'


def train_members(lm: UnitLM, task: str, labels: Sequence[str], train: tuple[Sequence[Item], Sequence[int]],
                  dev: tuple[Sequence[Item], Sequence[int]], *, members: int, recipe: Recipe = Recipe(),
                  prosody: Prosody | None = None, first_fit: Callable[..., TrainResult] | None = None,
                  on_member: Callable[[int, int], None] | None = None, **kwargs) -> TrainResult:
    """Train ``members`` runs (seeds ``recipe.seed + m``) and return one ensemble package (``members`` 1: one run).

    The first run is ``first_fit`` (default :func:`train_prompts`; ``choose.train_best_readout`` / ``train_best_unit_view``
    make their dev-split choices there) with ``kwargs``; the others are :func:`train_prompts` with the first run's
    read-out and unit view. The result's ``dev`` is the ensemble's own on the dev split (accuracy; loss = mean negative
    log of the true class's mean probability); ``seconds`` and ``trainable_params`` count every member; ``history`` and
    ``best_epoch`` are the first member's. The package's ``training`` holds ``ensemble_of`` (each member's version
    and training record) and ``ensemble_dev``. ``on_member(m, seed)`` is called before each run. Raises
    ``TrainingError`` for ``members`` outside 1..``MAX_MEMBERS``, and what the training raises.
    """
    if not 1 <= members <= MAX_MEMBERS:
        raise TrainingError(f"members must be 1 to {MAX_MEMBERS}, got {members}")
    if on_member:
        on_member(0, recipe.seed)
    first = (first_fit or train_prompts)(lm, task, labels, train, dev, recipe=recipe, prosody=prosody, **kwargs)
    if members == 1:
        return first
    rest = {k: v for k, v in kwargs.items() if k not in _CHOICE_ARGS}
    runs = [first]
    for m in range(1, members):
        if on_member:
            on_member(m, recipe.seed + m)
        member_recipe = dataclasses.replace(recipe, seed=recipe.seed + m, readout=first.package.meta.readout)
        runs.append(train_prompts(lm, task, labels, train, dev, recipe=member_recipe, prosody=prosody,
                                  unit_view=first.package.meta.view, **rest))
    pkg = ensemble([r.package for r in runs])
    probs = predict(lm, pkg, list(dev[0]), prosody=prosody)  # [N, C]
    y = np.asarray(dev[1])
    dev_metrics = {"accuracy": float((probs.argmax(1) == y).mean()),
                   "loss": float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())}
    pkg = with_metadata(pkg, training={**pkg.meta.training, "ensemble_dev": dev_metrics})
    return TrainResult(package=pkg, history=first.history, best_epoch=first.best_epoch, dev=dev_metrics,
                       seconds=sum(r.seconds for r in runs), trainable_params=sum(r.trainable_params for r in runs))


__all__ = ["train_members"]

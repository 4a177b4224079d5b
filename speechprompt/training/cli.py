"""``speechprompt train`` / ``eval`` / ``make-suite`` (and ``ensemble``, ``ensemble_cli.py``): mounted into the main
CLI with :func:`register`.

Glue only (it may print): data -> units (cached) -> :func:`trainer.train_prompts` -> package + curves +
evaluation -> optional upload (``PUT {URL}/v1/tasks/{task}`` with a Bearer admin token). On a pGSLM bundle the
units cache holds each clip's ``ProsodyUnits`` (durations and per-unit F0 too: YAAPT once per clip).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from speechprompt.choices import READOUTS as READOUT_CHOICES
from speechprompt.choices import UNIT_VIEWS
from speechprompt.choices import VERBALIZERS as VERBALIZER_CHOICES
from speechprompt.paths import default_path

READOUT_AUTO = "auto"  # train with each read-out, keep the better on dev (choose.train_best_readout)
UNIT_VIEW_CHOICES = (*UNIT_VIEWS, "auto")  # + auto: train with each, keep the dev winner (train_best_unit_view)


def _load(data: Path, backbone_dir: Path, cache_dir: Path, dev_frac: float, test_frac: float, check=None):
    from speechprompt.training import manifest as M

    return _load_examples(M.assign_splits(M.load_examples(data), dev_frac, test_frac), backbone_dir, cache_dir,
                          check)


def _augmented(examples, extractor, cache, kinds, copies: int, seed: int):
    """Units of ``copies`` perturbed versions of every train clip (cached like the originals)."""
    import numpy as np

    from speechprompt.training import manifest as M
    from speechprompt.training.progress import progress

    train = M.split_of(examples, "train")
    wavs, labels = [], []
    for i, ex in enumerate(progress(train, desc="augment", unit="clip")):
        wav = M.load_audio(ex.path)
        for c in range(copies):
            wavs.append(M.augment_waveform(wav, np.random.default_rng([seed, i, c]), kinds))
            labels.append(ex.label)
    return M.compute_units(wavs, extractor, cache), labels


def upload(url: str, pkg, token: str | None) -> str:
    """PUT the package bytes to ``{url}/v1/tasks/{task}`` (or to ``url`` if it already names the task);
    returns the server's answer. Raises ``typer.Exit`` on an HTTP error."""
    import httpx

    target = url if "/v1/tasks/" in url else f"{url.rstrip('/')}/v1/tasks/{pkg.meta.task}"
    headers = {"Content-Type": "application/octet-stream", **({"Authorization": f"Bearer {token}"} if token else {})}
    r = httpx.put(target, content=pkg.data, headers=headers, timeout=60)
    if r.status_code >= 400:
        typer.echo(f"upload to {target} failed: {r.status_code} {r.text[:500]}", err=True)
        raise typer.Exit(1)
    return r.text


def train(
    data: Path = typer.Argument(..., exists=True, help="manifest (.csv/.tsv/.jsonl: path,label[,split]) or folder/<label>/"),
    task: str = typer.Option(..., help="task name: 1-64 of a-z 0-9 _ -, starting with a letter or digit"),
    backbone: Path = typer.Option(default_path("models/default"), help="backbone bundle folder "
                                 "(default: models/default here, else in the installation)"),
    out: Path = typer.Option(None, help="package file to write (default <task>.safetensors)"),
    verbalizer: Literal[VERBALIZER_CHOICES] = typer.Option(
        "learnable", help="learnable (v2) or fixed (v1: labels -> frequent units)"),
    readout: Literal[(*READOUT_CHOICES, READOUT_AUTO)] = typer.Option(
        "separator", help="where the label is read: separator (SpeechPrompt v2), mean (the mean hidden state of the "
        "clip; GSLM backbones; docs/prompting.md), or auto (train with each, keep the higher dev accuracy; twice "
        "the time)"),
    unit_view: Literal[UNIT_VIEW_CHOICES] = typer.Option(
        "units", help="the units the prompts read: units (as the codebook gives them), clusters (a product codebook's "
        "clusters, pitch registers folded: measured better for word tasks; docs/prompting.md), or auto (on a product "
        "codebook: train with each, keep the higher dev accuracy, twice the time; otherwise units)"),
    members: int = typer.Option(1, min=1, max=8, help="prompt sets to train (seeds seed, seed+1, ...) into one "
                                "ensemble package: the server answers their mean probability, K rows per clip "
                                "(docs/prompting.md); auto choices are the first member's"),
    augment: str = typer.Option("", help="comma list of speed,pitch,noise: perturbed copies of train clips"),
    augment_copies: int = typer.Option(1, help="perturbed copies per train clip"),
    cache_dir: Path = typer.Option(default_path(".cache/units"), help="on-disk units cache"),
    dev_frac: float = typer.Option(0.1, help="dev share for rows without a split"),
    test_frac: float = typer.Option(0.1, help="test share for rows without a split"),
    max_epochs: int = typer.Option(None, help="upper bound (default: the recipe's); early stopping on dev decides"),
    seed: int = typer.Option(100501, help="random seed (official value)"),
    upload_url: str = typer.Option(None, "--upload", help="server URL to PUT the package to"),
    token: str = typer.Option(None, envvar="SPEECHPROMPT_ADMIN_TOKEN", help="admin token for --upload"),
    threads: int = typer.Option(1, help="torch intra-op threads"),
) -> None:
    """Train a task prompt (deep prompts + separator + verbalizer) on the frozen backbone; write the package."""
    import numpy as np
    import torch

    from speechprompt.explain import verbalizer_unit_weights
    from speechprompt.package import check_task_name
    from speechprompt.training import manifest as M
    from speechprompt.training.choose import train_best_readout, train_best_unit_view
    from speechprompt.training.evaluate import (
        attach_metrics,
        evaluate_package,
        plot_confusion,
        plot_curves,
        plot_verbalizer,
    )
    from speechprompt.training.members import train_members
    from speechprompt.training.progress import progress
    from speechprompt.training.trainer import Recipe, train_prompts
    from speechprompt.unit_views import UnitView

    check_task_name(task)
    torch.set_num_threads(max(1, threads))

    def options_fit(bb) -> None:  # refused when the backbone loads, before any clip is encoded
        if readout == "mean" and bb.spec.kind != "gslm":
            raise typer.BadParameter(f"{readout!r} is for GSLM backbones; this {bb.spec.kind} backbone's packages "
                                     "read the separator", param_hint="--readout")
        if unit_view == "clusters" and (bb.spec.kind != "gslm" or UnitView.of_codebook(bb.codebook) is None):
            why = ("unit views are for GSLM backbones" if bb.spec.kind != "gslm" else
                   "this backbone has no product codebook (no pitch registers to fold)")
            raise typer.BadParameter(f"{why}; accepted here: units or auto", param_hint="--unit-view")

    examples, bb, extractor, cache, splits = _load(data, backbone, cache_dir, dev_frac, test_frac, options_fit)
    view = UnitView.of_codebook(bb.codebook) if bb.spec.kind == "gslm" else None
    labels = M.label_set(examples)
    index = {lab: i for i, lab in enumerate(labels)}
    stray = sorted({e.label for e in examples} - set(index))
    if stray:
        raise M.ManifestError(f"labels {stray} occur outside the train split only; every label needs train clips")
    tr_u, tr_l = splits.get("train", ([], []))
    if augment:
        kinds = [k.strip() for k in augment.split(",") if k.strip()]
        au, al = _augmented(examples, extractor, cache, kinds, augment_copies, seed)
        tr_u, tr_l = tr_u + au, tr_l + al
    dv_u, dv_l = splits.get("dev", ([], []))
    recipe = Recipe(verbalizer=verbalizer, max_epochs=max_epochs or Recipe().max_epochs, seed=seed,
                    readout="separator" if readout == READOUT_AUTO else readout)
    sizes = {s: len(u) for s, (u, _) in splits.items()} | {"train_augmented": len(tr_u)}
    bar = progress(desc=f"train {task}", unit="step")
    # dev_acc is the last epoch's; kept_* the epoch the trainer keeps so far (the lowest dev loss, the first on a tie),
    # whose dev accuracy the summary line after training reports
    shown = {"loss": "-", "epoch": 0, "dev_loss": "-", "dev_acc": "-", "kept_epoch": "-", "kept_dev_acc": "-"}
    kept = {"loss": float("inf")}

    def on_step(step: int, loss: float) -> None:
        shown["loss"] = f"{loss:.3f}"
        bar.update(1)
        bar.set_postfix(shown, refresh=False)

    def on_eval(epoch: int, d_loss: float, d_acc: float) -> None:
        shown.update(epoch=epoch, dev_loss=f"{d_loss:.3f}", dev_acc=f"{d_acc:.3f}")
        if d_loss < kept["loss"]:
            kept["loss"] = d_loss
            shown.update(kept_epoch=epoch, kept_dev_acc=f"{d_acc:.3f}")
        bar.set_postfix(shown)

    def new_run(what: str) -> None:  # an auto choice: one run per option, the step count runs on across them
        if bar.n:  # the run before ends here: its last line, however short it was
            bar.refresh()
        kept["loss"] = float("inf")
        shown.update(kept_epoch="-", kept_dev_acc="-")
        typer.echo(f"training {task} with the {what}", err=True)
        bar.set_description(f"train {task} ({what})")

    views = unit_view == "auto" and view is not None
    current_view = ["units"]

    def on_readout(name: str) -> None:
        new_run(f"{name} read-out" + (f", {current_view[0]} view" if views else ""))

    def on_view(name: str) -> None:
        current_view[0] = name
        if readout != READOUT_AUTO:
            new_run(f"{name} view")

    fit = train_best_readout if readout == READOUT_AUTO else train_prompts
    more = {"on_readout": on_readout} if readout == READOUT_AUTO else {}
    if views:
        fit, more = train_best_unit_view, {"view": view, "fit": fit, "on_view": on_view, **more}
    elif unit_view == "clusters":
        more["unit_view"] = view

    def on_member(m: int, member_seed: int) -> None:
        if members > 1 and (m or (readout != READOUT_AUTO and not views)):  # auto choices announce their own runs
            new_run(f"prompts of member {m + 1} of {members} (seed {member_seed})")
        elif members > 1:
            typer.echo(f"member 1 of {members} (seed {member_seed}) makes the auto choices on dev; the others follow",
                       err=True)

    res = train_members(bb.unit_lm, task, labels, (tr_u, [index[x] for x in tr_l]), (dv_u, [index[x] for x in dv_l]),
                        members=members, first_fit=fit, on_member=on_member, fingerprint=bb.fingerprint, kind=bb.spec.kind,
                        prosody=bb.prosody, recipe=recipe,
                        extra_meta={"data_sizes": sizes, "augment": augment or None, "backbone_name": bb.spec.name},
                        on_step=on_step, on_eval=on_eval, **more)
    bar.close()
    first = res.package.meta.training["ensemble_of"][0]["training"] if members > 1 else res.package.meta.training
    if members > 1:
        typer.echo(f"ensemble of {members} members: dev accuracy " + ", ".join(
            f"{m['training']['dev']['accuracy']:.3f}" for m in res.package.meta.training["ensemble_of"])
            + f" -> together {res.dev['accuracy']:.3f}")
    if readout == READOUT_AUTO:
        sel = first["readout_selection"]
        typer.echo(f"read-out {res.package.meta.readout} (dev accuracy " + ", ".join(
            f"{r} {sel[r]['accuracy']:.3f}" for r in READOUT_CHOICES if r in sel) + ")")
    if views:
        sel = first["unit_view_selection"]
        tie = sel["units"]["accuracy"] == sel["clusters"]["accuracy"]
        typer.echo(f"unit view {'clusters' if res.package.meta.view else 'units'} (dev accuracy " + ", ".join(
            f"{v} {sel[v]['accuracy']:.3f}" for v in ("units", "clusters")) + (
            "; a tie, so the lower dev loss: " + ", ".join(f"{v} {sel[v]['loss']:.4g}" for v in ("units", "clusters"))
            if tie else "") + ")")
    elif unit_view == "auto":
        typer.echo("unit view units (this backbone has no product codebook: nothing to fold, one run)")
    out = out or Path(f"{task}.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics = {s: evaluate_package(bb, res.package, u, ys) for s, (u, ys) in splits.items() if s.startswith("test")}
    pkg = attach_metrics(res.package, metrics)
    out.write_bytes(pkg.data)
    plot_curves(res.history, out.with_suffix(".curves.png"), title=f"{task} ({verbalizer} verbalizer)")
    plot_verbalizer(verbalizer_unit_weights(pkg.mean_verbalizer, bb.unit_to_token), labels,
                    out.with_suffix(".verbalizer.png"), title=f"{task}: units the verbalizer ties to each label")
    for s, m in metrics.items():
        plot_confusion(np.array(m["confusion"]), labels, out.with_suffix(f".{s}.confusion.png"), s)
    report = {"task": task, "version": pkg.version, "package": str(out), "readout": pkg.meta.readout,
              "unit_view": "clusters" if pkg.meta.view else "units",
              "unit_view_selection": first.get("unit_view_selection"), "members": pkg.meta.members,
              "members_dev": [m["training"]["dev"] for m in pkg.meta.training.get("ensemble_of", [])] or None,
              "dev": res.dev, "test": metrics,
              "trainable_params": res.trainable_params, "data_sizes": sizes,
              "train_seconds": round(res.seconds, 1),  # with --readout auto: every run's
              "readout_selection": first.get("readout_selection")}
    out.with_suffix(".report.json").write_text(json.dumps(report, indent=1) + "\n")
    typer.echo(f"{task} version {pkg.version} -> {out}  dev acc {res.dev['accuracy']:.3f}  " + "  ".join(
        f"{s} acc {m['accuracy']:.3f}" for s, m in metrics.items()))
    if upload_url:
        typer.echo(f"uploaded: {upload(upload_url, pkg, token)}")


def evaluate(
    package: Path = typer.Argument(..., exists=True, help="task prompt package (.safetensors), or a task's folder "
                                   "in a file store (prompts_store/<task>: its CURRENT version)"),
    data: Path = typer.Argument(..., exists=True, help="manifest or folder/<label>/ of labelled clips"),
    backbone: Path = typer.Option(default_path("models/default"), help="backbone bundle folder "
                                 "(default: models/default here, else in the installation)"),
    split: str = typer.Option("test", help="split to score ('all' for every row)"),
    positive: str = typer.Option(None, help="positive label for the EER of a binary detector (default: 2nd label)"),
    json_out: Path = typer.Option(None, "--json", help="write the metrics as JSON here"),
    confusion: Path = typer.Option(None, help="write the confusion matrix PNG here"),
    cache_dir: Path = typer.Option(default_path(".cache/units"), help="on-disk units cache"),
) -> None:
    """Accuracy, macro-F1 (EER for binary detection), per-class report and confusion matrix of a package."""
    import numpy as np

    from speechprompt.package import PackageError, check_compatible, read_package
    from speechprompt.training import manifest as M
    from speechprompt.training.evaluate import evaluate_package, plot_confusion

    if package.is_dir():  # a file store's task folder: CURRENT names the served version
        current = package / "CURRENT"
        if not current.is_file():
            typer.echo(f"error: {package} is a folder without a CURRENT file; give a package (.safetensors) or a "
                       "task folder of a file store", err=True)
            raise typer.Exit(2)
        version = current.read_text().strip()
        if not version or not (package / f"{version}.safetensors").is_file():
            typer.echo(f"error: {current} names version {version!r}, but {package} holds no such package "
                       f"({version or '<empty>'}.safetensors)", err=True)
            raise typer.Exit(2)
        package = package / f"{version}.safetensors"
    try:
        pkg = read_package(package.read_bytes(), stored=True)  # a file or store folder, read as the server reads a store
    except PackageError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    examples = M.load_examples(data)
    if split != "all":
        examples = [e for e in examples if e.split == split] or [e for e in examples if not e.split]
    if not examples:
        typer.echo(f"error: no clips in split {split!r}", err=True)
        raise typer.Exit(2)
    examples = [M.Example(e.path, e.label, "eval") for e in examples]

    def package_fits(bb) -> None:  # another backbone's package is refused before any clip is encoded
        c = bb.spec.unit_lm
        try:
            check_compatible(pkg, fingerprint=bb.fingerprint, kind=bb.spec.kind, layers=c.layers, dim=c.embed_dim,
                             vocab_size=c.vocab_size, codebook=getattr(bb, "codebook", None))
        except PackageError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(3) from None

    _, bb, _, _, splits = _load_examples(examples, backbone, cache_dir, package_fits)
    units, labels = splits["eval"]
    pos = None if positive is None else list(pkg.meta.labels).index(positive)
    try:
        m = evaluate_package(bb, pkg, units, labels, positive=pos)
    except PackageError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(3) from None
    m = {"task": pkg.meta.task, "version": pkg.version, "split": split, **m}
    if json_out:
        json_out.write_text(json.dumps(m, indent=1) + "\n")
    if confusion:
        plot_confusion(np.array(m["confusion"]), m["labels"], confusion, f"{pkg.meta.task} {split}")
    typer.echo(f"{pkg.meta.task} {pkg.version} on {m['n']} clips: accuracy {m['accuracy']:.4f}  macro-F1 "
               f"{m['macro_f1']:.4f}" + (f"  EER {m['eer']:.4f} ({m['eer_positive']})" if "eer" in m else ""))
    for lab, r in m["per_class"].items():
        typer.echo(f"  {lab:>28}  P {r['precision']:.3f}  R {r['recall']:.3f}  F1 {r['f1']:.3f}  n {r['support']}")


def _load_examples(examples, backbone_dir: Path, cache_dir: Path, check=None):
    """Load the backbone, run ``check(backbone)`` (options or a package that cannot fit it raise here, before any
    clip is encoded), then every clip's units (cached): ``(examples, backbone, extractor, cache, splits)``."""
    from speechprompt.backbone import Backbone, BundleError
    from speechprompt.training import manifest as M
    from speechprompt.training.progress import progress

    try:
        bb = Backbone.load(backbone_dir)
    except BundleError as e:
        typer.echo(f"error: {e}\npass the backbone bundle folder with --backbone DIR (e.g. models/default of "
                   "a speechprompt-server checkout)", err=True)
        raise typer.Exit(2) from None
    if check is not None:
        check(bb)
    extractor = bb.unit_extractor()
    if bb.spec.kind == "pgslm":  # units + durations + F0 per unit segment, cached together
        from speechprompt.prosody import ProsodyExtractor

        extractor = ProsodyExtractor.from_parts(extractor, bb.prosody)
    cache = M.UnitsCache(cache_dir, bb.units_key)
    with progress(total=len(examples), desc="units", unit="clip") as bar:
        splits = M.units_by_split(examples, extractor, cache, progress=bar.update)
    typer.echo(f"units: {cache.hits} cached, {cache.misses} computed ({cache.root})")
    return examples, bb, extractor, cache, splits


def make_suite_cmd(
    out: Path = typer.Argument(Path("data/suite"), help="folder for <task>/manifest.csv + clips"),
    tasks: str = typer.Option("", help="comma list of suite tasks (default: all)"),
    scale: float = typer.Option(1.0, help="multiplies the clips per split (train 256, dev 64, test 96, ...)"),
    seed: int = typer.Option(0),
    jobs: int = typer.Option(2, help="worker processes"),
) -> None:
    """Generate the synthetic task suite (TTS; unseen voices / accents / engine in the test splits)."""
    from speechprompt.training.progress import progress
    from speechprompt.training.suite import TASKS, make_suite

    names = [t.strip() for t in tasks.split(",") if t.strip()] or list(TASKS)
    with progress(desc="suite", unit="clip") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
        summary = make_suite(out, names, scale=scale, seed=seed, jobs=jobs, progress=progress)
    for name, t in summary["tasks"].items():
        typer.echo(f"{name:>12}: {len(t['labels'])} classes  " + " ".join(f"{s}={n}" for s, n in t["splits"].items()))


def register(app: typer.Typer) -> None:
    """Add ``train``, ``eval``, ``ensemble`` and ``make-suite`` to the ``speechprompt`` CLI."""
    app.command("train")(train)
    from speechprompt.training.ensemble_cli import ensemble_cmd

    app.command("ensemble")(ensemble_cmd)
    app.command("eval")(evaluate)
    app.command("make-suite")(make_suite_cmd)

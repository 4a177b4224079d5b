"""``speechprompt ensemble``: join task prompt packages into one ensemble package (``speechprompt/ensembles.py``).

Glue only (it may print): read the packages, join them, refuse an ``--out`` that is an input, warn when a member (its
tensors and unit view) is given twice, write the result. Mounted by ``training/cli.py``'s ``register``.
"""

from __future__ import annotations

from pathlib import Path

import typer


def ensemble_cmd(
    packages: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="two or more packages of one task "
                                          "(same labels, backbone, prompt length, read-out; the unit view may differ "
                                          "per member)"),
    out: Path = typer.Option(..., help="the ensemble package to write (not one of the inputs)"),
    task: str = typer.Option(None, help="the ensemble's task name (default: the packages')"),
) -> None:
    """Join packages of one task (e.g. other seeds, or one trained on the units and one on the clusters view) into one
    ensemble package: the server scores every member in the same forward and answers their mean probability
    (docs/prompting.md)."""
    from collections import Counter

    from speechprompt.ensembles import ensemble
    from speechprompt.package import PackageError, read_package

    if any(out.resolve() == p.resolve() or (out.exists() and out.samefile(p)) for p in packages):
        typer.echo(f"error: --out {out} is one of the input packages; write the ensemble to a new file", err=True)
        raise typer.Exit(2)
    try:
        # read as the server reads its store (a package saved by an older release may spell a number "05" or name a
        # key twice); what is written is a new package with canonical metadata, which a strict upload accepts
        parts = [read_package(p.read_bytes(), stored=True) for p in packages]
        pkg = ensemble(parts, task=task)
    except PackageError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    held = [(_member_digest(m, v), p.version) for p in parts  # an ensemble given in: each member
            for m, v in zip(p.members, p.meta.views, strict=True)]
    counts = Counter(d for d, _ in held)
    twice = sorted({v for d, v in held if counts[d] > 1})
    if twice:
        typer.echo(f"warning: a member is given more than once (in package {', '.join(twice)}): it counts more than "
                   "once in the mean", err=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(pkg.data)
    views = ", ".join("clusters" if v else "units" for v in pkg.meta.views)
    say = f"unit views: {views}" if pkg.meta.member_unit_views else f"unit view: {'clusters' if pkg.meta.view else 'units'}"
    typer.echo(f"{pkg.meta.task} version {pkg.version}: {pkg.meta.members} members ({say}) -> {out}")


def _member_digest(member, view) -> bytes:
    """sha256 of a prompt set's tensors (``package.PromptSet``) and the unit view it reads (``UnitView`` or None):
    equal for one member given in twice; the same tensors on another view score otherwise, so they differ."""
    import hashlib

    from speechprompt.package import TENSORS

    h = hashlib.sha256()
    for name in TENSORS:
        h.update(getattr(member, name).contiguous().numpy().tobytes())
    h.update(repr(view.to_dict() if view is not None else None).encode())
    return h.digest()

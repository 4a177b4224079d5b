"""Ensemble packages: K prompt sets trained for one task (other seeds or training draws) in one package.

The server scores every member as a row of the same unit-LM forward and answers the mean of the members' class
probabilities (``prompting.PromptBank``); a K-member task costs K rows. Measured on issue 14's real-speech split and
the synthetic suite in docs/results.md ("Ensembles of prompt packages"). The package format is ``package.py``'s
(format version 4, member m's tensors prefixed ``member{m}.``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timezone

from .package import PackageInvalid, TaskPackage, new_package
from .package_fields import MAX_MEMBERS

# what every member must share: the server reads one task's metadata for all of them (the unit view may differ per
# member: ``member_unit_views``, format version 5)
SHARED = ("task", "labels", "backbone_fingerprint", "backbone_kind", "prompt_length", "readout", "speech_trim",
          "long_audio")


def ensemble(packages: Sequence[TaskPackage], task: str | None = None) -> TaskPackage:
    """One package whose members are every member of ``packages`` (in order; an ensemble given in is flattened).

    ``task``: rename first (e.g. members trained under another name). The metadata is the first package's, with
    ``training`` = ``{"ensemble_of": [{"version", "members", "unit_views", "training"} per package]}`` (each package's
    own record, its member count and each member's view: ``units`` or ``clusters``) and ``created`` the latest of the
    packages' (:func:`latest_created`; so joining the same packages again gives the same bytes, the same version,
    unless none names a time).
    Raises ``PackageInvalid`` for fewer than 2 or more than ``MAX_MEMBERS`` members, or packages that differ in a
    field the members share (``SHARED``: task, labels, backbone, prompt length, read-out, speech trim, long-audio
    default) or in tensor shapes. Members may read different unit views (units and the clusters view, session 39's
    keyword ensemble): the result then lists one view per member (``member_unit_views``, format version 5); when all
    read one view it is the package's ``unit_view`` as before.
    """
    pkgs = list(packages)
    sets = [m for p in pkgs for m in p.members]
    if not 2 <= len(sets) <= MAX_MEMBERS:
        raise PackageInvalid(f"an ensemble holds 2 to {MAX_MEMBERS} members; these packages hold {len(sets)}")
    metas = [replace(p.meta, task=task) if task else p.meta for p in pkgs]
    for i, meta in enumerate(metas[1:], start=1):
        differ = [f for f in SHARED if getattr(meta, f) != getattr(metas[0], f)]
        if differ:
            raise PackageInvalid(f"package {i} ({pkgs[i].version}) differs from package 0 ({pkgs[0].version}) in "
                                 f"{', '.join(differ)}; every member of an ensemble shares {', '.join(SHARED)}")
    shapes = [tuple(tuple(getattr(s, n).shape) for n in ("deep_key", "separator", "verbalizer")) for s in sets]
    if len(set(shapes)) > 1:
        raise PackageInvalid(f"the members' tensor shapes differ ({sorted(set(shapes))}); train them on one backbone "
                             "with one recipe")
    views = [v.to_dict() if v else {} for meta in metas for v in meta.views]
    meta = replace(metas[0], created=latest_created(p.meta.created for p in pkgs), format_version=1, members=len(sets),
                   unit_view=views[0], member_unit_views=tuple(views) if any(v != views[0] for v in views) else (),
                   training={"ensemble_of": [{"version": p.version, "members": p.meta.members,
                                              "unit_views": ["clusters" if v else "units" for v in p.meta.views],
                                              "training": p.meta.training} for p in pkgs]})
    first, *more = sets
    return new_package(meta, first.deep_key, first.deep_value, first.input_prompt, first.separator,
                       first.verbalizer, more=tuple(more))


def latest_created(stamps: Iterable[str]) -> str:
    """The latest of packages' ``created`` strings, as written (ISO 8601; one without a time zone is taken as UTC,
    so ``10:00+02:00`` is before ``09:00+00:00``); strings that are not ISO dates count only when none is; ``""``
    when every one is empty (``new_package`` then stamps the time of writing)."""
    def moment(s: str) -> datetime | None:
        try:
            t = datetime.fromisoformat(s)
        except ValueError:
            return None
        return t if t.tzinfo else t.replace(tzinfo=timezone.utc)

    given = [s for s in stamps if s]
    dated = [(t, s) for s in given if (t := moment(s)) is not None]
    if dated:
        return max(dated, key=lambda x: x[0])[1]
    return max(given, default="")


__all__ = ["SHARED", "ensemble", "latest_created"]

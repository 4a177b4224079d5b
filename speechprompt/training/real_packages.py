"""The Debian allow-list of real speech: which packages, how they are fetched (``apt-get download`` + ``dpkg-deb -x``),
their licences (``copyright`` files), and the :class:`Clip` a package collector yields. The whole builder is
``real_corpus``; the per-package collectors are ``real_sources``."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_RATE = 16000  # Hz, every converted clip

ALLOWED_PACKAGES: tuple[str, ...] = (
    "fillets-ng-data-cs",
    "fillets-ng-data-nl",
    "fillets-ng-data",
    "tuxpaint-stamps-default",
    "asterisk-core-sounds-es-g722",
    "asterisk-core-sounds-fr-g722",
    "asterisk-core-sounds-it-g722",
    "asterisk-core-sounds-ru-g722",
    "asterisk-prompt-it-menardi-wav",
    "hedgewars-data",
    "codec2-examples",
    "pocketsphinx-testdata",
)

DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "real_corpus"

DECODERS = ("g722", "soundfile", "raw8k", "raw16k")

Progress = Callable[[str], None]


class RealCorpusError(RuntimeError):
    """The corpus cannot be built (a failed download/extraction, an unreadable clip, a missing package tree)."""


class NotAllowedError(RealCorpusError, ValueError):
    """A package outside :data:`ALLOWED_PACKAGES` was requested."""


@dataclass(frozen=True)
class Clip:
    """One clip to convert: ``src`` (absolute source file), ``decoder`` (one of :data:`DECODERS`) and its
    manifest row without ``duration`` (``path`` is relative to the cache folder)."""

    src: str
    decoder: str
    path: str
    source: str
    speaker: str
    language: str = ""
    gender: str = ""
    text: str = ""
    word: str = ""
    kind: str = "speech"
    license: str = ""


@dataclass
class BuildReport:
    """What :func:`build_corpus` did: clips ``converted`` now, ``skipped`` (already converted), ``duplicates``
    dropped (same bytes as an earlier clip of the same package), per-package ``versions``, and the ``rows``
    written to ``manifest.jsonl``."""

    converted: int = 0
    skipped: int = 0
    duplicates: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)


def check_allowed(packages: Iterable[str]) -> list[str]:
    """Return ``packages`` as a list, or raise :class:`NotAllowedError` naming every package not allow-listed."""
    packages = list(packages)
    bad = [p for p in packages if p not in ALLOWED_PACKAGES]
    if bad:
        raise NotAllowedError(
            f"not on the real-corpus allow-list: {', '.join(bad)}; allowed: {', '.join(ALLOWED_PACKAGES)} "
            "(other speech packages are reserved for independent evaluation)")
    return packages


# ---------------------------------------------------------------------------------------------- fetch / extract


def _run(cmd: Sequence[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RealCorpusError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def extracted_root(cache: Path, package: str) -> Path:
    """The folder ``package`` is extracted into: ``<cache>/x/<package>/`` (its ``usr/share/...`` tree)."""
    return Path(cache) / "x" / package


def _marker(cache: Path, package: str) -> Path:
    return Path(cache) / "x" / f"{package}.done"


def fetch_package(cache: Path, package: str, progress: Progress | None = None) -> str:
    """Download (unless a ``<package>_*.deb`` is already in ``<cache>/debs/``) and extract one allow-listed package.

    Extraction is skipped when ``<cache>/x/<package>.done`` exists (it records the version). Returns the
    package version. Raises :class:`NotAllowedError` or :class:`RealCorpusError`.
    """
    check_allowed([package])
    cache = Path(cache)
    marker = _marker(cache, package)
    if marker.exists():
        return json.loads(marker.read_text()).get("version", "")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        if progress:
            progress(f"apt-get download {package}")
        _run(["apt-get", "download", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            raise RealCorpusError(f"apt-get download {package} left no {package}_*.deb in {debs}")
    deb = found[-1]
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    root = extracted_root(cache, package)
    if progress:
        progress(f"dpkg-deb -x {deb.name}")
    root.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(root)])
    marker.write_text(json.dumps({"version": version, "deb": deb.name}))
    return version


# ---------------------------------------------------------------------------------------------- licences


def copyright_path(cache: Path, package: str) -> Path:
    """The package's ``usr/share/doc/<package>/copyright`` inside its extracted tree."""
    return extracted_root(cache, package) / "usr" / "share" / "doc" / package / "copyright"


def dep5_license(text: str, pattern: str = "*", default: str = "") -> str:
    """The ``License:`` short name of the first machine-readable (DEP-5) stanza whose ``Files:`` field lists
    ``pattern`` (as one of its space-separated globs), falling back to the ``Files: *`` stanza, then ``default``."""
    stanzas = re.split(r"\n\s*\n", text)
    found: dict[str, str] = {}
    for stanza in stanzas:
        files = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", stanza, re.M)
        lic = re.search(r"^License:[ \t]*(\S+)", stanza, re.M)
        if not files or not lic:
            continue
        for glob in files.group(1).split():
            found.setdefault(glob, lic.group(1))
    return found.get(pattern) or found.get("*") or default


def _license(cache: Path, package: str, pattern: str = "*", default: str = "") -> str:
    path = copyright_path(cache, package)
    return dep5_license(path.read_text(errors="replace"), pattern, default) if path.exists() else default

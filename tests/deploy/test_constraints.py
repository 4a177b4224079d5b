"""constraints.txt, the lock the Makefile and the Dockerfiles install with: every dependency of pyproject.toml is pinned
there to a version its range accepts, every line is a plain pin a fresh machine can fetch, and this test run uses
the pinned versions of the libraries a backbone build's numbers depend on."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert not req.url and not req.extras and not req.marker, f"not a plain pin: {line!r}"
        assert len(spec) == 1 and spec[0].operator == "==" and "*" not in spec[0].version, f"not a pin: {line!r}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"pinned twice: {req.name}"
        pins[name] = Version(spec[0].version)
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(line) for line in lines]


def test_every_dependency_is_pinned_to_a_version_its_range_accepts():
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} ({req}) has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} is outside {req}"
    assert pins["fairseq-fixed"] == Version("0.12.3.1")  # installed --no-deps by the Makefile, pinned the same


def test_torch_is_pinned_without_a_local_label_so_cpu_and_cuda_builds_both_satisfy_it():
    assert str(_pins()["torch"]) == "2.13.0"


@pytest.mark.parametrize("name", ["torch", "numpy", "scipy", "scikit-learn", "soxr", "soundfile", "onnxruntime", "av"])
def test_the_libraries_a_build_depends_on_are_installed_at_their_pins(name):
    """A backbone build is bit-for-bit only within one set of these (results.md, "Why v7 no longer rebuilds bit for
    bit"); a venv made by `make test` installs them from the lock."""
    installed = Version(version(name))
    assert installed.public == str(_pins()[canonicalize_name(name)]), \
        f"{name} {installed} is installed, constraints.txt pins {_pins()[canonicalize_name(name)]}: reinstall (make)"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_the_images_build_tools_and_torch_are_the_locks(dockerfile):
    """The Dockerfiles pin pip, setuptools, wheel and torch (the CPU image as a build arg, the GPU image in its base
    image's tag): the same versions as the lock, so an image and a `make` venv are built by the same tools."""
    import re

    text = (ROOT / "docker" / dockerfile).read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    pins = _pins()
    # the CPU image installs torch itself; the GPU image takes the base image's (its tag names the version)
    torch = args["TORCH_VERSION"] if dockerfile == "Dockerfile.cpu" else \
        re.fullmatch(r"pytorch/pytorch:([0-9.]+)-.*", args["BASE_IMAGE"]).group(1)
    for name, built in (("pip", args["PIP_VERSION"]), ("setuptools", args["SETUPTOOLS_VERSION"]),
                        ("wheel", args["WHEEL_VERSION"]), ("torch", torch)):
        assert Version(built) == pins[name], f"{dockerfile}: {name} {built}, constraints.txt {pins[name]}"
    assert "cat constraints.txt >> /opt/venv/constraints.txt" in text

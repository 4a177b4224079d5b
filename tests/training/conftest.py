"""Shared fixtures: a tiny random backbone bundle and a toy units task with a learnable signal."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from speechprompt.backbone import Backbone, make_random_bundle


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle") / "tiny"
    make_random_bundle(folder, seed=0)
    return folder


@pytest.fixture(scope="session")
def backbone(bundle_dir):
    return Backbone.load(bundle_dir)


def toy_units(n: int, seed: int, num_units: int = 20, classes: int = 3):
    """Random unit sequences; class y is marked by three occurrences of unit y (a signal the LM can carry)."""
    g = torch.Generator().manual_seed(seed)
    units, ys = [], []
    for i in range(n):
        y = i % classes
        u = torch.randint(classes, num_units, (int(torch.randint(6, 14, (1,), generator=g)),), generator=g)
        u[torch.randperm(len(u), generator=g)[:3]] = y
        units.append(u)
        ys.append(y)
    return units, ys


@pytest.fixture(scope="session")
def wav_folder(tmp_path_factory):
    """folder/<label>/*.wav: 'tone' (a 300-900 Hz sine) vs 'noise' (white noise), 0.4-0.6 s at 16 kHz."""
    root = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    for label in ("noise", "tone"):
        (root / label).mkdir()
        for i in range(14):
            n = int(16000 * rng.uniform(0.4, 0.6))
            x = np.sin(2 * np.pi * rng.uniform(300, 900) * np.arange(n) / 16000) if label == "tone" \
                else rng.standard_normal(n)
            sf.write(root / label / f"{i:02d}.wav", (0.3 * x / np.abs(x).max()).astype(np.float32), 16000)
    return root


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids oversubscription stalls."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

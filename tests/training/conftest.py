"""Shared fixtures: tiny random backbone bundles (GSLM and pGSLM) and toy units tasks with a learnable signal."""

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


@pytest.fixture(scope="session")
def product_bundle_dir(tmp_path_factory):
    """The tiny bundle with a product codebook: 5 clusters x 4 pitch registers (20 units), as the default's 300 x 4."""
    folder = tmp_path_factory.mktemp("bundle") / "tiny-product"
    make_random_bundle(folder, seed=0, registers=4)
    return folder


@pytest.fixture(scope="session")
def pgslm_bundle_dir(tmp_path_factory):
    """A tiny random pGSLM bundle: tiny HuBERT, 20 units, 2-layer d=32 MultiStreamUnitLM with discrete duration/F0
    streams (shifts 1,1), the default ProsodyConfig (utterance normalisation) and 31 F0 bin edges."""
    from speechprompt.encoder import HubertConfig, HubertEncoder
    from speechprompt.importers.pgslm import write_pgslm_bundle
    from speechprompt.pgslm import MultiStreamUnitLM, PGSLMConfig, StreamConfig
    from speechprompt.prosody import Prosody, ProsodyConfig

    folder = tmp_path_factory.mktemp("bundle") / "tiny-pgslm"
    torch.manual_seed(0)
    enc_cfg = HubertConfig.tiny()
    enc = HubertEncoder(enc_cfg)
    cfg = PGSLMConfig.make(StreamConfig(n_units=20, duration_size=25, f0_size=36), embed_dim=32, ffn_dim=64,
                           layers=2, heads=4, max_positions=1024)
    lm = MultiStreamUnitLM(cfg)
    prosody = Prosody(ProsodyConfig(), torch.linspace(-0.6, 0.6, 31, dtype=torch.float64))
    write_pgslm_bundle(folder, name="random-tiny-pgslm", encoder_cfg=enc_cfg, encoder_state=enc.state_dict(),
                       centroids=torch.randn(20, enc.dim), lm_cfg=cfg, lm_state=lm.state_dict(), prosody=prosody)
    return folder


@pytest.fixture(scope="session")
def pgslm_backbone(pgslm_bundle_dir):
    return Backbone.load(pgslm_bundle_dir)


def toy_prosody_units(n: int, seed: int, num_units: int = 20, classes: int = 3):
    """:func:`toy_units` as ``ProsodyUnits``: random run lengths 1-6 (some over the cap of 20 too) and a voiced
    F0 contour per unit segment (some unvoiced), with the clip statistics of a matching frame track."""
    from speechprompt.prosody import F0Stats, ProsodyUnits

    units, ys = toy_units(n, seed, num_units, classes)
    g = torch.Generator().manual_seed(seed + 1000)
    items = []
    for u in units:
        d = torch.randint(1, 7, (len(u),), generator=g)
        d[0] = 24
        f0 = 100 + 80 * torch.rand(len(u), generator=g)
        f0[torch.rand(len(u), generator=g) < 0.3] = 0
        frames = f0.repeat_interleave(4 * d)
        items.append(ProsodyUnits(u, d, int(d.sum()), f0, F0Stats.from_frames(frames)))
    return items, ys


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

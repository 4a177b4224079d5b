"""The committed demo stores hold packages their backbones serve: ``prompts_store/`` for ``models/default`` (GSLM)
and ``prompts_store_pgslm/`` for ``models/pgslm-default`` (README, "Serving the pGSLM backbone")."""

import json
from pathlib import Path

import pytest

from speechprompt.backbone import Backbone
from speechprompt.package import check_compatible, read_package
from speechprompt.training.suite import TASKS

ROOT = Path(__file__).resolve().parents[1]
REAL_TASKS = json.loads((ROOT / "docs" / "results" / "real_tasks.json").read_text())  # the real-speech task sets


@pytest.mark.parametrize("store, bundle, kind", [("prompts_store", "models/default", "gslm"),
                                                 ("prompts_store_pgslm", "models/pgslm-default", "pgslm")])
def test_demo_store_fits_its_backbone(store, bundle, kind):
    bb = Backbone.load(ROOT / bundle)
    assert bb.spec.kind == kind
    tasks = sorted(p for p in (ROOT / store).iterdir() if p.is_dir())
    assert len(tasks) >= 4
    for folder in tasks:
        current = (folder / "CURRENT").read_text().strip()
        pkg = read_package((folder / f"{current}.safetensors").read_bytes())
        assert pkg.version == current and pkg.meta.task == folder.name
        c = bb.spec.unit_lm
        check_compatible(pkg, fingerprint=bb.fingerprint, kind=kind, layers=c.layers, dim=c.embed_dim,
                         vocab_size=c.vocab_size, codebook=bb.codebook)  # BackboneMismatch / PackageInvalid otherwise
        training = pkg.meta.training.get("ensemble_of", [{"training": pkg.meta.training}])[0]["training"]
        if str(training.get("suite_task", "")).startswith("real speech"):  # scripts/real_speech_eval.py
            assert list(pkg.meta.labels) == REAL_TASKS[folder.name]["labels"]
        else:
            assert pkg.meta.labels == TASKS[folder.name].labels


def test_default_vad_demo_calls_tones_noise_and_a_voice_speech():
    """The demo ``vad`` (trained with generated tones, DTMF and sweeps besides real non-speech) does not take a steady
    tone for a voice, as the first real-speech demo did (a 300 Hz tone: speech 0.74); speech stays speech."""
    import io
    import subprocess

    import numpy as np
    import soundfile as sf
    import soxr

    from speechprompt.runtime import Runtime

    rt = Runtime.load(ROOT / "models" / "default")
    folder = ROOT / "prompts_store" / "vad"
    pkg = read_package((folder / f"{(folder / 'CURRENT').read_text().strip()}.safetensors").read_bytes())
    rt.add_task("vad", pkg)
    t = np.arange(32000) / 16000
    clips = {"tone 300 Hz": 0.5 * np.sin(2 * np.pi * 300 * t),
             "tone 1 kHz": 0.5 * np.sin(2 * np.pi * 1000 * t),
             "DTMF 5": 0.3 * (np.sin(2 * np.pi * 770 * t) + np.sin(2 * np.pi * 1336 * t))}
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", "please call me back tomorrow morning"],
                         capture_output=True, check=True).stdout
    y, sr = sf.read(io.BytesIO(wav), dtype="float32")
    clips["espeak phrase"] = soxr.resample(y, sr, 16000)
    units = rt.extract_units([np.asarray(x, dtype=np.float32) for x in clips.values()])
    probs = rt.classify(units, ["vad"] * len(units))
    speech = pkg.meta.labels.index("speech")
    got = {name: float(p[speech]) for name, p in zip(clips, probs, strict=True)}
    assert got["espeak phrase"] > 0.5, got
    assert all(got[name] < 0.5 for name in ("tone 300 Hz", "tone 1 kHz", "DTMF 5")), got

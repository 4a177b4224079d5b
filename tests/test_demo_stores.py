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
                         vocab_size=c.vocab_size)  # raises BackboneMismatch / PackageInvalid otherwise
        if str(pkg.meta.training.get("suite_task", "")).startswith("real speech"):  # scripts/real_speech_eval.py
            assert list(pkg.meta.labels) == REAL_TASKS[folder.name]["labels"]
        else:
            assert pkg.meta.labels == TASKS[folder.name].labels

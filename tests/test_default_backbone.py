"""The committed default backbone (models/default, speechprompt-default-v9: v7's weights with a level floor and an edge gate): loads, is fingerprinted as its build log
says, runs the speech_embedding dense model with its pitch stream and a product codebook (300 clusters x 4 pitch
registers) whose unit LM embedding is factored (its cluster part tied to the centroids), keeps the real test speakers out of its build, is
what the model card describes, and serves the demo packages (tests/test_demo_stores.py checks every package fits)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechprompt.backbone import FILES, Backbone, fingerprint_of, sha256_file
from speechprompt.edge_gate import EdgeGate
from speechprompt.level import LevelFloor
from speechprompt.runtime import Runtime
from speechprompt.training.build_default import DefaultBuildConfig
from speechprompt.training.manifest import load_audio
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "models" / "default"
LOG = ROOT / "docs" / "default_training_log.json"
SOURCES = ROOT / "docs" / "default_sources.json"


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return Backbone.load(BUNDLE)


def test_bundle_is_the_logged_build_with_the_real_speech_dense_model(backbone):
    meta = json.loads((BUNDLE / "backbone.json").read_text())
    log = json.loads(LOG.read_text())
    digests = {n: sha256_file(BUNDLE / n) for n in FILES}
    assert digests == meta["files"] and fingerprint_of(digests) == meta["fingerprint"] == backbone.fingerprint
    assert backbone.fingerprint == log["fingerprint"]
    assert sum((BUNDLE / n).stat().st_size for n in FILES) <= 40 * 2**20  # issue 14: the bundle may grow to 40 MB
    assert meta["encoder"]["type"] == "speech_embedding" and meta["extra"]["built_by"] == "speechprompt build-default"
    assert backbone.info()["hop_size"] == 1280 and backbone.codebook.vocab_size == 1200
    assert backbone.encoder.cfg.pitch.scale == log["config"]["pitch_scale"] and backbone.encoder.dim == 98
    assert list(backbone.spec.dictionary[4:]) == [str(i) for i in range(1200)]  # unit i at index 4 + i
    assert tuple(log["config"][k] for k in ("units", "pitch_registers", "factored_lm", "centroid_lm")) == (300, 4, True, True)
    assert meta["name"] != json.loads((ROOT / "models" / "default-v1" / "backbone.json").read_text())["name"]
    # v9 = v7's build (the log) + the default recipe's level floor (v8) and edge gate (v9), written by
    # scripts/set_encoder_settings.py (docs/model_card.md): the same settings a fresh build-default writes
    assert backbone.spec.encoder.level_floor == LevelFloor(DefaultBuildConfig().level_floor)
    assert backbone.spec.encoder.edge_gate == EdgeGate.parse(DefaultBuildConfig().edge_gate) == EdgeGate(0.0, 0.2, 0.1)
    assert meta["name"] == DefaultBuildConfig().name and log["config"]["name"] == "speechprompt-default-v7"


def test_units_are_a_product_of_clusters_and_pitch_registers_with_a_factored_lm_embedding(backbone):
    """Unit r * 300 + k is embedding cluster k in pitch register r (Codebook.product), and the unit LM's
    embedding of it was trained as A[k] + B[r] (unit_lm_train.FactoredEmbedding), so E[k, r] - E[k, 0] - E[0, r] +
    E[0, 0] vanishes for every cluster and register, while the clusters themselves differ."""
    cents = backbone.codebook.centroids.view(4, 300, 98)
    assert all(torch.equal(cents[r, :, :96], cents[0, :, :96]) for r in range(1, 4))
    assert cents[0, :, 96:].abs().sum() == 0 and len({tuple(c.tolist()) for c in cents[:, 0, 96:]}) == 4
    emb = backbone.unit_lm.embed_tokens.weight.detach()[4:].view(4, 300, -1)  # [register, cluster, d]
    interaction = emb - emb[:, :1] - emb[:1] + emb[:1, :1]
    assert interaction.abs().max() < 1e-4 * emb.abs().max()
    assert (emb[0, 1:] - emb[0, :1]).abs().amax(dim=1).min() > 1e-3  # the clusters differ


def test_held_out_real_speakers_never_reached_the_build():
    corpus = json.loads(LOG.read_text())["corpus"]
    test, train = set(corpus["real_test_speakers"]), set(corpus["real_train_speakers"])
    assert len(test) >= 10 and train and test.isdisjoint(train)
    sources = json.loads(SOURCES.read_text())
    known = {spk for s in sources.values() for spk in s["speakers"]}
    assert test <= known  # every held-out speaker is one of the allow-listed packages' speakers


def test_model_card_tables_are_rendered_from_the_committed_logs():
    card = load_script("default_card")
    text = (ROOT / "docs" / "model_card.md").read_text()
    assert card.render(json.loads(LOG.read_text()), json.loads(SOURCES.read_text())) in text


def test_a_real_recording_gives_units_and_a_classification(backbone):
    rt = Runtime(backbone)
    wav = load_audio("/usr/share/sounds/alsa/Front_Center.wav")  # a human voice (a test set, never trained on)
    units = rt.extract_units([wav])[0]
    assert int(units.durations.sum()) == units.frames == backbone.encoder.num_frames(len(wav))
    assert 3 <= len(units.units) <= units.frames
    again = rt.extract_units([np.random.default_rng(0).standard_normal(9000).astype(np.float32) * 0.1, wav])[1]
    assert torch.equal(again.units, units.units)  # batching with another clip changes nothing

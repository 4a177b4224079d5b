"""End to end: official-format GSLM files (fairseq HuBERT .pt, sklearn km.bin, fairseq LM + dict.txt) ->
``import-gslm`` -> bundle -> Runtime; every stage equals the official pipeline on the same files."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import joblib
import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speechprompt.audio import decode_audio
from speechprompt.backbone import Backbone, BundleError, make_random_bundle, settings_digest
from speechprompt.package import PackageMeta, new_package
from speechprompt.prompting import make_rows
from speechprompt.runtime import Runtime
from speechprompt_cli import app
from tests.fairseq_fixtures import build_fairseq_hubert, fairseq_reader_features, save_fairseq_checkpoint
from tests.lm_fixtures import (
    build_fairseq_lm,
    fairseq_load,
    official_prompted_logits,
    save_like_fairseq_train,
    write_dict,
)

pytestmark = pytest.mark.fairseq
K, LAYER = 12, 2


def clip(seconds: float, seed: int) -> np.ndarray:
    """A speech-like test signal at 16 kHz: gliding harmonics with an amplitude envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 120 + 60 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (0.3 * x / np.abs(x).max() + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    d = tmp_path_factory.mktemp("gslm")
    hub, mcfg, tcfg, dicts = build_fairseq_hubert(seed=1)
    save_fairseq_checkpoint(d / "hubert_base_ls960.pt", hub, mcfg, tcfg, dicts)
    from sklearn.cluster import MiniBatchKMeans

    feats = torch.cat([fairseq_reader_features(hub, torch.from_numpy(clip(1.5, s)), LAYER) for s in range(6)])
    km = MiniBatchKMeans(n_clusters=K, random_state=0, n_init=3, batch_size=256).fit(feats.numpy())
    joblib.dump(km, d / "km.bin")
    order = [5, 0, 11, 3, 1, 2, 4, 6, 7, 8, 9, 10]  # a frequency-sorted dict.txt: not natural order
    write_dict(d, K, order)
    _, cfg, lm = build_fairseq_lm(d, ["--decoder-normalize-before"], seed=3)
    save_like_fairseq_train(d / "checkpoint_best.pt", lm, cfg=cfg)
    return d, hub, km, fairseq_load(d / "checkpoint_best.pt", d)


@pytest.fixture(scope="module")
def bundle(official, tmp_path_factory):
    d = official[0]
    out = tmp_path_factory.mktemp("bundle") / "gslm-tiny"
    res = CliRunner().invoke(app, ["import-gslm", "--hubert", str(d / "hubert_base_ls960.pt"), "--km", str(d / "km.bin"),
                                   "--lm", str(d / "checkpoint_best.pt"), "--dict", str(d / "dict.txt"),
                                   "--out", str(out), "--layer", str(LAYER)])
    assert res.exit_code == 0, res.output
    return out


def official_units(hub, km, wav: np.ndarray) -> list[int]:
    feats = fairseq_reader_features(hub, torch.from_numpy(wav), LAYER)
    return [u for u, _ in itertools.groupby(km.predict(feats.numpy()).tolist())]


def test_bundle_is_self_describing(bundle, official):
    meta = json.loads((bundle / "backbone.json").read_text())
    assert meta["kind"] == "gslm" and meta["encoder"]["output_layer"] == LAYER and meta["codebook"]["size"] == K
    assert meta["dictionary"][4:] == ["5", "0", "11", "3", "1", "2", "4", "6", "7", "8", "9", "10"]
    bb = Backbone.load(bundle)
    assert bb.fingerprint == meta["fingerprint"] and bb.unit_to_token.tolist()[5] == 4


@pytest.mark.parametrize("seconds", [0.025, 0.0251, 0.7, 2.3])
def test_units_equal_official_pipeline(bundle, official, seconds):
    _, hub, km, _ = official
    rt = Runtime.load(bundle)
    wav = clip(seconds, 7)
    assert rt.extract_units([wav])[0].units.tolist() == official_units(hub, km, wav)


def test_batched_units_and_prompted_scores_equal_official(bundle, official):
    _, hub, km, fs_lm = official
    rt = Runtime.load(bundle)
    wavs = [clip(s, i) for i, s in enumerate([0.4, 1.9, 1.1])]
    units = rt.extract_units(wavs)
    g = torch.Generator().manual_seed(0)
    L, dm, V = fs_lm.decoder.num_layers, fs_lm.decoder.embed_dim, len(fs_lm.decoder.dictionary)
    pkgs = []
    for i, c in enumerate([2, 5, 3]):
        meta = PackageMeta(task=f"t{i}", labels=tuple(map(str, range(c))), backbone_fingerprint=rt.fingerprint)
        pkg = new_package(meta, deep_key=torch.randn(L, 5, dm, generator=g), deep_value=torch.randn(L, 5, dm, generator=g),
                          input_prompt=torch.zeros(5, dm), separator=torch.randn(dm, generator=g),
                          verbalizer=torch.randn(c + 4, V, generator=g))
        rt.add_task(meta.task, pkg)
        pkgs.append(pkg)
    probs = rt.classify([u.units for u in units], ["t0", "t1", "t2"])
    for wav, u, pkg, p in zip(wavs, units, pkgs, probs):
        assert u.units.tolist() == official_units(hub, km, wav)
        tokens, _ = make_rows([u.units], unit_to_token=rt.backbone.unit_to_token)
        # the official pipeline maps units through dict.txt too (fairseq-preprocess --srcdict)
        assert tokens[0, 1:-1].tolist() == [fs_lm.decoder.dictionary.index(str(x)) for x in u.units.tolist()]
        ref = pkg.verbalizer @ official_prompted_logits(fs_lm, tokens, pkg.deep_key, pkg.deep_value, pkg.separator,
                                                        pkg.input_prompt)[-1]
        assert np.allclose(p, ref[4:].softmax(-1).numpy(), atol=1e-5)


def test_resampled_inputs_give_the_units_of_sox_prepared_audio(tmp_path):
    """Stereo 44.1 kHz and 8 kHz versions decode to the units of the same signal prepared by sox at 16 kHz mono.

    Tolerance: soxr and sox differ by at most a few 16-bit LSB (tests/test_audio.py measures ~1.5e-5 RMS), which
    can only flip a frame whose two nearest centroids are nearly tied, so >= 97% of frames must agree."""
    make_random_bundle(tmp_path / "b", seed=3, num_units=20)
    rt = Runtime.load(tmp_path / "b")
    base = clip(2.0, 11)
    sf.write(tmp_path / "src.wav", base, 16000, subtype="FLOAT")
    for rate, ch in [(44100, 2), (8000, 1)]:
        src = tmp_path / f"in_{rate}.wav"
        subprocess.run(["sox", str(tmp_path / "src.wav"), "-r", str(rate), "-c", str(ch), "-b", "16", str(src)], check=True)
        ref = tmp_path / f"ref_{rate}.wav"
        subprocess.run(["sox", str(src), "-r", "16000", "-c", "1", "-b", "32", "-e", "floating-point", str(ref)],
                       check=True)
        ours = decode_audio(src.read_bytes()).samples
        theirs, sr = sf.read(ref, dtype="float32")
        assert sr == 16000 and abs(len(ours) - len(theirs)) <= 1
        n = min(len(ours), len(theirs))
        feats = rt.backbone.encoder.extract([torch.from_numpy(ours[:n]), torch.from_numpy(theirs[:n])])
        a, b = (rt.backbone.codebook.quantize(f) for f in feats)
        agree = (a == b).float().mean().item()
        assert agree >= 0.97, (rate, agree)


def test_tampered_bundle_refused(tmp_path):
    make_random_bundle(tmp_path / "b", seed=0)
    Backbone.load(tmp_path / "b")
    w = (tmp_path / "b" / "unit_lm.safetensors").read_bytes()
    (tmp_path / "b" / "unit_lm.safetensors").write_bytes(w[:-4] + b"\x00\x00\x80\x7f")
    with pytest.raises(BundleError, match="sha256"):
        Backbone.load(tmp_path / "b")
    with pytest.raises(BundleError, match="cannot read"):
        Backbone.load(tmp_path / "missing")


def test_edited_settings_refused_by_their_digest_without_changing_the_fingerprint(tmp_path):
    fp = make_random_bundle(tmp_path / "b", seed=0)
    path = tmp_path / "b" / "backbone.json"
    meta = json.loads(path.read_text())
    assert meta["settings_digest"] == settings_digest(meta) and Backbone.load(tmp_path / "b").fingerprint == fp
    renamed = dict(meta, name="renamed", extra={"note": "kept"})  # name and extra are not settings
    path.write_text(json.dumps(renamed))
    assert Backbone.load(tmp_path / "b").spec.name == "renamed"
    edited = json.loads(json.dumps(meta))
    edited["encoder"]["normalize"] = not edited["encoder"]["normalize"]  # same weights, other features
    path.write_text(json.dumps(edited))
    with pytest.raises(BundleError, match="settings_digest"):
        Backbone.load(tmp_path / "b")
    del edited["settings_digest"]  # a bundle written before the digest existed: loaded as before
    path.write_text(json.dumps(edited))
    assert Backbone.load(tmp_path / "b").fingerprint == fp
    for name in ("default", "default-v1", "pgslm-default"):  # the committed bundles carry a matching digest
        shipped = json.loads((Path(__file__).parents[1] / "models" / name / "backbone.json").read_text())
        assert shipped["settings_digest"] == settings_digest(shipped), name


def test_import_prompt_command_into_store(bundle, official, tmp_path):
    """An official-layout prompt checkpoint -> `speechprompt import-prompt` -> file store -> served scores equal the
    official step-by-step forward."""
    from server.stores.file import FileStore
    from speechprompt.package import read_package

    d, hub, km, fs_lm = official
    L, dm, V = fs_lm.decoder.num_layers, fs_lm.decoder.embed_dim, len(fs_lm.decoder.dictionary)
    g = torch.Generator().manual_seed(4)
    t = {"dk": torch.randn(L, 5, dm, generator=g), "dv": torch.randn(L, 5, dm, generator=g),
         "sep": torch.randn(1, dm, generator=g), "verb": torch.randn(3 + 4, V, generator=g)}
    sd = {"decoder.prefix_embed_prompts.weight": torch.randn(5, dm, generator=g), "decoder.sep_embed.weight": t["sep"],
          "decoder.prompt_linear_verbalizer.weight": t["verb"]}
    for i in range(L):
        sd[f"decoder.deep_key_embed_prompts.{i}.weight"] = t["dk"][i]
        sd[f"decoder.deep_value_embed_prompts.{i}.weight"] = t["dv"][i]
    args, _, _ = build_fairseq_lm(d, ["--decoder-normalize-before"])
    ck = save_like_fairseq_train(tmp_path / "checkpoint_best.pt", torch.nn.Module(), args=args, extra_model=sd)
    res = CliRunner().invoke(app, ["import-prompt", str(ck), "--task", "accent", "--labels", "us, gb,in",
                                   "--bundle", str(bundle), "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    store = FileStore(tmp_path / "store")
    version = store.current_version("accent")
    pkg = read_package(store.read("accent", version))
    assert pkg.meta.labels == ("us", "gb", "in") and pkg.version == version
    rt = Runtime.load(bundle)
    rt.add_task("accent", pkg)
    wav = clip(1.3, 2)
    u = rt.extract_units([wav])[0]
    tokens, _ = make_rows([u.units], unit_to_token=rt.backbone.unit_to_token)
    ref = t["verb"] @ official_prompted_logits(fs_lm, tokens, t["dk"], t["dv"], t["sep"][0], torch.zeros(5, dm))[-1]
    assert np.allclose(rt.classify([u], ["accent"])[0], ref[4:].softmax(-1).numpy(), atol=1e-5)


def _import_args(d, lm_dir, out) -> list[str]:
    return ["import-gslm", "--hubert", str(d / "hubert_base_ls960.pt"), "--km", str(d / "km.bin"),
            "--lm", str(lm_dir / "checkpoint_best.pt"), "--dict", str(lm_dir / "dict.txt"), "--out", str(out),
            "--layer", str(LAYER)]


def test_dictionary_padded_with_madeupwords_imports_and_units_never_map_to_them(official, tmp_path):
    d = official[0]
    lm_dir = tmp_path / "padded"
    write_dict(lm_dir, K)
    with open(lm_dir / "dict.txt", "a") as f:  # what fairseq-preprocess --padding-factor 8 appends
        f.writelines(f"madeupword{i:04d} 0\n" for i in range(8))
    _, cfg, lm = build_fairseq_lm(lm_dir, ["--decoder-normalize-before"], seed=3)
    assert len(lm.decoder.dictionary) == 4 + K + 8
    save_like_fairseq_train(lm_dir / "checkpoint_best.pt", lm, cfg=cfg)
    res = CliRunner().invoke(app, _import_args(d, lm_dir, tmp_path / "bundle"))
    assert res.exit_code == 0, res.output
    rt = Runtime.load(tmp_path / "bundle")
    padding = {i for i, t in enumerate(rt.backbone.spec.dictionary) if t.startswith("madeupword")}
    assert len(padding) == 8 and not padding & set(rt.bank.unit_to_token.tolist())
    units = rt.extract_units([clip(1.0, 7)])[0]
    tokens, _ = make_rows([units.units], unit_to_token=rt.bank.unit_to_token)
    assert not padding & set(tokens.flatten().tolist())


def test_import_refusal_prints_one_line_and_debug_shows_the_traceback(official, tmp_path):
    d = official[0]
    lm_dir = tmp_path / "short"
    write_dict(lm_dir, K - 2)
    _, cfg, lm = build_fairseq_lm(lm_dir, ["--decoder-normalize-before"], seed=3)
    save_like_fairseq_train(lm_dir / "checkpoint_best.pt", lm, cfg=cfg)
    res = CliRunner().invoke(app, _import_args(d, lm_dir, tmp_path / "bundle"))
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert lines == [f"error: unit LM dictionary has {K - 2} units (plus 0 padding words) but km.bin has {K}"]
    res = CliRunner().invoke(app, ["--debug", *_import_args(d, lm_dir, tmp_path / "bundle")])
    assert res.exit_code == 1 and type(res.exception).__name__ == "CheckpointError"

"""pGSLM: our multi-stream unit LM vs fairseq's transformer_ulm (built, saved and loaded by fairseq), rows vs
fairseq's CodeDataset, prompting vs a step-by-step official-semantics reference, import into a ``pgslm`` bundle."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from speechprompt.importers.checkpoint import CheckpointError, load_fairseq_checkpoint
from speechprompt.importers.pgslm import convert_pgslm, import_pgslm, read_f0_bin_edges, read_f0_stats
from speechprompt.package import PackageMeta, new_package
from speechprompt.pgslm import MultiStreamUnitLM, PGSLMConfig, StreamConfig, unit_dictionary
from speechprompt.pgslm_prompting import PGSLMPromptBank, make_rows, prompted_class_logits
from speechprompt.prosody import F0Stats, Prosody, ProsodyConfig, ProsodyExtractor, ProsodyUnits
from speechprompt.prosody_file import load_prosody
from speechprompt.units import Units
from tests.lm_fixtures import fairseq_load, save_like_fairseq_train
from tests.pgslm_fixtures import (
    BINS,
    FP,
    VARIANTS,
    K,
    build_fairseq_ulm,
    codedataset_batch,
    edges32,
    fairseq_streams,
    items,
    ours_from,
    prosody_for,
    speech_clip,
    synthetic_units,
)

pytestmark = pytest.mark.fairseq


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    flags, legacy = VARIANTS[request.param]
    args, cfg, model = build_fairseq_ulm(d, flags)
    path = save_like_fairseq_train(d / "checkpoint.pt", model, cfg=None if legacy else cfg, args=args if legacy else None)
    ours, pcfg = ours_from(path)
    return fairseq_load(path, d / "data_config.json"), ours, pcfg, d


def test_stream_logits_match_fairseq(pair):
    lengths = [4, 17, 1, 30]
    ref, ours, pcfg, _ = pair
    rows = make_rows(items(lengths), prosody_for(pcfg), ours.streams)
    with torch.no_grad():
        mine = ours.stream_logits(ours(rows.tokens, rows.durations, rows.f0))
    for b, n in enumerate(rows.last.tolist()):  # fairseq one row at a time, unpadded
        one = type(rows)(rows.tokens[b:b + 1, :n + 1], rows.durations[b:b + 1, :n + 1], rows.f0[b:b + 1, :n + 1],
                         rows.last[b:b + 1])
        for a, r in zip(mine, fairseq_streams(ref, one)):
            assert a[b, :n + 1].shape == r[0].shape
            assert torch.allclose(a[b, :n + 1], r[0], atol=1e-5), (a[b, :n + 1] - r[0]).abs().max()
    real = rows.tokens.ne(ours.streams.pad)
    for a, r in zip(mine, fairseq_streams(ref, rows)):  # and fairseq batched with padding
        assert torch.allclose(a[real], r[real], atol=1e-5)
    assert torch.equal(ours.logits(ours(rows.tokens, rows.durations, rows.f0)), mine[0])


def test_config_read_from_checkpoint(pair):
    ref, ours, pcfg, _ = pair
    dec, s = ref.decoder, ours.streams
    assert all(layer.normalize_before for layer in dec.layers) and ours.cfg.normalize_before  # forced by fairseq
    assert s.channel_sizes == tuple(dec.channel_sizes) and ours.cfg.padding_idx == dec.padding_idx == K + 1
    assert (s.ignore_duration_input, s.ignore_f0_input) == (ref.ignore_duration_input, ref.ignore_f0_input)
    assert (pcfg.discrete_duration, pcfg.discrete_f0) == (s.discrete_duration, s.discrete_f0)
    assert ours.cfg.learned_pos == dec.embed_positions.__class__.__name__.startswith("Learned")


# -- rows: our prompted row layout is pGSLM's own input (fairseq CodeDataset + collater) -------------------------
@pytest.mark.parametrize("discrete,interpolate,shifts", [(True, False, "1,1"), (False, True, "1,1"),
                                                         (True, True, "0,0")])
@pytest.mark.parametrize("normalization", ["utterance", "speaker"])
def test_rows_equal_codedataset(tmp_path, monkeypatch, discrete, interpolate, shifts, normalization):
    g = torch.Generator().manual_seed(7)
    tracks = [torch.where(torch.rand(n, generator=g) < 0.3, 0.0, 90 + 120 * torch.rand(n, generator=g))
              for n in (60, 200, 35)]
    its = [ProsodyUnits(p.units, p.durations, p.frames, p.f0, F0Stats.from_frames(t))
           for p, t in zip(items([5, 23, 1], 3), tracks)]
    speakers = ["a", "b", "c"] if normalization == "utterance" else ["s", "s", "s"]
    ref = codedataset_batch(tmp_path, its, speakers, tracks, discrete, interpolate, shifts, monkeypatch)
    d, f = (int(v) for v in shifts.split(","))
    streams = StreamConfig(n_units=K, discrete_duration=discrete, duration_size=25 if discrete else 1,
                           discrete_f0=discrete, f0_size=BINS + 4 if discrete else 1, duration_shift=d, f0_shift=f)
    prosody = Prosody(ProsodyConfig(discrete_duration=discrete, discrete_f0=discrete, interpolate_f0=interpolate,
                                    normalization=normalization), edges32() if discrete else None)
    stats = None if normalization == "utterance" else [F0Stats.merge([F0Stats.from_frames(t) for t in tracks]).summary()] * 3
    rows = make_rows(its, prosody, streams, stats)
    # fairseq's source is [<s>, u1..uM] + max(shift) more steps (</s>, then pads); ours ends at the </s> separator
    assert rows.durations.dtype == ref["dur_src"].dtype and rows.f0.dtype == ref["f0_src"].dtype
    for b, p in enumerate(its):
        m, n = len(p.units), int(ref["src_lengths"][b])
        assert rows.last[b] == m + 1 and n == m + 1 + max(d, f)
        for ours, theirs in ((rows.tokens, "src_tokens"), (rows.durations, "dur_src"), (rows.f0, "f0_src")):
            k = min(n, m + 2)
            assert torch.equal(ours[b, :k], ref[theirs][b, :k]), theirs
    if max(d, f) == 0:  # no </s> input in a shift-0 model: the separator step takes </s>'s own prosody (d 0, F0 of 0)
        assert (rows.durations[rows.tokens.eq(K + 2)] == 0).all()


# -- prompting ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def official_pgslm_prompted(model, tokens, durations, f0, deep_key, deep_value, separator, input_prompt):
    """SpeechPrompt v2 deep prompts on fairseq's transformer_ulm, step by step (one row): the separator replaces the
    ``</s>`` token embedding before scaling, the input prompt is prepended, each layer's first ``l`` K/V inputs are
    the deep prompts. -> token-stream logits ``[T, n+4]``."""
    dec = model.decoder
    if model.ignore_duration_input:
        durations = torch.zeros_like(durations)
    if model.ignore_f0_input:
        f0 = torch.zeros_like(f0)
    plen = deep_key.shape[1]
    emb = dec.embed_tokens(tokens).clone()
    emb[tokens.eq(K + 2)] = separator
    x = dec.embed_scale * emb
    for o, e, p in zip((durations, f0), dec.embed_other_list, dec.proj_other_list):
        o = o.unsqueeze(-1).to(x.dtype) if e is None else e(o)
        x = x + (o if p is None else p(o))
    x = x + dec.embed_positions(tokens)
    x = torch.cat([input_prompt.unsqueeze(0), x], dim=1).transpose(0, 1)  # [l+T, 1, d]
    attn_mask = dec.buffered_future_mask(x)
    for i, layer in enumerate(dec.layers):
        residual, h = x, layer.self_attn_layer_norm(x)
        k_in, v_in = h.clone(), h.clone()
        k_in[:plen], v_in[:plen] = deep_key[i].unsqueeze(1), deep_value[i].unsqueeze(1)
        h, _ = layer.self_attn(query=h, key=k_in, value=v_in, attn_mask=attn_mask, need_weights=False)
        x = residual + h
        x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
    x = dec.layer_norm(x).transpose(0, 1)
    return dec.project_out_dim(x)[0, plen:, :dec.channel_sizes[0]]


def random_package(lm: MultiStreamUnitLM, task: str, n_classes: int, plen: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    L, d, V = lm.cfg.layers, lm.cfg.embed_dim, lm.cfg.vocab_size
    meta = PackageMeta(task=task, labels=tuple(f"c{i}" for i in range(n_classes)), backbone_fingerprint=FP,
                       backbone_kind="pgslm", prompt_length=plen)
    return new_package(meta, deep_key=torch.randn(L, plen, d, generator=g), deep_value=torch.randn(L, plen, d, generator=g),
                       input_prompt=torch.randn(plen, d, generator=g), separator=torch.randn(d, generator=g),
                       verbalizer=torch.randn(n_classes + 4, V, generator=g) * 0.3)


def official_scores(ref, lm, prosody, pkg, item):
    rows = make_rows([item], prosody, lm.streams)
    logits = official_pgslm_prompted(ref, rows.tokens, rows.durations, rows.f0, pkg.deep_key, pkg.deep_value,
                                     pkg.separator, pkg.input_prompt)
    return pkg.verbalizer @ logits[-1]


def test_prompted_matches_official_step_by_step(pair):
    m = 12
    ref, lm, pcfg, _ = pair
    prosody, pkg, item = prosody_for(pcfg), random_package(lm, "t", 5), synthetic_units(m, m)
    want = official_scores(ref, lm, prosody, pkg, item)
    rows = make_rows([item], prosody, lm.streams)
    for reference in (False, True):
        got = prompted_class_logits(lm, rows, pkg.deep_key[None], pkg.deep_value[None], pkg.separator[None],
                                    pkg.verbalizer[None], reference=reference)[0]
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    bank = PGSLMPromptBank(lm, prosody)
    bank.add("t", pkg)
    assert torch.allclose(bank.classify([item], ["t"])[0], want[4:].softmax(-1), atol=1e-5)


def test_mixed_batch_equals_one_by_one(pair):
    ref, lm, pcfg, _ = pair
    prosody = prosody_for(pcfg)
    bank = PGSLMPromptBank(lm, prosody, capacity=1)  # forces slot growth too
    pkgs = {p.meta.task: p for p in (random_package(lm, "a", 2, 5, 1), random_package(lm, "b", 7, 3, 2),
                                     random_package(lm, "c", 4, 5, 3))}
    for k, p in pkgs.items():
        bank.add(k, p)
    its = items([3, 25, 11, 1, 8, 17], 20)
    keys = ["a", "b", "c", "c", "a", "b"]
    batched = bank.classify(its, keys)
    for it, k, out in zip(its, keys, batched):
        want = official_scores(ref, lm, prosody, pkgs[k], it)[4:].softmax(-1)
        assert out.shape == (pkgs[k].num_classes,)
        assert torch.allclose(out, bank.classify([it], [k])[0], atol=1e-5) and torch.allclose(out, want, atol=1e-5)


def test_prompt_length_zero_is_the_plain_pgslm(pair):
    """No prompts, the LM's own </s> embedding as separator, identity verbalizer: fairseq's own token logits."""
    ref, lm, pcfg, _ = pair
    prosody, V, L, d = prosody_for(pcfg), lm.cfg.vocab_size, lm.cfg.layers, lm.cfg.embed_dim
    meta = PackageMeta(task="plain", labels=tuple(str(i) for i in range(V - 4)), backbone_fingerprint=FP,
                       backbone_kind="pgslm", prompt_length=0)
    pkg = new_package(meta, deep_key=torch.zeros(L, 0, d), deep_value=torch.zeros(L, 0, d), input_prompt=torch.zeros(0, d),
                      separator=lm.embed_tokens.weight[K + 2].clone(), verbalizer=torch.eye(V))
    it = synthetic_units(14, 5)
    plain = fairseq_streams(ref, make_rows([it], prosody, lm.streams))[0][0, -1]
    bank = PGSLMPromptBank(lm, prosody)
    bank.add("plain", pkg)
    bank.add("other", random_package(lm, "other", 3))
    probs = bank.classify([it, it], ["plain", "other"])[0]
    assert torch.allclose(probs, plain[4:].softmax(-1), atol=1e-5)


def test_gradients_reach_prompts_only(pair):
    _, lm, pcfg, _ = pair
    pkg = random_package(lm, "t", 3)
    dk, dv = pkg.deep_key.clone().requires_grad_(), pkg.deep_value.clone().requires_grad_()
    sep, verb = pkg.separator.clone().requires_grad_(), pkg.verbalizer.clone().requires_grad_()
    rows = make_rows(items([7, 3]), prosody_for(pcfg), lm.streams)
    out = prompted_class_logits(lm, rows, dk[None].expand(2, -1, -1, -1), dv[None].expand(2, -1, -1, -1),
                                sep[None].expand(2, -1), verb[None].expand(2, -1, -1))
    torch.nn.functional.cross_entropy(out, torch.tensor([4, 5])).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (dk, dv, sep, verb))
    assert all(p.grad is None for p in lm.parameters())


def test_prosody_computed_once_per_clip_and_cached(tmp_path, monkeypatch):
    """Extraction runs YAAPT once per clip; the cached ProsodyUnits (a Units) serve any number of task rows."""
    import speechprompt.prosody as prosody_mod
    from speechprompt.audio import decode_audio
    from speechprompt.codebook import Codebook
    from speechprompt.encoder import HubertConfig, HubertEncoder
    from speechprompt.units import UnitExtractor

    calls = []
    real = prosody_mod.frame_f0
    monkeypatch.setattr(prosody_mod, "frame_f0", lambda wav, cfg: calls.append(len(wav)) or real(wav, cfg))
    torch.manual_seed(0)
    enc = HubertEncoder(HubertConfig.tiny()).eval()
    extractor = ProsodyExtractor.from_parts(UnitExtractor.from_parts(enc, Codebook(torch.randn(K, enc.dim))),
                                            Prosody(ProsodyConfig(), edges32()))
    wav = decode_audio(speech_clip(tmp_path, "Lights on.")).samples
    cache = {i: pu for i, pu in enumerate(extractor.extract([wav, wav[:8000]]))}
    assert len(calls) == 2 and all(isinstance(pu, Units) and len(pu.f0) == len(pu.units) for pu in cache.values())
    assert all(int(pu.durations.sum()) == pu.frames for pu in cache.values())
    streams = StreamConfig(n_units=K, duration_size=25, f0_size=BINS + 4)
    lm = MultiStreamUnitLM(PGSLMConfig.make(streams, embed_dim=32, ffn_dim=64, layers=2, heads=4)).eval()
    bank = PGSLMPromptBank(lm, extractor.prosody)
    for t in ("a", "b", "c"):
        bank.add(t, random_package(lm, t, 3, seed=ord(t)))
    first = bank.classify([cache[0], cache[1]] * 3, ["a", "a", "b", "b", "c", "c"])
    again = bank.classify([cache[0]], ["b"])
    assert len(calls) == 2 and torch.allclose(first[2], again[0], atol=1e-6)


# -- import into a bundle -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pair", ["discrete_prosody_1_1", "continuous_no_prosody_1_1"], indirect=True)
def test_import_official_files_into_bundle(pair, tmp_path):
    from tests.fairseq_fixtures import build_fairseq_hubert, save_fairseq_checkpoint

    ref, ours, pcfg, d = pair
    hub, hcfg, tcfg, dicts = build_fairseq_hubert()
    hubert = save_fairseq_checkpoint(tmp_path / "hubert.pt", hub, hcfg, tcfg, dicts)
    joblib.dump(np.random.default_rng(0).standard_normal((K, hcfg.encoder_embed_dim)).astype(np.float32),
                tmp_path / "km.bin")
    torch.save({BINS: edges32().numpy(), 16: np.zeros(15)}, tmp_path / "mean_norm_log_f0_seg_bin.th")
    torch.save({"spk": {"f0_mean": torch.tensor(150.0), "f0_std": torch.tensor(20.0),
                        "logf0_mean": torch.tensor(5.0), "logf0_std": torch.tensor(0.2)}}, tmp_path / "f0_stats.pt")
    out = tmp_path / "bundle"
    fp = import_pgslm(hubert, tmp_path / "km.bin", d / "checkpoint.pt", out, layer=2,
                      f0_bins=tmp_path / "mean_norm_log_f0_seg_bin.th", f0_stats=tmp_path / "f0_stats.pt")
    meta = json.loads((out / "backbone.json").read_text())
    assert meta["kind"] == "pgslm" and meta["fingerprint"] == fp and "prosody.safetensors" in meta["files"]
    assert meta["dictionary"] == unit_dictionary(K) and meta["unit_lm"]["layers"] == 2
    # what Backbone.load does for kind pgslm (docs/pgslm.md): config -> model, strict weights, prosody file
    lm = MultiStreamUnitLM(PGSLMConfig.from_dict(meta["unit_lm"])).eval()
    lm.load_state_dict(load_file(str(out / "unit_lm.safetensors")), strict=True)
    prosody = load_prosody(out / "prosody.safetensors")
    assert prosody.config.to_dict() == meta["prosody"] and prosody.config.normalization == "utterance"
    assert prosody.speakers["spk"].logf0_mean == 5.0
    assert (prosody.f0_bin_edges is not None) == pcfg.discrete_f0
    rows = make_rows(items([6, 2]), prosody, lm.streams)
    real = rows.tokens.ne(lm.streams.pad)
    with torch.no_grad():
        for a, r in zip(lm.stream_logits(lm(rows.tokens, rows.durations, rows.f0)), fairseq_streams(ref, rows)):
            assert torch.allclose(a[real], r[real], atol=1e-5)
    fp2 = import_pgslm(hubert, tmp_path / "km.bin", d / "checkpoint.pt", out, layer=2,
                       f0_bins=tmp_path / "mean_norm_log_f0_seg_bin.th")  # replaces the bundle in place
    assert fp2 != fp and not (out.parent / "bundle.old").exists()  # no speaker statistics -> other prosody file
    # the same bundle served by the runtime: units + prosody once per clip, one forward, same answer as one-by-one
    from speechprompt.backbone import Backbone
    from speechprompt.package import BackboneMismatch, PackageMeta, new_package
    from speechprompt.runtime import Runtime

    rt = Runtime.load(out)
    assert Backbone.load(out).info()["kind"] == "pgslm" and rt.fingerprint == fp2
    L, dm, V = lm.cfg.layers, lm.cfg.embed_dim, lm.cfg.vocab_size
    g = torch.Generator().manual_seed(0)
    for task, kind in (("a", "pgslm"), ("b", "gslm")):
        meta = PackageMeta(task=task, labels=("x", "y", "z"), backbone_fingerprint=fp2, backbone_kind=kind)
        pkg = new_package(meta, deep_key=torch.randn(L, 5, dm, generator=g), deep_value=torch.randn(L, 5, dm, generator=g),
                          input_prompt=torch.zeros(5, dm), separator=torch.randn(dm, generator=g),
                          verbalizer=torch.randn(7, V, generator=g))
        if kind == "gslm":
            with pytest.raises(BackboneMismatch):  # a package for the other kind is refused (409)
                rt.add_task(task, pkg)
        else:
            rt.add_task(task, pkg)
    t = np.arange(16000) / 16000
    wavs = [(0.3 * np.sin(2 * np.pi * (150 + 50 * t) * t * k)).astype(np.float32) for k in (1, 2)]
    made = rt.extract_units(wavs)
    both = rt.classify(made, ["a", "a"])
    for m, p in zip(made, both):
        assert np.allclose(p, rt.classify([m], ["a"])[0], atol=1e-5) and abs(p.sum() - 1) < 1e-5
    with pytest.raises(TypeError):
        rt.classify([made[0].units], ["a"])


@pytest.mark.parametrize("pair", ["discrete_prosody_1_1"], indirect=True)
def test_importer_errors(pair, tmp_path):
    from tests.lm_fixtures import build_fairseq_lm, write_dict

    _, _, pcfg, d = pair
    with pytest.raises(CheckpointError, match="bin edges"):
        import_pgslm_lm_only(d, tmp_path)
    torch.save({16: np.zeros(15)}, tmp_path / "bins.th")
    with pytest.raises(CheckpointError, match="32 bins"):
        read_f0_bin_edges(tmp_path / "bins.th", 32)
    torch.save({"x": {"f0_mean": 1.0}}, tmp_path / "stats.pt")
    with pytest.raises(CheckpointError, match="statistics"):
        read_f0_stats(tmp_path / "stats.pt")
    write_dict(tmp_path / "gslm", K)
    args, cfg, model = build_fairseq_lm(tmp_path / "gslm", ["--decoder-normalize-before"])
    gslm = save_like_fairseq_train(tmp_path / "gslm.pt", model, cfg=cfg)
    with pytest.raises(CheckpointError, match="not a pGSLM"):
        convert_pgslm(load_fairseq_checkpoint(gslm))


def import_pgslm_lm_only(d: Path, tmp: Path):
    from tests.fairseq_fixtures import build_fairseq_hubert, save_fairseq_checkpoint

    hub, hcfg, tcfg, dicts = build_fairseq_hubert()
    hubert = save_fairseq_checkpoint(tmp / "h.pt", hub, hcfg, tcfg, dicts)
    joblib.dump(np.zeros((K, hcfg.encoder_embed_dim), np.float32), tmp / "km.bin")
    return import_pgslm(hubert, tmp / "km.bin", d / "checkpoint.pt", tmp / "b", layer=2)


"""Precision modes (speechprompt/precision.py) and their agreement gate (speechprompt/precision_gate.py), on a tiny
random bundle: the modes really change the arithmetic, stay close to fp32, and a broken mode fails the gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.ao.nn.quantized.dynamic  # noqa: F401 - the int8 linear type

from speechprompt.backbone import Backbone, make_random_bundle
from speechprompt.package import PackageMeta, new_package
from speechprompt.precision import (
    PrecisionError,
    apply_precision,
    choose,
    cpu_flags,
    native_modes,
    parse_mode,
    read_gate,
)
from speechprompt.precision_gate import agreement, measure
from speechprompt.runtime import Runtime

FLAGS_BOTH = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prec") / "tiny"
    return folder, make_random_bundle(folder, seed=5)


def package(fingerprint: str, task: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    L, plen, d, V = 2, 5, 32, 24
    meta = PackageMeta(task=task, labels=("a", "b", "c"), backbone_fingerprint=fingerprint, prompt_length=plen)
    return new_package(meta, torch.randn(L, plen, d, generator=g), torch.randn(L, plen, d, generator=g),
                       torch.randn(plen, d, generator=g), torch.randn(d, generator=g),
                       torch.randn(7, V, generator=g) * 0.1)  # probabilities well inside (0, 1)


def clips(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    return [(0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t * (1 + t)) + 0.1 * rng.standard_normal(t.size))
            .astype(np.float32)[: 8000 + 1000 * (i % 8)] for i in range(n)]


def runtime(bundle, mode: str) -> Runtime:
    rt = Runtime.load(bundle[0], precision=mode)
    for i, task in enumerate(("t1", "t2")):
        rt.add_task(task, package(bundle[1], task, seed=i))
    return rt


def test_parse_mode_and_names():
    assert parse_mode("bf16") == ("bf16", "bf16")
    assert parse_mode("fp32/int8") == ("fp32", "int8")
    for bad in ("fp16", "bf16/", "auto", "fp32/bf16/int8"):
        with pytest.raises(PrecisionError, match="unknown precision"):
            parse_mode(bad)


def test_cpu_flags_and_native_modes(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 avx512f avx512_vnni\n\nprocessor\t: 1\n")
    flags = cpu_flags(info)
    assert {"avx2", "avx512_vnni"} <= flags and "avx512_bf16" not in flags
    assert cpu_flags(tmp_path / "absent") == frozenset()
    assert sorted(native_modes("cpu", flags)) == ["fp32", "int8"]
    assert native_modes("cpu", flags)["int8"] == "CPU flags avx512_vnni"
    assert sorted(native_modes("cpu", FLAGS_BOTH)) == ["bf16", "fp32", "int8"]
    assert sorted(native_modes("cpu", frozenset({"avx2"}))) == ["fp32"]


def test_auto_picks_the_fastest_native_mode_whose_gate_passed():
    gate = {"fingerprint": "f", "modes": {"bf16": {"passed": True, "speedup": 1.8},
                                          "int8": {"passed": True, "speedup": 2.5},
                                          "fp32/bf16": {"passed": True, "speedup": 1.3},
                                          "fp32/int8": {"passed": False, "speedup": 3.0}}}
    pick = choose("auto", device="cpu", flags=FLAGS_BOTH, gate=gate, fingerprint="f")
    assert (pick.mode, pick.requested) == ("int8", "auto") and "2.50x" in pick.reason
    # no VNNI: int8 is not native, bf16 is the fastest passing one
    assert choose("auto", device="cpu", flags=frozenset({"avx512_bf16"}), gate=gate, fingerprint="f").mode == "bf16"
    # a gate recorded for another bundle, no gate, no native unit: fp32, and the reason says why
    other = choose("auto", device="cpu", flags=FLAGS_BOTH, gate=gate, fingerprint="g")
    assert other.mode == "fp32" and "gate is for another bundle (f)" in other.reason and "precision_gate.py" in other.reason
    none = choose("auto", device="cpu", flags=FLAGS_BOTH, gate=None, fingerprint="f")
    assert none.mode == "fp32" and "no agreement gate recorded" in none.reason
    plain = choose("auto", device="cpu", flags=frozenset({"avx2"}), gate=gate, fingerprint="f")
    assert plain.mode == "fp32" and "no mode both native" in plain.reason
    # a mode name this version does not know is skipped, not fatal
    odd = {"fingerprint": "f", "modes": {"fp16": {"passed": True, "speedup": 9.0}, "bf16": {"passed": True, "speedup": 1.5}}}
    assert choose("auto", device="cpu", flags=FLAGS_BOTH, gate=odd, fingerprint="f").mode == "bf16"
    # a passing mode that is not faster than fp32 is not chosen
    slow = {"fingerprint": "f", "modes": {"bf16": {"passed": True, "speedup": 0.9}}}
    assert choose("auto", device="cpu", flags=FLAGS_BOTH, gate=slow, fingerprint="f").mode == "fp32"


def test_explicit_modes_are_applied_whatever_the_gate_says():
    c = choose("bf16/fp32", device="cpu", flags=frozenset(), gate=None, fingerprint="f")
    assert c.mode == "bf16/fp32" and "not native" in c.reason and "no agreement gate recorded" in c.reason
    # the reason says what the bundle's gate recorded: failed (with its figures), passed, or another bundle's file
    gate = {"fingerprint": "f", "modes": {"bf16": {"passed": False, "units_agree": 0.96, "min_labels_agree": 0.8662},
                                          "int8": {"passed": True}}}
    failed = choose("bf16", device="cpu", flags=FLAGS_BOTH, gate=gate, fingerprint="f")
    assert failed.mode == "bf16" and "NOT passed" in failed.reason and "86.62%" in failed.reason
    assert "gate passed" in choose("int8", device="cpu", flags=FLAGS_BOTH, gate=gate, fingerprint="f").reason
    assert "another bundle" in choose("bf16", device="cpu", flags=FLAGS_BOTH, gate=gate, fingerprint="g").reason
    assert choose("fp32/fp32", device="cpu", flags=FLAGS_BOTH, gate=None, fingerprint="f").mode == "fp32"
    with pytest.raises(PrecisionError, match="CPU only"):
        choose("int8", device="cuda", flags=FLAGS_BOTH, gate=None, fingerprint="f")


def test_modes_change_the_arithmetic_and_stay_close_to_fp32(bundle):
    ref, bf16, int8 = (runtime(bundle, m) for m in ("fp32", "bf16", "int8"))
    assert ref.backbone.precision == {"mode": "fp32", "encoder": "fp32", "unit_lm": "fp32"}
    assert bf16.backbone.precision["mode"] == "bf16" and bf16.bank.pk.dtype == torch.bfloat16
    assert bf16.backbone.encoder.autocast_dtype == torch.bfloat16  # HuBERT: autocast
    assert isinstance(int8.backbone.unit_lm.layers[0].fc1, torch.ao.nn.quantized.dynamic.Linear)
    assert int8.backbone.info()["parameters"] == ref.backbone.info()["parameters"]  # counted before quantizing
    units = ref.extract_units(clips(4))
    p = {name: np.stack(rt.classify(units, ["t1"] * 4)) for name, rt in
         (("fp32", ref), ("bf16", bf16), ("int8", int8))}
    for name in ("bf16", "int8"):
        d = float(np.abs(p[name] - p["fp32"]).max())
        assert 0 < d < 0.1, (name, d)  # different arithmetic, same answer to within 0.1 probability
        np.testing.assert_allclose(p[name].sum(1), 1.0, atol=1e-5)


def test_gate_agrees_with_itself_and_fails_a_broken_mode(bundle):
    wavs = clips(12)
    ref = measure(runtime(bundle, "fp32"), wavs, ["t1", "t2"], batch=5)
    again = runtime(bundle, "fp32")
    same = agreement(ref, measure(again, wavs, ["t1", "t2"], batch=5), again)
    assert same["passed"] and same["units_agree"] == 1.0 and same["min_labels_agree"] == 1.0
    assert same["max_prob_diff"] == 0.0 and same["frames"] == sum(int(f.numel()) for f in ref.frames) > 12
    bf16 = runtime(bundle, "fp32/bf16")  # encoder exact: only the unit LM differs
    r = agreement(ref, measure(bf16, wavs, ["t1", "t2"], batch=5), bf16)
    assert r["units_agree"] == 1.0 and 0 < r["max_prob_diff_same_units"] < 0.1
    assert r["max_prob_diff"] == pytest.approx(r["max_prob_diff_same_units"])  # same units end to end
    # a broken mode: centroids shuffled, so the units (and with them the labels) change
    broken = runtime(bundle, "fp32")
    cb = broken.backbone.codebook.centroids
    cb.copy_(cb[torch.randperm(cb.shape[0], generator=torch.Generator().manual_seed(0))])
    bad = agreement(ref, measure(broken, wavs, ["t1", "t2"], batch=5), broken)
    assert not bad["passed"] and bad["units_agree"] < 0.5
    assert bad["max_prob_diff_same_units"] < 1e-6  # its unit LM is the reference one: the units are what broke


def test_read_gate(tmp_path):
    assert read_gate(tmp_path) is None
    (tmp_path / "precision_gate.json").write_text(json.dumps({"fingerprint": "f", "modes": {}}))
    assert read_gate(tmp_path) == {"fingerprint": "f", "modes": {}}
    (tmp_path / "precision_gate.json").write_text("{not json")
    assert read_gate(tmp_path) is None


def test_pgslm_refuses_lower_precision(tmp_path):
    from speechprompt.importers.pgslm import make_random_pgslm_bundle

    make_random_pgslm_bundle(tmp_path / "p", seed=1)
    bb = Backbone.load(tmp_path / "p")
    apply_precision(bb, "fp32")  # the reference is fine
    with pytest.raises(PrecisionError, match="GSLM backbones only"):
        apply_precision(bb, "bf16")

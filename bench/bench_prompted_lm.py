"""Prompted unit LM at GSLM shapes (transformer_lm_big, 104 tokens, random weights): one batch of 16 rows for 16
different tasks vs a loop doing one task per forward at batch 1, as the official SpeechPrompt sampler does.

Prints the ratios measured in this run (target >= 3.5x). Usage: python bench/bench_prompted_lm.py [--rows 16]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechprompt.importers.unit_lm import convert_unit_lm  # noqa: E402
from speechprompt.package import PackageMeta, new_package  # noqa: E402
from speechprompt.prompting import PromptBank, make_rows  # noqa: E402
from speechprompt.unit_lm import UnitLM  # noqa: E402
from tests.lm_fixtures import BIG, build_fairseq_lm, official_prompted_logits, write_dict  # noqa: E402


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--min-units", type=int, default=40)
    ap.add_argument("--max-units", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = Path(tempfile.mkdtemp())
    write_dict(data, 100)
    _, cfg, fs = build_fairseq_lm(data, arch="transformer_lm_big", arch_args=BIG)
    lm_cfg, sd = convert_unit_lm({"cfg": cfg, "model": fs.state_dict()})
    lm = UnitLM(lm_cfg).eval().requires_grad_(False)
    lm.load_state_dict(sd)
    dev = torch.device(a.device)
    lm.to(dev)
    fs.to(dev)
    L, d, V = lm_cfg.layers, lm_cfg.embed_dim, lm_cfg.vocab_size
    g = torch.Generator().manual_seed(0)
    bank, pkgs = PromptBank(lm, capacity=a.rows), []
    for i in range(a.rows):
        meta = PackageMeta(task=f"t{i}", labels=tuple(str(c) for c in range(12)), backbone_fingerprint="0" * 64)
        pkg = new_package(meta, deep_key=torch.randn(L, 5, d, generator=g), deep_value=torch.randn(L, 5, d, generator=g),
                          input_prompt=torch.randn(5, d, generator=g), separator=torch.randn(d, generator=g),
                          verbalizer=torch.randn(16, V, generator=g) * 0.05)
        bank.add(pkg.meta.task, pkg)
        pkgs.append(pkg)
    lengths = torch.randint(a.min_units, a.max_units + 1, (a.rows,), generator=g).tolist()
    units = [torch.randint(0, 100, (n,), generator=g) for n in lengths]
    keys = [p.meta.task for p in pkgs]

    def batched():
        bank.classify(units, keys)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def ours_loop():
        for u, k in zip(units, keys):
            bank.classify([u], [k])
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def official_loop():
        for u, p in zip(units, pkgs):
            tokens, _ = make_rows([u], dev)
            logits = official_prompted_logits(fs, tokens, p.deep_key.to(dev), p.deep_value.to(dev),
                                              p.separator.to(dev), p.input_prompt.to(dev))
            (p.verbalizer.to(dev) @ logits[-1]).argmax()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        # check the batched answers equal the official ones before timing anything
        out = bank.classify(units, keys)
        for u, p, o in zip(units, pkgs, out):
            ref = p.verbalizer.to(dev) @ official_prompted_logits(fs, make_rows([u], dev)[0], p.deep_key.to(dev),
                                                                  p.deep_value.to(dev), p.separator.to(dev),
                                                                  p.input_prompt.to(dev))[-1]
            err = (o.float() - ref[4:].softmax(-1).cpu()).abs().max().item()
            assert err < 1e-4, err
        t_b = best_of(batched, a.repeats)
        t_o = best_of(ours_loop, a.repeats)
        t_f = best_of(official_loop, a.repeats)
    dev_name = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"{platform.processor() or platform.machine()}, {a.threads} threads"
    print(f"# prompted ULM, transformer_lm_big (L={L}, d={d}), {a.rows} rows x {a.rows} tasks, units {a.min_units}-{a.max_units}, {dev_name}")
    print("| method | seconds per 16 rows | speed-up of batched |")
    print("|---|---|---|")
    print(f"| official-style loop (fairseq modules, batch 1, one task per forward) | {t_f:.3f} | {t_f / t_b:.2f}x |")
    print(f"| our runtime, loop at batch 1 | {t_o:.3f} | {t_o / t_b:.2f}x |")
    print(f"| our runtime, one batch of {a.rows} tasks | {t_b:.3f} | 1.00x |")


if __name__ == "__main__":
    main()

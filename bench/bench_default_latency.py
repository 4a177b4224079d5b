"""Classify one 2 s clip on one CPU thread: the default backbone against another bundle (the old default), same run.

    python bench/bench_default_latency.py --bundles models/default,models/default-v1

Per bundle: units (encode + k-means + dedup) and one prompted unit-LM row with a task from the bundle's demo store
(a random package of the right shape: the cost does not depend on its values), best of ``--repeats``; prints the milliseconds
and the ratio new / old measured here. Target (issue 14): under 100 ms for the new default.
The clip is a real recording when /usr/share/sounds/alsa is present (a test set; benchmarking only), else TTS.
With ``--speech-trim WEIGHTS`` (models/speech_trim/silero_vad_v6.safetensors) it also times what a request with
``speech_trim=recording`` adds for the language-id and vad demos: Silero VAD + the trim's bounds on the same 2 s clip
(server/speech_trims.py), and prints it beside the first bundle's classify. ``--members K`` also times the same clip
on a K-member ensemble package (``speechprompt/ensembles.py``: K rows of one forward) on every bundle; with
``--mixed`` its second half reads the clusters view (``member_unit_views``, on a bundle with a product codebook), as the
six-member language-id demo does.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.ensembles import ensemble  # noqa: E402
from speechprompt.package import PackageMeta, new_package, with_metadata  # noqa: E402
from speechprompt.runtime import Runtime  # noqa: E402
from speechprompt.training.manifest import load_audio  # noqa: E402
from speechprompt.unit_views import UnitView  # noqa: E402


def clip_2s() -> np.ndarray:
    alsa = Path("/usr/share/sounds/alsa/Front_Center.wav")
    if alsa.exists():
        w = load_audio(alsa)
    else:
        raw = subprocess.run(["espeak-ng", "--stdout", "turn the lights on please"], capture_output=True).stdout
        Path("/tmp/_bench.wav").write_bytes(raw)
        w = load_audio("/tmp/_bench.wav")
    return np.resize(w, 32000).astype(np.float32)  # exactly 2 s (repeated when shorter)


def task_for(rt: Runtime, members: int = 1, mixed: bool = False) -> str:
    c = rt.backbone.spec.unit_lm
    view = UnitView.of_codebook(rt.backbone.codebook) if mixed and rt.backbone.spec.kind == "gslm" else None
    g = torch.Generator().manual_seed(0)
    meta = PackageMeta(task="bench", labels=("a", "b", "c"), backbone_fingerprint=rt.fingerprint,
                       backbone_kind=rt.backbone.spec.kind)  # a pGSLM bundle takes the same package shapes
    pkgs = [new_package(meta, deep_key=torch.randn(c.layers, 5, c.embed_dim, generator=g),
                        deep_value=torch.randn(c.layers, 5, c.embed_dim, generator=g),
                        input_prompt=torch.randn(5, c.embed_dim, generator=g),
                        separator=torch.randn(c.embed_dim, generator=g),
                        verbalizer=torch.randn(3 + 4, c.vocab_size, generator=g) * 0.01) for _ in range(members)]
    if view is not None:  # the second half of the members reads the clusters view
        pkgs[members // 2:] = [with_metadata(p, unit_view=view.to_dict()) for p in pkgs[members // 2:]]
    key = f"bench{members}"
    rt.add_task(key, pkgs[0] if members == 1 else ensemble(pkgs))
    return key


def measure(bundle: Path, wav: np.ndarray, repeats: int, members: int = 1, mixed: bool = False) -> dict:
    rt = Runtime.load(bundle)
    key = task_for(rt)
    ens_key = task_for(rt, members, mixed) if members > 1 else None
    views = rt.backbone.spec.kind == "gslm" and mixed and UnitView.of_codebook(rt.backbone.codebook) is not None
    enc, lm, ens = [], [], []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        units = rt.extract_units([wav])
        t1 = time.perf_counter()
        with torch.inference_mode():
            rt.classify([units[0]], [key])
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        lm.append(t2 - t1)
        if ens_key:
            with torch.inference_mode():
                rt.classify([units[0]], [ens_key])
            ens.append(time.perf_counter() - t2)
    enc, lm, ens = enc[1:], lm[1:], ens[1:]  # first call warms up
    total = [a + b for a, b in zip(enc, lm, strict=True)]
    i = int(np.argmin(total))
    return {"bundle": str(bundle), "name": rt.backbone.spec.name, "units": int(len(units[0].units)),
            "total_ms": 1000 * total[i], "encode_ms": 1000 * enc[i], "lm_ms": 1000 * lm[i],
            **({"members": members, "mixed": views, "ensemble_lm_ms": 1000 * min(ens)} if ens else {})}


def measure_trim(weights: Path, wav: np.ndarray, repeats: int) -> float:
    """Milliseconds (best of ``repeats``) of Silero VAD + the default trim's bounds on ``wav`` [N] f32 @ 16 kHz."""
    from speechprompt.silero_vad import SileroVAD
    from speechprompt.speech_trim import SpeechTrim

    vad, trim, x = SileroVAD.load(weights), SpeechTrim(), torch.from_numpy(wav)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        with torch.inference_mode():
            trim.bounds_from(vad(x), x)
        times.append(time.perf_counter() - t0)
    return 1000 * min(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundles", default="models/default,models/default-v1")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--speech-trim", type=Path, default=None, help="Silero VAD weights: also time the speech trim")
    ap.add_argument("--members", type=int, default=1, help="also time a task that is a K-member ensemble")
    ap.add_argument("--mixed", action="store_true", help="the ensemble's second half reads the clusters view")
    a = ap.parse_args()
    torch.set_num_threads(1)
    wav = clip_2s()
    rows = [measure(Path(b), wav, a.repeats, a.members, a.mixed) for b in a.bundles.split(",")]
    print(f"# classify one 2 s clip, 1 thread, best of {a.repeats} ({platform.processor() or platform.machine()})")
    for r in rows:
        print(f"{r['name']:<28} {r['total_ms']:7.1f} ms  (encode {r['encode_ms']:.1f} ms, unit LM {r['lm_ms']:.1f} ms, "
              f"{r['units']} units)  [{r['bundle']}]")
        if "members" in r:
            kind = " mixed (half on the clusters view)" if r["mixed"] else ""
            print(f"{'':<28} {r['encode_ms'] + r['ensemble_lm_ms']:7.1f} ms  with a {r['members']}-member{kind} ensemble "
                  f"(unit LM {r['ensemble_lm_ms']:.1f} ms: {r['ensemble_lm_ms'] / r['lm_ms']:.2f}x one member's)")
    if len(rows) > 1:
        print(f"ratio {rows[0]['name']} / {rows[1]['name']}: {rows[0]['total_ms'] / rows[1]['total_ms']:.2f}x")
    if a.speech_trim is not None:
        ms = measure_trim(a.speech_trim, wav, a.repeats)
        print(f"speech trim (Silero VAD + bounds) {ms:.1f} ms: {ms / rows[0]['total_ms']:.2f}x of "
              f"{rows[0]['name']}'s classify (added once per clip by speech_trim=recording)")


if __name__ == "__main__":
    main()

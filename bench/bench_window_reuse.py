"""Would encoding a long clip once and slicing its frames per window give the windows' own units? Measured.

    python bench/bench_window_reuse.py                     # models/default, 60 s of speech + quiet, window 2 s
    python bench/bench_window_reuse.py --seconds 120 --hop-frames 25

The server encodes every window on its own (``server/windows.py``: exact, equal to a classify of that stretch).
The alternative: run the dense model once over the whole clip and give window ``[1280 m, 1280 m + W)`` the frames
``m .. m + E_W`` (speech_embedding: one frame per 80 ms, each reading the same audio in both cases except where
the window's zero padding or its own log-mel floor (max - 80 dB) differs). Hops must then be whole frames (80 ms
multiples; a 1 s hop is 12.5 frames). This script measures, on one clip and in one run: the encoder time of both
ways, the share of windows whose deduplicated units differ, the share of frames that differ, and how often the
windows' labels (a demo task, e.g. vad) agree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_long_audio import long_clip  # noqa: E402
from speechprompt.audio import decode_audio  # noqa: E402
from speechprompt.codebook import dedup  # noqa: E402
from speechprompt.package import read_package  # noqa: E402
from speechprompt.runtime import Runtime  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "models/default"))
    ap.add_argument("--task", default=str(ROOT / "prompts_store/vad"))
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--window-frames", type=int, default=25, help="window length in 80 ms frames (25 = 2 s)")
    ap.add_argument("--hop-frames", type=int, default=12, help="hop in 80 ms frames (12 = 0.96 s)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rt = Runtime.load(a.bundle)
    enc, book = rt.backbone.encoder, rt.backbone.codebook
    hop_samples = enc.hop_size
    task_files = sorted(Path(a.task).rglob("*.safetensors"))
    pkg = read_package(task_files[-1].read_bytes())
    rt.add_task("t", pkg)
    samples = decode_audio(long_clip(a.seconds, Path(tempfile.mkdtemp())), max_seconds=None).samples
    win = a.window_frames * hop_samples
    starts = list(range(0, samples.size - win + 1, a.hop_frames * hop_samples))
    with torch.inference_mode():
        enc.extract([torch.from_numpy(samples[:win])])  # warm-up, not timed
        t0 = time.perf_counter()
        own = [enc.extract([torch.from_numpy(samples[s:s + win])])[0] for s in starts]  # [E_W, D] each
        t1 = time.perf_counter()
        whole = enc.extract([torch.from_numpy(samples)])[0]  # [E, D]
        t2 = time.perf_counter()
        frames_differ = windows_differ = labels_agree = 0
        total_frames = 0
        for s, feats in zip(starts, own, strict=True):
            m = s // hop_samples
            sliced = whole[m:m + feats.shape[0]]
            u_own, u_sliced = book.quantize(feats), book.quantize(sliced)
            n = min(len(u_own), len(u_sliced))
            frames_differ += int((u_own[:n] != u_sliced[:n]).sum()) + abs(len(u_own) - len(u_sliced))
            total_frames += len(u_own)
            d_own, d_sliced = dedup(u_own)[0], dedup(u_sliced)[0]
            windows_differ += int(not torch.equal(d_own, d_sliced))
            p_own, p_sliced = rt.classify([d_own, d_sliced], ["t", "t"])
            labels_agree += int(p_own.argmax() == p_sliced.argmax())
    w = len(starts)
    print(f"{a.seconds:g} s clip, {w} windows of {win / 16000:g} s every {a.hop_frames * hop_samples / 16000:g} s; "
          f"task {pkg.meta.task}; bundle {Path(a.bundle).name}; 1 thread\n")
    print("| way | encoder s | per audio s (ms) |")
    print("|---|---|---|")
    print(f"| each window alone (served) | {t1 - t0:.2f} | {1000 * (t1 - t0) / a.seconds:.1f} |")
    print(f"| whole clip once, sliced | {t2 - t1:.2f} | {1000 * (t2 - t1) / a.seconds:.1f} |")
    print(f"\nframes whose unit differs: {frames_differ}/{total_frames} ({100 * frames_differ / total_frames:.1f} %); "
          f"windows whose units differ: {windows_differ}/{w} ({100 * windows_differ / w:.0f} %); "
          f"window labels that agree: {labels_agree}/{w} ({100 * labels_agree / w:.1f} %)")


if __name__ == "__main__":
    main()

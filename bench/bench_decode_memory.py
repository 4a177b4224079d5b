"""Peak memory of decoding long, high-rate audio: the server's decoder (blocks resampled to 16 kHz as they are
decoded, ``speechprompt/audio_sink.py``) against holding the whole clip at its own rate and resampling it once (the
channels averaged block by block with ``soundfile.blocks``, joined, then ``soxr.resample``: what ``decode_audio`` did
before session 32).

Each file is made with ffmpeg (a sine, so it compresses), then each way decodes it in its own process after a 1 s file
of the same kind (libraries loaded, buffers made); the number is how far that process's peak RSS grew (MiB). The
ratio is whole-clip / blocks, measured in this run. Markdown goes to stdout.

    python bench/bench_decode_memory.py                 # 120 s files, ~1 min
    python bench/bench_decode_memory.py --seconds 600   # the docs/api.md table's length
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (rate Hz, channels, ffmpeg output arguments, file suffix)
FILES = {
    "FLAC, mono, 384 kHz": (384_000, 1, ["-c:a", "flac"], ".flac"),
    "FLAC, 7.1, 96 kHz": (96_000, 8, ["-c:a", "flac"], ".flac"),
    "WAV (16-bit), stereo, 48 kHz": (48_000, 2, ["-c:a", "pcm_s16le"], ".wav"),
}

PROBE = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np, soundfile as sf, soxr
    from speechprompt.audio import decode_audio

    def whole(path):  # channels averaged block by block, the mono clip held at its own rate, then resampled once
        rate = sf.info(path).samplerate
        blocks = [b.mean(axis=1, dtype=np.float32) for b in sf.blocks(path, blocksize=65536, dtype="float32",
                                                                       always_2d=True)]
        return soxr.resample(np.concatenate(blocks), rate, 16000, quality="HQ")

    way = decode_audio if sys.argv[2] == "blocks" else whole
    out = way(sys.argv[4])  # warm-up on the short file
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = way(sys.argv[3])
    samples = out.samples if hasattr(out, "samples") else out
    print(len(samples), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
""")


def make(path: Path, rate: int, channels: int, args: list[str], seconds: float) -> None:
    """A sine of ``seconds`` at ``rate`` Hz on ``channels`` channels, written by ffmpeg with ``args``."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=f=440:r={rate}:d={seconds}",
                    "-ac", str(channels), *args, str(path)], check=True)


def grew(way: str, path: Path, short: Path) -> tuple[int, float]:
    """(samples at 16 kHz, MiB the peak RSS grew) of decoding ``path`` the ``way`` ("blocks" or "whole")."""
    done = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), way, str(path), str(short)], capture_output=True,
                          text=True, check=True)
    samples, mib = done.stdout.split()
    return int(samples), float(mib)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="length of each file (s)")
    a = ap.parse_args()
    print(f"Peak RSS growth (MiB) decoding {a.seconds:g} s files; the mono clip as float32 at its own rate and at "
          "16 kHz for scale.\n")
    print("| file | mono at its own rate | at 16 kHz | whole clip, then resample | blocks as decoded | ratio |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (rate, channels, args, suffix) in FILES.items():
            path, short = Path(tmp) / f"long{suffix}", Path(tmp) / f"short{suffix}"
            make(path, rate, channels, args, a.seconds)
            make(short, rate, channels, args, 1.0)
            n_whole, whole = grew("whole", path, short)
            n_blocks, blocks = grew("blocks", path, short)
            if n_whole != n_blocks:
                raise SystemExit(f"{name}: the two ways gave {n_whole} and {n_blocks} samples")
            own = a.seconds * rate * 4 / 2**20  # mono float32
            print(f"| {name} | {own:.0f} | {a.seconds * 16000 * 4 / 2**20:.1f} | {whole:.0f} | {blocks:.0f} | "
                  f"{whole / max(blocks, 1e-9):.1f}x |", flush=True)


if __name__ == "__main__":
    main()

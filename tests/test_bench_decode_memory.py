"""bench/bench_decode_memory.py runs and measures what it says: a 7.1 file at 96 kHz held whole (mono) at its own
rate makes the process grow far more than the server's decoder, which resamples blocks as they are decoded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg makes the files")
def test_the_decode_memory_bench_prints_a_row_per_file_and_the_blocks_win():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_decode_memory.py"), "--seconds", "30"],
                          capture_output=True, text=True, check=True, timeout=300)
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) == {"file", "FLAC, mono, 384 kHz", "FLAC, 7.1, 96 kHz", "WAV (16-bit), stereo, 48 kHz"}
    cells = [c.strip() for c in rows["FLAC, 7.1, 96 kHz"].split("|")[2:-1]]
    own, at16k, whole, blocks = (float(c) for c in cells[:4])
    assert own == pytest.approx(30 * 96_000 * 4 / 2**20, abs=1) and at16k == pytest.approx(1.8, abs=0.1)
    assert whole > own * 0.8 and blocks < own / 2  # the mono clip is held at its own rate; the blocks are not

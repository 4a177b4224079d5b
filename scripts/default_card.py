#!/usr/bin/env python
"""Render the data and training tables of docs/model_card.md (the default backbone) from committed JSON:

    python scripts/default_card.py   # reads docs/default_training_log.json + docs/default_sources.json

``docs/default_sources.json`` is ``.cache/real_corpus/sources.json`` as ``scripts/build_real_corpus.py`` wrote it (copied
by ``--sources``); nothing in the tables is typed by hand. The block sits between the ``card:begin/end`` markers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.training.markers import replace_block  # noqa: E402

BEGIN, END = "<!-- card:begin (scripts/default_card.py writes this block) -->", "<!-- card:end -->"


def render(log: dict, sources: dict) -> str:
    c, t = log["corpus"], log["timings_s"]
    test = set(c["real_test_speakers"])
    speech_speakers = {k for s in sources.values() for k in s["speakers"]}  # non-speech groups are not speakers
    train_speakers = [k for k in c["real_train_speakers"] if k in speech_speakers]
    lines = ["| real-speech source (Debian package) | version | licence | clips (speech / non-speech) | hours | "
             "speakers (train / test) | languages |", "|---|---|---|---|---|---|---|"]
    for pkg, s in sources.items():
        spk = [k for k in s["speakers"]]
        n_test = sum(1 for k in spk if k in test)
        langs = ", ".join(sorted(s.get("languages", {}))) or "-"
        lines.append(f"| `{pkg}` | {s['version']} | {', '.join(s['license']['names'])} | {s['speech_clips']} / "
                     f"{s['nonspeech_clips']} | {s['hours']:.2f} | {len(spk) - n_test} / {n_test} | {langs} |")
    lines += ["", "| training data of this build | value |", "|---|---|",
              f"| TTS speech (clean; + sox noisy twins) | {c['tts_hours_clean']:.2f} h (+ {c['tts_hours_with_sox_twins'] - c['tts_hours_clean']:.2f} h) |",
              f"| real speech and non-speech, train speakers only | {c['real_hours']:.2f} h, {c['real_clips']} clips, "
              f"{len(train_speakers)} speakers (+ {len(c['real_train_speakers']) - len(train_speakers)} non-speech groups) |",
              f"| channel-augmented twins (room, noise, codec, band-pass, level) | {c['channel_twins']} clips, "
              f"{c['twin_hours']:.2f} h; codecs: " + ", ".join(f"{k} {v}" for k, v in sorted(c["twin_codecs"].items())) + " |",
              f"| total audio the codebook and the unit LM saw | {c['train_hours']:.2f} h |",
              f"| held-out real speakers (never in the build) | {len(test)}: " + ", ".join(sorted(test)) + " |",
              "", "| build | value |", "|---|---|",
              f"| fingerprint | `{log['fingerprint']}` |",
              f"| bundle size | {log['bundle_bytes'] / 2**20:.1f} MiB |",
              f"| parameters (dense model / unit LM / codebook) | {log['parameters']['encoder']:,} / "
              f"{log['parameters']['unit_lm']:,} / {log['parameters']['codebook']:,} |",
              f"| unit LM validation perplexity (best epoch {log['unit_lm']['best_epoch']}) | "
              f"{log['final']['lm_valid_ppl']} |",
              f"| units used / entropy / mean run (held-out real clips of train speakers) | "
              f"{log['unit_stats_valid_real']['units_used']} / {log['unit_stats_valid_real']['entropy_bits']:.2f} bits / "
              f"{log['unit_stats_valid_real']['mean_run_length_frames']:.2f} frames |",
              "| build time, 2 CPU cores (stage: seconds) | " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()) +
              f"; total {log['total_s'] / 60:.1f} min |", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log", type=Path, default=ROOT / "docs" / "default_training_log.json")
    ap.add_argument("--sources", type=Path, default=ROOT / "docs" / "default_sources.json")
    ap.add_argument("--copy-sources", type=Path, default=None, help="copy this sources.json to --sources first")
    ap.add_argument("--card", type=Path, default=ROOT / "docs" / "model_card.md")
    a = ap.parse_args()
    if a.copy_sources:
        shutil.copyfile(a.copy_sources, a.sources)
    replace_block(a.card, BEGIN, END, render(json.loads(a.log.read_text()), json.loads(a.sources.read_text())))


if __name__ == "__main__":
    main()

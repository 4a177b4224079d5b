"""Quick probe of a backbone on the ten Speech Commands words with voices it never heard (not the task suite).

    python scripts/command_probe.py [--bundle models/default]

Train: the ten words (``voices.COMMAND_WORDS``) spoken by corpus voices (espeak-ng accents x variants x rates,
MBROLA English voices, festival rab/ked). Test: held-out voices (espeak-ng Scottish/Caribbean with held-out
variants, MBROLA us3, festival kal) and, separately, the held-out engines (flite; the neural Piper voice). Classifiers: logistic regression
on unit histograms (dedup'd unit counts, normalised) and on mean+std pooled layer features.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechprompt.backbone import Backbone  # noqa: E402
from speechprompt.training import corpus as corpus_mod  # noqa: E402
from speechprompt.training import voices  # noqa: E402

TRAIN_VOICES = [("espeak-ng", f"{a}+{v}") for a, v in itertools.product(
    ("en-us", "en-gb", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan"), ("m1", "f2", "m3", "f1", "Alex", "klatt2"))]
TRAIN_VOICES += [("mbrola", v) for v in ("mb-us1", "mb-us2", "mb-en1", "mb-de1-en", "mb-nl2-en")]
TRAIN_VOICES += [("festival", "rab_diphone"), ("festival", "ked_diphone")]
HELD_OUT = [("espeak-ng", f"{a}+{v}") for a in voices.HELD_OUT_ESPEAK_ACCENTS for v in voices.HELD_OUT_ESPEAK_VARIANTS[:4]]
HELD_OUT += [("mbrola", "mb-us3"), ("festival", "kal_diphone")]
FLITE = [("flite", v) for v in voices.FLITE_VOICES]
PIPER = [("piper", v) for v in voices.HELD_OUT_PIPER]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, default=ROOT / "models/default")
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression

    torch.set_num_threads(2)
    bb = Backbone.load(args.bundle)
    words = list(voices.COMMAND_WORDS)

    def featurise(voice_list, rates=(130, 170, 210)):
        hist, pooled, labels = [], [], []
        for rate in rates:
            clips = corpus_mod.synthesize_words(words, voice_list, rate=rate)
            for (w, _e, _v), wav in sorted(clips.items()):
                f = bb.encoder.extract([torch.from_numpy(wav)])[0]
                u = torch.unique_consecutive(bb.codebook.quantize(f))
                h = torch.bincount(u, minlength=bb.codebook.vocab_size).float()
                hist.append((h / h.sum()).numpy())
                pooled.append(torch.cat([f.mean(0), f.std(0)]).numpy())
                labels.append(words.index(w))
        return np.array(hist), np.array(pooled), np.array(labels)

    tr = featurise(TRAIN_VOICES)
    out = {}
    for name, vl in (("held_out_voices", HELD_OUT), ("held_out_engine_flite", FLITE),
                     ("held_out_neural_piper", PIPER)):
        te = featurise(vl)
        for k, label in ((0, "unit_histogram_lr"), (1, "pooled_features_lr")):
            clf = LogisticRegression(max_iter=2000, C=10.0).fit(tr[k], tr[2])
            out[f"{name}/{label}"] = round(float((clf.predict(te[k]) == te[2]).mean()), 4)
    sys.stdout.write(json.dumps({"train_clips": len(tr[2]), **out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

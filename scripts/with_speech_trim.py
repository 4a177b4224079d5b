#!/usr/bin/env python
r"""Run another script with a speech trim in every speech_embedding encoder's conditioning (a trial, not a bundle).

    python scripts/with_speech_trim.py --vad-weights .cache/speech_trim.safetensors --trim 0.5:0.25 -- \
        scripts/real_speech_eval.py --columns new --max-epochs 40 --threads 1 --draw 0 --results none --work W

Every clip a speech_embedding bundle encodes, training clips included, is trimmed (``speechprompt/speech_trim.py``,
Silero VAD) after the bundle's edge gate and before its level floor, and the bundle's units key is salted with the
trim's settings, so units caches never mix trimmed and untrimmed units. This is how docs/results.md ("A speech trim by
Silero VAD for room tone") measured the trim as if it were a bundle setting without making one; the trim is not a
``backbone.json`` setting, and nothing here changes a bundle on disk. Limits of the patch: the VAD runs on the CPU
(a bundle loaded on a GPU would fail), and ``edge_gate.encoded_bounds`` is not patched, so explanations' seconds and
a pGSLM's F0 part do not see the trim (neither is used by the runs it was written for). The weights: ``speechprompt.importers.silero``
(``write_weights(fetch(folder), out)``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from speechprompt import backbone as B  # noqa: E402
from speechprompt import speech_embedding as SE  # noqa: E402
from speechprompt.silero_vad import SileroVAD  # noqa: E402
from speechprompt.speech_trim import SpeechTrim  # noqa: E402


def install(trim: SpeechTrim, vad: SileroVAD) -> None:
    """Patch ``SpeechEmbeddingConfig.condition`` (gate, trim, floor) and ``backbone.units_key`` (salted) in this
    process."""

    def condition(self, wav):
        if self.edge_gate is not None:
            wav = self.edge_gate.apply(wav)
        wav = trim.apply(wav, vad)
        if self.level_floor is not None:
            wav = self.level_floor.apply(wav)
        return wav

    plain = B.units_key
    salt = json.dumps(trim.to_dict(), sort_keys=True)
    SE.SpeechEmbeddingConfig.condition = condition
    B.units_key = lambda fingerprint, encoder: hashlib.sha256(
        f"{plain(fingerprint, encoder)}:speech_trim={salt}".encode()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vad-weights", type=Path, required=True, help="silero-vad weights (importers/silero.py)")
    ap.add_argument("--trim", default="0.5:0.25", help="THRESHOLD:MARGIN_S")
    ap.add_argument("--loud-db", type=float, default=-20.0, help="a chunk this close to the clip's peak is sound")
    ap.add_argument("script", type=Path)
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    trim = SpeechTrim.parse(a.trim)
    if trim is None:
        ap.error("--trim must name a trim (THRESHOLD:MARGIN_S)")
    install(SpeechTrim(trim.threshold, trim.margin_s, loud_db=a.loud_db), SileroVAD.load(a.vad_weights))
    sys.argv = [str(a.script), *(a.args[1:] if a.args[:1] == ["--"] else a.args)]
    runpy.run_path(str(a.script), run_name="__main__")


if __name__ == "__main__":
    main()

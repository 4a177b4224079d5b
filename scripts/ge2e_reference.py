"""Write ``tests/fixtures/ge2e_reference.json``: Resemblyzer 0.1.4's own ``VoiceEncoder.embed_utterance`` (and
librosa's mel) on a formula waveform with formula weights, the reference ``tests/test_ge2e.py`` compares
``speechprompt/ge2e.py`` with. Run once, by hand, where librosa and the Resemblyzer wheel's source are importable::

    pip install --target /tmp/refpkgs librosa==0.10.2.post1
    pip download --no-deps -d /tmp/rzw resemblyzer==0.1.4 && unzip -q /tmp/rzw/*.whl -d /tmp/rzsrc
    PYTHONPATH=/tmp/rzsrc:/tmp/refpkgs .venv/bin/python scripts/ge2e_reference.py

webrtcvad (only ``preprocess_wav``'s silence trimming, which is not used) is stubbed out. Not part of the suite.
"""

import json
import sys
import types
from pathlib import Path

import torch

sys.modules.setdefault("webrtcvad", types.ModuleType("webrtcvad"))  # imported by resemblyzer.audio, unused here
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resemblyzer import VoiceEncoder, audio  # noqa: E402

from tests.ge2e_formula import formula_state, formula_wav  # noqa: E402


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ge2e_reference.json"
    tmp = Path("/tmp/ge2e_formula.pt")
    state = {k: torch.from_numpy(v) for k, v in formula_state().items()}
    torch.save({"model_state": {**state, "similarity_weight": torch.tensor([10.0]),
                                "similarity_bias": torch.tensor([-5.0])}}, tmp)
    enc = VoiceEncoder("cpu", verbose=False, weights_fpath=tmp)
    ref = {}
    for n in (9000, 36800):
        wav = formula_wav(n)
        embed, partials, slices = enc.embed_utterance(wav, return_partials=True)
        mel = audio.wav_to_mel_spectrogram(wav)
        ref[str(n)] = {"embed": embed.tolist(), "partials": int(len(partials)),
                       "slices": [[int(s.start) // 160, int(s.stop) // 160] for s in slices],
                       "mel_frames": int(mel.shape[0]), "mel_rows_0_5_40": mel[[0, 5, 40]].tolist()}
    out.write_text(json.dumps({"resemblyzer": "0.1.4", "librosa": __import__("librosa").__version__, **ref}) + "\n")
    sys.stdout.write(f"{out}\n")


if __name__ == "__main__":
    main()

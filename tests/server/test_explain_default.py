"""Explanations on the embedded default backbone and a demo task, over HTTP, with real human recordings
(alsa-utils): on a clip of a voice followed by noise, the `vad` demo's explanation of `speech` ranks a stretch of
the voice most important, and silencing the AUDIO of that stretch lowers the speech log-odds more than silencing the
last stretch, which lies in the noise (an independent check of the seconds mapping). Log-odds, not probabilities:
since 2026-12-05 (later the same day) the vad demo trained on voice + sound mixes is sure of `speech` on this clip
(0.9999), so silencing one of eight stretches moves the probability by under 0.005 but the log-odds by units.

A clip whose halves differ in kind is used because an explanation is a check of the mapping only where some stretch
matters: on the plain recordings the language-id demos' `en` moves by under 0.01 (v6) or 0.08 (v7) whichever
stretch is removed (docs/api.md), so which stretch ranks first there is noise (that test was retired with v5's demos).

Since v9 the edge gate drops 0.2 s or more of digital silence at a clip's end, so silencing the LAST stretch removes
it from what is encoded (as occlusion removes its units) rather than encoding zeros there; the comparison stands.

The check needs a clip the demo labels `speech`. Until v6 both Front_Center and Front_Left followed by Noise.wav were;
v7's first vad demo called Front_Left + Noise.wav `noise` (speech 0.15; the voice alone 1.00; docs/results.md, the
alsa-utils paragraph), a weakness of that demo on a test set that is measured, not tuned on, so the mapping is
checked on Front_Center's clip only."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechprompt.paths import default_path

from .http_helpers import WAV

pytestmark = pytest.mark.asyncio
ALSA = Path("/usr/share/sounds/alsa")
RECORDINGS = ("Front_Center.wav",)
TASK = "vad"


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV")
    return buf.getvalue()


def silenced(data: bytes, start: float, end: float) -> bytes:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    samples[int(start * rate):int(end * rate)] = 0.0
    return wav_bytes(samples, rate)


@pytest.mark.skipif(not (ALSA / RECORDINGS[0]).exists() or not (ALSA / "Noise.wav").exists(),
                    reason="alsa-utils recordings missing")
async def test_silencing_the_most_important_stretch_costs_more(make_server):
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(default_path("prompts_store")))
    noise, rate = sf.read(ALSA / "Noise.wav", dtype="float32")
    for name in RECORDINGS:
        voice, r0 = sf.read(ALSA / name, dtype="float32")
        assert r0 == rate
        voice_s = len(voice) / rate  # the voice ends here; the noise fills the rest
        data = wav_bytes(np.concatenate([voice, noise]), rate)
        r = await srv.client.post(f"/v1/tasks/{TASK}/classify?explain=true&explain_spans=8", content=data,
                                  headers=WAV)
        assert r.status_code == 200, r.text
        body = r.json()
        ex = body["explanation"]
        assert ex["label"] == body["label"] == "speech", (name, body["scores"])
        assert ex["score"] == pytest.approx(body["scores"][0]["score"])
        spans = ex["spans"]
        assert spans[0]["start"] == 0.0 and spans[-1]["end"] == pytest.approx(body["audio"]["duration_s"], abs=1e-3)
        imp = np.array([s["importance"] for s in spans])
        most, last = spans[int(np.argmax(imp))], spans[-1]
        assert (most["start"] + most["end"]) / 2 < voice_s <= last["start"], (name, spans)
        after = {}
        for which, s in (("most", most), ("last", last)):
            got = await srv.client.post(f"/v1/tasks/{TASK}/classify?top_k=1000",
                                        content=silenced(data, s["start"], s["end"]), headers=WAV)
            after[which] = {x["label"]: x["score"] for x in got.json()["scores"]}["speech"]
        log_odds = {k: math.log(p) - math.log1p(-min(p, 1 - 1e-7)) for k, p in after.items()}
        assert log_odds["most"] < log_odds["last"] - 1.0, (name, after, imp)

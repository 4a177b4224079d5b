"""Explanations on the embedded default backbone and a demo task, over HTTP, with real human recordings
(alsa-utils): silencing the AUDIO of the stretch the explanation ranks most important lowers the explained
label's score more than silencing the least important one (an independent check of the seconds mapping).

The task is ``language-id``, whose label for these recordings is right (``en``): ``commands-en`` was used until its
demo moved to 32x the suite's clips (2026-12-04), but "Front Center" is no command, so its label there is arbitrary
and its explanation need not agree with silencing the audio (the 32x demo's does not on Front_Center)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechprompt.paths import default_path

from .http_helpers import WAV

pytestmark = pytest.mark.asyncio
ALSA = Path("/usr/share/sounds/alsa")
RECORDINGS = ("Front_Center.wav", "Front_Left.wav")
TASK = "language-id"


def silenced(data: bytes, start: float, end: float) -> bytes:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    samples[int(start * rate):int(end * rate)] = 0.0
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV")
    return buf.getvalue()


@pytest.mark.skipif(not (ALSA / RECORDINGS[0]).exists(), reason="alsa-utils recordings missing")
async def test_silencing_the_most_important_stretch_costs_more(make_server):
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(default_path("prompts_store")))
    for name in RECORDINGS:
        data = (ALSA / name).read_bytes()
        r = await srv.client.post(f"/v1/tasks/{TASK}/classify?explain=true&explain_spans=8", content=data,
                                  headers=WAV)
        assert r.status_code == 200, r.text
        body = r.json()
        ex = body["explanation"]
        assert ex["label"] == body["label"] and ex["score"] == pytest.approx(body["scores"][0]["score"])
        spans = ex["spans"]
        assert spans[0]["start"] == 0.0 and spans[-1]["end"] == pytest.approx(body["audio"]["duration_s"], abs=1e-3)
        imp = np.array([s["importance"] for s in spans])
        most, least = spans[int(np.argmax(imp))], spans[int(np.argmin(imp))]
        after = {}
        for which, s in (("most", most), ("least", least)):
            got = await srv.client.post(f"/v1/tasks/{TASK}/classify?top_k=1000",
                                        content=silenced(data, s["start"], s["end"]), headers=WAV)
            after[which] = {x["label"]: x["score"] for x in got.json()["scores"]}[ex["label"]]
        assert ex["label"] == "en", (name, body["scores"][:3])
        assert after["most"] < after["least"], (name, after, imp)

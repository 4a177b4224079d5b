"""The default backbone's level floor over HTTP (speechprompt/level.py): a quiet recording of a real voice (alsa-utils,
a test set) is answered exactly as the same recording at the floor's level, a loud one as before, `/v1/backbone`
names the floor, and the units cache keys on the runtime's units key, not the fingerprint alone."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from speechprompt.backbone import Backbone
from speechprompt.paths import default_path
from speechprompt.runtime import Runtime

from .http_helpers import WAV

pytestmark = pytest.mark.asyncio
CLIP = Path("/usr/share/sounds/alsa/Front_Center.wav")


def wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="FLOAT")  # float: the scaled samples arrive as they are
    return buf.getvalue()


@pytest.mark.skipif(not CLIP.exists(), reason="alsa-utils recordings missing")
async def test_quiet_recording_is_answered_as_at_the_floor(make_server):
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(default_path("prompts_store")))
    info = (await srv.client.get("/v1/backbone")).json()
    assert info["encoder"]["level_floor"] == {"peak": 0.25, "max_gain_db": 40.0}
    runtime = srv.service.runtime
    assert srv.service.batcher.units_key == runtime.units_key != runtime.fingerprint == info["fingerprint"]
    voice, rate = sf.read(CLIP, dtype="float32")
    # the floor sees the 16 kHz clip's peak; sent at 16 kHz as float, the samples reach the encoder unchanged
    voice = soxr.resample(voice, rate, 16000).astype(np.float32)
    peak = float(np.abs(voice).max())
    assert peak > 0.25  # the recording itself is above the floor
    scores = {}
    for name, gain in (("quiet", 0.02 / peak), ("at_floor", 0.25 / peak)):
        r = await srv.client.post("/v1/classify?tasks=gender,vad,language-id&top_k=100",
                                  content=wav(voice * np.float32(gain), 16000), headers=WAV)
        assert r.status_code == 200, r.text
        scores[name] = {t["task"]: {s["label"]: s["score"] for s in t["scores"]} for t in r.json()["results"]}
    for task, got in scores["quiet"].items():  # 22 dB under the floor: raised to it, so the same answer
        assert got == pytest.approx(scores["at_floor"][task], abs=2e-3), task
    # the same weights without the floor (v7): other units for the quiet clip, the same for the clip as recorded
    v7 = Backbone.load(default_path("models/default"))
    v7.encoder.cfg = dataclasses.replace(v7.encoder.cfg, level_floor=None)
    quiet = voice * np.float32(0.02 / peak)
    (q7, a7), (q8, a8) = (Runtime(b).extract_units([quiet, voice]) for b in (v7, runtime.backbone))
    assert not torch.equal(q7.units, q8.units) and torch.equal(a7.units, a8.units)

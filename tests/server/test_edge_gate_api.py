"""The default backbone's edge gate over HTTP (speechprompt/edge_gate.py, v9): a real voice (alsa-utils, a test set)
sent with digital silence around it is answered exactly as the recording itself, as 16-bit PCM and as float, at 16 kHz
and at its own 48 kHz (the server's resampler keeps the zeros zeros: speechprompt/audio_sink.py);
`/v1/backbone` names the gate, and an explanation's seconds lie on the speech, not on the silence the gate dropped."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from speechprompt.paths import default_path

from .http_helpers import WAV

pytestmark = pytest.mark.asyncio
CLIP = Path("/usr/share/sounds/alsa/Front_Center.wav")
TASKS = "gender,vad,language-id,commands-en"


def wav(samples: np.ndarray, subtype: str, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


async def scores(srv, data: bytes, extra: str = "") -> dict:
    r = await srv.client.post(f"/v1/classify?tasks={TASKS}&top_k=100{extra}", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    return {t["task"]: t for t in r.json()["results"]} | {"_audio": r.json()["audio"]}


@pytest.mark.skipif(not CLIP.exists(), reason="alsa-utils recordings missing")
async def test_digital_silence_around_a_voice_changes_no_score(make_server):
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(default_path("prompts_store")))
    info = (await srv.client.get("/v1/backbone")).json()
    assert info["encoder"]["edge_gate"] == {"threshold": 0.0, "min_run_s": 0.2, "min_keep_s": 0.1}
    recorded, rate = sf.read(CLIP, dtype="float32")  # 48 kHz 16-bit, as a microphone app writes it
    loud = np.flatnonzero(recorded)
    recorded = recorded[loud[0]:loud[-1] + 1]  # cut tight at 48 kHz too (the file begins with a few zero samples)
    voice = soxr.resample(recorded, rate, 16000).astype(np.float32)
    assert voice[0] != 0 and voice[-1] != 0  # cut tight
    silence = np.zeros(16000, np.float32)
    sent = {  # tight and padded with 1 s of zeros before and 0.5 s after: as 16 kHz float, 16 kHz and 48 kHz PCM
        "float 16 kHz": (wav(voice, "FLOAT"), wav(np.concatenate([silence, voice, silence[:8000]]), "FLOAT")),
        "PCM 16 kHz": (wav(voice, "PCM_16"), wav(np.concatenate([silence, voice, silence[:8000]]), "PCM_16")),
        "PCM 48 kHz": (wav(recorded, "PCM_16", rate),  # resampled by the server: zeros must stay zeros (audio_sink)
                       wav(np.concatenate([np.zeros(rate, np.float32), recorded, np.zeros(rate // 2, np.float32)]),
                           "PCM_16", rate)),
    }
    for how, (tight_bytes, padded_bytes) in sent.items():
        tight, padded = await scores(srv, tight_bytes), await scores(srv, padded_bytes)
        for task, got in padded.items():
            if task == "_audio":
                continue
            assert got["label"] == tight[task]["label"], (how, task)
            want = {s["label"]: s["score"] for s in tight[task]["scores"]}
            assert {s["label"]: s["score"] for s in got["scores"]} == pytest.approx(want, abs=1e-6), (how, task)
        assert padded["_audio"]["frames"] == tight["_audio"]["frames"]  # the same frames were encoded
    # too little silence for the gate (0.1 s < min_run_s): the clip is encoded as sent, and still answered
    short = await scores(srv, wav(np.concatenate([silence[:1600], voice]), "FLOAT"))
    tight = await scores(srv, wav(voice, "FLOAT"))
    assert short["_audio"]["frames"] > tight["_audio"]["frames"]  # the 0.1 s was encoded too
    # the explanation's stretches tile the voice (1.0 s .. 1.0 s + its length), not the dropped silence
    body = await scores(srv, wav(np.concatenate([silence, voice, silence]), "FLOAT"), "&explain=true&explain_spans=4")
    spans = body["vad"]["explanation"]["spans"]
    assert spans[0]["start"] == pytest.approx(1.0, abs=1e-4)
    assert spans[-1]["end"] == pytest.approx(1.0 + len(voice) / 16000, abs=1e-4)

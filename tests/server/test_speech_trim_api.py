"""A task whose package names a speech trim (server/speech_trims.py) over HTTP, on the default bundle and demo vad
prompts: a real voice (alsa-utils, a test set) with room tone around it is scored on the part the trim keeps, exactly
as that part sent alone to the same prompts without a trim; tasks with and without a trim share one request; a server
without the VAD weights answers the trimmed task 503 and the others 200; a wrong weights file fails start-up."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from clients.models import ClassifyResult
from speechprompt.package import read_package, with_metadata
from speechprompt.paths import default_path
from speechprompt.speech_trim import SpeechTrim

from .http_helpers import WAV

pytestmark = pytest.mark.asyncio
CLIP = Path("/usr/share/sounds/alsa/Front_Center.wav")
needs_clip = pytest.mark.skipif(not CLIP.exists(), reason="alsa-utils recordings missing")


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def voice() -> np.ndarray:
    recorded, rate = sf.read(CLIP, dtype="float32")
    loud = np.flatnonzero(recorded)
    return soxr.resample(recorded[loud[0]:loud[-1] + 1], rate, 16000).astype(np.float32)


def room_tone(v: np.ndarray, seconds: float = 1.0, peak: float = 1e-3) -> np.ndarray:
    """``v`` with white noise at ``peak`` (-60 dBFS) before and after: a microphone's silence."""
    n = int(seconds * 16000)
    noise = np.random.default_rng(0).uniform(-peak, peak, 2 * n).astype(np.float32)
    return np.concatenate([noise[:n], v, noise[n:]])


def store_with_trim(tmp_path: Path) -> Path:
    """The demo store plus ``vad-trim`` (the vad demo's tensors naming the default trim), ``vad-trim2`` (a 0.1 s
    margin), ``vad-rec`` (the default trim, for whole recordings only) and ``vad-whole`` (the same tensors, no
    trim)."""
    store = tmp_path / "store"
    shutil.copytree(default_path("prompts_store"), store)
    version = (store / "vad" / "CURRENT").read_text().strip()
    pkg = read_package((store / "vad" / f"{version}.safetensors").read_bytes())
    for name, trim in (("vad-trim", SpeechTrim().to_dict()), ("vad-trim2", {"margin_s": 0.1}),
                       ("vad-rec", {"when": "recording"}), ("vad-whole", {})):
        new = with_metadata(pkg, task=name, speech_trim=trim)
        (store / name).mkdir()
        (store / name / f"{new.version}.safetensors").write_bytes(new.data)
        (store / name / "CURRENT").write_text(new.version + "\n")
    return store


async def classify(srv, task: str, data: bytes, extra: str = "") -> dict:
    r = await srv.client.post(f"/v1/tasks/{task}/classify?top_k=100{extra}", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    return r.json()


def scores(body: dict) -> dict:
    return {s["label"]: s["score"] for s in body["scores"]}


@needs_clip
async def test_a_trimmed_task_scores_the_voice_without_its_room_tone(make_server, tmp_path):
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store_with_trim(tmp_path)))
    v = voice()
    sent = room_tone(v)
    trimmed = await classify(srv, "vad-trim", wav(sent))
    facts = trimmed["speech_trim"]
    assert facts["cut"] is True and ClassifyResult.from_json(trimmed).speech_trim == facts  # the Python client's view
    # the voice lies at 1.0 s .. 1.0 s + its length; the trim keeps a 0.25 s margin around it (32 ms chunks)
    assert 0.7 <= facts["start_s"] <= 1.0 and 1.0 + len(v) / 16000 <= facts["end_s"] <= 1.35 + len(v) / 16000
    start, stop = round(facts["start_s"] * 16000), round(facts["end_s"] * 16000)
    alone = await classify(srv, "vad-whole", wav(sent[start:stop]))  # that part alone, no trim
    assert "speech_trim" not in alone
    assert scores(trimmed) == pytest.approx(scores(alone), abs=1e-6) and trimmed["label"] == alone["label"]
    whole = await classify(srv, "vad-whole", wav(sent))
    assert scores(whole) != pytest.approx(scores(trimmed), abs=1e-4)  # the room tone changed the untrimmed answer
    # a tight clip: nothing to cut, the same answer as without a trim
    tight_trim, tight_whole = await classify(srv, "vad-trim", wav(v)), await classify(srv, "vad-whole", wav(v))
    assert tight_trim["speech_trim"] == {"start_s": 0.0, "end_s": round(len(v) / 16000, 6), "cut": False, "applied": True}
    assert scores(tight_trim) == pytest.approx(scores(tight_whole), abs=1e-6)
    # noise alone has no speech: scored whole
    noise = room_tone(np.zeros(0, np.float32))
    assert (await classify(srv, "vad-trim", wav(noise)))["speech_trim"]["cut"] is False
    # the explanation's stretches lie on the part scored, in the seconds of the clip as sent
    spans = (await classify(srv, "vad-trim", wav(sent), "&explain=true&explain_spans=4"))["explanation"]["spans"]
    assert spans[0]["start"] >= facts["start_s"] - 1e-6 and spans[-1]["end"] <= facts["end_s"] + 1e-6
    assert (await srv.client.get("/v1/backbone")).json()["speech_trim"] == {"available": True}
    info = (await srv.client.get("/v1/tasks/vad-trim")).json()
    assert info["speech_trim"] == SpeechTrim().to_dict()
    assert (await srv.client.get("/v1/tasks/vad-whole")).json()["speech_trim"] is None


@needs_clip
async def test_tasks_with_and_without_a_trim_answer_in_one_request_as_alone(make_server, tmp_path):
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store_with_trim(tmp_path)))
    tasks = ("vad-trim", "vad-trim2", "vad-whole", "gender")
    for sent in (room_tone(voice()), voice()):  # three parts (two trims cut differently, the whole clip); then one
        data = wav(sent)
        r = await srv.client.post(f"/v1/classify?tasks={','.join(tasks)}&top_k=100&explain=true&explain_spans=3",
                                  content=data, headers=WAV)
        assert r.status_code == 200, r.text
        got = {t["task"]: t for t in r.json()["results"]}
        for task in tasks:
            alone = await classify(srv, task, data, "&explain=true&explain_spans=3")
            assert scores(got[task]) == pytest.approx(scores(alone), abs=1e-6), task
            assert got[task].get("speech_trim") == alone.get("speech_trim"), task
            assert [s["start"] for s in got[task]["explanation"]["spans"]] == pytest.approx(
                [s["start"] for s in alone["explanation"]["spans"]], abs=1e-6), task
        assert "speech_trim" not in got["gender"] and "speech_trim" not in got["vad-whole"]
        one, two = got["vad-trim"]["speech_trim"], got["vad-trim2"]["speech_trim"]
        if len(sent) > len(voice()):
            assert one["cut"] and two["cut"] and two["start_s"] - one["start_s"] == pytest.approx(0.15, abs=1e-6)
        else:  # a tight clip: every task on the whole clip, one part
            assert not one["cut"] and not two["cut"]
            assert scores(got["vad-trim"]) == pytest.approx(scores(got["vad-whole"]), abs=1e-6)
    await drained(srv, tasks)


async def drained(srv, tasks) -> None:
    """Every lease of ``tasks`` came back (a job releases its leases on the model thread just after its answer)."""
    import asyncio

    for _ in range(200):
        if all(srv.service.registry.describe(t)["in_flight"] == 0 for t in tasks):
            return
        await asyncio.sleep(0.01)
    raise AssertionError({t: srv.service.registry.describe(t)["in_flight"] for t in tasks})


@needs_clip
async def test_without_vad_weights_only_the_trimmed_task_is_refused(make_server, tmp_path):
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store_with_trim(tmp_path)),
                            speech_trim_weights=tmp_path / "absent.safetensors")
    data = wav(room_tone(voice()))
    assert (await srv.client.get("/v1/backbone")).json()["speech_trim"] == {"available": False}
    r = await srv.client.post("/v1/tasks/vad-trim/classify", content=data, headers=WAV)
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/problem+json")
    assert "speech_trim=package" in r.json()["detail"]
    problem = r.json()
    assert problem["type"] == "/problems/speech_trim_unavailable" and "SPEECHPROMPT_SPEECH_TRIM_WEIGHTS" in problem["accepted"]
    r = await srv.client.post("/v1/classify?tasks=vad-trim,gender", content=data, headers=WAV)
    assert r.status_code == 200, r.text
    got = {t["task"]: t for t in r.json()["results"]}
    assert got["vad-trim"]["error"]["type"] == "/problems/speech_trim_unavailable" and got["gender"]["label"] in ("female", "male")
    # speech_trim=on: every task is refused; speech_trim=off: the task whose package names a trim answers untrimmed
    r = await srv.client.post("/v1/classify?tasks=vad-whole,gender&speech_trim=on", content=data, headers=WAV)
    assert r.status_code == 200
    assert all(t["error"]["type"] == "/problems/speech_trim_unavailable" for t in r.json()["results"])
    assert "speech_trim=off" in r.json()["results"][0]["error"]["accepted"]
    assert "speech_trim=on" in r.json()["results"][0]["error"]["detail"]
    r = await srv.client.post("/v1/tasks/vad-trim/classify?speech_trim=off", content=data, headers=WAV)
    assert r.status_code == 200 and "speech_trim" not in r.json()
    # the leases of the refused tasks were released: the tasks still answer (and drain) after the refusals
    await drained(srv, ("vad-trim", "vad-whole", "gender"))


async def test_a_file_that_is_not_silero_weights_fails_start_up(make_server, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors at all")
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(tmp_path / "store"),
                            speech_trim_weights=bad, wait=False)
    with pytest.raises(Exception, match="start-up failed .ValueError. while loading the speech-trim weights"):
        await srv.service.wait_ready(20)
    assert srv.service.state == "failed" and "SPEECHPROMPT_SPEECH_TRIM_WEIGHTS" in srv.service.failure


def test_the_script_names_and_removes_a_trim_in_a_store_and_keeps_the_tensors(tmp_path):
    import subprocess
    import sys

    store = tmp_path / "store"
    shutil.copytree(default_path("prompts_store") / "vad", store / "vad")
    first = (store / "vad" / "CURRENT").read_text().strip()
    script = [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "set_speech_trim.py"),
              "--store", str(store), "--task", "vad"]

    def current():
        version = (store / "vad" / "CURRENT").read_text().strip()
        return version, read_package((store / "vad" / f"{version}.safetensors").read_bytes())

    first_when = current()[1].meta.trim_when
    for trim, when, want, want_when in (("0.3:0.1", [], SpeechTrim(0.3, 0.1), first_when),  # --when kept
                                        ("none", [], None, "always"),
                                        ("0.3:0.1", [], SpeechTrim(0.3, 0.1), "always"),
                                        ("0.3:0.1", ["--when", "recording"], SpeechTrim(0.3, 0.1), "recording")):
        r = subprocess.run(script + ["--trim", trim, *when], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        version, pkg = current()
        assert pkg.meta.trim == want and pkg.meta.trim_when == want_when, (trim, when)
        assert pkg.version == version and version in r.stdout
        assert ("for recordings" in r.stdout) is (want_when == "recording" and want is not None)
    assert (store / "vad" / f"{first}.safetensors").exists()  # kept: a running server may serve it
    original = read_package((store / "vad" / f"{first}.safetensors").read_bytes())
    assert all(torch.equal(getattr(pkg, n), getattr(original, n)) for n in ("deep_key", "verbalizer", "separator"))
    back = original.meta.trim
    r = subprocess.run(script + ["--trim", f"{back.threshold}:{back.margin_s}" if back else "none", "--prune",
                                 "--when", original.meta.trim_when], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert current()[0] == first and sorted(p.stem for p in (store / "vad").glob("*.safetensors")) == [first]
    r = subprocess.run(script + ["--trim", "0.5"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "THRESHOLD:MARGIN_S" in r.stderr and current()[0] == first
    r = subprocess.run(script + ["--trim", "none", "--when", "recording"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--trim none removes the trim" in r.stderr and current()[0] == first


@needs_clip
async def test_a_part_that_cannot_be_queued_releases_every_lease(make_server, tmp_path, monkeypatch):
    """Two parts (trimmed, whole): the second submit is refused (queue full): 429, the first job is cancelled, and no
    task keeps a lease (the first part's through its job, the second's here)."""
    from server.errors import QueueFull

    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store_with_trim(tmp_path)))
    submit, calls = srv.service.batcher.submit, []

    def refuse_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise QueueFull("full (test)", retry_after_s=1.0)
        return submit(*args, **kwargs)

    monkeypatch.setattr(srv.service.batcher, "submit", refuse_second)
    r = await srv.client.post("/v1/classify?tasks=vad-trim,gender", content=wav(room_tone(voice())), headers=WAV)
    assert r.status_code == 429 and r.json()["type"] == "/problems/queue_full" and len(calls) == 2
    assert calls[0] != calls[1]  # two parts: two clips
    await drained(srv, ("vad-trim", "gender"))
    monkeypatch.setattr(srv.service.batcher, "submit", submit)
    assert (await classify(srv, "vad-trim", wav(room_tone(voice()))))["speech_trim"]["cut"] is True


@needs_clip
async def test_the_request_turns_the_trim_on_or_off_for_every_task(make_server, tmp_path):
    """``speech_trim=on`` trims a task whose package names no trim (with the default trim: the same answer as the
    package that names it), ``off`` scores a task whose package names one on the whole clip, a bad value is a 400
    problem; without VAD weights ``on`` is a 503 for every task and ``off`` answers."""
    srv = await make_server(bundle_dir=default_path("models/default"), store=str(store_with_trim(tmp_path)))
    data = wav(room_tone(voice()))
    named = await classify(srv, "vad-trim", data)
    on = await classify(srv, "vad-whole", data, "&speech_trim=on")
    assert on["speech_trim"] == named["speech_trim"] and on["speech_trim"]["cut"] is True
    assert scores(on) == pytest.approx(scores(named), abs=1e-6) and on["timings"]["speech_trim_ms"] > 0
    off = await classify(srv, "vad-trim", data, "&speech_trim=off")
    whole = await classify(srv, "vad-whole", data)
    assert "speech_trim" not in off and scores(off) == pytest.approx(scores(whole), abs=1e-6)
    assert off["timings"]["speech_trim_ms"] == 0.0
    package = await classify(srv, "vad-trim", data, "&speech_trim=package")
    assert package["speech_trim"] == named["speech_trim"]
    # a trim for whole recordings: applied when the request says speech_trim=recording (or on), not by default
    plain = await classify(srv, "vad-rec", data)
    assert "speech_trim" not in plain and scores(plain) == pytest.approx(scores(whole), abs=1e-6)
    for mode in ("recording", "on"):
        rec = await classify(srv, "vad-rec", data, f"&speech_trim={mode}")
        assert rec["speech_trim"] == named["speech_trim"] and scores(rec) == pytest.approx(scores(named), abs=1e-6)
    r = await srv.client.post("/v1/classify?tasks=vad-rec,vad-trim,gender&top_k=100&speech_trim=recording",
                              content=data, headers=WAV)
    got = {t["task"]: t for t in r.json()["results"]}
    assert got["vad-rec"]["speech_trim"] == got["vad-trim"]["speech_trim"] == named["speech_trim"]
    assert "speech_trim" not in got["gender"]  # its package names no trim
    assert (await srv.client.get("/v1/tasks/vad-rec")).json()["speech_trim"] == {**SpeechTrim().to_dict(),
                                                                                 "when": "recording"}
    r = await srv.client.post("/v1/classify?tasks=vad-whole,gender,vad-trim2&top_k=100&speech_trim=on", content=data,
                              headers=WAV)
    got = {t["task"]: t for t in r.json()["results"]}
    gender_trimmed = await classify(srv, "gender", data, "&speech_trim=on")
    assert got["gender"]["speech_trim"] == on["speech_trim"] == gender_trimmed["speech_trim"]
    assert scores(got["gender"]) == pytest.approx(scores(gender_trimmed), abs=1e-6)
    assert got["vad-trim2"]["speech_trim"]["start_s"] - on["speech_trim"]["start_s"] == pytest.approx(0.15, abs=1e-6)
    r = await srv.client.post("/v1/tasks/vad-whole/classify?speech_trim=yes", content=data, headers=WAV)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    assert "speech_trim" in r.text and "package|recording|on|off" in r.text, r.text
    await drained(srv, ("vad-whole", "gender", "vad-trim2", "vad-trim", "vad-rec"))

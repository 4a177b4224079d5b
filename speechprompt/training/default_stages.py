"""The stage files of ``build-default`` (``training/build_default.py``): clips and their metadata in ``.npz`` files,
the dense model's features of a list of clips (and of their tape-speed copies), the pitch frames next to the
embedding features, the digest of the dense model a stage used, and the train / validation split of the clips the
unit LM reads (shared with ``build-pgslm --stage-work``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from speechprompt.pitch import PitchConfig, pitch_features


def save_clips(path: Path, clips: list[np.ndarray], meta: list[dict]) -> None:
    """Clips ``[N_i]`` f32 + one metadata dict each -> one ``.npz`` (written to a temporary name, then renamed)."""
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, audio=np.concatenate(clips) if clips else np.zeros(0, np.float32), lengths=lengths,
             meta=np.array(json.dumps(meta)))
    tmp.replace(path)


def load_clips(path: Path) -> tuple[list[np.ndarray], list[dict]]:
    """:func:`save_clips`' file -> (clips, metadata); no pickle is read."""
    z = np.load(path, allow_pickle=False)
    ends = np.cumsum(z["lengths"])
    audio = z["audio"]
    return [audio[e - n:e] for e, n in zip(ends, z["lengths"], strict=True)], json.loads(str(z["meta"]))


def lm_valid_real(real_meta: list[dict]) -> list[int]:
    """Indices of the real clips held out to validate the unit LM: every 20th clip, speech only (also the pGSLM's
    split on these stage files, ``build_pgslm.stage_corpus``)."""
    return [i for i, m in enumerate(real_meta) if i % 20 == 19 and m.get("kind") == "speech"]


def state_digest(state: dict) -> str:
    """First 16 hex digits of the SHA-256 over a state dict's names and tensor bytes (the dense model a stage used)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def with_pitch(feats: list, clips: list, pitch: PitchConfig, path: Path, say: Callable[[str], None]) -> list:
    """``feats[i] [E_i, D]`` -> ``[E_i, D + 2]``: each clip's pitch frames appended (computed once, saved to ``path``)."""
    if not path.exists():
        rows, t0 = [], time.time()
        for i, (f, c) in enumerate(zip(feats, clips, strict=True)):
            rows.append(pitch_features(torch.from_numpy(np.asarray(c, dtype=np.float32)), f.shape[0], pitch))
            if i % 10000 == 0:
                say(f"pitch {i}/{len(clips)} ({time.time() - t0:.0f}s)")
        torch.save(rows, path)
    rows = torch.load(path, weights_only=True)
    return [torch.cat([f, p], 1) for f, p in zip(feats, rows, strict=True)]


def stage_corpus(work: str | Path) -> tuple[list[np.ndarray], list[int], list[int], dict]:
    """The clips ``build-default``'s unit LM was trained on, from its stage files in ``work`` (``tts.npz``,
    ``real.npz``, ``twins.npz``): ``(clips, train_idx, valid_idx, facts)``, split as that build splits them
    (validation = the TTS validation utterances and their sox twins + every 20th real speech clip; training = the
    rest, channel twins included), so a pGSLM can read the same TTS + real speech as the GSLM default.
    Raises ``FileNotFoundError`` when a stage file is missing (run ``build-default`` first)."""
    work = Path(work)
    tts, tts_meta = load_clips(work / "tts.npz")
    real, real_meta = load_clips(work / "real.npz")
    twins, _ = load_clips(work / "twins.npz")
    clips = tts + real + twins
    valid = {i for i, m in enumerate(tts_meta) if m["valid"]}
    valid |= {len(tts) + i for i in lm_valid_real(real_meta)}
    train_idx = [i for i in range(len(clips)) if i not in valid]
    if not valid:  # a tiny build (--small) may have no validation utterance: the last 5 %, as build-default does
        valid, train_idx = set(train_idx[-max(1, len(train_idx) // 20):]), train_idx[: -max(1, len(train_idx) // 20)]
    hours = lambda idx: round(sum(len(clips[i]) for i in idx) / 16000 / 3600, 3)  # noqa: E731
    facts = {"clips": "build-default stage files (TTS + sox twins, real train speakers, channel twins)",
             "stage_work": str(work), "train_utterances": len(train_idx), "valid_utterances": len(valid),
             "train_hours": hours(train_idx), "valid_hours": hours(sorted(valid))}
    return clips, train_idx, sorted(valid), facts


def encode_clips(enc, clips: list[np.ndarray], label: str, say: Callable[[str], None]) -> list:
    """Features ``[E_i, D]`` of ``clips`` ([N_i] f32 @16 kHz) from the frozen dense model ``enc`` (its ``extract``), in
    batches of 32 clips of similar length (little padding), in the clips' order; progress every 3,200 clips."""
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
    feats: list = [None] * len(clips)
    t0 = time.time()
    for s in range(0, len(order), 32):
        idx = order[s:s + 32]
        for i, f in zip(idx, enc.extract([torch.from_numpy(np.asarray(clips[i])) for i in idx]), strict=True):
            feats[i] = f.clone()
        if s % 3200 == 0:
            say(f"{label} {s}/{len(clips)} ({time.time() - t0:.0f}s)")
    return feats


def speed_features(clips: list[np.ndarray], speed: float, enc, path: Path, say: Callable[[str], None]) -> list:
    """Features ``[E_i, D]`` of ``clips`` ([N_i] f32 @16 kHz) played at tape speed ``speed``
    (``sound_variants.tape_speed``: ``speed`` > 1 faster and higher) by the frozen dense model ``enc``
    (``SpeechEmbeddingEncoder`` or ``WhisperEncoder``; with a pitch stream its ``extract`` appends the pitch frames,
    D + 2). Computed
    once and saved to ``path`` (``torch.save`` of tensors, read back with ``weights_only``); the copies' audio is not
    kept. Raises ``ValueError`` for a speed that is not a finite number > 0."""
    from speechprompt.training.sound_variants import tape_speed

    if not path.exists():
        feats = encode_clips(enc, [tape_speed(c, speed) for c in clips], f"speed {speed:g}: features", say)
        tmp = path.with_suffix(".tmp")
        torch.save(feats, tmp)
        tmp.replace(path)
    return torch.load(path, weights_only=True)

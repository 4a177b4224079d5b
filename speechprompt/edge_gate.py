"""An edge gate before the dense model: near-silence before the first and after the last sound of a clip is dropped.

The corpus's clips are cut tight; a recording a person makes is not. Google's speech_embedding windows are 0.775 s long
and centred on the clip's ends (``speech_embedding.SpeechEmbeddingConfig.pad``), so a second of silence before the
speech gives the unit LM other units at the sequence's edges, and a vad, language-id or gender prompt another label
(docs/results.md, "Silence and room tone around a recording"). A bundle may name a gate in its encoder settings
(``backbone.json`` ``encoder.edge_gate``): a clip's leading run of samples with ``|x| <= threshold`` is dropped when it
is at least ``min_run_s`` long, and so is its trailing run; shorter quiet edges stay, so a clip cut tight is passed
through bit for bit (a tight clip's edges hold a few quiet samples, and dropping even one or two shifts the dense
model's 80 ms grid and changes ~1 % of language-id's labels), and a clip padded with digital zeros (``threshold`` 0)
gets the units of the clip without them. The clip is also passed unchanged when no sample is above the threshold
(silence stays silence) or when less than ``min_keep_s`` would remain (one click in a silent file). The gate is per
clip the encoder sees (a whole request, a long-audio window, a stream's window) and runs before the level floor
(``level.py``). Like the floor it is a setting, not a weight: it moves ``settings_digest`` and the units-cache key,
not the fingerprint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from numbers import Real

import torch
from torch import Tensor

SAMPLE_RATE = 16000  # the rate of the clips it reads (speech_embedding's; the server resamples to it)


@dataclass(frozen=True)
class EdgeGate:
    """``threshold``: the level (full scale = 1.0) a sample must exceed to count as sound, in [0, 0.1];
    ``min_run_s``: the shortest quiet edge (seconds, in [0, 10]) that is dropped; ``min_keep_s``: the shortest clip
    (seconds, in (0, 10]) the gate leaves. Raises ``ValueError`` outside those."""

    threshold: float = 0.0
    min_run_s: float = 0.2
    min_keep_s: float = 0.1

    def __post_init__(self):
        values = (self.threshold, self.min_run_s, self.min_keep_s)
        if any(isinstance(v, bool) or not isinstance(v, Real) for v in values):
            raise ValueError(f"edge_gate.threshold, min_run_s and min_keep_s must be numbers; got {values!r}")
        for name in ("threshold", "min_run_s", "min_keep_s"):  # 0 and 0.0 are one setting (one units key)
            object.__setattr__(self, name, float(getattr(self, name)))
        if not 0.0 <= self.threshold <= 0.1:
            raise ValueError(f"edge_gate.threshold must be in [0, 0.1] (full scale = 1.0); got {self.threshold}")
        if not 0.0 <= self.min_run_s <= 10.0:
            raise ValueError(f"edge_gate.min_run_s must be in [0, 10] seconds; got {self.min_run_s}")
        if not 0.0 < self.min_keep_s <= 10.0:
            raise ValueError(f"edge_gate.min_keep_s must be in (0, 10] seconds; got {self.min_keep_s}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EdgeGate:
        """``backbone.json``'s ``encoder.edge_gate`` object. Raises ``ValueError`` for other keys or values."""
        if not isinstance(d, dict) or set(d) != {"threshold", "min_run_s", "min_keep_s"}:
            raise ValueError(f"edge_gate must be an object with 'threshold', 'min_run_s' and 'min_keep_s'; got {d!r}")
        return cls(**d)

    @classmethod
    def parse(cls, text: str) -> EdgeGate | None:
        """A command line's ``THRESHOLD:MIN_RUN_S`` (``0:0.2``, v9's) or ``none``/empty -> the gate or None.
        Raises ``ValueError`` for anything else."""
        pair = parse_pair(text, "an edge gate is THRESHOLD:MIN_RUN_S (e.g. 0:0.2) or none")
        return None if pair is None else cls(*pair)

    def bounds(self, wav: Tensor) -> tuple[int, int]:
        """``[N]`` samples at 16 kHz -> ``(start, stop)``, the slice the gate keeps (``(0, N)`` when it keeps all).
        Raises ``ValueError`` for a tensor that is not 1-D (a caller bug)."""
        if wav.dim() != 1:
            raise ValueError(f"the edge gate reads one clip [N]; got shape {tuple(wav.shape)}")
        n = int(wav.shape[0])
        loud = wav.abs() > self.threshold  # [N] bool; NaN compares False: a NaN sample is not sound
        if n == 0 or not bool(loud.any()):
            return 0, n
        start, stop = int(loud.byte().argmax()), n - int(loud.flip(0).byte().argmax())  # first and one past last
        run = round(self.min_run_s * SAMPLE_RATE)
        start = start if start >= run else 0  # a short quiet edge stays
        stop = stop if n - stop >= run else n
        if stop - start < round(self.min_keep_s * SAMPLE_RATE):
            return 0, n
        return start, stop

    def apply(self, wav: Tensor) -> Tensor:
        """``[N]`` f32 samples at 16 kHz -> ``[M]``, M <= N: the clip without its silent edges (the input object
        itself when nothing is dropped)."""
        start, stop = self.bounds(wav)
        return wav if (start, stop) == (0, wav.shape[0]) else wav[start:stop]


def parse_pair(text: str, usage: str) -> tuple[float, float] | None:
    """A command line's ``A:B`` -> two floats, ``none``/empty -> None (the spelling of the edge gate and the speech
    trim). Raises ``ValueError`` with ``usage`` for anything else."""
    if text.strip().lower() in ("", "none"):
        return None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a, b = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{usage}; got {text!r}") from None
    return a, b


def encoded_bounds(encoder_cfg: object, wav) -> tuple[int, int]:
    """``(start, stop)`` of ``wav`` ``[N]`` (tensor or numpy) that an encoder with settings ``encoder_cfg`` reads: the
    whole clip unless they name an edge gate. The one reader of the gate for the units' seconds
    (``Backbone.encoded_span``) and a pGSLM's F0 track (``UnitExtractor.encoded_part``)."""
    x = torch.as_tensor(wav)
    gate = getattr(encoder_cfg, "edge_gate", None)
    return gate.bounds(x) if gate is not None else (0, int(x.shape[0]))


__all__ = ["EdgeGate", "encoded_bounds", "parse_pair"]

"""A speech trim before the dense model: room tone before the first and after the last speech of a clip is dropped.

v9's edge gate (``edge_gate.py``) drops digital silence, but a microphone never records zeros: a recording's edges hold
room tone, and a level threshold cannot tell room tone from a quiet onset (docs/results.md, "Silence and room tone
around a recording"). Silero VAD (``silero_vad.py``), trained on real speech and noise, can: the trim keeps from
``margin_s`` before the first 32 ms chunk that is sound to ``margin_s`` after the last one; a chunk is sound when its
speech probability reaches ``threshold`` or its peak is within ``loud_db`` of the clip's (silero gives shouts and
screams at a clip's edge low probabilities: a trim by probability alone cut loud game voices, docs/results.md). An
edge is cut only when what it drops is at least ``min_cut_s`` long, so a clip cut tight is passed through bit for bit;
a clip where no chunk reaches the threshold (music, noise, silence), one with a sample that is not finite, and one
where less than ``min_keep_s`` would remain are passed whole. It is not a bundle setting (as one, on every clip the
encoder reads, training included, it cost language-id and gender: docs/results.md, "A speech trim by Silero VAD for
room tone"). A task package may name it (``PackageMeta.speech_trim``): the server then scores that task on the trimmed
clip (``server/speech_trims.py``; the language-id and vad demos name it for whole recordings only: docs/results.md,
"The trim per request"). ``scripts/with_speech_trim.py`` runs a script with it after
the edge gate and before the level floor of every clip the encoder reads, and ``scripts/silence_check.py`` screens it
at serve time.
"""

from __future__ import annotations

import reprlib
from dataclasses import asdict, dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

from .edge_gate import parse_pair
from .silero_vad import CHUNK, SAMPLE_RATE, SileroVAD


@dataclass(frozen=True)
class SpeechTrim:
    """``threshold``: the speech probability (0, 1) a 32 ms chunk must reach to count as speech; ``margin_s``: seconds
    kept before the first and after the last speech chunk, in [0, 2]; ``min_cut_s``: the shortest edge (seconds, in
    [0, 10]) that is cut; ``min_keep_s``: the shortest clip (seconds, in [0.025, 10]: the encoder's shortest) the
    trim leaves; ``loud_db``: a chunk whose peak is at most this far (dB, in [-60, 0]) below the clip's peak is sound
    whatever its probability (None: probability alone). Raises ``ValueError`` outside those."""

    threshold: float = 0.5
    margin_s: float = 0.25
    min_cut_s: float = 0.2
    min_keep_s: float = 0.1
    loud_db: float | None = -20.0

    def __post_init__(self):
        names = ("threshold", "margin_s", "min_cut_s", "min_keep_s")
        values = tuple(getattr(self, k) for k in names)
        if any(isinstance(v, bool) or not isinstance(v, Real) for v in values):
            raise ValueError(f"speech_trim.{', '.join(names)} must be numbers; got {reprlib.repr(values)}")
        for name in names:  # 0 and 0.0 are one setting (one units key)
            object.__setattr__(self, name, float(getattr(self, name)))
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"speech_trim.threshold must be a probability in (0, 1); got {self.threshold}")
        if not 0.0 <= self.margin_s <= 2.0:
            raise ValueError(f"speech_trim.margin_s must be in [0, 2] seconds; got {self.margin_s}")
        if not 0.0 <= self.min_cut_s <= 10.0:
            raise ValueError(f"speech_trim.min_cut_s must be in [0, 10] seconds; got {self.min_cut_s}")
        if not 0.025 <= self.min_keep_s <= 10.0:
            raise ValueError(f"speech_trim.min_keep_s must be in [0.025, 10] seconds; got {self.min_keep_s}")
        if self.loud_db is not None:
            if isinstance(self.loud_db, bool) or not isinstance(self.loud_db, Real) or not -60.0 <= self.loud_db <= 0.0:
                raise ValueError(f"speech_trim.loud_db must be None or in [-60, 0] dB; got {reprlib.repr(self.loud_db)}")
            object.__setattr__(self, "loud_db", float(self.loud_db))

    def to_dict(self) -> dict:
        """The settings as a JSON object (``from_dict`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, partial: bool = False) -> SpeechTrim:
        """A task package's ``speech_trim`` metadata object (``to_dict``'s keys; with ``partial``, omitted keys take
        their defaults). Raises ``ValueError`` for other keys or values."""
        keys = {"threshold", "margin_s", "min_cut_s", "min_keep_s", "loud_db"}
        if not isinstance(d, dict) or not set(d) <= keys or (not partial and set(d) != keys):
            raise ValueError(f"speech_trim must be an object with {'some of ' if partial else ''}"
                             f"{sorted(keys)}; got {reprlib.repr(d)}")
        return cls(**d)

    @classmethod
    def parse(cls, text: str) -> SpeechTrim | None:
        """A command line's ``THRESHOLD:MARGIN_S`` (``0.5:0.25``) or ``none``/empty -> the trim or None. Raises
        ``ValueError`` for anything else."""
        pair = parse_pair(text, "a speech trim is THRESHOLD:MARGIN_S (e.g. 0.5:0.25) or none")
        return None if pair is None else cls(*pair)

    def bounds_from(self, probs: Tensor, wav: Tensor) -> tuple[int, int]:
        """``probs`` ``[ceil(N / 512)]`` (``SileroVAD``'s output for ``wav``, ``[N]`` samples at 16 kHz) -> ``(start,
        stop)``, the slice the trim keeps (``(0, N)`` when it keeps all, and for a clip with a sample that is not
        finite: the VAD's LSTM carries a NaN to every later chunk). Raises ``ValueError`` when ``probs`` has another
        length (a caller bug)."""
        n = int(wav.shape[0])
        if probs.shape != (-(-n // CHUNK),):
            raise ValueError(f"speech_trim: {tuple(probs.shape)} probabilities for {n} samples; expected ({-(-n // CHUNK)},)")
        speech = probs >= self.threshold  # [T] bool
        if n == 0 or not bool(speech.any()) or not bool(torch.isfinite(wav).all()):
            return 0, n  # no speech (music, noise, silence) or a NaN/inf sample: the clip stays whole
        if self.loud_db is not None:
            peaks = F.pad(wav.abs(), (0, -n % CHUNK)).reshape(-1, CHUNK).amax(dim=1)  # [T]
            speech = speech | (peaks >= float(peaks.max()) * 10 ** (self.loud_db / 20))
        first, last = int(speech.byte().argmax()), len(speech) - 1 - int(speech.flip(0).byte().argmax())
        margin = round(self.margin_s * SAMPLE_RATE)
        start, stop = max(0, first * CHUNK - margin), min(n, (last + 1) * CHUNK + margin)
        cut = round(self.min_cut_s * SAMPLE_RATE)
        start = start if start >= cut else 0  # a short edge stays
        stop = stop if n - stop >= cut else n
        if stop - start < round(self.min_keep_s * SAMPLE_RATE):
            return 0, n
        return start, stop

    def bounds(self, wav: Tensor, vad: SileroVAD) -> tuple[int, int]:
        """``[N]`` samples at 16 kHz -> ``(start, stop)`` by ``vad``'s probabilities. Raises ``ValueError`` for a
        tensor that is not 1-D (a caller bug)."""
        if wav.dim() != 1:
            raise ValueError(f"the speech trim reads one clip [N]; got shape {tuple(wav.shape)}")
        return self.bounds_from(vad(wav), wav)

    def apply(self, wav: Tensor, vad: SileroVAD) -> Tensor:
        """``[N]`` f32 samples at 16 kHz -> ``[M]``, M <= N: the clip without its room-tone edges (the input object
        itself when nothing is dropped)."""
        start, stop = self.bounds(wav, vad)
        return wav if (start, stop) == (0, wav.shape[0]) else wav[start:stop]


TRIM_WHEN = ("always", "recording")  # a package's trim applies to every clip, or to clips a request calls recordings


def trim_parts(d: dict) -> tuple[dict, str]:
    """A task package's ``speech_trim`` metadata object -> (the :class:`SpeechTrim` settings, ``when`` it applies:
    ``always`` (the default) or ``recording``, i.e. only when the request says the clip is a whole recording,
    ``server/speech_trims.py``). Raises ``ValueError`` for another ``when``."""
    settings = {k: v for k, v in d.items() if k != "when"}
    when = d.get("when", "always")
    if when not in TRIM_WHEN:
        raise ValueError(f"speech_trim.when must be one of {list(TRIM_WHEN)}; got {reprlib.repr(when)}")
    return settings, when


def trim_object(d: dict) -> dict:
    """A task package's ``speech_trim`` metadata object with every setting (omitted ones at their defaults) and
    ``when`` only when it is not ``always`` (so packages written before ``when`` keep their bytes). Raises
    ``ValueError`` for anything else."""
    if not isinstance(d, dict):
        raise ValueError(f"speech_trim must be an object; got {reprlib.repr(d)}")
    settings, when = trim_parts(d)
    out = SpeechTrim.from_dict(settings, partial=True).to_dict()
    return out if when == "always" else {**out, "when": when}


__all__ = ["TRIM_WHEN", "SpeechTrim", "trim_object", "trim_parts"]

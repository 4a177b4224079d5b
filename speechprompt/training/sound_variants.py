"""Variants of a real non-speech clip for voice-activity training: the same sound played faster, slower or backwards.

The allow-listed packages hold a few hundred real sounds (game effects, animal calls, music, beeps), split by file
group between train and test, and a VAD trained on them calls about a quarter of the held-out sounds speech: an
animal or an effect it never met sounds more like a voice than like the sounds it did meet (docs/results.md,
"Variants of the training sounds", under "VAD on mixed clips"). :func:`vary` makes a new sound out of a train sound
the way a sampler does: a tape-speed change (pitch and tempo together, by resampling with ``soxr``), and, with even
odds, the clip reversed. A speed change moves an animal call or an effect to another register and length; a reversed
sound keeps its spectrum and loses its onset shape, which no real voice has backwards either. :func:`vary` is meant
for non-speech only, so a variant is ``noise`` as surely as its source. :func:`tape_speed`, the speed change alone, also
makes build-default's ``--real-speeds`` copies of real speech (Kaldi's speed perturbation).
"""

from __future__ import annotations

import numpy as np
import soxr

SR = 16000
MIN_SPEED, MAX_SPEED = 0.7, 1.45  # tape-speed factors (log-uniform): about -6 to +6.4 semitones
MIN_SECONDS = 0.3  # a variant shorter than this is not written (a click sped up leaves little to hear)


def draw(key: int) -> tuple[float, bool]:
    """``(speed, reverse)`` for variant ``key`` (an int >= 0): speed log-uniform in [``MIN_SPEED``, ``MAX_SPEED``],
    reverse with even odds. Raises ``ValueError`` for a negative ``key``."""
    if key < 0:
        raise ValueError(f"key must be >= 0; got {key}")
    rng = np.random.default_rng([key, 53])
    speed = float(np.exp(rng.uniform(np.log(MIN_SPEED), np.log(MAX_SPEED))))
    return speed, bool(rng.integers(0, 2))


def vary(y: np.ndarray, key: int) -> np.ndarray | None:
    """A variant of the sound ``y`` ([N] f32 @16 kHz): played at the speed of :func:`draw` (``speed`` > 1 is faster
    and higher: ``round(N / speed)`` samples, resampled by ``soxr`` at its default quality) and reversed where drawn,
    at the source's peak level. Returns ``None`` when the variant would be shorter than ``MIN_SECONDS``. Raises
    ``ValueError`` for an empty or non-1-D ``y`` or a negative ``key``."""
    y = np.asarray(y, np.float32)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"vary needs a non-empty mono clip [N]; got shape {y.shape}")
    speed, reverse = draw(key)
    out = tape_speed(y, speed)
    if len(out) < MIN_SECONDS * SR:
        return None
    return np.ascontiguousarray(out[::-1] if reverse else out)


def tape_speed(y: np.ndarray, speed: float) -> np.ndarray:
    """``y`` ([N] f32 @16 kHz) played at ``speed`` (> 1: faster and higher, pitch and tempo together, as a tape or
    Kaldi's speed perturbation): the same samples heard at ``SR * speed`` and resampled to ``SR`` by ``soxr`` (N /
    speed samples, rounded as soxr rounds), at the source's peak level. Also the tape-speed copies of build-default's
    ``real_speeds``. Raises ``ValueError`` for an empty or non-1-D ``y`` or a speed that is not a finite number > 0."""
    if not (np.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a finite number > 0; got {speed}")
    y = np.asarray(y, np.float32)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"tape_speed needs a non-empty mono clip [N]; got shape {y.shape}")
    out = soxr.resample(y, SR * speed, SR).astype(np.float32)
    peak, new_peak = float(np.abs(y).max()), float(np.abs(out).max()) if len(out) else 0.0
    if new_peak > 0:
        out *= peak / new_peak
    return out

"""A level floor before the dense model: a clip quieter than the floor is raised to it, a louder one is untouched.

Google's speech_embedding and the YIN pitch stream are not level-invariant: a real microphone recording 30 dB quieter
than the corpus (a distant or low-gain microphone) gets other units, and its gender label flips on ~7 % of held-out
real clips (docs/results.md, "Real voices as phones and browsers send them"). A bundle may therefore name a floor in
its encoder settings (``backbone.json`` ``encoder.level_floor``): a clip whose peak ``max |x|`` is below
``peak`` is scaled so that its peak is ``peak``, by at most ``max_gain_db`` (so digital silence with a little dither is
not raised into loud noise). Clips at or above the floor are passed through bit for bit, so every label of a clip
with a peak >= ``peak`` is the one the bundle gave without a floor. The scale is per clip the encoder sees: a whole
request, a long-audio window, a stream's window. The setting is outside the weights, so it does not move the
bundle's fingerprint (task packages stay compatible); it moves ``settings_digest`` and, through it, the units-cache
key (``backbone.units_key``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LevelFloor:
    """``peak``: the lowest peak (full scale = 1.0) a clip is given, in (0, 1]; ``max_gain_db``: the most it is raised
    (dB, > 0). Raises ``ValueError`` for values outside those ranges."""

    peak: float = 0.25
    max_gain_db: float = 40.0

    def __post_init__(self):
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (self.peak, self.max_gain_db)):
            raise ValueError(f"level_floor.peak and max_gain_db must be numbers; got {self.peak!r}, {self.max_gain_db!r}")
        object.__setattr__(self, "peak", float(self.peak))  # 40 and 40.0 are one setting (and one units key)
        object.__setattr__(self, "max_gain_db", float(self.max_gain_db))
        if not 0.0 < self.peak <= 1.0:
            raise ValueError(f"level_floor.peak must be in (0, 1] (full scale = 1.0); got {self.peak}")
        if not 0.0 < self.max_gain_db <= 120.0:
            raise ValueError(f"level_floor.max_gain_db must be in (0, 120] dB; got {self.max_gain_db}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LevelFloor:
        """``backbone.json``'s ``encoder.level_floor`` object. Raises ``ValueError`` for other keys or values."""
        if not isinstance(d, dict) or set(d) != {"peak", "max_gain_db"}:
            raise ValueError(f"level_floor must be an object with 'peak' and 'max_gain_db'; got {d!r}")
        return cls(**d)

    def apply(self, wav: Tensor) -> Tensor:
        """``[N]`` f32 samples -> the same clip raised to the floor (the input object itself when its peak is at or
        above ``peak``, when it is all zeros, or when it holds NaN/Inf, which the decoder refuses before this)."""
        peak = float(wav.abs().max()) if wav.numel() else 0.0
        if not peak < self.peak or peak == 0.0:  # NaN compares False: passed through, not spread over the clip
            return wav
        gain = min(self.peak / peak, 10.0 ** (self.max_gain_db / 20.0))
        return wav * torch.tensor(gain, dtype=wav.dtype, device=wav.device)


__all__ = ["LevelFloor"]

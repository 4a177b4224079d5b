"""The runtime the server drives: one backbone, its unit extractor and its prompt bank.

All calls block (they run torch); a server calls them from its model thread, never from the event loop.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
from torch import Tensor

from .backbone import Backbone
from .package import NonFiniteWeights, TaskPackage, check_compatible
from .precision import apply_precision
from .prompting import PromptBank
from .unit_views import UnitView
from .units import Units

Row = Units | Tensor  # a cached Units object (ProsodyUnits on pGSLM) or, on GSLM, a bare unit tensor [M]


class Runtime:
    """Backbone + unit extractor + prompt bank: audio -> units (+ prosody on pGSLM) -> class probabilities.

    GSLM: ``UnitExtractor`` + ``PromptBank``. pGSLM: ``ProsodyExtractor`` (durations and F0 per unit segment,
    computed once per clip and cached with the units) + ``PGSLMPromptBank``.
    """

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.extractor = backbone.unit_extractor()
        if backbone.spec.kind == "pgslm":
            from .pgslm_prompting import PGSLMPromptBank
            from .prosody import ProsodyExtractor

            self.extractor = ProsodyExtractor.from_parts(self.extractor, backbone.prosody)
            self.bank = PGSLMPromptBank(backbone.unit_lm, backbone.prosody)
        else:
            self.bank = PromptBank(backbone.unit_lm, unit_to_token=backbone.unit_to_token)
            UnitView.of_codebook(backbone.codebook)  # the codebook's layout, read once here (~1 s), not at an upload
        self._probe: list[Units] | None = None

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike, device: str = "cpu", precision: str = "fp32") -> Runtime:
        """Load a bundle folder in a precision mode (``precision.MODES``; raises ``backbone.BundleError``,
        ``precision.PrecisionError``)."""
        backbone = Backbone.load(bundle_dir, device=device)
        apply_precision(backbone, precision)
        return cls(backbone)

    @property
    def fingerprint(self) -> str:
        return self.backbone.fingerprint

    @property
    def units_key(self) -> str:
        """The units-cache key: ``Backbone.units_key`` (the fingerprint, plus a level floor where one is set), and the
        encoder's precision when it is not fp32 (bf16 / int8 encoders may give other units; replicas that share a
        Redis units cache in different precision modes must not read each other's units)."""
        key, enc = self.backbone.units_key, self.backbone.precision.get("encoder", "fp32")
        return key if enc == "fp32" else hashlib.sha256(f"{key}:encoder={enc}".encode()).hexdigest()

    def encoded_span(self, wav: np.ndarray | Tensor) -> tuple[float, float]:
        """``(start_s, end_s)`` of ``wav`` ``[N]`` that its units cover (``Backbone.encoded_span``)."""
        return self.backbone.encoded_span(wav)

    def extract_units(self, wavs: list[np.ndarray | Tensor]) -> list[Units]:
        """Waveforms ``[N_i]`` f32 @ 16 kHz -> deduplicated units + durations (encoder batched over clips)."""
        with torch.inference_mode():
            return self.extractor.extract(wavs)

    def check(self, pkg: TaskPackage) -> None:
        """Raise ``BackboneMismatch``/``PackageInvalid`` unless ``pkg`` fits this backbone."""
        c = self.backbone.spec.unit_lm
        check_compatible(pkg, fingerprint=self.fingerprint, kind=self.backbone.spec.kind, layers=c.layers,
                         dim=c.embed_dim, vocab_size=c.vocab_size, codebook=self.backbone.codebook)

    def add_task(self, key: str, pkg: TaskPackage) -> None:
        """Validate against the backbone, place the task in the prompt bank under ``key``, then run a trial
        forward on a probe clip: a package whose results are not finite (e.g. finite but huge weights that
        overflow) is removed again and refused with ``NonFiniteWeights``."""
        self.check(pkg)
        self.bank.add(key, pkg)
        try:
            probs = self.classify(self.probe_rows(), [key])[0]
        except BaseException:
            self.bank.remove(key)
            raise
        if not np.isfinite(probs).all():
            self.bank.remove(key)
            raise NonFiniteWeights(f"package {pkg.meta.task!r} gives non-finite scores on a probe clip (its "
                                   "weights overflow the backbone's arithmetic)")

    def probe_rows(self) -> list[Units]:
        """Units of a fixed 0.5 s probe clip (a chirp plus noise), computed once: the trial input of add_task."""
        if self._probe is None:
            t = np.arange(8000, dtype=np.float32) / 16000
            wav = 0.3 * np.sin(2 * np.pi * (200 + 800 * t) * t) + 0.05 * np.random.default_rng(0).standard_normal(8000)
            self._probe = self.extract_units([wav.astype(np.float32)])
        return self._probe

    def unit_tokens(self) -> Tensor:
        """Each unit's token id in the unit LM's vocabulary: ``[K]`` i64 (what a verbalizer column is indexed by; K
        counts a voice prefix's tokens too, ``Backbone.num_units``)."""
        return self.backbone.unit_to_token.clone()

    def remove_task(self, key: str) -> None:
        self.bank.remove(key)

    def rows_of(self, key: str) -> int:
        """Unit-LM rows one row of task ``key`` costs in a forward: K for a K-member ensemble, else 1."""
        return self.bank.rows_of(key)

    def classify(self, rows: list[Row], keys: list[str]) -> list[np.ndarray]:
        """ONE unit-LM forward for all rows; row b uses task ``keys[b]`` -> probabilities ``[C_b]`` (float32).

        Raises ``KeyError`` for a key not in the bank, ``TypeError`` for a bare tensor on a pGSLM backbone.
        """
        if self.backbone.spec.kind == "pgslm":
            if not all(isinstance(r, Units) for r in rows):
                raise TypeError("a pGSLM backbone needs the Units objects from extract_units (with prosody)")
            return [p.numpy() for p in self.bank.classify(rows, keys)]
        units = [r.units if isinstance(r, Units) else torch.as_tensor(r) for r in rows]
        return [p.numpy() for p in self.bank.classify(units, keys)]

"""The runtime the server drives: one backbone, its unit extractor and its prompt bank.

All calls block (they run torch); a server calls them from its model thread, never from the event loop.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from .backbone import Backbone
from .package import TaskPackage, check_compatible
from .prompting import PromptBank
from .units import UnitExtractor, Units


class Runtime:
    """Backbone + ``UnitExtractor`` + ``PromptBank``: audio -> units -> prompted class probabilities."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.extractor = UnitExtractor.from_parts(backbone.encoder, backbone.codebook, deduplicate=True)
        self.bank = PromptBank(backbone.unit_lm, unit_to_token=backbone.unit_to_token)

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike, device: str = "cpu") -> Runtime:
        """Load a bundle folder (raises ``backbone.BundleError``)."""
        return cls(Backbone.load(bundle_dir, device=device))

    @property
    def fingerprint(self) -> str:
        return self.backbone.fingerprint

    def extract_units(self, wavs: list[np.ndarray | Tensor]) -> list[Units]:
        """Waveforms ``[N_i]`` f32 @ 16 kHz -> deduplicated units + durations (encoder batched over clips)."""
        with torch.inference_mode():
            return self.extractor.extract(wavs)

    def check(self, pkg: TaskPackage) -> None:
        """Raise ``BackboneMismatch``/``PackageInvalid`` unless ``pkg`` fits this backbone."""
        c = self.backbone.spec.unit_lm
        check_compatible(pkg, fingerprint=self.fingerprint, kind=self.backbone.spec.kind, layers=c.layers,
                         dim=c.embed_dim, vocab_size=c.vocab_size)

    def add_task(self, key: str, pkg: TaskPackage) -> None:
        """Validate against the backbone, then place the task in the prompt bank under ``key``."""
        self.check(pkg)
        self.bank.add(key, pkg)

    def remove_task(self, key: str) -> None:
        self.bank.remove(key)

    def classify(self, units: list[Tensor], keys: list[str]) -> list[np.ndarray]:
        """ONE unit-LM forward for all rows; row b uses task ``keys[b]`` -> probabilities ``[C_b]`` (float32)."""
        return [p.numpy() for p in self.bank.classify([torch.as_tensor(u) for u in units], keys)]

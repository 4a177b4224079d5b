"""k-means codebook: HuBERT features -> units (nearest centroid), and run-length dedup of units.

``feats [T, D] f32 -> units [T] i64 -> (units [M] i64, durations [M] i64)``, ``sum(durations) == T``.

Sources: GSLM ``speech2unit/clustering/quantize_with_kmeans.py`` (``kmeans.predict(feats)`` of a scikit-learn
``MiniBatchKMeans``, raw features, no normalisation) and textlesslib ``SpeechEncoder`` (dedup with
``torch.unique_consecutive(return_counts=True)``; counts = durations in frames).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import Tensor, nn


class CodebookImportError(ValueError):
    """A k-means file that cannot be read or holds no usable ``cluster_centers_``."""


class Codebook(nn.Module):
    """Nearest-centroid quantiser over ``centroids [K, D]`` (a buffer).

    ``codebook.safetensors`` holds ``centroids``, or, for a product codebook (:meth:`product`: unit ``r * C + c`` =
    ``[clusters[c], registers[r]]``), its two factors ``clusters [C, E]`` and ``registers [R, P]``,
    which expand to exactly the same ``[R * C, E + P]`` centroids in about ``1 / R`` of the bytes (:meth:`from_file`,
    :meth:`file_state`). ``factors`` must expand to ``centroids`` (ValueError otherwise); :meth:`product` makes both.
    """

    def __init__(self, centroids: Tensor, factors: tuple[Tensor, Tensor] | None = None):
        super().__init__()
        centroids = torch.as_tensor(centroids)
        if centroids.dim() != 2 or centroids.shape[0] < 1 or not torch.isfinite(centroids).all():
            raise ValueError(f"centroids must be a finite [K, D] tensor with K >= 1, got {tuple(centroids.shape)}")
        self.register_buffer("centroids", centroids.detach().to(torch.float32).contiguous())
        self.factors = None if factors is None else tuple(f.detach().to("cpu", torch.float32) for f in factors)
        if self.factors is not None and not torch.equal(_expand(*self.factors), self.centroids.cpu()):
            raise ValueError("codebook factors do not expand to the centroids given")

    @classmethod
    def product(cls, clusters: Tensor, registers: Tensor) -> Codebook:
        """The product codebook of ``clusters [C, E]`` x ``registers [R, P]``: ``[R * C, E + P]`` centroids, unit
        ``r * C + c`` = cluster ``c`` of the dense features next to register ``r`` of the extra stream
        (``pitch.register_centroids``); it remembers its factors so that it is stored as them.

        Squared distances add over the two blocks, so the nearest of these centroids to a frame ``[x, p]`` is always
        (nearest cluster to ``x``, nearest register to ``p``): the dense stream keeps its full ``C``-cluster
        resolution and the register is a separate factor of the unit, instead of k-means over ``[x, p]`` trading one
        against the other (build-default ``--pitch-registers``; docs/model_card.md). Raises ValueError for factors
        that are not finite 2-D tensors."""
        clusters, registers = torch.as_tensor(clusters).float(), torch.as_tensor(registers).float()
        if clusters.dim() != 2 or registers.dim() != 2 or not len(clusters) or not len(registers):
            raise ValueError(f"product codebook factors must be [C, E] and [R, P]; got {tuple(clusters.shape)} and "
                             f"{tuple(registers.shape)}")
        return cls(_expand(clusters, registers), (clusters, registers))

    @classmethod
    def from_file(cls, state: dict[str, Tensor]) -> Codebook:
        """A codebook from ``codebook.safetensors``'s tensors: ``{"centroids"}`` or ``{"clusters", "registers"}``.
        Raises ValueError for any other set of names or bad shapes."""
        if set(state) == {"centroids"}:
            return cls(state["centroids"])
        if set(state) == {"clusters", "registers"}:
            return cls.product(state["clusters"], state["registers"])
        raise ValueError(f"codebook.safetensors holds {sorted(state)}; accepted: centroids, or clusters + registers")

    def file_state(self) -> dict[str, Tensor]:
        """What ``codebook.safetensors`` holds: the factors of a product codebook, else ``centroids``."""
        if self.factors is not None:
            return {"clusters": self.factors[0], "registers": self.factors[1]}
        return {"centroids": self.centroids}

    @property
    def vocab_size(self) -> int:
        """Number of units K."""
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return self.centroids.shape[1]

    @torch.no_grad()
    def quantize(self, feats: Tensor) -> Tensor:
        """``feats [T, D] f32 -> units [T] i64`` = argmin_k ||x - c_k||^2 (ties -> lowest k, as numpy argmin).

        Computed as argmin_k (||c_k||^2 - 2 x.c_k): the same expanded form scikit-learn's ``KMeans.predict``
        evaluates (its Cython ``_update_chunk_dense``: centre norms + GEMM with alpha -2, in the data's dtype,
        f32 for GSLM features), ||x||^2 dropped as it is constant per row. One GEMM instead of a [T, K, D]
        difference tensor; results can differ from sklearn only where two centroids are tied to within f32
        rounding. Raises ValueError on a wrong shape.
        """
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"features must be [T, {self.dim}], got {tuple(feats.shape)}")
        c = self.centroids
        scores = torch.addmm(c.square().sum(1)[None, :], feats.to(c), c.t(), alpha=-2.0)  # [T, K]
        return scores.argmin(1) if feats.shape[0] else torch.zeros(0, dtype=torch.long, device=c.device)


def _expand(clusters: Tensor, registers: Tensor) -> Tensor:
    """``[C, E]`` x ``[R, P]`` -> ``[R * C, E + P]``: row ``r * C + c`` = ``[clusters[c], registers[r]]``."""
    return torch.cat([clusters.repeat(len(registers), 1), registers.repeat_interleave(len(clusters), 0)], 1)


def dedup(units: Tensor) -> tuple[Tensor, Tensor]:
    """Collapse runs: ``units [T] i64 -> (units [M] i64, durations [M] i64)`` with ``sum(durations) == T``.

    SpeechPrompt ``reduce_quantized`` (itertools.groupby) / textlesslib ``unique_consecutive``. Raises ValueError
    unless ``units`` is 1-D.
    """
    if units.dim() != 1:
        raise ValueError(f"units must be 1-D [T], got shape {tuple(units.shape)}")
    values, counts = torch.unique_consecutive(units, return_counts=True)
    return values.long(), counts.long()


def load_kmeans_centroids(km_bin_path: str | os.PathLike) -> Tensor:
    """Centroids ``[K, D] f32`` from the official GSLM ``km.bin`` (``joblib.dump`` of sklearn ``MiniBatchKMeans``).

    IMPORT TIME ONLY: ``joblib.load`` unpickles, i.e. can run code from the file, so call it only on a file the
    operator chose (``speechprompt import-gslm``); the server reads the centroids from ``codebook.safetensors``
    and never unpickles. Only ``cluster_centers_`` is read (an array ``[K, D]`` saved directly is accepted too),
    so scikit-learn version differences do not matter beyond the unpickling itself. Raises
    :class:`CodebookImportError`.
    """
    import joblib  # installed with scikit-learn (the fairseq extra); only this import path needs it

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Trying to unpickle estimator.*")  # old sklearn pickle
            km = joblib.load(os.fspath(km_bin_path))
    except Exception as e:  # noqa: BLE001 - any unpickling failure is reported with its cause
        raise CodebookImportError(f"cannot load k-means model {km_bin_path}: {type(e).__name__}: {e}") from None
    centers = km if isinstance(km, np.ndarray) else getattr(km, "cluster_centers_", None)
    if centers is None:
        raise CodebookImportError(f"{km_bin_path} holds a {type(km).__name__} without cluster_centers_")
    centers = np.asarray(centers)
    if centers.ndim != 2 or centers.shape[0] < 1 or not np.isfinite(centers).all():
        raise CodebookImportError(f"{km_bin_path}: cluster_centers_ must be finite [K, D], got {centers.shape}")
    return torch.from_numpy(np.ascontiguousarray(centers, dtype=np.float32)).clone()


__all__ = ["Codebook", "CodebookImportError", "dedup", "load_kmeans_centroids"]

"""The k-means codebook fit (``speechprompt/training/kmeans.py``): the same bits with 1 and 2 torch threads (the
build's 2 included), so a build's codebook depends on its input frames, not its thread count (docs/results.md,
"Why v7 no longer rebuilds bit for bit", where the build's own 150,000 x 96 frames were checked the same way)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechprompt.training.kmeans import fit_kmeans


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """[6000, 12] f32 frames in 40 overlapping blobs: many points near cluster boundaries, as real features."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, 12)) * 2.0
    return (centres[rng.integers(0, 40, 6000)] + rng.standard_normal((6000, 12))).astype(np.float32)


def test_fit_is_bit_identical_across_thread_counts(frames):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fit_kmeans(frames, 30, seed=0)
        torch.set_num_threads(2)
        two = fit_kmeans(frames, 30, seed=0)
    finally:
        torch.set_num_threads(before)
    assert one.shape == (30, 12) and one.dtype == np.float32
    assert np.array_equal(one, two)
    assert not np.array_equal(one, fit_kmeans(frames, 30, seed=1))  # the seed does pick the start


"""speechprompt.explain: occlusion spans, occluded units (GSLM and pGSLM), seconds, verbalizer weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechprompt.explain import (
    explain_occlusion,
    occlude,
    occlusion_spans,
    span_seconds,
    top_units,
    verbalizer_unit_weights,
)
from speechprompt.prosody import F0Stats, ProsodyUnits
from speechprompt.units import Units


@pytest.mark.parametrize("n, s", [(0, 4), (1, 4), (5, 5), (7, 3), (100, 16), (17, 64)])
def test_spans_partition_the_units_into_near_equal_stretches(n, s):
    spans = occlusion_spans(n, s)
    assert len(spans) == min(n, s)
    if n:
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a < b for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
        sizes = [b - a for a, b in spans]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        occlusion_spans(n, 0)


def test_occlude_removes_units_durations_and_frames():
    u = Units(torch.tensor([3, 1, 4, 1, 5]), torch.tensor([2, 1, 3, 1, 1]), 8)
    o = occlude(u, 1, 3)
    assert o.units.tolist() == [3, 1, 5] and o.durations.tolist() == [2, 1, 1] and o.frames == 4
    assert int(o.durations.sum()) == o.frames
    assert u.units.tolist() == [3, 1, 4, 1, 5]  # the original is untouched
    assert occlude(u, 0, 5).units.numel() == 0
    with pytest.raises(ValueError):
        occlude(u, 2, 9)


def test_occlude_keeps_the_prosody_of_the_other_units_on_pgslm():
    stats = F0Stats.from_frames(torch.tensor([100.0, 0.0, 120.0]))
    u = ProsodyUnits(torch.tensor([7, 8, 9]), torch.tensor([1, 2, 3]), 6, torch.tensor([100.0, 0.0, 120.0]), stats)
    o = occlude(u, 1, 2)
    assert isinstance(o, ProsodyUnits)
    assert o.units.tolist() == [7, 9] and o.durations.tolist() == [1, 3] and o.f0.tolist() == [100.0, 120.0]
    assert o.frames == 4 and o.f0_stats == stats


def test_span_seconds_follow_the_frames_and_tile_the_clip():
    durations = torch.tensor([1, 3, 4])  # 8 frames over 2.0 s: frame = 0.25 s
    secs = span_seconds(durations, [(0, 1), (1, 2), (2, 3)], 2.0)
    assert secs == [(0.0, 0.25), (0.25, 1.0), (1.0, 2.0)]


def test_explanation_reports_the_drop_of_the_winning_label():
    u = Units(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 1, 1, 1]), 4)
    base = np.array([0.2, 0.7, 0.1])
    occluded = [np.array([0.5, 0.4, 0.1]), np.array([0.1, 0.8, 0.1])]
    e = explain_occlusion(base, occluded, u, [(0, 2), (2, 4)], 1.0)
    assert e.class_index == 1 and e.score == pytest.approx(0.7)
    assert [s.importance for s in e.stretches] == pytest.approx([0.3, -0.1])
    assert [(s.start_s, s.end_s) for s in e.stretches] == [(0.0, 0.5), (0.5, 1.0)]
    with pytest.raises(ValueError):
        explain_occlusion(base, occluded[:1], u, [(0, 2), (2, 4)], 1.0)


def test_centred_verbalizer_weights_give_the_same_class_probabilities():
    """The centred weights are the identifiable part: on the whole vocabulary they leave every softmax
    over classes unchanged; the unit columns are read through the unit -> token map."""
    g = torch.Generator().manual_seed(0)
    C, V = 3, 12
    verb = torch.randn(C + 4, V, generator=g, dtype=torch.float64)
    tokens = torch.tensor([4, 5, 6, 7, 8, 9, 10, 11])  # K = 8 units at their natural token ids
    w = verbalizer_unit_weights(verb, tokens)
    assert w.shape == (C, 8)
    np.testing.assert_allclose(w.sum(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(w[:, 2] + verb[4:, 6].mean().item(), verb[4:, 6].numpy())
    full = verb[4:] - verb[4:].mean(0, keepdim=True)
    logits = torch.randn(V, generator=g, dtype=torch.float64)
    torch.testing.assert_close((verb[4:] @ logits).softmax(-1), (full @ logits).softmax(-1))
    top = top_units(w, 3)
    for c, row in enumerate(top):
        assert [x for _, x in row] == sorted(w[c], reverse=True)[:3]
        assert all(w[c, u] == x for u, x in row)

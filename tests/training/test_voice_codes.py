"""The voice prefix's dropout for the unit LM's training sequences (speechprompt/training/voice_codes.py)."""
import pytest
import torch

from speechprompt.training.voice_codes import drop_prefixes, keeps_prefix


def test_keeps_prefix_drops_the_asked_share_by_a_fixed_hash():
    kept = [keeps_prefix(i, 0, 0.3) for i in range(20000)]
    assert abs(1 - sum(kept) / len(kept) - 0.3) < 0.015
    assert kept == [keeps_prefix(i, 0, 0.3) for i in range(20000)]  # a rebuild drops the same clips
    assert kept != [keeps_prefix(i, 1, 0.3) for i in range(20000)]  # another seed, other clips
    assert all(keeps_prefix(i, 0, 0.0) for i in range(1000))
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"voice_dropout must be in \[0, 1\)"):
            keeps_prefix(0, 0, bad)


def test_drop_prefixes_removes_exactly_the_prefix_of_the_picked_clips():
    numbered = [(i, torch.tensor([50, 52, i % 7, 3, 1])) for i in range(200)]
    said = []
    out = drop_prefixes(numbered, 2, 0, 0.3, said.append)
    for (i, seq), got in zip(numbered, out, strict=True):
        assert torch.equal(got, seq if keeps_prefix(i, 0, 0.3) else seq[2:])
    n = sum(not keeps_prefix(i, 0, 0.3) for i in range(200))
    assert 30 < n < 90 and said == [f"voice_dropout 0.3: {n} of 200 training sequences without the voice prefix"]
    said.clear()
    assert all(a is b for a, (_, b) in zip(drop_prefixes(numbered, 2, 0, 0.0, said.append), numbered, strict=True))
    assert said == []  # no dropout: the same tensors, nothing said

"""Ensemble packages (speechprompt/ensembles.py): K prompt sets of one task in one package (format version 4), read
back member by member, refused when malformed, and scored by the prompt bank as the mean of the members' probabilities
in one forward, beside plain tasks."""

from __future__ import annotations

import json

import pytest
import torch

from speechprompt.ensembles import ensemble
from speechprompt.package import (
    PackageInvalid,
    PackageMeta,
    new_package,
    read_package,
    with_metadata,
)
from speechprompt.prompting import PromptBank
from speechprompt.unit_lm import UnitLM, UnitLMConfig

FP = "cd" * 32
V = 24


def lm() -> UnitLM:
    torch.manual_seed(0)
    return UnitLM(UnitLMConfig(vocab_size=V, embed_dim=16, ffn_dim=32, layers=2, heads=2,
                               max_positions=64)).eval().requires_grad_(False)


def package(task: str, seed: int, labels=("a", "b", "c"), plen: int = 5, **meta):
    g = torch.Generator().manual_seed(seed)
    m = PackageMeta(task=task, labels=labels, backbone_fingerprint=FP, prompt_length=plen,
                    training={"seed": seed}, **meta)
    return new_package(m, deep_key=torch.randn(2, plen, 16, generator=g), deep_value=torch.randn(2, plen, 16, generator=g),
                       input_prompt=torch.randn(plen, 16, generator=g), separator=torch.randn(16, generator=g),
                       verbalizer=torch.randn(len(labels) + 4, V, generator=g) * 0.5)


def header(data: bytes) -> dict:
    return json.loads(data[8:8 + int.from_bytes(data[:8], "little")])


def test_an_ensemble_round_trips_as_format_4_with_every_member():
    parts = [package("t", s) for s in (1, 2, 3)]
    ens = ensemble(parts)
    back = read_package(ens.data)
    assert back.meta.members == 3 and back.meta.to_header()["format_version"] == "4"
    assert back.version == ens.version and back.version not in {p.version for p in parts}
    assert len(back.members) == 3 and back.nbytes == sum(p.nbytes for p in parts)
    for got, want in zip(back.members, parts, strict=True):
        for n in ("deep_key", "deep_value", "input_prompt", "separator", "verbalizer"):
            assert torch.equal(getattr(got, n), getattr(want, n))
    assert [m["version"] for m in back.meta.training["ensemble_of"]] == [p.version for p in parts]
    assert back.meta.training["ensemble_of"][1]["training"] == {"seed": 2}
    names = set(header(ens.data)) - {"__metadata__"}
    assert "member2.verbalizer" in names and len(names) == 15
    assert header(parts[0].data)["__metadata__"]["format_version"] == "1"  # plain packages keep their bytes
    kept = with_metadata(back, speech_trim={"threshold": 0.3})  # a metadata change keeps every member
    assert kept.meta.members == 3 and torch.equal(kept.more[1].verbalizer, parts[2].verbalizer)
    nested = ensemble([ensemble(parts[:2]), parts[2]])  # an ensemble given in is flattened
    assert nested.meta.members == 3 and torch.equal(nested.more[1].separator, parts[2].separator)
    assert ensemble(parts, task="renamed").meta.task == "renamed"


@pytest.mark.parametrize("other, says", [
    (lambda: package("t", 9, labels=("a", "b", "x")), "differs from package 0 .* in labels"),
    (lambda: package("u", 9), "in task"),
    (lambda: package("t", 9, readout="mean"), "in readout"),
    (lambda: package("t", 9, plen=4), "in prompt_length"),
    (lambda: package("t", 9, speech_trim={"threshold": 0.3}), "in speech_trim"),
])
def test_members_must_share_the_task_metadata(other, says):
    with pytest.raises(PackageInvalid, match=says):
        ensemble([package("t", 1), other()])


def test_the_member_count_is_bounded():
    with pytest.raises(PackageInvalid, match="2 to 8 members; these packages hold 1"):
        ensemble([package("t", 1)])
    with pytest.raises(PackageInvalid, match="hold 9"):
        ensemble([package("t", s) for s in range(9)])


def _edit(data: bytes, meta: dict | None = None, reshape: str | None = None) -> bytes:
    """``data`` with metadata fields replaced, or one tensor's shape declared reversed (the same number of values,
    so the file stays valid safetensors and only the package's shape check can refuse it)."""
    h = header(data)
    n = int.from_bytes(data[:8], "little")
    h["__metadata__"].update(meta or {})
    if reshape:
        h[reshape]["shape"] = list(reversed(h[reshape]["shape"]))
    raw = json.dumps(h).encode()
    return len(raw).to_bytes(8, "little") + raw + data[8 + n:]


def test_a_malformed_ensemble_is_refused_naming_what_is_wrong():
    ens = ensemble([package("t", 1), package("t", 2)])
    from safetensors.torch import save

    tensors = {n: getattr(ens.more[0], n.split(".")[1]) if n.startswith("member1.") else getattr(ens, n)
               for n in set(header(ens.data)) - {"__metadata__", "member1.deep_key"}}
    with pytest.raises(PackageInvalid, match=r"missing \['member1.deep_key'\]"):  # a valid file, one tensor short
        read_package(save(tensors, metadata=header(ens.data)["__metadata__"]))
    with pytest.raises(PackageInvalid, match=r"unexpected \['member1.deep_key'"):  # members 1: a stray tensor
        read_package(_edit(ens.data, meta={"members": "1"}))
    with pytest.raises(PackageInvalid, match="missing .*member2"):  # says 3, holds 2
        read_package(_edit(ens.data, meta={"members": "3"}))
    with pytest.raises(PackageInvalid, match="member 1's deep_key is .* every member has member 0's shapes"):
        read_package(_edit(ens.data, reshape="member1.deep_key"))
    with pytest.raises(PackageInvalid, match="2 members need format_version 4"):
        read_package(_edit(ens.data, meta={"format_version": "3"}))


def test_the_bank_answers_the_mean_of_the_members_in_one_batch_with_plain_tasks():
    model = lm()
    parts = [package("ens", s) for s in (1, 2, 3)]
    bank = PromptBank(model, capacity=1)
    bank.add("ens", ensemble(parts))
    for i, p in enumerate(parts):
        bank.add(f"m{i}", p)  # each member alone, as the reference
    bank.add("plain", package("plain", 7, labels=("x", "y")))
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(0, V - 4, (n,), generator=g) for n in (6, 11, 3, 8)]
    keys = ["ens", "plain", "ens", "m1"]
    got = bank.classify(rows, keys)
    for u, k, out in zip(rows, keys, got, strict=True):
        if k == "ens":
            alone = [bank.classify([u], [f"m{i}"])[0] for i in range(3)]
            assert torch.allclose(out, torch.stack(alone).mean(0), atol=1e-5)
            assert not any(torch.allclose(out, a, atol=1e-3) for a in alone)  # the mean, not one member
            assert out.shape == (3,) and abs(float(out.sum()) - 1) < 1e-5
        else:
            assert torch.allclose(out, bank.classify([u], [k])[0], atol=1e-5)
    assert len(bank) == 5 and "ens" in bank and "ens\x00member1" not in bank
    assert bank.nbytes("ens") == sum(bank.nbytes(f"m{i}") for i in range(3))
    first = bank.classify([rows[0]], ["m0"])[0]
    before = bank.allocated_bytes()
    bank.remove("ens")
    assert "ens" not in bank and len(bank) == 4 and len(bank.slots) == 4 and bank.allocated_bytes() < before
    with pytest.raises(KeyError, match="ens"):
        bank.classify([rows[0]], ["ens"])
    bank.add("m0", ensemble(parts[:2]))  # a key re-added with more members, then fewer: no stale slot
    assert len(bank.slots) == 5
    pair = bank.classify([rows[0]], ["m0"])[0]
    assert torch.allclose(pair, (first + bank.classify([rows[0]], ["m1"])[0]) / 2, atol=1e-5)
    bank.add("m0", parts[0])
    assert len(bank.slots) == 4 and torch.allclose(bank.classify([rows[0]], ["m0"])[0], first, atol=1e-6)


def test_an_ensemble_that_fails_half_way_into_the_bank_leaves_no_slot(monkeypatch):
    model = lm()
    bank = PromptBank(model, capacity=1)
    bank.add("plain", package("plain", 7))
    before = bank.allocated_bytes()
    calls = []
    real = model.project_prefix

    def flaky(k, v):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("device out of memory")
        return real(k, v)

    monkeypatch.setattr(model, "project_prefix", flaky)
    with pytest.raises(RuntimeError, match="out of memory"):
        bank.add("ens", ensemble([package("ens", s) for s in (1, 2, 3)]))
    assert "ens" not in bank and sorted(bank.slots) == ["plain"] and len(bank) == 1
    assert bank.allocated_bytes() == before  # the slots it grew for the ensemble are given back
    bank.remove("ens")  # what the runtime does after a failed add: a no-op
    assert sorted(bank.slots) == ["plain"]


def test_an_ensembles_metadata_without_its_members_is_not_written():
    ens = ensemble([package("t", 1), package("t", 2)])
    with pytest.raises(PackageInvalid, match="says 2 members; 1 prompt sets were given"):
        new_package(ens.meta, ens.deep_key, ens.deep_value, ens.input_prompt, ens.separator, ens.verbalizer)

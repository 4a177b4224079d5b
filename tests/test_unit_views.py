"""The clusters view of a product codebook (speechprompt/unit_views.py): the fold and dedup by hand, the package field
(format version 3, validated, refused on a backbone whose codebook differs), and the prompt bank folding only the rows
of a task that names it, in a batch with other tasks."""

from __future__ import annotations

import pytest
import torch

from speechprompt.codebook import Codebook
from speechprompt.package import (
    PackageInvalid,
    PackageMeta,
    check_compatible,
    new_package,
    read_package,
    with_metadata,
)
from speechprompt.prompting import PromptBank
from speechprompt.unit_lm import UnitLM, UnitLMConfig
from speechprompt.unit_views import UnitView, product_layout

C, R = 5, 3  # 15 codebook units; ids 15.. stand for a voice prefix's tokens
FP = "ab" * 32


def test_the_fold_maps_each_unit_to_its_cluster_and_merges_runs_it_creates():
    view = UnitView(C, R)
    u = torch.tensor([2, 7, 12, 3, 8, 8, 4, 14, 0])  # clusters 2 2 2 3 3 3 4 4 0
    assert view.apply(u).tolist() == [2, 3, 4, 0]
    # ids >= R * C (a voice prefix) pass unchanged and are never merged, even when equal and adjacent
    assert view.apply(torch.tensor([15, 15, 16, 1, 6, 11])).tolist() == [15, 15, 16, 1]
    assert view.apply(torch.tensor([1, 15, 6])).tolist() == [1, 15, 1]  # not merged across a prefix id
    assert view.apply(torch.zeros(0, dtype=torch.long)).tolist() == []
    assert view.apply(torch.tensor([9])).tolist() == [4]
    assert view.apply(u).dtype == torch.long


def test_the_view_of_a_codebook_and_its_validation():
    g = torch.Generator().manual_seed(0)
    product = Codebook.product(torch.randn(C, 4, generator=g), torch.randn(R, 2, generator=g))
    assert UnitView.of_codebook(product) == UnitView(C, R) and UnitView(C, R).matches(product)
    assert UnitView.of_codebook(Codebook(torch.randn(C * R, 6, generator=g))) is None  # not a product codebook
    # a product codebook stored as expanded centroids (the default v7-v9): its layout is read off the rows
    assert UnitView.of_codebook(Codebook(product.centroids)) == UnitView(C, R)
    assert product_layout(product.centroids) == (C, R) and product_layout(torch.randn(C * R, 6, generator=g)) is None
    one = Codebook.product(torch.randn(C, 4, generator=g), torch.zeros(1, 2))  # one register: nothing to fold
    assert UnitView.of_codebook(one) is None
    flat = product.centroids.clone()
    flat[-1, -1] += 1  # one register entry off: no longer a product
    assert product_layout(flat) is None
    assert not UnitView(C, R + 1).matches(product) and not UnitView(C, R).matches(None)
    assert UnitView.from_dict(UnitView(C, R).to_dict()) == UnitView(C, R)
    for bad in ({"fold": "pitch", "clusters": C, "registers": R}, {"fold": "pitch_registers", "clusters": 0,
                "registers": R}, {"fold": "pitch_registers", "clusters": C, "registers": 1},
                {"fold": "pitch_registers", "clusters": C, "registers": R, "extra": 1}, {"clusters": C}, "x",
                {"fold": "pitch_registers", "clusters": str(C), "registers": R},  # strict: no coercion
                {"fold": "pitch_registers", "clusters": float(C), "registers": R},
                {"fold": "pitch_registers", "clusters": C, "registers": True}):
        with pytest.raises(ValueError, match="accepted"):
            UnitView.from_dict(bad)


def lm() -> UnitLM:
    torch.manual_seed(0)
    return UnitLM(UnitLMConfig(vocab_size=C * R + 2 + 4, embed_dim=16, ffn_dim=32, layers=2, heads=2,
                               max_positions=64)).eval().requires_grad_(False)


def package(model: UnitLM, task: str, seed: int, view: UnitView | None = None):
    g = torch.Generator().manual_seed(seed)
    L, d, V = model.cfg.layers, model.cfg.embed_dim, model.cfg.vocab_size
    meta = PackageMeta(task=task, labels=("a", "b", "c"), backbone_fingerprint=FP, prompt_length=5,
                       unit_view=view.to_dict() if view else {})
    return new_package(meta, deep_key=torch.randn(L, 5, d, generator=g), deep_value=torch.randn(L, 5, d, generator=g),
                       input_prompt=torch.randn(5, d, generator=g), separator=torch.randn(d, generator=g),
                       verbalizer=torch.randn(7, V, generator=g) * 0.3)


def test_a_package_with_a_view_is_format_3_and_round_trips():
    model = lm()
    plain = package(model, "t", 1)
    viewed = with_metadata(plain, unit_view=UnitView(C, R).to_dict())
    assert plain.meta.view is None and read_package(plain.data).meta.to_header()["format_version"] == "1"
    back = read_package(viewed.data)
    assert back.meta.view == UnitView(C, R) and back.meta.to_header()["format_version"] == "3"
    assert "unit_view" not in plain.meta.to_header()  # a package without a view keeps its bytes
    # a format-2 header that names a view, a bad view and a pGSLM package with one are refused, saying what is accepted
    import json

    def raw(**fields):
        n = int.from_bytes(viewed.data[:8], "little")
        header = json.loads(viewed.data[8:8 + n])
        header["__metadata__"].update(fields)
        b = json.dumps(header).encode()
        return len(b).to_bytes(8, "little") + b + viewed.data[8 + n:]

    for fields, says in (({"format_version": "2"}, "format_version 3"), ({"backbone_kind": "pgslm"}, "format_version 3"),
                         ({"unit_view": '{"fold": "pitch_registers", "clusters": -1, "registers": 3}'}, "unit_view"),
                         ({"unit_view": "[1]"}, "unit_view"), ({"format_version": "6"}, "format_version")):
        with pytest.raises(PackageInvalid, match=says) as e:
            read_package(raw(**fields))
        assert "unit_view" in e.value.accepted


def test_check_compatible_wants_the_codebook_the_view_names():
    model = lm()
    viewed = package(model, "t", 1, UnitView(C, R))
    g = torch.Generator().manual_seed(0)
    product = Codebook.product(torch.randn(C, 4, generator=g), torch.randn(R, 2, generator=g))
    c = model.cfg
    shapes = dict(fingerprint=FP, kind="gslm", layers=c.layers, dim=c.embed_dim, vocab_size=c.vocab_size)
    check_compatible(viewed, **shapes, codebook=product)
    check_compatible(package(model, "p", 2), **shapes)  # no view: no codebook needed
    for other, says in ((None, "not a product codebook"), (Codebook(torch.randn(C * R, 6, generator=g)),
                                                           "not a product codebook"),
                        (Codebook.product(torch.randn(C + 1, 4, generator=g), torch.randn(R, 2, generator=g)),
                         f"is {C + 1} x {R}")):
        with pytest.raises(PackageInvalid, match=says):
            check_compatible(viewed, **shapes, codebook=other)


def test_the_bank_folds_the_rows_of_a_task_with_a_view_and_no_other():
    model = lm()
    view = UnitView(C, R)
    plain, viewed = package(model, "plain", 1), package(model, "viewed", 1, view)  # the same tensors
    other = package(model, "other", 2)
    bank = PromptBank(model, capacity=1)
    for p in (plain, viewed, other):
        bank.add(p.meta.task, p)
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(0, C * R + 2, (n,), generator=g) for n in (7, 12, 3, 9)]
    keys = ["viewed", "plain", "viewed", "other"]
    got = bank.classify(rows, keys)
    for u, k, out in zip(rows, keys, got, strict=True):
        want = bank.classify([view.apply(u)], ["plain"])[0] if k == "viewed" else bank.classify([u], [k])[0]
        assert torch.allclose(out, want, atol=1e-5), k
    folded_differs = [not torch.equal(view.apply(u), u) for u in rows]
    assert any(folded_differs)  # the rows drawn do change under the fold, so the test can tell
    assert not torch.allclose(got[0], bank.classify([rows[0]], ["plain"])[0], atol=1e-4)
    bank.add("viewed", plain)  # replaced in place by a package without a view: its rows are no longer folded
    assert torch.allclose(bank.classify([rows[0]], ["viewed"])[0], bank.classify([rows[0]], ["plain"])[0], atol=1e-6)
    bank.add("viewed", viewed)  # and back
    assert torch.allclose(bank.classify([rows[0]], ["viewed"])[0], got[0], atol=1e-6)
    bank.remove("viewed")
    bank.add("viewed", plain)  # removed, then added without a view
    assert torch.allclose(bank.classify([rows[0]], ["viewed"])[0], bank.classify([rows[0]], ["plain"])[0], atol=1e-6)

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
    assert [(m["members"], m["unit_views"]) for m in back.meta.training["ensemble_of"]] == [(1, ["units"])] * 3
    assert ensemble(parts).version == ens.version  # joining the same packages again: the same bytes
    assert ens.meta.created == max(p.meta.created for p in parts)
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


def test_created_is_the_latest_moment_of_the_joined_packages():
    from speechprompt.ensembles import latest_created

    assert latest_created(["2026-12-07T10:00:00+02:00", "2026-12-07T09:00:00+00:00"]) == "2026-12-07T09:00:00+00:00"
    assert latest_created(["2026-12-07T09:30:00", "2026-12-07T09:00:00+00:00"]) == "2026-12-07T09:30:00"  # naive: UTC
    assert latest_created(["Dec 7", "2026-01-01T00:00:00+00:00", ""]) == "2026-01-01T00:00:00+00:00"
    assert latest_created(["b", "a"]) == "b" and latest_created(["", ""]) == ""


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


# -- members that read different unit views (format version 5) ---------------------------------------------------
C, R = 5, 3  # a 15-unit product codebook (tests/test_unit_views.py's layout); V = 24 leaves ids 15..19 unviewed
VIEW = {"fold": "pitch_registers", "clusters": C, "registers": R}


def test_members_with_different_unit_views_round_trip_as_format_5():
    units, clusters = package("t", 1), package("t", 2, unit_view=VIEW, format_version=3)
    mixed = ensemble([units, clusters, package("t", 3)])
    back = read_package(mixed.data)
    assert back.meta.to_header()["format_version"] == "5" and back.meta.members == 3
    assert back.meta.unit_view == {} and back.meta.member_unit_views == ({}, VIEW, {})
    assert [v is not None for v in back.meta.views] == [False, True, False]
    assert json.loads(header(mixed.data)["__metadata__"]["member_unit_views"]) == [{}, VIEW, {}]
    first = ensemble([clusters, units]).meta  # member 0's view is the package's unit_view
    assert first.unit_view == VIEW and first.member_unit_views == (VIEW, {})
    same = ensemble([clusters, package("t", 4, unit_view=VIEW, format_version=3)])  # one view: format 4, no list
    assert same.meta.member_unit_views == () and same.meta.unit_view == VIEW
    assert same.meta.to_header()["format_version"] == "4" and "member_unit_views" not in header(same.data)["__metadata__"]
    assert same.meta.views == (same.meta.view,) * 2 and same.meta.view is not None
    nested = ensemble([mixed, clusters])  # flattened with each member's own view
    assert nested.meta.member_unit_views == ({}, VIEW, {}, VIEW)
    assert [(m["members"], m["unit_views"]) for m in nested.meta.training["ensemble_of"]] == [
        (3, ["units", "clusters", "units"]), (1, ["clusters"])]
    assert with_metadata(back, task="u").meta.member_unit_views == back.meta.member_unit_views
    as_shown = _edit(mixed.data, meta={"member_unit_views": json.dumps([None, VIEW, None])})  # null: GET's form
    assert read_package(as_shown).meta.member_unit_views == ({}, VIEW, {})


@pytest.mark.parametrize("fields, says", [
    ({"format_version": "4"}, "member_unit_views needs format_version 5"),
    ({"format_version": "3"}, "member_unit_views needs format_version 5"),  # not "2 members need 4"
    ({"member_unit_views": json.dumps([{}, VIEW, {}])}, "lists 3 views for 2 members"),
    ({"member_unit_views": json.dumps([VIEW, {}])}, r"member_unit_views\[0\] must equal unit_view"),
    ({"member_unit_views": json.dumps([{}, {}])}, "one view for every member; write it as unit_view alone"),
    ({"member_unit_views": json.dumps([{}, {**VIEW, "clusters": 0}])}, "member_unit_views"),
    ({"member_unit_views": json.dumps({"0": {}})}, "member_unit_views"),
    ({"member_unit_views": '[{}, {"fold": "pitch_registers", "fold": "x"}]'}, "names the key 'fold' twice"),
    ({"backbone_kind": "pgslm"}, "format_version 5 and backbone_kind 'gslm'"),
])
def test_a_malformed_member_view_list_is_refused(fields, says):
    mixed = ensemble([package("t", 1), package("t", 2, unit_view=VIEW, format_version=3)])
    with pytest.raises(PackageInvalid, match=says) as e:
        read_package(_edit(mixed.data, meta=fields))
    assert "member_unit_views" in e.value.accepted


def test_the_bank_folds_each_members_rows_with_that_members_view():
    from speechprompt.unit_views import UnitView

    def soft(p):  # a smaller verbalizer: probabilities away from 0 and 1, so a fold changes them measurably
        return new_package(p.meta, p.deep_key, p.deep_value, p.input_prompt, p.separator, p.verbalizer * 0.1)

    model = lm()
    view = UnitView(C, R)
    units, clusters = soft(package("t", 1)), soft(package("t", 2, unit_view=VIEW, format_version=3))
    bank = PromptBank(model, capacity=1)
    bank.add("mixed", ensemble([units, clusters]))
    bank.add("u", units)
    bank.add("c", clusters)
    bank.add("c_plain", with_metadata(clusters, unit_view={}, format_version=1))  # clusters' tensors, no view
    g = torch.Generator().manual_seed(5)
    rows = [torch.randint(0, C * R + 2, (n,), generator=g) for n in (9, 4, 13)]
    assert any(not torch.equal(view.apply(u), u) for u in rows)  # the fold changes these rows: the test can tell
    got = bank.classify(rows, ["mixed", "u", "mixed"])
    for u, out in zip(rows[::2], got[::2], strict=True):
        want = (bank.classify([u], ["u"])[0] + bank.classify([view.apply(u)], ["c_plain"])[0]) / 2
        assert torch.allclose(out, want, atol=1e-5)
        assert torch.allclose(out, (bank.classify([u], ["u"])[0] + bank.classify([u], ["c"])[0]) / 2, atol=1e-5)
    unfolded = (bank.classify([rows[0]], ["u"])[0] + bank.classify([rows[0]], ["c_plain"])[0]) / 2
    assert not torch.allclose(got[0], unfolded, atol=1e-4)  # member 1's rows were folded, member 0's were not
    bank.add("mixed", units)  # replaced by a plain package: no member's view outlives it
    assert torch.allclose(bank.classify([rows[0]], ["mixed"])[0], bank.classify([rows[0]], ["u"])[0], atol=1e-6)


def test_check_compatible_wants_every_members_view():
    from speechprompt.codebook import Codebook
    from speechprompt.package import check_compatible

    mixed = ensemble([package("t", 1), package("t", 2, unit_view=VIEW, format_version=3)])
    g = torch.Generator().manual_seed(0)
    shapes = dict(fingerprint=FP, kind="gslm", layers=2, dim=16, vocab_size=V)
    check_compatible(mixed, **shapes, codebook=Codebook.product(torch.randn(C, 4, generator=g),
                                                                torch.randn(R, 2, generator=g)))
    with pytest.raises(PackageInvalid, match="not a product codebook"):  # member 0 reads the units; member 1 cannot
        check_compatible(mixed, **shapes, codebook=Codebook(torch.randn(C * R, 6, generator=g)))


def test_the_ensemble_command_joins_a_package_an_older_release_stored_into_one_a_strict_upload_accepts(tmp_path):
    """A package from a store written by an older release (a number spelled "05", a key named twice in ``training``)
    joins an ensemble through ``speechprompt ensemble``; the package written is canonical and read strictly."""
    import typer
    from typer.testing import CliRunner

    from speechprompt.package import NotSafetensors, PackageInvalid
    from speechprompt.training.cli import register

    app = typer.Typer()
    register(app)
    old, new = package("t", 1), package("t", 2)
    h = header(old.data)
    h["__metadata__"]["prompt_length"] = "05"
    h["__metadata__"]["training"] = '{"seed": 0, "seed": 1}'
    raw = json.dumps(h).encode()
    stored = len(raw).to_bytes(8, "little") + raw + old.data[8 + int.from_bytes(old.data[:8], "little"):]
    with pytest.raises((PackageInvalid, NotSafetensors)):
        read_package(stored)  # a new upload of these bytes is refused
    (tmp_path / "old.safetensors").write_bytes(stored)
    (tmp_path / "new.safetensors").write_bytes(new.data)
    out = tmp_path / "joined.safetensors"
    r = CliRunner().invoke(app, ["ensemble", str(tmp_path / "old.safetensors"), str(tmp_path / "new.safetensors"),
                                 "--out", str(out)])
    assert r.exit_code == 0 and "2 members" in r.output, r.output
    joined = read_package(out.read_bytes())  # strict, as an upload
    assert joined.meta.prompt_length == 5 and header(joined.data)["__metadata__"]["prompt_length"] == "5"
    assert torch.equal(joined.deep_key, old.deep_key) and torch.equal(joined.more[0].deep_key, new.deep_key)
    assert [m["training"] for m in joined.meta.training["ensemble_of"]] == [{"seed": 1}, {"seed": 2}]

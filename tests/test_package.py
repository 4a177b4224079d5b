"""Task prompt packages: round trip, digests, and every refusal."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from safetensors.torch import save as st_save

from speechprompt.package import (
    BackboneMismatch,
    NonFiniteWeights,
    NotSafetensors,
    PackageInvalid,
    PackageMeta,
    PackageTooLarge,
    check_compatible,
    check_task_name,
    new_package,
    read_package,
    with_metadata,
    write_package,
)
from speechprompt.speech_trim import SpeechTrim

L, PL, D, V = 2, 5, 8, 24


def tensors(c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(deep_key=torch.randn(L, PL, D, generator=g), deep_value=torch.randn(L, PL, D, generator=g),
                input_prompt=torch.randn(PL, D, generator=g), separator=torch.randn(D, generator=g),
                verbalizer=torch.randn(c + 4, V, generator=g))


META = PackageMeta(task="cmd", labels=("yes", "no", "up"), backbone_fingerprint="ab" * 32, created="2026-01-01T00:00:00",
                   training={"train_size": 12, "dev_accuracy": 0.5})


def test_round_trip_and_version_is_content_digest():
    data = write_package(META, **tensors())
    pkg = read_package(data)
    assert pkg.meta == META
    for n, t in tensors().items():
        assert torch.equal(getattr(pkg, n), t)
    assert pkg.version == read_package(write_package(META, **tensors())).version  # deterministic
    assert pkg.version != read_package(write_package(META, **tensors(seed=1))).version
    assert new_package(META, **tensors()).version == pkg.version


def test_refusals():
    good = tensors()
    with pytest.raises(NotSafetensors, match="pickle"):
        read_package(pickle.dumps({"deep_key": good["deep_key"]}))
    buf = io.BytesIO()
    torch.save(good, buf)
    with pytest.raises(NotSafetensors):
        read_package(buf.getvalue())
    with pytest.raises(NotSafetensors):
        read_package(b"")
    with pytest.raises(PackageTooLarge):
        read_package(write_package(META, **good), max_bytes=100)
    bad = dict(good, separator=torch.full((D,), float("nan")))
    with pytest.raises(NonFiniteWeights):
        read_package(write_package(META, **bad))
    with pytest.raises(PackageInvalid, match="verbalizer"):
        read_package(write_package(META, **tensors(c=5)))
    with pytest.raises(PackageInvalid, match="prompt shapes"):
        read_package(write_package(META, **dict(good, separator=torch.randn(D + 1))))
    with pytest.raises(PackageInvalid, match="metadata"):
        read_package(st_save({k: v.contiguous() for k, v in good.items()}))
    with pytest.raises(PackageInvalid, match="missing"):
        read_package(st_save({"deep_key": good["deep_key"]}, metadata=META.to_header()))
    header = dict(META.to_header(), task="../x")
    with pytest.raises(PackageInvalid, match="not allowed"):
        read_package(st_save(good, metadata=header))


@pytest.mark.parametrize("name", ["../x", "", "A", "-x", "a" * 65, "a/b", "a b", "ä"])
def test_task_names_refused(name):
    with pytest.raises(PackageInvalid):
        check_task_name(name)


def test_compatibility():
    pkg = read_package(write_package(META, **tensors()))
    check_compatible(pkg, fingerprint="ab" * 32, kind="gslm", layers=L, dim=D, vocab_size=V)
    with pytest.raises(BackboneMismatch) as e:
        check_compatible(pkg, fingerprint="cd" * 32, kind="gslm", layers=L, dim=D, vocab_size=V)
    assert e.value.status == 409
    with pytest.raises(BackboneMismatch):
        check_compatible(pkg, fingerprint="ab" * 32, kind="pgslm", layers=L, dim=D, vocab_size=V)
    with pytest.raises(PackageInvalid):
        check_compatible(pkg, fingerprint="ab" * 32, kind="gslm", layers=L + 1, dim=D, vocab_size=V)


def _with_header(data: bytes, **meta: str) -> bytes:
    """``data`` (a package) with its metadata fields replaced by ``meta`` (raw strings, as a header holds them)."""
    n = int.from_bytes(data[:8], "little")
    header = __import__("json").loads(data[8:8 + n])
    header["__metadata__"].update(meta)
    raw = __import__("json").dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data[8 + n:]


@pytest.mark.parametrize("field, value, says", [
    ("training", "[1, 2]", "training"),
    ("training", '"text"', "training"),
    ("labels", '"yes"', "labels"),  # a JSON string is not a list of labels (never split into characters)
    ("labels", '["a", ""]', "labels"),
    ("prompt_length", "five", "prompt_length"),
    ("backbone_kind", "wav2vec", "backbone_kind"),
    ("format_version", "0", "format_version"),
    ("format_version", "6", "format_version"),
    ("members", "3", "3 members need format_version 4"),
    ("members", "9", "members: Input should be less than or equal to 8"),
    ("members", "2.0", "members: Value error, must be a whole number"),
    ("members", "03", "members: Value error, must be a whole number written in decimal digits without leading zeros"),
    ("prompt_length", "05", "prompt_length: Value error, must be a whole number"),
    ("format_version", "3.0", "format_version: Value error, must be a whole number written in decimal digits"),
    ("format_version", " 3", "format_version: Value error, must be a whole number"),
    ("prompt_length", "5.0", "prompt_length: Value error, must be a whole number"),
    ("prompt_length", "+5", "prompt_length: Value error, must be a whole number"),
    ("unit_view", '{"fold": "pitch_registers", "clusters": 300, "registers": 4, "clusters": 100}',
     "metadata field 'unit_view' names the key 'clusters' twice"),
    ("training", '{"epochs": 1, "epochs": 2}', "metadata field 'training' names the key 'epochs' twice"),
    ("unit_view", '{"fold": "pitch_registers", "clusters": 300, "registers": 4}', "unit_view needs format_version 3"),
    ("unit_view", '{"fold": ', "metadata field 'unit_view' is not valid JSON"),  # accepted still says what it must be
    ("readout", "max", "readout"),
    ("readout", "mean", "readout 'mean' needs format_version 2"),  # a mean package marked as format 1
    ("speech_trim", '{"threshold": 1.5}', "threshold must be a probability"),
    ("speech_trim", '{"margin": 0.25}', "speech_trim must be an object with some of"),  # a misspelt key
    ("speech_trim", '[0.5, 0.25]', "speech_trim"),
    ("speech_trim", '{"loud_db": "loud"}', "loud_db"),
    ("speech_trim", '{"when": "sometimes"}', "speech_trim.when must be one of"),
])
def test_every_metadata_field_is_validated(field, value, says):
    data = _with_header(write_package(META, **tensors()), **{field: value})
    with pytest.raises(PackageInvalid, match=says) as e:
        read_package(data)
    assert e.value.status == 422 and "JSON object" in e.value.accepted


def test_readout_mean_is_written_as_format_2_and_separator_packages_are_unchanged():
    import json

    def header(data):
        return json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]

    plain = write_package(META, **tensors())
    assert header(plain)["format_version"] == "1" and "readout" not in header(plain)
    mean_meta = PackageMeta(**{**META.__dict__, "readout": "mean"})
    data = write_package(mean_meta, **tensors())
    assert header(data)["format_version"] == "2" and header(data)["readout"] == "mean"
    pkg = read_package(data)
    assert pkg.meta.readout == "mean" and pkg.meta.format_version == 2
    assert read_package(plain).meta.readout == "separator" and pkg.version != read_package(plain).version
    with pytest.raises(PackageInvalid, match="readout 'mean' is for gslm backbones"):
        read_package(_with_header(data, backbone_kind="pgslm"))


def test_a_speech_trim_is_written_only_when_named_and_read_back_with_its_defaults():
    import json

    def header(data):
        return json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]

    plain = read_package(write_package(META, **tensors()))
    assert "speech_trim" not in header(plain.data) and plain.meta.trim is None
    trimmed = with_metadata(plain, speech_trim={"threshold": 0.3})  # omitted keys take their defaults
    assert trimmed.meta.trim == SpeechTrim(threshold=0.3) and trimmed.version != plain.version
    assert header(trimmed.data)["format_version"] == "1"  # older servers serve it (untrimmed), as trained
    assert json.loads(header(trimmed.data)["speech_trim"]) == SpeechTrim(threshold=0.3).to_dict()
    for n in ("deep_key", "deep_value", "input_prompt", "separator", "verbalizer"):
        assert torch.equal(getattr(trimmed, n), getattr(plain, n))
    assert with_metadata(trimmed, speech_trim={}).version == plain.version  # the same bytes as before
    with pytest.raises(PackageInvalid, match="margin_s"):
        with_metadata(plain, speech_trim={"margin_s": 5})
    assert read_package(_with_header(plain.data, speech_trim="{}")).meta.trim is None  # {}: no trim, as written
    hostile = _with_header(plain.data, speech_trim=json.dumps({f"k{i}": "x" * 100 for i in range(20_000)}))
    with pytest.raises(PackageInvalid) as e:
        read_package(hostile)
    assert len(str(e.value)) < 2_000  # the refusal names the problem without echoing a 2 MB header
    # a trim for whole recordings only: "when" is written (and read back) only when it is not "always"
    recording = read_package(with_metadata(plain, speech_trim={"threshold": 0.3, "when": "recording"}).data)
    assert recording.meta.trim == SpeechTrim(threshold=0.3) and recording.meta.trim_when == "recording"
    assert json.loads(header(recording.data)["speech_trim"]) == {**SpeechTrim(threshold=0.3).to_dict(),
                                                                  "when": "recording"}
    always = with_metadata(plain, speech_trim={"threshold": 0.3, "when": "always"})
    assert always.version == trimmed.version and always.meta.trim_when == "always" and plain.meta.trim_when == "always"


@pytest.mark.parametrize("field", ["training", "labels"])
def test_deeply_nested_metadata_json_is_refused_not_a_recursion_error(field):
    deep = "[" * 50_000 + "]" * 50_000
    with pytest.raises(PackageInvalid, match="nested too deeply"):
        read_package(_with_header(write_package(META, **tensors()), **{field: deep}))
    nested = '{"a": ' * 40 + "1" + "}" * 40  # parses, but deeper than a training record may be
    with pytest.raises(PackageInvalid, match="deeper than"):
        read_package(_with_header(write_package(META, **tensors()), training=nested))


def test_deeply_nested_safetensors_header_is_refused_not_a_recursion_error():
    body = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(NotSafetensors, match="nested too deeply") as e:
        read_package(len(body).to_bytes(8, "little") + body)
    assert e.value.status == 415


def test_a_safetensors_header_that_names_a_key_twice_is_refused():
    import json

    data = write_package(META, **tensors())
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + n])["__metadata__"]
    assert read_package(data).meta.prompt_length == 5  # the same bytes with each key once are read
    # the Rust reader and Python's json keep different copies of a repeated key: refuse the ambiguity
    raw = data[8:8 + n].rstrip().decode()
    twice = raw[:-1] + ',"__metadata__":' + json.dumps({**meta, "task": "other"}) + "}"
    raw2 = twice.encode()
    with pytest.raises(NotSafetensors, match="the safetensors header names the key '__metadata__' twice") as e:
        read_package(len(raw2).to_bytes(8, "little") + raw2 + data[8 + n:])
    assert e.value.status == 415


def test_prompt_length_and_class_limits_are_refused_before_reading_tensors():
    from speechprompt.package import PackageOverLimit

    data = write_package(META, **tensors())
    with pytest.raises(PackageOverLimit, match="prompt_length 5 is over this server's limit of 4"):
        read_package(data, max_prompt_length=4)
    with pytest.raises(PackageOverLimit, match="3 labels are over this server's limit of 2"):
        read_package(data, max_classes=2)
    assert read_package(data, max_prompt_length=5, max_classes=3).meta == META

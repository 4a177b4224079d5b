"""Task prompt packages: one safetensors file per task version (SpeechPrompt v2 trainable parameters).

Tensors (names fixed, float32):
  ``deep_key [L, l, d]``, ``deep_value [L, l, d]`` -- deep prompts (official ``decoder.deep_{key,value}_embed_prompts.N``),
  ``input_prompt [l, d]`` -- official ``decoder.prefix_embed_prompts`` (inert when deep prompts are used; kept so an
  official checkpoint round-trips), ``separator [d]`` -- official ``decoder.sep_embed``,
  ``verbalizer [C+4, V]`` -- official ``decoder.prompt_linear_verbalizer`` (class i is output 4+i).
Metadata (safetensors string header): format version, task, labels (JSON), backbone fingerprint and kind, prompt
length, created time, training facts (JSON); optional long-audio default (JSON), read-out and speech trim (JSON:
the server trims a clip's room-tone edges with Silero VAD before this task's units, ``speech_trim.py``). A package whose
read-out is not the separator's (``readout="mean"``) is written as format version 2, so a server that predates
read-outs refuses it instead of serving it wrongly; every other package stays format version 1, byte for byte. A
speech trim does not raise the version: a server that predates it serves the untrimmed clip, which the prompts were
trained on. A package that names a unit view (``unit_view``, ``unit_views.py``: its prompts read the clusters of a
product codebook, pitch registers folded) is written as format version 3: its prompts were trained on other units.
An ensemble (``members`` K > 1: K prompt sets trained for the same task, e.g. with other seeds; the server scores each
as a row of the same forward and averages their class probabilities) is format version 4; member 0's tensors keep
the names above and member m's are prefixed ``member{m}.`` with the same shapes.
The version is the content digest of the file bytes. Reading never unpickles: safetensors is a JSON header plus
raw tensors.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .package_fields import META_ACCEPTED, MetaFields, parse_json
from .speech_trim import SpeechTrim, trim_object, trim_parts
from .unit_views import UnitView, view_object

TASK_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
NUM_SPECIAL = 4  # <s>, <pad>, </s>, <unk> lead the verbalizer outputs (official layout)
TENSORS = ("deep_key", "deep_value", "input_prompt", "separator", "verbalizer")
DEFAULT_MAX_BYTES = 64 * 1024 * 1024



class PackageError(Exception):
    """A task prompt package that cannot be served. ``code`` is stable; ``status`` the HTTP status to use."""

    code = "invalid_package"
    status = 422
    accepted = "a safetensors file with deep_key [L,l,d], deep_value [L,l,d], input_prompt [l,d], separator [d], " \
               "verbalizer [C+4,V] (float32, finite) and speechprompt metadata"


class NotSafetensors(PackageError):
    code, status = "not_safetensors", 415


class PackageTooLarge(PackageError):
    code, status = "package_too_large", 413


class PackageInvalid(PackageError):
    code, status = "invalid_package", 422


class NonFiniteWeights(PackageError):
    code, status = "non_finite_weights", 422


class PackageOverLimit(PackageError):
    """A package beyond a limit the server sets (prompt length, classes): valid, but not accepted here."""

    code, status = "package_over_limit", 422


class BackboneMismatch(PackageError):
    code, status = "backbone_mismatch", 409
    accepted = "a package trained for the backbone this server has loaded (see GET /v1/backbone)"


def check_task_name(name: str) -> str:
    """Return ``name`` if it matches ``[a-z0-9][a-z0-9_-]{0,63}``; else raise ``PackageInvalid``."""
    if not isinstance(name, str) or not TASK_NAME_RE.fullmatch(name):
        raise PackageInvalid(f"task name {name!r} is not allowed; use 1-64 characters of a-z, 0-9, '_' and '-', "
                             "starting with a letter or digit")
    return name


@dataclass(frozen=True)
class PackageMeta:
    """Metadata stored in the package header."""

    task: str
    labels: tuple[str, ...]
    backbone_fingerprint: str
    backbone_kind: str = "gslm"
    prompt_length: int = 5
    format_version: int = 1  # written as 2 when ``readout`` needs it, 3 with a ``unit_view`` (``to_header``)
    created: str = ""
    training: dict = field(default_factory=dict)
    # long-audio default of the task: {"policy": "reject" | "truncate" | "window", "window": s, "hop": s};
    # {} = the server's default. Written to the header only when set (older packages' bytes are unchanged).
    long_audio: dict = field(default_factory=dict)
    # where the label is read (prompting.py): "separator" (SpeechPrompt v2; not written to the header) or "mean"
    readout: str = "separator"
    # the speech trim the server applies before this task's units (SpeechTrim.to_dict(), and "when": "recording" for
    # a trim applied only to clips a request calls whole recordings; {} = none). Written to the header only when set.
    speech_trim: dict = field(default_factory=dict)
    # the units its prompts read (UnitView.to_dict(): the clusters of a product codebook, pitch registers folded;
    # {} = every unit as the codebook gives it). Written to the header only when set, as format version 3.
    unit_view: dict = field(default_factory=dict)
    # prompt sets in the package: 1, or K > 1 for an ensemble (format version 4; written to the header only then)
    members: int = 1
    # an ensemble whose members read different unit views: one view object per member ({} = the units as they are),
    # member 0's equal to ``unit_view``; () when every member reads ``unit_view`` (format version 5 when set)
    member_unit_views: tuple[dict, ...] = ()

    @cached_property
    def view(self) -> UnitView | None:
        """The task's :class:`~speechprompt.unit_views.UnitView`, or None when its prompts read the units as they are."""
        return UnitView.from_dict(self.unit_view) if self.unit_view else None

    @cached_property
    def views(self) -> tuple[UnitView | None, ...]:
        """Each member's unit view (None: the units as they are), member 0 first: ``member_unit_views`` when the members
        differ, else ``view`` for every member."""
        if self.member_unit_views:
            return tuple(UnitView.from_dict(v) if v else None for v in self.member_unit_views)
        return (self.view,) * self.members

    @cached_property
    def trim(self) -> SpeechTrim | None:
        """The task's :class:`SpeechTrim`, or None when the package names none (parsed once per package)."""
        return SpeechTrim.from_dict(trim_parts(self.speech_trim)[0], partial=True) if self.speech_trim else None

    @cached_property
    def trim_when(self) -> str:
        """When the trim applies (``speech_trim.TRIM_WHEN``): ``always``, or ``recording`` (only when the request's
        ``speech_trim`` says the clip is a whole recording); ``always`` for a package without a trim."""
        return trim_parts(self.speech_trim)[1] if self.speech_trim else "always"

    def to_header(self) -> dict[str, str]:
        version = max(self.format_version, 5 if self.member_unit_views else 4 if self.members > 1 else
                      3 if self.unit_view else 1 if self.readout == "separator" else 2)
        header = {"format": "speechprompt-task", "format_version": str(version), "task": self.task,
                  "labels": json.dumps(list(self.labels)), "backbone_fingerprint": self.backbone_fingerprint,
                  "backbone_kind": self.backbone_kind, "prompt_length": str(self.prompt_length),
                  "created": self.created, "training": json.dumps(self.training, sort_keys=True)}
        if self.long_audio:
            header["long_audio"] = json.dumps(self.long_audio, sort_keys=True)
        if self.readout != "separator":
            header["readout"] = self.readout
        if self.speech_trim:  # written with every key (omitted ones at their defaults; "when" only when not "always")
            try:
                header["speech_trim"] = json.dumps(trim_object(self.speech_trim), sort_keys=True)
            except (TypeError, ValueError) as e:
                raise PackageInvalid(f"package metadata is invalid: {e}") from None
        if self.members > 1:
            header["members"] = str(self.members)
        if self.unit_view:
            try:
                header["unit_view"] = json.dumps(view_object(self.unit_view), sort_keys=True)
            except (TypeError, ValueError) as e:
                raise PackageInvalid(f"package metadata is invalid: {e}") from None
        if self.member_unit_views:
            try:
                header["member_unit_views"] = json.dumps([view_object(v) or {} for v in self.member_unit_views],
                                                         sort_keys=True)
            except (TypeError, ValueError) as e:
                raise PackageInvalid(f"package metadata is invalid: {e}") from None
        return header

    @classmethod
    def from_header(cls, h: dict[str, str] | None, *, stored: bool = False) -> PackageMeta:
        """Validate every metadata field (:class:`MetaFields`); raises ``PackageInvalid`` saying which and why.
        ``stored``: the header of a package already in a store, whose whole numbers and repeated JSON keys are read
        as older servers read them (leading zeros, a sign or spaces; the last copy of a key: accepted at upload until
        2026-12-07, refused in new uploads)."""
        if not isinstance(h, dict) or h.get("format") != "speechprompt-task":
            err = PackageInvalid("safetensors metadata lacks format=speechprompt-task")
            err.accepted = META_ACCEPTED
            raise err
        fields: dict[str, Any] = dict(h)
        for name in ("labels", "training", "long_audio", "speech_trim", "unit_view", "member_unit_views"):
            if isinstance(h.get(name), str):
                try:
                    fields[name] = parse_json(h[name], f"metadata field {name!r}", PackageInvalid, stored=stored)
                except PackageInvalid as e:
                    e.accepted = META_ACCEPTED  # what each field's JSON must be
                    raise
        fields.setdefault("training", {})
        if fields["training"] == "":
            fields["training"] = {}
        try:
            m = MetaFields.model_validate(fields, context={"stored": stored})
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'metadata'}: {err['msg']}"
                                 for err in e.errors(include_url=False)[:5])
            err = PackageInvalid(f"package metadata is invalid: {problems}")
            err.accepted = META_ACCEPTED
            raise err from None
        check_task_name(m.task)
        return cls(task=m.task, labels=tuple(m.labels), backbone_fingerprint=m.backbone_fingerprint,
                   backbone_kind=m.backbone_kind, prompt_length=m.prompt_length, format_version=m.format_version,
                   created=m.created, training=m.training,
                   long_audio=m.long_audio.model_dump(exclude_none=True) if m.long_audio else {}, readout=m.readout,
                   speech_trim=m.speech_trim or {}, unit_view=m.unit_view or {}, members=m.members,
                   member_unit_views=tuple(m.member_unit_views or ()))


@dataclass(frozen=True)
class PromptSet:
    """One member's trainable tensors: ``deep_key``/``deep_value [L, l, d]``, ``input_prompt [l, d]``,
    ``separator [d]``, ``verbalizer [C+4, V]`` (float32)."""

    deep_key: Tensor
    deep_value: Tensor
    input_prompt: Tensor
    separator: Tensor
    verbalizer: Tensor

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, n).numel() * getattr(self, n).element_size() for n in TENSORS)


def member_tensor(m: int, name: str) -> str:
    """The safetensors name of member ``m``'s tensor ``name`` (member 0: the plain name)."""
    return name if m == 0 else f"member{m}.{name}"


@dataclass(frozen=True)
class TaskPackage:
    """One immutable task version: tensors + metadata; ``version`` = first 16 hex of sha256(file bytes).

    The tensor fields are member 0's; ``more`` holds an ensemble's further members (``members`` lists all)."""

    meta: PackageMeta
    deep_key: Tensor
    deep_value: Tensor
    input_prompt: Tensor
    separator: Tensor
    verbalizer: Tensor
    version: str
    data: bytes = field(repr=False, default=b"")
    more: tuple[PromptSet, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.meta.labels)

    @property
    def members(self) -> tuple[PromptSet, ...]:
        """Every prompt set, member 0 first (one for a plain package)."""
        return (PromptSet(*(getattr(self, n) for n in TENSORS)), *self.more)

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.members)

    @property
    def mean_verbalizer(self) -> Tensor:
        """The members' mean verbalizer ``[C+4, V]`` (a plain package's own): what views of the verbalizer show."""
        return sum(m.verbalizer for m in self.members) / len(self.members)


def digest(data: bytes) -> str:
    """Content version of a package file: the first 16 hex digits of its sha256."""
    return hashlib.sha256(data).hexdigest()[:16]


def write_package(meta: PackageMeta, more: tuple[PromptSet, ...] = (), **tensors: Tensor) -> bytes:
    """Serialize to safetensors bytes (deterministic for equal content); ``more``: an ensemble's members after the
    first (``meta.members`` is set to their count + 1)."""
    sets = [PromptSet(*(tensors[n] for n in TENSORS)), *more]
    if meta.members not in (1, len(sets)):  # an ensemble's meta given without its further members
        raise PackageInvalid(f"the metadata says {meta.members} members; {len(sets)} prompt sets were given")
    ts = {member_tensor(m, n): getattr(ps, n).detach().to("cpu", torch.float32).contiguous().clone()
          for m, ps in enumerate(sets) for n in TENSORS}  # cloned: members may share a tensor (a member twice)
    return canonical_safetensors(st_save(ts, metadata=replace(meta, members=len(sets)).to_header()))


def canonical_safetensors(data: bytes) -> bytes:
    """Re-serialize the JSON header with sorted keys (the library writes metadata in hash order), so equal
    content gives equal bytes and therefore an equal version. Tensor data and offsets are unchanged."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


def new_package(meta: PackageMeta, deep_key: Tensor, deep_value: Tensor, input_prompt: Tensor, separator: Tensor,
                verbalizer: Tensor, more: tuple[PromptSet, ...] = ()) -> TaskPackage:
    """Build, serialize and re-read a package (so the result is exactly what a reader would see); ``more``: an
    ensemble's further members."""
    if not meta.created:
        meta = replace(meta, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    data = write_package(meta, more, deep_key=deep_key, deep_value=deep_value, input_prompt=input_prompt,
                         separator=separator, verbalizer=verbalizer)
    return read_package(data)


def with_metadata(pkg: TaskPackage, **changes: Any) -> TaskPackage:
    """``pkg``'s tensors with ``changes`` to its metadata (e.g. ``speech_trim={...}``): a new package, so a new version.
    Raises ``PackageInvalid`` for changes its header cannot hold (re-read like any package)."""
    meta = replace(pkg.meta, **changes)
    return read_package(write_package(meta, pkg.more, **{n: getattr(pkg, n) for n in TENSORS}))


def read_package(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES, *, max_prompt_length: int | None = None,
                 max_classes: int | None = None, stored: bool = False) -> TaskPackage:
    """Parse and validate package bytes (self-consistency only; see ``check_compatible`` for the backbone).
    ``stored``: bytes read back from a store (``PackageMeta.from_header``'s leniency), not a new upload.

    Raises ``PackageTooLarge``, ``NotSafetensors`` (e.g. a pickle, a header nested too deeply, or one naming a key
    twice unless ``stored``),
    ``PackageInvalid`` (names, shapes, dtypes, metadata), ``PackageOverLimit`` (prompt longer than
    ``max_prompt_length`` or more than ``max_classes`` labels; checked before any tensor is read) or
    ``NonFiniteWeights``.
    """
    if len(data) > max_bytes:
        raise PackageTooLarge(f"package is {len(data)} bytes; the limit is {max_bytes} bytes")
    if len(data) < 8:
        raise NotSafetensors("package is empty or truncated; expected a safetensors file")
    hlen = int.from_bytes(data[:8], "little")
    if hlen <= 0 or hlen > len(data) - 8 or data[8:9] != b"{":
        kind = "a pickle / torch.save file" if data[:1] == b"\x80" or data[:2] == b"PK" else "not safetensors"
        raise NotSafetensors(f"package bytes are {kind}; only safetensors is accepted (never pickles)")
    header = parse_json(data[8:8 + hlen], "the safetensors header", NotSafetensors, stored=stored)
    if not isinstance(header, dict):
        raise NotSafetensors("the safetensors header is not a JSON object")
    meta = PackageMeta.from_header(header.get("__metadata__"), stored=stored)
    if max_prompt_length is not None and meta.prompt_length > max_prompt_length:
        raise PackageOverLimit(f"prompt_length {meta.prompt_length} is over this server's limit of "
                               f"{max_prompt_length}; accepted: prompt_length <= {max_prompt_length}")
    if max_classes is not None and len(meta.labels) > max_classes:
        raise PackageOverLimit(f"{len(meta.labels)} labels are over this server's limit of {max_classes}; "
                               f"accepted: at most {max_classes} labels")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise NotSafetensors(f"package is not a valid safetensors file: {e}") from None
    names = [member_tensor(m, n) for m in range(meta.members) for n in TENSORS]
    missing = [n for n in names if n not in tensors]
    extra = sorted(set(tensors) - set(names))
    if missing or extra:
        raise PackageInvalid(f"package tensors missing {missing[:10]} / unexpected {extra[:10]}; expected "
                             f"{names if meta.members == 1 else f'{list(TENSORS)}, and for members 1 to {meta.members - 1} the same names prefixed member<m>.'}")
    for n in names:
        if tensors[n].dtype != torch.float32:
            raise PackageInvalid(f"tensor {n} has dtype {tensors[n].dtype}; expected float32")
        if not torch.isfinite(tensors[n]).all():
            raise NonFiniteWeights(f"tensor {n} contains NaN or Inf values")
    for m in range(1, meta.members):
        for n in TENSORS:
            if tensors[member_tensor(m, n)].shape != tensors[n].shape:
                raise PackageInvalid(f"member {m}'s {n} is {list(tensors[member_tensor(m, n)].shape)}; every member "
                                     f"has member 0's shapes ({n} {list(tensors[n].shape)})")
    dk, dv, ip, sep, vb = (tensors[n] for n in TENSORS)
    if dk.dim() != 3 or dv.shape != dk.shape:
        raise PackageInvalid(f"deep_key/deep_value must both be [L, l, d]; got {list(dk.shape)}, {list(dv.shape)}")
    L, plen, d = dk.shape
    if plen != meta.prompt_length or ip.shape != (plen, d) or sep.shape != (d,):
        raise PackageInvalid(f"prompt shapes disagree: deep [L={L}, l={plen}, d={d}], input_prompt "
                             f"{list(ip.shape)}, separator {list(sep.shape)}, prompt_length={meta.prompt_length}")
    if vb.dim() != 2 or vb.shape[0] != len(meta.labels) + NUM_SPECIAL:
        raise PackageInvalid(f"verbalizer must be [C+4, V] with C={len(meta.labels)} labels; got {list(vb.shape)}")
    more = tuple(PromptSet(*(tensors[member_tensor(m, n)] for n in TENSORS)) for m in range(1, meta.members))
    return TaskPackage(meta, dk, dv, ip, sep, vb, version=digest(data), data=data, more=more)


def check_compatible(pkg: TaskPackage, *, fingerprint: str, kind: str, layers: int, dim: int, vocab_size: int,
                     codebook: Any = None) -> None:
    """Raise ``BackboneMismatch`` (another backbone) or ``PackageInvalid`` (shapes, or a unit view the backbone's
    ``codebook`` does not have: ``unit_views.UnitView.matches``; without ``codebook`` a package that names a view is
    refused) unless ``pkg`` fits."""
    if pkg.meta.backbone_fingerprint != fingerprint or pkg.meta.backbone_kind != kind:
        err = BackboneMismatch(f"package {pkg.meta.task!r} was made for backbone {pkg.meta.backbone_kind}:"
                               f"{pkg.meta.backbone_fingerprint[:16]}, this server runs {kind}:{fingerprint[:16]}")
        err.accepted = f"a package with backbone_kind {kind!r} and backbone_fingerprint {fingerprint} (GET /v1/backbone)"
        raise err
    L, _, d = pkg.deep_key.shape
    if (L, d) != (layers, dim) or pkg.verbalizer.shape[1] != vocab_size:
        raise PackageInvalid(f"package shapes [L={L}, d={d}, V={pkg.verbalizer.shape[1]}] do not fit the backbone "
                             f"[L={layers}, d={dim}, V={vocab_size}]")
    view = next((v for v in pkg.meta.views if v is not None and (codebook is None or not v.matches(codebook))), None)
    if view is not None:
        have = UnitView.of_codebook(codebook)
        err = PackageInvalid(f"package {pkg.meta.task!r} reads a clusters view of {view.clusters} x {view.registers} units; "
                             "this backbone's codebook " + (f"is {have.clusters} x {have.registers}" if have
                                                            else "is not a product codebook"))
        err.accepted = ("a package without unit_view, or one whose unit_view (and each view in member_unit_views) "
                        "names the backbone's product codebook")
        raise err

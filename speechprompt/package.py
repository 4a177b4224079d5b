"""Task prompt packages: one safetensors file per task version (SpeechPrompt v2 trainable parameters).

Tensors (names fixed, float32):
  ``deep_key [L, l, d]``, ``deep_value [L, l, d]`` -- deep prompts (official ``decoder.deep_{key,value}_embed_prompts.N``),
  ``input_prompt [l, d]`` -- official ``decoder.prefix_embed_prompts`` (inert when deep prompts are used; kept so an
  official checkpoint round-trips), ``separator [d]`` -- official ``decoder.sep_embed``,
  ``verbalizer [C+4, V]`` -- official ``decoder.prompt_linear_verbalizer`` (class i is output 4+i).
Metadata (safetensors string header): format version, task, labels (JSON), backbone fingerprint and kind, prompt
length, created time, training facts (JSON). The version is the content digest of the file bytes. Reading never
unpickles: safetensors is a JSON header plus raw tensors.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

FORMAT_VERSION = 1
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
    format_version: int = FORMAT_VERSION
    created: str = ""
    training: dict = field(default_factory=dict)

    def to_header(self) -> dict[str, str]:
        return {"format": "speechprompt-task", "format_version": str(self.format_version), "task": self.task,
                "labels": json.dumps(list(self.labels)), "backbone_fingerprint": self.backbone_fingerprint,
                "backbone_kind": self.backbone_kind, "prompt_length": str(self.prompt_length),
                "created": self.created, "training": json.dumps(self.training, sort_keys=True)}

    @classmethod
    def from_header(cls, h: dict[str, str] | None) -> PackageMeta:
        if not h or h.get("format") != "speechprompt-task":
            raise PackageInvalid("safetensors metadata lacks format=speechprompt-task")
        try:
            meta = cls(task=h["task"], labels=tuple(json.loads(h["labels"])),
                       backbone_fingerprint=h["backbone_fingerprint"], backbone_kind=h.get("backbone_kind", "gslm"),
                       prompt_length=int(h["prompt_length"]), format_version=int(h["format_version"]),
                       created=h.get("created", ""), training=json.loads(h.get("training") or "{}"))
        except (KeyError, ValueError, TypeError) as e:
            raise PackageInvalid(f"package metadata is incomplete or malformed: {e!r}") from None
        if meta.format_version > FORMAT_VERSION:
            raise PackageInvalid(f"package format_version {meta.format_version} is newer than supported "
                                 f"({FORMAT_VERSION})")
        if not meta.labels or not all(isinstance(x, str) and x for x in meta.labels) \
                or len(set(meta.labels)) != len(meta.labels):
            raise PackageInvalid("labels must be a non-empty list of distinct non-empty strings")
        check_task_name(meta.task)
        return meta


@dataclass(frozen=True)
class TaskPackage:
    """One immutable task version: tensors + metadata; ``version`` = first 16 hex of sha256(file bytes)."""

    meta: PackageMeta
    deep_key: Tensor
    deep_value: Tensor
    input_prompt: Tensor
    separator: Tensor
    verbalizer: Tensor
    version: str
    data: bytes = field(repr=False, default=b"")

    @property
    def num_classes(self) -> int:
        return len(self.meta.labels)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, n).numel() * getattr(self, n).element_size() for n in TENSORS)


def digest(data: bytes) -> str:
    """Content version of a package file: the first 16 hex digits of its sha256."""
    return hashlib.sha256(data).hexdigest()[:16]


def write_package(meta: PackageMeta, **tensors: Tensor) -> bytes:
    """Serialize to safetensors bytes (deterministic for equal content)."""
    ts = {n: tensors[n].detach().to("cpu", torch.float32).contiguous() for n in TENSORS}
    return canonical_safetensors(st_save(ts, metadata=meta.to_header()))


def canonical_safetensors(data: bytes) -> bytes:
    """Re-serialize the JSON header with sorted keys (the library writes metadata in hash order), so equal
    content gives equal bytes and therefore an equal version. Tensor data and offsets are unchanged."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + data[8 + n:]


def new_package(meta: PackageMeta, deep_key: Tensor, deep_value: Tensor, input_prompt: Tensor, separator: Tensor,
                verbalizer: Tensor) -> TaskPackage:
    """Build, serialize and re-read a package (so the result is exactly what a reader would see)."""
    if not meta.created:
        meta = PackageMeta(**{**meta.__dict__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    data = write_package(meta, deep_key=deep_key, deep_value=deep_value, input_prompt=input_prompt,
                         separator=separator, verbalizer=verbalizer)
    return read_package(data)


def read_package(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> TaskPackage:
    """Parse and validate package bytes (self-consistency only; see ``check_compatible`` for the backbone).

    Raises ``PackageTooLarge``, ``NotSafetensors`` (e.g. a pickle), ``PackageInvalid`` (names, shapes, dtypes,
    metadata) or ``NonFiniteWeights``.
    """
    if len(data) > max_bytes:
        raise PackageTooLarge(f"package is {len(data)} bytes; the limit is {max_bytes} bytes")
    if len(data) < 8:
        raise NotSafetensors("package is empty or truncated; expected a safetensors file")
    hlen = int.from_bytes(data[:8], "little")
    if hlen <= 0 or hlen > len(data) - 8 or data[8:9] != b"{":
        kind = "a pickle / torch.save file" if data[:1] == b"\x80" or data[:2] == b"PK" else "not safetensors"
        raise NotSafetensors(f"package bytes are {kind}; only safetensors is accepted (never pickles)")
    try:
        header = json.loads(data[8:8 + hlen])
        tensors = st_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise NotSafetensors(f"package is not a valid safetensors file: {e}") from None
    meta = PackageMeta.from_header(header.get("__metadata__"))
    missing = [n for n in TENSORS if n not in tensors]
    extra = sorted(set(tensors) - set(TENSORS))
    if missing or extra:
        raise PackageInvalid(f"package tensors missing {missing} / unexpected {extra}; expected {list(TENSORS)}")
    for n in TENSORS:
        if tensors[n].dtype != torch.float32:
            raise PackageInvalid(f"tensor {n} has dtype {tensors[n].dtype}; expected float32")
        if not torch.isfinite(tensors[n]).all():
            raise NonFiniteWeights(f"tensor {n} contains NaN or Inf values")
    dk, dv, ip, sep, vb = (tensors[n] for n in TENSORS)
    if dk.dim() != 3 or dv.shape != dk.shape:
        raise PackageInvalid(f"deep_key/deep_value must both be [L, l, d]; got {list(dk.shape)}, {list(dv.shape)}")
    L, plen, d = dk.shape
    if plen != meta.prompt_length or ip.shape != (plen, d) or sep.shape != (d,):
        raise PackageInvalid(f"prompt shapes disagree: deep [L={L}, l={plen}, d={d}], input_prompt "
                             f"{list(ip.shape)}, separator {list(sep.shape)}, prompt_length={meta.prompt_length}")
    if vb.dim() != 2 or vb.shape[0] != len(meta.labels) + NUM_SPECIAL:
        raise PackageInvalid(f"verbalizer must be [C+4, V] with C={len(meta.labels)} labels; got {list(vb.shape)}")
    return TaskPackage(meta, dk, dv, ip, sep, vb, version=digest(data), data=data)


def check_compatible(pkg: TaskPackage, *, fingerprint: str, kind: str, layers: int, dim: int, vocab_size: int) -> None:
    """Raise ``BackboneMismatch`` (another backbone) or ``PackageInvalid`` (shapes) unless ``pkg`` fits."""
    if pkg.meta.backbone_fingerprint != fingerprint or pkg.meta.backbone_kind != kind:
        err = BackboneMismatch(f"package {pkg.meta.task!r} was made for backbone {pkg.meta.backbone_kind}:"
                               f"{pkg.meta.backbone_fingerprint[:16]}, this server runs {kind}:{fingerprint[:16]}")
        err.accepted = f"a package with backbone_kind {kind!r} and backbone_fingerprint {fingerprint} (GET /v1/backbone)"
        raise err
    L, _, d = pkg.deep_key.shape
    if (L, d) != (layers, dim) or pkg.verbalizer.shape[1] != vocab_size:
        raise PackageInvalid(f"package shapes [L={L}, d={d}, V={pkg.verbalizer.shape[1]}] do not fit the backbone "
                             f"[L={layers}, d={dim}, V={vocab_size}]")

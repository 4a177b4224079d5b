"""What a task prompt package's header must hold: the validation of its metadata fields (``package.py`` reads the
header, parses its JSON fields and hands them to :class:`MetaFields`; a ``ValidationError`` becomes a 422
``PackageInvalid`` naming the field)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .choices import READOUTS
from .speech_trim import trim_object
from .unit_views import view_object

FORMAT_VERSION = 5  # the highest this code reads; 1 = neither read-out nor unit view, 2 = a read-out, 3 = a unit view,
# 4 = an ensemble (more than one member), 5 = an ensemble whose members read different unit views
MAX_MEMBERS = 8  # prompt sets one package may hold (an ensemble: every member is a row of the same forward)
MAX_JSON_DEPTH = 16  # nesting allowed in the ``training`` metadata object


# what a refusal of the metadata names as accepted (PackageError.accepted)
META_ACCEPTED = ("speechprompt metadata: format 'speechprompt-task', format_version 1 to 5 (the least a field below needs, or higher), task (a task name), labels "
                 "(a JSON list of distinct non-empty strings), backbone_fingerprint, backbone_kind ('gslm' or "
                 f"'pgslm'), prompt_length (decimal digits without a sign, point or leading zero, as format_version and members), created (a string), training (a JSON object, nested at "
                 f"most {MAX_JSON_DEPTH} levels), optional long_audio (a JSON object: policy 'reject', 'truncate' or "
                 "'window', optional window and hop in seconds), optional readout ('separator' or 'mean'; 'mean' with "
                 "format_version 2 or higher and backbone_kind 'gslm'), optional speech_trim (a JSON object of threshold in "
                 "(0, 1), margin_s in [0, 2], min_cut_s in [0, 10], min_keep_s in [0.025, 10], loud_db in [-60, 0] "
                 "or null, when 'always' or 'recording'; omitted keys take their defaults), optional unit_view (a JSON object "
                 "{\"fold\": \"pitch_registers\", \"clusters\": C, \"registers\": R}; format_version 3 or higher, backbone_kind 'gslm'), optional members (an ensemble: "
                 f"2 to {MAX_MEMBERS} prompt sets, format_version 4 or higher, tensors member1.deep_key ... for each further "
                 "member, shaped as member 0's), optional member_unit_views (an ensemble whose members read different "
                 "unit views: a JSON list of one unit_view object per member, {} or null for the units as they are, member "
                 "0's equal to unit_view, not one view for all; format_version 5)")

Label = Annotated[str, Field(min_length=1, max_length=256)]


class LongAudio(BaseModel):
    """A task's default for clips over the server's ``max_audio_seconds``: ``policy`` reject (refused),
    truncate (the first ``max_audio_seconds`` scored) or window (``window``-second windows every ``hop``
    seconds, each scored, then aggregated); window/hop unset -> the server's defaults."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["reject", "truncate", "window"]
    window: Annotated[float, Field(gt=0, le=3600)] | None = None
    hop: Annotated[float, Field(gt=0, le=3600)] | None = None


class MetaFields(BaseModel):
    """The metadata a package header must hold, after its JSON fields (labels, training) are parsed."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["speechprompt-task"]
    format_version: Annotated[int, Field(ge=1, le=FORMAT_VERSION)]
    task: str
    labels: Annotated[list[Label], Field(min_length=1)]
    backbone_fingerprint: Annotated[str, Field(min_length=1, max_length=128)]
    backbone_kind: Literal["gslm", "pgslm"] = "gslm"
    prompt_length: Annotated[int, Field(ge=0)]
    created: Annotated[str, Field(max_length=64)] = ""
    training: dict[str, Any]
    long_audio: LongAudio | None = None
    readout: Literal[READOUTS] = "separator"
    speech_trim: dict[str, Any] | None = None
    unit_view: dict[str, Any] | None = None
    members: Annotated[int, Field(ge=1, le=MAX_MEMBERS)] = 1
    # one view per member; null or {} for a member that reads the units (GET /v1/tasks/{task} shows null)
    member_unit_views: Annotated[list[dict[str, Any] | None], Field(min_length=2, max_length=MAX_MEMBERS)] | None = None

    @field_validator("format_version", "prompt_length", "members", mode="before")
    @classmethod
    def _digits(cls, value: Any, info: ValidationInfo) -> Any:
        # a header holds strings: a whole number is its decimal digits ("3"), not "3.0", " 3", "+3", "03" or true
        # (one spelling per number: equal content, equal bytes, equal version). A package already in a store
        # (context stored=True) is read as older servers read it (pydantic's lax int: "05", " 5", "+5"), since they
        # accepted such spellings at upload until 2026-12-07 and an upgrade must not fail a served version.
        if (info.context or {}).get("stored"):
            return value
        if not (type(value) is int or (isinstance(value, str) and value.isascii() and value.isdigit()
                                       and (value == "0" or not value.startswith("0")))):
            raise ValueError("must be a whole number written in decimal digits without leading zeros, a sign, spaces "
                             "or a point, e.g. \"3\"")
        return value

    @field_validator("unit_view")
    @classmethod
    def _view(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return view_object(value)  # {}: no view, as to_header

    @field_validator("member_unit_views")
    @classmethod
    def _views(cls, value: list[dict[str, Any] | None] | None) -> list[dict[str, Any]] | None:
        return None if value is None else [view_object(v) or {} for v in value]

    @field_validator("speech_trim")
    @classmethod
    def _trim(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return trim_object(value) if value else None  # {}: no trim, as to_header

    @model_validator(mode="after")
    def _readout_fits(self) -> MetaFields:
        if self.readout != "separator" and self.format_version < 2:
            raise ValueError(f"readout {self.readout!r} needs format_version 2")
        if self.readout != "separator" and self.backbone_kind != "gslm":
            raise ValueError(f"readout {self.readout!r} is for gslm backbones; a {self.backbone_kind} package reads "
                             "the separator")
        if self.unit_view and (self.format_version < 3 or self.backbone_kind != "gslm"):
            raise ValueError("a unit_view needs format_version 3 and backbone_kind 'gslm'")
        if self.member_unit_views is not None:
            views = self.member_unit_views
            if self.format_version < 5 or self.backbone_kind != "gslm":
                raise ValueError("member_unit_views needs format_version 5 and backbone_kind 'gslm'")
            if len(views) != self.members:
                raise ValueError(f"member_unit_views lists {len(views)} views for {self.members} members; one per "
                                 "member, member 0 first")
            if views[0] != (self.unit_view or {}):
                raise ValueError("member_unit_views[0] must equal unit_view (member 0's view)")
            if all(v == views[0] for v in views):
                raise ValueError("member_unit_views names one view for every member; write it as unit_view alone")
        if self.members > 1 and self.format_version < 4:
            raise ValueError(f"{self.members} members need format_version 4")
        return self

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct")
        return labels

    @field_validator("training")
    @classmethod
    def _shallow(cls, training: dict[str, Any]) -> dict[str, Any]:
        if json_depth(training) > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        return training


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (scalars 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, d + 1))
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
    return deepest


class _DuplicateKey(ValueError):
    """A JSON object with a key twice (raised inside ``json.loads`` by :func:`_distinct_keys`)."""


def _distinct_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def parse_json(text: str | bytes, what: str, error: type[Exception], *, stored: bool = False) -> Any:
    """``json.loads`` that raises ``error`` (a ``package.PackageError``) for malformed or too deeply nested JSON,
    and for an object that names a key twice (parsers disagree on which value such a header means: Python's keeps
    the last, another reader may keep the first). ``stored``: text of a package already in a store, where a key
    named twice keeps its last value, as servers until 2026-12-07 read it (they stored such uploads)."""
    try:
        return json.loads(text, object_pairs_hook=None if stored else _distinct_keys)
    except _DuplicateKey as e:
        raise error(f"{what} names the key {e.args[0][:64]!r} twice; every key may appear once") from None
    except RecursionError:
        raise error(f"{what} is JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{what} is not valid JSON: {e}") from None


__all__ = ["FORMAT_VERSION", "MAX_JSON_DEPTH", "MAX_MEMBERS", "META_ACCEPTED", "LongAudio", "MetaFields", "json_depth", "parse_json"]

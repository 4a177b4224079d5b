"""What a query, path or header parameter accepts, in words, from the route's own declaration.

Used by the validation handler (``handlers.py``) to give a ``400 invalid_request`` the same ``accepted`` member as
every other problem: ``top_k=abc`` -> ``"top_k: an integer, >= 1, <= 1000 (how many classes to return, best
first)"``: type, bounds, then the parameter's OpenAPI description; a ``pattern`` of alternatives
(``^(reject|truncate|window)$``) reads as ``"one of: reject, truncate, window"``. Nothing here is hand-written per
parameter, so a new parameter explains itself.
"""

from __future__ import annotations

import re
import types
from typing import Any, Union, get_args, get_origin

from starlette.requests import Request

_TYPES = {int: "an integer", float: "a number", bool: "true or false", str: "text"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("max_length", "at most {} characters"),
           ("min_length", "at least {} characters"))
_ALTERNATIVES = re.compile(r"^\^\(([\w-]+(?:\|[\w-]+)+)\)\$$")


def _type_words(annotation: Any) -> str | None:
    if get_origin(annotation) in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else annotation
    return _TYPES.get(annotation)


def _params(dependant) -> list:
    """Every query / path / header parameter of a route, its sub-dependencies' included."""
    out = list(dependant.query_params) + list(dependant.path_params) + list(dependant.header_params)
    for sub in dependant.dependencies:
        out += _params(sub)
    return out


def describe(field) -> str | None:
    """``field`` (FastAPI's ``ModelField`` of a parameter) -> what it accepts, e.g. ``"an integer, >= 1 (...)"``."""
    info = field.field_info
    parts = [w] if (w := _type_words(info.annotation)) else []
    for meta in info.metadata:
        pattern = getattr(meta, "pattern", None)
        if pattern and (m := _ALTERNATIVES.match(pattern)):
            parts = ["one of: " + ", ".join(m.group(1).split("|"))]
        elif pattern:
            parts.append(f"matching {pattern}")
        for attr, words in _BOUNDS:
            if (v := getattr(meta, attr, None)) is not None:
                parts.append(words.format(v) if "{}" in words else f"{words} {v:g}")
        if getattr(meta, "allow_inf_nan", True) is False:
            parts.append("finite")
    words = ", ".join(parts)
    if info.description:
        words = f"{words} ({info.description})" if words else info.description
    return words or None


def accepted(request: Request, locs: list[tuple]) -> str | None:
    """``"name: what it accepts; ..."`` for the parameters named by validation errors' ``loc`` tuples (``("query",
    "top_k")``), from the matched route's declaration; None when the route or a parameter is unknown."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return None
    fields = {f.alias: f for f in _params(dependant)}
    said = []
    for loc in locs:
        field = fields.get(loc[1]) if len(loc) >= 2 and loc[0] in ("query", "path", "header") else None
        if field is not None and (words := describe(field)) and f"{loc[1]}: {words}" not in said:
            said.append(f"{loc[1]}: {words}")
    return "; ".join(said) or None


__all__ = ["accepted", "describe"]

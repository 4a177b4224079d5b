"""Request bodies: read with a byte cap, then take the payload from a multipart field or the raw body.

The cap is enforced while streaming (a lying or absent Content-Length cannot make the server buffer more
than ``limit`` bytes); multipart is parsed from the capped buffer. Nothing here looks at file names or
trusts the declared media type of the payload itself: audio and packages are recognised from their bytes,
so a part sent without a filename (``curl -F 'audio=<clip.wav'``), or with only ``filename*``, is taken
as it is. A client that goes away mid-upload is a ``ClientGone`` (499), not a server error; one whose body
has not arrived in full ``timeout_s`` after the headers is a ``RequestTimeout`` (408, connection closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import python_multipart as multipart
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from .errors import BadRequest, ClientGone, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the payload


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without parameters ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_capped(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole body, refusing more than ``limit`` bytes with PayloadTooLarge (413) and a body still
    incomplete after ``timeout_s`` seconds (None: no deadline) with RequestTimeout (408)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest(f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the body is {int(declared)} bytes; the limit is {limit} bytes",
                                  accepted=f"at most {limit} bytes")
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                if len(buf) + len(chunk) > limit:
                    raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes",
                                          accepted=f"at most {limit} bytes")
                buf += chunk
    except ClientDisconnect:
        raise ClientGone(f"the client disconnected after {len(buf)} bytes of the body") from None
    except TimeoutError:
        raise RequestTimeout(f"the body was not complete {timeout_s:g} s after the headers "
                             f"({len(buf)} bytes received)",
                             accepted=f"the whole body within {timeout_s:g} s") from None
    return bytes(buf)


MAX_PARTS = 16


def _parts(content_type: str, body: bytes) -> dict[str, bytearray]:
    """Raw bytes of each named part of a multipart/form-data ``body`` (first part of a name wins). File name
    or not, ``filename*`` or not, the bytes are kept as sent: what they are is decided from the bytes."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("the multipart Content-Type has no boundary")
    parts: dict[str, bytearray] = {}
    state = {"field": b"", "value": b"", "name": None, "count": 0}

    def on_part_begin() -> None:
        state.update(name=None, field=b"", value=b"")
        state["count"] += 1
        if state["count"] > MAX_PARTS:
            raise BadRequest(f"more than {MAX_PARTS} parts in the multipart body")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        if state["field"].lower() == b"content-disposition":
            _, opts = parse_options_header(state["value"])
            name = opts.get(b"name")
            state["name"] = name.decode("utf-8", "replace") if name is not None else None
        state.update(field=b"", value=b"")

    def on_headers_finished() -> None:
        if state["name"] is not None and state["name"] not in parts:
            parts[state["name"]] = bytearray()
        else:
            state["name"] = None  # no name, or a repeated one: ignored

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["name"] is not None:
            parts[state["name"]] += data[start:end]

    parser = multipart.MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data})
    try:
        parser.write(body)
        parser.finalize()
    except multipart.exceptions.FormParserError as e:
        raise BadRequest(f"malformed multipart body: {e}") from None
    return parts


async def multipart_field(request: Request, body: bytes, field: str, limit: int) -> bytes:
    """The bytes of field ``field`` in a multipart/form-data ``body``, with or without a filename."""
    part = _parts(request.headers.get("content-type", ""), body).get(field)
    if part is None:
        raise BadRequest(f"the multipart body has no field {field!r}",
                         accepted=f"multipart/form-data with a field named {field!r}")
    data = bytes(part)
    if len(data) > limit:
        raise PayloadTooLarge(f"field {field!r} is {len(data)} bytes; the limit is {limit} bytes",
                              accepted=f"at most {limit} bytes")
    return data


async def payload(request: Request, *, field: str, limit: int, raw_ok: Callable[[str], bool],
                  accepted: str, timeout_s: float | None = None) -> bytes:
    """The payload of a request: multipart field ``field``, or the raw body when ``raw_ok(media type)``.

    Raises PayloadTooLarge (413), UnsupportedMediaType (415) for other body types, BadRequest (400) for a
    malformed multipart body, a missing field or an empty payload (0 bytes, raw or in the field), RequestTimeout
    (408) when the body takes longer than ``timeout_s``.
    """
    mtype = media_type(request)
    if mtype == "multipart/form-data":
        body = await read_capped(request, limit + MULTIPART_OVERHEAD, timeout_s)
        data = await multipart_field(request, body, field, limit)
        if not data:
            raise BadRequest(f"the multipart field {field!r} is empty (0 bytes)", accepted=accepted)
        return data
    if not raw_ok(mtype):
        raise UnsupportedMediaType(f"request bodies of type {mtype!r} are not accepted", accepted=accepted)
    data = await read_capped(request, limit, timeout_s)
    if not data:
        raise BadRequest(f"the request has no body: send the {field} as the raw body or as the multipart field "
                         f"{field!r}", accepted=accepted)
    return data


VIDEO_TYPES = ("video/mp4", "video/webm", "video/3gpp", "video/quicktime", "video/x-matroska")  # their sound track


def audio_body_ok(mtype: str) -> bool:
    """Raw audio bodies: ``audio/*``, the video containers whose sound track is decoded (``VIDEO_TYPES``),
    ``application/octet-stream`` or no type at all (RFC 9110 8.3)."""
    return mtype in ("", "application/octet-stream", *VIDEO_TYPES) or mtype.startswith("audio/")


def package_body_ok(mtype: str) -> bool:
    """Raw package bodies: ``application/octet-stream``, ``application/vnd.safetensors`` or no type."""
    return mtype in ("", "application/octet-stream", "application/vnd.safetensors", "application/safetensors")

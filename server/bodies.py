"""Request bodies: read with a byte cap, then take the payload from a multipart field or the raw body.

The cap is enforced while streaming (a lying or absent Content-Length cannot make the server buffer more
than ``limit`` bytes); multipart is parsed from the capped buffer. Nothing here looks at file names or
trusts the declared media type of the payload itself: audio and packages are recognised from their bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the payload


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without parameters ('' when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes with PayloadTooLarge (413)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest(f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the body is {int(declared)} bytes; the limit is {limit} bytes",
                                  accepted=f"at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes", accepted=f"at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _replay(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def multipart_field(request: Request, body: bytes, field: str, limit: int) -> bytes:
    """The bytes of file field ``field`` in a multipart/form-data ``body``."""
    parser = MultiPartParser(request.headers, _replay(body), max_files=4, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise BadRequest(f"malformed multipart body: {e.message}") from None
    try:
        part = form.get(field)
        if part is None:
            raise BadRequest(f"the multipart body has no field {field!r}",
                             accepted=f"multipart/form-data with a file field named {field!r}")
        data = await part.read() if isinstance(part, UploadFile) else str(part).encode()
    finally:
        await form.close()
    if len(data) > limit:
        raise PayloadTooLarge(f"field {field!r} is {len(data)} bytes; the limit is {limit} bytes",
                              accepted=f"at most {limit} bytes")
    return data


async def payload(request: Request, *, field: str, limit: int, raw_ok: Callable[[str], bool],
                  accepted: str) -> bytes:
    """The payload of a request: multipart field ``field``, or the raw body when ``raw_ok(media type)``.

    Raises PayloadTooLarge (413), UnsupportedMediaType (415) for other body types, BadRequest (400).
    """
    mtype = media_type(request)
    if mtype == "multipart/form-data":
        body = await read_capped(request, limit + MULTIPART_OVERHEAD)
        return await multipart_field(request, body, field, limit)
    if not raw_ok(mtype):
        raise UnsupportedMediaType(f"request bodies of type {mtype!r} are not accepted", accepted=accepted)
    return await read_capped(request, limit)


def audio_body_ok(mtype: str) -> bool:
    """Raw audio bodies: ``audio/*``, ``application/octet-stream`` or no type at all (RFC 9110 8.3)."""
    return mtype in ("", "application/octet-stream") or mtype.startswith("audio/")


def package_body_ok(mtype: str) -> bool:
    """Raw package bodies: ``application/octet-stream``, ``application/vnd.safetensors`` or no type."""
    return mtype in ("", "application/octet-stream", "application/vnd.safetensors", "application/safetensors")

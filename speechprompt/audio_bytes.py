"""What audio bytes are, before decoding: a readable guess of a payload's kind (``describe_bytes``), the WAV codec
named in a ``fmt`` chunk (``wav_codec``), repair of a WAV data-chunk size a streaming recorder left too small
(``_repair_wav_sizes``), and an MP3 frame walk that counts samples from the bitstream (``mp3_frames``). Used by
``audio.decode_audio``; no decoding here, no errors of its own.
"""

from __future__ import annotations

import io
import os
import struct
from contextlib import contextmanager
from typing import BinaryIO, Iterator


def describe_bytes(head: bytes) -> str:
    """Say what a payload looks like from its first bytes (magic numbers), for error messages."""
    if not head:
        return "an empty payload (0 bytes)"
    if head[:4] == b"RIFF":
        kind = head[8:12]
        if kind != b"WAVE":
            return f"a RIFF container of type '{kind.decode('latin-1').strip()}' (not WAVE)"
        codec = wav_codec(head)
        return f"a RIFF/WAVE (WAV) file with codec {codec} (unsupported, or a damaged header)" if codec \
            else "a RIFF/WAVE (WAV) file with an unsupported codec or a damaged header"
    if head[:4] == b"fLaC":
        return "a FLAC stream that could not be decoded (damaged?)"
    if head[:4] == b"OggS":
        codec = next((n for m, n in ((b"\x01vorbis", "Vorbis"), (b"OpusHead", "Opus"), (b"Speex", "Speex"),
                                     (b"\x7fFLAC", "FLAC"), (b"theora", "Theora")) if m in head), "unknown")
        return f"an Ogg container with {codec} content"
    if head[:3] == b"ID3" or (head[0] == 0xFF and len(head) > 1 and head[1] & 0xE0 == 0xE0):
        if head[:3] != b"ID3" and head[1] & 0x06 == 0:
            return "AAC in ADTS frames"
        return "MPEG audio (ID3 tag or frame sync) that could not be decoded"
    if head[4:8] == b"ftyp":
        return f"an MP4/M4A/AAC file (ISO media, brand {head[8:12]!r})"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "a WebM/Matroska (EBML) file"
    if head[:2] == b"PK":
        return "a zip archive"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return f"a Python pickle (protocol {head[1]}); pickles are never loaded"
    if head[:6] == b"\x93NUMPY":
        return "a NumPy .npy array (send an audio file instead)"
    text = head.lstrip().lower()
    if text[:1] in (b"{", b"["):
        return "JSON text"
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if text.startswith(b"<"):
        return "XML/markup text"
    if any(_is_text(head[:len(head) - cut]) for cut in range(4)):  # the 64-byte head may split a character
        return "plain text"
    return f"unrecognised binary data (starts with {head[:8].hex(' ')})"


WAV_CODECS = {0x0001: "PCM", 0x0002: "Microsoft ADPCM", 0x0003: "IEEE float", 0x0006: "A-law", 0x0007: "u-law",
              0x0011: "IMA ADPCM", 0x0016: "ITU G.723 ADPCM", 0x0031: "GSM 6.10", 0x0038: "NMS ADPCM",
              0x0040: "ITU G.721 ADPCM", 0x0045: "ITU G.726 ADPCM", 0x0050: "MPEG", 0x0055: "MPEG Layer III",
              0x0064: "IBM CVSD", 0x0092: "Dolby AC-3", 0x00FF: "AAC", 0x1610: "AAC (HE)", 0x2000: "Dolby AC-3",
              0x0057: "AMR-NB", 0x0058: "AMR-WB", 0x00A0: "Siren", 0x0022: "TrueSpeech", 0xFFFE: "extensible"}


def wav_codec(head: bytes) -> str | None:
    """The codec a WAV's ``fmt `` chunk names (e.g. ``"GSM 6.10 (format tag 0x0031)"``), or None when the
    first bytes hold no fmt chunk."""
    pos = 12
    while pos + 10 <= len(head):
        cid, size = struct.unpack("<4sI", head[pos:pos + 8])
        if cid == b"fmt ":
            tag = struct.unpack("<H", head[pos + 8:pos + 10])[0]
            return f"{WAV_CODECS.get(tag, 'unknown')} (format tag 0x{tag:04x})"
        pos += 8 + size + (size & 1)
    return None


def _is_text(data: bytes) -> bool:
    try:
        return data.decode("utf-8").replace("\n", "").replace("\r", "").replace("\t", "").isprintable()
    except UnicodeDecodeError:
        return False


@contextmanager
def _binary(source: bytes | bytearray | memoryview | str | os.PathLike) -> Iterator[BinaryIO]:
    """Open bytes or a path as a seekable binary file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source))
    else:
        with open(source, "rb") as fh:
            yield fh


def _chunks_tile(fh: BinaryIO, pos: int, total: int) -> bool:
    """True when bytes [pos, total) are a sequence of RIFF chunks (printable ids) ending exactly at EOF."""
    while pos + 8 <= total:
        fh.seek(pos)
        cid, size = struct.unpack("<4sI", fh.read(8))
        if not all(0x20 <= c <= 0x7E for c in cid):
            return False
        pos += 8 + size + (size & 1)
    return total <= pos <= total + 1  # an odd last chunk may miss its pad byte


def _repair_wav_sizes(fh: BinaryIO) -> BinaryIO | None:
    """A patched in-memory copy when a WAV's data chunk size is too small (0 or less than the sample bytes
    that follow: streamed recorders), else None. libsndfile trusts the field and would silently read fewer
    (or zero) frames; 0xFFFFFFFF and sizes beyond EOF it already clamps to the file, so they are left alone.
    """
    total = fh.seek(0, io.SEEK_END)
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, align = 12, 1
    while pos + 8 <= total:
        fh.seek(pos)
        cid, size = struct.unpack("<4sI", fh.read(8))
        if cid == b"fmt ":
            fmt = fh.read(16)
            align = max(1, struct.unpack("<H", fmt[12:14])[0]) if len(fmt) == 16 else 1
        elif cid == b"data":
            avail = total - pos - 8  # bytes after the data chunk header
            if size >= avail or _chunks_tile(fh, pos + 8 + size + (size & 1), total):
                return None
            fh.seek(0)
            buf = bytearray(fh.read())
            buf[4:8] = struct.pack("<I", min(total - 8, 0xFFFFFFFF))
            buf[pos + 4:pos + 8] = struct.pack("<I", avail - avail % align)
            return io.BytesIO(bytes(buf))
        pos += 8 + size + (size & 1)
    return None


_MP3_BITRATES = {  # kb/s by (MPEG-1?, layer) and bitrate index 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_frames(data: bytes) -> tuple[int, int]:
    """Walk an MPEG audio bitstream's frame headers: ``(samples per channel, sample rate Hz)``, counted from
    the frames themselves (a Xing/Info frame counts as one frame), not from any header's total."""
    pos, total, rate = 0, 0, 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2: 10-byte header + syncsafe size (+ footer)
        size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
        pos = 10 + size + (10 if data[5] & 0x10 else 0)
    end = len(data)
    while pos + 4 <= end:
        b1, b2 = data[pos + 1], data[pos + 2]
        version, layer, index, sr = (b1 >> 3) & 3, 4 - ((b1 >> 1) & 3), b2 >> 4, (b2 >> 2) & 3
        if data[pos] != 0xFF or b1 & 0xE0 != 0xE0 or version == 1 or layer == 4 or index in (0, 15) or sr == 3:
            nxt = data.find(b"\xff", pos + 1)  # resynchronise (junk, a trailing tag)
            if nxt < 0:
                break
            pos = nxt
            continue
        mpeg1 = version == 3
        this_rate = _MP3_RATES[version][sr]
        kbps = _MP3_BITRATES[(mpeg1, layer) if mpeg1 else (False, 1 if layer == 1 else 2)][index - 1]
        pad = (b2 >> 1) & 1
        if layer == 1:
            size, spf = (12 * kbps * 1000 // this_rate + pad) * 4, 384
        else:
            spf = 1152 if (layer == 2 or mpeg1) else 576
            size = spf // 8 * kbps * 1000 // this_rate + pad
        if rate and this_rate != rate:  # a false sync inside data: skip a byte
            pos += 1
            continue
        rate = this_rate
        total += spf
        pos += max(size, 1)
    return total, rate

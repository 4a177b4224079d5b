"""The client's content type for a raw upload (clients/calls.py ``sniff_content_type``): from the file name,
else from the bytes, for the formats the server decodes (phone and browser containers included)."""

from __future__ import annotations

import pytest

from clients.calls import sniff_content_type


@pytest.mark.parametrize("head,ctype", [
    (b"RIFF\0\0\0\0WAVEfmt ", "audio/wav"), (b"fLaC\0\0\0\x22", "audio/flac"), (b"OggS\0\x02", "audio/ogg"),
    (b"ID3\x04\0\0", "audio/mpeg"), (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "audio/mp4"),
    (b"\x00\x00\x00\x18ftyp3gp4", "audio/mp4"), (b"\x1aE\xdf\xa3\x9fB\x86\x81", "audio/webm"),
    (b"\xff\xf1\x50\x80\x02\x1f\xfc", "audio/aac"), (b"\xff\xfb\x90\x64", "audio/mpeg"),
    (b"PK\x03\x04", "application/octet-stream"),
])
def test_type_from_the_bytes(head, ctype):
    assert sniff_content_type(head + bytes(32)) == ctype


@pytest.mark.parametrize("name,ctype", [
    ("memo.m4a", "audio/mp4"), ("clip.mp4", "video/mp4"), ("rec.webm", "video/webm"), ("a.wav", "audio/wav"),
    ("call.3gp", "audio/3gpp"), ("notes.txt", "application/octet-stream"),
    ("film.avi", "application/octet-stream"), ("film.mpg", "application/octet-stream"),  # not decoded: sniffed
])
def test_type_from_the_name_wins_and_only_decoded_video_types_pass(name, ctype):
    assert sniff_content_type(b"\x00" * 16, name) == ctype


def test_the_client_sends_raw_video_types_the_server_takes():
    from clients.calls import VIDEO_TYPES
    from server.bodies import VIDEO_TYPES as SERVER
    from server.bodies import audio_body_ok

    assert VIDEO_TYPES == SERVER and all(audio_body_ok(t) for t in VIDEO_TYPES)
    assert not audio_body_ok("video/x-msvideo")

"""multipart/mixed bodies (RFC 2046 §5.1) as 3GPP TS 24.379 §6.5 uses them."""

from __future__ import annotations

import pytest

from emulator.sip import BodyPart
from emulator.sip import ContentType
from emulator.sip import MultipartBody
from emulator.sip import MultipartError

from .support import BINARY_PART
from .support import SDP

XML = b'<?xml version="1.0" encoding="UTF-8"?>\r\n<mcpttinfo xmlns="urn:3gpp:ns:mcpttInfo:1.0"/>'
RLS = b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"/>'


def test_build_puts_sdp_first_and_keeps_the_rest_in_order() -> None:
    """24.379 §6.5: application/sdp is the first part of a multipart body."""
    parts = [
        BodyPart("application/vnd.3gpp.mcptt-info+xml", XML),
        BodyPart("application/resource-lists+xml", RLS),
        BodyPart("application/sdp", SDP),
    ]
    body = MultipartBody.build(parts)
    assert [p.mime_type for p in body.parts] == [
        "application/sdp", "application/vnd.3gpp.mcptt-info+xml", "application/resource-lists+xml",
    ]
    data = body.to_bytes()
    assert data.startswith(f"--{body.boundary}\r\nContent-Type: application/sdp\r\n\r\n".encode())


def test_build_orders_sdp_with_parameters_too() -> None:
    body = MultipartBody.build([BodyPart("text/plain", b"x"),
                                BodyPart("Application/SDP; charset=utf-8", SDP)])
    assert body.parts[0].content == SDP


def test_each_build_gets_a_fresh_boundary() -> None:
    a = MultipartBody.build([BodyPart("text/plain", b"a")])
    b = MultipartBody.build([BodyPart("text/plain", b"a")])
    assert a.boundary != b.boundary
    assert 0 < len(a.boundary) <= 70  # RFC 2046 §5.1.1
    assert ContentType.parse(a.content_type).param("boundary") == a.boundary
    assert ContentType.parse(a.content_type).mime_type == "multipart/mixed"


def test_round_trip_with_binary_parts() -> None:
    parts = [
        BodyPart("application/sdp", SDP),
        BodyPart("application/octet-stream", BINARY_PART,
                 (("Content-ID", "<bin@example.com>"), ("Content-Disposition", "render"))),
        BodyPart("application/octet-stream", b"\r\n\r\n"),  # nothing but line breaks
        BodyPart("text/plain", b""),  # empty content
        BodyPart("application/vnd.3gpp.mcptt-info+xml", XML),
    ]
    body = MultipartBody(tuple(parts), "b0undary")
    data = body.to_bytes()
    again = MultipartBody.parse(data, "b0undary")
    assert again.parts == body.parts
    assert again.to_bytes() == data
    assert again.parts[1].header("content-id") == "<bin@example.com>"
    assert again.find("application/octet-stream") == [parts[1], parts[2]]
    assert again.find("image/png") == []


def test_wire_format() -> None:
    body = MultipartBody((BodyPart("text/plain", b"hi", (("Content-ID", "<1>"),)),), "B")
    assert body.to_bytes() == (b"--B\r\nContent-Type: text/plain\r\nContent-ID: <1>\r\n\r\n"
                               b"hi\r\n--B--\r\n")


def test_preamble_and_epilogue_are_ignored() -> None:
    data = (b"This is the preamble.\r\n--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
            b"--B--\r\nThis is the epilogue.\r\n")
    body = MultipartBody.parse(data, "B")
    assert [p.content for p in body.parts] == [b"body"]


def test_quoted_boundary_from_content_type() -> None:
    ct = ContentType.parse('multipart/mixed; boundary="gc0p4Jq0M2Yt08j34c0p"')
    boundary = ct.param("boundary")
    assert boundary == "gc0p4Jq0M2Yt08j34c0p"
    data = b"--gc0p4Jq0M2Yt08j34c0p\r\n\r\nplain\r\n--gc0p4Jq0M2Yt08j34c0p--"
    assert MultipartBody.parse(data, boundary).parts[0].content == b"plain"


def test_part_without_content_type_is_text_plain() -> None:
    """RFC 2046 §5.1: the default Content-Type of a body part is text/plain."""
    data = b"--B\r\n\r\nno headers here\r\n--B\r\nContent-ID: <x>\r\n\r\nstill none\r\n--B--\r\n"
    body = MultipartBody.parse(data, "B")
    assert [p.content_type for p in body.parts] == ["text/plain", "text/plain"]
    assert [p.content for p in body.parts] == [b"no headers here", b"still none"]
    assert body.parts[1].header("Content-ID") == "<x>"


def test_folded_part_header() -> None:
    data = b"--B\r\nContent-Type: application/xml;\r\n charset=utf-8\r\n\r\n<a/>\r\n--B--\r\n"
    (part,) = MultipartBody.parse(data, "B").parts
    assert part.content_type == "application/xml; charset=utf-8"
    assert part.mime_type == "application/xml"


@pytest.mark.parametrize("data", [
    b"--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n",  # no close delimiter at all
    b"--B\r\nContent-Type: text/plain\r\n\r\nbody",  # truncated inside the part
    b"--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n--B",  # delimiter without CRLF or --
    b"--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n--B\r\n",  # next part never ends
    b"--B",  # delimiter line not terminated
])
def test_missing_close_delimiter(data: bytes) -> None:
    with pytest.raises(MultipartError):
        MultipartBody.parse(data, "B")


@pytest.mark.parametrize(("data", "boundary"), [
    (b"--A\r\n\r\nx\r\n--A--", "B"),  # boundary not in the body
    (b"--Bjunk\r\n\r\nx\r\n--B--", "B"),  # junk after the delimiter
    (b"--B\r\nContent-Type text/plain\r\n\r\nx\r\n--B--", "B"),  # header without colon
    (b"--B\r\nContent-Type: text/plain\r\nx\r\n--B--", "B"),  # no blank line after headers
    (b"--B\r\nContent-Type: \xff\xfe\r\n\r\nx\r\n--B--", "B"),  # headers not UTF-8
    (b"--\r\n\r\nx\r\n----", ""),  # empty boundary
    (b"x", "b" * 71),  # boundary longer than 70 (RFC 2046 §5.1.1)
    (b"--B\r\n--B--\r\n", "B"),  # the next delimiter right after the first: no part at all
])
def test_malformed_multipart(data: bytes, boundary: str) -> None:
    with pytest.raises(MultipartError):
        MultipartBody.parse(data, boundary)


def test_multipart_error_is_a_value_error() -> None:
    assert issubclass(MultipartError, ValueError)


def test_part_count_limit() -> None:
    """More than 32 parts is refused (a cheap bomb otherwise)."""
    def body_of(n: int) -> bytes:
        return MultipartBody(tuple(BodyPart("text/plain", str(i).encode()) for i in range(n)),
                             "B").to_bytes()

    assert len(MultipartBody.parse(body_of(32), "B").parts) == 32
    with pytest.raises(MultipartError):
        MultipartBody.parse(body_of(33), "B")

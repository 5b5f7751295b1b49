"""Stream framing (RFC 3261 §18.3, RFC 5626 §3.5.1): messages cut by Content-Length only."""

from __future__ import annotations

import re

import pytest

from emulator.sip import PING
from emulator.sip import PONG
from emulator.sip import KeepAlive
from emulator.sip import ParserLimits
from emulator.sip import RemoteProtocolError
from emulator.sip import StreamFramer
from emulator.sip import check_request
from emulator.sip import parse_message

from .support import CANONICAL
from .support import INVITE
from .support import MESSAGE
from .support import REGISTER
from .support import fixture
from .support import fixtures_of_kind

_CONTENT_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:")


def _framable_fixtures() -> list[str]:
    """RFC 4475 valid requests carrying a Content-Length (§18.3 makes it mandatory on streams)."""
    names = []
    for name in fixtures_of_kind("valid"):
        data = fixture(name)
        head = data.split(b"\r\n\r\n", 1)[0]
        if data.split(b" ", 1)[0] != b"SIP/2.0" and _CONTENT_LENGTH.search(head):
            names.append(name)
    return names


FRAMABLE = _framable_fixtures()
# dblreq's trailing octets are a second, mis-framed message on a stream: cut the REGISTER.
MESSAGES = {name: fixture(name) for name in FRAMABLE if name != "dblreq.dat"}
_DBLREQ = fixture("dblreq.dat")
MESSAGES["dblreq.dat(register)"] = _DBLREQ[: _DBLREQ.index(b"\r\n\r\n") + 4]
MESSAGES.update({f"canonical-{k}": v for k, v in CANONICAL.items()})


def test_the_fixture_selection_is_not_empty() -> None:
    assert len(FRAMABLE) == 11  # 13 valid, minus the 2 responses
    assert "mpart01.dat" in FRAMABLE and "wsinv.dat" in FRAMABLE
    assert parse_message(MESSAGES["dblreq.dat(register)"], stream=True).body == b""


def frames(framer: StreamFramer, chunks: list[bytes]) -> list[bytes | KeepAlive]:
    out: list[bytes | KeepAlive] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_whole_message(name: str) -> None:
    data = MESSAGES[name]
    framer = StreamFramer()
    assert framer.feed(data) == [data]
    assert framer.buffered == 0
    msg = parse_message(data, stream=True)
    if msg.__class__.__name__ == "Request":
        check_request(msg)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_one_byte_at_a_time(name: str) -> None:
    data = MESSAGES[name]
    framer = StreamFramer()
    out = frames(framer, [data[i:i + 1] for i in range(len(data))])
    assert out == [data]
    assert framer.buffered == 0


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_pipelined_behind_another_message_split_everywhere(name: str) -> None:
    data = MESSAGES[name]
    stream = REGISTER + data
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        out = frames(framer, [stream[:cut], stream[cut:]])
        assert out == [REGISTER, data], cut
        assert framer.buffered == 0


def test_mpart01_binary_body_is_framed_by_content_length_only() -> None:
    """RFC 4475 §3.1.1.11: the binary part holds CRLFs; only Content-Length (553) frames."""
    data = fixture("mpart01.dat")
    framer = StreamFramer()
    assert framer.feed(data + INVITE) == [data, INVITE]
    assert len(parse_message(data, stream=True).body) == 553


def test_many_messages_in_one_feed() -> None:
    stream = b"".join(CANONICAL.values()) * 3
    assert StreamFramer().feed(stream) == list(CANONICAL.values()) * 3


def test_partial_message_stays_buffered() -> None:
    framer = StreamFramer()
    assert framer.feed(MESSAGE[:-1]) == []
    assert framer.buffered == len(MESSAGE) - 1
    assert framer.feed(MESSAGE[-1:]) == [MESSAGE]


# --------------------------------------------------------------- keep-alives


def test_double_crlf_is_a_keepalive_ping() -> None:
    """RFC 5626 §3.5.1: CRLFCRLF is a ping, to be answered with a CRLF pong."""
    assert PING == b"\r\n\r\n" and PONG == b"\r\n"
    assert StreamFramer().feed(PING) == [KeepAlive()]
    assert StreamFramer().feed(PING + PING) == [KeepAlive(), KeepAlive()]
    assert StreamFramer().feed(REGISTER + PING + INVITE) == [REGISTER, KeepAlive(), INVITE]


def test_ping_split_across_feeds() -> None:
    framer = StreamFramer()
    assert frames(framer, [b"\r", b"\n", b"\r", b"\n"]) == [KeepAlive()]
    assert framer.buffered == 0
    framer = StreamFramer()
    assert frames(framer, [b"\r\n\r", b"\n" + REGISTER]) == [KeepAlive(), REGISTER]


def test_lone_crlf_is_skipped() -> None:
    """§7.5: CRLFs before a message are ignored."""
    framer = StreamFramer()
    assert framer.feed(b"\r\n" + REGISTER) == [REGISTER]
    assert framer.feed(REGISTER + b"\r\n") == [REGISTER]
    assert framer.feed(INVITE) == [INVITE]  # the lone CRLF was dropped, not glued on
    assert framer.buffered == 0


def test_stray_line_feed_is_fatal() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        StreamFramer().feed(b"\n" + REGISTER)
    assert info.value.fatal


# -------------------------------------------------------------------- errors


def test_missing_content_length_is_fatal() -> None:
    """§18.3: Content-Length is mandatory on stream transports."""
    data = REGISTER.replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(RemoteProtocolError) as info:
        StreamFramer().feed(data)
    assert info.value.fatal
    with pytest.raises(RemoteProtocolError) as info:
        StreamFramer().feed(fixture("inv2543.dat"))  # RFC 4475 §3.4.1 on a stream
    assert info.value.fatal


@pytest.mark.parametrize("value", [b"-999", b"abc", b"1.5", b"", b"0x10", b"1234567890",
                                   b"\xc2\xb2"])
def test_negative_or_garbage_content_length_is_fatal(value: bytes) -> None:
    """RFC 4475 §3.1.2.3 (ncl): never use a bad Content-Length as a counter."""
    data = REGISTER.replace(b"Content-Length: 0", b"Content-Length: " + value)
    with pytest.raises(RemoteProtocolError) as info:
        StreamFramer().feed(data)
    assert info.value.fatal


def test_ncl_fixture_is_fatal() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        StreamFramer().feed(fixture("ncl.dat"))
    assert info.value.fatal


def test_conflicting_content_lengths_are_fatal() -> None:
    """RFC 4475 §3.3.9 (mcl01) on a stream."""
    with pytest.raises(RemoteProtocolError) as info:
        StreamFramer().feed(fixture("mcl01.dat"))
    assert info.value.fatal


def test_compact_content_length() -> None:
    data = REGISTER.replace(b"Content-Length: 0", b"l: 4") + b"abcd"
    assert StreamFramer().feed(data + INVITE) == [data, INVITE]


def test_size_cap_is_513_and_fatal() -> None:
    limits = ParserLimits(max_message_size=2000)
    # A header section that never ends.
    framer = StreamFramer(limits)
    framer.feed(b"INVITE sip:a@b SIP/2.0\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(100):
            framer.feed(b"X-Filler: " + b"a" * 50 + b"\r\n")
    assert info.value.status == 513 and info.value.fatal
    # A Content-Length announcing more than the cap is refused before the body arrives.
    big = REGISTER.replace(b"Content-Length: 0", b"Content-Length: 5000")
    with pytest.raises(RemoteProtocolError) as info:
        StreamFramer(limits).feed(big)
    assert info.value.status == 513 and info.value.fatal
    # Exactly at the cap is fine; one octet more is not.
    def register_of_size(total: int) -> bytes:
        n = total - (len(REGISTER) + 3)  # "0" becomes four digits
        return REGISTER.replace(b"Content-Length: 0", f"Content-Length: {n:04d}".encode()) \
            + b"x" * n

    fits = register_of_size(2000)
    assert len(fits) == 2000
    assert StreamFramer(limits).feed(fits) == [fits]
    with pytest.raises(RemoteProtocolError) as info:
        StreamFramer(limits).feed(register_of_size(2001)[: len(REGISTER) + 3])  # header only
    assert info.value.status == 513


def test_messages_before_a_framing_error_are_delivered_then_the_stream_ends() -> None:
    """However the stream is cut: fed whole, the keep-alive and the message before the
    stray line feed come out as they would piece by piece; the error ends the stream."""
    framer = StreamFramer()
    out = framer.feed(b"\r\n\r\n" + REGISTER + b"\nGARBAGE")
    assert out == [KeepAlive(), REGISTER]
    assert framer.error is not None and framer.error.fatal
    with pytest.raises(RemoteProtocolError):
        framer.feed(b"more")


def test_only_part_of_a_message_is_partial_not_crlfs_waiting_to_be_a_ping() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == [] and framer.buffered == 2 and not framer.partial
    assert framer.feed(b"\r\nREG") == [KeepAlive()] and framer.partial

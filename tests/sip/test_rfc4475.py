"""RFC 4475 torture tests: every message of the RFC, bit-exact, against the SIP core.

Valid messages (§3.1.1) must parse and pass the §8.2 checks; invalid ones
(§3.1.2) must fail with exactly the answer the RFC documents, both from the
parser and on the wire from the transaction layer; nothing may raise anything
but :class:`RemoteProtocolError`.
"""

from __future__ import annotations

import pytest

from emulator.sip import URI
from emulator.sip import Address
from emulator.sip import MessageDropped
from emulator.sip import MultipartBody
from emulator.sip import RemoteProtocolError
from emulator.sip import Request
from emulator.sip import RequestReceived
from emulator.sip import Response
from emulator.sip import ResponseReceived
from emulator.sip import State
from emulator.sip import TransactionLayer
from emulator.sip import check_request
from emulator.sip import check_response
from emulator.sip import parse_message

from .support import MANIFEST
from .support import drain
from .support import fixture
from .support import fixtures_of_kind

SOURCE = Address("udp", "192.0.2.200", 5060)

VALID = fixtures_of_kind("valid")

# §3.1.2: the answer each invalid message must get.  None means "drop silently"
# (responses cannot be answered, RFC 4475 §3.1.2.5 and §3.1.2.19).
INVALID_OUTCOME: dict[str, int | None] = {
    "badinv01.dat": 400,  # §3.1.2.1  stray ;;,;,, in Via, ;;;; in Contact
    "clerr.dat": 400,  # §3.1.2.2  Content-Length larger than the datagram
    "ncl.dat": 400,  # §3.1.2.3  negative Content-Length
    "scalar02.dat": 400,  # §3.1.2.4  CSeq > 2**32-1
    "scalarlg.dat": None,  # §3.1.2.5  response with overlarge scalars: discard
    "quotbal.dat": 400,  # §3.1.2.6  unterminated quoted display name
    "ltgtruri.dat": 400,  # §3.1.2.7  <> around the Request-URI
    "lwsruri.dat": 400,  # §3.1.2.8  LWS inside the Request-URI
    "lwsstart.dat": 400,  # §3.1.2.9  several SP between Request-Line elements
    "trws.dat": 400,  # §3.1.2.10 SP at the end of the Request-Line
    "escruri.dat": 400,  # §3.1.2.11 headers in the Request-URI
    "baddate.dat": 400,  # §3.1.2.12 Date not in GMT
    "regbadct.dat": 400,  # §3.1.2.13 name-addr URI with '?' not in <>
    "badaspec.dat": 400,  # §3.1.2.14 spaces inside <...>
    "baddn.dat": 400,  # §3.1.2.15 non-token display name
    "badvers.dat": 505,  # §3.1.2.16 SIP/7.0
    "mismatch01.dat": 400,  # §3.1.2.17 CSeq method differs from the method
    "mismatch02.dat": 400,  # §3.1.2.18 (501 preferred, 400 acceptable)
    "bigcode.dat": None,  # §3.1.2.19 status code 4294967301: drop
}

# §3.3 messages the RFC wants answered with 400 whatever the element does.
APPLICATION_400 = ["insuf.dat", "multi01.dat", "mcl01.dat"]


def parse_and_check(data: bytes) -> Request | Response:
    message = parse_message(data)
    if isinstance(message, Request):
        check_request(message)
    else:
        check_response(message)
    return message


def receive_udp(data: bytes) -> tuple[TransactionLayer, list[tuple[bytes, Address]], list[object]]:
    layer = TransactionLayer()
    layer.receive(data, SOURCE, now=0.0)
    return layer, layer.messages_to_send(), drain(layer)


def outcome_of(data: bytes) -> int | str | None:
    """The parser's verdict: 'ok', or the status of the RemoteProtocolError."""
    try:
        parse_and_check(data)
    except RemoteProtocolError as exc:
        return exc.status
    return "ok"


# ------------------------------------------------------------------ manifest
def test_manifest_lists_every_fixture_file_once() -> None:
    from .support import FIXTURES

    on_disk = sorted(p.name for p in FIXTURES.glob("*.dat"))
    listed = sorted(entry["file"] for entry in MANIFEST)
    assert listed == on_disk
    assert len(on_disk) == 50


def test_invalid_table_covers_exactly_the_invalid_section() -> None:
    assert sorted(INVALID_OUTCOME) == sorted(fixtures_of_kind("invalid"))


# ---------------------------------------------------------------- §3.1.1 valid
@pytest.mark.parametrize("name", VALID)
def test_valid_message_parses_and_passes_checks(name: str) -> None:
    data = fixture(name)
    message = parse_and_check(data)
    # What the start line says it is, the parse must be: the kind the manifest notes,
    # the method or status of the first line, and the headers every message has.
    entry = next(e for e in MANIFEST if e["file"] == name)
    start = data.split(b"\r\n", 1)[0].split(b" ")
    if entry["notes"].startswith("request"):
        assert isinstance(message, Request)
        assert message.method == start[0].decode()
    else:
        assert entry["notes"].startswith("response")
        assert isinstance(message, Response)
        assert message.status == int(start[1])
    assert message.call_id and message.cseq.seq >= 0 and message.vias


@pytest.mark.parametrize("name", VALID)
def test_valid_message_reserialises_start_line_and_body(name: str) -> None:
    data = fixture(name)
    message = parse_and_check(data)
    out = message.to_bytes()
    assert out.split(b"\r\n", 1)[0] == data.split(b"\r\n", 1)[0]
    again = parse_and_check(out)
    assert again.body == message.body
    assert list(again.headers) == list(message.headers)
    assert out.endswith(b"\r\n\r\n" + message.body)


@pytest.mark.parametrize("name", VALID)
def test_valid_message_is_accepted_by_the_transaction_layer(name: str) -> None:
    _layer, sent, events = receive_udp(fixture(name))
    assert len(events) == 1
    event = events[0]
    if isinstance(event, RequestReceived):
        assert event.transaction is not None
        # Only an automatic 100 Trying may have been sent, never an error.
        assert all(parse_message(data).status == 100 for data, _ in sent)  # type: ignore[union-attr]
    else:
        assert isinstance(event, ResponseReceived)
        assert event.transaction is None  # no client transaction of ours: stray
        assert sent == []


def test_wsinv_tortuous_invite_is_understood() -> None:
    """§3.1.1.1: folding, LWS around separators, compact and odd-case names."""
    msg = parse_and_check(fixture("wsinv.dat"))
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert str(msg.uri) == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert msg.to.tag == "1918181833n"
    assert msg.from_.tag == "98asjd8"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.max_forwards == 68
    assert (msg.cseq.seq, msg.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = msg.contacts
    assert contact.address is not None
    assert contact.address.display == 'Quoted string ""'
    assert contact.address.param("newparam") == "newvalue"
    assert contact.address.param("secondparam") == ""
    assert contact.q == pytest.approx(0.33)
    (route,) = msg.routes
    assert route.uri.has_param("lr") and route.uri.param("unknownwith") == "value"
    assert len(msg.body) == 150


def test_intmeth_extension_method_and_odd_characters() -> None:
    """§3.1.1.2: a token method full of punctuation; NUL/BEL/DEL quoted-pairs."""
    msg = parse_and_check(fixture("intmeth.dat"))
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq.method == msg.method
    assert msg.uri.host == "example.com"
    assert msg.to.display_name is not None and "\x00" in msg.to.display_name
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_escapes_are_kept_as_written() -> None:
    """§3.1.1.3: escapes survive parsing (comparison unescapes, storage does not)."""
    msg = parse_and_check(fixture("esc01.dat"))
    assert isinstance(msg, Request)
    assert msg.uri.user == "sips%3Auser%40example.com"
    assert msg.uri.host == "example.net"
    assert msg.to.uri.equivalent(URI.parse("sip:user@example.com"))
    assert msg.contacts[0].uri.param("n%61me") == "v%61lue%25%34%31"


def test_escnull_registers_two_distinct_contacts() -> None:
    """§3.1.1.4: %00 must not truncate; the two contacts differ."""
    msg = parse_and_check(fixture("escnull.dat"))
    first, second = (c.uri for c in msg.contacts)
    assert first.user == "%00" and second.user == "%00%00"
    assert not first.equivalent(second)
    assert msg.to.uri.user == "null-%00-null"


def test_esc02_percent_is_not_an_escape_in_method_or_header_name() -> None:
    """§3.1.1.5: RE%47IST%45R is not REGISTER; C%6Fntact is another header."""
    msg = parse_and_check(fixture("esc02.dat"))
    assert isinstance(msg, Request)
    assert msg.method == "RE%47IST%45R"
    assert len(msg.contacts) == 2
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert msg.from_.display == "%Z%45"


def test_lwsdisp_display_name_without_space_before_bracket() -> None:
    """§3.1.1.6: accepted although the 3261 grammar wants LWS there."""
    msg = parse_and_check(fixture("lwsdisp.dat"))
    assert msg.from_.display == "caller"
    assert msg.from_.uri.user == "caller"


def test_longreq_long_values_and_34_vias() -> None:
    """§3.1.1.7."""
    msg = parse_and_check(fixture("longreq.dat"))
    assert len(msg.vias) == 34
    assert msg.to.uri.port == 6000
    assert msg.from_.tag is not None and len(msg.from_.tag) > 150


def test_semiuri_user_part_holds_semicolons() -> None:
    """§3.1.1.9: the user part is user;par=u%40example.net, not a URI parameter."""
    msg = parse_and_check(fixture("semiuri.dat"))
    assert isinstance(msg, Request)
    assert msg.uri.user == "user;par=u%40example.net"
    assert msg.uri.host == "example.com"
    assert msg.uri.params == ()
    assert len(msg.headers.values("Accept")) == 6


def test_transports_unknown_transport_names_parse() -> None:
    """§3.1.1.10."""
    msg = parse_and_check(fixture("transports.dat"))
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_unreason_utf8_reason_phrase() -> None:
    """§3.1.1.12."""
    msg = parse_and_check(fixture("unreason.dat"))
    assert isinstance(msg, Response)
    assert msg.status == 200
    assert msg.reason.startswith("= 2**3 * 5**2 но")


def test_noreason_empty_reason_phrase() -> None:
    """§3.1.1.13."""
    msg = parse_and_check(fixture("noreason.dat"))
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (100, "")
    assert msg.to_bytes().startswith(b"SIP/2.0 100 \r\n")


def test_dblreq_trailing_invite_is_ignored() -> None:
    """§3.1.1.8: the octets after Content-Length: 0 are not part of the REGISTER."""
    data = fixture("dblreq.dat")
    msg = parse_and_check(data)
    assert isinstance(msg, Request)
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert b"INVITE" not in msg.to_bytes()
    layer, sent, events = receive_udp(data)
    assert [type(e) for e in events] == [RequestReceived]
    assert sent == []  # REGISTER is non-INVITE: no 100, and the INVITE never started
    assert len(layer) == 1


def test_mpart01_binary_multipart_body() -> None:
    """§3.1.1.11: 553 octets of body with NULs, split by the boundary parameter."""
    msg = parse_and_check(fixture("mpart01.dat"))
    assert len(msg.body) == 553
    assert msg.body.count(b"\x00") == 2
    ctype = msg.content_type
    assert ctype is not None
    assert ctype.type == "multipart"
    boundary = ctype.param("boundary")
    assert boundary == "7a9cbec02ceef655"
    body = MultipartBody.parse(msg.body, boundary)
    assert [p.mime_type for p in body.parts] == ["text/plain", "application/octet-stream"]
    assert body.parts[0].content == b"Hello"
    assert body.parts[0].header("Content-Transfer-Encoding") == "binary"
    binary = body.parts[1].content
    assert b"\x00" in binary and b"\r\x01" in binary  # NUL and a bare CR
    # The part is a DER SEQUENCE whose own length field says 4 + 0x0152 octets.
    assert binary[:4] == b"0\x82\x01R" and len(binary) == 4 + 0x0152
    # Serialising the parts again with the same boundary gives back the exact body.
    assert MultipartBody(body.parts, boundary).to_bytes() == msg.body


# -------------------------------------------------------------- §3.1.2 invalid
@pytest.mark.parametrize("name", sorted(INVALID_OUTCOME))
def test_invalid_message_is_rejected_with_documented_status(name: str) -> None:
    expected = INVALID_OUTCOME[name]
    with pytest.raises(RemoteProtocolError) as info:
        parse_and_check(fixture(name))
    assert info.value.status == expected


@pytest.mark.parametrize("name", sorted(INVALID_OUTCOME) + APPLICATION_400)
def test_invalid_message_gets_documented_answer_on_the_wire(name: str) -> None:
    data = fixture(name)
    expected = INVALID_OUTCOME.get(name, 400)
    layer, sent, events = receive_udp(data)
    assert len(layer) == 0, "no transaction may be created for a rejected message"
    assert len(events) == 1 and isinstance(events[0], MessageDropped)
    if expected is None:
        assert sent == []
        assert events[0].answered is False
        return
    assert events[0].answered is True
    assert len(sent) == 1
    wire, destination = sent[0]
    assert destination == SOURCE
    response = parse_message(wire)
    assert isinstance(response, Response)
    assert response.status == expected
    # §8.2.6.2: the answer carries the request's Via, Call-ID and CSeq so it can be matched.
    request_via = data.split(b"\r\n\r\n")[0].decode().lower()
    assert response.headers.get("Via") is not None
    assert response.headers.get("Via", "").lower() in request_via
    if "CSeq" in response.headers:
        assert response.headers.get("CSeq", "").lower() in request_via


@pytest.mark.parametrize("name", APPLICATION_400)
def test_application_level_400_cases(name: str) -> None:
    """§3.3.1 insuf, §3.3.8 multi01, §3.3.9 mcl01: 400 Bad Request."""
    assert outcome_of(fixture(name)) == 400


# ------------------------------------------------------- §3.2, §3.3, §3.4 rest
def test_badbranch_bare_cookie_falls_back_to_2543_matching() -> None:
    """§3.2.1: branch=z9hG4bK alone; accepted, and a retransmission is still matched."""
    data = fixture("badbranch.dat")
    layer, _sent, events = receive_udp(data)
    assert [type(e) for e in events] == [RequestReceived]
    key = events[0].transaction  # type: ignore[union-attr]
    assert key is not None
    layer.receive(data, SOURCE, now=0.1)
    assert drain(layer) == []  # absorbed in Trying (Figure 8)
    assert len(layer) == 1
    assert layer.transaction_state(key) == State.TRYING


def test_inv2543_is_accepted_and_answerable() -> None:
    """§3.4.1: no branch, no From tag, no Content-Length; body is the rest of the datagram."""
    data = fixture("inv2543.dat")
    msg = parse_and_check(data)
    assert len(msg.body) == 105
    layer, sent, events = receive_udp(data)
    assert [type(e) for e in events] == [RequestReceived]
    event = events[0]
    assert isinstance(event, RequestReceived) and event.transaction is not None
    assert len(sent) == 1 and parse_message(sent[0][0]).status == 100  # type: ignore[union-attr]
    # The TU answers without naming the transaction; it is found by 2543 matching.
    layer.send_response(event.request.make_response(486, to_tag="x9"), now=0.5)
    (answer, _), = layer.messages_to_send()
    assert parse_message(answer).status == 486  # type: ignore[union-attr]
    assert layer.transaction_state(event.transaction) == State.COMPLETED


@pytest.mark.parametrize("name", ["unkscm.dat", "novelsc.dat", "unksm2.dat", "bext01.dat",
                                  "invut.dat", "regaut01.dat", "bcast.dat", "zeromf.dat",
                                  "cparam01.dat", "cparam02.dat", "regescrt.dat", "sdp01.dat"])
def test_application_messages_are_syntactically_valid(name: str) -> None:
    """§3.3.2-§3.3.15: parsers must accept these; the decision is the application's."""
    assert outcome_of(fixture(name)) == "ok"


def test_application_details() -> None:
    unkscm = parse_and_check(fixture("unkscm.dat"))
    assert isinstance(unkscm, Request)
    assert unkscm.uri.scheme == "nobodyknowsthisscheme"
    assert unkscm.uri.opaque == "totallyopaquecontent"

    unksm2 = parse_and_check(fixture("unksm2.dat"))
    assert unksm2.to.uri.scheme == "isbn"
    assert unksm2.contacts[0].uri.scheme == "name"

    bext = parse_and_check(fixture("bext01.dat"))
    assert bext.option_tags("Require") == {"nothingsupportsthis", "nothingsupportsthiseither"}
    assert len(bext.option_tags("Proxy-Require")) == 2

    assert parse_and_check(fixture("zeromf.dat")).max_forwards == 0

    # §3.3.12: without <> the parameter belongs to the Contact header, not the URI.
    (c1,) = parse_and_check(fixture("cparam01.dat")).contacts
    assert c1.address is not None
    assert c1.address.param("unknownparam") == "" and not c1.uri.has_param("unknownparam")
    # §3.3.13: inside <> it is a URI parameter.
    (c2,) = parse_and_check(fixture("cparam02.dat")).contacts
    assert c2.address is not None
    assert c2.uri.has_param("unknownparam") and c2.address.param("unknownparam") is None
    # §3.3.14: the escaped Route header stays in the contact URI.
    (c3,) = parse_and_check(fixture("regescrt.dat")).contacts
    assert c3.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)
    assert str(c3.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"

    bcast = parse_and_check(fixture("bcast.dat"))
    assert [v.host for v in bcast.vias] == ["192.0.2.198", "255.255.255.255"]

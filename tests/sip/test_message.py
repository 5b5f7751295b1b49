"""Messages: the header container, typed header views, §8.2.6 responses, round trips, limits."""

from __future__ import annotations

import pytest

from emulator.sip import Contact
from emulator.sip import ContentType
from emulator.sip import CSeq
from emulator.sip import Headers
from emulator.sip import LocalProtocolError
from emulator.sip import MultipartBody
from emulator.sip import NameAddress
from emulator.sip import ParserLimits
from emulator.sip import RemoteProtocolError
from emulator.sip import Request
from emulator.sip import Response
from emulator.sip import Via
from emulator.sip import check_request
from emulator.sip import check_response
from emulator.sip import parse_message
from emulator.sip.grammar import canonical_name
from emulator.sip.grammar import header_key

from .support import BINARY_PART
from .support import CANONICAL
from .support import INVITE
from .support import MESSAGE
from .support import OK_200
from .support import REGISTER
from .support import SDP
from .support import sip_bytes

# ------------------------------------------------------------------ Headers


def test_headers_keep_insertion_order_and_spelling() -> None:
    h = Headers([("Via", "a"), ("max-forwards", "70"), ("X-Custom", "1"), ("via", "b")])
    assert list(h) == [("Via", "a"), ("max-forwards", "70"), ("X-Custom", "1"), ("via", "b")]
    assert len(h) == 4


def test_headers_are_case_insensitive() -> None:
    h = Headers([("Call-ID", "abc@host")])
    assert h.get("call-id") == h.get("CALL-ID") == h.get("Call-Id") == "abc@host"
    assert "cAlL-iD" in h
    assert "Via" not in h
    assert h.get("Via") is None and h.get("Via", "dflt") == "dflt"


def test_repeated_headers() -> None:
    h = Headers([("Route", "<sip:a;lr>"), ("Subject", "x"), ("Route", "<sip:b;lr>, <sip:c;lr>")])
    assert h.get("Route") == "<sip:a;lr>"
    assert h.get_all("route") == ["<sip:a;lr>", "<sip:b;lr>, <sip:c;lr>"]
    assert h.values("Route") == ["<sip:a;lr>", "<sip:b;lr>", "<sip:c;lr>"]
    assert h.count("ROUTE") == 2


def test_values_does_not_split_inside_quotes_or_brackets() -> None:
    h = Headers([("Contact", '"Doe, John" <sip:j@h;x=1,2>, <sip:k@h>')])
    assert h.values("Contact") == ['"Doe, John" <sip:j@h;x=1,2>', "<sip:k@h>"]


def test_empty_list_element_is_an_error() -> None:
    """SIP lists have no empty elements (RFC 4475 §3.1.2.1)."""
    with pytest.raises(ValueError):
        Headers([("Via", "SIP/2.0/UDP a,,SIP/2.0/UDP b")]).values("Via")


@pytest.mark.parametrize(("compact", "long"), [
    ("i", "Call-ID"), ("m", "Contact"), ("f", "From"), ("t", "To"), ("v", "Via"),
    ("l", "Content-Length"), ("c", "Content-Type"), ("k", "Supported"), ("s", "Subject"),
    ("e", "Content-Encoding"), ("o", "Event"), ("u", "Allow-Events"),
])
def test_compact_forms_are_the_same_field(compact: str, long: str) -> None:
    """RFC 3261 §7.3.3 (and RFC 6665 for o/u)."""
    h = Headers([(compact, "value-1"), (long.upper(), "value-2")])
    assert h.get_all(long) == ["value-1", "value-2"]
    assert h.get_all(compact.upper()) == ["value-1", "value-2"]
    assert header_key(compact) == long.lower()
    assert canonical_name(compact) == long


def test_compact_forms_in_a_parsed_message() -> None:
    data = sip_bytes([
        "OPTIONS sip:bob@example.com SIP/2.0",
        "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc1",
        "f: <sip:alice@example.com>;tag=1",
        "t: <sip:bob@example.com>",
        "i: compact-1",
        "CSeq: 1 OPTIONS",
        "m: <sip:alice@192.0.2.1>",
        "k: timer, 100rel",
        "s: hello",
        "Max-Forwards: 70",
    ])
    msg = parse_message(data)
    check_request(msg)  # type: ignore[arg-type]
    assert msg.call_id == "compact-1"
    assert msg.top_via.branch == "z9hG4bKc1"
    assert msg.from_.tag == "1"
    assert msg.contacts[0].uri.host == "192.0.2.1"
    assert msg.option_tags("Supported") == {"timer", "100rel"}
    assert msg.headers.get("Subject") == "hello"
    assert msg.to_bytes() == data  # compact names are kept as written


def test_prepend_pushes_onto_a_stack() -> None:
    h = Headers([("From", "f"), ("Via", "v1"), ("Via", "v2"), ("To", "t")])
    h.prepend("via", "v0")
    assert list(h) == [("From", "f"), ("via", "v0"), ("Via", "v1"), ("Via", "v2"), ("To", "t")]
    h.prepend("Record-Route", "<sip:p;lr>")  # absent: goes first of all
    assert next(iter(h)) == ("Record-Route", "<sip:p;lr>")


def test_set_replaces_all_lines_in_place() -> None:
    h = Headers([("A", "1"), ("Expires", "10"), ("B", "2"), ("expires", "20")])
    h.set("Expires", 30)
    assert list(h) == [("A", "1"), ("Expires", "30"), ("B", "2")]
    h.set("Subject", "new")
    assert list(h)[-1] == ("Subject", "new")


def test_remove_and_pop_first_value() -> None:
    h = Headers([("Via", "v1, v2"), ("Via", "v3"), ("Route", "r")])
    assert h.pop_first_value("Via") == "v1"
    assert h.get_all("Via") == ["v2", "v3"]
    assert h.pop_first_value("Via") == "v2"
    assert h.get_all("Via") == ["v3"]
    assert h.pop_first_value("Path") is None
    assert h.remove("via") == 1
    assert h.remove("via") == 0
    assert list(h) == [("Route", "r")]


def test_copy_is_independent() -> None:
    h = Headers([("A", "1")])
    c = h.copy()
    c.add("B", "2")
    assert "B" not in h and "B" in c


@pytest.mark.parametrize("value", ["x\r\nVia: SIP/2.0/UDP evil", "x\nInjected: 1", "x\r"])
def test_line_breaks_in_values_are_rejected(value: str) -> None:
    h = Headers()
    for operation in (h.add, h.set, h.prepend):
        with pytest.raises(ValueError):
            operation("Subject", value)
    assert len(h) == 0


@pytest.mark.parametrize("name", ["Bad Name", "X:Y", "", "X\r\nY", "Ü"])
def test_non_token_header_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        Headers().add(name, "v")


def test_folded_headers_are_unfolded() -> None:
    """§7.3.1: a continuation line joins the previous one with a single SP."""
    data = (b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.1\r\n ;branch=z9hG4bKfold\r\n"
            b"Subject: first\r\n\t second\r\n   third\r\n"
            b"To: <sip:bob@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\n"
            b"Call-ID: f1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    msg = parse_message(data)
    check_request(msg)  # type: ignore[arg-type]
    assert msg.headers.get("Subject") == "first second third"
    assert msg.top_via.branch == "z9hG4bKfold"
    out = msg.to_bytes()
    assert b"Subject: first second third\r\n" in out
    assert b"\r\n " not in out and b"\r\n\t" not in out


def test_blank_continuation_line_adds_no_trailing_space() -> None:
    """A whitespace-only continuation is just LWS: the value is as if it were absent."""
    folded = b"Subject: first\r\n   \r\n\tsecond\r\nX-Empty: a\r\n \t"
    data = REGISTER.replace(b"Expires: 600", folded)
    msg = parse_message(data)
    assert msg.headers.get("Subject") == "first second"
    assert msg.headers.get("X-Empty") == "a"
    again = parse_message(msg.to_bytes())
    assert list(again.headers) == list(msg.headers)


# -------------------------------------------------------------- typed views


def test_via_parts_and_nat_parameters() -> None:
    via = Via.parse("SIP/2.0/udp 192.0.2.1:5062;branch=z9hG4bK776;received=10.0.0.1;rport=5063")
    assert (via.protocol, via.transport) == ("SIP/2.0", "UDP")
    assert (via.host, via.port) == ("192.0.2.1", 5062)
    assert via.branch == "z9hG4bK776"
    assert via.received == "10.0.0.1"
    assert via.rport == 5063
    assert via.sent_by == ("192.0.2.1", 5062)


def test_via_rport_flag_and_absence() -> None:
    """RFC 3581: ';rport' without a value asks the server to fill it in."""
    assert Via.parse("SIP/2.0/UDP h;branch=z9hG4bKa;rport").rport == ""
    assert Via.parse("SIP/2.0/UDP h;branch=z9hG4bKa").rport is None
    assert Via.parse("SIP/2.0/UDP h;rport=²").rport == "²"  # never int('²')


def test_via_ipv6_and_serialisation() -> None:
    via = Via.parse("SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKv6")
    assert via.host == "[2001:db8::1]" and via.port == 5060
    assert str(via) == "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKv6"
    stamped = via.with_param("received", "2001:db8::9").with_param("branch", "z9hG4bKnew")
    assert stamped.branch == "z9hG4bKnew" and stamped.received == "2001:db8::9"
    assert str(stamped).count("branch=") == 1


@pytest.mark.parametrize("text", ["SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host:999999",
                                  "SIP/2.0/UDP host;;", "garbage"])
def test_bad_via_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        Via.parse(text)


def test_message_vias_in_order_across_lines_and_commas() -> None:
    msg = parse_message(OK_200)
    assert [v.host for v in msg.vias] == ["server10.biloxi.example.com", "pc33.atlanta.example.com"]
    assert msg.top_via.branch == "z9hG4bK4b43c2ff8.1"
    assert msg.vias[1].received == "192.0.2.1"


def test_from_to_tags_and_display_names() -> None:
    msg = parse_message(OK_200)
    assert msg.from_.tag == "1928301774"
    assert msg.to.tag == "a6c85cf"
    assert msg.to.display == "Bob"
    assert msg.from_.uri.user == "alice"
    req = parse_message(INVITE)
    assert req.to.tag is None


def test_name_address_forms() -> None:
    bare = NameAddress.parse("sip:watson@example.com;tag=DkfV")
    assert not bare.bracketed and bare.tag == "DkfV" and not bare.uri.params
    quoted = NameAddress.parse(r'"A \"B\" C" <sip:abc@h>;tag=7')
    assert quoted.display == 'A "B" C'
    built = NameAddress.build("sip:bob@example.com", 'Bob "the" Builder').with_tag("t1")
    assert str(built) == r'"Bob \"the\" Builder" <sip:bob@example.com>;tag=t1'
    assert NameAddress.parse(str(built)).display == 'Bob "the" Builder'
    with pytest.raises(ValueError):
        NameAddress.parse("sip:a@b?x=y")  # §20: must be in <>
    with pytest.raises(ValueError):
        NameAddress.parse('"unterminated <sip:a@b>')


def test_cseq_and_call_id() -> None:
    msg = parse_message(INVITE)
    assert (msg.cseq.seq, msg.cseq.method) == (314159, "INVITE")
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert str(CSeq.parse("0042  ACK")) == "42 ACK"
    for bad in ["2147483648 INVITE", "x INVITE", "1", "1 IN VITE", "-1 INVITE"]:
        with pytest.raises(ValueError):
            CSeq.parse(bad)
    assert CSeq.parse("2147483647 INVITE").seq == 2**31 - 1  # §8.1.1.5: below 2**31


def test_contact_params_expires_and_feature_tags() -> None:
    """3GPP TS 24.379: MCPTT clients register with +g.3gpp.mcptt and an ICSI feature tag."""
    msg = parse_message(REGISTER)
    (contact,) = msg.contacts
    assert contact.uri.host == "192.0.2.10" and contact.uri.port == 5060
    assert contact.expires == 600
    assert msg.expires == 600
    tags = contact.feature_tags
    assert tags["+g.3gpp.mcptt"] is None
    assert tags["+g.3gpp.icsi-ref"] == '"urn%3Aurn-7%3A3gpp-service.ims.icsi.mcptt"'
    assert contact.address is not None and contact.address.param("expires") == "600"


def test_contact_wildcard_q_and_bad_expires() -> None:
    star = Contact.parse("*")
    assert star.wildcard and str(star) == "*" and star.expires is None
    with pytest.raises(ValueError):
        star.uri  # noqa: B018
    c = Contact.parse("<sip:a@b>;q=0.7;expires=99999999999")
    assert c.q == pytest.approx(0.7)
    assert c.expires == 2**32 - 1  # capped (RFC 4475 §3.1.2.4 allows treating huge as max)
    with pytest.raises(ValueError):
        Contact.parse("<sip:a@b>;expires=soon").expires  # noqa: B018


def test_retry_after_is_delta_seconds_without_comment_or_parameters() -> None:
    """RFC 3261 §20.33: ``Retry-After: 18000 (maintenance);duration=3600``."""
    def with_retry_after(value: str | None) -> Request:
        request = Request("OPTIONS", "sip:b@example.com")
        if value is not None:
            request.headers.add("Retry-After", value)
        return request

    assert with_retry_after("2").retry_after == 2
    assert with_retry_after("18000 (maintenance);duration=3600").retry_after == 18000
    assert with_retry_after("99999999999").retry_after == 2**32 - 1
    assert with_retry_after(None).retry_after is None
    for bad in ("soon", "", "\u00b2"):
        with pytest.raises(ValueError):
            with_retry_after(bad).retry_after  # noqa: B018


def test_route_record_route_path_service_route_lists() -> None:
    data = sip_bytes([
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKr1",
        "From: <sip:alice@mcx.example.com>;tag=1",
        "To: <sip:alice@mcx.example.com>;tag=2",
        "Call-ID: r1",
        "CSeq: 1 REGISTER",
        "Path: <sip:pcscf.example.com;lr>, <sip:edge.example.com;lr>",
        "Service-Route: <sip:orig@scscf.example.com;lr>",
        "Service-Route: <sip:as.example.com;lr>",
        "Record-Route: <sip:rr1.example.com;lr>",
    ])
    msg = parse_message(data)
    check_response(msg)  # type: ignore[arg-type]
    assert [p.uri.host for p in msg.paths] == ["pcscf.example.com", "edge.example.com"]
    assert [r.uri.host for r in msg.service_routes] == ["scscf.example.com", "as.example.com"]
    assert msg.service_routes[0].uri.user == "orig"
    assert [r.uri.host for r in msg.record_routes] == ["rr1.example.com"]
    assert msg.routes == []
    invite = parse_message(INVITE)
    assert [r.uri.host for r in invite.routes] == ["p1.example.com", "p2.example.com"]
    assert all(r.uri.has_param("lr") for r in invite.routes)


def test_content_type_with_boundary() -> None:
    ct = ContentType.parse('Multipart/Mixed ; boundary="simple boundary";charset=utf-8')
    assert ct.mime_type == "multipart/mixed"
    assert ct.param("BOUNDARY") == "simple boundary"
    assert ct.param("charset") == "utf-8"
    assert ct.param("missing") is None
    assert parse_message(MESSAGE).content_type.param("boundary") == "mcx-boundary-42"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        ContentType.parse("application")


def test_missing_headers_raise_value_error() -> None:
    req = Request("OPTIONS", "sip:a@b")
    for attribute in ("call_id", "cseq", "from_", "to", "top_via"):
        with pytest.raises(ValueError):
            getattr(req, attribute)
    assert req.vias == [] and req.contacts == [] and req.content_type is None
    assert req.max_forwards is None and req.expires is None


# ------------------------------------------------------- make_response §8.2.6


def test_make_response_copies_what_8_2_6_2_requires() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    req.headers.prepend("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKprx")
    resp = req.make_response(180, to_tag="bob-tag")
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")  # all, in order
    assert resp.headers.get("From") == req.headers.get("From")
    assert resp.headers.get("Call-ID") == req.headers.get("Call-ID")
    assert resp.headers.get("CSeq") == req.headers.get("CSeq")
    assert resp.to.tag == "bob-tag"
    assert resp.to.uri == req.to.uri
    for absent in ("Contact", "Route", "Max-Forwards", "Content-Type"):
        assert absent not in resp.headers
    assert resp.body == b""
    check_response(resp)


def test_make_response_100_has_no_to_tag_but_copies_timestamp() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    req.headers.add("Timestamp", "54.07")
    trying = req.make_response(100, to_tag="never")
    assert trying.to.tag is None
    assert trying.headers.get("Timestamp") == "54.07"  # §8.2.6.1
    ok = req.make_response(200, to_tag="t")
    assert "Timestamp" not in ok.headers


def test_make_response_keeps_an_existing_to_tag() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    req.headers.set("To", "<sip:bob@biloxi.example.com>;tag=dialog-1")
    assert req.make_response(200, to_tag="other").to.tag == "dialog-1"


def test_make_response_to_tag_not_fooled_by_uri_parameter() -> None:
    """A URI parameter like ;mytag= inside <...> is not a To tag."""
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    req.headers.set("To", "<sip:bob@biloxi.example.com;mytag=1>")
    resp = req.make_response(200, to_tag="abc")
    assert resp.to.tag == "abc"
    assert resp.to.uri.param("mytag") == "1"


def test_make_response_custom_reason_and_unknown_code() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    assert req.make_response(486, "Busy Now").reason == "Busy Now"
    assert req.make_response(499).reason == "Client Error"
    assert req.make_response(513).reason == "Message Too Large"


def test_ack_is_never_answered() -> None:
    ack = Request("ACK", "sip:bob@example.com")
    with pytest.raises(LocalProtocolError):
        ack.make_response(200)


# --------------------------------------------------------------- round trip


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_canonical_messages_round_trip_byte_for_byte(name: str) -> None:
    data = CANONICAL[name]
    for stream in (False, True):
        msg = parse_message(data, stream=stream)
        assert msg.to_bytes() == data
        assert bytes(msg) == data
        (check_request if isinstance(msg, Request) else check_response)(msg)  # type: ignore[arg-type]


def test_round_trip_after_pushing_a_via_changes_only_that_line() -> None:
    msg = parse_message(REGISTER)
    msg.headers.prepend("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
    out = msg.to_bytes()
    first, rest = out.split(b"\r\n", 1)
    assert first == REGISTER.split(b"\r\n", 1)[0]
    assert rest == b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\n" + \
        REGISTER.split(b"\r\n", 1)[1]


def test_multipart_message_body_survives_round_trip() -> None:
    msg = parse_message(MESSAGE)
    ct = msg.content_type
    assert ct is not None
    body = MultipartBody.parse(msg.body, ct.param("boundary") or "")
    assert body.parts[1].content == BINARY_PART
    assert body.parts[1].header("Content-Disposition") == "attachment"


def test_request_built_through_the_api_serialises_correctly() -> None:
    req = Request("MESSAGE", "sip:bob@example.com", Headers([
        ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKapi"), ("Max-Forwards", 70),
        ("From", "<sip:a@example.com>;tag=1"), ("To", "<sip:bob@example.com>"),
        ("Call-ID", "api-1"), ("CSeq", "1 MESSAGE"),
    ]))
    req.set_body(b"hello", "text/plain")
    data = req.to_bytes()
    assert data.startswith(b"MESSAGE sip:bob@example.com SIP/2.0\r\n")
    assert data.endswith(b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    again = parse_message(data)
    check_request(again)  # type: ignore[arg-type]
    assert again.body == b"hello"


# ------------------------------------------------------------------- parser


def test_leading_crlfs_are_ignored() -> None:
    """§7.5: CRLFs before the start line are skipped."""
    assert parse_message(b"\r\n\r\n" + REGISTER).to_bytes() == REGISTER


def test_datagram_extra_octets_are_discarded_and_short_body_rejected() -> None:
    """§18.3: bytes beyond Content-Length are dropped; a longer Content-Length is an error."""
    assert parse_message(INVITE + b"garbage").body == SDP
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(INVITE[:-10])
    assert info.value.status == 400
    assert isinstance(info.value.message, Request)  # enough to build the 400 from


def test_missing_content_length() -> None:
    data = REGISTER.replace(b"Content-Length: 0\r\n", b"")
    assert parse_message(data + b"body").body == b"body"  # datagram: the rest is the body
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data, stream=True)
    assert info.value.fatal


@pytest.mark.parametrize("value", ["-1", "abc", "1e3", "²", "٣", "0x10", ""])
def test_bad_content_length_is_400(value: str) -> None:
    data = REGISTER.replace(b"Content-Length: 0", f"Content-Length: {value}".encode())
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    assert info.value.status == 400


def test_conflicting_content_lengths() -> None:
    data = REGISTER.replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 4") + b"abcd"
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    assert info.value.status == 400
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data, stream=True)
    assert info.value.fatal
    same = REGISTER.replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 0")
    assert parse_message(same).body == b""


@pytest.mark.parametrize("bad", [b"\n", b"\r"])
def test_bare_cr_or_lf_inside_a_header_is_400(bad: bytes) -> None:
    """§7.3.1: lines end with CRLF; a bare CR/LF would be re-emitted as a line break."""
    data = REGISTER.replace(b"tag=a73kszlfl", b"tag=a73" + bad + b"Injected: yes")
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    assert info.value.status == 400
    partial = info.value.message
    assert isinstance(partial, Request)
    assert all("\r" not in v and "\n" not in v for _, v in partial.headers)


def test_request_line_errors() -> None:
    cases = {
        b"OPTIONS sip:a@b SIP/3.0": 505,
        b"OPTIONS sip:a@b SIP/2.0 ": 400,
        b"OPTIONS  sip:a@b SIP/2.0": 400,
        b"OPTIONS <sip:a@b> SIP/2.0": 400,
        b"OPTIONS sip:a@b HTTP/1.1": 400,
        b"OPT IONS": None,
        b"OPTIONS": None,
        b"OP@TIONS sip:a@b SIP/2.0": None,
    }
    rest = REGISTER.split(b"\r\n", 1)[1].replace(b"1 REGISTER", b"1 OPTIONS")
    for line, status in cases.items():
        with pytest.raises(RemoteProtocolError) as info:
            m = parse_message(line + b"\r\n" + rest)
            check_request(m)  # type: ignore[arg-type]
        assert info.value.status == status, line


def test_status_line_errors_mean_drop() -> None:
    rest = OK_200.split(b"\r\n", 1)[1]
    for line in [b"SIP/2.0 99 Low", b"SIP/2.0 700 High", b"SIP/2.0 2000 X", b"SIP/3.0 200 OK",
                 b"SIP/2.0 20O OK", b"SIP/2.0 200 O\rK", b"SIP/2.0"]:
        with pytest.raises(RemoteProtocolError) as info:
            parse_message(line + b"\r\n" + rest)
        assert info.value.status is None, line


def test_non_utf8_header_section_is_dropped() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(REGISTER.replace(b"Expires: 600", b"Expires: \xff\xfe"))
    assert info.value.status is None


def test_check_request_requires_mandatory_headers() -> None:
    """§8.1.1: To, From, Call-ID, CSeq, Via; and the CSeq method must match."""
    for name in (b"To", b"From", b"Call-ID", b"CSeq", b"Via"):
        lines = [line for line in REGISTER.split(b"\r\n") if not line.startswith(name + b":")]
        msg = parse_message(b"\r\n".join(lines))
        with pytest.raises(RemoteProtocolError) as info:
            check_request(msg)  # type: ignore[arg-type]
        assert info.value.status == 400, name


def test_check_response_failures_mean_drop() -> None:
    msg = parse_message(OK_200.replace(b"CSeq: 314159 INVITE", b"CSeq: many"))
    with pytest.raises(RemoteProtocolError) as info:
        check_response(msg)  # type: ignore[arg-type]
    assert info.value.status is None


# ------------------------------------------------------------------- limits


def test_oversized_message_is_513() -> None:
    limits = ParserLimits(max_message_size=1000)
    big = sip_bytes(REGISTER.split(b"\r\n\r\n")[0].decode().split("\r\n")[:-1], b"x" * 1000)
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(big, limits)
    assert info.value.status == 513
    assert len(REGISTER) < 1000
    parse_message(REGISTER, limits)  # under the limit: fine
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(REGISTER + b"x" * 70_000)  # default: 65535, UDP's maximum
    assert info.value.status == 513


def test_too_many_headers() -> None:
    limits = ParserLimits(max_headers=20)
    lines = REGISTER.split(b"\r\n\r\n")[0].decode().split("\r\n")[:-1]
    ok = sip_bytes(lines + [f"X-H{i}: {i}" for i in range(20 - len(lines))])
    parse_message(ok, limits)
    too_many = sip_bytes(lines + [f"X-H{i}: {i}" for i in range(21 - len(lines))])
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(too_many, limits)
    assert info.value.status == 400
    response = sip_bytes(["SIP/2.0 200 OK"] + [f"X-H{i}: {i}" for i in range(30)])
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(response, limits)
    assert info.value.status is None


def test_too_long_header_line() -> None:
    limits = ParserLimits(max_line_length=200)
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(REGISTER.replace(b"Expires: 600", b"Subject: " + b"a" * 300), limits)
    assert info.value.status == 400
    folded = b"Subject: " + b"\r\n ".join([b"a" * 60] * 5)  # each line short, unfolded long
    with pytest.raises(RemoteProtocolError):
        parse_message(REGISTER.replace(b"Expires: 600", folded), limits)
    parse_message(REGISTER.replace(b"Expires: 600", b"Subject: " + b"a" * 150), limits)


# ----------------------------------------------------------------- set_body


def test_set_body_keeps_content_length_right() -> None:
    msg = parse_message(INVITE)
    msg.set_body(b"v=0\r\n", "application/sdp")
    assert msg.headers.get_all("Content-Length") == ["5"]
    data = msg.to_bytes()
    assert parse_message(data, stream=True).body == b"v=0\r\n"
    msg.set_body(b"")
    assert msg.headers.get("Content-Length") == "0"
    assert "Content-Type" not in msg.headers
    assert parse_message(msg.to_bytes(), stream=True).body == b""


def test_set_body_with_multipart() -> None:
    msg = parse_message(REGISTER)
    from emulator.sip.multipart import BodyPart

    mp = MultipartBody.build([BodyPart("application/vnd.3gpp.mcptt-info+xml", b"<x/>"),
                              BodyPart("application/sdp", SDP)])
    msg.set_body(mp.to_bytes(), mp.content_type)
    again = parse_message(msg.to_bytes(), stream=True)
    ct = again.content_type
    assert ct is not None and ct.mime_type == "multipart/mixed"
    parts = MultipartBody.parse(again.body, ct.param("boundary") or "").parts
    assert [p.content for p in parts] == [SDP, b"<x/>"]


def test_to_bytes_adds_missing_content_length() -> None:
    resp = Response(200, headers=Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bKx")]), body=b"ab")
    assert resp.to_bytes() == (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
                               b"Content-Length: 2\r\n\r\nab")


# -- typed views kept from what was built, not parsed again --------------------------------

def _views_match_text(request: Request) -> None:
    """Each kept view is what its header's text parses to."""
    headers = request.headers
    assert request.top_via == Via.parse(headers.values("Via")[0])
    assert request.from_ == NameAddress.parse(headers.get("From") or "")
    assert request.to == NameAddress.parse(headers.get("To") or "")
    assert request.cseq == CSeq.parse(headers.get("CSeq") or "")


def test_a_built_request_keeps_the_views_it_was_built_from() -> None:
    from emulator.sip import URI
    from emulator.sip.builder import new_request

    via = Via("UDP", "192.0.2.1", 5060, (("branch", "z9hG4bKbuilt"), ("rport", None)))
    frm = NameAddress.build("sip:alice@example.com", "Alice")
    to = NameAddress.parse("<sip:bob@example.com;transport=udp>;x=1")
    request = new_request("REGISTER", URI.parse("sip:example.com"), via=via, from_=frm, to=to,
                          call_id="c@192.0.2.1", cseq=7)
    assert request.top_via is via and request.to is to and request.cseq == CSeq(7, "REGISTER")
    assert request.from_.tag  # tagged as it was written
    _views_match_text(request)
    assert parse_message(request.to_bytes()).to == to  # the text is the same value


def test_a_view_goes_when_its_field_changes() -> None:
    headers = Headers()
    first = Via("UDP", "192.0.2.1", 5060, (("branch", "z9hG4bK1"),))
    headers.prepend("Via", first, view="via:top")
    request = Request("OPTIONS", "sip:example.com", headers)
    assert request.top_via is first
    request.headers.prepend("Via", "SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK2")
    assert request.top_via.host == "192.0.2.2"
    request.headers.add("CSeq", CSeq(1, "OPTIONS"), view="cseq")
    request.headers.set("CSeq", "2 OPTIONS")
    assert request.cseq == CSeq(2, "OPTIONS")


def test_the_stamped_top_via_is_the_view_the_layer_keys_on() -> None:
    from emulator.sip import Address
    from emulator.sip import RequestReceived
    from emulator.sip import TransactionLayer

    layer = TransactionLayer()
    layer.receive(REGISTER, Address("udp", "198.18.0.9", 5099), now=0.0)
    event = layer.next_event()
    assert isinstance(event, RequestReceived)
    request = event.request
    assert (request.top_via.received, request.top_via.rport) == ("198.18.0.9", 5099)
    _views_match_text(request)
    assert event.transaction == ("s", "z9hG4bKnashds7", "192.0.2.10", "5060", "REGISTER")

"""URIs: RFC 3261 §19.1 SIP/SIPS, RFC 3966 tel, RFC 8141 urn; comparison per §19.1.4."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from emulator.sip import URI
from emulator.sip import URIError


def test_full_sip_uri_parts() -> None:
    text = ("sip:alice:secretword@atlanta.com:5061;transport=TCP;lr"
            "?subject=project%20x&priority=urgent")
    uri = URI.parse(text)
    assert uri.scheme == "sip"
    assert (uri.user, uri.password) == ("alice", "secretword")
    assert (uri.host, uri.port) == ("atlanta.com", 5061)
    assert uri.params == (("transport", "TCP"), ("lr", None))
    assert uri.headers == (("subject", "project%20x"), ("priority", "urgent"))
    assert uri.param("LR") == "" and uri.param("maddr") is None
    assert uri.has_param("Transport")
    assert uri.transport == "tcp"
    assert uri.hostport == "atlanta.com:5061"
    assert str(uri) == text


@pytest.mark.parametrize("text", [
    "sip:alice@atlanta.com",
    "sips:alice@atlanta.com",
    "SIP:Alice@AtLanTa.CoM;Transport=UDP",
    "sip:+1-212-555-1212:1234@gateway.com;user=phone",
    "sip:alice;day=tuesday@atlanta.com",
    "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
    "sip:192.0.2.4",
    "sip:[2001:db8::10]:5070;transport=tcp",
    "sip:bob@[::1]",
    "sip:%61lice@atlanta.com",
    "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
    "tel:+1-201-555-0123;phone-context=example.com",
    "tel:+358-555-1234567;postd=pp22",
    "urn:service:sos",
    "urn:urn-7:3gpp-service.ims.icsi.mcptt",
    "http://www.example.com/path?q=1",
])
def test_parse_then_str_round_trips(text: str) -> None:
    uri = URI.parse(text)
    assert str(uri) == text
    assert URI.parse(str(uri)) == uri


def test_scheme_is_lowercased_and_rebuilt_uri_serialises() -> None:
    uri = URI.parse("SIPS:bob@Biloxi.com")
    assert uri.scheme == "sips"
    assert uri.transport == "tls"  # sips defaults to TLS
    rebuilt = uri.with_param("maddr", "239.255.255.1")
    assert str(rebuilt) == "sips:bob@Biloxi.com;maddr=239.255.255.1"


def test_transport_default_is_udp() -> None:
    """§19.1.1: transport defaults to UDP for sip."""
    assert URI.parse("sip:a@b").transport == "udp"
    assert URI.parse("sip:a@b;transport=SCTP").transport == "sctp"
    assert URI.parse("sip:a@b;transport").transport == "udp"  # flag without value


def test_ipv6_hosts() -> None:
    uri = URI.parse("sip:alice@[2001:db8::1]:5060;transport=udp")
    assert uri.host == "[2001:db8::1]" and uri.port == 5060
    assert uri.hostport == "[2001:db8::1]:5060"
    assert URI.parse("sip:[::ffff:192.0.2.1]").port is None
    assert URI.parse("sip:[2001:DB8::1]").equivalent(URI.parse("sip:[2001:db8::1]"))


def test_ports() -> None:
    assert URI.parse("sip:a@b:0").port == 0
    assert URI.parse("sip:a@b:65535").port == 65535
    assert URI.parse("sip:a@b").port is None


def test_user_part_with_semicolon() -> None:
    """RFC 4475 §3.1.1.9: ';' before '@' belongs to the user part."""
    uri = URI.parse("sip:user;par=u%40example.net@example.com;transport=tcp")
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com"
    assert uri.params == (("transport", "tcp"),)


def test_password_and_escapes_are_kept_as_written() -> None:
    uri = URI.parse("sip:I%20have%20spaces:p%40ss@example.net")
    assert uri.user == "I%20have%20spaces"
    assert uri.password == "p%40ss"
    assert str(uri) == "sip:I%20have%20spaces:p%40ss@example.net"


def test_tel_and_urn() -> None:
    tel = URI.parse("tel:+1-201-555-0123;phone-context=example.com;isub=1")
    assert tel.scheme == "tel" and tel.user == "+1-201-555-0123"
    assert tel.param("phone-context") == "example.com"
    assert tel.aor == "tel:+1-201-555-0123"
    urn = URI.parse("urn:service:sos")
    assert (urn.scheme, urn.opaque) == ("urn", "service:sos")
    assert urn.aor == "urn:service:sos"
    assert urn.user is None and urn.host == ""


@pytest.mark.parametrize("text", [
    "", "alice@atlanta.com", "sip:", "sip:alice@", "sip:@atlanta.com",
    "sip:alice@atlanta.com:99999", "sip:alice@atlanta.com:12a", "sip:alice@atlanta.com:",
    "sip:alice@atlanta.com:123456",
    "sip:al ice@atlanta.com", "sip:alice@atlanta.com; lr", "<sip:alice@atlanta.com>",
    'sip:"alice"@atlanta.com', "sip:alice@at<lanta.com", "sip:alice@bad_host.com",
    "sip:alice@-atlanta.com", "sip:alice@atlanta-.com", "sip:a@b@c", "sip:alice@[::1",
    "sip:alice@[::1]x", "sip:alice@[zz::1]", "sip:alice@atlanta.com;", "sip:alice@atlanta.com;;lr",
    "sip:alice@atlanta.com;=x", "sip:alice@atlanta.com?subject", "sip:al%zzice@atlanta.com",
    "sip:alice@atlanta.com%", "1sip:alice@atlanta.com", "s p:alice@atlanta.com", "tel:",
    "tel:+1;bad param", "sip:alice\x00@atlanta.com", "sip:alice@atlanta.com\t",
    "sip:alicé@atlanta.com",
])
def test_bad_uris_raise_uri_error(text: str) -> None:
    with pytest.raises(URIError):
        URI.parse(text)


def test_uri_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        URI.parse("sip:")


def test_with_param_and_without_param_are_copies() -> None:
    uri = URI.parse("sip:alice@atlanta.com;transport=udp;lr")
    tcp = uri.with_param("Transport", "tcp")
    assert str(uri) == "sip:alice@atlanta.com;transport=udp;lr"  # untouched
    assert tcp.transport == "tcp"
    assert str(tcp) == "sip:alice@atlanta.com;lr;Transport=tcp"
    assert [k.lower() for k, _ in tcp.params].count("transport") == 1
    bare = tcp.without_param("LR").without_param("transport")
    assert str(bare) == "sip:alice@atlanta.com"
    assert bare.without_param("absent") == bare
    flagged = bare.with_param("ob")
    assert str(flagged) == "sip:alice@atlanta.com;ob" and flagged.param("ob") == ""
    with_headers = URI.parse("sip:a@b?Subject=x")
    assert str(with_headers.without_headers()) == "sip:a@b"
    assert bare.without_headers() is bare


def test_sip_builder() -> None:
    uri = URI.sip("bob", "192.0.2.4", 5070, params=(("transport", "tcp"),))
    assert str(uri) == "sip:bob@192.0.2.4:5070;transport=tcp"
    assert str(URI.sip(None, "registrar.example.com", secure=True)) == "sips:registrar.example.com"
    assert URI.parse(str(uri)) == uri


def test_aor_drops_port_params_and_headers() -> None:
    """§10.3 step 5: the AOR is scheme:user@host with the host canonicalised."""
    uri = URI.parse("sip:alice@Atlanta.COM:5060;transport=tcp?subject=x")
    assert uri.aor == "sip:alice@atlanta.com"
    assert URI.parse("sips:Bob@Biloxi.com").aor == "sips:Bob@biloxi.com"
    assert URI.parse("sip:registrar.example.com").aor == "sip:registrar.example.com"


# RFC 3261 §19.1.4: "The URIs within each of the following sets are equivalent"
RFC_EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
]

# "The URIs within each of the following sets are not equivalent"
RFC_NOT_EQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # user case
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # default port is not omitted port
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # nor default transport
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # header
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # no DNS resolution
]


@pytest.mark.parametrize(("a", "b"), RFC_EQUAL)
def test_rfc3261_equal_uris(a: str, b: str) -> None:
    ua, ub = URI.parse(a), URI.parse(b)
    assert ua.equivalent(ub)
    assert ub.equivalent(ua)


@pytest.mark.parametrize(("a", "b"), RFC_NOT_EQUAL)
def test_rfc3261_not_equal_uris(a: str, b: str) -> None:
    ua, ub = URI.parse(a), URI.parse(b)
    assert not ua.equivalent(ub)
    assert not ub.equivalent(ua)


def test_equivalence_is_not_transitive() -> None:
    """§19.1.4: 'Note that equality is not transitive' (security=on / off)."""
    on = URI.parse("sip:carol@chicago.com;security=on")
    off = URI.parse("sip:carol@chicago.com;security=off")
    plain = URI.parse("sip:carol@chicago.com")
    assert on.equivalent(plain) and plain.equivalent(off)
    assert not on.equivalent(off)


@pytest.mark.parametrize(("a", "b", "equal"), [
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com", False),  # scheme
    ("sip:alice:pw@atlanta.com", "sip:alice@atlanta.com", False),  # password
    ("sip:alice@atlanta.com;maddr=239.1.1.1", "sip:alice@atlanta.com", False),
    ("sip:alice@atlanta.com;ttl=15", "sip:alice@atlanta.com;ttl=16", False),
    ("sip:alice@atlanta.com;user=phone", "sip:alice@atlanta.com;USER=Phone", True),
    ("sip:alice@atlanta.com;method=INVITE", "sip:alice@atlanta.com", False),
    # A reserved character and its escape are different (§19.1.4 first rule).
    ("sip:a%3Bb@atlanta.com", "sip:a;b@atlanta.com", False),
    ("sip:a%3bb@atlanta.com", "sip:a%3Bb@atlanta.com", True),
    ("sip:a@b?Subject=x", "sip:a@b?subject=x", True),  # header names are case-insensitive
    ("sip:a@b?subject=X", "sip:a@b?subject=x", False),
    ("tel:+1234", "tel:+1234;x=1", True),
    ("tel:+1234", "tel:+1235", False),
    ("urn:service:sos", "urn:service:sos", True),
    ("urn:service:sos", "urn:service:sos.police", False),
])
def test_more_equivalence_rules(a: str, b: str, equal: bool) -> None:
    assert URI.parse(a).equivalent(URI.parse(b)) is equal
    assert URI.parse(b).equivalent(URI.parse(a)) is equal


def test_uris_are_hashable_values() -> None:
    a = URI.parse("sip:alice@atlanta.com")
    assert a == URI.parse("sip:alice@atlanta.com")
    assert len({a, URI.parse("sip:alice@atlanta.com")}) == 1
    with pytest.raises(AttributeError):
        a.host = "x"  # type: ignore[misc]


# -- the one-pass parse of common SIP URIs and parameters against the general ones --------

_URI_ALPHABET = "sip:@;=.-_!~*'()&+$,/?%[]<>\" \tAaZz09#5"


def _parts(uri: URI) -> tuple[object, ...]:
    return (uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params, uri.headers,
            uri.opaque, str(uri))


@pytest.mark.parametrize("text", [
    "sip:alice@atlanta.com", "sips:bob@biloxi.example.com:5061", "sip:127.0.20.2:5060;lr",
    "sip:term@127.0.30.1:5060;lr;transport=udp", "sip:a@b.c;x=1=2;y", "sip:host.",
    "sip:alice-00001.visitor@mcx.partner.example", "sip:+1-212@gw.com;user=phone",
])
def test_common_sip_uris_take_one_pass_with_the_general_parts(text: str) -> None:
    common = URI._parse_common(text)
    assert common is not None
    assert _parts(common) == _parts(URI._parse_general(text))


@pytest.mark.parametrize("text", [
    "sip:a%20b@c", "sip:[::1]:5060", "sip:a:pw@h", "sip:a@h?x=y", "sip:h:99999", "sip:host;",
    "SIP:a@b", "tel:+1234", "sip:a;b@c", "sip:-a.com", "sip:a@b;x=\"q\"", "sip:a@b@c",
])
def test_other_uris_are_left_to_the_general_parser(text: str) -> None:
    assert URI._parse_common(text) is None


@given(st.text(_URI_ALPHABET, max_size=40))
@settings(max_examples=3000, deadline=None)
def test_the_one_pass_accepts_only_what_the_general_parser_gives_alike(tail: str) -> None:
    for text in (f"sip:{tail}", f"sips:{tail}", tail):
        common = URI._parse_common(text)
        if common is not None:
            assert _parts(common) == _parts(URI._parse_general(text))


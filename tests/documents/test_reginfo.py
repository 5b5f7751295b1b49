"""The reg event document (RFC 3680 §5): round trip, the de-registration NOTIFY, limits."""

from __future__ import annotations

import pytest

from emulator.documents import XmlError
from emulator.documents import reginfo
from emulator.documents.reginfo import ContactInfo
from emulator.documents.reginfo import RegInfo
from emulator.documents.reginfo import RegistrationInfo
from emulator.documents.reginfo import ServiceAuthorisation

NS = reginfo.NAMESPACE
ALICE = "sip:alice@mcx.example"


def document(body: str, version: str = "0", state: str = "full") -> bytes:
    return (f'<?xml version="1.0"?>\n<reginfo xmlns="{NS}" version="{version}" '
            f'state="{state}">{body}</reginfo>').encode()


def test_constants() -> None:
    assert (reginfo.MIME_TYPE, reginfo.EVENT) == ("application/reginfo+xml", "reg")


def test_round_trip() -> None:
    info = RegInfo(7, "partial", (
        RegistrationInfo(ALICE, "a7", "active", (
            ContactInfo("c1", "active", "registered", "sip:alice@192.0.2.1:5060", 3600),
            ContactInfo("c2", "terminated", "expired", "sip:alice@192.0.2.2:5060"),
        )),
        RegistrationInfo("sip:bob@mcx.example", "b1", "init"),
    ))
    assert reginfo.parse(reginfo.render(info)) == info


def test_the_rfc_3680_example_parses() -> None:
    """Shape of RFC 3680 §6 (and captures of IMS cores): extra attributes and children."""
    data = document(
        f'<registration aor="{ALICE}" id="as9" state="active">'
        '<contact id="76" state="active" event="registered" duration-registered="7322" '
        'q="0.8" expires="3600" callid="hjkhq" cseq="5">'
        '<uri>sip:alice@pc887.example.com</uri><display-name>Alice</display-name></contact>'
        '<contact id="77" state="terminated" event="expired" duration-registered="3600">'
        "<uri>sip:alice@university.example.edu</uri></contact></registration>",
        version="0")
    assert reginfo.parse(data) == RegInfo(0, "full", (RegistrationInfo(ALICE, "as9", "active", (
        ContactInfo("76", "active", "registered", "sip:alice@pc887.example.com", 3600),
        ContactInfo("77", "terminated", "expired", "sip:alice@university.example.edu"),
    )),))


def test_network_initiated_deregistration_with_the_refusal() -> None:
    """24.229 §5.4.1.7: the AS refused, the S-CSCF de-registers and says why (project-defined)."""
    warning = '399 mcptt.mcx.example "101 service authorisation failed"'
    info = RegInfo(3, "full", (RegistrationInfo(ALICE, "a1", "terminated", (
        ContactInfo("c1", "terminated", "rejected", "sip:alice@192.0.2.1:5060", 0,
                    ServiceAuthorisation(403, (warning,))),)),))
    data = reginfo.render(info)
    assert f'xmlns:sa="{reginfo.SERVICE_AUTHORISATION_NS}"'.encode() in data
    assert b'<sa:service-authorisation status="403">' in data
    assert reginfo.parse(data) == info


def test_a_reader_unaware_of_the_extension_still_reads_the_contact() -> None:
    data = document(f'<registration aor="{ALICE}" id="a" state="terminated">'
                    '<contact id="c" state="terminated" event="deactivated">'
                    '<x:other xmlns:x="urn:example:x">ignored</x:other>'
                    "<uri>sip:alice@192.0.2.1</uri></contact></registration>")
    [registration] = reginfo.parse(data).registrations
    assert registration.contacts == (
        ContactInfo("c", "terminated", "deactivated", "sip:alice@192.0.2.1"),)


@pytest.mark.parametrize(("body", "version", "state", "message"), [
    ("", "0", "complete", "state 'complete' is not full or partial"),
    ("", "-1", "full", "version='-1' is not a non-negative integer"),
    ("", "x", "full", "version='x' is not a non-negative integer"),
    (f'<registration aor="{ALICE}" id="a" state="gone"/>', "0", "full",
     "registration state 'gone'"),
    (f'<registration aor="{ALICE}" id="a" state="active"><contact id="c" state="pending" '
     'event="registered"><uri>u</uri></contact></registration>', "0", "full",
     "contact state 'pending'"),
    (f'<registration aor="{ALICE}" id="a" state="active"><contact id="c" state="active" '
     'event="renewed"><uri>u</uri></contact></registration>', "0", "full",
     "contact event 'renewed'"),
    (f'<registration aor="{ALICE}" id="a" state="active"><contact id="c" state="active" '
     'event="registered" expires="3e3"><uri>u</uri></contact></registration>', "0", "full",
     "expires='3e3'"),
    (f'<registration aor="{ALICE}" id="a" state="active"><contact id="c" state="active" '
     'event="registered"/></registration>', "0", "full", "lacks <uri>"),
    ('<registration id="a" state="active"/>', "0", "full", "lacks attribute aor"),
])
def test_invalid_values_are_refused(body: str, version: str, state: str, message: str) -> None:
    with pytest.raises(XmlError, match=message.replace("(", r"\(").replace(")", r"\)")):
        reginfo.parse(document(body, version, state))


def test_render_refuses_what_parse_would() -> None:
    with pytest.raises(XmlError, match="contact event 'gone'"):
        reginfo.render(RegInfo(0, "full", (RegistrationInfo(ALICE, "a", "active", (
            ContactInfo("c", "active", "gone", "u"),)),)))
    with pytest.raises(XmlError, match="not a final error status"):
        reginfo.render(RegInfo(0, "full", (RegistrationInfo(ALICE, "a", "terminated", (
            ContactInfo("c", "terminated", "rejected", "u", 0, ServiceAuthorisation(200)),)),)))


def test_too_many_registrations_are_refused() -> None:
    registration = f'<registration aor="{ALICE}" id="a" state="init"/>'
    limit = reginfo.MAX_REGISTRATIONS
    assert len(reginfo.parse(document(registration * limit)).registrations) == limit
    with pytest.raises(XmlError, match=f"{limit + 1} registrations exceed {limit}"):
        reginfo.parse(document(registration * (limit + 1)))
    too_many = RegInfo(0, "full", (RegistrationInfo(ALICE, "a", "init"),) * (limit + 1))
    with pytest.raises(XmlError, match="registrations exceed"):
        reginfo.render(too_many)


def test_too_many_contacts_are_refused() -> None:
    contact = '<contact id="c" state="active" event="registered"><uri>u</uri></contact>'
    limit = reginfo.MAX_CONTACTS
    ok = document(f'<registration aor="{ALICE}" id="a" state="active">'
                  f"{contact * limit}</registration>")
    assert len(reginfo.parse(ok).registrations[0].contacts) == limit
    with pytest.raises(XmlError, match=f"{limit + 1} contacts of one registration exceed"):
        reginfo.parse(document(f'<registration aor="{ALICE}" id="a" state="active">'
                               f"{contact * (limit + 1)}</registration>"))


def test_too_many_warnings_are_refused() -> None:
    limit = reginfo.MAX_WARNINGS
    warnings = "<sa:warning>w</sa:warning>" * (limit + 1)
    data = document(f'<registration aor="{ALICE}" id="a" state="terminated">'
                    '<contact id="c" state="terminated" event="rejected"><uri>u</uri>'
                    f'<sa:service-authorisation xmlns:sa="{reginfo.SERVICE_AUTHORISATION_NS}" '
                    f'status="403">{warnings}</sa:service-authorisation></contact>'
                    "</registration>")
    with pytest.raises(XmlError, match=f"{limit + 1} warnings exceed {limit}"):
        reginfo.parse(data)

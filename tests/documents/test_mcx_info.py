"""mcptt-info and siblings: the call fields added to ``<svc>-Params`` (24.379 Annex F.1).

``session-type``, ``<svc>-calling-user-id``, ``<svc>-called-party-id`` and
``<svc>-calling-group-id`` are written in the F.1 ``xs:sequence`` order and
read back; the four-argument form of :class:`ServiceInfo` and its document
are unchanged.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from emulator.documents import XmlError
from emulator.documents import mcx_info

ALICE = "sip:alice@mcx.example"
BOB = "sip:bob@mcx.example"
FIRE = "sip:fire@mcx.example"
CLIENT = "urn:uuid:00000000-0000-1000-8000-000000000001"
F1_ORDER = ["access-token", "session-type", "request-uri", "calling-user-id",
            "called-party-id", "calling-group-id", "client-id"]


def full(fmt: mcx_info.ServiceInfoFormat) -> mcx_info.ServiceInfo:
    return mcx_info.ServiceInfo(fmt, "eyJ0b2tlbiJ9", "sip:psi-group@mcx.example", CLIENT,
                                session_type="prearranged", called_party_id=BOB,
                                calling_group_id=FIRE, calling_user_id=ALICE)


def local_names(document: bytes, fmt: mcx_info.ServiceInfoFormat) -> list[str]:
    params = ET.fromstring(document).find(f"{{{fmt.namespace}}}{fmt.prefix}-Params")
    assert params is not None
    return [child.tag.split("}")[1].removeprefix(f"{fmt.prefix}-") for child in params]


@pytest.mark.parametrize("fmt", [mcx_info.MCPTT, mcx_info.MCDATA, mcx_info.MCVIDEO],
                         ids=lambda f: f.service)
def test_every_field_round_trips(fmt: mcx_info.ServiceInfoFormat) -> None:
    info = full(fmt)
    assert mcx_info.parse(mcx_info.render(info), fmt) == info


@pytest.mark.parametrize("fmt", [mcx_info.MCPTT, mcx_info.MCDATA, mcx_info.MCVIDEO],
                         ids=lambda f: f.service)
def test_elements_follow_the_f1_sequence(fmt: mcx_info.ServiceInfoFormat) -> None:
    assert local_names(mcx_info.render(full(fmt)), fmt) == F1_ORDER


def test_kinds_of_content() -> None:
    """URIs in ``<mcpttURI>``, strings in ``<mcpttString>``, session-type plain and unprefixed."""
    root = ET.fromstring(mcx_info.render(full(mcx_info.MCPTT)))
    ns = f"{{{mcx_info.MCPTT.namespace}}}"
    params = root.find(f"{ns}mcptt-Params")
    assert params is not None
    assert params.findtext(f"{ns}session-type") == "prearranged"
    assert params.find(f"{ns}mcptt-session-type") is None
    for name, kind, value in (("calling-user-id", "URI", ALICE),
                              ("called-party-id", "URI", BOB),
                              ("calling-group-id", "URI", FIRE),
                              ("client-id", "String", CLIENT)):
        element = params.find(f"{ns}mcptt-{name}")
        assert element is not None and element.get("type") == "Normal"
        assert element.findtext(f"{ns}mcptt{kind}") == value


def test_a_private_call_invite_body() -> None:
    """What a client puts in a private call INVITE: session type and the called party."""
    info = mcx_info.ServiceInfo(mcx_info.MCPTT, None, "sip:psi-private@mcx.example", None,
                                "private", BOB)
    document = mcx_info.render(info)
    assert local_names(document, mcx_info.MCPTT) == ["session-type", "request-uri",
                                                     "called-party-id"]
    assert mcx_info.parse(document, mcx_info.MCPTT) == info


def test_the_four_argument_form_is_unchanged() -> None:
    info = mcx_info.ServiceInfo(mcx_info.MCPTT, "tok", ALICE, CLIENT)
    assert (info.session_type, info.called_party_id, info.calling_group_id,
            info.calling_user_id) == (None, None, None, None)
    assert mcx_info.render(info) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<mcpttinfo xmlns="urn:3gpp:ns:mcpttInfo:1.0"><mcptt-Params>'
        b'<mcptt-access-token type="Normal"><mcpttString>tok</mcpttString>'
        b'</mcptt-access-token><mcptt-request-uri type="Normal"><mcpttURI>'
        b'sip:alice@mcx.example</mcpttURI></mcptt-request-uri><mcptt-client-id type="Normal">'
        b"<mcpttString>urn:uuid:00000000-0000-1000-8000-000000000001</mcpttString>"
        b"</mcptt-client-id></mcptt-Params></mcpttinfo>")
    assert mcx_info.parse(mcx_info.render(info), mcx_info.MCPTT) == info


def test_a_peer_document_in_any_order_with_whitespace() -> None:
    """Parsing looks elements up by name, so a peer's order and indentation do not matter."""
    ns = mcx_info.MCPTT.namespace
    document = (f'<?xml version="1.0"?>\n<mcpttinfo xmlns="{ns}">\n <mcptt-Params>\n'
                f'  <mcptt-calling-group-id type="Normal">\n   <mcpttURI> {FIRE} </mcpttURI>\n'
                f"  </mcptt-calling-group-id>\n  <session-type> chat </session-type>\n"
                f"  <emergency-ind type=\"Normal\"><mcpttBoolean>false</mcpttBoolean>"
                f"</emergency-ind>\n </mcptt-Params>\n</mcpttinfo>").encode()
    info = mcx_info.parse(document, mcx_info.MCPTT)
    assert (info.session_type, info.calling_group_id) == ("chat", FIRE)
    assert info.called_party_id is None and info.calling_user_id is None


def test_an_encrypted_party_id_is_refused() -> None:
    ns = mcx_info.MCPTT.namespace
    document = (f'<mcpttinfo xmlns="{ns}"><mcptt-Params><mcptt-called-party-id '
                f'type="Encrypted"><mcpttURI>opaque</mcpttURI></mcptt-called-party-id>'
                f"</mcptt-Params></mcpttinfo>").encode()
    with pytest.raises(XmlError, match="mcptt-called-party-id is Encrypted"):
        mcx_info.parse(document, mcx_info.MCPTT)


def test_empty_elements_read_as_absent() -> None:
    ns = mcx_info.MCPTT.namespace
    document = (f'<mcpttinfo xmlns="{ns}"><mcptt-Params><session-type>  </session-type>'
                f'<mcptt-calling-user-id type="Normal"><mcpttURI/></mcptt-calling-user-id>'
                f"</mcptt-Params></mcpttinfo>").encode()
    info = mcx_info.parse(document, mcx_info.MCPTT)
    assert info.session_type is None and info.calling_user_id is None

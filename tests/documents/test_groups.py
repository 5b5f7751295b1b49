"""The MC service group document (24.481 §7.2.2; OMA XDM list-service): round trip, limits."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from emulator.documents import XmlError
from emulator.documents import groups
from emulator.documents.groups import GroupDocument

NS = f"{{{groups.LIST_SERVICE_NS}}}"
FIRE = "sip:fire@mcx.example"
MEMBERS = ("sip:alice@mcx.example", "sip:bob@mcx.example", "tel:+15550100")


def document(service: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<group xmlns="{groups.LIST_SERVICE_NS}" '
            f'xmlns:rl="urn:ietf:params:xml:ns:resource-lists">{service}</group>').encode()


def test_constants() -> None:
    assert groups.MIME_TYPE == "application/vnd.oma.poc.groups+xml"
    assert groups.AUID == "org.openmobilealliance.groups"
    assert groups.xcap_path(FIRE) == f"/org.openmobilealliance.groups/global/byGroupID/{FIRE}"


@pytest.mark.parametrize("group", [
    GroupDocument(FIRE, "Fire & Rescue <north>", MEMBERS),
    GroupDocument(FIRE, "", ()),
], ids=["members", "empty"])
def test_round_trip(group: GroupDocument) -> None:
    assert groups.parse(groups.render(group)) == group


def test_render_marks_an_mcptt_group() -> None:
    """§7.2.8: supported-services names the MCPTT ICSI with mcptt-speech group media."""
    root = ET.fromstring(groups.render(GroupDocument(FIRE, "Fire", MEMBERS)))
    assert root.tag == f"{NS}group"
    service = root.find(f"{NS}list-service")
    assert service is not None and service.get("uri") == FIRE
    oxe = f"{{{groups.XDM_EXTENSIONS_NS}}}"
    enabler = service.find(f"{oxe}supported-services/{oxe}service")
    assert enabler is not None and enabler.get("enabler") == groups.MCPTT_ICSI
    speech = enabler.find(f"{oxe}group-media/{{{groups.MCPTT_GROUP_INFO_NS}}}mcptt-speech")
    assert speech is not None


def test_a_gms_document_with_extensions_parses() -> None:
    """The 24.481 A.2 shape as GMSs serve it: entry display names, rules, 3GPP elements."""
    data = document(
        f'<list-service uri="{FIRE}"><display-name xml:lang="en-us">Fire</display-name>'
        f'<list><entry uri="{MEMBERS[0]}"><rl:display-name>Alice</rl:display-name></entry>'
        f'<entry uri=" {MEMBERS[1]} "/><external anchor="x"/></list>'
        '<invite-members>true</invite-members><max-participant-count>200'
        "</max-participant-count>"
        '<cp:ruleset xmlns:cp="urn:ietf:params:xml:ns:common-policy"><cp:rule id="r"/>'
        "</cp:ruleset>"
        '<mcpttgi:on-network-group-priority xmlns:mcpttgi="urn:3gpp:ns:mcpttGroupInfo:1.0">1'
        "</mcpttgi:on-network-group-priority></list-service>")
    assert groups.parse(data) == GroupDocument(FIRE, "Fire", MEMBERS[:2])


@pytest.mark.parametrize(("service", "message"), [
    ("", "0 <list-service> elements, expected 1"),
    (f'<list-service uri="{FIRE}"/><list-service uri="{FIRE}"/>',
     "2 <list-service> elements, expected 1"),
    ("<list-service/>", "lacks attribute uri"),
    ('<list-service uri=""/>', "group ID is empty"),
    (f'<list-service uri="{FIRE}"><list><entry/></list></list-service>',
     "<entry> lacks attribute uri"),
    (f'<list-service uri="{FIRE}"><list><entry uri=""/></list></list-service>',
     "a member URI is empty"),
])
def test_invalid_documents_are_refused(service: str, message: str) -> None:
    with pytest.raises(XmlError, match=message):
        groups.parse(document(service))


def test_entries_in_another_namespace_are_not_members() -> None:
    data = document(f'<list-service uri="{FIRE}"><list><rl:entry uri="{MEMBERS[0]}"/></list>'
                    "</list-service>")
    assert groups.parse(data).members == ()


def test_too_many_members_are_refused() -> None:
    limit = groups.MAX_MEMBERS
    fits = GroupDocument(FIRE, "Big", tuple(f"u{i}" for i in range(limit)))
    assert groups.parse(groups.render(fits)) == fits
    entries = '<entry uri="u"/>' * (limit + 1)
    with pytest.raises(XmlError, match=f"{limit + 1} members exceed {limit}"):
        groups.parse(document(f'<list-service uri="{FIRE}"><list>{entries}</list>'
                              "</list-service>"))
    with pytest.raises(XmlError, match="members exceed"):
        groups.render(GroupDocument(FIRE, "Big", ("u",) * (limit + 1)))

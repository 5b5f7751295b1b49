"""The MC service group document a group management server serves (24.481 §7.2; OMA XDM Group).

24.481 §7.2.2 defines an MC service group document as the OMA XDM group
structure with MC specific clarifications: root ``<group>`` in namespace
``urn:oma:xml:poc:list-service``, one ``<list-service uri="<MC service group
ID>">`` holding ``<display-name>`` and ``<list>`` of ``<entry uri="<member>"/>``.
An MCPTT group document also says, in ``<supported-services>``, that it is
one: a ``<service enabler="<MCPTT ICSI>">`` whose ``<group-media>`` holds
``<mcptt-speech/>`` (§7.2.8).  It is served over XCAP under the application
usage ``org.openmobilealliance.groups`` as ``application/vnd.oma.poc.groups+xml``
(§7.2.6, example in A.2).

Confirmed [S], not against the 24.481 text itself: the namespaces, element
names and the ``<group>`` root from the MCOP client
(``datatype/ms/gms/ns/list_service``) and implementations quoting §7.2.2 and
A.2; the AUID and media type from Doubango's XCAP application-usage table
and the IANA media-type registry; ``<supported-services>`` in
``urn:oma:xml:xdm:extensions`` from MCOP and one implementation (a third
writes ``urn:oma:xml:xdm:group``; we follow the two); the XCAP path
``global/byGroupID/<group ID>`` from an implementation quoting 24.481 table
7.2.10.2-1.  ``<supported-services>`` is written but not required on
parse, and the many other 24.481 elements (``on-network-*``, rules, entry
``display-name``) are neither written nor read.

**PROJECT-DEFINED**: the bound :data:`MAX_MEMBERS`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .xmlsafe import XmlError
from .xmlsafe import parse_xml

LIST_SERVICE_NS = "urn:oma:xml:poc:list-service"
XDM_EXTENSIONS_NS = "urn:oma:xml:xdm:extensions"
MCPTT_GROUP_INFO_NS = "urn:3gpp:ns:mcpttGroupInfo:1.0"
MIME_TYPE = "application/vnd.oma.poc.groups+xml"
AUID = "org.openmobilealliance.groups"
MCPTT_ICSI = "urn:urn-7:3gpp-service.ims.icsi.mcptt"
MAX_MEMBERS = 1000  # PROJECT-DEFINED

_L = f"{{{LIST_SERVICE_NS}}}"


@dataclass(frozen=True)
class GroupDocument:
    """An MC service group: its ID, name and members."""

    group_id: str
    """The MC service group ID, a URI (``<list-service uri>``)."""
    display_name: str
    members: tuple[str, ...] = ()
    """The members' MC service IDs, in document order."""


def xcap_path(group_id: str) -> str:
    """Where a GMS serves a group document (24.481 table 7.2.10.2-1 [S])."""
    return f"/{AUID}/global/byGroupID/{group_id}"


def _check(document: GroupDocument) -> None:
    if not document.group_id:
        raise XmlError("group ID is empty")
    if len(document.members) > MAX_MEMBERS:
        raise XmlError(f"{len(document.members)} members exceed {MAX_MEMBERS}")
    if not all(document.members):
        raise XmlError("a member URI is empty")


def render(document: GroupDocument) -> bytes:
    """The MCPTT group document; raises :class:`XmlError` on bad values."""
    _check(document)
    # Literal tags under explicit xmlns declarations: ElementTree would
    # otherwise invent ns0:/ns1: prefixes.  oxe and mcpttgi are the prefixes of
    # the 24.481 A.2 example as implementations reproduce it.
    root = ET.Element("group", {"xmlns": LIST_SERVICE_NS, "xmlns:oxe": XDM_EXTENSIONS_NS,
                                "xmlns:mcpttgi": MCPTT_GROUP_INFO_NS})
    service = ET.SubElement(root, "list-service", {"uri": document.group_id})
    ET.SubElement(service, "display-name").text = document.display_name
    members = ET.SubElement(service, "list")
    for member in document.members:
        ET.SubElement(members, "entry", {"uri": member})
    # Without it a GMS does not take the document as an MCPTT group (§7.2.8).
    supported = ET.SubElement(service, "oxe:supported-services")
    mcptt = ET.SubElement(supported, "oxe:service", {"enabler": MCPTT_ICSI})
    ET.SubElement(ET.SubElement(mcptt, "oxe:group-media"), "mcpttgi:mcptt-speech")
    body = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8")


def parse(data: bytes) -> GroupDocument:
    """Parse a group document; raises :class:`XmlError` naming what is wrong."""
    root = parse_xml(data)
    if root.tag != f"{_L}group":
        raise XmlError(f"root element is {root.tag}, expected {_L}group")
    services = root.findall(f"{_L}list-service")
    if len(services) != 1:
        raise XmlError(f"group has {len(services)} <list-service> elements, expected 1")
    service = services[0]
    group_id = service.get("uri")
    if group_id is None:
        raise XmlError("<list-service> lacks attribute uri")
    # Count before building anything: the bound is on what a peer can make us hold.
    entries = service.findall(f"{_L}list/{_L}entry")
    if len(entries) > MAX_MEMBERS:
        raise XmlError(f"{len(entries)} members exceed {MAX_MEMBERS}")
    members = []
    for entry in entries:
        uri = entry.get("uri")
        if uri is None:
            raise XmlError("<entry> lacks attribute uri")
        members.append(uri.strip())
    document = GroupDocument(group_id.strip(),
                             (service.findtext(f"{_L}display-name") or "").strip(),
                             tuple(members))
    _check(document)
    return document

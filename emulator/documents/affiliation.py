"""Group affiliation: PIDF with the MCPTT presence extension (23.280 §10.8.3; 24.379 §9.2).

An MC service client affiliates to groups with a SIP PUBLISH, ``Event:
presence``, towards the MC service server (24.379 §9.2.1.2), and learns the
result from NOTIFYs of the same package (§9.3.1.2; spec digest, Addendum).
The body is ``application/pidf+xml`` (RFC 3863): ``<presence entity="<MC
service ID>">`` holding ``<tuple id="<MC service client ID>">`` whose
``<status>`` lists ``<affiliation group="<group URI>" [status] [expires]/>``
elements in namespace ``urn:3gpp:ns:mcpttPresInfo:1.0`` (schema: §9.3.1.1).
The client lists the full set of groups it wants (a group left out is to be
de-affiliated); the server adds ``status`` and ``expires``.

The spec digest had this as our reading only; the element and attribute
names, the namespace, ``entity`` = MCPTT ID and ``tuple id`` = client ID are
now confirmed [S] by the MCOP client (``datatype/affiliation/pidf``,
``MyAffiliationService``) and by implementations quoting 24.379 §9.3.1.1,
which also write ``expires`` as an ``xs:dateTime`` in UTC.  Here it is an
``int`` of seconds since the Unix epoch, converted at the edge.

**PROJECT-DEFINED**: the status value ``deaffiliated`` (MCOP knows only
``affiliating``, ``affiliated`` and ``deaffiliating``; a group that is no
longer affiliated is normally just absent); the bounds
:data:`MAX_AFFILIATIONS` per document and :data:`MAX_TUPLES` tuples.  The
``client`` attribute and ``<mcpttPI10:p-id>`` are not modelled and are
ignored when received.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .xmlsafe import XmlError
from .xmlsafe import parse_xml

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
PRES_INFO_NS = "urn:3gpp:ns:mcpttPresInfo:1.0"  # 24.379 §9.3.1.1 [S]
MIME_TYPE = "application/pidf+xml"
EVENT = "presence"
STATUSES = frozenset({"affiliating", "affiliated", "deaffiliating",
                      "deaffiliated"})  # "deaffiliated": PROJECT-DEFINED
MAX_AFFILIATIONS = 64  # PROJECT-DEFINED
MAX_TUPLES = 16  # PROJECT-DEFINED
# 9999-12-31T23:59:59Z: a four-digit xs:dateTime year ends there.
_LATEST = 253402300799

_P = f"{{{PIDF_NS}}}"
_A = f"{{{PRES_INFO_NS}}}"
# xs:dateTime as peers write it: seconds, optional fraction, optional zone.
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?",
                        re.ASCII)


@dataclass(frozen=True)
class Affiliation:
    """One group of the document and, from the server, its affiliation state."""

    group: str
    """The MC service group ID (a URI)."""
    status: str | None = None
    """``affiliating``, ``affiliated``, ``deaffiliating``; None in a client's request."""
    expires: int | None = None
    """When the affiliation ends, in seconds since the Unix epoch (UTC)."""


@dataclass(frozen=True)
class AffiliationDocument:
    """The affiliations of one MC service client of one user."""

    entity: str
    """The MC service ID of the user (``<presence entity>``)."""
    client_id: str
    """The MC service client ID (``<tuple id>``)."""
    affiliations: tuple[Affiliation, ...] = ()


def _format_expires(expires: int) -> str:
    if not 0 <= expires <= _LATEST:
        raise XmlError(f"expires {expires} is outside the years 1970-9999")
    moment = dt.datetime.fromtimestamp(expires, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_expires(text: str) -> int:
    text = text.strip()
    if _DATE_TIME.fullmatch(text) is None:
        raise XmlError(f"expires {text!r} is not an xs:dateTime")
    if "." in text:
        # fromisoformat takes at most microseconds; the fraction does not matter here.
        head, _, tail = text.partition(".")
        zone = tail.lstrip("0123456789")
        text = head + zone
    try:
        moment = dt.datetime.fromisoformat(text)
        if moment.tzinfo is None:
            # No zone: MCOP reads such values as UTC, and so do we.
            moment = moment.replace(tzinfo=dt.UTC)
        seconds = int(moment.timestamp())
    except (ValueError, OverflowError):
        raise XmlError(f"expires {text!r} is not a valid date and time") from None
    if not 0 <= seconds <= _LATEST:
        raise XmlError(f"expires {text!r} is outside the years 1970-9999")
    return seconds


def _check(document: AffiliationDocument) -> None:
    if not document.entity:
        raise XmlError("presence entity is empty")
    if not document.client_id:
        raise XmlError("tuple id (the client ID) is empty")
    if len(document.affiliations) > MAX_AFFILIATIONS:
        raise XmlError(f"{len(document.affiliations)} affiliations exceed {MAX_AFFILIATIONS}")
    for affiliation in document.affiliations:
        if not affiliation.group:
            raise XmlError("affiliation group is empty")
        if affiliation.status is not None and affiliation.status not in STATUSES:
            raise XmlError(f"affiliation status {affiliation.status!r} is not one of "
                           f"{sorted(STATUSES)}")


def render(document: AffiliationDocument) -> bytes:
    """The ``application/pidf+xml`` body; raises :class:`XmlError` on bad values."""
    _check(document)
    # Literal tags under explicit xmlns declarations: ElementTree would
    # otherwise invent ns0:/ns1: prefixes.  mcpttPI10 is the prefix MCOP uses.
    root = ET.Element("presence", {"xmlns": PIDF_NS, "xmlns:mcpttPI10": PRES_INFO_NS,
                                   "entity": document.entity})
    status = ET.SubElement(ET.SubElement(root, "tuple", {"id": document.client_id}), "status")
    for affiliation in document.affiliations:
        attributes = {"group": affiliation.group}
        if affiliation.status is not None:
            attributes["status"] = affiliation.status
        if affiliation.expires is not None:
            attributes["expires"] = _format_expires(affiliation.expires)
        ET.SubElement(status, "mcpttPI10:affiliation", attributes)
    body = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8")


def parse_all(data: bytes) -> tuple[AffiliationDocument, ...]:
    """Every tuple of a PIDF affiliation document, e.g. a server's NOTIFY (§9.3.1.2)."""
    root = parse_xml(data)
    if root.tag != f"{_P}presence":
        raise XmlError(f"root element is {root.tag}, expected {_P}presence")
    entity = root.get("entity")
    if entity is None:
        raise XmlError("<presence> lacks attribute entity")
    tuples = root.findall(f"{_P}tuple")
    if len(tuples) > MAX_TUPLES:
        raise XmlError(f"{len(tuples)} tuples exceed {MAX_TUPLES}")
    # Count before building anything: the bound is on what a peer can make us hold.
    total = sum(len(t.findall(f"{_P}status/{_A}affiliation")) for t in tuples)
    if total > MAX_AFFILIATIONS:
        raise XmlError(f"{total} affiliations exceed {MAX_AFFILIATIONS}")
    documents = []
    for element in tuples:
        client_id = element.get("id")
        if client_id is None:
            raise XmlError("<tuple> lacks attribute id")
        affiliations = []
        for affiliation in element.iterfind(f"{_P}status/{_A}affiliation"):
            group = affiliation.get("group")
            if group is None:
                raise XmlError("<affiliation> lacks attribute group")
            expires = affiliation.get("expires")
            affiliations.append(Affiliation(
                group.strip(), affiliation.get("status"),
                _parse_expires(expires) if expires is not None else None))
        document = AffiliationDocument(entity.strip(), client_id.strip(), tuple(affiliations))
        _check(document)
        documents.append(document)
    return tuple(documents)


def parse(data: bytes) -> AffiliationDocument:
    """The affiliations of the one client a PUBLISH speaks for; raises :class:`XmlError`."""
    documents = parse_all(data)
    if len(documents) != 1:
        raise XmlError(f"presence has {len(documents)} tuples, expected exactly 1")
    return documents[0]

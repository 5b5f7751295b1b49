"""The service settings body of an MC service authorisation PUBLISH (24.379 §7.2.2, §7.3.3).

The PUBLISH for service authorisation and service settings carries
``Event: poc-settings`` and, next to the mcptt-info body, an
``application/poc-settings+xml`` body (spec digest §4.2 [V]): the event
package and media type of RFC 4354 (IANA event and media-type registries
name RFC 4354 for both [S]).  The document is ``<poc-settings>`` holding one
``<entity id="...">`` per MC service client, whose id is the client's
Instance ID URN, i.e. the MC service client ID (24.379 §7.2.1A NOTE 2, as
quoted by an implementation [S]).  The entity carries
``<am-settings><answer-mode>automatic|manual</answer-mode></am-settings>``
and, as a 3GPP extension in namespace ``urn:3gpp:mcsSettings:1.0``
(24.379 §7.4.1.2, table 7.4.1.2.2-2 [S]),
``<selected-user-profile-index><user-profile-index>``.  Element names are
those of the MCOP client (``datatype/pocsettings``) and RFC 4354 as
Wireshark's dissector lists them [S].

**Namespace [S], not confirmed against RFC 4354's text**: the MCOP client and
a second implementation write ``urn:oma:params:xml:ns:poc:poc-settings``,
which :func:`render` writes too.  :func:`parse` also accepts
``urn:ietf:params:xml:ns:poc-settings`` (our recollection of RFC 4354 §9,
unverified) and ``urn:oma:xml:poc:poc-settings`` (the OMA naming pattern the
spec digest assumed), since a peer may write any of them; anything else is
refused.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .xmlsafe import XmlError
from .xmlsafe import parse_xml

MIME_TYPE = "application/poc-settings+xml"
EVENT = "poc-settings"
NAMESPACE = "urn:oma:params:xml:ns:poc:poc-settings"  # [S] MCOP; see module docstring
ACCEPTED_NAMESPACES = (
    NAMESPACE,
    "urn:ietf:params:xml:ns:poc-settings",  # unverified reading of RFC 4354
    "urn:oma:xml:poc:poc-settings",  # unverified OMA pattern
)
MCS_SETTINGS_NS = "urn:3gpp:mcsSettings:1.0"  # 24.379 §7.4.1.2 [S]
ANSWER_MODES = frozenset({"automatic", "manual"})

_M = f"{{{MCS_SETTINGS_NS}}}"


@dataclass(frozen=True)
class PocSettings:
    """The settings of one MC service client."""

    client_id: str
    """The ``<entity id>``: the MC service client ID."""
    answer_mode: str | None
    """``automatic`` or ``manual``; None leaves ``<am-settings>`` out (MCData has none)."""
    user_profile_index: int | None = None
    """The selected MC service user profile (``user-profile-index`` of 24.484)."""


def _check(settings: PocSettings) -> None:
    if not settings.client_id:
        raise XmlError("poc-settings entity id is empty")
    if settings.answer_mode is not None and settings.answer_mode not in ANSWER_MODES:
        raise XmlError(f"answer-mode {settings.answer_mode!r} is not automatic or manual")
    # 0-255: PROJECT-DEFINED bound (an unsignedByte, our reading of 24.484 [U]).
    if settings.user_profile_index is not None and not 0 <= settings.user_profile_index <= 255:
        raise XmlError(f"user-profile-index {settings.user_profile_index} is out of range")


def render(settings: PocSettings) -> bytes:
    """The ``application/poc-settings+xml`` body; raises :class:`XmlError` on bad values."""
    _check(settings)
    # Literal tags under explicit xmlns declarations: ElementTree would
    # otherwise invent ns0:/ns1: prefixes.
    attributes = {"xmlns": NAMESPACE}
    if settings.user_profile_index is not None:
        attributes["xmlns:mcs10Set"] = MCS_SETTINGS_NS
    root = ET.Element("poc-settings", attributes)
    entity = ET.SubElement(root, "entity", {"id": settings.client_id})
    if settings.answer_mode is not None:
        am_settings = ET.SubElement(entity, "am-settings")
        ET.SubElement(am_settings, "answer-mode").text = settings.answer_mode
    if settings.user_profile_index is not None:
        selected = ET.SubElement(entity, "mcs10Set:selected-user-profile-index")
        ET.SubElement(selected, "mcs10Set:user-profile-index").text = str(
            settings.user_profile_index)
    body = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8")


def parse(data: bytes) -> PocSettings:
    """Parse a poc-settings document with exactly one entity; raises :class:`XmlError`."""
    root = parse_xml(data)
    namespace = next((ns for ns in ACCEPTED_NAMESPACES if root.tag == f"{{{ns}}}poc-settings"),
                     None)
    if namespace is None:
        raise XmlError(f"root element is {root.tag}, expected {{{NAMESPACE}}}poc-settings")
    p = f"{{{namespace}}}"
    # One PUBLISH speaks for one client; a peer sending several is not one we model.
    entities = root.findall(f"{p}entity")
    if len(entities) != 1:
        raise XmlError(f"poc-settings has {len(entities)} entities, expected exactly 1")
    entity = entities[0]
    client_id = entity.get("id")
    if client_id is None:
        raise XmlError("<entity> lacks attribute id")
    answer_mode = entity.findtext(f"{p}am-settings/{p}answer-mode")
    index_text = entity.findtext(f"{_M}selected-user-profile-index/{_M}user-profile-index")
    index = None
    if index_text is not None:
        index_text = index_text.strip()
        if not index_text.isdigit() or not index_text.isascii() or len(index_text) > 3:
            raise XmlError(f"user-profile-index {index_text!r} is not a small number")
        index = int(index_text)
    settings = PocSettings(client_id.strip(),
                           answer_mode.strip() if answer_mode is not None else None, index)
    _check(settings)
    return settings

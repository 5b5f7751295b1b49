"""The registration state document of the reg event package (RFC 3680 §5).

A ``SUBSCRIBE`` with ``Event: reg`` (RFC 3680 §4.1) is answered with NOTIFYs
whose ``application/reginfo+xml`` bodies (§4.5) describe the registrations of
an address of record: ``<reginfo version state>`` in namespace
``urn:ietf:params:xml:ns:reginfo`` (§5.3), holding ``<registration aor id
state>`` elements, each holding ``<contact id state event [expires]>`` with
its ``<uri>``.  The UE subscribes after its initial registration
(24.229 §5.1.1.3), so does the P-CSCF (§5.2.3); the S-CSCF notifies, and
de-registers the user with ``<registration state="terminated">`` and
``<contact event="deactivated|rejected">`` (spec digest, Addendum [S]).

The states and events are RFC 3680's enumerations (§5.3 schema), checked on
both render and parse; ``display-name``, ``unknown-param`` and the optional
contact attributes other than ``expires`` are not modelled and are ignored
when received.

**PROJECT-DEFINED**: a refused service authorisation (24.229 §5.4.1.7: the
MC service AS answered the third-party REGISTER with an error and the
S-CSCF de-registered the user) rides in the ``<contact>`` as
:data:`SERVICE_AUTHORISATION`, in this project's namespace
:data:`SERVICE_AUTHORISATION_NS`: the response status, its reason phrase
and the Warning values.  RFC 3680 §5.3 admits elements of other namespaces in ``<contact>``
(``xs:any namespace="##other"``), so conforming readers skip it.

Bounded: at most :data:`MAX_REGISTRATIONS` registrations, each with at most
:data:`MAX_CONTACTS` contacts, and :data:`MAX_WARNINGS` warnings per
refusal; more is refused with :class:`XmlError`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .xmlsafe import XmlError
from .xmlsafe import parse_xml

NAMESPACE = "urn:ietf:params:xml:ns:reginfo"
MIME_TYPE = "application/reginfo+xml"
EVENT = "reg"
SERVICE_AUTHORISATION_NS = "urn:mcx-emulator:xml:ns:service-authorisation:1.0"  # PROJECT-DEFINED
SERVICE_AUTHORISATION = f"{{{SERVICE_AUTHORISATION_NS}}}service-authorisation"  # PROJECT-DEFINED
"""The qualified name of the refusal element inside ``<contact>``."""

DOCUMENT_STATES = frozenset({"full", "partial"})
REGISTRATION_STATES = frozenset({"init", "active", "terminated"})
CONTACT_STATES = frozenset({"active", "terminated"})
CONTACT_EVENTS = frozenset({"registered", "created", "refreshed", "shortened", "expired",
                            "deactivated", "probation", "unregistered", "rejected"})
MAX_REGISTRATIONS = 100
MAX_CONTACTS = 100
MAX_WARNINGS = 16
MAX_REASON = 200

_R = f"{{{NAMESPACE}}}"
_S = f"{{{SERVICE_AUTHORISATION_NS}}}"


@dataclass(frozen=True)
class ServiceAuthorisation:
    """Why the MC service refused the registration (PROJECT-DEFINED extension)."""

    status: int
    """The final response of the AS to the third-party REGISTER, 300-699."""
    warnings: tuple[str, ...] = ()
    """Its Warning header values, e.g. ``399 mcptt.example "101 service authorisation
    failed"`` (24.379 §4.4)."""
    reason: str = ""
    """Its reason phrase, at most :data:`MAX_REASON` characters."""


@dataclass(frozen=True)
class ContactInfo:
    """One ``<contact>`` of a registration (RFC 3680 §5.1)."""

    id: str
    state: str
    """``active`` or ``terminated``."""
    event: str
    """What last happened to it: ``registered``, ``expired``, ``rejected``, ..."""
    uri: str
    expires: int | None = None
    """Seconds left; RFC 3680 gives it for active contacts."""
    service_authorisation: ServiceAuthorisation | None = None


@dataclass(frozen=True)
class RegistrationInfo:
    """The registration of one address of record (RFC 3680 §5.1)."""

    aor: str
    id: str
    state: str
    """``init``, ``active`` or ``terminated``."""
    contacts: tuple[ContactInfo, ...] = ()


@dataclass(frozen=True)
class RegInfo:
    """A reginfo document: ``full`` state or a ``partial`` update (RFC 3680 §5.1)."""

    version: int
    """Incremented by the notifier with every document of one subscription."""
    state: str
    registrations: tuple[RegistrationInfo, ...] = ()


def _check(document: RegInfo) -> None:
    """Refuse what the RFC 3680 §5.3 schema or this module's bounds would not admit."""
    if document.version < 0:
        raise XmlError(f"reginfo version {document.version} is negative")
    if document.state not in DOCUMENT_STATES:
        raise XmlError(f"reginfo state {document.state!r} is not full or partial")
    if len(document.registrations) > MAX_REGISTRATIONS:
        raise XmlError(f"{len(document.registrations)} registrations exceed "
                       f"{MAX_REGISTRATIONS}")
    for registration in document.registrations:
        if registration.state not in REGISTRATION_STATES:
            raise XmlError(f"registration state {registration.state!r} is not one of "
                           f"{sorted(REGISTRATION_STATES)}")
        if len(registration.contacts) > MAX_CONTACTS:
            raise XmlError(f"{len(registration.contacts)} contacts of {registration.aor} "
                           f"exceed {MAX_CONTACTS}")
        for contact in registration.contacts:
            if contact.state not in CONTACT_STATES:
                raise XmlError(f"contact state {contact.state!r} is not active or terminated")
            if contact.event not in CONTACT_EVENTS:
                raise XmlError(f"contact event {contact.event!r} is not one of "
                               f"{sorted(CONTACT_EVENTS)}")
            if contact.expires is not None and contact.expires < 0:
                raise XmlError(f"contact expires {contact.expires} is negative")
            refusal = contact.service_authorisation
            if refusal is not None:
                if not 300 <= refusal.status <= 699:
                    raise XmlError(f"service authorisation status {refusal.status} is not "
                                   "a final error status")
                if len(refusal.warnings) > MAX_WARNINGS:
                    raise XmlError(f"{len(refusal.warnings)} warnings exceed {MAX_WARNINGS}")
                if len(refusal.reason) > MAX_REASON:
                    raise XmlError(f"reason phrase longer than {MAX_REASON} characters")


def render(document: RegInfo) -> bytes:
    """The ``application/reginfo+xml`` body; raises :class:`XmlError` on invalid values."""
    _check(document)
    # Literal tags under explicit xmlns declarations: ElementTree would
    # otherwise invent ns0:/ns1: prefixes.
    attributes = {"xmlns": NAMESPACE}
    if any(c.service_authorisation for r in document.registrations for c in r.contacts):
        attributes["xmlns:sa"] = SERVICE_AUTHORISATION_NS
    attributes |= {"version": str(document.version), "state": document.state}
    root = ET.Element("reginfo", attributes)
    for registration in document.registrations:
        element = ET.SubElement(root, "registration", {
            "aor": registration.aor, "id": registration.id, "state": registration.state})
        for contact in registration.contacts:
            contact_attributes = {"id": contact.id, "state": contact.state,
                                  "event": contact.event}
            if contact.expires is not None:
                contact_attributes["expires"] = str(contact.expires)
            contact_element = ET.SubElement(element, "contact", contact_attributes)
            ET.SubElement(contact_element, "uri").text = contact.uri
            refusal = contact.service_authorisation
            if refusal is not None:
                attributes = {"status": str(refusal.status)}
                if refusal.reason:
                    attributes["reason"] = refusal.reason
                refusal_element = ET.SubElement(contact_element, "sa:service-authorisation",
                                                attributes)
                for warning in refusal.warnings:
                    ET.SubElement(refusal_element, "sa:warning").text = warning
    body = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8")


def _attribute(element: ET.Element, name: str) -> str:
    value = element.get(name)
    if value is None:
        raise XmlError(f"<{element.tag.split('}')[-1]}> lacks attribute {name}")
    return value


def _integer(element: ET.Element, name: str) -> int:
    text = _attribute(element, name).strip()
    # int() would also take "+5", " 5" and "5_000"; the schema's integers are digits.
    if not text.isdigit() or not text.isascii():
        raise XmlError(f"<{element.tag.split('}')[-1]}> {name}={text!r} is not a "
                       "non-negative integer")
    return int(text)


def _refusal(contact: ET.Element) -> ServiceAuthorisation | None:
    element = contact.find(SERVICE_AUTHORISATION)
    if element is None:
        return None
    warnings = element.findall(f"{_S}warning")
    if len(warnings) > MAX_WARNINGS:
        raise XmlError(f"{len(warnings)} warnings exceed {MAX_WARNINGS}")
    reason = element.get("reason", "")
    if len(reason) > MAX_REASON:
        raise XmlError(f"reason phrase longer than {MAX_REASON} characters")
    return ServiceAuthorisation(_integer(element, "status"),
                                tuple((w.text or "").strip() for w in warnings), reason)


def parse(data: bytes) -> RegInfo:
    """Parse a reginfo document; raises :class:`XmlError` naming what is wrong."""
    root = parse_xml(data)
    if root.tag != f"{_R}reginfo":
        raise XmlError(f"root element is {root.tag}, expected {_R}reginfo")
    # Count before building anything: the bound is on what a peer can make us hold.
    registrations = root.findall(f"{_R}registration")
    if len(registrations) > MAX_REGISTRATIONS:
        raise XmlError(f"{len(registrations)} registrations exceed {MAX_REGISTRATIONS}")
    parsed = []
    for registration in registrations:
        contacts = registration.findall(f"{_R}contact")
        if len(contacts) > MAX_CONTACTS:
            raise XmlError(f"{len(contacts)} contacts of one registration exceed "
                           f"{MAX_CONTACTS}")
        contact_infos = []
        for contact in contacts:
            uri = contact.find(f"{_R}uri")
            if uri is None:
                raise XmlError("<contact> lacks <uri>")
            expires = _integer(contact, "expires") if "expires" in contact.attrib else None
            contact_infos.append(ContactInfo(
                _attribute(contact, "id"), _attribute(contact, "state"),
                _attribute(contact, "event"), (uri.text or "").strip(), expires,
                _refusal(contact)))
        parsed.append(RegistrationInfo(
            _attribute(registration, "aor"), _attribute(registration, "id"),
            _attribute(registration, "state"), tuple(contact_infos)))
    document = RegInfo(_integer(root, "version"), _attribute(root, "state"), tuple(parsed))
    _check(document)
    return document

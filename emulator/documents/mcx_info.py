"""The MC service info bodies of SIP requests (24.379 Annex F.1 and siblings).

``application/vnd.3gpp.mcptt-info+xml`` (root ``mcpttinfo``, namespace
``urn:3gpp:ns:mcpttInfo:1.0``) carries the access token and client id in
REGISTER or PUBLISH for service authorisation (24.379 §7.2.1, §7.3.1).
MCData and MCVideo have the same shape under their own names
(``mcdatainfo``/``urn:3gpp:ns:mcdataInfo:1.0``, ``mcvideoinfo``/
``urn:3gpp:ns:mcvideoInfo:1.0``; spec digest §4.5 [S]).

Elements are written in the order of the XSD sequence (F.1 is an
``xs:sequence``; spec digest §4.5 [V]): ``mcptt-access-token``,
``session-type``, ``mcptt-request-uri``, ``mcptt-calling-user-id``,
``mcptt-called-party-id``, ``mcptt-calling-group-id``, ..., ``mcptt-client-id``.
Each is a ``contentType`` with ``type="Normal"`` holding ``<mcpttURI>`` or
``<mcpttString>``, except ``session-type``: F.1 types it as a plain string
and names it without the service prefix.

MCData and MCVideo: the ``<svc>-calling-user-id`` etc. names follow the same
pattern, and ``session-type`` keeps its unprefixed name for them too (an
MCVideo parser in the wild reads ``session-type`` next to
``mcvideo-request-uri``, ``mcvideo-calling-group-id`` [S]).  MCData's own
``request-type`` (``one-to-one-sds``, ``group-sds``; 24.282) is not modelled.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .xmlsafe import XmlError
from .xmlsafe import parse_xml


@dataclass(frozen=True)
class ServiceInfoFormat:
    """The names one MC service uses for its info document."""

    service: str  # "mcptt", "mcdata", "mcvideo"
    mime_type: str
    namespace: str
    root: str
    scope: str
    """The 33.180 scope that authorises the service."""

    @property
    def prefix(self) -> str:
        return self.service


MCPTT = ServiceInfoFormat("mcptt", "application/vnd.3gpp.mcptt-info+xml",
                          "urn:3gpp:ns:mcpttInfo:1.0", "mcpttinfo", "3gpp:mc:ptt_service")
MCDATA = ServiceInfoFormat("mcdata", "application/vnd.3gpp.mcdata-info+xml",
                           "urn:3gpp:ns:mcdataInfo:1.0", "mcdatainfo", "3gpp:mc:data_service")
MCVIDEO = ServiceInfoFormat("mcvideo", "application/vnd.3gpp.mcvideo-info+xml",
                            "urn:3gpp:ns:mcvideoInfo:1.0", "mcvideoinfo",
                            "3gpp:mc:video_service")
FORMATS = {f.mime_type: f for f in (MCPTT, MCDATA, MCVIDEO)}


@dataclass(frozen=True)
class ServiceInfo:
    """What an info document says: the token, the MC service ID and the client id."""

    format: ServiceInfoFormat
    access_token: str | None
    request_uri: str | None
    client_id: str | None
    # Appended with defaults so that the four-argument form stays valid.
    session_type: str | None = None
    """``private``, ``prearranged``, ``chat``, ... (F.1 ``session-type``, a plain string)."""
    called_party_id: str | None = None
    calling_group_id: str | None = None
    calling_user_id: str | None = None


# (element name without the service prefix, content kind, ServiceInfo field), in the
# order of the F.1 xs:sequence.  Kind None: a plain string element, unprefixed.
_PARAMS: tuple[tuple[str, str | None, str], ...] = (
    ("access-token", "String", "access_token"),
    ("session-type", None, "session_type"),
    ("request-uri", "URI", "request_uri"),
    ("calling-user-id", "URI", "calling_user_id"),
    ("called-party-id", "URI", "called_party_id"),
    ("calling-group-id", "URI", "calling_group_id"),
    ("client-id", "String", "client_id"),
)


def render(info: ServiceInfo) -> bytes:
    """The XML document, elements in XSD order, ``type="Normal"`` (not encrypted)."""
    fmt = info.format
    ns = fmt.namespace
    # Plain tags under an explicit default namespace: ElementTree would
    # otherwise invent ns0: prefixes.
    root = ET.Element(fmt.root, {"xmlns": ns})
    params = ET.SubElement(root, f"{fmt.prefix}-Params")
    for name, kind, field_name in _PARAMS:
        value = getattr(info, field_name)
        if value is None:
            continue
        if kind is None:
            ET.SubElement(params, name).text = value
            continue
        element = ET.SubElement(params, f"{fmt.prefix}-{name}", {"type": "Normal"})
        ET.SubElement(element, f"{fmt.prefix}{kind}").text = value
    body = ET.tostring(root, encoding="unicode")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body.encode("utf-8")


def parse(data: bytes, fmt: ServiceInfoFormat) -> ServiceInfo:
    """Parse an info document; raises :class:`XmlError` when it is not one."""
    root = parse_xml(data)
    ns = fmt.namespace
    if root.tag != f"{{{ns}}}{fmt.root}":
        raise XmlError(f"root element is {root.tag}, expected {{{ns}}}{fmt.root}")
    params = root.find(f"{{{ns}}}{fmt.prefix}-Params")
    if params is None:
        return ServiceInfo(fmt, None, None, None)

    def value(name: str, kind: str | None) -> str | None:
        if kind is None:
            text = params.findtext(f"{{{ns}}}{name}")
            return (text or "").strip() or None
        element = params.find(f"{{{ns}}}{fmt.prefix}-{name}")
        if element is None:
            return None
        if element.get("type", "Normal") != "Normal":
            raise XmlError(f"{fmt.prefix}-{name} is {element.get('type')}: encrypted elements "
                           "are not supported")
        inner = element.find(f"{{{ns}}}{fmt.prefix}{kind}")
        text = (inner.text if inner is not None else element.text) or ""
        return text.strip() or None

    values = {field_name: value(name, kind) for name, kind, field_name in _PARAMS}
    return ServiceInfo(fmt, **values)

"""The MC service info bodies of SIP requests (24.379 Annex F.1 and siblings).

``application/vnd.3gpp.mcptt-info+xml`` (root ``mcpttinfo``, namespace
``urn:3gpp:ns:mcpttInfo:1.0``) carries the access token and client id in
REGISTER or PUBLISH for service authorisation (24.379 §7.2.1, §7.3.1).
MCData and MCVideo have the same shape under their own names
(``mcdatainfo``/``urn:3gpp:ns:mcdataInfo:1.0``, ``mcvideoinfo``/
``urn:3gpp:ns:mcvideoInfo:1.0``; spec digest §4.5 [S]).

Elements are written in the order of the XSD sequence (``mcptt-access-token``,
``mcptt-request-uri``, ``mcptt-client-id``: F.1 is an ``xs:sequence``), each
a ``contentType`` with ``type="Normal"``.
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


def render(info: ServiceInfo) -> bytes:
    """The XML document, elements in XSD order, ``type="Normal"`` (not encrypted)."""
    fmt = info.format
    ns = fmt.namespace
    # Plain tags under an explicit default namespace: ElementTree would
    # otherwise invent ns0: prefixes.
    root = ET.Element(fmt.root, {"xmlns": ns})
    params = ET.SubElement(root, f"{fmt.prefix}-Params")
    for name, kind, value in (("access-token", "String", info.access_token),
                              ("request-uri", "URI", info.request_uri),
                              ("client-id", "String", info.client_id)):
        if value is None:
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

    def value(name: str, kind: str) -> str | None:
        element = params.find(f"{{{ns}}}{fmt.prefix}-{name}")
        if element is None:
            return None
        if element.get("type", "Normal") != "Normal":
            raise XmlError(f"{fmt.prefix}-{name} is {element.get('type')}: encrypted elements "
                           "are not supported")
        inner = element.find(f"{{{ns}}}{fmt.prefix}{kind}")
        text = (inner.text if inner is not None else element.text) or ""
        return text.strip() or None

    return ServiceInfo(fmt, value("access-token", "String"), value("request-uri", "URI"),
                       value("client-id", "String"))

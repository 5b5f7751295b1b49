"""Parsing XML from peers safely: defusedxml, size-capped, one error type.

Every XML document that arrives from the network (profiles from a CMS,
mcptt-info bodies in SIP) goes through :func:`parse_xml`.  DTDs, entity
declarations and external references are refused outright (billion laughs,
XXE), as is anything larger than the cap.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # only for the Element type; parsing is defusedxml's

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

MAX_XML_BYTES = 64 * 1024


class XmlError(ValueError):
    """The document is not acceptable XML; the message says why."""


def parse_xml(data: bytes, *, max_bytes: int = MAX_XML_BYTES) -> ET.Element:
    if len(data) > max_bytes:
        raise XmlError(f"XML document of {len(data)} bytes exceeds {max_bytes}")
    try:
        root: ET.Element = fromstring(data, forbid_dtd=True, forbid_entities=True,
                                      forbid_external=True)
        return root
    except DefusedXmlException as exc:
        raise XmlError(f"XML refused: {type(exc).__name__} ({exc})") from None
    except ET.ParseError as exc:
        raise XmlError(f"malformed XML: {exc}") from None

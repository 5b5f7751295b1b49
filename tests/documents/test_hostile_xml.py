"""Hostile XML against every document parser of this package.

Each parser must refuse, with :class:`XmlError` and nothing else, entity
expansion (billion laughs) and external entities before any expansion,
malformed XML, a document of another kind, and its own root element in a
foreign namespace; and it must parse the genuine document afterwards.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from emulator.documents import XmlError
from emulator.documents import affiliation
from emulator.documents import groups
from emulator.documents import mcx_info
from emulator.documents import poc_settings
from emulator.documents import reginfo

BILLION_LAUGHS = '<!ENTITY lol0 "lol">' + "".join(
    f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
XXE = '<!ENTITY xxe SYSTEM "file:///etc/passwd">'


@dataclass(frozen=True)
class Kind:
    """One document kind: a genuine body, its root name and its parser."""

    name: str
    genuine: bytes
    root: str
    parse: Callable[[bytes], object]


KINDS = [
    Kind("reginfo", reginfo.render(reginfo.RegInfo(0, "full", (reginfo.RegistrationInfo(
        "sip:alice@mcx.example", "r1", "active", (reginfo.ContactInfo(
            "c1", "active", "registered", "sip:alice@192.0.2.1:5060", 600),)),))),
         "reginfo", reginfo.parse),
    Kind("poc-settings", poc_settings.render(poc_settings.PocSettings(
        "urn:uuid:00000000-0000-1000-8000-000000000001", "manual")),
         "poc-settings", poc_settings.parse),
    Kind("affiliation", affiliation.render(affiliation.AffiliationDocument(
        "sip:alice@mcx.example", "urn:uuid:00000000-0000-1000-8000-000000000001",
        (affiliation.Affiliation("sip:fire@mcx.example"),))),
         "presence", affiliation.parse),
    Kind("group", groups.render(groups.GroupDocument(
        "sip:fire@mcx.example", "Fire", ("sip:alice@mcx.example",))),
         "group", groups.parse),
    Kind("mcptt-info", mcx_info.render(mcx_info.ServiceInfo(
        mcx_info.MCPTT, None, "sip:bob@mcx.example", None, "private")),
         "mcpttinfo", lambda data: mcx_info.parse(data, mcx_info.MCPTT)),
]
BY_NAME = {kind.name: kind for kind in KINDS}
IDS = [kind.name for kind in KINDS]


def with_doctype(kind: Kind, dtd: str, reference: str) -> bytes:
    """The genuine document behind a DOCTYPE, with ``reference`` placed in an attribute."""
    declaration, _, body = kind.genuine.partition(b"\n")
    body = body.replace(b' xmlns="', f' data-x="{reference}" xmlns="'.encode(), 1)
    doctype = f"<!DOCTYPE {kind.root} [{dtd}]>\n".encode()
    return declaration + b"\n" + doctype + body


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_the_genuine_document_parses(kind: Kind) -> None:
    """Control: the hostile variants below differ from this only as stated."""
    kind.parse(kind.genuine)


@pytest.mark.parametrize(("dtd", "reference"), [
    pytest.param(BILLION_LAUGHS, "&lol9;", id="billion-laughs"),
    pytest.param(XXE, "&xxe;", id="xxe"),
])
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_entities_are_refused_before_expansion(kind: Kind, dtd: str, reference: str) -> None:
    document = with_doctype(kind, dtd, reference)
    tracemalloc.start()
    try:
        with pytest.raises(XmlError, match=r"^XML refused: "):
            kind.parse(document)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # refused before any expansion took memory, not after
    kind.parse(kind.genuine)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_malformed_xml_is_refused(kind: Kind) -> None:
    for broken in (kind.genuine[:-7], kind.genuine + b"<trailing/>", b"", b"\xff\xfe<a/>",
                   kind.genuine.replace(b"<", b"<<", 2)):
        with pytest.raises(XmlError, match="malformed XML"):
            kind.parse(broken)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_another_kind_of_document_is_refused(kind: Kind) -> None:
    for other in KINDS:
        if other is not kind:
            with pytest.raises(XmlError, match="root element is"):
                kind.parse(other.genuine)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_the_right_root_in_a_foreign_namespace_is_refused(kind: Kind) -> None:
    declaration, _, body = kind.genuine.partition(b"\n")
    foreign = body.replace(b' xmlns="', b' xmlns="urn:example:not-it" data-was="', 1)
    with pytest.raises(XmlError, match=re.escape("root element is {urn:example:not-it}")):
        kind.parse(declaration + b"\n" + foreign)
    # No namespace at all is foreign too.
    bare = body.replace(b' xmlns="', b' data-was="', 1)
    with pytest.raises(XmlError, match="root element is "):
        kind.parse(declaration + b"\n" + bare)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_oversized_document_is_refused(kind: Kind) -> None:
    padded = kind.genuine + b"<!--" + b"x" * (64 * 1024) + b"-->"
    with pytest.raises(XmlError, match="exceeds"):
        kind.parse(padded)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16"])
@pytest.mark.parametrize(("dtd", "reference"), [
    pytest.param(BILLION_LAUGHS, "&lol9;", id="billion-laughs"),
    pytest.param(XXE, "&xxe;", id="xxe"),
])
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_entities_are_refused_in_any_encoding_expat_detects(
        kind: Kind, dtd: str, reference: str, encoding: str) -> None:
    """expat reads UTF-16 by the NULs around ``<`` (with a byte-order mark or without,
    whatever it is told): a DTD there must not pass for a plain UTF-8 document that could
    hold none and reach the fast parser, which would expand it."""
    _, _, body = with_doctype(kind, dtd, reference).partition(b"\n")
    document = body.decode().encode(encoding)
    with pytest.raises(XmlError, match=r"^XML refused: "):
        kind.parse(document)
    assert b"<!DOCTYPE" not in document  # the plain-text guard alone would not see it


def test_both_parsers_read_every_genuine_document_alike() -> None:
    """The fast path (expat through ElementTree's C parser) and defusedxml agree."""
    from defusedxml.ElementTree import fromstring

    from emulator.documents.xmlsafe import _cannot_hold_a_dtd
    from emulator.documents.xmlsafe import parse_xml
    for kind in KINDS:
        assert _cannot_hold_a_dtd(kind.genuine), kind.name
        fast, defused = parse_xml(kind.genuine), fromstring(kind.genuine)
        assert [(e.tag, e.attrib, e.text) for e in fast.iter()] == \
            [(e.tag, e.attrib, e.text) for e in defused.iter()], kind.name


def test_a_document_in_its_declared_encoding_is_read_so() -> None:
    from emulator.documents.xmlsafe import parse_xml
    latin = '<?xml version="1.0" encoding="ISO-8859-1"?>\n<a>caf\xe9</a>'.encode("latin-1")
    assert parse_xml(latin).text == "café"
    with_bom = b"\xef\xbb\xbf" + '<?xml version="1.0" encoding="utf-8"?><a>caf\xe9</a>'.encode()
    assert parse_xml(with_bom).text == "café"

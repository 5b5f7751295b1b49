"""Hostile XML from peers: profiles (24.484) and mcptt-info bodies (24.379 F.1).

Entity expansion (billion laughs) and external entities (XXE) must be
refused by policy, before any expansion or file access, by both parsers;
malformed, wrongly rooted and oversized documents likewise, with XmlError.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from emulator.documents import MAX_XML_BYTES
from emulator.documents import XmlError
from emulator.documents import mcx_info
from emulator.documents import profile
from tests.support.identity import ALICE_MCPTT_ID
from tests.support.identity import alice_profile

INFO_NS = mcx_info.MCPTT.namespace

BILLION_LAUGHS = '<!ENTITY lol0 "lol">' + "".join(
    f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
XXE = '<!ENTITY xxe SYSTEM "file:///etc/passwd">'
XXE_PARAMETER = '<!ENTITY % remote SYSTEM "file:///etc/passwd"> %remote;'


def profile_document(text: str, doctype: str = "") -> bytes:
    """A minimal valid profile whose <Name> holds ``text``, after an optional DOCTYPE."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}'
            f'<mcptt-user-profile xmlns="{profile.PROFILE_NS}" XUI-URI="{ALICE_MCPTT_ID}" '
            f'user-profile-index="1"><Name>{text}</Name><Common index="1"><MCPTTUserID>'
            f"<uri-entry>{ALICE_MCPTT_ID}</uri-entry></MCPTTUserID></Common>"
            f"</mcptt-user-profile>").encode()


def info_document(text: str, doctype: str = "") -> bytes:
    """A minimal mcptt-info body whose access token is ``text``."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{doctype}'
            f'<mcpttinfo xmlns="{INFO_NS}"><mcptt-Params>'
            f'<mcptt-access-token type="Normal"><mcpttString>{text}</mcpttString>'
            f"</mcptt-access-token></mcptt-Params></mcpttinfo>").encode()


def parse_profile(data: bytes) -> str:
    return profile.parse(data).name


def parse_info(data: bytes) -> str:
    return mcx_info.parse(data, mcx_info.MCPTT).access_token or ""


# (document builder, root name for the DOCTYPE, parser returning the carried text)
DOCUMENTS = [
    pytest.param(profile_document, "mcptt-user-profile", parse_profile, id="profile"),
    pytest.param(info_document, "mcpttinfo", parse_info, id="mcptt-info"),
]
HOSTILE = [
    pytest.param(BILLION_LAUGHS, "&lol9;", id="billion-laughs"),
    pytest.param(XXE, "&xxe;", id="xxe-system-file"),
    pytest.param(XXE_PARAMETER, "x", id="xxe-parameter-entity"),
]
Builder = Callable[..., bytes]
Parser = Callable[[bytes], str]


@pytest.mark.parametrize(("build", "root", "parse"), DOCUMENTS)
def test_documents_without_dtd_parse(build: Builder, root: str, parse: Parser) -> None:
    """Control: the hostile documents below differ from these only by their DTD."""
    assert parse(build("lol")) == "lol"


@pytest.mark.parametrize(("dtd", "reference"), HOSTILE)
@pytest.mark.parametrize(("build", "root", "parse"), DOCUMENTS)
def test_entity_declarations_are_refused_before_expansion(
        build: Builder, root: str, parse: Parser, dtd: str, reference: str) -> None:
    document = build(reference, f"<!DOCTYPE {root} [{dtd}]>\n")
    tracemalloc.start()
    try:
        with pytest.raises(XmlError) as refused:
            parse(document)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Refused by policy (defusedxml), not by a parser limit after partial expansion: no
    # expansion's memory was ever taken (one level of the billion laughs is 10x the last).
    assert str(refused.value).startswith("XML refused: ")
    assert peak < 1_000_000
    # The parser is not left in a bad state.
    assert parse(build("after")) == "after"


@pytest.mark.parametrize(("build", "root", "parse"), DOCUMENTS)
def test_external_dtd_is_refused(build: Builder, root: str, parse: Parser) -> None:
    document = build("x", f'<!DOCTYPE {root} SYSTEM "http://evil.example/x.dtd">\n')
    with pytest.raises(XmlError, match="XML refused: DTDForbidden"):
        parse(document)


@pytest.mark.parametrize(("build", "root", "parse"), DOCUMENTS)
def test_malformed_xml_is_refused(build: Builder, root: str, parse: Parser) -> None:
    for broken in (build("x")[:-12], build("<unclosed>"), b"", b"\xff\xfe<a/>"):
        with pytest.raises(XmlError, match="malformed XML"):
            parse(broken)
    assert parse(build("fine")) == "fine"


@pytest.mark.parametrize(("build", "root", "parse"), DOCUMENTS)
def test_oversized_document_is_refused(build: Builder, root: str, parse: Parser) -> None:
    document = build("A" * MAX_XML_BYTES)
    with pytest.raises(XmlError, match=f"XML document of {len(document)} bytes exceeds "
                                       f"{MAX_XML_BYTES}"):
        parse(document)
    # Just under the cap is fine.
    fits = build("A" * (MAX_XML_BYTES - len(build(""))))
    assert len(fits) == MAX_XML_BYTES
    assert len(parse(fits)) == MAX_XML_BYTES - len(build(""))


def test_wrong_root_is_refused() -> None:
    profile_doc = profile.render(alice_profile())
    info_doc = mcx_info.render(mcx_info.ServiceInfo(mcx_info.MCPTT, "tok", None, "client"))
    with pytest.raises(XmlError, match=r"root element is .*mcpttinfo, expected "
                                       "mcptt-user-profile"):
        profile.parse(info_doc)
    with pytest.raises(XmlError, match=r"root element is .*mcptt-user-profile, expected "):
        mcx_info.parse(profile_doc, mcx_info.MCPTT)
    # Same shape, another service's namespace: an MCData body is not an MCPTT one.
    data_doc = mcx_info.render(mcx_info.ServiceInfo(mcx_info.MCDATA, "tok", None, "client"))
    with pytest.raises(XmlError, match=r"mcdatainfo, expected .*mcpttinfo"):
        mcx_info.parse(data_doc, mcx_info.MCPTT)
    # The genuine documents still parse.
    assert profile.parse(profile_doc) == alice_profile()
    assert mcx_info.parse(info_doc, mcx_info.MCPTT).access_token == "tok"
    assert mcx_info.parse(data_doc, mcx_info.MCDATA).client_id == "client"

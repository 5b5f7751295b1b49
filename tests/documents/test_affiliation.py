"""Self-affiliation in PIDF (24.379 §9.2.1.2, §9.3.1): round trip, the server's NOTIFY, limits."""

from __future__ import annotations

import pytest

from emulator.documents import XmlError
from emulator.documents import affiliation
from emulator.documents.affiliation import Affiliation
from emulator.documents.affiliation import AffiliationDocument

ALICE = "sip:alice@mcx.example"
CLIENT = "urn:uuid:00000000-0000-1000-8000-000000000001"
FIRE = "sip:fire@mcx.example"
POLICE = "sip:police@mcx.example"
SEPT_30_2026 = 1790744400  # 2026-09-30T05:00:00Z


def document(tuples: str, entity: str = ALICE) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="{affiliation.PIDF_NS}" '
            f'xmlns:mcpttPI10="{affiliation.PRES_INFO_NS}" entity="{entity}">{tuples}'
            "</presence>").encode()


def one_tuple(affiliations: str, client: str = CLIENT) -> bytes:
    return document(f'<tuple id="{client}"><status>{affiliations}</status></tuple>')


def test_constants() -> None:
    assert (affiliation.MIME_TYPE, affiliation.EVENT) == ("application/pidf+xml", "presence")
    assert affiliation.PRES_INFO_NS == "urn:3gpp:ns:mcpttPresInfo:1.0"


def test_a_client_request_round_trips() -> None:
    """The PUBLISH a client sends: only the groups it wants, no status or expiry."""
    request = AffiliationDocument(ALICE, CLIENT, (Affiliation(FIRE), Affiliation(POLICE)))
    data = affiliation.render(request)
    assert b"status=" not in data and b"expires=" not in data
    assert affiliation.parse(data) == request


def test_expires_is_an_xs_date_time_in_utc() -> None:
    granted = AffiliationDocument(ALICE, CLIENT, (
        Affiliation(FIRE, "affiliated", SEPT_30_2026), Affiliation(POLICE, "deaffiliating")))
    data = affiliation.render(granted)
    assert b'expires="2026-09-30T05:00:00Z"' in data
    assert affiliation.parse(data) == granted


def test_a_server_notify_with_two_clients() -> None:
    """The shape servers send (§9.3.1.2): basic, contact, timestamp, p-id are passed over."""
    data = document(
        f'<tuple id="{CLIENT}"><status><basic>open</basic>'
        f'<mcpttPI10:affiliation group="{FIRE}" status="affiliated" '
        'expires="2026-09-30T05:00:00.000Z"/></status>'
        f"<contact priority=\"1.0\">{ALICE}</contact><timestamp>2026-09-29T05:00:00Z</timestamp>"
        "</tuple>"
        '<tuple id="urn:uuid:00000000-0000-1000-8000-000000000002"><status>'
        f'<mcpttPI10:affiliation group="{POLICE}" status="affiliating" '
        'expires="2026-09-30T07:00:00+02:00"/></status></tuple>'
        "<mcpttPI10:p-id>pub-77</mcpttPI10:p-id>")
    first, second = affiliation.parse_all(data)
    assert first == AffiliationDocument(ALICE, CLIENT, (
        Affiliation(FIRE, "affiliated", SEPT_30_2026),))
    assert second.affiliations == (Affiliation(POLICE, "affiliating", SEPT_30_2026),)
    with pytest.raises(XmlError, match="2 tuples, expected exactly 1"):
        affiliation.parse(data)


def test_an_expiry_without_zone_is_utc() -> None:
    data = one_tuple(f'<mcpttPI10:affiliation group="{FIRE}" expires="2026-09-30T05:00:00"/>')
    assert affiliation.parse(data).affiliations[0].expires == SEPT_30_2026


def test_the_prefix_does_not_matter() -> None:
    data = one_tuple(f'<a:affiliation xmlns:a="{affiliation.PRES_INFO_NS}" group="{FIRE}"/>'
                     f'<affiliation xmlns="{affiliation.PRES_INFO_NS}" group="{POLICE}"/>')
    assert [a.group for a in affiliation.parse(data).affiliations] == [FIRE, POLICE]


def test_an_affiliation_outside_the_extension_namespace_is_not_one() -> None:
    data = one_tuple(f'<affiliation group="{FIRE}"/>')
    assert affiliation.parse(data).affiliations == ()


@pytest.mark.parametrize(("affiliations", "message"), [
    (f'<mcpttPI10:affiliation group="{FIRE}" status="joined"/>', "status 'joined'"),
    ('<mcpttPI10:affiliation status="affiliated"/>', "lacks attribute group"),
    (f'<mcpttPI10:affiliation group="{FIRE}" expires="3600"/>', "not an xs:dateTime"),
    (f'<mcpttPI10:affiliation group="{FIRE}" expires="2026-02-30T00:00:00Z"/>',
     "not a valid date and time"),
    (f'<mcpttPI10:affiliation group="{FIRE}" expires="1969-12-31T23:59:59Z"/>',
     "outside the years 1970-9999"),
    (f'<mcpttPI10:affiliation group="{FIRE}" expires="２０２６-09-30T05:00:00Z"/>',
     "not an xs:dateTime"),
])
def test_invalid_affiliations_are_refused(affiliations: str, message: str) -> None:
    with pytest.raises(XmlError, match=message):
        affiliation.parse(one_tuple(affiliations))


def test_missing_identities_are_refused() -> None:
    with pytest.raises(XmlError, match="lacks attribute entity"):
        affiliation.parse(document("").replace(f' entity="{ALICE}"'.encode(), b""))
    with pytest.raises(XmlError, match="lacks attribute id"):
        affiliation.parse(document("<tuple><status/></tuple>"))
    with pytest.raises(XmlError, match="0 tuples, expected exactly 1"):
        affiliation.parse(document(""))


def test_render_refuses_bad_values() -> None:
    with pytest.raises(XmlError, match="status 'maybe'"):
        affiliation.render(AffiliationDocument(ALICE, CLIENT, (Affiliation(FIRE, "maybe"),)))
    with pytest.raises(XmlError, match="outside the years"):
        affiliation.render(AffiliationDocument(ALICE, CLIENT, (Affiliation(FIRE, None, -1),)))


def test_too_many_groups_are_refused() -> None:
    limit = affiliation.MAX_AFFILIATIONS
    groups = [f"sip:g{i}@mcx.example" for i in range(limit + 1)]
    fits = AffiliationDocument(ALICE, CLIENT, tuple(Affiliation(g) for g in groups[:limit]))
    assert affiliation.parse(affiliation.render(fits)) == fits
    with pytest.raises(XmlError, match=f"{limit + 1} affiliations exceed {limit}"):
        affiliation.render(AffiliationDocument(ALICE, CLIENT,
                                               tuple(Affiliation(g) for g in groups)))
    # Spread over several tuples, the total still counts.
    half = "".join(f'<mcpttPI10:affiliation group="{g}"/>' for g in groups[:limit // 2 + 1])
    spread = document(f'<tuple id="a"><status>{half}</status></tuple>'
                      f'<tuple id="b"><status>{half}</status></tuple>')
    with pytest.raises(XmlError, match=f"{limit + 2} affiliations exceed {limit}"):
        affiliation.parse_all(spread)


def test_too_many_tuples_are_refused() -> None:
    limit = affiliation.MAX_TUPLES
    with pytest.raises(XmlError, match=f"{limit + 1} tuples exceed {limit}"):
        affiliation.parse_all(document('<tuple id="c"><status/></tuple>' * (limit + 1)))

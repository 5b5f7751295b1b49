"""The user profile's groups and the partner's configuration servers (24.484 [S] and the
project-defined migration elements) survive a round trip and are bounded."""

from __future__ import annotations

import pytest

from emulator.documents import profile as profiles
from emulator.documents.xmlsafe import XmlError

PARTNER = profiles.PartnerSystem(
    "partner", True, "001-02", "https://127.0.30.1:8443/attach", "127.0.30.1", 5060, "udp",
    "mcx.partner.example", "sip:alice.visitor@mcx.partner.example",
    "alice.visitor@mcx.partner.example", "https://127.0.20.4:9443/token",
    "https://127.0.20.4:9443", cms_url="https://127.0.20.5:9444",
    gms_url="https://127.0.20.6:9445")


def test_groups_and_partner_configuration_round_trip() -> None:
    profile = profiles.UserProfile(
        "sip:alice@mcx.primary.example", 1, "Alice", "sip:alice@mcx.primary.example",
        "Primary", (PARTNER,), groups=("sip:fire-1@mcx.primary.example",))
    data = profiles.render(profile)
    assert b"<MCPTTGroupInfo><entry><uri-entry>sip:fire-1@mcx.primary.example" in data
    assert profiles.parse(data) == profile


def test_a_partner_without_configuration_servers_still_parses() -> None:
    bare = profiles.UserProfile("sip:a@x", 1, "A", "sip:a@x", "O", (
        profiles.PartnerSystem(*[getattr(PARTNER, f) for f in (
            "system_id", "authorised_to_migrate", "plmn_id", "attach_url", "sip_core_host",
            "sip_core_port", "sip_transport", "sip_domain", "partner_impu", "partner_impi",
            "idms_token_endpoint", "idms_audience")]),))
    data = profiles.render(bare)
    assert b"PartnerConfiguration" not in data
    assert profiles.parse(data).partners[0].cms_url == ""


def test_too_many_groups_are_refused() -> None:
    many = profiles.UserProfile("sip:a@x", 1, "A", "sip:a@x", "O", groups=tuple(
        f"sip:g{i}@x" for i in range(profiles.MAX_GROUPS + 1)))
    with pytest.raises(XmlError, match="groups exceed"):
        profiles.parse(profiles.render(many))

"""Two MC systems' identity servers, running in-process over HTTPS on 127.0.0.0/8.

Primary: IdMS on 127.0.110.4:9443, CMS on 127.0.110.5:9444.
Partner: IdMS on 127.0.120.4:9443, CMS on 127.0.120.5:9444.
Nothing is shared between the systems except what ``provision`` copies.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from emulator import profile as profiles
from emulator.identity.oidc import (
    IdentityProvider,
    MigrationProfile,
    OidcClient,
    UserAccount,
    hash_password,
    migration_profile_index,
)
from emulator.identity.tokens import SigningKey, TokenIssuer, TokenValidator
from emulator.identity.trust import verification_key
from emulator.provisioning import SystemMaterial, create_system, load_trusted_issuers, provision
from emulator.transport.tls import server_context
from nodes.cms import CmsNode
from nodes.idms import IdmsNode

CLIENT_ID = "mcx-client"
REDIRECT_URI = "http://127.0.0.1/callback"  # RFC 8252 §7.3 loopback redirect
PRIMARY_IDMS, PARTNER_IDMS = ("127.0.110.4", 9443), ("127.0.120.4", 9443)
PRIMARY_CMS, PARTNER_CMS = ("127.0.110.5", 9444), ("127.0.120.5", 9444)
PRIMARY_ISSUER = f"https://{PRIMARY_IDMS[0]}:{PRIMARY_IDMS[1]}"
PARTNER_ISSUER = f"https://{PARTNER_IDMS[0]}:{PARTNER_IDMS[1]}"
ALICE_PASSWORD = "alice-secret"
ALICE_MCPTT_ID = "sip:alice@mcx.primary.example"
ALICE_PARTNER_ID = "sip:alice.visitor@mcx.partner.example"


@dataclass
class System:
    name: str
    material: SystemMaterial
    provider: IdentityProvider
    idms: IdmsNode
    cms: CmsNode
    ca_file: Path
    refused_trust: dict[str, str]

    @property
    def issuer(self) -> str:
        return self.provider.address


@dataclass
class Systems:
    directory: Path
    primary: System
    partner: System


def _tls(material: SystemMaterial, node: str, directory: Path) -> ssl.SSLContext:
    credential = material.tls[node]
    return server_context(credential.certificate_pem(), credential.key_pem(),
                          directory / "run" / material.name, node,
                          keylog=directory / "tls-keys.log")


def _system(directory: Path, material: SystemMaterial, issuer: str, idms_at: tuple[str, int],
            cms_at: tuple[str, int], users: list[UserAccount],
            user_profiles: list[profiles.UserProfile],
            migration: list[MigrationProfile], now: dt.datetime) -> System:
    signing = SigningKey.from_credential(material.signing)
    trusted, refused = load_trusted_issuers(directory, material.name, now=now)
    own_key = verification_key(issuer, material.signing.certificate, [material.ca.certificate],
                               now=now)
    provider = IdentityProvider(
        issuer=TokenIssuer(issuer, signing),
        clients={CLIENT_ID: OidcClient(CLIENT_ID, (REDIRECT_URI,))},
        users={u.username: u for u in users},
        resource_audience=f"https://mcx.{material.name}.example",
        trusted_primaries=TokenValidator(trusted),
        migration_profiles=migration_profile_index(migration))
    idms = IdmsNode(f"{material.name}-idms", provider, *idms_at,
                    _tls(material, "idms", directory), title=f"{material.name} IdMS")
    cms = CmsNode(f"{material.name}-cms", {p.xui_uri: p for p in user_profiles},
                  TokenValidator([own_key]), issuer, *cms_at, _tls(material, "cms", directory),
                  audience=provider.resource_audience)
    return System(material.name, material, provider, idms, cms,
                  directory / material.name / "ca.crt", refused)


def alice_profile() -> profiles.UserProfile:
    partner = profiles.PartnerSystem(
        system_id="partner", authorised_to_migrate=True, plmn_id="001-02",
        attach_url="https://127.0.130.1:8443/attach", sip_core_host="127.0.120.2",
        sip_core_port=5060, sip_transport="udp", sip_domain="mcx.partner.example",
        partner_impu=ALICE_PARTNER_ID, partner_impi="alice.visitor@mcx.partner.example",
        idms_token_endpoint=f"{PARTNER_ISSUER}/token", idms_audience=PARTNER_ISSUER)
    return profiles.UserProfile(ALICE_MCPTT_ID, 1, "Alice", ALICE_MCPTT_ID, "Primary Fire",
                                (partner,))


@asynccontextmanager
async def two_systems(directory: Path, *, provision_mode: str = "normal",
                      now: dt.datetime | None = None) -> AsyncIterator[Systems]:
    """Create both PKIs, run the out-of-band step, start both IdMSs and CMSs."""
    now = now or dt.datetime.now(dt.UTC)
    primary_material = create_system(directory, "primary", {
        "idms": [PRIMARY_IDMS[0]], "cms": [PRIMARY_CMS[0]]}, now=now)
    partner_material = create_system(directory, "partner", {
        "idms": [PARTNER_IDMS[0]], "cms": [PARTNER_CMS[0]]}, now=now)
    provision(directory, "primary", "partner", PRIMARY_ISSUER, mode=provision_mode)
    provision(directory, "partner", "primary", PARTNER_ISSUER, mode=provision_mode)
    ids = {"mcptt_id": ALICE_MCPTT_ID, "mcdata_id": "sip:alice.data@mcx.primary.example",
           "mcvideo_id": "sip:alice.video@mcx.primary.example"}
    primary_users = [
        UserAccount("alice", hash_password(ALICE_PASSWORD), ids,
                    migration_targets=(PARTNER_ISSUER,)),
        UserAccount("bob", hash_password("bob-secret"),
                    {"mcptt_id": "sip:bob@mcx.primary.example"}),
    ]
    partner_users = [UserAccount("carol", hash_password("carol-secret"),
                                 {"mcptt_id": "sip:carol@mcx.partner.example"})]
    migration = [MigrationProfile(PRIMARY_ISSUER, ALICE_MCPTT_ID, "alice.visitor", {
        "mcptt_id": ALICE_PARTNER_ID, "mcdata_id": "sip:alice.visitor.data@mcx.partner.example",
        "mcvideo_id": "sip:alice.visitor.video@mcx.partner.example"})]
    partner_profile = profiles.UserProfile(ALICE_PARTNER_ID, 1, "Alice (migrated)",
                                           ALICE_PARTNER_ID, "Primary Fire",
                                           migration_for=ALICE_MCPTT_ID)
    primary = _system(directory, primary_material, PRIMARY_ISSUER, PRIMARY_IDMS, PRIMARY_CMS,
                      primary_users, [alice_profile()], [], now)
    partner = _system(directory, partner_material, PARTNER_ISSUER, PARTNER_IDMS, PARTNER_CMS,
                      partner_users, [partner_profile], migration, now)
    started = []
    try:
        for node in (primary.idms, primary.cms, partner.idms, partner.cms):
            await node.start()
            started.append(node)
        yield Systems(directory, primary, partner)
    finally:
        for node in reversed(started):
            await node.stop()

"""Two MC systems' identity servers, running in-process over HTTPS on 127.0.0.0/8.

Primary: IdMS on 127.0.110.4:9443, CMS on 127.0.110.5:9444.
Partner: IdMS on 127.0.120.4:9443, CMS on 127.0.120.5:9444.
Nothing is shared between the systems except what ``provision`` copies.
Each node is built from its plan, which names the files ``create_system``
and ``provision`` wrote (the :class:`~emulator.keystore.SystemFiles` layout).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from emulator.documents import PartnerSystem
from emulator.documents import UserProfile
from emulator.identity import IdentityProvider
from emulator.identity import MigrationProfile
from emulator.identity import OidcClient
from emulator.keystore import SystemFiles
from emulator.orchestration import create_system
from emulator.orchestration import provision
from emulator.orchestration.provisioning import SystemMaterial
from emulator.topology.model import LoginLimit
from nodes import Account
from nodes import CmsNode
from nodes import CmsOptions
from nodes import Credentials
from nodes import IdmsNode
from nodes import IdmsOptions
from nodes import Listener
from nodes import NodePlan

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
    idms: IdmsNode
    cms: CmsNode
    ca_file: Path

    @property
    def refused_trust(self) -> dict[str, str]:
        """Why the IdMS does not trust a peer provisioned to it, by peer."""
        return self.idms.refused_trust

    @property
    def provider(self) -> IdentityProvider:
        return self.idms.provider

    @property
    def issuer(self) -> str:
        return self.provider.address


@dataclass
class Systems:
    directory: Path
    primary: System
    partner: System


def _resources(system: str) -> str:
    """The aud of ``system``'s access tokens: its resource servers, the CMS among them."""
    return f"https://mcx.{system}.example"


def _credentials(directory: Path, system: str, node: str, **more: str) -> Credentials:
    """``node``'s TLS credential, with its system's CA and IdMS signing certificate."""
    files = SystemFiles(directory, system)
    return Credentials(tls_certificate=str(files.tls_certificate(node)),
                       tls_key=str(files.tls_key(node)), system_ca=str(files.ca_certificate),
                       signing_certificate=str(files.signing_certificate),
                       keylog=str(directory / "tls-keys.log"), **more)


def idms_plan(directory: Path, system: str, at: tuple[str, int], accounts: tuple[Account, ...],
              migration: tuple[MigrationProfile, ...] = (),
              login: LoginLimit | None = None) -> NodePlan:
    """The IdMS of ``system``: signs with its own key, trusts what was provisioned to it."""
    files = SystemFiles(directory, system)
    options = IdmsOptions(f"https://{at[0]}:{at[1]}", f"{system} IdMS", _resources(system),
                          clients=(OidcClient(CLIENT_ID, (REDIRECT_URI,)),), accounts=accounts,
                          migration_profiles=migration, login=login or LoginLimit())
    return NodePlan(f"{system}.idms", "idms", system, at[0], (Listener("https", *at),), options,
                    _credentials(directory, system, "idms", signing_key=str(files.signing_key),
                                trust_dir=str(files.trust)))


def cms_plan(directory: Path, system: str, at: tuple[str, int], issuer: str,
             profiles: tuple[UserProfile, ...]) -> NodePlan:
    """The CMS of ``system``: serves ``profiles`` to bearers of its own IdMS's access tokens."""
    return NodePlan(f"{system}.cms", "cms", system, at[0], (Listener("https", *at),),
                    CmsOptions(issuer, _resources(system), profiles),
                    _credentials(directory, system, "cms"))


def _system(directory: Path, material: SystemMaterial, idms: NodePlan, cms: NodePlan
            ) -> System:
    return System(material.name, material, IdmsNode(idms), CmsNode(cms),
                  SystemFiles(directory, material.name).ca_certificate)


def alice_profile() -> UserProfile:
    partner = PartnerSystem(
        system_id="partner", authorised_to_migrate=True, plmn_id="001-02",
        attach_url="https://127.0.130.1:8443/attach", sip_core_host="127.0.120.2",
        sip_core_port=5060, sip_transport="udp", sip_domain="mcx.partner.example",
        partner_impu=ALICE_PARTNER_ID, partner_impi="alice.visitor@mcx.partner.example",
        idms_token_endpoint=f"{PARTNER_ISSUER}/token", idms_audience=PARTNER_ISSUER)
    return UserProfile(ALICE_MCPTT_ID, 1, "Alice", ALICE_MCPTT_ID, "Primary Fire", (partner,))


@asynccontextmanager
async def two_systems(directory: Path, *, provision_mode: str = "normal",
                      primary_signing_expires: dt.datetime | None = None,
                      login: LoginLimit | None = None) -> AsyncIterator[Systems]:
    """Create both PKIs, run the out-of-band step, start both IdMSs and CMSs.

    ``primary_signing_expires`` makes the primary's IdMS signing certificate a year-old
    one that runs out then (it must still be valid when the servers start).
    """
    now = dt.datetime.now(dt.UTC)
    signing = {} if primary_signing_expires is None else {
        "signing_not_before": primary_signing_expires - dt.timedelta(days=365),
        "signing_days": 365}
    primary_material = create_system(directory, "primary", {
        "idms": [PRIMARY_IDMS[0]], "cms": [PRIMARY_CMS[0]]}, now=now, **signing)
    partner_material = create_system(directory, "partner", {
        "idms": [PARTNER_IDMS[0]], "cms": [PARTNER_CMS[0]]}, now=now)
    provision(directory, "primary", "partner", PRIMARY_ISSUER, mode=provision_mode)
    provision(directory, "partner", "primary", PARTNER_ISSUER, mode=provision_mode)
    ids = {"mcptt_id": ALICE_MCPTT_ID, "mcdata_id": "sip:alice.data@mcx.primary.example",
           "mcvideo_id": "sip:alice.video@mcx.primary.example"}
    primary_accounts = (
        Account("alice", ALICE_PASSWORD, ids, migration_targets=(PARTNER_ISSUER,)),
        Account("bob", "bob-secret", {"mcptt_id": "sip:bob@mcx.primary.example"}),
    )
    partner_accounts = (
        Account("carol", "carol-secret", {"mcptt_id": "sip:carol@mcx.partner.example"}),)
    migration = (MigrationProfile(PRIMARY_ISSUER, "alice", ALICE_MCPTT_ID, "alice.visitor", {
        "mcptt_id": ALICE_PARTNER_ID, "mcdata_id": "sip:alice.visitor.data@mcx.partner.example",
        "mcvideo_id": "sip:alice.visitor.video@mcx.partner.example"}),)
    partner_profile = UserProfile(ALICE_PARTNER_ID, 1, "Alice (migrated)", ALICE_PARTNER_ID,
                                  "Primary Fire", migration_for=ALICE_MCPTT_ID)
    primary = _system(
        directory, primary_material,
        idms_plan(directory, "primary", PRIMARY_IDMS, primary_accounts),
        cms_plan(directory, "primary", PRIMARY_CMS, PRIMARY_ISSUER, (alice_profile(),)))
    partner = _system(
        directory, partner_material,
        idms_plan(directory, "partner", PARTNER_IDMS, partner_accounts, migration, login),
        cms_plan(directory, "partner", PARTNER_CMS, PARTNER_ISSUER, (partner_profile,)))
    started: list[IdmsNode | CmsNode] = []
    try:
        for node in (primary.idms, primary.cms, partner.idms, partner.cms):
            await node.start()
            started.append(node)
        yield Systems(directory, primary, partner)
    finally:
        for node in reversed(started):
            await node.stop()

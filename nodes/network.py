"""Build and run a whole topology: both MC systems, the local PLMN and the UEs.

``emulator/`` holds the role-agnostic parts (topology, capture, trace); the
network lives with the roles because building each role needs the role
(the Mininet split, with the runtime classes here).  Use::

    async with Network(load_topology("topologies/default.yaml")) as net:
        await net.wait_ready()
        ue = net.ues["ue-alice"]

Start-up order: capture, PKI and the out-of-band step, then per system IdMS,
CMS, MC server, SIP core, then the gateway and the UEs.  Stop is the
reverse, and the capture is finalised last.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator import profile as profiles
from emulator.capture.kernel import KernelCapture, kernel_capture_available
from emulator.capture.pcapng import read_pcap
from emulator.capture.publish import publish
from emulator.capture.tap import TapWriter
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
from emulator.sip.events import Address
from emulator.topology.model import McSystem, Node, Topology
from emulator.trace import Trace
from emulator.transport.tls import server_context

from .cms import CmsNode
from .gateway import Gateway
from .idms import IdmsNode
from .mc_server import McServer, ServiceAuthoriser
from .sip_core import SipCore
from .sipnode import tls_port
from .ue import UserEquipment

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkOptions:
    """Knobs the scenarios turn.  Defaults give the seed's scenario."""

    provision_mode: str = "normal"
    """Out-of-band step: normal, withhold or corrupt (33.180 §5.1.4.2)."""
    partner_mode: str = "normal"
    """Partner MC server: normal, direct (non-normative) or interconnection (23.280 §10.6.3)."""
    drop_migration_profiles: bool = False
    """The partner MC system lacks the migration profile of the migrating user."""
    deny_migration: bool = False
    """The primary profile does not authorise migration."""
    expired_security_tokens: bool = False
    """The primary IdMS issues security tokens that expired two minutes ago."""
    transport: str | None = None
    """Force every SIP link to udp, tcp or tls."""
    capture: bool = True
    """Kernel capture with tcpdump when running as root."""


@dataclass
class SystemNodes:
    spec: McSystem
    material: SystemMaterial
    provider: IdentityProvider
    idms: IdmsNode
    cms: CmsNode
    sip_core: SipCore
    mc_server: McServer
    refused_trust: dict[str, str]

    @property
    def issuer(self) -> str:
        return self.provider.address


@dataclass
class Network:
    """A running topology.  ``run_dir`` receives captures, TLS key log and PKI."""

    topology: Topology
    options: NetworkOptions = field(default_factory=NetworkOptions)
    run_dir: Path | None = None
    systems: dict[str, SystemNodes] = field(default_factory=dict)
    ues: dict[str, UserEquipment] = field(default_factory=dict)
    gateway: Gateway | None = None
    trace: Trace = field(default_factory=Trace)
    capture: KernelCapture | None = None
    tap_writer: TapWriter | None = None
    capture_files: list[Path] = field(default_factory=list)
    capture_method: str = "none"
    _started: list[Any] = field(default_factory=list)
    _plmn_material: SystemMaterial | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.options.transport is not None:
            self.topology = self.topology.with_transport(self.options.transport)
        if self.run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.run_dir = Path("pcaps") / f"{stamp}-{self.topology.name}"
        self.trace.names.update(self.topology.host_names())

    # -- lifecycle -------------------------------------------------------------
    async def __aenter__(self) -> Network:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    @property
    def capture_file(self) -> Path | None:
        """The merged capture of the run (published when the network stops)."""
        return self.capture_files[0] if self.capture_files else None

    @property
    def keylog_file(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "tls-keys.log"

    async def start(self) -> None:
        assert self.run_dir is not None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self._ready.set()

    async def _start(self) -> None:
        topology, options = self.topology, self.options
        assert self.run_dir is not None
        if options.capture and kernel_capture_available():
            self.capture = KernelCapture(self.run_dir / "capture.pcap", list(self.trace.names))
            await self.capture.start()
            self.capture_method = "kernel capture (tcpdump on lo)"
        elif options.capture:
            # Not root: SIP is still captured, from the transports' taps (no HTTPS).
            self.tap_writer = TapWriter(tapped_hosts=list(self.trace.names))
            self.trace.sinks.append(self.tap_writer)
            self.capture_method = "application-level tap (SIP only; run as root for HTTPS)"
        now = dt.datetime.now(dt.UTC)
        materials = self._pki(now)
        for system in topology.systems:
            self.systems[system.name] = self._build_system(system, materials[system.name], now)
        for nodes in self.systems.values():
            for node in (nodes.idms, nodes.cms, nodes.mc_server, nodes.sip_core):
                await node.start()
                self._started.append(node)
        self.gateway = self._build_gateway()
        served = self.systems[self.topology.local_plmn.serves].sip_core
        served.trusted_hosts.add(self.gateway.host)  # the P-CSCF is in the trust domain
        await self.gateway.start()
        self._started.append(self.gateway)
        ca_pems = [m.ca.certificate_pem() for m in materials.values()]
        assert self._plmn_material is not None
        ca_pems.append(self._plmn_material.ca.certificate_pem())
        for spec in topology.ues:
            user = topology.system(spec.home).user(spec.user)
            ue = UserEquipment(
                spec.name, user.name, user.password, spec.host,
                client_id=topology.oidc_client_id, redirect_uri=topology.oidc_redirect_uri,
                ca_pems=ca_pems, trace=self.trace,
                transport=topology.link_transport(spec.name, f"{spec.home}.sip-core") or "udp",
                keylog=str(self.keylog_file))
            await ue.start()
            self._started.append(ue)
            self.ues[spec.name] = ue

    async def stop(self) -> None:
        while self._started:
            node = self._started.pop()
            try:
                await node.stop()
            except Exception:
                logger.exception("stopping %r failed", node)
        if self.capture is not None:
            await self.capture.stop()
        self._publish()

    def _publish(self) -> None:
        """Write capture.pcapng and nodes/*.pcapng (names, step comments, TLS secrets)."""
        assert self.run_dir is not None
        if self.capture_files:
            return
        packets = None
        raw = self.capture.path if self.capture is not None else None
        if raw is not None and raw.exists():
            packets = read_pcap(raw)
        elif self.tap_writer is not None:
            packets = self.tap_writer.close()
        if packets is None:
            return
        names = {host: name for host, name in self.trace.names.items()}
        self.capture_files = publish(self.run_dir, packets, names=names,
                                     label=self.trace.step_at, keylog=self.keylog_file,
                                     method=self.capture_method)
        if raw is not None and raw.exists():
            raw.unlink()  # capture.pcapng holds every packet of it, and more
    # -- building --------------------------------------------------------------
    def _pki(self, now: dt.datetime) -> dict[str, SystemMaterial]:
        assert self.run_dir is not None
        pki = self.run_dir / "pki"
        materials = {}
        for system in self.topology.systems:
            hosts = {node.name: [node.host] for node in system.nodes}
            materials[system.name] = create_system(pki, system.name, hosts, now=now)
        plmn = self.topology.local_plmn
        self._plmn_material = create_system(pki, plmn.name, {"gateway": [plmn.gateway.host]},
                                            now=now)
        # The out-of-band step (33.180 §5.1.4.2): each IdMS gets the other's certificate.
        for target in self.topology.systems:
            for source in self.topology.systems:
                if source.name != target.name:
                    provision(pki, source.name, target.name, self._issuer(source),
                              mode=self.options.provision_mode)
        return materials

    @staticmethod
    def _issuer(system: McSystem) -> str:
        url = system.node("idms").https_url
        assert url is not None
        return url

    def _tls(self, material: SystemMaterial, node: str) -> ssl.SSLContext:
        assert self.run_dir is not None
        credential = material.tls[node]
        return server_context(credential.certificate_pem(), credential.key_pem(),
                              self.run_dir / "pki" / material.name / "run", node,
                              keylog=self.keylog_file)

    def _sip_address(self, node: Node, peer: str) -> Address:
        assert node.sip is not None
        transport = self.topology.link_transport(node.qualified_name, peer) or "udp"
        port = tls_port(node.sip) if transport == "tls" else node.sip.port
        return Address(transport, node.host, port)

    def _build_system(self, system: McSystem, material: SystemMaterial,
                      now: dt.datetime) -> SystemNodes:
        assert self.run_dir is not None
        options, topology = self.options, self.topology
        issuer = self._issuer(system)
        trusted, refused = load_trusted_issuers(self.run_dir / "pki", system.name, now=now)
        for peer, reason in refused.items():
            logger.warning("%s does not trust %s: %s", system.name, peer, reason)
        own_key = verification_key(issuer, material.signing.certificate,
                                   [material.ca.certificate], now=now)
        partner_urls = {s.name: self._issuer(s) for s in topology.systems}
        users = [UserAccount(
            u.name, hash_password(u.password), u.mc_ids,
            migration_targets=() if options.deny_migration else
            tuple(partner_urls[t] for t in u.migrate_to)) for u in system.users]
        migration = [MigrationProfile(
            partner_urls[p.primary], topology.system(p.primary).user(p.user).mcptt_id,
            f"{p.user}.visitor", {k: v for k, v in (
                ("mcptt_id", p.partner_identity), ("mcdata_id", p.partner_mcdata_id),
                ("mcvideo_id", p.partner_mcvideo_id)) if v}) for p in system.migration_profiles]
        provider = IdentityProvider(
            issuer=TokenIssuer(issuer, SigningKey.from_credential(material.signing)),
            clients={topology.oidc_client_id: OidcClient(topology.oidc_client_id,
                                                         (topology.oidc_redirect_uri,))},
            users={u.username: u for u in users},
            resource_audience=f"sip:{system.domain}",
            trusted_primaries=TokenValidator(trusted),
            migration_profiles=migration_profile_index(migration))
        idms_node, cms_node = system.node("idms"), system.node("cms")
        core_node, mc_node = system.node("sip-core"), system.node("mc-server")
        assert idms_node.https_port is not None and cms_node.https_port is not None
        if options.expired_security_tokens:
            provider.security_token_lifetime = -120  # beyond the 30 s leeway (33.180 B.2.1)
        idms = IdmsNode(idms_node.qualified_name, provider, idms_node.host, idms_node.https_port,
                        self._tls(material, idms_node.name), title=f"{system.name} IdMS")
        user_profiles = [self._profile(system, u) for u in system.users]
        user_profiles += [profiles.UserProfile(
            p.partner_identity, 1, f"{p.user} (migrated)", p.partner_identity,
            topology.system(p.primary).organization, migration_for=m.primary_mcptt_id)
            for p, m in zip(system.migration_profiles, migration, strict=True)]
        cms = CmsNode(cms_node.qualified_name, {p.xui_uri: p for p in user_profiles},
                      TokenValidator([own_key]), issuer, cms_node.host, cms_node.https_port,
                      self._tls(material, cms_node.name), audience=provider.resource_audience)
        mc_profiles = frozenset() if options.drop_migration_profiles else frozenset(
            p.partner_identity for p in system.migration_profiles)
        direct = options.partner_mode == "direct"
        authoriser = ServiceAuthoriser(
            own_issuer=issuer, own_tokens=TokenValidator([own_key]),
            audience=provider.resource_audience,
            migration_profiles=mc_profiles,
            primary_tokens=TokenValidator(trusted) if direct else None,
            own_idms_address=issuer,
            primary_identities={(m.primary_issuer, m.primary_mcptt_id): m.mc_ids
                                for m in migration})
        interconnection = None
        if options.partner_mode == "interconnection" and system.migration_profiles:
            primary = topology.system(system.migration_profiles[0].primary).node("mc-server")
            assert primary.sip is not None
            interconnection = Address("udp", primary.host, primary.sip.port)
        assert mc_node.sip is not None and core_node.sip is not None
        mc_server = McServer(
            mc_node.qualified_name, mc_node.host, mc_node.sip, authoriser,
            mode="interconnection" if interconnection else "normal",
            interconnection=interconnection,
            allowed_partners={u.mcptt_id: frozenset(u.migrate_to) for u in system.users},
            trace=self.trace, server_ssl=self._tls(material, mc_node.name),
            client_ssl=self._client_ssl())
        mc_server.sip_cores = {core_node.host}
        sip_core = SipCore(
            core_node.qualified_name, core_node.host, core_node.sip, system.domain,
            self._sip_address(mc_node, core_node.qualified_name), trace=self.trace,
            server_ssl=self._tls(material, core_node.name), client_ssl=self._client_ssl())
        return SystemNodes(system, material, provider, idms, cms, sip_core, mc_server, refused)

    def _client_ssl(self) -> ssl.SSLContext:
        assert self.run_dir is not None
        names = [s.name for s in self.topology.systems] + [self.topology.local_plmn.name]
        pems = [(self.run_dir / "pki" / name / "ca.crt").read_bytes() for name in names]
        context = ssl.create_default_context(cadata="".join(p.decode() for p in pems))
        context.keylog_filename = str(self.keylog_file)
        return context

    def _profile(self, system: McSystem, user: Any) -> profiles.UserProfile:
        partners = []
        for target in user.migrate_to:
            partner = self.topology.system(target)
            plmn = self.topology.local_plmn
            migration = next((p for p in partner.migration_profiles
                              if p.user == user.name and p.primary == system.name), None)
            if migration is None or plmn.serves != target:
                continue
            core = plmn.gateway
            assert core.sip is not None and plmn.gateway.https_url is not None
            transport = self.topology.link_transport(
                f"{plmn.name}.gateway", f"{target}.sip-core") or "udp"
            ue = next((u for u in self.topology.ues if u.user == user.name), None)
            ue_transport = (self.topology.link_transport(ue.name, f"{plmn.name}.gateway")
                            if ue else None) or transport
            port = tls_port(core.sip) if ue_transport == "tls" else core.sip.port
            impi = migration.partner_identity.removeprefix("sip:")
            partners.append(profiles.PartnerSystem(
                system_id=target, authorised_to_migrate=not self.options.deny_migration,
                plmn_id=plmn.plmn_id, attach_url=f"{plmn.gateway.https_url}/attach",
                sip_core_host=core.host, sip_core_port=port, sip_transport=ue_transport,
                sip_domain=partner.domain, partner_impu=migration.partner_identity,
                partner_impi=impi, idms_token_endpoint=f"{self._issuer(partner)}/token",
                idms_audience=self._issuer(partner)))
        return profiles.UserProfile(user.mcptt_id, 1, user.name.capitalize(), user.mcptt_id,
                                    system.organization, tuple(partners))

    def _build_gateway(self) -> Gateway:
        assert self.run_dir is not None
        plmn = self.topology.local_plmn
        served = self.topology.system(plmn.serves).node("sip-core")
        core = self._sip_address(served, f"{plmn.name}.gateway")
        assert self._plmn_material is not None
        credential = self._plmn_material.tls["gateway"]
        context = server_context(credential.certificate_pem(), credential.key_pem(),
                                 self.run_dir / "pki" / plmn.name / "run", "gateway",
                                 keylog=self.keylog_file)
        return Gateway(plmn, core, trace=self.trace, server_ssl=context,
                       client_ssl=self._client_ssl(), https_ssl=context)

    # -- state for outside clients ---------------------------------------------
    def state(self) -> dict[str, Any]:
        """What `run_topology.py up` writes for outside clients (README: state file)."""
        assert self.run_dir is not None
        nodes: dict[str, Any] = {}
        for system in self.topology.systems:
            for node in system.nodes:
                sip = []
                if node.sip is not None:
                    for transport in node.sip.transports:
                        port = tls_port(node.sip) if transport == "tls" else node.sip.port
                        sip.append({"transport": transport, "host": node.host, "port": port})
                nodes[node.qualified_name] = {"role": node.role, "system": system.name,
                                              "sip": sip, "http": node.https_url}
        plmn = self.topology.local_plmn
        gw = plmn.gateway
        assert gw.sip is not None
        nodes[f"{plmn.name}.gateway"] = {
            "role": "gateway", "system": plmn.name,
            "sip": [{"transport": t, "host": gw.host,
                     "port": tls_port(gw.sip) if t == "tls" else gw.sip.port}
                    for t in gw.sip.transports],
            "http": gw.https_url}
        users = {}
        for system in self.topology.systems:
            for user in system.users:
                identity = next((p.partner_identity for s in self.topology.systems
                                 for p in s.migration_profiles
                                 if p.user == user.name and p.primary == system.name), None)
                users[user.name] = {"username": user.name, "password": user.password,
                                    "system": system.name, "mcptt_id": user.mcptt_id,
                                    "partner_identity": identity}
        return {
            "nodes": nodes, "users": users,
            "oidc_client": {"client_id": self.topology.oidc_client_id,
                            "redirect_uri": self.topology.oidc_redirect_uri},
            "ca_certs": {name: str((self.run_dir / "pki" / name / "ca.crt").resolve())
                         for name in [*(s.name for s in self.topology.systems),
                                      self.topology.local_plmn.name]},
            "pcap_dir": str(self.run_dir.resolve()),
        }


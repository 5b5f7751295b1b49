"""From a topology and a scenario's faults to one frozen plan per node: a pure function.

:func:`plan_network` reads nothing and starts nothing.  It names every
address, listener, peer and credential path (in the layout of
:mod:`emulator.keystore`, under the run directory) and applies the
scenario's :class:`Faults` as data: a partner MC server planned with no
migrant identities, an IdMS whose security tokens are born expired.  The
PKI step (:mod:`.provisioning`) then writes the files the plans name, and
the runner starts the plans in order.

Plans come out in start order: per MC system its IdMS, CMS, MC server and
SIP core, then the local PLMN gateway, then the UEs.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path

from emulator.documents import profile as profiles
from emulator.documents.groups import GroupDocument
from emulator.identity.oidc import MC_SCOPES
from emulator.identity.oidc import MigrationProfile
from emulator.identity.oidc import OidcClient
from emulator.keystore import SystemFiles
from emulator.topology.model import PLACEHOLDER
from emulator.topology.model import McSystem
from emulator.topology.model import Node
from emulator.topology.model import Topology
from emulator.topology.model import UeSpec
from emulator.topology.model import UserSpec
from nodes.plan import Account
from nodes.plan import CmsOptions
from nodes.plan import Credentials
from nodes.plan import ExecOptions
from nodes.plan import GatewayOptions
from nodes.plan import GmsOptions
from nodes.plan import IdmsOptions
from nodes.plan import Impaired
from nodes.plan import Listener
from nodes.plan import McServerOptions
from nodes.plan import NodePlan
from nodes.plan import Peer
from nodes.plan import SipCoreOptions
from nodes.plan import UeOptions

PARTNER_MODES = ("normal", "direct", "interconnection")


@dataclass(frozen=True)
class Faults:
    """How a scenario departs from the seed; the defaults depart in nothing."""

    provision_mode: str = "normal"
    """The out-of-band step: normal, withhold or corrupt (33.180 §5.1.4.2)."""
    partner_mode: str = "normal"
    """normal, direct (non-normative: the MC servers check security tokens themselves) or
    interconnection (23.280 §10.6.3 baseline: the partner MC server asks the primary's)."""
    drop_migration_profiles: bool = False
    """The partner MC system (its IdMS, CMS and MC server) has no migration profile for
    the migrating user."""
    drop_mc_server_profiles: bool = False
    """Only the partner MC server lacks them (its own check, defence in depth)."""
    deny_migration: bool = False
    """The primary profile does not authorise migration."""
    partner_clock_offset: float = 0.0
    """Seconds the partner system's clocks (IdMS, MC server) are ahead: simulated time, as
    if the security token had spent that long on its way."""
    amnesia: bool = False
    """No node keeps anything across a restart (no ``state/`` journal)."""
    primary_withholds: tuple[str, ...] = ()
    """MC scopes the primary's profile does not grant its migrating users."""
    partner_token_lifetime: int | None = None
    """Seconds the partner's access tokens for migrants live (None: the IdMS default)."""
    partner_registration_expires: int | None = None
    """The Expires the migrated UE registers with (and the partner registrar's minimum)."""
    stay: float = 0.0
    """Seconds the long-stay step keeps the user in the partner system."""


def plan_network(topology: Topology, faults: Faults, run_dir: Path, *,
                 seed: int = 0) -> tuple[NodePlan, ...]:
    """Every node's plan, in start order.  ``run_dir`` only prefixes the file paths;
    ``seed`` varies every impaired link's random choices (the same seed, the same run)."""
    if faults.partner_mode not in PARTNER_MODES:
        raise ValueError(f"partner_mode must be one of {', '.join(PARTNER_MODES)}")
    planner = _Planner(topology, faults, run_dir, seed)
    plans: list[NodePlan] = []
    for system in topology.systems:
        plans += planner.system(system)
    plans.append(planner.gateway())
    plans += [planner.ue(spec) for spec in topology.ues]
    return tuple(replace(plan, impairments=planner.impairments(plan.name),
                         connection_limits=topology.limits.connections,
                         overload=topology.limits.overload,
                         sip_timers=topology.sip_timers,
                         state_file=str(run_dir / "state" / f"{plan.name}.jsonl")
                         if plan.role in DURABLE_ROLES and not faults.amnesia else None)
                 for plan in plans)


def ue_plans(topology: Topology, specs: Iterable[UeSpec], run_dir: Path) -> list[NodePlan]:
    """Plans for UEs that are not the topology's own nodes: a load run's generated ones."""
    planner = _Planner(topology, Faults(), run_dir, 0)
    return [replace(planner.ue(spec), sip_timers=topology.sip_timers) for spec in specs]


DURABLE_ROLES = frozenset({"sip-core", "mc-server", "idms", "gateway"})
"""The roles that keep state across a restart, as their real counterparts do: registrar
bindings, MC service authorisations, refresh tokens and replay cache, attachments."""


def pki_names(topology: Topology) -> list[str]:
    """Whose credentials the PKI step makes: every MC system, and the local PLMN."""
    return [*(s.name for s in topology.systems), topology.local_plmn.name]


class _Planner:
    """The derivations :func:`plan_network` shares between nodes."""

    def __init__(self, topology: Topology, faults: Faults, run_dir: Path, seed: int) -> None:
        self.topology = topology
        self.faults = faults
        self.seed = seed
        self.run_dir = run_dir
        self.pki = run_dir / "pki"
        self.keylog = str(run_dir / "tls-keys.log")
        self.trusted_cas = tuple(str(SystemFiles(self.pki, name).ca_certificate)
                                 for name in pki_names(topology))
        self._profiles: dict[str, tuple[MigrationProfile, ...]] = {}
        self._groups: dict[str, tuple[GroupDocument, ...]] = {}
        """Per system, derived once (a load run's systems hold many users)."""

    # -- shared pieces -------------------------------------------------------------
    def impairments(self, sender: str) -> tuple[Impaired, ...]:
        """The impaired links ``sender`` sends on, each seeded for this run and direction."""
        out = []
        for link in self.topology.links:
            impairment = link.impairment_from(sender) if sender in (link.a, link.b) else None
            if impairment is None:
                continue
            peer = link.b if sender == link.a else link.a
            seed = zlib.crc32(f"{self.seed}|{impairment.seed}|{sender}>{peer}".encode())
            out.append(Impaired(peer, self.hosts_of(peer), replace(impairment, seed=seed)))
        return tuple(out)

    def hosts_of(self, name: str) -> tuple[str, ...]:
        if name == self.topology.local_plmn.gateway.qualified_name:
            return (self.topology.local_plmn.gateway.host,)
        if any(ue.name == name for ue in self.topology.ues):
            return (self.topology.ue(name).host,)
        system, _, node = name.partition(".")
        return tuple(n.host for n in self.topology.system(system).nodes if n.name == node)

    def transport(self, a: str, b: str) -> str:
        return self.topology.link_transport(a, b) or "udp"

    def sip_peer(self, node: Node, role: str, towards: str) -> Peer:
        """``node`` as seen from ``towards``: on their link's transport and its port."""
        assert node.sip is not None
        transport = self.transport(towards, node.qualified_name)
        return Peer(node.qualified_name, role, transport, node.host,
                    node.sip.port_for(transport))

    @staticmethod
    def listeners(node: Node) -> tuple[Listener, ...]:
        out = []
        if node.sip is not None:
            out += [Listener(t, node.host, node.sip.port_for(t)) for t in node.sip.transports]
        if node.https_port is not None:
            out.append(Listener("https", node.host, node.https_port))
        return tuple(out)

    def credentials(self, system: str, node: str, *, signing: bool = False,
                    signing_key: bool = False, trust: bool = False,
                    tls_client: bool = False) -> Credentials:
        files = SystemFiles(self.pki, system)
        return Credentials(
            tls_certificate=str(files.tls_certificate(node)), tls_key=str(files.tls_key(node)),
            trusted_cas=self.trusted_cas if tls_client else (),
            system_ca=str(files.ca_certificate) if signing else None,
            signing_certificate=str(files.signing_certificate) if signing else None,
            signing_key=str(files.signing_key) if signing_key else None,
            trust_dir=str(files.trust) if trust else None, keylog=self.keylog)

    def migration_profiles(self, system: McSystem) -> tuple[MigrationProfile, ...]:
        """The partner's provisioned profiles: the partner-assigned IDs (23.280 §10.16.5.1)."""
        if self.faults.drop_migration_profiles:
            return ()
        if system.name not in self._profiles:
            self._profiles[system.name] = self._migration_profiles(system)
        return self._profiles[system.name]

    def _migration_profiles(self, system: McSystem) -> tuple[MigrationProfile, ...]:
        out = []
        for p in system.migration_profiles:
            primary = self.topology.system(p.primary)
            ids = {k: v for k, v in (("mcptt_id", p.partner_identity),
                                     ("mcdata_id", p.partner_mcdata_id),
                                     ("mcvideo_id", p.partner_mcvideo_id)) if v}
            # The primary IdMS's sub is the username (nodes.idms).
            out.append(MigrationProfile(primary.issuer, p.user, primary.user(p.user).mcptt_id,
                                        f"{p.user}.visitor", ids,
                                        access_token_lifetime=self.faults.partner_token_lifetime))
        return tuple(out)

    # -- an MC system ----------------------------------------------------------------
    def system(self, system: McSystem) -> list[NodePlan]:
        gms = [self.gms(system)] if system.find("gms") is not None else []
        return [self.idms(system), self.cms(system), *gms, self.mc_server(system),
                self.sip_core(system), *(self.exec_node(system, node) for node in system.nodes
                                         if node.exec is not None)]

    def group_documents(self, system: McSystem) -> tuple[GroupDocument, ...]:
        if system.name not in self._groups:
            self._groups[system.name] = tuple(
                GroupDocument(g.group_id, g.display_name, system.member_ids(g))
                for g in system.groups)
        return self._groups[system.name]

    def groups_of(self, system: McSystem, mcptt_id: str) -> tuple[str, ...]:
        return tuple(g.group_id for g in self.group_documents(system)
                     if mcptt_id in g.members)

    def gms(self, system: McSystem) -> NodePlan:
        node = system.node("gms")
        options = GmsOptions(system.issuer, f"sip:{system.domain}",
                             self.group_documents(system))
        return NodePlan(node.qualified_name, "gms", system.name, node.host,
                        self.listeners(node), options,
                        self.credentials(system.name, node.name, signing=True),
                        after=(system.node("idms").qualified_name,))

    def exec_node(self, system: McSystem, node: Node) -> NodePlan:
        """An outside program: its command with the run's addresses filled in.  An edge
        proxy starts after its SIP core, which it forwards to."""
        assert node.exec is not None
        command = tuple(PLACEHOLDER.sub(lambda m: self.fill(node, m.group(1)), arg)
                        for arg in node.exec.command)
        after = (system.node("sip-core").qualified_name,) if node.role == "edge-proxy" else ()
        return NodePlan(node.qualified_name, node.role, system.name, node.host,
                        self.listeners(node),
                        ExecOptions(command, node.exec.probe, node.exec.probe_port),
                        after=after)

    def fill(self, node: Node, name: str) -> str:
        """One placeholder of an exec node's command (the loader checked it exists)."""
        if name == "host":
            return node.host
        if name == "port":
            return str(node.sip.port if node.sip else node.exec.probe_port if node.exec else 0)
        if name == "run_dir":
            return os.path.abspath(self.run_dir)
        if name == "dir":
            return os.path.abspath(os.path.dirname(self.topology.source))
        target, _, field = name.rpartition(".")
        other = self.node_named(target)
        if other.sip is None and field != "host":
            raise ValueError(f"{node.qualified_name}: {{{name}}}: {target} has no SIP")
        peer = self.sip_peer(other, other.role, node.qualified_name) if other.sip else None
        if field == "host" or peer is None:
            return other.host
        if field == "port":
            return str(peer.port)
        return f"sip:{peer.host}:{peer.port}" + \
            ("" if peer.transport == "udp" else f";transport={peer.transport}")

    def node_named(self, name: str) -> Node:
        plmn = self.topology.local_plmn
        if name == plmn.gateway.qualified_name:
            return plmn.gateway
        system, _, node = name.partition(".")
        return next(n for n in self.topology.system(system).nodes if n.name == node)

    def idms(self, system: McSystem) -> NodePlan:
        node = system.node("idms")
        accounts = tuple(Account(
            u.name, u.password, u.mc_ids,
            migration_targets=() if self.faults.deny_migration else
            tuple(self.topology.system(t).issuer for t in u.migrate_to),
            security_token_lifetime=u.security_token_lifetime,
            scopes=tuple(s for s in MC_SCOPES if not (u.migrate_to and
                                                     s in self.faults.primary_withholds)))
            for u in system.users)
        serves_migrants = bool(system.migration_profiles)
        options = IdmsOptions(
            issuer=system.issuer, title=f"{system.name} IdMS",
            resource_audience=f"sip:{system.domain}",
            clients=(OidcClient(self.topology.oidc_client_id,
                                (self.topology.oidc_redirect_uri,)),),
            accounts=accounts, migration_profiles=self.migration_profiles(system),
            clock_offset=self.faults.partner_clock_offset if serves_migrants else 0.0,
            login=self.topology.limits.login)
        return NodePlan(node.qualified_name, "idms", system.name, node.host,
                        self.listeners(node), options,
                        self.credentials(system.name, node.name, signing=True,
                                         signing_key=True, trust=True))

    def cms(self, system: McSystem) -> NodePlan:
        node = system.node("cms")
        user_profiles = [self.user_profile(system, u) for u in system.users]
        user_profiles += [profiles.UserProfile(
            m.mc_ids["mcptt_id"], 1, f"{m.partner_username} (migrated)", m.mc_ids["mcptt_id"],
            self.organization_of(m.primary_issuer), migration_for=m.primary_mcptt_id,
            groups=self.groups_of(system, m.mc_ids["mcptt_id"]))
            for m in self.migration_profiles(system)]
        options = CmsOptions(system.issuer, f"sip:{system.domain}", tuple(user_profiles))
        return NodePlan(node.qualified_name, "cms", system.name, node.host,
                        self.listeners(node), options,
                        self.credentials(system.name, node.name, signing=True),
                        after=(system.node("idms").qualified_name,))

    def organization_of(self, issuer: str) -> str:
        return next(s.organization for s in self.topology.systems if s.issuer == issuer)

    def user_profile(self, system: McSystem, user: UserSpec) -> profiles.UserProfile:
        """The user's profile (24.484), naming each partner it may migrate to."""
        partners = tuple(p for p in (self.partner_access(system, user, target)
                                     for target in user.migrate_to) if p is not None)
        return profiles.UserProfile(user.mcptt_id, 1, user.name.capitalize(), user.mcptt_id,
                                    system.organization, partners,
                                    groups=self.groups_of(system, user.mcptt_id))

    def partner_access(self, system: McSystem, user: UserSpec, target: str
                       ) -> profiles.PartnerSystem | None:
        """How to reach ``target`` from its local PLMN (project-defined profile elements)."""
        partner = self.topology.system(target)
        plmn = self.topology.local_plmn
        migration = partner.migration_profile(user.name, system.name)
        if migration is None or plmn.serves != target:
            return None
        gateway = plmn.gateway
        assert gateway.sip is not None and gateway.https_url is not None
        transport = self.transport(gateway.qualified_name, f"{target}.sip-core")
        ue = self.topology.ue_of(user.name)
        ue_transport = (self.topology.link_transport(ue.name, gateway.qualified_name)
                        if ue else None) or transport
        return profiles.PartnerSystem(
            system_id=target, authorised_to_migrate=not self.faults.deny_migration,
            plmn_id=plmn.plmn_id, attach_url=f"{gateway.https_url}/attach",
            sip_core_host=gateway.host, sip_core_port=gateway.sip.port_for(ue_transport),
            sip_transport=ue_transport, sip_domain=partner.domain,
            partner_impu=migration.partner_identity,
            partner_impi=migration.partner_identity.removeprefix("sip:"),
            idms_token_endpoint=f"{partner.issuer}/token", idms_audience=partner.issuer,
            cms_url=partner.node("cms").https_url or "",
            gms_url=(gms.https_url or "") if (gms := partner.find("gms")) else "")

    def mc_server(self, system: McSystem) -> NodePlan:
        node, core = system.node("mc-server"), system.node("sip-core")
        mode = self.faults.partner_mode
        peers = [self.sip_peer(core, "sip-core", node.qualified_name)]  # third-party REGISTER
        if mode == "interconnection":
            if system.migration_profiles:
                # The partner's link to the primary MC server: the baseline's interconnection.
                primary = self.topology.system(system.migration_profiles[0].primary)
                peers.append(self.sip_peer(primary.node("mc-server"), "mc-server",
                                           node.qualified_name))
            else:
                mode = "normal"
        options = McServerOptions(
            issuer=system.issuer, audience=f"sip:{system.domain}", mode=mode,
            migration_profiles=self.migration_profiles(system),
            migrant_identities=() if self.faults.drop_mc_server_profiles else tuple(
                m.mc_ids["mcptt_id"] for m in self.migration_profiles(system)),
            allowed_partners={u.mcptt_id: u.migrate_to for u in system.users},
            clock_offset=self.faults.partner_clock_offset if system.migration_profiles
            else 0.0, domain=system.domain, groups=self.group_documents(system))
        return NodePlan(node.qualified_name, "mc-server", system.name, node.host,
                        self.listeners(node), options,
                        self.credentials(system.name, node.name, signing=True,
                                         trust=mode == "direct", tls_client=True),
                        tuple(peers))

    def sip_core(self, system: McSystem) -> NodePlan:
        node, mc = system.node("sip-core"), system.node("mc-server")
        peers = [self.sip_peer(mc, "mc-server", node.qualified_name)]
        plmn = self.topology.local_plmn
        if plmn.serves == system.name:  # the P-CSCF is in the trust domain (RFC 3325)
            peers.append(self.sip_peer(plmn.gateway, "gateway", node.qualified_name))
        edge = system.find("edge-proxy")
        if edge is not None:  # and so is the system's own edge proxy, which relays it
            peers.append(self.sip_peer(edge, "edge-proxy", node.qualified_name))
        return NodePlan(node.qualified_name, "sip-core", system.name, node.host,
                        self.listeners(node), SipCoreOptions(
                            system.domain, min(60, self.faults.partner_registration_expires or 60)
                            if system.migration_profiles else 60),
                        self.credentials(system.name, node.name, tls_client=True),
                        tuple(peers), after=(mc.qualified_name,))

    # -- the local PLMN and the UEs ----------------------------------------------------
    def gateway(self) -> NodePlan:
        plmn = self.topology.local_plmn
        node = plmn.gateway
        served = self.topology.system(plmn.serves)
        # The served system's entry point: its edge proxy when it has one, else its core.
        entry = served.find("edge-proxy") or served.node("sip-core")
        options = GatewayOptions(plmn.name, plmn.plmn_id, plmn.ue_pool,
                                 self.topology.limits.flood)
        return NodePlan(node.qualified_name, "gateway", plmn.name, node.host,
                        self.listeners(node), options,
                        self.credentials(plmn.name, node.name, tls_client=True),
                        (self.sip_peer(entry, entry.role, node.qualified_name),),
                        after=(entry.qualified_name,))

    def ue(self, spec: UeSpec) -> NodePlan:
        user = self.topology.system(spec.home).user(spec.user)
        transport = self.transport(spec.name, f"{spec.home}.sip-core")
        options = UeOptions(user.name, user.password, self.topology.oidc_client_id,
                            self.topology.oidc_redirect_uri)
        return NodePlan(spec.name, "ue", spec.home, spec.host,
                        (Listener(transport, spec.host, 0),), options,
                        Credentials(trusted_cas=self.trusted_cas, keylog=self.keylog),
                        after=(self.topology.local_plmn.gateway.qualified_name,))

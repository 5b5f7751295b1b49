"""The topology model: frozen dataclasses, built only by ``loader.py``.

Names follow the specs: an MC system has an IdMS, a CMS, a SIP core and an
MC server (23.280 §7); the local PLMN has a gateway acting as P-CSCF; a UE
belongs to a user of its primary system.  Nothing here starts anything:
``emulator/orchestration`` turns this data into per-node plans and running nodes (Mininet's
``topo.py`` vs ``net.py`` split).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from functools import cached_property

from emulator.sip.timers import DEFAULT_TIMERS
from emulator.sip.timers import TimerConfig

ROLES = ("idms", "cms", "sip-core", "mc-server")
OPTIONAL_ROLES = ("gms",)
"""At most one each: a system without a GMS serves no group documents."""
EXEC_ROLES = ("edge-proxy", "exec")
"""Roles of outside programs placed as nodes (``kind: exec``): ``edge-proxy`` stands between
the local PLMN's gateway and its system's SIP core; ``exec`` is only run."""
SERVICE_AUTHORISATION = ("register", "publish")
"""A UE's ways to hand its tokens to the MC server (24.379 §7.2.1)."""
TRANSPORTS = ("udp", "tcp", "tls")


@dataclass(frozen=True)
class SipInterface:
    """Where a node listens for SIP: one port, the transports enabled on it."""

    port: int
    transports: tuple[str, ...]

    def port_for(self, transport: str) -> int:
        """The port of ``transport``: SIP over TLS listens one above UDP/TCP (5060 -> 5061,
        the RFC 3261 §26.2.2 habit); the one place that rule lives."""
        return self.port + 1 if transport == "tls" else self.port


PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
"""``{name}`` in an exec node's command, filled in for the run by the planner."""
OWN_PLACEHOLDERS = ("host", "port", "run_dir", "dir")
"""The node's own address and SIP (or probe) port, the run directory, the topology's
directory (where a config kept beside the topology file is)."""
NODE_PLACEHOLDERS = ("host", "port", "uri")
"""``{<node>.host}``, ``{<node>.port}``, ``{<node>.uri}``: another node as this one reaches
it (port and ``sip:`` URI on their link's transport)."""


@dataclass(frozen=True)
class ExecSpec:
    """An outside program run as a node (``kind: exec``)."""

    command: tuple[str, ...]
    """argv; ``{host}``, ``{port}``, ``{run_dir}``, ``{dir}`` and ``{<node>.host}``,
    ``{<node>.port}``, ``{<node>.uri}`` are filled in for the run (see
    emulator.orchestration.plan)."""
    probe: str
    """udp (a SIP OPTIONS is answered) or tcp (a connection is accepted): how readiness
    is checked, on ``probe_port``."""
    probe_port: int


@dataclass(frozen=True)
class Node:
    """A node of an MC system (or the local PLMN gateway)."""

    name: str
    role: str
    system: str
    host: str
    sip: SipInterface | None = None
    https_port: int | None = None
    exec: ExecSpec | None = None
    """Set for an outside program (``kind: exec``), which the emulator only runs."""

    @property
    def qualified_name(self) -> str:
        return f"{self.system}.{self.name}"

    @property
    def https_url(self) -> str | None:
        return None if self.https_port is None else f"https://{self.host}:{self.https_port}"


@dataclass(frozen=True)
class UserSpec:
    """An MC service user provisioned in an MC system."""

    name: str
    password: str
    mcptt_id: str
    mcdata_id: str | None = None
    mcvideo_id: str | None = None
    migrate_to: tuple[str, ...] = ()
    """Partner systems the user's profile authorises migration to."""
    security_token_lifetime: int = 600
    """Seconds the security tokens of this user live (a setting of the primary's profile;
    the 600 s default is PROJECT-DEFINED: 33.180 gives none)."""

    @property
    def mc_ids(self) -> dict[str, str]:
        ids = {"mcptt_id": self.mcptt_id}
        if self.mcdata_id:
            ids["mcdata_id"] = self.mcdata_id
        if self.mcvideo_id:
            ids["mcvideo_id"] = self.mcvideo_id
        return ids


@dataclass(frozen=True)
class MigrationProfileSpec:
    """A partner system's provisioned profile for a user of another system."""

    user: str
    primary: str
    partner_identity: str
    """The MCPTT ID (and IMPU) the partner assigns (23.280 §10.16.5.1)."""
    partner_mcdata_id: str | None = None
    partner_mcvideo_id: str | None = None


@dataclass(frozen=True)
class GroupSpec:
    """An MC service group of a system (23.280 §10.1.5), as its GMS serves it."""

    name: str
    group_id: str
    """The MC service group ID, a SIP URI."""
    display_name: str
    members: tuple[str, ...]
    """Users of the system, or migrating users by the name of their migration profile."""


@dataclass(frozen=True)
class McSystem:
    name: str
    domain: str
    organization: str
    nodes: tuple[Node, ...]
    users: tuple[UserSpec, ...] = ()
    migration_profiles: tuple[MigrationProfileSpec, ...] = ()
    groups: tuple[GroupSpec, ...] = ()

    def member_ids(self, group: GroupSpec) -> tuple[str, ...]:
        """The members' MCPTT IDs: a user's own, a migrant's partner-assigned one."""
        migrants = {p.user: p.partner_identity for p in self.migration_profiles
                    if p.user in group.members}
        return tuple(self.user(m).mcptt_id if m in self._users else migrants[m]
                     for m in group.members)

    def node(self, role: str) -> Node:
        for node in self.nodes:
            if node.role == role:
                return node
        raise KeyError(f"system {self.name} has no {role}")

    def find(self, role: str) -> Node | None:
        """The node with ``role``, if the system has one (e.g. an edge proxy)."""
        return next((node for node in self.nodes if node.role == role), None)

    def user(self, name: str) -> UserSpec:
        try:
            return self._users[name]
        except KeyError:
            raise KeyError(f"system {self.name} has no user {name}") from None

    def migration_profile(self, user: str, primary: str) -> MigrationProfileSpec | None:
        """This (partner) system's profile for ``user`` of ``primary``, if any."""
        return self._profiles.get((primary, user))

    # Indexes, built once: a load run's system holds tens of thousands of users.
    @cached_property
    def _users(self) -> dict[str, UserSpec]:
        return {u.name: u for u in self.users}

    @cached_property
    def _profiles(self) -> dict[tuple[str, str], MigrationProfileSpec]:
        return {(p.primary, p.user): p for p in reversed(self.migration_profiles)}

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(node.host for node in self.nodes)

    @property
    def issuer(self) -> str:
        """The ``iss`` of this system's IdMS: its HTTPS URL (33.180 B.2.1)."""
        url = self.node("idms").https_url
        assert url is not None  # the loader requires an https port on an IdMS
        return url


@dataclass(frozen=True)
class LocalPlmn:
    """The PLMN the migrating UE attaches to, and its gateway (P-CSCF role)."""

    name: str
    plmn_id: str
    gateway: Node
    serves: str
    """The MC system whose SIP core the gateway routes to."""
    ue_pool: tuple[str, ...]
    """Addresses the gateway hands out on attach."""


@dataclass(frozen=True)
class UeSpec:
    name: str
    user: str
    home: str
    host: str
    """The UE's address in its home network (before migration)."""
    service_authorisation: str = "register"
    """How the UE hands its tokens to the MC server (24.379 §7.2.1): ``register`` (info
    bodies in the REGISTER, §7.3.1) or ``publish`` (a REGISTER without them, then PUBLISH
    ``Event: poc-settings``, §7.3.3)."""


@dataclass(frozen=True)
class Impairment:
    """What a link does to the packets one end sends (netem's model, applied by the
    sending node's transport: this machine's kernel has no netem qdisc)."""

    delay: float = 0.0
    """Seconds added to every packet."""
    jitter: float = 0.0
    """Up to this many seconds more or less, uniformly."""
    loss: float = 0.0
    """Share of packets dropped (0 to 1); datagrams only: a stream delivers."""
    duplicate: float = 0.0
    """Share of packets sent twice; datagrams only."""
    reorder: float = 0.0
    """Share of packets sent at once, overtaking the delayed ones; datagrams only."""
    rate: float | None = None
    """Bits per second the link carries; a packet waits for the ones before it."""
    seed: int = 0
    """Seeds the link's random choices: the same seed repeats the same run."""

    @property
    def loses(self) -> bool:
        """Whether it drops, duplicates or reorders: what only a datagram link may do."""
        return bool(self.loss or self.duplicate or self.reorder)


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    transport: str
    impair_ab: Impairment | None = None
    """What ``a`` sends to ``b`` goes through."""
    impair_ba: Impairment | None = None
    """What ``b`` sends to ``a`` goes through."""

    def impairment_from(self, sender: str) -> Impairment | None:
        return self.impair_ab if sender == self.a else self.impair_ba


@dataclass(frozen=True)
class ConnectionLimits:
    """Connection hygiene on every SIP TCP/TLS and HTTPS listener (project-defined: the
    counterparts of Kamailio's ``tcp_max_connections``, ``tcp_connection_lifetime`` and
    per-source limits).  A listener at its cap first closes its oldest connection that has
    not yet completed a message; a process never accepts more than three quarters of its
    file descriptors, whatever the caps (``emulator.transport.guard``)."""

    max_connections: int = 1024
    """Per listener: a dozen listeners in one process stay well under its descriptors."""
    max_per_source: int = 64
    """Per listener and source address: a UE needs one, an HTTP client a handful."""
    header_timeout: float = 32.0
    """A connection's next message must be complete within this many seconds (its first
    one from the accept, TLS handshake included): 64·T1, the longest a SIP client
    transaction waits for an answer (RFC 3261 Timer B/F)."""
    idle_timeout: float = 180.0
    """Closed after this long without a byte from the peer.  RFC 5626 CRLF keep-alives
    count: a UE sends them every 96-120 s on a stream (§4.4.1), so its flow stays."""


@dataclass(frozen=True)
class FloodLimit:
    """The gateway's per-source token bucket for SIP (project-defined figures).

    Over it, a request gets 503 with Retry-After (RFC 3261 §21.5.4); past twice the
    rate, datagrams are dropped before parsing, so a flood costs the gateway little."""

    rate: float = 50.0
    """Messages per second a source may keep sending (a UE needs a few)."""
    burst: int = 100
    """How many it may send at once (a registration's REGISTER, SUBSCRIBE, PUBLISH...)."""
    retry_after: int = 5
    """Seconds the 503's Retry-After asks the source to wait."""
    max_sources: int = 65536
    """Buckets kept at once (least recently used first out): bounded, like every table."""


@dataclass(frozen=True)
class OverloadLimit:
    """When a SIP node sheds new requests because it is behind (project-defined figures).

    A node measures how long each UDP datagram waited in its socket's receive queue (the
    kernel's receive timestamp against the moment it is read).  When that wait has stayed
    above ``target`` for ``interval``, the node is overloaded: it answers new requests
    (outside a dialog; ACK and CANCEL are never refused) with 503 and Retry-After (RFC 3261
    §21.5.4) instead of serving them, until a datagram is read within ``target`` again.
    Past capacity, the requests it serves keep being answered before their senders
    retransmit (T1, 500 ms), instead of every request waiting, retransmitting and adding
    to the queue.  The same rule as CoDel's (RFC 8289): a standing queue, not a burst."""

    enabled: bool = True
    target: float = 0.05
    """Seconds a datagram may wait in the queue: a tenth of T1."""
    interval: float = 0.2
    """Seconds the wait must stay above ``target`` before shedding starts: longer than a
    burst or a full garbage collection (~60 ms at 10,000 UEs)."""
    retry_after: int = 2
    """Seconds the 503's Retry-After asks the sender to wait."""


@dataclass(frozen=True)
class LoginLimit:
    """Password guessing at the IdMS (project-defined figures): per user and per source,
    failures first slow the answer down, then lock logins out for a while."""

    max_failures: int = 5
    """Failed logins within ``window`` that lock the user (or source) out."""
    window: float = 300.0
    lockout: float = 60.0
    """Seconds a lockout lasts; the right password works again after it."""
    slowdown: float = 0.5
    """Extra seconds before answering each failure after the first (capped at 4 s)."""
    max_tracked: int = 65536
    """Users and sources tracked at once (least recently failed first out)."""


@dataclass(frozen=True)
class Limits:
    """The topology's ``limits`` section: what protects every node from hostile load."""

    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    flood: FloodLimit = field(default_factory=FloodLimit)
    login: LoginLimit = field(default_factory=LoginLimit)
    overload: OverloadLimit = field(default_factory=OverloadLimit)


@dataclass(frozen=True)
class Topology:
    name: str
    systems: tuple[McSystem, ...]
    local_plmn: LocalPlmn
    ues: tuple[UeSpec, ...]
    links: tuple[Link, ...] = ()
    oidc_client_id: str = "mcx-client"
    oidc_redirect_uri: str = "http://127.0.0.1/callback"
    source: str = field(default="<memory>", compare=False)
    limits: Limits = field(default_factory=Limits)
    sip_timers: TimerConfig = DEFAULT_TIMERS
    """T1, T2 and T4 of every SIP node (RFC 3261 §17.1.1.1, Table 4): the topology's
    ``sip_timers`` section."""

    def system(self, name: str) -> McSystem:
        for system in self.systems:
            if system.name == name:
                return system
        raise KeyError(f"no MC system {name}")

    def ue(self, name: str) -> UeSpec:
        try:
            return self._ues[name]
        except KeyError:
            raise KeyError(f"no UE {name}") from None

    def ue_of(self, user: str) -> UeSpec | None:
        """The first UE of ``user``, if any."""
        return self._ues_by_user.get(user)

    @cached_property
    def _ues(self) -> dict[str, UeSpec]:
        return {u.name: u for u in reversed(self.ues)}

    @cached_property
    def _ues_by_user(self) -> dict[str, UeSpec]:
        return {u.user: u for u in reversed(self.ues)}

    def link_transport(self, a: str, b: str) -> str | None:
        for link in self.links:
            if {link.a, link.b} == {a, b}:
                return link.transport
        return None

    def host_names(self) -> dict[str, str]:
        """Address -> node name, for ladders and capture name resolution."""
        names = {n.host: n.qualified_name for s in self.systems for n in s.nodes}
        names[self.local_plmn.gateway.host] = f"{self.local_plmn.name}.gateway"
        for ue in self.ues:
            names[ue.host] = ue.name
        for index, host in enumerate(self.local_plmn.ue_pool):
            names.setdefault(host, f"{self.local_plmn.name}.ue{index + 1}")
        return names

    def with_hosts(self, host: Callable[[str], str]) -> Topology:
        """The same topology with every address replaced by ``host(address)``."""
        from dataclasses import replace

        systems = tuple(replace(s, nodes=tuple(replace(n, host=host(n.host)) for n in s.nodes))
                        for s in self.systems)
        plmn = self.local_plmn
        plmn = replace(plmn, gateway=replace(plmn.gateway, host=host(plmn.gateway.host)),
                       ue_pool=tuple(host(a) for a in plmn.ue_pool))
        return replace(self, systems=systems, local_plmn=plmn,
                       ues=tuple(replace(u, host=host(u.host)) for u in self.ues))

    def with_transport(self, transport: str) -> Topology:
        """The same topology with every link forced to one transport (--transport).

        Raises ValueError when a link drops, duplicates or reorders and the transport is
        a stream, which would deliver every message anyway.
        """
        from dataclasses import replace

        if transport != "udp":
            for link in self.links:
                if any(i is not None and i.loses for i in (link.impair_ab, link.impair_ba)):
                    raise ValueError(f"link {link.a} - {link.b} loses packets, which only a "
                                     f"udp link can: not forcing {transport}")
        nodes = {n.qualified_name: n for s in self.systems for n in s.nodes}
        for link in self.links:
            for end in (link.a, link.b):
                sip = nodes[end].sip if end in nodes else None
                if sip is not None and transport not in sip.transports:
                    raise ValueError(f"{end} does not listen on {transport}: not forcing it")
        return replace(self, links=tuple(replace(link, transport=transport)
                                         for link in self.links))

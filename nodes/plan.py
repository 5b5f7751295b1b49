"""What a node is built from: a frozen :class:`NodePlan`, serialisable as JSON.

A plan holds names, addresses, listeners, paths to credentials, peers and
role options: never a live object (no socket, context, key or callback).
The orchestration derives every plan from the topology and a scenario's
faults (``emulator.orchestration.plan``); a role reads only its plan.  The
same JSON starts a node in this process, in its own process, or in a
container (``NodePlan.from_json``).

Role options are one dataclass per role (:data:`ROLE_OPTIONS`); in JSON they
carry their class name as ``kind``.  Faults
never appear here as flags: the planner has already applied them, e.g. a
partner MC server planned with no migrant identities.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from types import MappingProxyType
from typing import Any

import cattrs
from cattrs.strategies import configure_tagged_union
from cattrs.v import format_exception

from emulator.documents.groups import GroupDocument
from emulator.documents.profile import UserProfile
from emulator.identity.oidc import MC_SCOPES
from emulator.identity.oidc import MigrationProfile
from emulator.identity.oidc import OidcClient
from emulator.sip.events import Address
from emulator.sip.timers import DEFAULT_TIMERS
from emulator.sip.timers import TimerConfig
from emulator.topology.model import ConnectionLimits
from emulator.topology.model import FloodLimit
from emulator.topology.model import Impairment
from emulator.topology.model import LoginLimit
from emulator.topology.model import OverloadLimit

ROLES = ("idms", "cms", "gms", "mc-server", "sip-core", "gateway", "ue")


def mc_service_psi(service: str, domain: str) -> str:
    """The public service identity of an MC system's ``service`` ("mcptt", "mcdata")
    server: where its clients send private and group calls, SDS and PUBLISH (24.379
    §7.2.2, §11.1.1.2; 24.282 §9.2.2).  The user part is PROJECT-DEFINED: the specs leave
    PSIs to the operator, and the emulator's UEs derive them from the domain."""
    return f"sip:{service}-server@{domain}"


def mcptt_server_psi(domain: str) -> str:
    return mc_service_psi("mcptt", domain)


def frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a copy: a plan's mappings cannot change after it is made."""
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Listener:
    """A socket the node listens on: ``protocol`` is udp, tcp, tls (SIP) or https.

    Port 0 lets the kernel choose (a UE's SIP port); ``state()`` reports the real one.
    """

    protocol: str
    host: str
    port: int

    @property
    def is_sip(self) -> bool:
        return self.protocol in ("udp", "tcp", "tls")


@dataclass(frozen=True)
class Peer:
    """Another node this one sends to or trusts, reached on ``transport`` at host:port."""

    name: str
    role: str
    transport: str
    host: str
    port: int

    @property
    def address(self) -> Address:
        return Address(self.transport, self.host, self.port)


@dataclass(frozen=True)
class Impaired:
    """A link this node sends on is impaired: what goes to ``peer``, at ``hosts``."""

    peer: str
    hosts: tuple[str, ...]
    """The peer's known addresses (a UE's visited one is learnt on attach)."""
    impairment: Impairment


@dataclass(frozen=True)
class Credentials:
    """Paths to what the node proves and trusts (layout: ``emulator.keystore``)."""

    tls_certificate: str | None = None
    tls_key: str | None = None
    """The node's TLS server credential (HTTPS, SIP over TLS)."""
    trusted_cas: tuple[str, ...] = ()
    """CA certificates the node trusts as a TLS client."""
    system_ca: str | None = None
    """The node's own MC system CA: the anchor of its IdMS signing certificate."""
    signing_certificate: str | None = None
    """The own IdMS signing certificate, to verify the own system's tokens."""
    signing_key: str | None = None
    """Held by the IdMS only: it signs the tokens."""
    trust_dir: str | None = None
    """Other systems' IdMS certificates, provisioned out of band (33.180 §5.1.4.2)."""
    keylog: str | None = None
    """Where TLS secrets go, so the capture can be decrypted."""


@dataclass(frozen=True)
class Account:
    """An MC service user of an IdMS; the IdMS stores only a hash of ``password``."""

    username: str
    password: str
    mc_ids: Mapping[str, str]
    """mcptt_id / mcdata_id / mcvideo_id (33.180 B.2.1)."""
    migration_targets: tuple[str, ...] = ()
    """Partner IdMS issuers the user's profile authorises migration to."""
    security_token_lifetime: int = 600
    """Seconds the user's security tokens live: a setting of the primary's profile
    (PROJECT-DEFINED default; 33.180 gives none)."""
    scopes: tuple[str, ...] = MC_SCOPES
    """The MC scopes the user's profile grants (33.180 B.4)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mc_ids", frozen(self.mc_ids))


@dataclass(frozen=True)
class IdmsOptions:
    issuer: str
    title: str
    resource_audience: str
    """aud of the access tokens: the MC system's resource servers (project-defined)."""
    clients: tuple[OidcClient, ...]
    accounts: tuple[Account, ...]
    migration_profiles: tuple[MigrationProfile, ...] = ()
    """Partner role: the provisioned profiles of users who may migrate here."""
    clock_offset: float = 0.0
    """Seconds added to this IdMS's clock (simulated time: a partner that checks a token
    later than it was issued)."""
    login: LoginLimit = field(default_factory=LoginLimit)
    """Password guessing: slow-down and lockout (the topology's ``limits.login``)."""


@dataclass(frozen=True)
class CmsOptions:
    issuer: str
    """The own IdMS, whose access tokens the CMS accepts (RFC 6750)."""
    audience: str
    profiles: tuple[UserProfile, ...]


@dataclass(frozen=True)
class GmsOptions:
    issuer: str
    """The own IdMS, whose access tokens the GMS accepts (RFC 6750)."""
    audience: str
    groups: tuple[GroupDocument, ...]


@dataclass(frozen=True)
class McServerOptions:
    issuer: str
    audience: str
    mode: str = "normal"
    """normal, direct (non-normative) or interconnection (23.280 §10.6.3 baseline)."""
    migration_profiles: tuple[MigrationProfile, ...] = ()
    """Who may migrate here, and their partner-assigned MC service IDs."""
    migrant_identities: tuple[str, ...] = ()
    """Partner MCPTT IDs whose migration profile this MC server holds."""
    allowed_partners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Primary role (interconnection baseline): MCPTT ID -> systems it may migrate to."""
    clock_offset: float = 0.0
    """Seconds added to this MC server's clock (simulated time, a skewed server)."""
    domain: str = ""
    """Its system's domain, which names its PSIs (:func:`mc_service_psi`)."""
    groups: tuple[GroupDocument, ...] = ()
    """The system's groups, as its GMS serves them (provisioned: PROJECT choice, the MC
    server does not fetch them from the GMS)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_partners", frozen(self.allowed_partners))


@dataclass(frozen=True)
class SipCoreOptions:
    domain: str
    min_expires: int = 60
    """The registrar's shortest registration (RFC 3261 §10.3 step 7: 423 below it)."""


@dataclass(frozen=True)
class GatewayOptions:
    plmn: str
    plmn_id: str
    ue_pool: tuple[str, ...]
    """Addresses handed out on attach."""
    flood: FloodLimit = field(default_factory=FloodLimit)
    """Each source's token bucket for SIP (the topology's ``limits.flood``)."""


@dataclass(frozen=True)
class UeOptions:
    username: str
    password: str
    client_id: str
    redirect_uri: str


@dataclass(frozen=True)
class ExecOptions:
    """An outside program run as a node (the topology's ``kind: exec``)."""

    command: tuple[str, ...]
    """argv, every placeholder filled in for this run."""
    probe: str
    """udp (a SIP OPTIONS is answered) or tcp (a connection is accepted)."""
    probe_port: int


RoleOptions = (IdmsOptions | CmsOptions | GmsOptions | McServerOptions | SipCoreOptions
               | GatewayOptions | UeOptions | ExecOptions)
ROLE_OPTIONS: Mapping[str, type] = {
    "idms": IdmsOptions, "cms": CmsOptions, "gms": GmsOptions, "mc-server": McServerOptions,
    "sip-core": SipCoreOptions, "gateway": GatewayOptions, "ue": UeOptions,
    "edge-proxy": ExecOptions, "exec": ExecOptions}


@dataclass(frozen=True)
class NodePlan:
    """Everything one node needs to start, as plain data."""

    name: str
    """Qualified name, e.g. ``partner.sip-core``; captures and ladders show it."""
    role: str
    system: str
    """The MC system, local PLMN or (for a UE) home system the node belongs to."""
    host: str
    listeners: tuple[Listener, ...]
    options: RoleOptions
    credentials: Credentials = Credentials()
    peers: tuple[Peer, ...] = ()
    after: tuple[str, ...] = ()
    """Nodes that must be ready before this one starts."""
    impairments: tuple[Impaired, ...] = ()
    """What the links this node sends on do to its packets (see emulator.transport.impair)."""
    state_file: str | None = None
    """Where the node keeps what survives a restart (see nodes.journal); None: nothing."""
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    """Its stream listeners' caps and time-outs (the topology's ``limits.connections``)."""
    sip_timers: TimerConfig = DEFAULT_TIMERS
    """T1, T2 and T4 of its SIP transactions (the topology's ``sip_timers``)."""
    overload: OverloadLimit = field(default_factory=OverloadLimit)
    """When its SIP side sheds new requests (the topology's ``limits.overload``)."""

    def __post_init__(self) -> None:
        expected = ROLE_OPTIONS.get(self.role)
        if expected is None:
            raise ValueError(f"{self.name}: unknown role {self.role!r}")
        if not isinstance(self.options, expected):
            raise ValueError(f"{self.name}: a {self.role} takes {expected.__name__}")

    def peer(self, role: str) -> Peer | None:
        """The first peer with ``role``."""
        return next((p for p in self.peers if p.role == role), None)

    def peers_of(self, role: str) -> tuple[Peer, ...]:
        return tuple(p for p in self.peers if p.role == role)

    @property
    def sip_listeners(self) -> tuple[Listener, ...]:
        return tuple(listener for listener in self.listeners if listener.is_sip)

    def listener(self, protocol: str) -> Listener | None:
        return next((item for item in self.listeners if item.protocol == protocol), None)

    # -- JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _CONVERTER.unstructure(self)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodePlan:
        """The plan ``to_dict`` gave; raises ValueError saying what is wrong."""
        try:
            plan: NodePlan = _CONVERTER.structure(data, cls)
        except cattrs.BaseValidationError as exc:
            errors = cattrs.transform_error(exc, format_exception=_format_error)
            raise ValueError("not a node plan: " + "; ".join(errors)) from None
        return plan

    @classmethod
    def from_json(cls, text: str) -> NodePlan:
        return cls.from_dict(json.loads(text))


def _format_error(exc: BaseException, kind: type | None) -> str:
    if type(exc) in (ValueError, TypeError):
        return str(exc)
    return format_exception(exc, kind)


def _exactly(kind: type) -> Any:
    """A strict hook: cattrs would otherwise turn 5 into "5" or "5" into 5."""
    def structure(value: Any, _: type) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value
    return structure


_CONVERTER = cattrs.Converter(forbid_extra_keys=True)
for _kind in (str, int, bool):
    _CONVERTER.register_structure_hook(_kind, _exactly(_kind))
# The options carry their class name ("kind"), checked against the role by __post_init__.
configure_tagged_union(RoleOptions, _CONVERTER, tag_name="kind")


def prepare_plans() -> None:
    """Have cattrs write the code that structures every plan class now (~40 ms), rather
    than at each one's first :meth:`NodePlan.from_dict`: a process that forks node
    processes (the zygote) does it once, for all of them."""
    for kind in (NodePlan, *typing.get_args(RoleOptions)):
        _CONVERTER.get_structure_hook(kind)

"""Load and validate a topology file into frozen data, in one place.

The file is YAML (containerlab's spirit).  Every error names the file, the
line and the key path, e.g.::

    topologies/bad.yaml:14: systems.partner.nodes.sip-core.host: '10.1.1.1' is not
    in 127.0.0.0/8 (localhost placement only uses loopback addresses)

Unknown keys are errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from emulator.sip.timers import DEFAULT_TIMERS
from emulator.sip.timers import TimerConfig

from .model import EXEC_ROLES
from .model import NODE_PLACEHOLDERS
from .model import OPTIONAL_ROLES
from .model import OWN_PLACEHOLDERS
from .model import PLACEHOLDER
from .model import ROLES
from .model import SERVICE_AUTHORISATION
from .model import TRANSPORTS
from .model import ConnectionLimits
from .model import ExecSpec
from .model import FloodLimit
from .model import GroupSpec
from .model import Impairment
from .model import Limits
from .model import Link
from .model import LocalPlmn
from .model import LoginLimit
from .model import McSystem
from .model import MigrationProfileSpec
from .model import Node
from .model import OverloadLimit
from .model import SipInterface
from .model import Topology
from .model import UeSpec
from .model import UserSpec


class TopologyError(ValueError):
    """A topology file is wrong; the message names file, line and key path."""


# libyaml's composer when PyYAML has it (5× faster, part of start-up); same nodes and marks.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Doc:
    """The parsed YAML plus the line of every key path."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        try:
            node = yaml.compose(text, Loader=_COMPOSER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise TopologyError(f"{source}{line}: not valid YAML: "
                                f"{getattr(exc, 'problem', exc)}") from None
        if node is None:
            raise TopologyError(f"{source}: the file is empty")
        self._scalars = yaml.SafeLoader("")  # resolves scalars with YAML's own typing
        self.data = self._convert(node, "")

    def _convert(self, node: yaml.Node, path: str) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                if key in out:
                    raise TopologyError(f"{self.source}:{key_node.start_mark.line + 1}: "
                                        f"{child}: duplicate key")
                out[key] = self._convert(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node)

    def error(self, path: str, message: str) -> TopologyError:
        line = self.lines.get(path)
        while line is None and path:
            path_parent = path.rsplit(".", 1)[0] if "." in path else ""
            line = self.lines.get(path_parent)
            if path_parent == path:
                break
            path = path_parent if line is None else path
        where = f"{self.source}:{line}" if line else self.source
        return TopologyError(f"{where}: {path or '(top level)'}: {message}")


class _Reader:
    """Typed access to one mapping of the document, with precise errors."""

    def __init__(self, doc: _Doc, data: Any, path: str) -> None:
        self.doc = doc
        self.path = path
        if not isinstance(data, dict):
            raise doc.error(path, f"must be a mapping, not {type(data).__name__}")
        self.data: dict[str, Any] = data
        self._used: set[str] = set()

    def _child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self._used.add(key)
        if key not in self.data:
            if default is ...:
                raise self.doc.error(self.path, f"missing required key {key!r}")
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind in (int, (int,)):
            raise self.doc.error(self._child(key), "must be a number, not a boolean")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.doc.error(self._child(key), f"must be {names}, not "
                                                   f"{type(value).__name__} ({value!r})")
        return value

    def string(self, key: str, default: Any = ...) -> Any:
        value = self.get(key, str, default)
        if isinstance(value, str) and not value.strip():
            raise self.doc.error(self._child(key), "must not be empty")
        return value

    def sub(self, key: str) -> _Reader:
        self._used.add(key)
        if key not in self.data:
            raise self.doc.error(self.path, f"missing required key {key!r}")
        return _Reader(self.doc, self.data[key], self._child(key))

    def items(self, key: str) -> list[tuple[str, _Reader]]:
        reader = self.sub(key)
        out = []
        for name in reader.data:
            reader._used.add(name)
            out.append((str(name), reader.sub(name)))
        return out

    def check(self, value: Any, key: str, test: Callable[[Any], bool], message: str) -> Any:
        if not test(value):
            raise self.doc.error(self._child(key), message)
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._used)
        if unknown:
            raise self.doc.error(self._child(unknown[0]), f"unknown key {unknown[0]!r}")


def _loopback(reader: _Reader, key: str) -> str:
    host: str = reader.string(key)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise reader.doc.error(reader._child(key), f"{host!r} is not an IP address") from None
    if not address.is_loopback or address.version != 4 or host == "127.0.0.1":
        raise reader.doc.error(reader._child(key), f"{host!r} is not in 127.0.0.0/8 other than "
                                                   "127.0.0.1 (localhost placement gives every "
                                                   "node its own loopback address)")
    return host


def _port(reader: _Reader, key: str) -> int:
    port = reader.get(key, int)
    return int(reader.check(port, key, lambda p: 1 <= p <= 65535, f"port {port} out of range"))


def _sip(reader: _Reader) -> SipInterface:
    port = _port(reader, "port")
    transports = reader.get("transports", list, ["udp", "tcp", "tls"])
    for i, transport in enumerate(transports):
        if transport not in TRANSPORTS:
            raise reader.doc.error(f"{reader.path}.transports[{i}]",
                                   f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
    reader.done()
    return SipInterface(port, tuple(transports))


def _node(reader: _Reader, name: str, system: str, role: str | None = None) -> Node:
    kind = reader.string("kind", "role")
    reader.check(kind, "kind", lambda k: k in ("role", "exec"),
                 f"kind {kind!r} is not 'role' (one of ours) or 'exec' (an outside program)")
    if kind == "exec":
        return _exec_node(reader, name, system)
    role = role or reader.string("role")
    reader.check(role, "role", lambda r: r in ROLES + OPTIONAL_ROLES,
                 f"role {role!r} is not one of {', '.join(ROLES + OPTIONAL_ROLES)}")
    host = _loopback(reader, "host")
    sip = _sip(reader.sub("sip")) if reader.has("sip") else None
    https = _port(reader, "https") if reader.has("https") else None
    if role in ("sip-core", "mc-server") and sip is None:
        raise reader.doc.error(reader.path, f"a {role} needs a 'sip' interface")
    if role in ("idms", "cms", "gms") and https is None:
        raise reader.doc.error(reader.path, f"a {role} needs an 'https' port")
    reader.done()
    return Node(name, role, system, host, sip, https)


def _exec_node(reader: _Reader, name: str, system: str) -> Node:
    """``kind: exec``: an outside program on its own address (or namespace), probed on a
    port until it answers."""
    role = reader.string("role", "exec")
    reader.check(role, "role", lambda r: r in EXEC_ROLES,
                 f"role {role!r} of an exec node is not one of {', '.join(EXEC_ROLES)}")
    host = _loopback(reader, "host")
    sip = _sip(reader.sub("sip")) if reader.has("sip") else None
    if role == "edge-proxy" and sip is None:
        raise reader.doc.error(reader.path, "an edge-proxy needs a 'sip' interface")
    command = reader.get("command", list)
    if not command or not all(isinstance(arg, str | int) for arg in command):
        raise reader.doc.error(reader._child("command"), "must be a non-empty list of strings")
    if reader.has("probe"):
        probe = reader.sub("probe")
        transport = probe.string("transport")
        probe.check(transport, "transport", lambda t: t in ("udp", "tcp"),
                    f"probe transport {transport!r} is not udp or tcp")
        port = _port(probe, "port")
        probe.done()
    elif sip is not None:
        transport, port = sip.transports[0] if sip.transports[0] != "tls" else "tcp", sip.port
    else:
        raise reader.doc.error(reader.path, "an exec node needs a port to probe for readiness "
                                            "('probe' or 'sip')")
    reader.done()
    return Node(name, role, system, host, sip, None,
                ExecSpec(tuple(str(arg) for arg in command), transport, port))


def _check_placeholders(doc: _Doc, systems: tuple[McSystem, ...], known: set[str]) -> None:
    """Every ``{...}`` in an exec command names something the planner fills in."""
    for system in systems:
        for node in system.nodes:
            if node.exec is None:
                continue
            for i, arg in enumerate(node.exec.command):
                for name in PLACEHOLDER.findall(arg):
                    target, _, field = name.rpartition(".")
                    if name in OWN_PLACEHOLDERS or (target in known and
                                                    field in NODE_PLACEHOLDERS):
                        continue
                    raise doc.error(f"systems.{system.name}.nodes.{node.name}.command[{i}]",
                                    f"unknown placeholder {{{name}}} (known: "
                                    f"{', '.join('{' + p + '}' for p in OWN_PLACEHOLDERS)}, "
                                    "{<node>.host}, {<node>.port}, {<node>.uri})")


def _user(reader: _Reader, name: str) -> UserSpec:
    user = UserSpec(
        name=name, password=reader.string("password"), mcptt_id=reader.string("mcptt_id"),
        mcdata_id=reader.string("mcdata_id", None), mcvideo_id=reader.string("mcvideo_id", None),
        migrate_to=tuple(reader.get("migrate_to", list, [])),
        security_token_lifetime=reader.get("security_token_lifetime", int, 600))
    if not 1 <= user.security_token_lifetime <= 86400 or \
            isinstance(user.security_token_lifetime, bool):
        raise reader.doc.error(reader._child("security_token_lifetime"),
                               "must be whole seconds from 1 to 86400")
    for key in ("mcptt_id", "mcdata_id", "mcvideo_id"):
        value = getattr(user, key)
        if value is not None and not value.startswith(("sip:", "tel:")):
            raise reader.doc.error(reader._child(key), f"{value!r} is not a SIP URI")
    reader.done()
    return user


def _system(reader: _Reader, name: str) -> McSystem:
    domain = reader.string("domain")
    organization = reader.string("organization", name)
    nodes = tuple(_node(node_reader, node_name, name)
                  for node_name, node_reader in reader.items("nodes"))
    roles = [node.role for node in nodes]
    for role in ROLES:
        if roles.count(role) != 1:
            raise reader.doc.error(f"{reader.path}.nodes",
                                   f"needs exactly one node with role {role!r}, has "
                                   f"{roles.count(role)}")
    for optional in ("edge-proxy", *OPTIONAL_ROLES):
        if roles.count(optional) > 1:
            raise reader.doc.error(f"{reader.path}.nodes", f"has more than one {optional}")
    users = tuple(_user(u, n) for n, u in reader.items("users")) if reader.has("users") else ()
    profiles = []
    if reader.has("migration_profiles"):
        for user_name, profile in reader.items("migration_profiles"):
            profiles.append(MigrationProfileSpec(
                user=user_name, primary=profile.string("primary"),
                partner_identity=profile.string("partner_identity"),
                partner_mcdata_id=profile.string("partner_mcdata_id", None),
                partner_mcvideo_id=profile.string("partner_mcvideo_id", None)))
            profile.done()
    known = {u.name for u in users} | {p.user for p in profiles}
    group_specs = []
    if reader.has("groups"):
        for group_name, group in reader.items("groups"):
            members = tuple(group.get("members", list, []))
            for i, member in enumerate(members):
                if member not in known:
                    raise reader.doc.error(f"{group.path}.members[{i}]",
                                           f"{member!r} is neither a user nor a migration "
                                           f"profile of {name}")
            group_id = group.string("id")
            if not group_id.startswith("sip:"):
                raise reader.doc.error(f"{group.path}.id", f"{group_id!r} is not a SIP URI")
            group_specs.append(GroupSpec(group_name, group_id,
                                         group.string("display_name", group_name), members))
            group.done()
    reader.done()
    return McSystem(name, domain, organization, nodes, users, tuple(profiles),
                    tuple(group_specs))


def parse_topology(text: str, source: str = "<string>") -> Topology:
    """Parse and validate topology text; raises :class:`TopologyError`."""
    doc = _Doc(source, text)
    top = _Reader(doc, doc.data, "")
    name = top.string("name")
    systems = tuple(_system(r, n) for n, r in top.items("systems"))
    if len(systems) < 2:
        raise doc.error("systems", "needs at least two MC systems (primary and partner)")
    by_name = {s.name: s for s in systems}
    local_plmn = _local_plmn(top.sub("local_plmn"), by_name)
    ues = _ues(top, by_name)
    links = _links(top, systems, local_plmn.name, ues)
    client_id, redirect = _oidc_client(top)
    limits = _limits(top.sub("limits")) if top.has("limits") else Limits()
    timers = _sip_timers(top) if top.has("sip_timers") else DEFAULT_TIMERS
    top.done()
    _cross_check(doc, systems, by_name)
    _check_placeholders(doc, systems, {n.qualified_name for s in systems for n in s.nodes}
                        | {f"{local_plmn.name}.gateway"})
    return Topology(name, systems, local_plmn, tuple(ues), tuple(links), client_id, redirect,
                    source, limits, timers)


MAX_POOL = 65534
"""The most addresses a gateway hands out (a /16), so a pool stays a few MB."""


def _local_plmn(plmn_reader: _Reader, by_name: dict[str, McSystem]) -> LocalPlmn:
    """The ``local_plmn`` section: its gateway, the system it serves and the UE pool."""
    doc = plmn_reader.doc
    plmn_name = plmn_reader.string("name")
    gateway_reader = plmn_reader.sub("gateway")
    gw_host = _loopback(gateway_reader, "host")
    gw_sip = _sip(gateway_reader.sub("sip"))
    gw_https = _port(gateway_reader, "https")
    gateway_reader.done()
    serves = plmn_reader.string("serves")
    plmn_reader.check(serves, "serves", lambda s: s in by_name, f"no MC system named {serves!r}")
    pool_text = plmn_reader.string("ue_pool")
    try:
        pool_net = ipaddress.ip_network(pool_text)
    except ValueError:
        raise doc.error("local_plmn.ue_pool", f"{pool_text!r} is not a network") from None
    if not pool_net.is_loopback:
        raise doc.error("local_plmn.ue_pool", f"{pool_text} is not inside 127.0.0.0/8")
    if pool_net.num_addresses > MAX_POOL + 2:
        raise doc.error("local_plmn.ue_pool", f"{pool_text} is larger than a /16 "
                                              f"(at most {MAX_POOL} UE addresses)")
    pool = tuple(str(h) for h in pool_net.hosts())  # every address a UE can hold
    local_plmn = LocalPlmn(plmn_name, plmn_reader.string("plmn_id"),
                           Node("gateway", "gateway", plmn_name, gw_host, gw_sip, gw_https),
                           serves, pool)
    plmn_reader.done()
    return local_plmn


def _ues(top: _Reader, by_name: dict[str, McSystem]) -> list[UeSpec]:
    """The ``ues`` section: each UE's home system, user and address."""
    ues = []
    for ue_name, ue_reader in top.items("ues"):
        home = ue_reader.string("home")
        ue_reader.check(home, "home", lambda h: h in by_name, f"no MC system named {home!r}")
        user = ue_reader.string("user")
        users = {x.name for x in by_name[home].users}
        ue_reader.check(user, "user", users.__contains__, f"system {home!r} has no user {user!r}")
        mode = ue_reader.get("service_authorisation", str, "register")
        ue_reader.check(mode, "service_authorisation", SERVICE_AUTHORISATION.__contains__,
                        f"{mode!r} is not one of {', '.join(SERVICE_AUTHORISATION)}")
        ues.append(UeSpec(ue_name, user, home, _loopback(ue_reader, "host"), mode))
        ue_reader.done()
    return ues


def _links(top: _Reader, systems: tuple[McSystem, ...], plmn_name: str,
           ues: list[UeSpec]) -> list[Link]:
    """The optional ``links`` list; both ends must name a node, the gateway or a UE."""
    doc = top.doc
    known = {n.qualified_name for s in systems for n in s.nodes}
    known |= {f"{plmn_name}.gateway"} | {ue.name for ue in ues}
    links = []
    for i, item in enumerate(top.get("links", list, [])):
        path = f"links[{i}]"
        reader = _Reader(doc, item, path)
        ends = reader.get("between", list)
        if len(ends) != 2:
            raise doc.error(f"{path}.between", "a link is between exactly two nodes")
        for j, end in enumerate(ends):
            if end not in known:
                raise doc.error(f"{path}.between[{j}]", f"no node named {end!r} (known: "
                                                        f"{', '.join(sorted(known))})")
        transport = reader.string("transport", "udp")
        reader.check(transport, "transport", lambda t: t in TRANSPORTS,
                     f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
        ab, ba = _impairments(reader, ends, transport) if reader.has("impair") else (None, None)
        links.append(Link(ends[0], ends[1], transport, ab, ba))
        reader.done()
    return links


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_RATES = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-z%]*)\s*\Z")


class ImpairmentError(ValueError):
    """A bad impairment; ``key`` is the one at fault (None: the whole impairment)."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


_IMPAIRMENT_KEYS = ("delay", "jitter", "loss", "duplicate", "reorder", "rate", "seed")


def _quantity(key: str, value: object, units: dict[str, float], what: str) -> float:
    """A number with an optional unit (``50ms``, ``20%``, ``1mbit``); bare means base unit."""
    if isinstance(value, bool):
        raise ImpairmentError(key, f"must be {what}, not a boolean")
    if isinstance(value, int | float):
        return float(value)
    match = _NUMBER.match(str(value).lower())
    if match is None or match.group(2) not in units:
        raise ImpairmentError(key, f"{value!r} is not {what} "
                                   f"(units: {', '.join(u for u in units if u)})")
    return float(match.group(1)) * units[match.group(2)]


def parse_impairment(values: Mapping[str, object], *, transport: str = "udp") -> Impairment:
    """One direction's impairment from ``{"delay": "50ms", "loss": "20%", ...}`` (the
    topology file's ``impair:``, or ``link set``'s options); raises ImpairmentError."""
    unknown = sorted(set(values) - set(_IMPAIRMENT_KEYS))
    if unknown:
        raise ImpairmentError(unknown[0], f"unknown key {unknown[0]!r}")
    found: dict[str, float] = {}
    for key in ("delay", "jitter"):
        if key in values:
            found[key] = _quantity(key, values[key], {"": 1.0, **_UNITS}, "a duration")
    for key in ("loss", "duplicate", "reorder"):
        if key in values:
            found[key] = _quantity(key, values[key], {"": 1.0, "%": 0.01}, "a share")
            if not 0.0 <= found[key] <= 1.0:
                raise ImpairmentError(key, "must be between 0 and 100 %")
    rate = _quantity("rate", values["rate"], {"": 1.0, **_RATES}, "a rate") \
        if "rate" in values else None
    if rate is not None and rate <= 0:
        raise ImpairmentError("rate", "must be above 0")
    seed = values.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ImpairmentError("seed", f"must be a whole number, not {seed!r}")
    impairment = Impairment(**found, rate=rate, seed=seed)
    if impairment.loses and transport != "udp":
        raise ImpairmentError(None, f"loss, duplicate and reorder need a udp link: "
                                    f"{transport} delivers every message")
    return impairment


_BOUNDS: dict[str, tuple[float, float]] = {
    # key: (lowest, highest) accepted; the highest keep every table and timer sane.
    "t1": (0.001, 10), "t2": (0.001, 64), "t4": (0.001, 60),
    "max_connections": (1, 1_000_000), "max_per_source": (1, 1_000_000),
    "header_timeout": (0.01, 3600), "idle_timeout": (0.01, 86400),
    "rate": (0.001, 1_000_000), "burst": (1, 1_000_000), "retry_after": (0, 86400),
    "max_sources": (1, 10_000_000), "max_failures": (1, 1000), "window": (0.01, 86400),
    "lockout": (0.0, 86400), "slowdown": (0.0, 60), "max_tracked": (1, 10_000_000),
    "target": (0.001, 60), "interval": (0.0, 60),
}


def _fields(reader: _Reader, key: str, kind: type[Any]) -> Any:
    """``kind`` from the mapping at ``key`` of ``reader``: any of its fields, each a number
    within ``_BOUNDS``, durations with units (``32s``, ``500ms``); absent: the defaults."""
    if not reader.has(key):
        return kind()
    sub = reader.sub(key)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(kind):
        if not sub.has(spec.name):
            continue
        if isinstance(spec.default, bool):  # a switch: true or false, nothing else
            values[spec.name] = sub.get(spec.name, (bool,))
            continue
        whole = isinstance(spec.default, int)
        raw = sub.get(spec.name, (int, float, str))
        if isinstance(raw, bool):
            raise reader.doc.error(sub._child(spec.name), "must be a number, not a boolean")
        try:
            value = _quantity(spec.name, raw, {"": 1.0, **_UNITS}, "a number")
        except ImpairmentError as exc:
            raise reader.doc.error(sub._child(spec.name), exc.message) from None
        low, high = _BOUNDS[spec.name]
        if whole and value != int(value):
            raise reader.doc.error(sub._child(spec.name),
                                   f"must be a whole number, not {raw!r}")
        if not low <= value <= high:
            raise reader.doc.error(sub._child(spec.name),
                                   f"{raw!r} is out of range ({low:g} to {high:g})")
        values[spec.name] = int(value) if whole else value
    sub.done()
    return kind(**values)


def _limits(reader: _Reader) -> Limits:
    """The optional ``limits`` section: ``connections``, ``flood``, ``login`` and
    ``overload``, each a mapping of the fields of its dataclass."""
    limits = Limits(_fields(reader, "connections", ConnectionLimits),
                    _fields(reader, "flood", FloodLimit), _fields(reader, "login", LoginLimit),
                    _fields(reader, "overload", OverloadLimit))
    reader.done()
    if limits.connections.max_per_source > limits.connections.max_connections:
        raise reader.doc.error(f"{reader.path}.connections.max_per_source",
                               "must not exceed max_connections")
    return limits


def _sip_timers(top: _Reader) -> TimerConfig:
    """The optional ``sip_timers`` section: T1, T2, T4.  RFC 3261 §17.1.1.1 lets a network
    known to be fast use a smaller T1; §17.1.2.2 caps the retransmit interval at T2, so T2
    below T1 would make no sense."""
    timers: TimerConfig = _fields(top, "sip_timers", TimerConfig)
    if timers.t2 < timers.t1:
        raise top.doc.error("sip_timers.t2", f"T2 ({timers.t2:g} s) must not be below T1 "
                                            f"({timers.t1:g} s)")
    return timers


def _impairment(reader: _Reader, transport: str) -> Impairment:
    """One direction's ``impair:`` mapping, its errors naming the key path."""
    try:
        return parse_impairment(reader.data, transport=transport)
    except ImpairmentError as exc:
        path = reader._child(exc.key) if exc.key else reader.path
        raise reader.doc.error(path, exc.message) from None


def _impairments(link: _Reader, ends: list[str], transport: str
                 ) -> tuple[Impairment | None, Impairment | None]:
    """``impair:`` is one impairment for both directions, or one per sending end."""
    raw = link.sub("impair")
    if raw.data and set(raw.data) <= set(ends):
        found = {end: _impairment(raw.sub(end), transport) for end in ends if raw.has(end)}
        raw.done()
        return found.get(ends[0]), found.get(ends[1])
    both = _impairment(raw, transport)
    return both, both


def _oidc_client(top: _Reader) -> tuple[str, str]:
    """The optional ``oidc_client`` section: client id and redirect URI, with defaults."""
    client = top.sub("oidc_client") if top.has("oidc_client") else None
    client_id = client.string("client_id") if client else "mcx-client"
    redirect = client.string("redirect_uri") if client else "http://127.0.0.1/callback"
    if client:
        client.done()
    return client_id, redirect


def _cross_check(doc: _Doc, systems: tuple[McSystem, ...],
                 by_name: dict[str, McSystem]) -> None:
    """Checks across systems: unique node addresses, and systems that profiles name exist."""
    hosts: dict[str, str] = {}
    for system in systems:
        for node in system.nodes:
            other = hosts.setdefault(node.host, node.qualified_name)
            if other != node.qualified_name:
                raise doc.error(f"systems.{system.name}.nodes.{node.name}.host",
                                f"address {node.host} is already used by {other}")
        for profile in system.migration_profiles:
            if profile.primary not in by_name:
                raise doc.error(f"systems.{system.name}.migration_profiles.{profile.user}"
                                ".primary", f"no MC system named {profile.primary!r}")
    for system in systems:
        for user in system.users:
            for target in user.migrate_to:
                if target not in by_name or target == system.name:
                    raise doc.error(f"systems.{system.name}.users.{user.name}.migrate_to",
                                    f"{target!r} is not another MC system")


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file; raises :class:`TopologyError`."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(f"{file}: cannot read: {exc.strerror}") from None
    return parse_topology(text, str(file))

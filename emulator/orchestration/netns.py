"""netns placement: every node in its own network namespace, joined by Linux bridges.

The layout is derived from the topology, in :func:`layout` (pure):

* one bridge per MC system network, one for the local PLMN access network, and one home
  access network per MC system that has UEs at home;
* a node of an MC system has one interface, on its system's bridge;
* a UE at home has one interface, on its home access network, which a router namespace
  (``<system>.access-router``) joins to its system's network;
* the gateway has an interface on the access network and one on the network of the system
  it serves, with the same address, and routes between them;
* the primary and partner networks share no bridge and no route: "no interconnection" is a
  property of the network, not of the nodes' behaviour.

Every route to a node names an interface, not a next hop: routers and the gateway answer
ARP for what lies behind them (proxy ARP), so they need no address of their own.  Addresses
are the topology's, moved from 127.A.B.C to 198.(18+A).B.C (RFC 2544's benchmarking range);
no namespace gets a default route or anything outside the run's own addresses.

A load run's generated UEs (the *crowd*) share one namespace, ``crowd``, on their home
access network and on the local PLMN's: it holds all their home addresses and the whole
pool as its own (``ip route add local``: one route, not one address each), and ranges of
many hosts are reached through one neighbour (a next hop that answers for the range), so
the kernel's neighbour table, shared by every namespace and 1,024 entries by default,
holds a few entries for them, not one per UE per node (at 100 UEs/s, one per UE overflowed
it).  In a load run the pool is the crowd's alone: the topology's own UEs stay home.

The bridges live in a switch namespace, so nothing is ever added to the host's own
namespace.  Every name carries the run's prefix ``mcx-<pid>-``, which is how
:func:`clean` finds what a killed run left behind.  :class:`NetnsNetwork` builds the
layout with ``ip`` (iproute2) batches and tears it down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from emulator.process import enter_netns
from emulator.process import setns
from emulator.topology.model import Topology
from emulator.topology.model import UeSpec

PREFIX = "mcx-"
CROWD = "crowd"
"""The load UEs' shared namespace, by its key in :attr:`Layout.namespaces`."""
_RUN_NAME = re.compile(r"mcx-(\d+)-")


def netns_host(host: str) -> str:
    """127.A.B.C (A = 0 or 1) -> 198.(18+A).B.C, inside 198.18.0.0/15."""
    address = ipaddress.IPv4Address(host)
    first, a, b, c = address.packed
    if first != 127 or a > 1:
        raise ValueError(f"{host} has no place in 198.18.0.0/15 (netns placement maps "
                         "127.0.0.0/15 onto it)")
    return f"198.{18 + a}.{b}.{c}"


@dataclass(frozen=True)
class Interface:
    name: str
    """Inside the node's namespace."""
    bridge: str
    address: str | None
    """/32 on this interface; None for a router's (it answers ARP for others)."""
    routes: tuple[str, ...]
    """Addresses reached through this interface, each its own neighbour."""
    ranges: tuple[tuple[str, str], ...] = ()
    """(CIDR, next hop) pairs: many hosts reached through one neighbour on this link, which
    answers ARP for the next hop (a router's proxy ARP, the gateway's own address, the
    crowd's local range)."""


@dataclass(frozen=True)
class Namespace:
    node: str
    name: str
    interfaces: tuple[Interface, ...]
    forwards: bool = False
    """Routes between its interfaces, answering ARP for what lies behind them."""
    local: tuple[tuple[str, str], ...] = ()
    """(CIDR, interface) pairs: addresses the namespace holds as its own without configuring
    each one (the crowd's homes and the pool), so it answers ARP for them and sockets bind
    to them; what is sent from them leaves through that interface only (policy routing),
    or not at all: a crowd UE migrated to the pool cannot reach its home system."""


@dataclass(frozen=True)
class Layout:
    prefix: str
    switch: str
    bridges: dict[str, str]
    """Network name -> bridge device in the switch namespace."""
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    """Node name -> its namespace (routers included, under their own names)."""
    access: str = ""
    """The local PLMN access network's bridge, where UEs attach."""
    served: tuple[str, ...] = ()
    """What a UE attached to the access network reaches: the gateway and the served system."""


def cidrs(hosts: Iterable[str]) -> tuple[str, ...]:
    """The fewest CIDRs that hold exactly ``hosts``."""
    return tuple(str(net) for net in ipaddress.collapse_addresses(
        ipaddress.IPv4Network(host) for host in hosts))


def layout(topology: Topology, prefix: str,
           interconnect: tuple[tuple[str, str], ...] = (),
           crowd: tuple[UeSpec, ...] = ()) -> Layout:
    """Namespaces, interfaces and routes for ``topology`` (already in 198.18.0.0/15).

    ``interconnect`` names pairs of nodes of different systems joined by a link of their
    own (the interconnection baseline of 23.280 §10.6.3): only they, only each other.
    ``crowd`` are a load run's UEs, not nodes: they share the ``crowd`` namespace.
    """
    plmn = topology.local_plmn
    gateway = plmn.gateway
    networks = [s.name for s in topology.systems] + [plmn.name]
    homes = [s.name for s in topology.systems
             if any(u.home == s.name for u in (*topology.ues, *crowd))]
    networks += [f"{home}-access" for home in homes]
    networks += [f"interconnection-{i}" for i in range(len(interconnect))]
    bridges = {network: f"br{i}" for i, network in enumerate(networks)}
    hosts = {s.name: tuple(n.host for n in s.nodes) for s in topology.systems}
    # Each home's UE nodes, one route each (the crowd's are ranges, below).
    ue_homes = {s: tuple(u.host for u in topology.ues if u.home == s) for s in homes}
    served = hosts[plmn.serves] + (gateway.host,)
    # Ranges reached through one neighbour: the pool through the gateway (its own address),
    # the crowd's homes through their access router (proxy ARP for any of them), and the
    # router reaches them through the crowd (which holds them all).
    pool = tuple((cidr, gateway.host) for cidr in cidrs(plmn.ue_pool))
    crowd_homes = {home: cidrs(u.host for u in crowd if u.home == home) for home in homes}

    def via_crowd(home: str) -> tuple[tuple[str, str], ...]:
        first = next((u.host for u in crowd if u.home == home), "")
        return tuple((cidr, first) for cidr in crowd_homes[home])

    out: dict[str, Namespace] = {}

    def add(node: str, interfaces: tuple[Interface, ...], forwards: bool = False,
            local: tuple[tuple[str, str], ...] = ()) -> None:
        out[node] = Namespace(node, f"{prefix}{len(out)}", interfaces, forwards, local)

    for system in topology.systems:
        behind = ue_homes.get(system.name, ())
        ranges = via_crowd(system.name) if system.name in homes else ()
        if system.name == plmn.serves:
            behind += (gateway.host,)
            ranges += pool
        for node in system.nodes:
            add(node.qualified_name, (Interface("eth0", bridges[system.name], node.host,
                                                hosts[system.name] + behind, ranges),))
    # With a crowd, the pool is all the crowd's: the gateway reaches it through one
    # neighbour; otherwise each address is a UE namespace's of its own.
    radio = Interface("eth1", bridges[plmn.name], gateway.host, (),
                      tuple((cidr, plmn.ue_pool[0]) for cidr in cidrs(plmn.ue_pool))) \
        if crowd else Interface("eth1", bridges[plmn.name], gateway.host, plmn.ue_pool)
    add(gateway.qualified_name, (
        Interface("eth0", bridges[plmn.serves], gateway.host, hosts[plmn.serves]), radio),
        forwards=True)
    for home in homes:
        add(f"{home}.access-router", (
            Interface("eth0", bridges[home], None, hosts[home]),
            Interface("eth1", bridges[f"{home}-access"], None, ue_homes[home],
                      via_crowd(home))),
            forwards=True)
    for ue in topology.ues:
        add(ue.name, (Interface("eth0", bridges[f"{ue.home}-access"], ue.host,
                                hosts[ue.home]),))
    if crowd:
        crowd_home_names = sorted({u.home for u in crowd})
        add(CROWD, (*(Interface(f"eth{i}", bridges[f"{home}-access"], None, hosts[home])
                      for i, home in enumerate(crowd_home_names)),
                    Interface("radio0", bridges[plmn.name], None, served)),
            local=(*((c, f"eth{i}") for i, home in enumerate(crowd_home_names)
                     for c in crowd_homes[home]),
                   *((c, "radio0") for c in cidrs(plmn.ue_pool))))
    by_name = {n.qualified_name: n.host for s in topology.systems for n in s.nodes}
    for i, pair in enumerate(interconnect):
        for end, other in (pair, pair[::-1]):
            namespace = out[end]
            link = Interface(f"ic{i}", bridges[f"interconnection-{i}"], by_name[end],
                             (by_name[other],))
            out[end] = Namespace(namespace.node, namespace.name,
                                 (*namespace.interfaces, link), namespace.forwards)
    return Layout(prefix, f"{prefix}sw", bridges, out, bridges[plmn.name], served)


class NetnsError(RuntimeError):
    """The namespaces could not be built (not root, no iproute2, ...)."""


async def _ip(*args: str, batch: list[str] | None = None) -> None:
    ip = shutil.which("ip")
    if ip is None:
        raise NetnsError("iproute2's ip is not installed (Debian package iproute2)")
    process = await asyncio.create_subprocess_exec(
        ip, *args, stdin=asyncio.subprocess.PIPE if batch is not None else None,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, error = await process.communicate("\n".join(batch or []).encode() + b"\n"
                                         if batch is not None else None)
    if process.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {error.decode(errors='replace').strip()}")


async def _sysctl(namespace: str, *settings: str) -> None:
    await _ip("netns", "exec", namespace, "sysctl", "-q", "-w", *settings)


def check_privileges() -> None:
    """netns placement needs root: say which capability is missing, and the way out."""
    if os.geteuid() != 0:
        raise NetnsError("netns placement creates network namespaces, which needs "
                         "CAP_SYS_ADMIN and CAP_NET_ADMIN (run as root); "
                         "--placement proc runs the same node processes without them")
    if shutil.which("ip") is None:
        raise NetnsError("iproute2's ip is not installed (Debian package iproute2)")


class NetnsNetwork:
    """The run's namespaces, bridges and links, built from a :class:`Layout`."""

    def __init__(self, plan: Layout) -> None:
        self.layout = plan
        self._ports = 0
        self._created: list[str] = []

    def namespace(self, node: str) -> str:
        return self.layout.namespaces[node].name

    async def create(self) -> None:
        names = [self.layout.switch] + [ns.name for ns in self.layout.namespaces.values()]
        try:
            for name in names:
                await _ip("netns", "add", name)
                self._created.append(name)
            switch = [f"link add {bridge} type bridge" for bridge in self.layout.bridges.values()]
            switch += [f"link set {bridge} up" for bridge in self.layout.bridges.values()]
            for namespace in self.layout.namespaces.values():
                for interface in namespace.interfaces:
                    switch += self._port(interface.bridge, interface.name, namespace.name)
            await _ip("-n", self.layout.switch, "-batch", "-", batch=switch)
            for namespace in self.layout.namespaces.values():
                await self._configure(namespace)
        except BaseException:
            await self.delete()
            raise

    def _port(self, bridge: str, inside: str, namespace: str) -> list[str]:
        """A veth from the switch's ``bridge`` to ``inside`` in ``namespace``."""
        self._ports += 1
        port = f"p{self._ports}"
        return [f"link add {port} type veth peer name {inside} netns {namespace}",
                f"link set {port} master {bridge}", f"link set {port} up"]

    async def _configure(self, namespace: Namespace) -> None:
        batch = ["link set lo up"]
        tables: dict[str, int] = {}
        for index, interface in enumerate(namespace.interfaces):
            batch.append(f"link set {interface.name} up")
            if interface.address is not None:
                batch.append(f"addr add {interface.address}/32 dev {interface.name}")
            # Consecutive hosts (a pool) as one route each range: the same reach, a short
            # batch however big the pool.
            routes = [f"route replace {cidr} dev {interface.name}" for cidr in
                      cidrs(h for h in interface.routes if h != interface.address)]
            routes += [f"route replace {cidr} via {hop} dev {interface.name} onlink"
                       for cidr, hop in interface.ranges]
            batch += routes
            if namespace.local:  # the same routes in the interface's own table
                tables[interface.name] = 100 + index
                batch += [f"{route} table {100 + index}" for route in routes]
        for cidr, interface_name in namespace.local:
            batch += [f"route replace local {cidr} dev lo",
                      f"rule add from {cidr} lookup {tables[interface_name]} pref 100",
                      f"rule add from {cidr} unreachable pref 200"]
        await _ip("-n", namespace.name, "-batch", "-", batch=batch)
        settings = ["net.ipv6.conf.all.disable_ipv6=1"]  # the emulated networks are IPv4
        if namespace.forwards:
            # proxy_delay: the kernel holds proxy ARP answers up to 0.8 s by default.
            settings += ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.proxy_arp=1",
                         *(f"net.ipv4.neigh.{i.name}.proxy_delay=0"
                           for i in namespace.interfaces)]
        await _sysctl(namespace.name, *settings)

    async def move_to_access(self, ue: str, address: str) -> None:
        """The UE leaves home: its home interface goes down, and it gets an interface on
        the local PLMN's access network with ``address``, reaching the served system."""
        namespace = self.namespace(ue)
        await _ip("-n", self.layout.switch, "-batch", "-",
                  batch=self._port(self.layout.access, "radio0", namespace))
        batch = ["link set eth0 down", "link set radio0 up",
                 f"addr add {address}/32 dev radio0"]
        batch += [f"route replace {host}/32 dev radio0" for host in self.layout.served]
        await _ip("-n", namespace, "-batch", "-", batch=batch)

    async def move_home(self, ue: str) -> None:
        """The UE comes home: its radio interface goes (the veth pair with it) and its home
        interface comes back up, with its routes."""
        namespace = self.layout.namespaces[ue]
        home = namespace.interfaces[0]
        batch = ["link del radio0", f"link set {home.name} up"]
        batch += [f"route replace {host}/32 dev {home.name}"
                  for host in home.routes if host != home.address]
        await _ip("-n", namespace.name, "-batch", "-", batch=batch)

    @contextmanager
    def entered(self, node: str) -> Iterator[None]:
        """The calling thread in ``node``'s namespace, and back where it was at the end:
        the sockets it opens meanwhile are that namespace's (and stay so)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            enter_netns(self.namespace(node))
            try:
                yield
            finally:
                setns(own, "this thread's own namespace")
        finally:
            os.close(own)

    async def delete(self) -> None:
        """Remove every namespace of the run: their interfaces and bridges go with them."""
        while self._created:
            name = self._created.pop()
            try:
                await _ip("netns", "delete", name)
            except NetnsError:
                pass  # already gone


async def clean() -> list[str]:
    """Delete the namespaces, end the processes and remove the control-socket directories
    of runs whose process is gone (a run killed with SIGKILL).  Returns what it removed
    (processes as ``pid <title>``, directories as paths)."""
    removed = _end_orphans() + _remove_stale_sockets()
    ip = shutil.which("ip")
    if ip is None:
        return removed
    process = await asyncio.create_subprocess_exec(ip, "netns", "list",
                                                   stdout=asyncio.subprocess.PIPE)
    listing, _ = await process.communicate()
    for line in listing.decode().splitlines():
        name = line.split()[0] if line.split() else ""
        match = _RUN_NAME.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        await _ip("netns", "delete", name)
        removed.append(name)
    return removed


def _remove_stale_sockets() -> list[str]:
    """Remove the control-socket directories (the zygote's, ``up``'s) of runs that are
    gone: a run removes its own unless killed with SIGKILL."""
    removed = []
    root = Path(tempfile.gettempdir())
    for entry in root.iterdir():
        match = _RUN_NAME.match(entry.name)
        if match is None or not entry.is_dir() or _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(str(entry))
    return removed


def _end_orphans() -> list[str]:
    """SIGKILL every process named with the prefix of a run that is gone.  Parent-death
    signals normally leave none; this is for what they could not reach."""
    ended = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                title = cmdline.read(200).split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        match = _RUN_NAME.match(title)
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            os.kill(int(entry), signal.SIGKILL)
        except ProcessLookupError:
            continue
        ended.append(f"pid {entry} {title}")
    return ended


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

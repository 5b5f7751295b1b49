"""A topology, running in this process: the Python API and what ``run`` and ``up`` use.

::

    async with Network(load_topology(DEFAULT_TOPOLOGY)) as net:
        ue = net.ues["ue-alice"]
        tokens = await ue.login(net.topology.system("primary").issuer)
        print(net.state())                  # the same data `up` writes

Start-up, each step its own: the capture, the PKI and the out-of-band step
(:func:`~.provisioning.prepare_pki`), the plans (:func:`~.plan.plan_network`),
then the runner, which starts every node from its plan.  Stop is the
reverse, and the capture is published last, labelled from the step log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import os
import shutil
import time
import zlib
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import AsyncExitStack
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emulator.capture.kernel import KernelCapture
from emulator.capture.kernel import kernel_capture_available
from emulator.capture.merge import merge
from emulator.capture.pcapng import read_pcap
from emulator.capture.publish import publish
from emulator.capture.tap import TapWriter
from emulator.keystore import SystemFiles
from emulator.topology.model import Impairment
from emulator.topology.model import Topology
from emulator.topology.model import UeSpec
from nodes import NodePlan

from .netns import CROWD
from .netns import PREFIX
from .netns import NetnsNetwork
from .netns import check_privileges
from .netns import layout
from .netns import netns_host
from .placement import PLACEMENTS
from .placement import ProcessNode
from .placement import Zygote
from .placement import builder
from .plan import Faults
from .plan import pki_names
from .plan import plan_network
from .provisioning import prepare_pki
from .remote import CONVERTER
from .runner import Runner
from .runner import run_nodes
from .steps import StepLog

MAX_UE_FILES = 100
"""While the capture names at most this many UEs and pool addresses, each has its own
``nodes/<name>.pcapng``; beyond it, only the network's nodes do."""
_RUNS = itertools.count()
"""Numbers the runs of this process, for their namespaces' names."""
KERNEL_METHOD = "kernel capture (tcpdump on lo)"
TAP_METHOD = "application-level tap (SIP only; run as root for HTTPS)"
BRIDGES_METHOD = "kernel capture (tcpdump on each bridge of the namespaces)"
NO_TAP_METHOD = ("none: nodes in their own processes are captured by tcpdump, which needs "
                 "root (or use --placement inproc)")


def run_prefix() -> str:
    """A new run's prefix: names every namespace and node process of the run (``clean`` goes
    by it: the process id tells whether the run is gone)."""
    return f"{PREFIX}{os.getpid()}-{next(_RUNS)}-"


class Network:
    """A running topology.  ``run_dir`` receives the captures, the TLS key log and the PKI.

    ``transport`` forces every SIP link to one transport; ``capture`` False
    runs without any capture; ``placement`` is ``inproc`` (every node in this
    process) or ``proc`` (every infrastructure node its own OS process; see
    :mod:`.placement`); ``seed`` varies the random choices of impaired links.
    ``crowd`` are a load run's UEs (:mod:`.load`), driven from this process rather than
    run as nodes; in netns placement they share one namespace (:meth:`crowd_entered`).
    ``zygote`` is one the caller forked before its event loop started
    (:meth:`.Zygote.fork`, as the command line does), for ``proc`` and ``netns``: the
    network owns it from then on, and takes its prefix.  Without one it spawns its own,
    which takes about half a second more to start.
    """

    def __init__(self, topology: Topology, faults: Faults | None = None, *,
                 run_dir: Path | None = None, transport: str | None = None,
                 capture: bool = True, placement: str = "inproc", seed: int = 0,
                 crowd: tuple[UeSpec, ...] = (), zygote: Zygote | None = None) -> None:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}")
        if zygote is not None and placement == "inproc":
            raise ValueError("a zygote is for the proc and netns placements")
        topology = topology.with_transport(transport) if transport else topology
        # netns: the same topology, moved from 127.0.0.0/15 to 198.18.0.0/15.
        self.topology = topology.with_hosts(netns_host) if placement == "netns" else topology
        self.crowd = tuple(dataclasses.replace(ue, host=netns_host(ue.host)) for ue in crowd) \
            if placement == "netns" else crowd
        """The crowd's UEs, with their addresses in this placement."""
        self.faults = faults or Faults()
        self.seed = seed
        self.placement = placement
        self.prefix = zygote.prefix if zygote is not None else run_prefix()
        """Names every namespace and node process of the run (``clean`` goes by it)."""
        self._zygote = zygote
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = run_dir or Path("pcaps") / f"{stamp}-{self.topology.name}"
        self.plans: tuple[NodePlan, ...] = plan_network(self.topology, self.faults,
                                                        self.run_dir, seed=seed)
        self.steps = StepLog()
        self.names = self.topology.host_names()
        """Address -> node name, for the capture's name resolution."""
        self.runner = Runner()
        self.capture_method = "none"
        self.capture_files: list[Path] = []
        self.kernel_captures: list[KernelCapture] = []
        """tcpdump on lo, or one per bridge of a netns run."""
        self.netns: NetnsNetwork | None = None
        self._want_capture = capture
        self._tap: TapWriter | None = None
        self._stack = AsyncExitStack()
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Network:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ues(self) -> dict[str, Any]:
        """The UEs by name: the roles themselves in process, their proxies otherwise (the
        same procedures either way)."""
        return {name: node for name, node in self.runner.nodes.items()
                if node.plan.role == "ue"}

    @property
    def capture_file(self) -> Path | None:
        """The merged capture of the run (published when the network stops)."""
        return self.capture_files[0] if self.capture_files else None

    @property
    def keylog_file(self) -> Path:
        return self.run_dir / "tls-keys.log"

    async def wait_ready(self) -> None:
        await self._ready.wait()

    @property
    def kernel_capture(self) -> KernelCapture | None:
        """The first kernel capture, if any (all of them: ``kernel_captures``)."""
        return self.kernel_captures[0] if self.kernel_captures else None

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            zygote, self._zygote = self._zygote, None
            if zygote is not None:
                self._stack.push_async_callback(zygote.stop)  # after the nodes stop
            if self.placement == "netns":
                check_privileges()  # before anything starts: the error says what is missing
            if self.placement != "inproc":
                if zygote is None:
                    # First: its imports (half a second) overlap the namespaces, the capture
                    # and the PKI, which it does not need until the first fork.
                    zygote = Zygote.spawn(self.prefix)
                    self._stack.push_async_callback(zygote.stop)
                await zygote.start()

            async def network_then_capture() -> Callable[[str], str] | None:
                namespaces = await self._start_namespaces()
                await self._start_capture()
                return namespaces

            try:
                async with asyncio.TaskGroup() as group:  # a failure cancels the other
                    network = group.create_task(network_then_capture())
                    group.create_task(asyncio.to_thread(
                        prepare_pki, self.topology, self.run_dir,
                        mode=self.faults.provision_mode, now=dt.datetime.now(dt.UTC)))
            except BaseExceptionGroup as failed:  # the first error, as itself
                raise failed.exceptions[0] from None
            namespaces = network.result()
            self.runner = await self._stack.enter_async_context(
                run_nodes(self.plans, builder(self.placement, self._tap, zygote, self.run_dir,
                                              namespaces, self.prefix)))
        except BaseException:
            await self.stop()
            raise
        self._ready.set()

    async def _start_namespaces(self) -> Callable[[str], str] | None:
        if self.placement != "netns":
            return None
        check_privileges()
        interconnect = tuple(
            (primary, partner.node("mc-server").qualified_name)
            for partner in self.topology.systems for primary in {
                self.topology.system(p.primary).node("mc-server").qualified_name
                for p in partner.migration_profiles}
        ) if self.faults.partner_mode == "interconnection" else ()
        self.netns = NetnsNetwork(layout(self.topology, self.prefix, interconnect, self.crowd))
        await self.netns.create()
        return self.netns.namespace

    async def _start_capture(self) -> None:
        if not self._want_capture:
            return
        # The pool's addresses speak only with nodes, which the filter names: leaving them
        # out keeps the BPF program small however big the pool is.
        pool = set(self.topology.local_plmn.ue_pool)
        hosts = [h for h in self.names if h not in pool]
        if self.netns is not None:
            if shutil.which("tcpdump") is None:
                raise RuntimeError("tcpdump not found (Debian package tcpdump)")
            # A crowd of thousands, on two cores shared with four tcpdumps: 16 MB rings
            # dropped ~0.1 % of a 10,000-UE run's packets; 64 MB each, when there is one.
            buffer_kib = 65536 if self.crowd else 16384
            for network, bridge in self.netns.layout.bridges.items():
                capture = KernelCapture(self.run_dir / f"capture-{network}.pcap", hosts,
                                        interface=bridge, namespace=self.netns.layout.switch,
                                        buffer_kib=buffer_kib)
                self.kernel_captures.append(capture)
                await capture.start()
            self.capture_method = BRIDGES_METHOD
        elif kernel_capture_available():
            capture = KernelCapture(self.run_dir / "capture.pcap", hosts)
            self.kernel_captures.append(capture)
            await capture.start()
            self.capture_method = KERNEL_METHOD
        elif self.placement == "inproc":  # not root: SIP from the transports' taps (no HTTPS)
            self._tap = TapWriter(tapped_hosts=list(self.names))
            self.capture_method = TAP_METHOD
        else:
            self.capture_method = NO_TAP_METHOD

    async def stop(self) -> None:
        """Stop every node, stop the capture and publish it, even when cancelled meanwhile.

        A Ctrl-C that lands during the stop must not leave tcpdump running or the
        capture unpublished: the clean-up runs to its end, then the cancellation
        goes on.
        """
        cleanup = asyncio.create_task(self._stop(), name=f"stop {self.run_dir.name}")
        try:
            await asyncio.shield(cleanup)
        except asyncio.CancelledError:
            await cleanup
            raise

    def name_address(self, address: str, node: str) -> None:
        """Show ``address`` as ``node`` in the capture (a UE's address in the local PLMN,
        named when it got it: it may have detached before the run ends)."""
        self.names[address] = node

    async def _stop(self) -> None:
        # Attached UEs appear in the capture under their own names, not the pool's.
        for name, state in self.runner.state().items():
            if state.get("visited_address"):
                self.names[state["visited_address"]] = name
        try:
            await self._stack.aclose()
        finally:
            for capture in self.kernel_captures:
                await capture.stop()
            if self.netns is not None:
                await self.netns.delete()
            self._publish()

    def _publish(self) -> None:
        """Write capture.pcapng and nodes/*.pcapng (names, step comments, TLS secrets)."""
        if self.capture_files:
            return
        raws = [c.path for c in self.kernel_captures if c.path.exists()]
        if raws:
            packets = merge(read_pcap(raw) for raw in raws)
        elif self._tap is not None:
            packets = self._tap.close()
        else:
            return
        # A load run's thousands of UEs (and pool addresses) each in a file of its own
        # would help nobody: capture.pcapng has them (filter on ip.addr), nodes/ has the
        # network's nodes.
        self.capture_files = publish(self.run_dir, packets, names=self.names,
                                     label=self.steps.label, keylog=self.keylog_file,
                                     method=self.capture_method,
                                     nodes={plan.name for plan in self.plans
                                            if plan.role != "ue"},
                                     most_others=MAX_UE_FILES)
        for raw in raws:
            raw.unlink()  # capture.pcapng holds every packet of them, and more

    async def radio_attach(self, ue: str, *, allocate: bool = True) -> str | None:
        """In netns placement, what the radio does before a UE attaches to the local PLMN:
        the gateway gives it its address, and its namespace moves from the home access
        network to the local PLMN's.  Returns that address (None in other placements,
        where the UE simply sends from its home address).

        ``allocate`` False plugs the UE in with a pool address the gateway has not
        handed out (its last): a device on the access network that never attached.
        A UE of the crowd needs no move: its namespace holds the whole pool.
        """
        if self.netns is None:
            return None
        if self.crowd and ue in self.netns.layout.namespaces:
            raise ValueError(f"{ue} cannot attach: in a load run in netns placement the "
                             "pool's addresses are the crowd's")
        if allocate:
            gateway = self.runner.nodes[self.topology.local_plmn.gateway.qualified_name]
            assert isinstance(gateway, ProcessNode)
            address = str((await gateway.call("allocate", {"ue": ue}))["result"])
        else:
            address = self.topology.local_plmn.ue_pool[-1]
        if not self.crowd:
            await self.netns.move_to_access(ue, address)
        return address

    @contextmanager
    def crowd_entered(self) -> Iterator[None]:
        """In netns placement, the calling thread in the crowd's namespace until the end:
        every socket it opens meanwhile (a load UE's) is there, on the home access
        network and the local PLMN's.  Elsewhere the crowd is on loopback: nothing to do.
        Nothing else of the run may open a socket on this thread meanwhile."""
        if self.netns is None or not self.crowd:
            yield
            return
        with self.netns.entered(CROWD):
            yield

    async def radio_detach(self, ue: str) -> None:
        """In netns placement, the UE's radio leaves the local PLMN and its home access comes
        back (the reverse of :meth:`radio_attach`); nothing to do in other placements."""
        if self.netns is not None:
            await self.netns.move_home(ue)

    async def impair(self, sender: str, peer: str, impairment: Impairment | None) -> None:
        """Change what the link from ``sender`` to ``peer`` does to what ``sender`` sends, from
        now on (None: nothing), whatever the placement; the run's seed varies the choices."""
        node = self.runner.nodes.get(sender)
        if node is None or peer not in self.runner.nodes:
            raise KeyError(f"no link {sender} - {peer}: no node "
                           f"{sender if node is None else peer}")
        if node.plan.role in ("idms", "cms"):
            raise ValueError(f"{sender} sends no SIP: impairments are SIP's (HTTPS goes over "
                             "the kernel's TCP)")
        visited = self.runner.state()[peer].get("visited_address")
        hosts = [*self._hosts(peer), *([visited] if visited else [])]
        if impairment is not None:
            seed = zlib.crc32(f"{self.seed}|{impairment.seed}|{sender}>{peer}".encode())
            impairment = dataclasses.replace(impairment, seed=seed)
        if isinstance(node, ProcessNode):
            await node.call("impair", {"peer": peer, "hosts": hosts,
                                       "impairment": CONVERTER.unstructure(impairment)})
        else:
            node.impair(peer, hosts, impairment)  # type: ignore[attr-defined]

    async def cut(self, a: str, b: str) -> None:
        """Cut the link between ``a`` and ``b``: nothing either sends the other arrives,
        until :meth:`restore`.  A SIP link over UDP only: a stream (TCP, TLS) would have to
        hold its bytes, which a transport that drops cannot show."""
        transport = self.topology.link_transport(a, b)
        if transport is None:
            raise KeyError(f"no link {a} - {b} in the topology")
        if transport != "udp":
            raise ValueError(f"link {a} - {b} is {transport.upper()}: only a datagram link "
                             "can be cut (its packets are dropped where they are sent)")
        for sender, peer in ((a, b), (b, a)):
            await self.impair(sender, peer, Impairment(loss=1.0))

    async def restore(self, a: str, b: str) -> None:
        """Give the link between ``a`` and ``b`` back what the topology planned for it."""
        link = next((item for item in self.topology.links if {item.a, item.b} == {a, b}), None)
        if link is None:
            raise KeyError(f"no link {a} - {b} in the topology")
        for sender, peer in ((a, b), (b, a)):
            await self.impair(sender, peer, link.impairment_from(sender))

    async def refresh(self) -> dict[str, dict[str, Any]]:
        """Every node's state as it is now (a node in its own process is asked; its
        ``state()`` is otherwise what it said at its last answer)."""
        await asyncio.gather(*(node.call("state", {}) for node in self.runner.nodes.values()
                               if isinstance(node, ProcessNode)))
        return self.runner.state()

    def process_ids(self, *, captures: bool = True) -> dict[str, int]:
        """The processes the network runs, by name, besides this one: each infrastructure
        node's (``proc``, ``netns``; the topology's own UEs are not counted) and, with
        ``captures``, each tcpdump's (``capture``, or ``capture <namespace>`` per bridge).
        Empty in ``inproc`` without a kernel capture: everything runs here."""
        infrastructure = {plan.name for plan in self.plans if plan.role != "ue"}
        pids = {name: state["pid"] for name, state in self.runner.state().items()
                if name in infrastructure and state.get("pid") is not None}
        for capture in self.kernel_captures if captures else ():
            if capture.pid is not None:
                name = f"capture {capture.namespace}" if capture.namespace else "capture"
                pids[name] = capture.pid
        return pids

    async def kill(self, name: str) -> None:
        """SIGKILL node ``name`` (in process: stop it); it stays down until :meth:`revive`.
        Nodes keep their durable state in the run directory (``state/``), as real servers
        keep theirs in a database, so a revived node has it back."""
        await self.runner.kill(name)

    async def revive(self, name: str) -> None:
        """Start a killed node again from its plan, on the same address and ports."""
        await self.runner.start(name)

    @property
    def impairment_method(self) -> str:
        """How links are impaired, as the run reports it."""
        netem = "the kernel has netem, unused" if os.path.exists("/sys/module/sch_netem") \
            else "this kernel has no netem qdisc"
        return f"in the sending node's transport ({netem}: one mechanism in every placement)"

    def _hosts(self, name: str) -> list[str]:
        return [host for host, named in self.topology.host_names().items() if named == name]

    # -- state for outside clients ---------------------------------------------
    def state(self) -> dict[str, Any]:
        """What `up` writes for outside clients (README: state file)."""
        nodes: dict[str, Any] = {}
        states = self.runner.state()
        for plan in self.plans:
            if plan.role == "ue" and self.netns is None:
                continue  # on loopback an outside client is a UE by itself
            https = plan.listener("https")
            nodes[plan.name] = {
                "role": plan.role, "system": plan.system,
                "sip": [{"transport": item.protocol, "host": item.host, "port": item.port}
                        for item in plan.sip_listeners],
                "http": f"https://{https.host}:{https.port}" if https else None}
            for key in ("pid", "namespace"):
                if states.get(plan.name, {}).get(key) is not None:
                    nodes[plan.name][key] = states[plan.name][key]
        users = {}
        identities: dict[tuple[str, str], str] = {}  # the first partner's, as listed
        for partner in self.topology.systems:
            for profile in partner.migration_profiles:
                identities.setdefault((profile.primary, profile.user), profile.partner_identity)
        for system in self.topology.systems:
            for user in system.users:
                identity = identities.get((system.name, user.name))
                users[user.name] = {"username": user.name, "password": user.password,
                                    "system": system.name, "mcptt_id": user.mcptt_id,
                                    "partner_identity": identity}
        pki = self.run_dir / "pki"
        return {
            "nodes": nodes, "users": users,
            "oidc_client": {"client_id": self.topology.oidc_client_id,
                            "redirect_uri": self.topology.oidc_redirect_uri},
            "ca_certs": {name: str(SystemFiles(pki, name).ca_certificate.resolve())
                         for name in pki_names(self.topology)},
            "pcap_dir": str(self.run_dir.resolve()),
        }

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
import datetime as dt
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from emulator.capture.kernel import KernelCapture
from emulator.capture.kernel import kernel_capture_available
from emulator.capture.pcapng import read_pcap
from emulator.capture.publish import publish
from emulator.capture.tap import TapWriter
from emulator.keystore import SystemFiles
from emulator.topology.model import Topology
from nodes import NodePlan

from .placement import PLACEMENTS
from .placement import Zygote
from .placement import builder
from .plan import Faults
from .plan import pki_names
from .plan import plan_network
from .provisioning import prepare_pki
from .runner import Runner
from .runner import run_nodes
from .steps import StepLog

KERNEL_METHOD = "kernel capture (tcpdump on lo)"
TAP_METHOD = "application-level tap (SIP only; run as root for HTTPS)"
NO_TAP_METHOD = ("none: nodes in their own processes are captured by tcpdump, which needs "
                 "root (or use --placement inproc)")


class Network:
    """A running topology.  ``run_dir`` receives the captures, the TLS key log and the PKI.

    ``transport`` forces every SIP link to one transport; ``capture`` False
    runs without any capture; ``placement`` is ``inproc`` (every node in this
    process) or ``proc`` (every infrastructure node its own OS process; see
    :mod:`.placement`); ``seed`` varies the random choices of impaired links.
    """

    def __init__(self, topology: Topology, faults: Faults | None = None, *,
                 run_dir: Path | None = None, transport: str | None = None,
                 capture: bool = True, placement: str = "inproc", seed: int = 0) -> None:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}")
        self.topology = topology.with_transport(transport) if transport else topology
        self.faults = faults or Faults()
        self.placement = placement
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
        self.kernel_capture: KernelCapture | None = None
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

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._start_capture()
            prepare_pki(self.topology, self.run_dir, mode=self.faults.provision_mode,
                        now=dt.datetime.now(dt.UTC))
            zygote = None
            if self.placement == "proc":
                zygote = Zygote(self.run_dir)
                await zygote.start()
                self._stack.push_async_callback(zygote.stop)  # after the nodes stop
            self.runner = await self._stack.enter_async_context(
                run_nodes(self.plans, builder(self.placement, self._tap, zygote)))
        except BaseException:
            await self.stop()
            raise
        self._ready.set()

    async def _start_capture(self) -> None:
        if not self._want_capture:
            return
        if kernel_capture_available():
            self.kernel_capture = KernelCapture(self.run_dir / "capture.pcap", list(self.names))
            await self.kernel_capture.start()
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

    async def _stop(self) -> None:
        # Attached UEs appear in the capture under their own names, not the pool's.
        for name, state in self.runner.state().items():
            if state.get("visited_address"):
                self.names[state["visited_address"]] = name
        try:
            await self._stack.aclose()
        finally:
            if self.kernel_capture is not None:
                await self.kernel_capture.stop()
            self._publish()

    def _publish(self) -> None:
        """Write capture.pcapng and nodes/*.pcapng (names, step comments, TLS secrets)."""
        if self.capture_files:
            return
        raw = self.kernel_capture.path if self.kernel_capture is not None else None
        if raw is not None and raw.exists():
            packets = read_pcap(raw)
        elif self._tap is not None:
            packets = self._tap.close()
        else:
            return
        self.capture_files = publish(self.run_dir, packets, names=self.names,
                                     label=self.steps.label, keylog=self.keylog_file,
                                     method=self.capture_method)
        if raw is not None and raw.exists():
            raw.unlink()  # capture.pcapng holds every packet of it, and more

    # -- state for outside clients ---------------------------------------------
    def state(self) -> dict[str, Any]:
        """What `up` writes for outside clients (README: state file)."""
        nodes: dict[str, Any] = {}
        states = self.runner.state()
        for plan in self.plans:
            if plan.role == "ue":
                continue
            https = plan.listener("https")
            nodes[plan.name] = {
                "role": plan.role, "system": plan.system,
                "sip": [{"transport": item.protocol, "host": item.host, "port": item.port}
                        for item in plan.sip_listeners],
                "http": f"https://{https.host}:{https.port}" if https else None}
            pid = states.get(plan.name, {}).get("pid")
            if pid is not None:
                nodes[plan.name]["pid"] = pid
        users = {}
        for system in self.topology.systems:
            for user in system.users:
                identity = next((p.partner_identity for s in self.topology.systems
                                 for p in s.migration_profiles
                                 if p.user == user.name and p.primary == system.name), None)
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

"""One run of a topology: start it, drive a scenario or serve, report.

Used by ``run_topology.py`` and by the pytest plugin.  A run directory under
``pcaps/`` holds the capture, the TLS key log and the PKI of the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from functools import cached_property
from pathlib import Path

from emulator.capture.kernel import kernel_capture_available
from emulator.capture.ladder import LadderError
from emulator.capture.ladder import extract
from emulator.capture.ladder import render_text
from emulator.capture.tshark import tshark_command
from emulator.process import settle
from emulator.process import settled
from emulator.topology.bundled import DEFAULT_TOPOLOGY
from emulator.topology.bundled import topology_path
from emulator.topology.loader import load_topology
from emulator.topology.model import Topology
from emulator.topology.population import Population
from emulator.topology.population import populate

from .control import control_socket
from .driver import ScenarioDriver
from .driver import ScenarioResult
from .driver import Verdict
from .load import LoadOptions
from .load import LoadResult
from .load import UeRecord
from .load import run_load
from .network import Network
from .network import run_prefix
from .placement import Zygote
from .scenarios import Scenario


@dataclass
class Report:
    """What a scenario run produced."""

    result: ScenarioResult
    run_dir: Path
    capture: Path | None
    capture_summary: str
    seconds: float
    verdicts: list[Verdict] = field(default_factory=list)
    migration_seconds: float | None = None
    """From the attach to the partner's answer to the REGISTER (None if not reached)."""
    impairments: str | None = None
    """How the topology's impaired links were impaired (None: it has none)."""

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(v.passed for v in self.verdicts)

    @cached_property
    def ladder(self) -> str:
        """The run's ladder, read back from its capture (never from memory)."""
        if self.capture is None:
            return "(no ladder: the run has no capture)"
        try:
            return render_text(extract(self.capture))
        except LadderError as exc:
            return f"(no ladder: {exc})"

    def text(self, *, ladder: bool = True) -> str:
        scenario = self.result.scenario
        lines = [f"=== scenario {scenario.name}: {scenario.description}", ""]
        if ladder:
            lines += [self.ladder, ""]
        width = max(len(v.step) for v in self.verdicts)
        for verdict in self.verdicts:
            mark = "PASS" if verdict.passed else "FAIL"
            lines.append(f"{mark}  {verdict.step:<{width}}  {verdict.detail}")
            if verdict.clause:
                lines.append(f"      {'':<{width}}  ({verdict.clause})")
        if self.migration_seconds is not None:
            lines += ["", f"migration (attach -> partner 200 OK): "
                          f"{self.migration_seconds * 1000:.1f} ms"]
        if self.impairments is not None:
            lines += [f"link impairments: {self.impairments}"]
        lines += ["", f"captures: {self.run_dir}  ({self.capture_summary})",
                  f"{'PASSED' if self.passed else 'FAILED'} in {self.seconds:.2f} s", ""]
        return "\n".join(lines)


def run_id(scenario: str) -> str:
    """A run directory's name: when, which process, which scenario."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{scenario}"


BAD_FRAMES = "_ws.malformed || (_ws.expert.severity >= warning && !tcp.flags.reset)"
"""What Wireshark must not find.  A reset is what the kernel sends for a killed process's
connections (partner-restart): true to the run, not a flaw of the capture."""


def tshark_verdict(captures: list[Path]) -> Verdict | None:
    """Wireshark reads every capture file: tshark dissects the merged one (``captures[0]``)
    with no malformed frame and no expert warning, and capinfos (Wireshark's own file
    reader, without the dissectors) reads each per-node file to its end.

    A per-node file holds every packet of each flow its node is in, copied from the merged
    file, with its own sessions' TLS secrets: its dissection is the merged file's, so one
    tshark does for all (each spends ~0.4 s of CPU starting up, a dozen per run).
    tests/capture/test_run_captures.py dissects each file on its own, to hold us to that."""
    capinfos = shutil.which("capinfos")
    if shutil.which("tshark") is None or capinfos is None or not captures:
        return None
    merged, *others = captures
    dissect = subprocess.Popen(tshark_command(merged, "-Y", BAD_FRAMES), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    # -c: the packet count, which capinfos reaches by reading every block of every file.
    read = subprocess.Popen([capinfos, "-c", *map(str, others)], text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) if others else None
    failures = []
    output, _ = dissect.communicate(timeout=120)
    bad = [line.strip() for line in output.splitlines() if line.strip()]
    if dissect.returncode != 0 or bad:
        failures.append(f"{merged.name}: exit {dissect.returncode}, {len(bad)} bad frames"
                        + (f" ({bad[0]})" if bad else ""))
    if read is not None:
        _, errors = read.communicate(timeout=120)
        if read.returncode != 0:
            failures.append(f"capinfos: exit {read.returncode} ({errors.strip()[:200]})")
    detail = "; ".join(failures) if failures else \
        (f"{merged.name}: exit 0, no malformed frame or expert warning; "
         f"{len(others)} per-node files read to their end")
    return Verdict("tshark", "Wireshark opens the captures cleanly", "", not failures, detail)


def topology_for(scenario: Scenario, topology: Topology) -> Topology:
    """The topology ``scenario`` runs on: one that needs more than the default topology
    brings its own; any other topology is taken as given."""
    if scenario.topology is not None and topology.source == str(DEFAULT_TOPOLOGY):
        return load_topology(topology_path(scenario.topology))
    return topology


async def run_scenario(topology: Topology, scenario: Scenario, *, transport: str | None = None,
                       pcap_root: Path = Path("pcaps"), placement: str = "inproc",
                       seed: int = 0, zygote: Zygote | None = None) -> Report:
    """Start ``topology`` with ``scenario``'s faults, run it, stop, and judge the capture
    (with ``zygote``, see :class:`.Network`)."""
    started = time.monotonic()
    topology = topology_for(scenario, topology)
    run_dir = pcap_root / run_id(scenario.name)
    network = Network(topology, scenario.faults, run_dir=run_dir, transport=transport,
                      placement=placement, seed=seed, zygote=zygote)
    async with network:
        driver = ScenarioDriver(network, scenario)
        result = await driver.run()
    verdicts = list(result.verdicts)
    verdicts += driver.capture_verdicts()
    wireshark = tshark_verdict(network.capture_files)
    if wireshark is not None:
        verdicts.append(wireshark)
    summaries = "; ".join(c.summary for c in network.kernel_captures)
    summary = f"{network.capture_method}: {summaries}" if summaries else network.capture_method
    migration = network.steps.span("attach:", "partner-register:") if \
        {"attach", "partner-register"} <= {v.step for v in result.verdicts if v.passed} else None
    impaired = any(link.impair_ab or link.impair_ba for link in network.topology.links)
    return Report(result, run_dir, network.capture_file, summary,
                  time.monotonic() - started, verdicts, migration,
                  network.impairment_method if impaired else None)


def default_placement(capture: bool = True) -> str:
    """Where ``up`` and ``load`` run their nodes unless told (``auto``): each in its own
    process (``proc``), so that the nodes share both cores (the migration path was clean at
    2,000-3,500 REGISTER/s there, at 2,000-2,250 on ``inproc``'s one core, then full); but
    ``inproc`` when the capture is wanted and only its transports' taps can give one (no
    root for tcpdump).  ``up`` always captures."""
    return "proc" if not capture or kernel_capture_available() else "inproc"


def resolve_placement(placement: str, capture: bool = True) -> str:
    """``placement`` as given, ``auto`` resolved by :func:`default_placement`."""
    return default_placement(capture) if placement == "auto" else placement


def prefork(placement: str) -> Zygote | None:
    """The zygote of a ``proc`` or ``netns`` run, forked now: for the command line, before
    it starts its event loop.  None for ``inproc``, and where a thread runs (one an earlier
    run left): the network then spawns its zygote, which only takes longer."""
    if placement == "inproc":
        return None
    try:
        return Zygote.fork(run_prefix())
    except RuntimeError:
        return None


async def serve(topology: Topology, state_file: Path, *, transport: str | None = None,
                pcap_root: Path = Path("pcaps"), placement: str = "inproc",
                seed: int = 0, zygote: Zygote | None = None) -> int:
    """``up``: start the topology, write the state file, run until SIGINT/SIGTERM (with
    ``zygote``, see :class:`.Network`)."""
    run_dir = pcap_root / run_id("up")
    network = Network(topology, run_dir=run_dir, transport=transport, placement=placement,
                      seed=seed, zygote=zygote)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    written = False
    try:
        async with network, control_socket(network) as control:
            await network.wait_ready()
            # Written atomically once ready: a stale file from an earlier run is replaced,
            # never read, and a run that failed to start leaves another run's file alone.
            temporary = state_file.with_suffix(state_file.suffix + f".{os.getpid()}.tmp")
            state = {**network.state(), "control": control}
            temporary.write_text(json.dumps(state, indent=2) + "\n")
            temporary.replace(state_file)
            written = True
            print(f"ready: state in {state_file}, captures in {run_dir}, nodes placed "
                  f"{placement}", flush=True)
            settle()  # inproc, the nodes are this process's heap
            await stop.wait()
            print("stopping", flush=True)
    finally:
        if written:
            state_file.unlink(missing_ok=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print(f"captures finalised in {run_dir}", flush=True)
    return 0


async def load(topology: Topology, options: LoadOptions, *, transport: str | None = None,
               pcap_root: Path = Path("pcaps"), placement: str = "inproc",
               capture: bool = True, progress: Callable[[str, UeRecord], None] | None = None,
               zygote: Zygote | None = None,
               population: Population | None = None) -> tuple[LoadResult, Path, list[Path]]:
    """``load``: ``options.ues`` users copied from the topology's migrating one migrate at
    ``options.rate``; the result, the run directory and the report files written there.
    ``population``: those users, already made from ``topology`` (the CLI checks them
    before it shows anything)."""
    try:
        if population is None:
            population = populate(topology, options.ues)
    except BaseException:
        if zygote is not None:  # no network to hand it to
            await zygote.stop()
        raise
    run_dir = pcap_root / run_id("load")
    network = Network(population.topology, run_dir=run_dir, transport=transport,
                      placement=placement, capture=capture, crowd=population.ues,
                      zygote=zygote)
    async with network:
        await network.wait_ready()
        with settled():  # inproc, the nodes' start-up is out of the load's collections
            result = await run_load(network, population, options, progress)
    from .loadreport import write_report  # here: rich and matplotlib, for load runs only

    return result, run_dir, write_report(result, run_dir)

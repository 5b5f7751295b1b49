"""Outside programs as nodes: a real Kamailio as the partner's edge proxy, and what an exec
node does when its program fails.  Judged from the capture and the process table."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from emulator.capture import extract
from emulator.orchestration import SCENARIOS
from emulator.orchestration import Network
from emulator.orchestration import run_scenario
from emulator.orchestration.placement import NodeDied
from emulator.topology import ExecSpec
from emulator.topology import Topology
from emulator.topology import load_topology
from emulator.topology import topology_path
from tests.orchestration.test_placement import held
from tests.orchestration.test_placement import still_running
from tests.support.up import running_up

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture(scope="module")
def edge() -> Topology:
    if shutil.which("kamailio") is None:
        pytest.fail("kamailio not found: the kamailio-edge topology needs the Debian package "
                    "kamailio (scripts/install-system-packages.sh installs it)")
    return load_topology(topology_path("kamailio-edge"))


def kamailios(owner: int | None = None) -> list[str]:
    """The Kamailio processes of runs supervised by process ``owner`` (default: this one),
    known by the run prefix they carry as argv[0]; another run's are not ours to judge."""
    prefix = f"mcx-{owner or os.getpid()}-".encode()
    found = []
    for pid in subprocess.run(["pgrep", "-x", "kamailio"], capture_output=True,
                              text=True).stdout.split():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(prefix):
                found.append(pid)
        except OSError:
            continue  # ended meanwhile
    return found


def record_routes(capture: Path) -> list[str]:
    """Every Record-Route value in the capture, as tshark reads it."""
    done = subprocess.run(["tshark", "-r", str(capture), "-Y", "sip.Record-Route",
                           "-T", "fields", "-e", "sip.Record-Route"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [value for line in done.stdout.splitlines() for value in line.split(",")]


@pytest.mark.parametrize("placement", ["proc", pytest.param("netns", marks=root_only)])
async def test_the_seed_passes_through_a_kamailio_edge_proxy(edge: Topology, tmp_path: Path,
                                                             placement: str) -> None:
    report = await run_scenario(edge, SCENARIOS["default"], pcap_root=tmp_path,
                                placement=placement)
    assert report.passed, report.text(ladder=False)
    assert report.capture is not None
    edge_host = "198.18.20.6" if placement == "netns" else "127.0.20.6"
    assert any(edge_host in value for value in record_routes(report.capture))
    hops = {(m.source, m.destination, m.label) for m in extract(report.capture)}
    # Through the edge both ways: requests in, answers out, the dialog's BYE by its route set.
    assert ("visited-plmn.gateway", "partner.edge-proxy", "REGISTER") in hops
    assert ("partner.edge-proxy", "partner.sip-core", "REGISTER") in hops
    assert ("partner.edge-proxy", "visited-plmn.gateway", "200 (INVITE)") in hops
    assert ("partner.edge-proxy", "partner.sip-core", "BYE") in hops
    assert ("visited-plmn.gateway", "partner.sip-core", "REGISTER") not in hops
    assert kamailios() == []


async def test_an_outside_program_carries_the_run_prefix(edge: Topology, tmp_path: Path) -> None:
    async with Network(edge, run_dir=tmp_path / "run") as network:
        pid = network.runner.nodes["partner.edge-proxy"].state()["pid"]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[0].decode() == f"{network.prefix}partner.edge-proxy"
        assert argv[1:3] == [b"-f", str(topology_path("kamailio-edge").parent /
                                         "kamailio-edge.cfg").encode()]
    assert kamailios() == []


def test_a_killed_up_leaves_no_kamailio_behind(edge: Topology, tmp_path: Path) -> None:
    with running_up(tmp_path, "kamailio-edge", "--placement", "proc") as (up, state, _):
        running = kamailios(up.pid)  # the main process and the children it forked
        assert str(state["nodes"]["partner.edge-proxy"]["pid"]) in running
        assert len(running) > 1
        watched = held(int(pid) for pid in running)
        up.kill()
        up.wait()
    assert still_running(watched, within=20) == []


async def test_an_outside_program_that_fails_names_itself_and_its_log(
        edge: Topology, tmp_path: Path) -> None:
    node = edge.system("partner").node("edge-proxy")
    assert node.exec is not None
    broken = replace(node.exec, command=(*node.exec.command, "--no-such-option"))
    topology = _with_exec(edge, broken)
    network = Network(topology, run_dir=tmp_path / "run", placement="proc")
    with pytest.raises(NodeDied, match=r"partner\.edge-proxy \(kamailio\) exited with .* "
                                       r"before it served.*logs/partner\.edge-proxy\.log"):
        await network.start()
    missing = _with_exec(edge, replace(node.exec, command=("no-such-program-here",)))
    with pytest.raises(NodeDied, match="cannot run 'no-such-program-here'"):
        await Network(missing, run_dir=tmp_path / "run2").start()
    assert kamailios() == []


def _with_exec(topology: Topology, spec: ExecSpec) -> Topology:
    partner = topology.system("partner")
    nodes = tuple(replace(n, exec=spec) if n.name == "edge-proxy" else n
                  for n in partner.nodes)
    systems = tuple(replace(s, nodes=nodes) if s.name == "partner" else s
                    for s in topology.systems)
    return replace(topology, systems=systems)


_BENCHMARK_KAMAILIO = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
import migration_path

async def main():
    process = await migration_path.kamailio(Path(sys.argv[1]), "mcx.partner.example")
    print(process.pid, flush=True)
    await asyncio.sleep(3600)  # killed before

asyncio.run(main())
"""


def test_a_killed_benchmark_leaves_no_kamailio_behind(edge: Topology, tmp_path: Path) -> None:
    """benchmarks/migration_path.py's reference registrar ends with the benchmark, however
    the benchmark ends: a SIGKILL (or SIGTERM) runs none of its clean-up."""
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen([sys.executable, "-c", _BENCHMARK_KAMAILIO, str(tmp_path)],
                          cwd=root, stdout=subprocess.PIPE, text=True) as bench:
        try:
            assert bench.stdout is not None
            watched = held([int(bench.stdout.readline())])
            assert watched, "kamailio ended before the benchmark did"
        finally:
            bench.kill()
    left = still_running(watched, within=20)
    for pid in left:
        os.kill(pid, signal.SIGTERM)  # running a moment ago, ours: not left behind
    assert left == [], "kamailio outlived the benchmark that started it"

"""netns placement: every node its own process and network namespace.

The layout is checked as data; the rest from outside the emulator: real connect attempts
from inside the namespaces, `ip netns list` and `ip -o link`, and the capture.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.capture import extract
from emulator.capture import first_difference
from emulator.orchestration import SCENARIOS
from emulator.orchestration import Network
from emulator.orchestration import run_scenario
from emulator.orchestration.netns import CROWD
from emulator.orchestration.netns import NetnsError
from emulator.orchestration.netns import check_privileges
from emulator.orchestration.netns import layout
from emulator.orchestration.netns import netns_host
from emulator.orchestration.placement import NodeDied
from emulator.topology import DEFAULT_TOPOLOGY
from emulator.topology import Topology
from emulator.topology import load_topology
from emulator.topology.population import populate
from tests.support.scenarios import NETNS_SENSITIVE
from tests.support.up import running_up

ROOT = Path(__file__).resolve().parent.parent.parent
REFERENCE = ROOT / "pcaps" / "reference" / "default.pcapng"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

PROBE = """
import errno, json, socket, sys
results = {}
source = sys.argv[2] if len(sys.argv) > 2 else None
for host, port in json.loads(sys.argv[1]):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        s.settimeout(2)
        try:
            if source:
                s.bind((source, 0))
            s.connect((host, port))
            if kind == socket.SOCK_DGRAM:
                s.send(b"\\r\\n\\r\\n")
            ok = "ok"
        except TimeoutError:
            ok = "timeout"
        except OSError as exc:
            ok = errno.errorcode.get(exc.errno or 0, str(exc))
        finally:
            s.close()
        results[f"{'tcp' if kind == socket.SOCK_STREAM else 'udp'}:{host}:{port}"] = ok
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(DEFAULT_TOPOLOGY)


def namespaces() -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith("mcx-")]


def reach(namespace: str, targets: list[tuple[str, int]],
          source: str = "") -> dict[str, bool]:
    """Real connect attempts from inside ``namespace`` (from ``source`` when given): which
    (host, port) answer."""
    return {key: result == "ok" for key, result in attempts(namespace, targets, source).items()}


def attempts(namespace: str, targets: list[tuple[str, int]], source: str = "") -> dict[str, str]:
    """As :func:`reach`, with how each attempt ended: ``ok``, ``timeout`` or the errno."""
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", PROBE,
                           json.dumps(targets), source], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_the_layout_joins_no_primary_node_to_any_partner_node(topology: Topology) -> None:
    mapped = topology.with_hosts(netns_host)
    plan = layout(mapped, "mcx-test-")
    primary = {n.host for n in mapped.system("primary").nodes}
    bridges = {}
    at_home = {ue.name for ue in mapped.ues if ue.home == "primary"}  # alice, and bob
    for name, namespace in plan.namespaces.items():
        for interface in namespace.interfaces:
            bridges.setdefault(interface.bridge, set()).add(name)
            if not name.startswith("primary") and name not in at_home:
                assert not primary & set(interface.routes), (name, interface)
    assert not any({n.split(".")[0] for n in members} >= {"primary", "partner"}
                   for members in bridges.values())
    gateway = plan.namespaces["visited-plmn.gateway"]
    assert gateway.forwards and len(gateway.interfaces) == 2
    assert netns_host("127.0.20.2") == "198.18.20.2"
    assert netns_host("127.1.2.3") == "198.19.2.3"
    with pytest.raises(ValueError, match=r"198\.18\.0\.0/15"):
        netns_host("127.5.0.1")


def test_a_crowd_shares_one_namespace_and_the_neighbour_table_holds_a_few_entries(
        topology: Topology) -> None:
    """A load run's UEs: one namespace on the primary's access network and the local
    PLMN's, holding their homes and the pool as ranges; every node reaches them through one
    neighbour per range (one per UE overflowed the kernel's table at 100 UEs/s)."""
    population = populate(topology, 1000)
    crowd = tuple(dataclasses.replace(ue, host=netns_host(ue.host)) for ue in population.ues)
    plan = layout(population.topology.with_hosts(netns_host), "mcx-test-", crowd=crowd)
    namespace = plan.namespaces[CROWD]
    assert [(i.name, i.bridge) for i in namespace.interfaces] == [
        ("eth0", plan.bridges["primary-access"]), ("radio0", plan.access)]
    # Homes 198.19.0.1..198.19.3.232, pool 198.19.128.1..: a handful of ranges each.
    assert ("198.19.0.1/32", "eth0") in namespace.local
    assert ("198.19.128.1/32", "radio0") in namespace.local
    assert len(namespace.local) < 30
    mapped = population.topology.with_hosts(netns_host)
    eth0, radio0 = namespace.interfaces
    assert set(eth0.routes) == {n.host for n in mapped.system("primary").nodes}
    assert set(radio0.routes) == {n.host for n in mapped.system("partner").nodes} | {
        mapped.local_plmn.gateway.host}
    assert eth0.address is None and radio0.address is None and not namespace.forwards
    # One next hop per range: the first home (proxy-ARPed by the access router), the
    # gateway for the pool, the first pool address (the crowd) at the gateway's radio side.
    idms = plan.namespaces["primary.idms"].interfaces[0]
    assert {hop for _, hop in idms.ranges} == {"198.19.0.1"}
    partner_idms = plan.namespaces["partner.idms"].interfaces[0]
    assert {hop for _, hop in partner_idms.ranges} == {"198.18.30.1"}
    assert not set(partner_idms.routes) & {ue.host for ue in crowd}
    radio = plan.namespaces["visited-plmn.gateway"].interfaces[1]
    assert radio.routes == () and {hop for _, hop in radio.ranges} == {"198.19.128.1"}


def test_without_root_the_error_names_the_capability_and_the_way_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetnsError, match=r"CAP_SYS_ADMIN.*--placement proc"):
        check_privileges()


@root_only
@pytest.mark.parametrize("name", NETNS_SENSITIVE)
async def test_every_scenario_passes_in_netns(topology: Topology, tmp_path: Path,
                                              name: str) -> None:
    report = await run_scenario(topology, SCENARIOS[name], pcap_root=tmp_path,
                                placement="netns")
    assert report.passed, report.text(ladder=False)
    assert namespaces() == []
    if name == "default":  # the golden trace: names, not addresses, so it holds here too
        assert report.capture is not None
        assert first_difference(extract(REFERENCE), extract(report.capture)) is None


@root_only
async def test_the_partner_cannot_reach_the_primary_nor_the_migrated_ue(
        topology: Topology, tmp_path: Path) -> None:
    async with Network(topology, run_dir=tmp_path / "run", placement="netns") as network:
        assert network.netns is not None
        mapped = network.topology
        primary = [(n.host, port) for n in mapped.system("primary").nodes
                   for port in ((n.sip.port,) if n.sip else (n.https_port or 0,))]
        partner_idms = mapped.system("partner").node("idms")
        partner_side = [n.qualified_name for n in mapped.system("partner").nodes]
        partner_side += ["visited-plmn.gateway", "partner.access-router", "ue-carol"]
        for node in partner_side:
            assert not any(reach(network.netns.namespace(node), primary).values()), node
        # Not vacuous: the primary's own nodes do reach each other.
        inside = reach(network.netns.namespace("primary.sip-core"), primary)
        assert inside["tcp:198.18.10.4:9443"] and inside["udp:198.18.10.3:5060"]
        ue = network.netns.namespace("ue-alice")
        assert reach(ue, primary)["tcp:198.18.10.4:9443"]  # at home, the primary
        await network.radio_attach("ue-alice")
        assert not any(reach(ue, primary).values())  # migrated: never again
        assert reach(ue, [(partner_idms.host, partner_idms.https_port or 0)])[
            f"tcp:{partner_idms.host}:{partner_idms.https_port}"]  # the partner, via gateway
    assert namespaces() == []


@root_only
async def test_a_crowd_ue_reaches_its_home_from_home_and_the_partner_from_the_pool_only(
        topology: Topology, tmp_path: Path) -> None:
    """The crowd is every load UE at once, at home and migrated: what leaves from a home
    address goes to the home system only, what leaves from a pool address to the local
    PLMN only (policy routing), so its namespace never joins primary and partner."""
    population = populate(topology, 2)
    async with Network(population.topology, run_dir=tmp_path / "run", placement="netns",
                       capture=False, crowd=population.ues) as network:
        assert network.netns is not None
        home, other = (ue.host for ue in network.crowd)
        pool = network.topology.local_plmn.ue_pool[0]
        idms = network.topology.system("primary").node("idms")
        partner = network.topology.system("partner").node("idms")
        targets = [(idms.host, idms.https_port or 0), (partner.host, partner.https_port or 0)]
        crowd = network.netns.namespace(CROWD)

        def answered(source: str) -> set[str]:
            return {key.split(":")[1] for key, ok in reach(crowd, targets, source).items()
                    if ok and key.startswith("tcp:")}

        assert answered(home) == answered(other) == {idms.host}
        assert answered(pool) == {partner.host}
        # Not even a SYN leaves for the other side: the kernel refuses at once.
        assert attempts(crowd, targets[1:], home)[f"tcp:{partner.host}:{partner.https_port}"] \
            == "ENETUNREACH"
        assert attempts(crowd, targets[:1], pool)[f"tcp:{idms.host}:{idms.https_port}"] \
            == "ENETUNREACH"
        with pytest.raises(ValueError, match="pool's addresses are the crowd's"):
            await network.radio_attach("ue-alice")
    assert namespaces() == []


@root_only
async def test_a_failed_start_removes_what_it_created(topology: Topology,
                                                      tmp_path: Path) -> None:
    network = Network(topology, run_dir=tmp_path / "run", placement="netns")
    broken = [dataclasses.replace(p, credentials=dataclasses.replace(
        p.credentials, tls_certificate="/nonexistent.crt")) if p.name == "partner.cms" else p
        for p in network.plans]
    network.plans = tuple(broken)
    with pytest.raises(NodeDied, match=r"partner\.cms failed to start"):
        await network.start()
    assert namespaces() == []


@root_only
def test_up_killed_with_sigkill_then_clean_leaves_nothing(tmp_path: Path) -> None:
    with running_up(tmp_path, "--placement", "netns") as (up, state, _):
        assert state["nodes"]["partner.sip-core"]["namespace"] in namespaces()
        up.send_signal(signal.SIGKILL)
        up.wait()
    assert namespaces()  # a SIGKILL leaves them: nothing ran to remove them
    cleaned = subprocess.run([sys.executable, str(ROOT / "run_topology.py"), "clean"],
                             capture_output=True, text=True, timeout=60)
    assert cleaned.returncode == 0, cleaned.stderr
    assert namespaces() == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "mcx" not in links and "br0" not in links


@root_only
def test_an_outside_client_and_sipp_migrate_from_inside_a_ue_namespace(tmp_path: Path) -> None:
    """The README's netns walk-through: `exec` runs the outside client in ue-alice's
    namespace; it logs in at home, is moved to the local PLMN by the radio attach, gets
    its partner token there, and sipp registers through the gateway with it."""
    with running_up(tmp_path, "--placement", "netns") as (up, state, state_file):
        done = subprocess.run(
            [sys.executable, str(ROOT / "run_topology.py"), "exec", "--state-file",
             str(state_file), "ue-alice", "--", sys.executable,
             str(ROOT / "scripts" / "outside_client.py"), str(state_file), "--ue", "ue-alice",
             "--run-sipp"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "3. radio attach of ue-alice: 198.18.31.1" in done.stdout
        refused = subprocess.run(
            [sys.executable, str(ROOT / "run_topology.py"), "exec", "--state-file",
             str(state_file), "no-such-node", "--", "true"], capture_output=True, text=True)
        assert refused.returncode == 2 and "no node 'no-such-node'" in refused.stderr
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    capture = Path(state["pcap_dir"]) / "capture.pcapng"
    hops = {(m.source, m.destination, m.label) for m in extract(capture)}
    assert ("visited-plmn.ue1", "visited-plmn.gateway", "REGISTER") in hops
    assert ("visited-plmn.gateway", "visited-plmn.ue1", "200 (REGISTER)") in hops
    assert namespaces() == []

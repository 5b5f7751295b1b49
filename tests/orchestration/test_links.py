"""Links changed while the topology runs: the Python API in every placement, and
`link set` against a running `up`.  Judged from the capture."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.capture import extract
from emulator.orchestration import Network
from emulator.sip import Address
from emulator.topology import DEFAULT_TOPOLOGY
from emulator.topology import Impairment
from emulator.topology import Topology
from emulator.topology import load_topology
from tests.support.up import running_up

ROOT = Path(__file__).resolve().parent.parent.parent
KERNEL = os.geteuid() == 0 and shutil.which("tcpdump") is not None


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(DEFAULT_TOPOLOGY)


async def _carol_registers(network: Network) -> None:
    partner = network.topology.system("partner")
    carol = partner.user("carol")
    core = partner.node("sip-core")
    ue = network.ues["ue-carol"]
    tokens = await ue.login(partner.issuer)
    outcome = await ue.register(Address("udp", core.host, 5060), partner.domain,
                                carol.mcptt_id, carol.mcptt_id.removeprefix("sip:"),
                                tokens.access_token, carol.mc_ids)
    assert outcome.status == 200


@pytest.mark.parametrize("placement", ["inproc", "proc"])
async def test_a_link_changed_at_run_time_changes_what_crosses(
        topology: Topology, tmp_path: Path, placement: str) -> None:
    if placement == "proc" and not KERNEL:
        pytest.fail("proc placement is captured by tcpdump: run as root with tcpdump")
    async with Network(topology, run_dir=tmp_path / "run", placement=placement) as network:
        await network.impair("ue-carol", "partner.sip-core", Impairment(duplicate=1.0))
        await _carol_registers(network)
        with pytest.raises(ValueError, match="sends no SIP"):
            await network.impair("partner.idms", "ue-carol", Impairment(delay=1.0))
        with pytest.raises(KeyError, match="no node ue-nobody"):
            await network.impair("ue-carol", "ue-nobody", None)
    assert network.capture_file is not None
    sent = [m for m in extract(network.capture_file)
            if (m.source, m.destination, m.label) == ("ue-carol", "partner.sip-core", "REGISTER")]
    assert len(sent) == 2  # every packet of ue-carol's to its SIP core went twice


def test_link_set_against_a_running_up(tmp_path: Path) -> None:
    run = [sys.executable, str(ROOT / "run_topology.py")]
    with running_up(tmp_path) as (up, state, state_file):
        assert "control" in state

        def link(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*run, "link", "set", *args, "--state-file",
                                   str(state_file)], capture_output=True, text=True,
                                  timeout=60)

        done = link("ue-alice", "visited-plmn.gateway", "--loss", "20%", "--delay", "50ms")
        assert done.returncode == 0, done.stderr
        assert "changed what ue-alice and visited-plmn.gateway send" in done.stdout
        done = link("ue-carol", "partner.sip-core", "--from", "ue-carol")
        assert done.returncode == 0 and "changed what ue-carol sends" in done.stdout
        for args, message in (
                (("ue-alice", "nobody"), "no node nobody"),
                (("ue-alice", "visited-plmn.gateway", "--loss", "lots"), "is not a share"),
                (("partner.idms", "ue-carol"), "sends no SIP"),
                (("ue-alice", "visited-plmn.gateway", "--from", "x"), "--from must be")):
            done = link(*args)
            assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    assert up.returncode == 0

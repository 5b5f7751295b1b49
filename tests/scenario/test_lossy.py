"""The shipped lossy topology: 20 % loss and 50 ms delay on the UE-gateway link.

The migration must still complete, by SIP's own retransmissions, for several seeds; the
capture shows those retransmissions and the delay, and a seed repeats its run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from emulator.capture import extract
from emulator.capture import first_difference
from emulator.orchestration import SCENARIOS
from emulator.orchestration import Report
from emulator.orchestration import run_scenario
from emulator.topology import Topology
from emulator.topology import load_topology
from emulator.topology import topology_path

KERNEL = os.geteuid() == 0 and shutil.which("tcpdump") is not None
SEEDS = (11, 1, 16)
"""Seeds whose losses include a response, so that the request is seen twice (with a lost
request only its retransmission reaches the wire, which no capture can flag as one)."""


@pytest.fixture(scope="module")
def lossy() -> Topology:
    return load_topology(topology_path("lossy"))


async def _run(topology: Topology, tmp_path: Path, seed: int) -> Report:
    return await run_scenario(topology, SCENARIOS["default"], pcap_root=tmp_path, seed=seed)


def resends(report: Report) -> int:
    assert report.capture is not None
    done = subprocess.run(["tshark", "-r", str(report.capture), "-Y", "sip.resend == 1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return len(done.stdout.splitlines())


@pytest.mark.parametrize("seed", SEEDS)
async def test_migration_completes_over_a_lossy_access(lossy: Topology, tmp_path: Path,
                                                       seed: int) -> None:
    report = await _run(lossy, tmp_path, seed)
    assert report.passed, report.text(ladder=False)
    # The run says which mechanism impaired its links (this kernel has no netem qdisc).
    assert report.impairments is not None and "sending node's transport" in report.impairments
    assert f"link impairments: {report.impairments}" in report.text(ladder=False)
    assert resends(report) > 0
    if not KERNEL:
        pytest.skip("the delay's half is read from a kernel capture (root and tcpdump)")
    # The 50 ms each way is in the capture: the UE's REGISTER waits for its 200.
    messages = extract(report.capture)  # type: ignore[arg-type]
    sent = next(m.time for m in messages
                if (m.source, m.destination, m.label) ==
                ("ue-alice", "visited-plmn.gateway", "REGISTER"))
    answered = next(m.time for m in messages
                    if (m.source, m.destination, m.label) ==
                    ("visited-plmn.gateway", "ue-alice", "200 (REGISTER)"))
    assert answered - sent >= 0.05


async def test_a_seed_repeats_its_run(lossy: Topology, tmp_path: Path) -> None:
    first = await _run(lossy, tmp_path / "a", SEEDS[0])
    again = await _run(lossy, tmp_path / "b", SEEDS[0])
    assert first.capture is not None and again.capture is not None
    assert first_difference(extract(first.capture), extract(again.capture)) is None
    assert resends(first) == resends(again)

"""Load mode (``run_topology.py load``): many generated users migrate; judged from the
capture and from the report files, not from the generator's own counts alone.

Hosts on loopback: the gateway 127.0.30.1, the partner MC server 127.0.20.3; generated UEs
live at home in 127.1.0.0/17 and attach from 127.1.128.0/17
(emulator/topology/population.py).  In netns placement the same, in 198.18.0.0/15.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.orchestration import session
from emulator.orchestration.load import MAX_RETRY_AFTER
from emulator.orchestration.load import RETRIES
from emulator.orchestration.load import LoadOptions
from emulator.orchestration.load import LoadResult
from emulator.orchestration.load import UeRecord
from emulator.orchestration.load import retrying
from emulator.orchestration.loadreport import cpu_line
from emulator.orchestration.session import load
from emulator.sip import Response
from emulator.sip import parse_message
from emulator.topology import Topology
from nodes.ue import SipOutcome
from tests.support.wire import sip_fields
from tests.support.wire import tshark

ROOT = Path(__file__).resolve().parent.parent.parent
KERNEL = os.geteuid() == 0 and shutil.which("tcpdump") is not None
needs_kernel = pytest.mark.skipif(not KERNEL or shutil.which("tshark") is None,
                                  reason="needs root, tcpdump and tshark")
UES = 12
ADDRESSES = {
    # placement: gateway, partner MC server, homes, pool, the primary's and partner's nodes
    "inproc": ("127.0.30.1", "127.0.20.3", "127.1.0.0/17", "127.1.128.0/17",
               "127.0.10.0/24", "127.0.20.0/24"),
    "netns": ("198.18.30.1", "198.18.20.3", "198.19.0.0/17", "198.19.128.0/17",
              "198.18.10.0/24", "198.18.20.0/24"),
}


@needs_kernel
@pytest.mark.parametrize("placement", ["inproc", "netns"])
async def test_every_generated_ue_migrates_and_registers(mcx_topology: Topology,
                                                         tmp_path: Path,
                                                         placement: str) -> None:
    result, run_dir, files = await load(mcx_topology, LoadOptions(UES, rate=40),
                                        pcap_root=tmp_path, placement=placement)
    assert result.registered == UES and not result.failures
    gateway, mc_server, homes, pool, primary, partner = ADDRESSES[placement]
    capture = run_dir / "capture.pcapng"
    # Each UE's REGISTER from its own attached address, and the gateway's 200 back to it.
    sent = sip_fields(capture, f'sip.Method == "REGISTER" && ip.src == {pool} && '
                      f"ip.dst == {gateway}", "ip.src", "sip.from.user")
    assert len({r[0] for r in sent}) == UES
    assert {r[1] for r in sent} == {f"alice-{i:05d}.visitor" for i in range(1, UES + 1)}
    # The capture names each attached address after its UE (Name Resolution Block).
    named = tshark("-r", str(capture), "-N", "n", "-Y", 'sip.Method == "REGISTER" && '
                   f"ip.src == {pool}", "-T", "fields", "-e", "ip.src_host").stdout
    assert set(named.split()) == {f"ue-alice-{i:05d}" for i in range(1, UES + 1)}
    answered = sip_fields(capture, 'sip.CSeq.method == "REGISTER" && sip.Status-Code == 200 '
                          f"&& ip.src == {gateway} && ip.dst == {pool}", "ip.dst")
    assert len({r[0] for r in answered}) == UES
    # The partner MC server authorised every one of them (third-party REGISTER, 200).
    authorised = sip_fields(capture, 'sip.CSeq.method == "REGISTER" && sip.Status-Code == 200 '
                            f"&& ip.src == {mc_server}", "sip.to.user")
    assert {r[0] for r in authorised} >= {f"alice-{i:05d}.visitor" for i in range(1, UES + 1)}
    # At home each UE spoke with its primary only, migrated with the partner only; and no
    # packet between the systems.
    # (sip_fields fails on a filter tshark refuses, so an empty answer is a real one.)
    logins = sip_fields(capture, f"ip.src == {homes} && ip.dst == {primary}", "ip.src")
    assert len({row[0] for row in logins}) == UES
    for never in (f"ip.addr == {homes} && ip.addr == {partner}",
                  f"ip.addr == {pool} && ip.addr == {primary}",
                  f"ip.addr == {primary} && ip.addr == {partner}"):
        assert sip_fields(capture, never, "frame.number") == [], never
    # The report: the same counts, every phase, and the plot in both formats.
    report = json.loads((run_dir / "load.json").read_text())
    assert report["registered"] == UES and report["failures"] == {}
    assert report["phases_ms"]["migration"]["count"] == UES
    assert set(report["phases_ms"]) == {"login", "profile", "security-token", "attach",
                                        "partner-token", "register", "migration"}
    assert report["kpi"]["met"] in (True, False)
    # The CPU one migration cost this process and each process the run has besides it:
    # in netns every node's and each bridge's tcpdump, in process the capture's alone.
    cpu = report["cpu_ms_per_ue"]
    assert sum(cpu.values()) > 0 and all(ms >= 0 for ms in cpu.values())
    if placement == "netns":
        assert {"load generator", "visited-plmn.gateway", "partner.sip-core",
                "partner.mc-server"} <= set(cpu)
        assert any(name.startswith("capture ") for name in cpu)
        assert not any(name.startswith("ue-") for name in cpu)  # the topology's own UEs
    else:
        assert set(cpu) == {"nodes and UEs (inproc)", "capture"}
    assert report["capacity_per_s"] > 0
    assert (run_dir / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (run_dir / "latency.svg").read_bytes()[:1000]
    assert {f.name for f in files} == {"load.json", "latency.png", "latency.svg"}


def test_load_runs_its_nodes_in_processes_unless_only_taps_could_capture(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "kernel_capture_available", lambda: False)
    assert session.default_placement(capture=True) == "inproc"
    assert session.default_placement(capture=False) == "proc"
    monkeypatch.setattr(session, "kernel_capture_available", lambda: True)
    assert session.default_placement(capture=True) == "proc"


@needs_kernel
def test_the_load_command_runs_every_node_in_its_own_process_by_default(
        tmp_path: Path) -> None:
    """`load` with no --placement, as root: the nodes in their own processes (each writes
    its own log), the capture on, every UE registered, as the capture shows."""
    done = subprocess.run([sys.executable, str(ROOT / "run_topology.py"), "load", "--ues",
                           "3", "--rate", "30", "--pcaps", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    report = json.loads((run_dir / "load.json").read_text())
    assert report["placement"] == "proc" and report["registered"] == 3
    assert (run_dir / "logs" / "partner.sip-core.log").exists()
    # What a migration cost each process: every node's, tcpdump's and the generator's own.
    assert set(report["cpu_ms_per_ue"]) == {
        "load generator", "capture", "visited-plmn.gateway",
        *(f"{system}.{node}" for system in ("primary", "partner")
          for node in ("idms", "cms", "sip-core", "mc-server")), "partner.gms"}
    assert "CPU per migration:" in done.stdout
    gateway, _, _, pool, _, _ = ADDRESSES["inproc"]
    answered = sip_fields(run_dir / "capture.pcapng", 'sip.CSeq.method == "REGISTER" && '
                          f"sip.Status-Code == 200 && ip.src == {gateway} && ip.dst == {pool}",
                          "ip.dst")
    assert len({row[0] for row in answered}) == 3


def test_the_cpu_line_says_what_rate_a_migrations_cost_allows() -> None:
    """Per UE through the stage, by process; the cores shared out, but no process (one
    event loop each) on more than one core."""
    cpu = {"load generator": 1.2, "visited-plmn.gateway": 0.4, "partner.idms": 0.4}
    result = LoadResult(LoadOptions(100, 10), "proc", False, [], 10.0, cpu=cpu,
                        stage_ues=100, cores=2)
    assert result.cpu_per_ue() == pytest.approx(
        {"load generator": 12.0, "visited-plmn.gateway": 4.0, "partner.idms": 4.0})
    # 20 ms over two cores would be 100/s, but the load generator's 12 ms fill its core
    # at 83/s.
    assert result.capacity() == pytest.approx(1000 / 12)
    assert result.to_json()["capacity_per_s"] == 83.3
    line = cpu_line(result)
    assert line.startswith("CPU per migration: 20.0 ms (load generator 12.0, ")
    assert line.endswith("2 cores carry at most ~83 migrations/s")
    one_core = LoadResult(LoadOptions(100, 10), "proc", False, [], 10.0, cpu=cpu,
                          stage_ues=100, cores=1)
    assert one_core.capacity() == pytest.approx(50)
    unmeasured = LoadResult(LoadOptions(100, 10), "proc", False, [], 10.0)
    assert unmeasured.capacity() is None and cpu_line(unmeasured) == ""


@pytest.mark.parametrize("arguments,message", [
    (["--ues", "0"], "--ues and --concurrency must be at least 1"),
    (["--ues", "70000"], "within 1..32000"),
    (["--ues", "5", "--rate", "0"], "--rate above 0"),
])
def test_bad_load_arguments_get_a_clear_error(arguments: list[str], message: str,
                                              tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "run_topology.py"), "load", *arguments,
                           "--pcaps", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
    assert "migration" not in done.stdout  # refused before any progress bar showed


# -- a load UE after a 503 that says when to come back (emulator/orchestration/load.py) --

def _outcome(status: int, retry_after: str | None = None) -> SipOutcome:
    extra = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    response = parse_message(
        (f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKr\r\n"
         f"From: <sip:a@x>;tag=1\r\nTo: <sip:a@x>;tag=2\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\n"
         f"{extra}Content-Length: 0\r\n\r\n").encode())
    assert isinstance(response, Response)
    return SipOutcome.of(response)


def test_a_ue_reads_retry_after_and_takes_a_malformed_one_for_none() -> None:
    assert _outcome(503, "2 (overload)").retry_after == 2
    assert _outcome(503, "soon").retry_after is None
    assert _outcome(503).retry_after is None


async def test_a_load_ue_registers_again_when_and_only_as_a_503_asks() -> None:
    async def run(answers: list[SipOutcome]) -> tuple[SipOutcome, UeRecord, list[float]]:
        record, slept, queue = UeRecord("ue-0"), [], list(answers)

        async def attempt() -> SipOutcome:
            return queue.pop(0)

        async def sleep(seconds: float) -> None:  # simulated: the waits are recorded
            slept.append(seconds)

        return await retrying(attempt, record, sleep=sleep), record, slept

    outcome, record, slept = await run([_outcome(503, "2"), _outcome(200)])
    assert (outcome.status, record.retries, slept) == (200, 1, [2])
    for refusal in (_outcome(503), _outcome(503, str(MAX_RETRY_AFTER + 1)), _outcome(403, "1")):
        outcome, record, slept = await run([refusal, _outcome(200)])
        assert (outcome.status, record.retries, slept) == (refusal.status, 0, [])
    outcome, record, slept = await run([_outcome(503, "1")] * (RETRIES + 1))
    assert (outcome.status, record.retries, slept) == (503, RETRIES, [1] * RETRIES)

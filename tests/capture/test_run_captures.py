"""What a Wireshark user gets from a run: pcapng with names, step comments and TLS secrets,
one file per node, ladders built from the file, and a golden-trace comparison."""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from defusedxml.ElementTree import fromstring

from emulator.capture import extract
from emulator.capture import first_difference
from emulator.capture import render_html
from emulator.capture import render_mermaid
from emulator.capture import render_svg
from emulator.capture import render_text
from emulator.capture.tshark import PREFERENCES
from emulator.orchestration import SCENARIOS
from emulator.orchestration import Report
from emulator.orchestration import network as network_module
from emulator.orchestration import run_scenario
from emulator.sip import TimerConfig
from emulator.topology import DEFAULT_TOPOLOGY
from emulator.topology import Topology
from tests.support.wire import request_tokens

ROOT = Path(__file__).resolve().parent.parent.parent
KERNEL = os.geteuid() == 0 and shutil.which("tcpdump") is not None
TSHARK = shutil.which("tshark")
needs_kernel = pytest.mark.skipif(not KERNEL or TSHARK is None,
                                  reason="needs root, tcpdump and tshark")


def tshark(*args: str) -> subprocess.CompletedProcess[str]:
    assert TSHARK is not None
    return subprocess.run([TSHARK, *args, *PREFERENCES], capture_output=True, text=True,
                          timeout=60)


def clean(path: Path) -> None:
    done = tshark("-r", str(path), "-Y", "_ws.malformed || _ws.expert.severity >= warning")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"{path.name}: {done.stdout[:300]}"


STEADY = TimerConfig(t1=8.0, t2=8.0, t4=8.0)
"""Timers for runs compared with the committed reference: loopback loses nothing, so a
retransmission there only ever comes from a stall of the loaded machine longer than T1,
a spurious difference.  With T1 = 8 s (not 500 ms) a stall would have to last 8 s."""


def steady(topology: Topology) -> Topology:
    return dataclasses.replace(topology, sip_timers=STEADY)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Report:
    import asyncio

    from emulator.topology import load_topology

    topology = steady(load_topology(DEFAULT_TOPOLOGY))
    return asyncio.run(run_scenario(topology, SCENARIOS["default"],
                                    pcap_root=tmp_path_factory.mktemp("captures")))


@needs_kernel
def test_every_capture_file_opens_cleanly(default_run: Report) -> None:
    assert default_run.passed, default_run.text()
    files = [default_run.run_dir / "capture.pcapng",
             *sorted((default_run.run_dir / "nodes").glob("*.pcapng"))]
    names = {f.stem for f in files}
    assert {"capture", "ue-alice", "visited-plmn.gateway", "partner.sip-core",
            "partner.mc-server", "partner.idms", "primary.idms"} <= names
    for path in files:
        clean(path)


@needs_kernel
def test_node_names_comments_and_decrypted_https_from_the_file_alone(
        default_run: Report) -> None:
    capture = str(default_run.run_dir / "capture.pcapng")
    # Names come from the Name Resolution Block, with no hosts file or option.
    hosts = tshark("-r", capture, "-N", "n", "-Y", "sip", "-T", "fields",
                   "-e", "ip.src_host").stdout.split()
    assert {"ue-alice", "visited-plmn.gateway", "partner.sip-core"} <= set(hosts)
    # HTTP inside TLS, decrypted with the embedded secrets only (no -o tls.keylog_file).
    http = tshark("-r", capture, "-Y", "http.request", "-T", "fields",
                  "-e", "http.request.method", "-e", "http.request.uri").stdout
    assert "POST\t/token" in http and "POST\t/attach" in http
    # Each packet says which step it belongs to, and the step's clause.
    comments = tshark("-r", capture, "-Y", "sip.Method == REGISTER", "-T", "fields",
                      "-e", "frame.comment").stdout
    assert "partner-register:" in comments
    assert "TR 23.700-90 7.X.2 steps 1-2" in comments


def pcapng_blocks(raw: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each block of a pcapng file."""
    out, offset = [], 0
    while offset < len(raw):
        kind, total = struct.unpack_from("=II", raw, offset)
        out.append((kind, raw[offset + 8:offset + total - 4]))
        offset += total
    return out


@needs_kernel
def test_node_file_holds_only_that_nodes_traffic(default_run: Report) -> None:
    capture = str(default_run.run_dir / "nodes" / "partner.mc-server.pcapng")
    pairs = tshark("-r", capture, "-T", "fields", "-e", "ip.src", "-e", "ip.dst").stdout
    for line in pairs.splitlines():
        assert "127.0.20.3" in line.split("\t")
    # A node's file decrypts its own HTTPS, and carries no other node's TLS secrets.
    idms = str(default_run.run_dir / "nodes" / "partner.idms.pcapng")
    http = tshark("-r", idms, "-Y", "http.request", "-T", "fields",
                  "-e", "http.request.uri").stdout.split()
    assert "/token" in http and "/attach" not in http
    keylog = (default_run.run_dir / "tls-keys.log").read_bytes()
    own = [b for kind, b in pcapng_blocks(Path(idms).read_bytes()) if kind == 10]  # DSB
    assert len(own) == 1 and 0 < len(own[0]) < len(keylog)


@needs_kernel
def test_ladder_from_the_capture_shows_every_step_of_the_figure(default_run: Report) -> None:
    messages = extract(default_run.run_dir / "capture.pcapng")
    text = render_text(messages)
    # Figure 7.X.2-1 step 1 (migrate using access info and credentials) and step 2
    # (the partner's authorisation check), each with its clause.
    for clause in ("TR 23.700-90 7.X.2 step 1", "TR 23.700-90 7.X.2 steps 1-2",
                   "33.180 §5.1.4.2", "33.180 B.7.2"):
        assert clause in text
    labels = [(m.source, m.destination, m.label) for m in messages]
    assert ("ue-alice", "visited-plmn.gateway", "REGISTER") in labels
    assert ("partner.sip-core", "partner.mc-server", "REGISTER") in labels
    assert ("ue-alice", "partner.idms", "POST /token (jwt-bearer)") in labels
    assert text.splitlines()[0].split("=")[0] == ""  # the system banner line comes first
    assert render_mermaid(messages).startswith("sequenceDiagram")
    svg = render_svg(messages)
    assert fromstring(svg.encode()).tag.endswith("svg")
    assert "<svg" in render_html(messages)


@needs_kernel
def test_fresh_run_matches_the_committed_reference(default_run: Report) -> None:
    reference = extract(ROOT / "pcaps" / "reference" / "default.pcapng")
    fresh = extract(default_run.run_dir / "capture.pcapng")
    difference = first_difference(reference, fresh)
    assert difference is None, str(difference)


@needs_kernel
async def test_diff_names_the_first_difference(mcx_topology: Topology, tmp_path: Path) -> None:
    refused = await run_scenario(steady(mcx_topology), SCENARIOS["expired-token"],
                                 pcap_root=tmp_path)
    assert refused.capture is not None
    difference = first_difference(extract(ROOT / "pcaps" / "reference" / "default.pcapng"),
                                  extract(refused.capture))
    assert difference is not None
    assert difference.expected == "partner.idms -> ue-alice: HTTP 200"
    assert difference.actual == "partner.idms -> ue-alice: HTTP 400"
    assert difference.step.startswith("partner-token")


@pytest.mark.skipif(TSHARK is None, reason="needs tshark")
async def test_application_tap_when_kernel_capture_is_impossible(
        mcx_topology: Topology, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not root: the transports' tap still yields a pcapng that tshark dissects as SIP."""
    monkeypatch.setattr(network_module, "kernel_capture_available", lambda: False)
    report = await run_scenario(mcx_topology, SCENARIOS["default"], pcap_root=tmp_path,
                                transport="tcp")
    assert report.passed, report.text()
    assert report.capture is not None
    assert "application-level tap" in report.capture_summary
    clean(report.capture)
    methods = tshark("-r", str(report.capture), "-Y", "sip.Method", "-T", "fields",
                     "-e", "sip.Method").stdout.split()
    assert "REGISTER" in methods and "INVITE" in methods and "MESSAGE" in methods


@needs_kernel
def test_interrupted_run_leaves_valid_captures(tmp_path: Path) -> None:
    """SIGINT in the middle of a run: the captures are finalised, no truncated packet."""
    import signal
    import sys
    import time

    run = subprocess.Popen([sys.executable, str(ROOT / "run_topology.py"), "run", "-q",
                            "--pcaps", str(tmp_path)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20

    def captured() -> int:  # bytes tcpdump has written so far
        return sum(p.stat().st_size for p in tmp_path.glob("*/capture.pcap"))

    while captured() < 2000 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.005)  # interrupt once traffic flows, mid-scenario
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=30)
    assert run.returncode in (0, 130)
    [run_dir] = list(tmp_path.iterdir())
    capture = run_dir / "capture.pcapng"
    assert capture.exists()
    assert not (run_dir / "capture.pcap").exists()
    # The file is whole (exit 0, nothing malformed); connections cut by the interrupt
    # may legitimately end in RST, which is the network's story, not the file's.
    done = tshark("-r", str(capture), "-Y", "_ws.malformed")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    count = tshark("-r", str(capture), "-T", "fields", "-e", "frame.number").stdout.split()
    assert count, "the partial run captured nothing"


@needs_kernel
def test_the_partner_grants_no_service_the_primary_did_not(default_run: Report) -> None:
    """Seed step 2, read from the wire: the MC service scopes of the partner access token
    in the visited REGISTER are among those of the primary access token in the home one."""
    assert default_run.capture is not None
    home = request_tokens(default_run.capture, "REGISTER", "127.0.40.1", "127.0.10.2")
    visited = request_tokens(default_run.capture, "REGISTER", "127.0.31.1", "127.0.30.1")
    assert home and visited

    def services(claims: dict[str, object]) -> set[str]:
        return {s for s in str(claims["scope"]).split() if s.startswith("3gpp:mc:")}

    assert {c["iss"] for c in home} == {"https://127.0.10.4:9443"}
    assert {c["iss"] for c in visited} == {"https://127.0.20.4:9443"}
    for partner in visited:
        assert services(partner) and services(partner) <= services(home[0])

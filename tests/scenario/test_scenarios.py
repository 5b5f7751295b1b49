"""The seed's scenario and its negative variants, in-process through the Python API.

Each run uses real sockets on 127.0.0.0/8; when running as root the capture
is a kernel capture and the no-interconnection verdict is read back from it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from emulator.capture import extract
from emulator.orchestration import SCENARIOS
from emulator.orchestration import Report
from emulator.orchestration import run_scenario
from emulator.topology import DEFAULT_TOPOLOGY
from emulator.topology import Topology
from tests.support.scenarios import IN_PROCESS
from tests.support.wire import sip_fields
from tests.support.wire import tshark

ROOT_CAPTURE = os.geteuid() == 0 and shutil.which("tcpdump") is not None


def require_kernel_capture() -> None:
    """Protocol outcomes are judged from a kernel capture: without one, skip (reported)."""
    if not ROOT_CAPTURE or shutil.which("tshark") is None:
        pytest.skip("needs root, tcpdump and tshark: judged from the kernel capture")


async def _run(topology: Topology, name: str, tmp_path: Path,
               transport: str | None = None) -> Report:
    return await run_scenario(topology, SCENARIOS[name], transport=transport,
                              pcap_root=tmp_path)


def _verdict(report: Report, step: str):  # type: ignore[no-untyped-def]
    return next(v for v in report.verdicts if v.step == step)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_default_scenario_passes_on_every_transport(mcx_topology: Topology,
                                                          tmp_path: Path, transport: str) -> None:
    report = await _run(mcx_topology, "default", tmp_path, transport)
    assert report.passed, report.text()
    steps = [v.step for v in report.verdicts]
    for step in ("login-primary", "register-primary", "profile", "security-token", "attach",
                 "partner-token", "partner-register", "private-call", "short-data"):
        assert step in steps
    # The ladder, read back from the capture, shows the migration steps with their clauses.
    assert "TR 23.700-90 7.X.2 steps 1-2" in report.ladder
    assert report.capture is not None
    extracted = extract(report.capture)
    messages = {(m.source, m.destination, m.label) for m in extracted}
    assert ("ue-alice", "visited-plmn.gateway", "REGISTER") in messages
    if ROOT_CAPTURE:  # HTTPS is in kernel captures only
        assert ("ue-alice", "partner.idms", "POST /token (jwt-bearer)") in messages
        assert "POST /token (jwt-bearer)" in report.ladder
    # --transport means every SIP link: the in-dialog and originating requests the gateway
    # routes by the Service-Route included (24.229 §5.2.6.3.2).  The application tap
    # writes what TLS carried as plain TCP.
    carried = transport if ROOT_CAPTURE or transport != "tls" else "tcp"
    assert {m.transport for m in extracted if m.protocol == "SIP"} == {carried}
    if ROOT_CAPTURE:
        assert _verdict(report, "capture").passed
        assert "0 packets between" in _verdict(report, "capture").detail
    if ROOT_CAPTURE and shutil.which("tshark"):
        # SIP is dissected on every transport: UDP, TCP reassembled, TLS decrypted with the
        # secrets embedded in the pcapng.
        import subprocess

        assert report.capture is not None
        methods = subprocess.run(["tshark", "-r", str(report.capture), "-Y", "sip.Method",
                                  "-T", "fields", "-e", "sip.Method"], capture_output=True,
                                 text=True, timeout=60).stdout.split()
        assert {"REGISTER", "INVITE", "ACK", "BYE", "MESSAGE"} <= {
            m.split(",")[0] for m in methods}
    # Security token to the partner's 200 REGISTER: a time taken, so within a run's length.
    assert report.migration_seconds is not None
    assert 0 < report.migration_seconds < report.seconds
    if not (ROOT_CAPTURE and shutil.which("tshark")):
        pytest.skip("the HTTPS, capture-verdict and dissection checks need root, tcpdump and "
                    "tshark")


NEGATIVE = [name for name, s in SCENARIOS.items() if s.expect is not None]

# The test's own table of every negative scenario's refusal, as the capture must show it:
# (protocol, status, OAuth error or Warning warn-agent, sender, receiver).  Nothing of the
# runner's verdicts is used to judge it.
_PARTNER_TOKEN = ("http", 400, "invalid_grant", "partner.idms", "ue-alice")
_MC_SERVER = ("sip", 403, "127.0.20.3", "partner.mc-server", "partner.sip-core")
REFUSALS: dict[str, tuple[str, int, str, str, str]] = {
    "no-oob-provisioning": _PARTNER_TOKEN,
    "corrupt-oob-provisioning": _PARTNER_TOKEN,
    "partner-profile-missing": _PARTNER_TOKEN,
    "expired-token": _PARTNER_TOKEN,
    "replayed-security-token": _PARTNER_TOKEN,
    "wrong-partner": _PARTNER_TOKEN,
    "migration-not-authorised": ("http", 400, "invalid_target", "primary.idms", "ue-alice"),
    "mc-server-profile-missing": _MC_SERVER,
    "refused-after-registration": _MC_SERVER,
    "forged-token": _MC_SERVER,
    # The gateway's own refusal of an unattached source: a reason phrase, no Warning.
    "unattached-ue": ("sip", 403, "", "visited-plmn.gateway", "ue-alice"),
}


def test_the_refusal_table_covers_every_negative_scenario() -> None:
    assert sorted(REFUSALS) == sorted(NEGATIVE)


def refusals_on_the_wire(capture: Path, protocol: str, status: int) -> list[tuple[str, ...]]:
    """(sender, receiver, OAuth error or Warning) of every ``status`` answer in
    ``capture``, named as the capture names its hosts (TLS decrypted from the file)."""
    if protocol == "sip":
        done = tshark("-r", str(capture), "-N", "n", "-Y", f"sip.Status-Code == {status}",
                      "-T", "fields", "-E", "separator=|", "-e", "ip.src_host", "-e",
                      "ip.dst_host", "-e", "sip.Warning")
        assert done.returncode == 0, done.stderr
        rows = [line.split("|") for line in done.stdout.splitlines() if line.strip()]
        # Warning: 399 <warn-agent> "<text>" (RFC 3261 §20.43): its host is what is kept.
        return [(row[0], row[1], row[2].split()[1] if row[2] else "") for row in rows]
    done = tshark("-r", str(capture), "-N", "n", "-Y", f"http.response.code == {status}",
                  "-T", "fields", "-E", "separator=|", "-e", "ip.src_host", "-e",
                  "ip.dst_host", "-e", "http.file_data")
    assert done.returncode == 0, done.stderr
    out = []
    for line in done.stdout.splitlines():
        sender, receiver, body = line.split("|", 2)
        if all(c in "0123456789abcdef:" for c in body.strip()):  # printed as hex
            body = bytes.fromhex(body.replace(":", "")).decode(errors="replace")
        out.append((sender, receiver, str(json.loads(body).get("error", ""))))
    return out


@pytest.mark.parametrize("name", NEGATIVE)
async def test_negative_scenario_is_refused_on_the_wire_as_the_table_says(
        mcx_topology: Topology, tmp_path: Path, name: str) -> None:
    require_kernel_capture()
    report = await _run(mcx_topology, name, tmp_path)
    assert report.passed, report.text()
    assert report.capture is not None
    protocol, status, detail, sender, receiver = REFUSALS[name]
    seen = refusals_on_the_wire(report.capture, protocol, status)
    assert (sender, receiver, detail) in seen, seen
    # Nothing after the refusal ran: the UE did not get service (no call on the wire).
    assert sip_fields(report.capture, 'sip.Method == "INVITE"', "ip.src_host") == []


@pytest.mark.skipif(not ROOT_CAPTURE, reason="needs root and tcpdump for a kernel capture")
@pytest.mark.parametrize("name", ["mc-server-profile-missing", "forged-token",
                                  "refused-after-registration"])
async def test_a_refusal_after_registration_is_on_the_wire_in_2429_order(
        mcx_topology: Topology, tmp_path: Path, name: str) -> None:
    """24.229 §5.4.1.7: the UE's REGISTER is answered 200, the MC server then refuses the
    third-party REGISTER (403, Warning 101), and the network's NOTIFY that ends the
    registration carries that refusal to the UE."""
    from scapy.layers.inet import UDP
    from scapy.utils import rdpcap

    report = await _run(mcx_topology, name, tmp_path)
    assert report.capture is not None
    payloads = [bytes(p[UDP].payload) for p in rdpcap(str(report.capture)) if p.haslayer(UDP)]

    def first(predicate: Callable[[bytes], bool]) -> int:
        return next(i for i, p in enumerate(payloads) if predicate(p))

    warning = b'399 127.0.20.3 "101 service authorisation failed"'
    ok = first(lambda p: p.startswith(b"SIP/2.0 200") and b" REGISTER\r\n" in p and
               b"alice.visitor@" in p)
    refused = first(lambda p: p.startswith(b"SIP/2.0 403") and b"Warning: " + warning in p)
    ended = first(lambda p: p.startswith(b"NOTIFY ") and b'state="terminated"' in p and
                  b'event="rejected"' in p and warning in p)
    assert ok < refused < ended


@pytest.mark.skipif(not ROOT_CAPTURE or shutil.which("tshark") is None,
                    reason="needs root, tcpdump and tshark")
@pytest.mark.parametrize("name,peer,error", [
    ("no-oob-provisioning", "partner.idms", "invalid_grant"),
    ("migration-not-authorised", "primary.idms", "invalid_target"),
])
async def test_oauth_refusal_is_visible_in_the_decrypted_capture(
        mcx_topology: Topology, tmp_path: Path, name: str, peer: str, error: str) -> None:
    """The IdMS's OAuth error is on the wire inside TLS; the run's key log decrypts it."""
    import subprocess

    report = await _run(mcx_topology, name, tmp_path)
    assert report.capture is not None
    hosts = {v: k for k, v in mcx_topology.host_names().items()}
    done = subprocess.run(
        ["tshark", "-r", str(report.capture), "-o",
         f"tls.keylog_file:{report.run_dir / 'tls-keys.log'}", "-Y",
         f"http.response.code == 400 && ip.src == {hosts[peer]}", "-T", "fields",
         "-e", "http.file_data"], capture_output=True, text=True, timeout=60)
    assert f'"error": "{error}"' in done.stdout


@pytest.mark.skipif(not ROOT_CAPTURE, reason="needs root and tcpdump for a kernel capture")
async def test_interconnection_baseline_shows_primary_partner_traffic(
        mcx_topology: Topology, tmp_path: Path) -> None:
    baseline = await _run(mcx_topology, "with-interconnection", tmp_path)
    assert baseline.passed, baseline.text()
    assert "packets between the systems" in _verdict(baseline, "capture").detail
    seed = await _run(mcx_topology, "direct", tmp_path)
    assert seed.passed, seed.text()
    assert _verdict(seed, "capture").detail.startswith("0 packets between")


async def test_network_api_and_fixture(mcx_network) -> None:  # type: ignore[no-untyped-def]
    """The documented fixture gives a running network with its nodes and state."""
    state = mcx_network.state()
    assert state["nodes"]["partner.sip-core"]["sip"][0] == {
        "transport": "udp", "host": "127.0.20.2", "port": 5060}
    assert state["users"]["alice"]["partner_identity"] == "sip:alice.visitor@mcx.partner.example"
    assert Path(state["ca_certs"]["primary"]).exists()
    ue = mcx_network.ues["ue-alice"]
    tokens = await ue.login(mcx_network.topology.system("primary").issuer)
    assert tokens.id_token and tokens.refresh_token


async def test_transport_of_each_link_comes_from_the_topology(tmp_path: Path) -> None:
    """Links may differ: UE-primary over TCP, UE-gateway over TLS, the rest over UDP."""
    from emulator.topology import parse_topology

    text = DEFAULT_TOPOLOGY.read_text()
    for link, transport in (("[ue-alice, primary.sip-core], transport: udp", "tcp"),
                            ("[ue-alice, visited-plmn.gateway], transport: udp", "tls"),
                            ("[ue-carol, partner.sip-core], transport: udp", "tcp")):
        assert link in text
        text = text.replace(link, link.replace("udp", transport))
    topology = parse_topology(text, "mixed.yaml")
    report = await run_scenario(topology, SCENARIOS["default"], pcap_root=tmp_path)
    assert report.passed, report.text()
    assert report.capture is not None
    carried = {(m.source, m.destination, m.label, m.transport)
               for m in extract(report.capture)}
    # The application tap writes TLS as the plaintext TCP it carried; the kernel sees TLS.
    tls = "tls" if ROOT_CAPTURE else "tcp"
    assert ("ue-alice", "visited-plmn.gateway", "REGISTER", tls) in carried
    assert ("ue-alice", "primary.sip-core", "REGISTER", "tcp") in carried
    assert ("ue-carol", "partner.sip-core", "REGISTER", "tcp") in carried


@pytest.mark.parametrize("name", IN_PROCESS)
async def test_every_scenario_passes_in_process(mcx_topology: Topology, tmp_path: Path,
                                                name: str) -> None:
    report = await _run(mcx_topology, name, tmp_path)
    assert report.passed, report.text(ladder=False)


@pytest.mark.parametrize("name,transport,outcome", [
    ("partner-restart", "udp", "state kept"),
    ("partner-restart-amnesia", "udp", "re-registered"),
    # Over TLS a UE is reached on the connection it opened, which died with the SIP core.
    ("partner-restart", "tls", "re-registered")])
async def test_after_a_partner_restart_the_verdict_says_what_the_ue_did(
        mcx_topology: Topology, tmp_path: Path, name: str, transport: str,
        outcome: str) -> None:
    report = await _run(mcx_topology, name, tmp_path, transport)
    assert report.passed, report.text(ladder=False)
    assert _verdict(report, "short-data-after-restart").detail.startswith(outcome)
    if not ROOT_CAPTURE:
        pytest.skip("the capture's half needs root and tcpdump")
    assert _verdict(report, "restart-capture").detail.endswith(outcome)  # from the capture

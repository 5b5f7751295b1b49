"""The whole stay, judged from the capture: leaving home, a long stay with refreshes,
de-registration, return home, what the partner grants, and the wrong partner.

Hosts are the default topology's: ue-alice 127.0.40.1 at home and 127.0.31.1 in the
visited PLMN, gateway 127.0.30.1, partner SIP core 127.0.20.2 and MC server 127.0.20.3,
primary SIP core 127.0.10.2 and MC server 127.0.10.3.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from emulator.capture import extract
from emulator.orchestration import SCENARIOS
from emulator.orchestration import Report
from emulator.orchestration import Scenario
from emulator.orchestration import run_scenario
from emulator.topology import Topology
from tests.support.wire import request_tokens
from tests.support.wire import sip_fields

KERNEL = os.geteuid() == 0 and shutil.which("tcpdump") is not None
needs_kernel = pytest.mark.skipif(not KERNEL or shutil.which("tshark") is None,
                                  reason="needs root, tcpdump and tshark")
WARNING_101 = '399 127.0.20.3 "101 service authorisation failed"'


async def _run(topology: Topology, name: str, tmp_path: Path,
               scenario: Scenario | None = None) -> Report:
    report = await run_scenario(topology, scenario or SCENARIOS[name], pcap_root=tmp_path)
    assert report.passed, report.text(ladder=False)
    assert report.capture is not None
    return report


def _verdict(report: Report, step: str) -> str:
    return next(v.detail for v in report.verdicts if v.step == step)


@needs_kernel
async def test_the_user_leaves_the_primary_de_registered(mcx_topology: Topology,
                                                         tmp_path: Path) -> None:
    """The project's choice, on the wire: before attaching, the UE de-registers at home;
    the primary SIP core tells its MC server (third-party REGISTER, Expires: 0) and ends
    the UE's reg-event subscription."""
    report = await _run(mcx_topology, "default", tmp_path)
    capture = report.capture
    assert capture is not None
    rows = sip_fields(capture, 'sip.Method == "REGISTER" && ip.src == 127.0.10.2 && '
                      "ip.dst == 127.0.10.3", "sip.Expires")
    # The outer header first: tshark also reads the inner (message/sip) REGISTER's.
    assert [r[0].split(",")[0] for r in rows] == ["3600", "0"]
    leaving = [m for m in extract(capture) if m.step.startswith("leave-primary")]
    labels = [(m.source, m.destination, m.label) for m in leaving]
    assert ("primary.sip-core", "primary.mc-server", "REGISTER") in labels
    assert ("primary.mc-server", "primary.sip-core", "200 (REGISTER)") in labels
    assert ("primary.sip-core", "ue-alice", "NOTIFY") in labels
    terminated = sip_fields(capture, 'sip.Method == "NOTIFY" && ip.dst == 127.0.40.1',
                            "sip.Subscription-State")
    assert any(r[0].startswith("terminated") for r in terminated)
    assert "registration terminated (unregistered)" in _verdict(report, "leave-primary")


@needs_kernel
async def test_deregistration_drops_the_user_and_refuses_calls_to_it(
        mcx_topology: Topology, tmp_path: Path) -> None:
    report = await _run(mcx_topology, "deregister", tmp_path)
    capture = report.capture
    assert capture is not None
    # REGISTER Expires: 0 through the gateway, then the partner MC server is told.
    expires = sip_fields(capture, 'sip.Method == "REGISTER" && ip.src == 127.0.31.1',
                         "sip.Expires")
    assert [r[0] for r in expires][-1] == "0"
    third_party = sip_fields(capture, 'sip.Method == "REGISTER" && ip.src == 127.0.20.2 && '
                             "ip.dst == 127.0.20.3", "sip.Expires")
    assert [r[0].split(",")[0] for r in third_party][-1] == "0"
    after = [m for m in extract(capture) if m.step.startswith(("detach", "call-after"))]
    labels = [(m.source, m.destination, m.label) for m in after]
    assert ("ue-alice", "visited-plmn.gateway", "DELETE /attach/127.0.31.1") in labels
    assert ("partner.sip-core", "partner.mc-server", "INVITE") in labels
    assert any(label.startswith("480") and source == "partner.sip-core"
               for source, _, label in labels)
    assert "480" in _verdict(report, "call-after-deregister")


@needs_kernel
async def test_return_home_registers_and_calls_at_home_without_crossing(
        mcx_topology: Topology, tmp_path: Path) -> None:
    report = await _run(mcx_topology, "return-home", tmp_path)
    capture = report.capture
    assert capture is not None
    assert _verdict(report, "capture").startswith("0 packets between")
    home = [m for m in extract(capture)
            if m.step.startswith(("refresh-primary", "register-home", "private-call-home"))]
    labels = [(m.source, m.destination, m.label) for m in home]
    assert ("ue-alice", "primary.idms", "POST /token (refresh_token)") in labels
    assert ("primary.sip-core", "ue-alice", "200 (REGISTER)") in labels
    assert ("primary.sip-core", "primary.mc-server", "REGISTER") in labels
    assert ("ue-bob", "primary.sip-core", "200 (INVITE)") in labels
    assert not any(m.source == "ue-alice" and "POST /authorize" in m.label for m in home)
    # The token it registered with at home is the refreshed one, not the first.
    tokens = request_tokens(capture, "REGISTER", "127.0.40.1", "127.0.10.2")
    assert len({t["jti"] for t in tokens}) == 2  # the login's, then the refreshed one


@needs_kernel
async def test_the_partner_grants_no_escalated_service(mcx_topology: Topology,
                                                       tmp_path: Path) -> None:
    """scope-escalation: the UE asks for MCVideo, which the primary never granted; the
    partner token lacks it, the MCVideo call gets 403 + Warning 101, the SDS works."""
    report = await _run(mcx_topology, "scope-escalation", tmp_path)
    capture = report.capture
    assert capture is not None
    visited = request_tokens(capture, "REGISTER", "127.0.31.1", "127.0.30.1")
    assert visited and all("3gpp:mc:video_service" not in str(c["scope"]) for c in visited)
    assert any("3gpp:mc:ptt_service" in str(c["scope"]) for c in visited)
    refused = sip_fields(capture, 'sip.Status-Code == 403 && ip.src == 127.0.20.3 && '
                         'sip.CSeq.method == "INVITE"', "sip.Warning")
    assert refused and WARNING_101 in refused[0][0]
    delivered = sip_fields(capture, 'sip.Status-Code == 200 && ip.dst == 127.0.31.1 && '
                           'sip.CSeq.method == "MESSAGE"', "sip.Status-Code")
    assert delivered


async def test_a_security_token_for_another_partner_is_refused(mcx_topology: Topology,
                                                               tmp_path: Path) -> None:
    """wrong-partner brings the two-partners topology: partner refuses a token the
    primary addressed to partner-b (aud), and nobody ever talks to partner-b."""
    report = await _run(mcx_topology, "wrong-partner", tmp_path)
    refusal = _verdict(report, "partner-token")
    assert refusal.startswith("as expected, refused: 400 invalid_grant")
    assert "aud" in refusal
    assert "for https://127.0.50.4:9443" in _verdict(report, "security-token")
    if not KERNEL:
        pytest.skip("that nobody talks to partner-b is read from a kernel capture")
    assert report.capture is not None
    assert not [m for m in extract(report.capture) if "partner-b" in m.destination]


@needs_kernel
async def test_a_long_stay_refreshes_and_re_registers(mcx_topology: Topology,
                                                      tmp_path: Path) -> None:
    """long-stay with its lifetimes halved (partner token 10 s, registration 15 s) and a
    14 s stay instead of 75 s, for the suite's time budget (``run --scenario long-stay``
    has the whole stay): at least two refresh grants at the partner IdMS, as many
    re-REGISTERs each with a token newer than the last, and an SDS delivered after each."""
    scenario = SCENARIOS["long-stay"]
    shorter = dataclasses.replace(scenario, faults=dataclasses.replace(
        scenario.faults, partner_token_lifetime=10, partner_registration_expires=15,
        stay=14.0))
    report = await _run(mcx_topology, "long-stay", tmp_path, shorter)
    capture = report.capture
    assert capture is not None
    during = [m for m in extract(capture) if m.step.startswith("long-stay")]
    refreshes = [m for m in during if (m.source, m.destination, m.label) ==
                 ("ue-alice", "partner.idms", "POST /token (refresh_token)")]
    registers = [m for m in during if (m.source, m.destination, m.label) ==
                 ("ue-alice", "visited-plmn.gateway", "REGISTER")]
    delivered = [m for m in during if (m.source, m.destination, m.label) ==
                 ("visited-plmn.gateway", "ue-alice", "200 (MESSAGE)")]
    assert len(refreshes) >= 2 and len(registers) >= len(refreshes)
    assert len(delivered) >= len(refreshes)
    # Each cycle: refresh, then REGISTER, then the SDS answered, in that order.
    for refresh, register in zip(refreshes, registers, strict=False):
        assert refresh.time < register.time
    tokens = request_tokens(capture, "REGISTER", "127.0.31.1", "127.0.30.1")
    issued = [c["iat"] for c in tokens]
    assert issued == sorted(issued)  # never an older token again
    assert len({c["jti"] for c in tokens}) >= len(refreshes) + 1


@needs_kernel
async def test_ues_that_authorise_by_publish(mcx_topology: Topology, tmp_path: Path) -> None:
    """``service_authorisation: publish`` on every UE: the default run's REGISTERs carry
    no tokens, and each UE's PUBLISH (Event: poc-settings, 24.379 §7.3.3) with them gets
    its MC server's 200, at home and in the partner; the MC services then work."""
    topology = dataclasses.replace(mcx_topology, ues=tuple(
        dataclasses.replace(ue, service_authorisation="publish") for ue in mcx_topology.ues))
    report = await _run(topology, "default", tmp_path)
    capture = report.capture
    assert capture is not None
    for ue, first_hop in (("127.0.40.1", "127.0.10.2"), ("127.0.31.1", "127.0.30.1")):
        assert request_tokens(capture, "REGISTER", ue, first_hop) == []
        assert request_tokens(capture, "PUBLISH", ue, first_hop)
    published = sip_fields(capture, 'sip.Method == "PUBLISH" && ip.dst == 127.0.20.3',
                           "sip.Event")
    # carol's, dave's and alice's; the others are affiliations (Event: presence).
    assert [r[0] for r in published].count("poc-settings") == 3
    for mc_server in ("127.0.10.3", "127.0.20.3"):
        answered = sip_fields(capture, f'sip.CSeq.method == "PUBLISH" && ip.src == {mc_server}'
                              ' && sip.Status-Code == 200', "sip.Status-Code")
        assert answered
    assert _verdict(report, "partner-publish").startswith("200")

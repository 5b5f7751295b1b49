"""MC services in the partner system, judged from the default run's capture: the partner
profile and group documents, affiliation, the prearranged group call reaching both
partner-local members, the private call through the PSI, and the SDS's MCData parts.

Hosts: ue-alice 127.0.31.1 in the visited PLMN, partner MC server 127.0.20.3, partner
SIP core 127.0.20.2, ue-carol 127.0.41.1, ue-dave 127.0.41.2.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from emulator.capture import extract
from emulator.orchestration import SCENARIOS
from emulator.orchestration import Report
from emulator.orchestration import run_scenario
from emulator.topology import Topology
from tests.support.wire import sip_fields

KERNEL = os.geteuid() == 0 and shutil.which("tcpdump") is not None
needs_kernel = pytest.mark.skipif(not KERNEL or shutil.which("tshark") is None,
                                  reason="needs root, tcpdump and tshark")
PSI = "sip:mcptt-server@mcx.partner.example"


@pytest.fixture(scope="module")
def default_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    import asyncio

    from emulator.topology import DEFAULT_TOPOLOGY
    from emulator.topology import load_topology

    topology: Topology = load_topology(DEFAULT_TOPOLOGY)
    report = asyncio.run(run_scenario(topology, SCENARIOS["default"],
                                      pcap_root=tmp_path_factory.mktemp("services")))
    assert report.passed, report.text(ladder=False)
    return report


def _capture(report: Report) -> Path:
    assert report.capture is not None
    return report.capture


def test_the_default_scenario_names_its_service_steps_and_clauses(
        default_report: Report) -> None:
    steps = {v.step: v.clause for v in default_report.verdicts}
    assert "23.280 §10.16.2 steps 2-3" in steps["partner-profile"]
    assert "23.280 §10.8.3" in steps["affiliation"]
    assert "24.379 §10.1.1" in steps["group-call"]


@needs_kernel
def test_the_partner_profile_and_group_come_from_the_partner_cms_and_gms(
        default_report: Report) -> None:
    during = [m for m in extract(_capture(default_report))
              if m.step.startswith("partner-profile")]
    labels = [(m.source, m.destination, m.label) for m in during]
    assert any(s == "ue-alice" and d == "partner.cms" and label.startswith("GET /org.3gpp")
               for s, d, label in labels)
    assert any(s == "ue-alice" and d == "partner.gms" and
               label.startswith("GET /org.openmobilealliance.groups") for s, d, label in labels)
    assert ("partner.gms", "ue-alice", "HTTP 200") in labels


@needs_kernel
def test_the_group_call_reaches_both_partner_local_members(default_report: Report) -> None:
    capture = _capture(default_report)
    affiliations = sip_fields(capture, 'sip.Method == "PUBLISH" && sip.Event == "presence"',
                              "ip.src")
    assert {row[0] for row in affiliations} >= {"127.0.31.1", "127.0.41.1", "127.0.41.2"}
    during = [m for m in extract(capture) if m.step.startswith("group-call")]
    invited = {m.destination for m in during
               if m.label == "INVITE" and m.source == "partner.sip-core"}
    assert {"ue-carol", "ue-dave"} <= invited
    answered = {m.source for m in during if m.label == "200 (INVITE)"}
    assert {"ue-carol", "ue-dave"} <= answered
    # The caller's INVITE went to the PSI, prearranged, with the floor-control line.
    rows = sip_fields(capture, f'sip.Method == "INVITE" && ip.src == 127.0.31.1 && '
                      f'sip.r-uri == "{PSI}"', "xml.cdata", "sdp.media")
    assert any("prearranged" in r[0] and "sip:fire-1@mcx.partner.example" in r[0] and
               "MCPTT" in r[1] for r in rows)


@needs_kernel
def test_the_private_call_goes_through_the_psi(default_report: Report) -> None:
    capture = _capture(default_report)
    caller = sip_fields(capture, f'sip.Method == "INVITE" && ip.src == 127.0.31.1 && '
                        f'sip.r-uri == "{PSI}"', "xml.cdata")
    assert any("private" in r[0] and "sip:carol@mcx.partner.example" in r[0] for r in caller)
    # Towards carol the Request-URI is hers, and mcptt-info names caller and called.
    towards = sip_fields(capture, 'sip.Method == "INVITE" && ip.dst == 127.0.41.1 && '
                         '!(sip.r-uri contains "mcptt-server")', "xml.cdata")
    private = [r[0] for r in towards if "private" in r[0]]
    assert private and all("sip:alice.visitor@mcx.partner.example" in r and
                           "sip:carol@mcx.partner.example" in r for r in private)


@needs_kernel
def test_the_sds_carries_mcdata_signalling_and_payload(default_report: Report) -> None:
    rows = sip_fields(_capture(default_report),
                      'sip.Method == "MESSAGE" && ip.src == 127.0.31.1',
                      "sip.r-uri", "sip.msg_body")
    assert rows
    assert rows[0][0] == "sip:mcdata-server@mcx.partner.example"
    types = sip_fields(_capture(default_report),
                       'sip.Method == "MESSAGE" && ip.src == 127.0.31.1',
                       "mime_multipart.header.content-type")
    flattened = ",".join(r[0] for r in types)
    for part in ("application/vnd.3gpp.mcdata-info+xml",
                 "application/vnd.3gpp.mcdata-signalling",
                 "application/vnd.3gpp.mcdata-payload"):
        assert part in flattened

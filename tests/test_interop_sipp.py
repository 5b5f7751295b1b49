"""Interop with sipp, a SIP implementation we did not write (RFC 3261 §10, §17, §18)."""

from __future__ import annotations

import pytest

from nodes import Listener
from nodes import NodePlan
from nodes import SipCore
from nodes import SipCoreOptions
from tests.support.sipp import SIPP
from tests.support.sipp import run_sipp

pytestmark = [pytest.mark.sipp,
              pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) not installed")]


async def _registrar(host: str) -> SipCore:
    """The SIP core with no MC server: a plain registrar on UDP and TCP."""
    core = SipCore(NodePlan("registrar", "sip-core", "interop", host,
                            (Listener("udp", host, 0), Listener("tcp", host, 0)),
                            SipCoreOptions("mc.example.org")))
    await core.start()
    return core


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_registers_with_mcptt_info_body(transport: str) -> None:
    registrar = await _registrar("127.0.3.2")
    endpoint = registrar.endpoint
    try:
        target = endpoint.local(transport)
        result = await run_sipp("register_mcptt.xml", f"{target.host}:{target.port}",
                                local_ip="127.0.3.1", calls=30, rate=100,
                                transport="u1" if transport == "udp" else "t1")
    finally:
        await registrar.stop()
    assert result.returncode == 0, result.screen
    assert (result.successful, result.failed) == (30, 0)
    assert len(registrar.location) == 30
    binding = registrar.location.lookup("sip:user1@mc.example.org", now=endpoint.now())[0]
    assert "+g.3gpp.mcptt" in binding.contact.feature_tags


async def test_sipp_with_ten_percent_loss_completes_by_retransmission() -> None:
    """sipp -lost 10 drops requests and responses; Timer E on sipp's side and the
    Completed state of our non-INVITE server transaction (which re-sends the 200
    for a retransmitted REGISTER, §17.2.2) must still complete every transaction."""
    registrar = await _registrar("127.0.3.4")
    endpoint = registrar.endpoint
    try:
        target = endpoint.local("udp")
        result = await run_sipp("register_mcptt.xml", f"{target.host}:{target.port}",
                                local_ip="127.0.3.3", calls=100, rate=200,
                                extra=("-lost", "10"), timeout=120)
    finally:
        await registrar.stop()
    assert result.returncode == 0, result.screen
    assert (result.successful, result.failed) == (100, 0)
    assert result.retransmissions > 0, "no loss happened: the test proved nothing"
    assert len(registrar.location) == 100

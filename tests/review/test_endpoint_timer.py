"""The endpoint's one timer, in simulated time: exact on an idle endpoint, and at most one
firing per TIMER_GAP under load, however many transactions fall due meanwhile (a proxy at
thousands of REGISTER/s ends that many transactions a second, Timers J and K).  Nothing
fires before its deadline (RFC 3261 §17: a retransmission interval is a lower bound)."""

from __future__ import annotations

import asyncio

from emulator.sip.events import Address
from emulator.sip.message import Request
from emulator.sip.message import parse_message
from emulator.sip.timers import DEFAULT_TIMERS
from emulator.transport.endpoint import TIMER_GAP
from emulator.transport.endpoint import SipEndpoint
from emulator.transport.memory import MemoryHub

from .support import Peer
from .test_endpoint_close import FAR
from .test_endpoint_close import HOST
from .test_endpoint_close import Outcomes
from .test_endpoint_close import Recorder
from .test_endpoint_close import outgoing

T1 = DEFAULT_TIMERS.t1


class Sent:
    """What the endpoint puts on the wire, with the simulated time it went."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, Request]] = []

    def __call__(self, direction: str, local: Address, remote: Address, data: bytes) -> None:
        message = parse_message(data)
        if direction == "out" and isinstance(message, Request):
            self.messages.append((asyncio.get_running_loop().time(), message))

    def times(self, call_id: str) -> list[float]:
        return [at for at, message in self.messages if message.call_id == call_id]


async def _endpoint(hub: MemoryHub, sent: Sent) -> SipEndpoint:
    endpoint = SipEndpoint("timed", Recorder(), timers=DEFAULT_TIMERS, tap=sent)
    await endpoint.listen("udp", HOST, 5060, hub=hub)
    return endpoint


async def test_an_idle_endpoints_timer_fires_on_its_deadline() -> None:
    """One request to a silent peer: Timer E retransmits at T1, then 2·T1 later (§17.1.2.2),
    on the dot."""
    hub, sent = MemoryHub(), Sent()
    Peer(hub, FAR.host)  # receives, never answers
    endpoint = await _endpoint(hub, sent)
    try:
        request = outgoing(endpoint, "OPTIONS")
        start = asyncio.get_running_loop().time()
        endpoint.send_request(request, FAR, Outcomes())
        await asyncio.sleep(3.5 * T1)
        assert [round(at - start, 6) for at in sent.times(request.call_id)] == \
            [0.0, T1, 3 * T1]
    finally:
        await endpoint.close()


async def test_deadlines_within_the_gap_fire_together_and_none_early() -> None:
    """Three requests sent a millisecond apart fall due a millisecond apart: the first
    retransmits on its deadline, the two others together one TIMER_GAP after it, never
    before their own deadlines; and each still gets its 408 when Timer F ends it."""
    hub, sent = MemoryHub(), Sent()
    Peer(hub, FAR.host)
    endpoint = await _endpoint(hub, sent)
    try:
        loop = asyncio.get_running_loop()
        requests, outcomes, starts = [], [], []
        for _ in range(3):
            request, outcome = outgoing(endpoint, "OPTIONS"), Outcomes()
            starts.append(loop.time())
            endpoint.send_request(request, FAR, outcome)
            requests.append(request)
            outcomes.append(outcome)
            await asyncio.sleep(0.001)
        await asyncio.sleep(T1 + TIMER_GAP)
        first = starts[0] + T1
        retransmitted = [sent.times(r.call_id)[1] for r in requests]
        assert retransmitted[0] == first
        assert retransmitted[1] == retransmitted[2] == first + TIMER_GAP
        assert all(at >= start + T1 for at, start in zip(retransmitted, starts, strict=True))
        await asyncio.sleep(64 * T1)
        assert [[status for status, _, _ in o.finals] for o in outcomes] == [[408]] * 3
    finally:
        await endpoint.close()

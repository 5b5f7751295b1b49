"""SipEndpoint.close() with client transactions in flight, on an in-memory hub in
simulated time: every transaction user hears a final answer exactly once, nothing of the
endpoint runs afterwards (no retransmission, no late Timer F/B time-out, no request handed
to the node), a send after close fails at once and says why, and close() twice is harmless.

RFC 3261 §8.1.3.1: a client transaction that cannot get a response (here: its endpoint went
away) ends with a locally built final response; the endpoint's contract (its docstring) is
that "the final response always comes", 503 for a transport that cannot deliver."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from emulator.sip.builder import new_call_id
from emulator.sip.builder import new_request
from emulator.sip.events import Address
from emulator.sip.events import RequestReceived
from emulator.sip.events import ResponseReceived
from emulator.sip.headers import NameAddress
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.uri import URI
from emulator.transport.endpoint import SipEndpoint
from emulator.transport.memory import MemoryHub

from .support import FAST
from .support import Peer
from .support import request
from .support import settle

HOST = "127.0.88.60"
FAR = Address("udp", "127.0.88.61", 5060)
ME = Address("udp", HOST, 5060)
LONG = 64 * FAST.t1 * 4
"""Well past Timer B and F (64·T1) of FAST timers: anything still armed has fired."""


class Recorder:
    """A transaction user that only records what its endpoint hands it."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.strays: list[Response] = []

    def request_received(self, event: RequestReceived) -> None:
        self.requests.append(event.request)

    def response_received(self, event: ResponseReceived) -> None:
        self.strays.append(event.response)


class Outcomes:
    """What one client transaction's TU was told, and when (simulated time)."""

    def __init__(self) -> None:
        self.finals: list[tuple[int, str, float]] = []
        self.provisionals: list[int] = []

    def __call__(self, response: Response) -> None:
        if response.status < 200:
            self.provisionals.append(response.status)
        else:
            self.finals.append((response.status, response.reason,
                                asyncio.get_running_loop().time()))


def outgoing(endpoint: SipEndpoint, method: str) -> Request:
    """A fresh out-of-dialog request to FAR."""
    return new_request(method, URI("sip", user="bob", host=FAR.host, port=FAR.port),
                       via=endpoint.make_via("udp"),
                       from_=NameAddress(URI("sip", user="alice", host=HOST)),
                       to=NameAddress(URI("sip", user="bob", host=FAR.host)),
                       call_id=new_call_id(HOST))


async def open_endpoint(hub: MemoryHub, user: Recorder | None = None) -> SipEndpoint:
    endpoint = SipEndpoint("closing", user or Recorder(), timers=FAST)
    await endpoint.listen("udp", HOST, 5060, hub=hub)
    return endpoint


class LateLogs(logging.Handler):
    """Warnings the endpoint logs (e.g. "no udp transport" for a retransmission)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def endpoint_warnings() -> Iterator[LateLogs]:
    handler = LateLogs()
    log = logging.getLogger("emulator.transport.endpoint")
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)


async def test_close_gives_every_pending_client_transaction_one_final_503() -> None:
    """An INVITE, a MESSAGE (callback API) and an OPTIONS (awaited) are in flight to a
    peer that never answers: close() ends each with a 503 at once, and afterwards nothing
    is retransmitted and no timer time-out (408) reaches anyone."""
    hub = MemoryHub()
    far = Peer(hub, FAR.host)  # receives, never answers
    endpoint = await open_endpoint(hub)
    invite, message = Outcomes(), Outcomes()
    endpoint.send_request(outgoing(endpoint, "INVITE"), FAR, invite)
    endpoint.send_request(outgoing(endpoint, "MESSAGE"), FAR, message)
    options = asyncio.ensure_future(endpoint.request(outgoing(endpoint, "OPTIONS"), FAR))
    await settle(FAST.t1 * 3)  # a few retransmissions (Timers A and E) on the wire
    assert not options.done() and not invite.finals and not message.finals
    assert len(far.requests()) > 3
    closed_at = asyncio.get_running_loop().time()
    await endpoint.close()
    for outcome in (invite, message):
        assert [(s, t) for s, _, t in outcome.finals] == [(503, closed_at)]
        assert "closed" in outcome.finals[0][1]
    await settle(0)
    assert options.done() and options.result().status == 503
    seen = len(far.requests())
    await settle(LONG)
    assert len(far.requests()) == seen, "retransmitted after close"
    assert len(invite.finals) == len(message.finals) == 1, "a second final (Timer B/F 408)"
    # The endpoint is gone from the wire: what is sent to it is dropped.
    dropped = hub.dropped
    far.send(request("OPTIONS", f"sip:x@{HOST}", via=f"{FAR.host}:5060"), ME)
    assert hub.dropped == dropped + 1


async def test_a_request_a_tu_sends_while_the_endpoint_closes_is_not_left_running(
        endpoint_warnings: LateLogs) -> None:
    """A TU that reacts to the close-time 503 by sending again (the SIP core does: a
    refused third-party REGISTER de-registers the user and NOTIFYs its watchers) must
    hear a final answer for that request too, at close time; no timer of the closed
    endpoint may fire later (retransmissions with no transport, a 408 long after)."""
    hub = MemoryHub()
    Peer(hub, FAR.host)
    endpoint = await open_endpoint(hub)
    follow_up = Outcomes()

    def first(response: Response) -> None:
        if response.status >= 200:
            endpoint.send_request(outgoing(endpoint, "NOTIFY"), FAR, follow_up)

    endpoint.send_request(outgoing(endpoint, "MESSAGE"), FAR, first)
    await settle(FAST.t1)
    closed_at = asyncio.get_running_loop().time()
    await endpoint.close()
    await settle(LONG)
    assert [(s, t) for s, _, t in follow_up.finals] == [(503, closed_at)], follow_up.finals
    assert endpoint_warnings.messages == [], "the closed endpoint still tried to send"


async def test_a_send_after_close_fails_at_once_with_a_503_that_says_so(
        endpoint_warnings: LateLogs) -> None:
    """Sending on a closed endpoint (requests a node built before it stopped) is a clear,
    immediate failure: a locally built 503 (§8.1.3.1) naming the closed endpoint, never a
    wait for Timer F and never a hang; nothing reaches the wire."""
    hub = MemoryHub()
    far = Peer(hub, FAR.host)
    endpoint = await open_endpoint(hub)
    awaited, called = outgoing(endpoint, "OPTIONS"), outgoing(endpoint, "MESSAGE")
    await endpoint.close()
    loop = asyncio.get_running_loop()
    asked_at = loop.time()
    async with asyncio.timeout(LONG):
        response = await endpoint.request(awaited, FAR)
    assert response.status == 503 and "closed" in response.reason
    assert loop.time() == asked_at, "waited for a timer instead of failing at once"
    callback = Outcomes()
    endpoint.send_request(called, FAR, callback)
    assert callback.finals == [], "answered re-entrantly, inside send_request"
    await settle(LONG)
    assert [s for s, _, _ in callback.finals] == [503]
    assert far.inbox == [] and endpoint_warnings.messages == []


async def test_a_message_arriving_as_the_endpoint_closes_is_not_handed_to_the_node(
        endpoint_warnings: LateLogs) -> None:
    """A request already on the wire when the endpoint closes (delivery scheduled, not yet
    run) is not given to the node: a stopped node handles nothing, answers nothing and
    arms no server-transaction timer."""
    hub = MemoryHub()
    far = Peer(hub, FAR.host)
    user = Recorder()
    endpoint = await open_endpoint(hub, user)
    far.send(request("MESSAGE", f"sip:x@{HOST}", via=f"{FAR.host}:5060"), ME)
    await endpoint.close()  # before the loop has run the scheduled delivery
    await settle(LONG)
    assert user.requests == []
    assert far.responses() == [] and endpoint_warnings.messages == []


async def test_close_twice_is_harmless() -> None:
    hub = MemoryHub()
    Peer(hub, FAR.host)
    endpoint = await open_endpoint(hub)
    outcome = Outcomes()
    endpoint.send_request(outgoing(endpoint, "MESSAGE"), FAR, outcome)
    await endpoint.close()
    await endpoint.close()
    await settle(LONG)
    assert [s for s, _, _ in outcome.finals] == [503]
    assert endpoint.addresses == ()

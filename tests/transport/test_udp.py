"""The UDP transport (emulator/transport/udp.py) on real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from emulator.sip import TimerConfig
from emulator.sip.builder import new_branch
from emulator.sip.events import Address
from emulator.sip.events import RequestReceived
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.message import parse_message
from emulator.transport import SipEndpoint
from emulator.transport import udp
from emulator.transport.udp import UdpTransport

HOST = "127.0.77.1"


class Inbox:
    """A receiver that records datagrams and wakes a waiter at a count."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Address]] = []
        self.want = 0
        self.enough = asyncio.Event()

    def __call__(self, data: bytes, source: Address, *, stream: bool) -> None:
        assert not stream
        self.datagrams.append((data, source))
        if len(self.datagrams) >= self.want:
            self.enough.set()

    async def wait(self, count: int) -> None:
        self.want = count
        self.enough.clear()  # set for an earlier count
        if len(self.datagrams) < count:
            await asyncio.wait_for(self.enough.wait(), 10)


async def test_a_burst_is_read_whole_in_order_and_tapped() -> None:
    """Datagrams queued before the loop turns (a burst) are all read, more than one batch
    of them, in order, each shown to the tap with where it came from."""
    inbox, tapped = Inbox(), []
    transport = await UdpTransport.open(HOST, 0, inbox,
                                        tap=lambda *seen: tapped.append(seen))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.77.2", 0))
    count = 5 * udp.BATCH + 3
    try:
        for index in range(count):
            sender.sendto(b"OPTIONS %d" % index, (HOST, transport.local.port))
        await inbox.wait(count)
        assert [data for data, _ in inbox.datagrams] == [b"OPTIONS %d" % i for i in range(count)]
        source = Address("udp", "127.0.77.2", sender.getsockname()[1])
        assert {s for _, s in inbox.datagrams} == {source}
        assert tapped[0] == ("in", transport.local, source, b"OPTIONS 0")
    finally:
        sender.close()
        await transport.close()


async def test_the_largest_datagram_arrives_uncut() -> None:
    """The receive buffer holds any UDP payload (65,507 bytes over IPv4): nothing is cut."""
    inbox = Inbox()
    receiver = await UdpTransport.open(HOST, 0, inbox)
    sender = await UdpTransport.open("127.0.77.3", 0, Inbox())
    big = bytes(range(256)) * 255 + b"x" * 227
    assert len(big) == 65507
    try:
        sender.send(big, receiver.local)
        await inbox.wait(1)
        assert inbox.datagrams[0][0] == big
    finally:
        await sender.close()
        await receiver.close()


async def test_a_bad_destination_is_reported_and_the_socket_goes_on() -> None:
    """A peer's rport=70000 or a non-ASCII host: the error handler hears of it, nothing
    is sent or tapped, and the socket still sends to good destinations."""
    inbox, errors, tapped = Inbox(), [], []
    receiver = await UdpTransport.open(HOST, 0, inbox)
    sender = await UdpTransport.open("127.0.77.4", 0, Inbox(),
                                     tap=lambda *seen: tapped.append(seen),
                                     on_error=lambda where, why: errors.append(where))
    try:
        for bad in (Address("udp", HOST, 70000), Address("udp", "hôte.example", 5060)):
            sender.send(b"x", bad)
        assert [e.port for e in errors] == [70000, 5060] and tapped == []
        sender.send(b"still here", receiver.local)
        await inbox.wait(1)
        assert inbox.datagrams[0][0] == b"still here"
    finally:
        await sender.close()
        await receiver.close()


class _FullSocket:
    """A socket whose send buffer is full until ``drain``: sendto raises EAGAIN."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.full = True
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, target: tuple[str, int]) -> int:
        if self.full:
            raise BlockingIOError
        self.sent.append(data)
        return self.real.sendto(data, target)

    def fileno(self) -> int:
        return self.real.fileno()

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


async def test_a_full_send_buffer_queues_in_order_and_bounded() -> None:
    """EAGAIN from the kernel: datagrams wait in order and go when the socket is writable;
    beyond the bound they are refused to the error handler (dropped, as a full network
    would), never held without limit."""
    inbox, errors = Inbox(), []
    receiver = await UdpTransport.open(HOST, 0, inbox)
    sender = await UdpTransport.open("127.0.77.5", 0, Inbox(),
                                     on_error=lambda where, why: errors.append(why))
    full = _FullSocket(sender._sock)
    sender._sock = full  # type: ignore[assignment]
    try:
        for index in range(udp.MAX_PENDING + 2):
            sender.send(b"%d" % index, receiver.local)
        assert len(errors) == 2 and "queue full" in errors[0]
        full.full = False  # the kernel's buffer drains: the writer callback sends the rest
        await inbox.wait(udp.MAX_PENDING)
        assert [d for d, _ in inbox.datagrams] == [b"%d" % i for i in range(udp.MAX_PENDING)]
        sender.send(b"after", receiver.local)  # straight out again, behind nothing
        await inbox.wait(udp.MAX_PENDING + 1)
        assert inbox.datagrams[-1][0] == b"after"
    finally:
        await sender.close()
        await receiver.close()


async def test_a_port_in_use_is_an_error_and_close_is_final() -> None:
    """Binding a taken port raises OSError (no socket left open); after close, a send is
    reported, not attempted."""
    first = await UdpTransport.open(HOST, 0, Inbox())
    with pytest.raises(OSError):
        await UdpTransport.open(HOST, first.local.port, Inbox())
    errors: list[str] = []
    second = await UdpTransport.open("127.0.77.6", 0, Inbox(),
                                     on_error=lambda where, why: errors.append(why))
    await second.close()
    await second.close()  # twice is harmless
    second.send(b"x", first.local)
    assert errors == ["UDP socket closed"]
    await first.close()


async def test_each_datagrams_wait_in_the_queue_is_measured_from_the_kernels_stamp() -> None:
    """With ``on_wait``, the kernel's receive timestamp of each datagram is read: against a
    clock 5 s ahead, each waited 5 s (plus what it really waited, which is little)."""
    inbox, waits = Inbox(), []
    transport = await UdpTransport.open(HOST, 0, inbox, on_wait=waits.append,
                                        clock=lambda: time.time() + 5.0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for index in range(3):
            sender.sendto(b"OPTIONS %d" % index, (HOST, transport.local.port))
        await inbox.wait(3)
        assert len(waits) == 3
        assert all(5.0 <= wait < 5.0 + 10 for wait in waits), waits
    finally:
        sender.close()
        await transport.close()


async def test_a_name_is_refused_at_once_never_resolved() -> None:
    """sendto() would resolve a name synchronously (the resolver's 5 s time-out, with the
    node's loop held): a destination that is not an address literal is an error at once."""
    errors: list[tuple[Address, str]] = []
    transport = await UdpTransport.open(HOST, 0, Inbox(),
                                        on_error=lambda where, why: errors.append((where, why)))
    try:
        transport.send(b"BYE", Address("udp", "partner.example", 5060))
        transport.send(b"BYE", Address("udp", "127.0.77.9", 9))  # a literal: sent
        assert errors == [(Address("udp", "partner.example", 5060),
                           "send failed: not an IP address (no name is resolved)")]
    finally:
        await transport.close()



class _Quiet:
    def request_received(self, event: object) -> None:
        pass

    def response_received(self, event: object) -> None:
        pass


def _options(n: int) -> Request:
    message = parse_message(
        (f"OPTIONS sip:mc.example.org SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:5060;"
         f"branch={new_branch()}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{HOST}>;tag=p{n}\r\n"
         f"To: <sip:mc.example.org>\r\nCall-ID: udp-{n}@{HOST}\r\nCSeq: {n} OPTIONS\r\n"
         f"Content-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


async def test_a_send_failure_ends_only_the_transactions_waiting_on_that_address() -> None:
    """A failure to one destination answers its own transaction with 503 at once; those
    waiting on another address (a live peer that answers later) get their own answers;
    once all are answered the endpoint indexes none of them any more (a failure looks up
    its own transactions: it never walks every one that waits)."""
    # Timer F at 64·T1 = 640 s: only the failure and the peer's answers end these.
    endpoint = SipEndpoint("client", _Quiet(), timers=TimerConfig(t1=10.0, t2=40.0, t4=50.0))  # type: ignore[arg-type]
    await endpoint.listen("udp", HOST, 0)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.77.3", 0))
    peer.setblocking(False)
    live = Address("udp", "127.0.77.3", peer.getsockname()[1])
    loop = asyncio.get_running_loop()
    try:
        waiting = [asyncio.ensure_future(endpoint.request(_options(n), live))
                   for n in range(1, 4)]
        received = [await asyncio.wait_for(loop.sock_recvfrom(peer, 65535), 10)
                    for _ in waiting]
        failed = await asyncio.wait_for(
            endpoint.request(_options(9), Address("udp", "no-such-host", 5060)), 10)
        assert failed.status == 503
        assert not any(future.done() for future in waiting)
        for data, source in received:
            request = parse_message(data)
            assert isinstance(request, Request)
            peer.sendto(bytes(request.make_response(200)), source)
        assert [(await asyncio.wait_for(f, 10)).status for f in waiting] == [200, 200, 200]
        assert endpoint._waiting_on == {}  # type: ignore[attr-defined]
    finally:
        peer.close()
        await endpoint.close()


class _Forwarder:
    """A TU that sends each request it gets on to ``destination`` and answers it with the
    status of that request's final response."""

    def __init__(self, destination: Address) -> None:
        self.destination = destination
        self.endpoint: SipEndpoint | None = None

    def request_received(self, event: RequestReceived) -> None:
        endpoint = self.endpoint
        assert endpoint is not None and event.transaction is not None
        onward = _options(99)
        onward.headers.set("Via", endpoint.make_via("udp"))

        def answer(response: Response) -> None:
            if response.status >= 200:
                assert event.transaction is not None
                endpoint.send_response(event.request.make_response(response.status,
                                                                   to_tag="fw"),
                                       event.transaction)

        endpoint.send_request(onward, self.destination, answer)

    def response_received(self, event: object) -> None:
        pass


async def test_a_send_that_fails_while_a_request_is_handled_is_answered_at_once() -> None:
    """A TU handling a request sends on to where the transport cannot send (a name): the
    failure is that transaction's 503 within the same datagram's handling (§8.1.3.1), and
    the TU's answer to it reaches the requester, with no timer and no second datagram."""
    forwarder = _Forwarder(Address("udp", "no-such-host", 5060))
    endpoint = SipEndpoint("forwarder", forwarder)
    forwarder.endpoint = endpoint
    local = await endpoint.listen("udp", HOST, 0)
    uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uac.bind(("127.0.77.4", 0))
    uac.setblocking(False)
    try:
        uac.sendto(bytes(_options(1)), (local.host, local.port))
        data, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(uac, 65535),
                                         10)
        answer = parse_message(data)
        assert isinstance(answer, Response) and answer.status == 503
        assert endpoint._waiting_on == {}  # type: ignore[attr-defined]
    finally:
        uac.close()
        await endpoint.close()


@pytest.mark.parametrize("timed", [False, True])
async def test_a_drained_backlog_holds_the_socket_a_lone_datagram_never(timed: bool) -> None:
    """Read coalescing (a node alone in its process): after a turn that read a backlog to
    the end, the socket is left alone for ``coalesce`` seconds; what comes meanwhile waits
    in the kernel and is read once the hold ends, all of it.  A datagram read alone is not
    a backlog and holds nothing."""
    inbox = Inbox()
    held_at_delivery: list[bool] = []

    def receiver(data: bytes, source: Address, *, stream: bool) -> None:
        held_at_delivery.append(transport.holding)
        inbox(data, source, stream=stream)

    transport = await UdpTransport.open(HOST, 0, receiver,
                                        on_wait=(lambda wait: None) if timed else None)
    transport.coalesce = 0.05
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.77.2", 0))
    target = (HOST, transport.local.port)
    try:
        sender.sendto(b"alone", target)
        await inbox.wait(1)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not transport.holding  # one datagram: no backlog
        for index in range(3):  # before the loop turns: one turn reads all three
            sender.sendto(b"burst %d" % index, target)
        await inbox.wait(4)
        for _ in range(3):
            await asyncio.sleep(0)
        assert transport.holding
        sender.sendto(b"meanwhile", target)
        await inbox.wait(5)  # read, after the hold
        assert [data for data, _ in inbox.datagrams] == [
            b"alone", b"burst 0", b"burst 1", b"burst 2", b"meanwhile"]
        assert held_at_delivery == [False] * 5  # never read while held
    finally:
        sender.close()
        await transport.close()


async def test_closing_within_a_hold_ends_it() -> None:
    inbox = Inbox()
    transport = await UdpTransport.open(HOST, 0, inbox)
    transport.coalesce = 30.0
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for index in range(2):
            sender.sendto(b"burst %d" % index, (HOST, transport.local.port))
        await inbox.wait(2)
        for _ in range(3):
            await asyncio.sleep(0)
        assert transport.holding
        await transport.close()
        assert not transport.holding
    finally:
        sender.close()


async def test_reads_coalesce_only_where_a_process_says_so() -> None:
    """Off by default (inproc, tests, tools: several nodes may share the loop); a node's own
    process turns it on before its sockets open (``serve_plan``)."""
    inbox = Inbox()
    plain = await UdpTransport.open(HOST, 0, inbox)
    udp.coalesce_reads()
    try:
        serving = await UdpTransport.open(HOST, 0, inbox)
    finally:
        udp.coalesce_reads(0.0)
    try:
        assert plain.coalesce == 0.0
        assert serving.coalesce == udp.COALESCE > 0
    finally:
        await plain.close()
        await serving.close()


def _peer(host: str) -> socket.socket:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((host, 0))
    peer.setblocking(False)
    return peer


def _waiting(peer: socket.socket) -> list[bytes]:
    """What has reached ``peer`` so far, read without waiting."""
    got = []
    while True:
        try:
            got.append(peer.recv(65535))
        except BlockingIOError:
            return got


@pytest.mark.parametrize("coalescing", [False, True])
async def test_a_coalescing_turn_sends_when_its_datagrams_are_handled(coalescing: bool) -> None:
    """What a node sends while it handles a coalescing turn's datagrams leaves at the
    turn's end, in order, so that the peer is woken once for all of it; without coalescing
    each goes at once.  A send that fails is reported then, the rest still go."""
    peer, sender = _peer("127.0.77.8"), _peer("127.0.77.2")
    errors: list[Address] = []
    seen_by_peer: list[list[bytes]] = []
    errors_by_then: list[int] = []
    reply_to = Address("udp", "127.0.77.8", peer.getsockname()[1])

    def receiver(data: bytes, source: Address, *, stream: bool) -> None:
        seen_by_peer.append(_waiting(peer))  # what earlier replies had reached it by now
        errors_by_then.append(len(errors))
        transport.send(b"re " + data, Address("udp", "hôte.example", 5060))  # fails
        transport.send(b"re " + data, reply_to)

    transport = await UdpTransport.open(HOST, 0, receiver,
                                        on_error=lambda where, why: errors.append(where))
    transport.coalesce = 0.05 if coalescing else 0.0
    try:
        for index in range(3):  # before the loop turns: one turn reads all three
            sender.sendto(b"%d" % index, (HOST, transport.local.port))
        async with asyncio.timeout(10):
            while len(seen_by_peer) < 3:
                await asyncio.sleep(0)
        if coalescing:
            assert seen_by_peer == [[], [], []]  # nothing out mid-turn, not even failures
            assert errors_by_then == [0, 0, 0]
        else:
            assert seen_by_peer == [[], [b"re 0"], [b"re 1"]] and errors_by_then == [0, 1, 2]
        got = [data for seen in seen_by_peer for data in seen]
        async with asyncio.timeout(10):
            while len(got) < 3:
                got += _waiting(peer)
                await asyncio.sleep(0)
        assert got == [b"re 0", b"re 1", b"re 2"]
        assert [e.host for e in errors] == ["hôte.example"] * 3
    finally:
        peer.close()
        sender.close()
        await transport.close()


async def test_closing_within_a_coalescing_turn_sends_what_the_turn_sent_first() -> None:
    peer, sender = _peer("127.0.77.8"), _peer("127.0.77.2")
    reply_to = Address("udp", "127.0.77.8", peer.getsockname()[1])

    def receiver(data: bytes, source: Address, *, stream: bool) -> None:
        transport.send(b"last words", reply_to)
        with pytest.raises(StopIteration):  # close() awaits nothing: closed right here
            transport.close().send(None)

    transport = await UdpTransport.open(HOST, 0, receiver)
    transport.coalesce = 0.05
    try:
        sender.sendto(b"bye", (HOST, transport.local.port))
        got = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(peer, 65535), 10)
        assert got == b"last words"
    finally:
        peer.close()
        sender.close()
        await transport.close()

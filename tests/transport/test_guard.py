"""Connection hygiene (emulator.transport.guard): who may connect, how many, for how long.

The policy is driven here with a fake clock and fake transports, so time-outs are
checked to the second without waiting; the socket tests after them check the wiring
on real TCP and TLS listeners on 127.0.60.x.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import ssl
import threading
from pathlib import Path
from typing import Any
from typing import cast

import pytest
import uvloop

from emulator.identity import issue_server_certificate
from emulator.identity import make_ca
from emulator.keystore import write_credential
from emulator.sip import Address
from emulator.sip import TimerConfig
from emulator.sip.builder import new_branch
from emulator.sip.message import Request
from emulator.sip.message import parse_message
from emulator.topology.model import ConnectionLimits
from emulator.transport import SipEndpoint
from emulator.transport import client_context
from emulator.transport.guard import DescriptorBudget
from emulator.transport.guard import GuardedConnection
from emulator.transport.guard import ListenerGuard
from emulator.transport.guard import quiet_resource_errors
from emulator.transport.tls import server_context
from nodes import Listener
from nodes import NodePlan
from nodes import SipCore
from nodes import SipCoreOptions

LIMITS = ConnectionLimits(max_connections=3, max_per_source=2, header_timeout=32.0,
                          idle_timeout=180.0)


class FakeTransport(asyncio.Transport):
    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host
        self.aborted = False
        self.written = bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.host, 40000) if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def pause_reading(self) -> None:
        pass


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.made = False
        self.data = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True

    def data_received(self, data: bytes) -> None:
        self.data += data


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_guard(limits: ConnectionLimits = LIMITS, *, capacity: int = 100,
               admit: Any = None, framed: bool = True
               ) -> tuple[ListenerGuard, Clock, list[Recorder]]:
    clock = Clock()
    served: list[Recorder] = []

    def serve(_: GuardedConnection) -> Recorder:
        served.append(Recorder())
        return served[-1]

    guard = ListenerGuard("test", limits, serve, admit=admit,
                          budget=DescriptorBudget(capacity), clock=clock, framed=framed)
    return guard, clock, served


def connect(guard: ListenerGuard, host: str) -> tuple[GuardedConnection, FakeTransport]:
    connection = guard.protocol()
    transport = FakeTransport(host)
    connection.connection_made(transport)
    return connection, transport


async def test_a_source_over_its_cap_is_refused_and_others_still_get_in() -> None:
    guard, _, served = make_guard()
    connect(guard, "127.0.60.1")
    connect(guard, "127.0.60.1")
    _, third = connect(guard, "127.0.60.1")
    assert third.aborted
    _, other = connect(guard, "127.0.60.2")
    assert not other.aborted
    assert len(served) == 3 and len(guard.connections) == 3
    assert guard.refused["per-source cap"] == 1
    guard.close()


async def test_a_full_listener_makes_room_by_closing_its_oldest_silent_connection() -> None:
    guard, _, _ = make_guard()
    talker, _ = connect(guard, "127.0.60.1")
    talker.mark(busy=False)  # a UE that has sent its REGISTER
    _, silent1 = connect(guard, "127.0.60.2")
    _, silent2 = connect(guard, "127.0.60.3")
    _, newcomer = connect(guard, "127.0.60.4")
    assert silent1.aborted and not silent2.aborted and not newcomer.aborted
    assert guard.refused["evicted"] == 1
    # Everyone held has spoken: the newcomer is the one refused.
    for connection in list(guard.connections):
        connection.mark(busy=False)
    _, late = connect(guard, "127.0.60.5")
    assert late.aborted and guard.refused["listener cap"] == 1
    assert len(guard.connections) == 3
    guard.close()


async def test_the_process_budget_binds_every_listener_together() -> None:
    budget = DescriptorBudget(2)
    guards = [ListenerGuard(f"l{i}", ConnectionLimits(), lambda _: Recorder(), budget=budget)
              for i in range(2)]
    first, _ = connect(guards[0], "127.0.60.1")
    first.mark(busy=False)
    second, _ = connect(guards[1], "127.0.60.2")
    second.mark(busy=False)
    _, refused = connect(guards[1], "127.0.60.3")
    assert refused.aborted and budget.used == 2
    guards[0].release(first)
    _, admitted = connect(guards[1], "127.0.60.3")
    assert not admitted.aborted and budget.used == 2
    for guard in guards:
        guard.close()
    assert budget.used == 0


async def test_the_admit_test_refuses_before_anything_is_served() -> None:
    guard, _, served = make_guard(admit=lambda host: host == "127.0.60.9")
    _, refused = connect(guard, "127.0.60.1")
    _, admitted = connect(guard, "127.0.60.9")
    assert refused.aborted and not admitted.aborted
    assert len(served) == 1 and guard.refused["not admitted"] == 1
    guard.close()


async def test_a_message_must_be_complete_within_the_header_timeout() -> None:
    guard, clock, _ = make_guard()
    connection, _ = connect(guard, "127.0.60.1")  # accepted at 0: its first message is due
    clock.now = 31.0
    assert guard.expired(clock.now) == []
    clock.now = 33.0
    assert guard.expired(clock.now) == [(connection, "incomplete message")]
    connection.mark(busy=False)  # it arrived after all
    assert guard.expired(clock.now) == []
    clock.now = 100.0
    connection.data_received(b"REGISTER sip:x SIP/2.0\r\n")  # half a message...
    connection.mark(busy=True)
    clock.now = 131.0
    assert guard.expired(clock.now) == []
    clock.now = 133.0
    assert guard.expired(clock.now) == [(connection, "incomplete message")]
    guard.sweep()
    assert guard.connections == {} and guard.refused["incomplete message"] == 1
    guard.close()


async def test_an_idle_connection_is_closed_and_keep_alives_keep_it() -> None:
    guard, clock, served = make_guard()
    connection, transport = connect(guard, "127.0.60.1")
    connection.mark(busy=False)
    for second in range(100, 1000, 100):  # RFC 5626 CRLF keep-alives every 100 s
        clock.now = float(second)
        connection.data_received(b"\r\n\r\n")
        assert guard.expired(clock.now) == [], second
    assert served[0].data.count(b"\r\n\r\n") == 9  # the serving protocol saw them
    clock.now = 900.0 + 181.0
    assert guard.expired(clock.now) == [(connection, "idle")]
    guard.sweep()
    assert transport.aborted and guard.refused["idle"] == 1
    guard.close()


async def test_unframed_any_byte_between_messages_starts_one() -> None:
    guard, clock, _ = make_guard(framed=False)  # HTTP: no framer tells the guard
    connection, _ = connect(guard, "127.0.60.1")
    connection.mark(busy=False)  # the first request was answered
    clock.now = 50.0
    connection.data_received(b"GET / HT")
    clock.now = 83.0
    assert guard.expired(clock.now) == [(connection, "incomplete message")]
    guard.close()


def test_accept_out_of_descriptors_is_logged_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    others: list[str] = []
    loop.set_exception_handler(lambda _, context: others.append(context["message"]))
    try:
        quiet_resource_errors(loop)
        quiet_resource_errors(loop)  # idempotent: not wrapped twice
        with caplog.at_level(logging.WARNING, logger="emulator.transport.guard"):
            for _ in range(500):
                loop.call_exception_handler({
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files")})
            loop.call_exception_handler({"message": "something else"})
    finally:
        loop.close()
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
    assert others == ["something else"]


# ------------------------------------------------------------------ real sockets
DOMAIN = "mc.example.org"
SOCKET_LIMITS = ConnectionLimits(max_connections=8, max_per_source=2, header_timeout=0.3,
                                 idle_timeout=30.0)


def options(host: str, port: int, transport: str = "TCP", n: int = 1) -> bytes:
    return (f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {host}:{port};branch={new_branch()}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@{host}>;tag=p{n}\r\n"
            f"To: <sip:{DOMAIN}>\r\nCall-ID: guard-{n}-{new_branch()}@{host}\r\n"
            f"CSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def as_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (bounded: a hang fails the test)."""
    return await asyncio.wait_for(reader.read(), 30)


@pytest.fixture
async def core() -> Any:
    node = SipCore(NodePlan("guarded", "sip-core", "test", "127.0.60.10",
                            (Listener("tcp", "127.0.60.10", 0),), SipCoreOptions(DOMAIN),
                            connection_limits=SOCKET_LIMITS))
    await node.start()
    yield node
    await node.stop()


async def test_over_tcp_the_caps_hold_and_admitted_peers_are_served(core: SipCore) -> None:
    target = core.endpoint.local("tcp")
    held = []
    for _ in range(2):
        held.append(await asyncio.open_connection(target.host, target.port,
                                                  local_addr=("127.0.60.1", 0)))
    reader, third = await asyncio.open_connection(target.host, target.port,
                                                  local_addr=("127.0.60.1", 0))
    assert await until_closed(reader) == b""  # the third from one source: closed at once
    third.close()
    reader, writer = held[0]
    host, port = writer.get_extra_info("sockname")[:2]
    writer.write(options(host, port))
    status = await asyncio.wait_for(reader.readline(), 30)
    assert status.startswith(b"SIP/2.0 200"), status
    for _, writer in held:
        writer.close()


async def test_over_tcp_half_a_message_is_cut_off_at_the_header_timeout(core: SipCore) -> None:
    target = core.endpoint.local("tcp")
    reader, writer = await asyncio.open_connection(target.host, target.port,
                                                   local_addr=("127.0.60.2", 0))
    writer.write(options("127.0.60.2", 5060)[:60])  # and nothing more
    assert await until_closed(reader) == b""
    writer.close()
    assert core.endpoint.guard_state()["tcp"]["refused"] == {"incomplete message": 1}


def _tls_server(tmp_path: Path, host: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context for ``host``, client context trusting its CA)."""
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("Guard test", now=now)
    certificate, key = write_credential(
        tmp_path, "server", issue_server_certificate(ca, "server", hosts=[host], now=now))
    return server_context(str(certificate), str(key)), client_context([ca.certificate_pem()])


def _run_on(loop: str, main: Any) -> Any:
    return uvloop.run(main) if loop == "uvloop" else asyncio.run(main)


async def test_over_tls_a_refused_peer_never_gets_a_handshake(tmp_path: Path) -> None:
    server_ssl, client = _tls_server(tmp_path, "127.0.60.11")
    endpoint = SipEndpoint("guarded-tls", user=None)  # type: ignore[arg-type]
    await endpoint.listen("tls", "127.0.60.11", 0, server_ssl=server_ssl,
                          admit=lambda host: host == "127.0.60.3")
    target = endpoint.local("tls")
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            await asyncio.wait_for(asyncio.open_connection(
                target.host, target.port, ssl=client, server_hostname="127.0.60.11",
                local_addr=("127.0.60.4", 0)), 30)
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            target.host, target.port, ssl=client, server_hostname="127.0.60.11",
            local_addr=("127.0.60.3", 0)), 30)
        assert writer.get_extra_info("ssl_object") is not None  # the admitted one: TLS up
        writer.close()
        assert endpoint.guard_state()["tls"]["refused"] == {"not admitted": 1}
    finally:
        await endpoint.close()


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_over_tls_a_client_hello_read_before_the_handshake_began_is_not_lost(
        tmp_path: Path, loop: str) -> None:
    """uvloop ignores pause_reading() in connection_made: a ClientHello sent with the
    connect reached the guard before start_tls; it must reach the TLS layer, or the
    handshake hangs until the client gives up (seen under load as login timeouts)."""
    server_ssl, client = _tls_server(tmp_path, "127.0.60.12")
    limits = ConnectionLimits(max_connections=200, max_per_source=200)

    async def main() -> int:
        guard = ListenerGuard("tls", limits, lambda _: _Echo(), ssl_context=server_ssl)
        server = await guard.listen("127.0.60.12", 0)
        port = server.sockets[0].getsockname()[1]

        async def echoed() -> bool:
            reader, writer = await asyncio.open_connection(
                "127.0.60.12", port, ssl=client, server_hostname="127.0.60.12")
            writer.write(b"x")
            answer = await reader.readexactly(1)
            writer.close()
            return answer == b"x"

        try:  # many at once: some ClientHellos arrive before their handshake task runs
            done = await asyncio.wait_for(asyncio.gather(*(echoed() for _ in range(100))), 60)
        finally:
            guard.close()
            server.close()
        return sum(done)

    assert _run_on(loop, main()) == 100


def _split_hello_client(host: str, port: int, context: ssl.SSLContext,
                        go: threading.Event, sent: threading.Event, result: list[object]) -> None:
    """A TLS client whose ClientHello goes in two segments: the second once ``go``."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
    try:
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        sock.sendall(hello[:100])
        go.wait(5)
        sock.sendall(hello[100:])  # on loopback, in the server's socket once sent
        sent.set()
        sock.settimeout(10)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the handshake") from None
                incoming.write(data)
        tls.write(b"x")
        sock.sendall(outgoing.read())
        while True:
            try:
                result.append(tls.read(1))
                break
            except ssl.SSLWantReadError:
                incoming.write(sock.recv(65536))
    except Exception as exc:  # reported to the test
        result.append(repr(exc))
    finally:
        sock.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_over_tls_a_client_hello_split_around_the_handshake_start_stays_in_order(
        tmp_path: Path, loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first segment read before the handshake began (uvloop), its second waiting in
    the socket when start_tls resumes reading: the first must reach the TLS layer first."""
    server_ssl, client_ssl = _tls_server(tmp_path, "127.0.60.13")
    go, sent = threading.Event(), threading.Event()
    received, handshake = GuardedConnection.data_received, GuardedConnection._handshake
    first_read: list[asyncio.Event] = []

    def data_received(self: GuardedConnection, data: bytes) -> None:
        received(self, data)
        if self._pre_tls:
            first_read[0].set()

    async def late_handshake(self: GuardedConnection, transport: asyncio.Transport) -> None:
        if loop == "uvloop":  # it reads the first segment despite the pause
            await asyncio.wait_for(first_read[0].wait(), 10)
        go.set()
        sent.wait(5)  # the loop held until the second segment is in the socket
        await handshake(self, transport)

    monkeypatch.setattr(GuardedConnection, "data_received", data_received)
    monkeypatch.setattr(GuardedConnection, "_handshake", late_handshake)
    result: list[object] = []

    async def main() -> None:
        first_read.append(asyncio.Event())
        guard = ListenerGuard("tls", ConnectionLimits(max_connections=10, max_per_source=10),
                              lambda _: _Echo(), ssl_context=server_ssl)
        server = await guard.listen("127.0.60.13", 0)
        client = threading.Thread(target=_split_hello_client, args=(
            "127.0.60.13", server.sockets[0].getsockname()[1], client_ssl, go, sent, result))
        client.start()
        try:
            while client.is_alive():
                await asyncio.sleep(0.01)
        finally:
            client.join()
            guard.close()
            server.close()

    _run_on(loop, main())
    assert result == [b"x"]


class _Silent:
    def request_received(self, event: object) -> None:
        pass

    def response_received(self, event: object) -> None:
        pass


async def test_a_connection_lost_mid_transaction_is_a_prompt_503_then_a_new_connection(
        ) -> None:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = \
        asyncio.Queue()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(peer, "127.0.60.12", 0)
    port = server.sockets[0].getsockname()[1]
    # Timer F at 64·T1 = 640 s: only the transport error can answer within the test.
    endpoint = SipEndpoint("client", _Silent(), timers=TimerConfig(t1=10.0, t2=40.0, t4=50.0))  # type: ignore[arg-type]
    await endpoint.listen("tcp", "127.0.60.13", 0)
    destination = Address("tcp", "127.0.60.12", port)
    try:
        first = asyncio.ensure_future(endpoint.request(
            as_request(options("127.0.60.13", 5060)), destination))
        reader, writer = await asyncio.wait_for(accepted.get(), 30)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)  # the request arrived
        writer.transport.abort()  # reset in the middle of the transaction
        response = await asyncio.wait_for(first, 30)
        assert response.status == 503
        second = asyncio.ensure_future(endpoint.request(
            as_request(options("127.0.60.13", 5060, n=2)), destination))
        reader, writer = await asyncio.wait_for(accepted.get(), 30)  # a new connection
        assert b"CSeq: 2 OPTIONS" in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        writer.close()
        assert (await asyncio.wait_for(second, 30)).status == 503
        assert endpoint._transports["tcp"].connection_count == 0  # type: ignore[attr-defined]
    finally:
        await endpoint.close()
        server.close()

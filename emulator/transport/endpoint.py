"""The asyncio adapter around the sans-IO transaction layer.

A :class:`SipEndpoint` owns one :class:`~emulator.sip.transaction.TransactionLayer`,
the transports it listens on, and exactly one timer handle.  After every
input (bytes, a TU call, a timer) it *pumps*: hands events to the
transaction user, drains ``messages_to_send()`` to the transports, and
re-arms the single ``loop.call_at`` for ``get_timer()``.

The transaction user (a node) is plain synchronous code reacting to events;
only :meth:`SipEndpoint.request`, which waits for a final response, is async.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Protocol

from emulator.sip.builder import new_branch
from emulator.sip.builder import new_tag
from emulator.sip.events import Address
from emulator.sip.events import MessageDropped
from emulator.sip.events import RequestReceived
from emulator.sip.events import ResponseReceived
from emulator.sip.events import TransactionKey
from emulator.sip.events import TransactionTimedOut
from emulator.sip.events import TransportFailed
from emulator.sip.headers import Via
from emulator.sip.message import DEFAULT_LIMITS
from emulator.sip.message import ParserLimits
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.timers import DEFAULT_TIMERS
from emulator.sip.timers import TimerConfig
from emulator.sip.transaction import State
from emulator.sip.transaction import TransactionLayer
from emulator.topology.model import ConnectionLimits

from .base import Tap
from .base import Transport
from .guard import DEFAULT_CONNECTION_LIMITS
from .impair import Impairer
from .memory import MemoryHub
from .memory import MemoryTransport
from .stream import StreamTransport
from .udp import UdpTransport

logger = logging.getLogger(__name__)


class TransactionUser(Protocol):
    """What a node implements to receive SIP from its endpoint."""

    def request_received(self, event: RequestReceived) -> None: ...

    def response_received(self, event: ResponseReceived) -> None: ...


ProvisionalHandler = Callable[[Response], None]
ResponseHandler = Callable[[Response], None]
CLOSED = "Service Unavailable (endpoint closed)"
"""The reason phrase of the 503 a closed endpoint's client transactions end with."""
TIMER_GAP = 0.005
"""Seconds at least between two firings of an endpoint's timer; what falls due meanwhile
fires together at the end of the gap, at most this late.  Under load every transaction
that ends (Timer J, K: 2,500 a second each in a proxy at 2,500 REGISTER/s) is a deadline
of its own, and firing for each, a call through the loop and a re-armed handle, was
2-3 % of a node's CPU; at most 200 firings a second cost a tenth of that.  A timer on an
idle endpoint is exact.  Project-defined: 5 ms is 1 % of T1 (RFC 3261 §17.1.1.1)."""


class SipEndpoint:
    """One node's SIP presence: transports, transaction layer, timer, TU."""

    def __init__(self, name: str, user: TransactionUser, *, timers: TimerConfig = DEFAULT_TIMERS,
                 limits: ParserLimits = DEFAULT_LIMITS, tap: Tap | None = None,
                 client_ssl: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.user = user
        self.layer = TransactionLayer(timers=timers, limits=limits, name=name)
        self.tap = tap
        self.client_ssl = client_ssl
        self.dropped: list[MessageDropped] = []
        self._limits = limits
        self._transports: dict[str, Transport] = {}
        self._addresses: tuple[Address, ...] = ()
        """Where it listens, kept as listeners come and go: a node names itself (its URI,
        whether a Route is its own) on nearly every message."""
        self._ports: frozenset[int] = frozenset()
        self._waiters: dict[TransactionKey, tuple[ResponseHandler, Request, Address]] = {}
        self._waiting_on: dict[tuple[str, str, int | None], dict[TransactionKey, None]] = {}
        """The waiters' keys by what a transport failure takes down (:func:`_route`): a
        failure then touches its own transactions only, however many others wait."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._fired = float("-inf")
        """When the timer last fired (:data:`TIMER_GAP`)."""
        self._pumping = False
        """A pump is running: what a TU's call from within adds, it drains (:meth:`_pump`)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._time: Callable[[], float] | None = None
        """The loop's clock, read without a call through the loop (:meth:`now`)."""
        self._epoch: float | None = None
        self._closed = False
        self.impairer = Impairer()
        """What the links to impaired hosts do to the packets sent there."""
        self.screen: Callable[[bytes, Address], bool] | None = None
        """The node's look at each message before it is parsed (False: not processed);
        the gateway's flood control."""
        self.queue_clock: Callable[[], float] = time.time
        """What a UDP datagram's kernel receive timestamp (wall clock) is compared with to
        tell its wait in the queue (``on_wait`` of :meth:`listen`); read at listen.  The
        wall clock itself, not the loop's: a step of the system clock then skews the
        waits of the datagrams around it only.  A test passes one that runs ahead."""

    def __repr__(self) -> str:
        return f"<SipEndpoint {self.name} {sorted(map(str, self.addresses))}>"

    # ----------------------------------------------------------- set-up
    async def listen(self, transport: str, host: str, port: int = 0, *,
                     server_ssl: ssl.SSLContext | None = None,
                     hub: MemoryHub | None = None,
                     connection_limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS,
                     admit: Callable[[str], bool] | None = None,
                     on_wait: Callable[[float], None] | None = None) -> Address:
        """Open a transport (udp, tcp, tls, or in-memory when ``hub`` is given).

        For tcp and tls, ``connection_limits`` and ``admit(host)`` guard the accepted
        connections (``emulator.transport.guard``).  For udp, ``on_wait(seconds)`` hears
        how long each datagram waited in the socket's receive queue."""
        self._loop = asyncio.get_running_loop()
        self._time = _clock_of(self._loop)
        if transport in self._transports:
            raise ValueError(f"{self.name} already listens on {transport}")
        adapter: Transport
        if hub is not None:
            adapter = MemoryTransport(hub, Address(transport, host, port), self._receive, self.tap)
        elif transport == "udp":
            adapter = await UdpTransport.open(host, port, self._receive, tap=self.tap,
                                              on_error=self._unreachable, on_wait=on_wait,
                                              clock=self.queue_clock)
        elif transport in ("tcp", "tls"):
            adapter = await StreamTransport.open(
                transport, host, port, self._receive, tap=self.tap, on_error=self._unreachable,
                server_ssl=server_ssl, client_ssl=self.client_ssl, limits=self._limits,
                connection_limits=connection_limits, admit=admit)
        else:
            raise ValueError(f"unknown transport {transport!r}")
        self._transports[transport] = adapter
        self._listening()
        return adapter.local

    def _listening(self) -> None:
        self._addresses = tuple(t.local for t in self._transports.values())
        # The ports really bound: a port 0 listener got its own from the kernel.
        self._ports = frozenset(address.port for address in self._addresses)

    @property
    def closed(self) -> bool:
        """:meth:`close` has begun: the 503s it gives are its own, no peer's answer."""
        return self._closed

    @property
    def addresses(self) -> tuple[Address, ...]:
        return self._addresses

    @property
    def ports(self) -> frozenset[int]:
        return self._ports

    def guard_state(self) -> dict[str, object]:
        """Per stream transport, what its listener guard holds and refused."""
        return {name: adapter.guard.state() for name, adapter in self._transports.items()
                if isinstance(adapter, StreamTransport)}

    def local(self, transport: str) -> Address:
        return self._transports[transport].local

    def serves(self, transport: str) -> bool:
        """Whether this endpoint has ``transport`` (udp, tcp, tls) to send on."""
        return transport in self._transports

    def disconnect(self, host: str) -> int:
        """Close every TCP/TLS connection with ``host``; how many."""
        return sum(adapter.disconnect(host) for adapter in self._transports.values()
                   if isinstance(adapter, StreamTransport))

    def make_via(self, transport: str) -> Via:
        """A fresh top Via for a request sent on ``transport`` (branch and rport)."""
        local = self.local(transport)
        return Via(transport.upper(), local.host, local.port,
                   (("branch", new_branch()), ("rport", None)))

    async def close(self) -> None:
        """Stop for good: every client transaction still waiting ends with a 503 (its
        TU's final answer), then no timer fires and nothing is received or sent.  A
        request sent from then on gets the same 503 at once (:meth:`send_request`).
        Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        waiters, self._waiters = self._waiters, {}
        self._waiting_on.clear()
        for on_response, request, _ in waiters.values():
            # What a TU sends in answer (a proxy relays the 503) still goes out.
            on_response(request.make_response(503, CLOSED))
        self.impairer.close()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        for transport in self._transports.values():
            await transport.close()
        self._transports.clear()
        self._listening()

    # ----------------------------------------------------------- TU calls
    def send_request(self, request: Request, destination: Address,
                     on_response: ResponseHandler) -> TransactionKey:
        """Start a client transaction; ``on_response`` gets every response, 1xx included.

        The final response always comes: a timeout becomes a 408 and a
        transport failure a 503, built locally as §8.1.3.1 prescribes.
        This is the proxy's way in (no task per request); :meth:`request`
        wraps it for code that simply waits.  On a closed endpoint nothing is sent:
        ``on_response`` gets a 503 at once (from the loop, not from within this call).
        """
        if self._closed:
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(on_response, request.make_response(503, CLOSED))
            return ("c", request.top_via.branch or "", request.method)  # no transaction
        key = self.layer.send_request(request, destination, now=self.now())
        self._waiters[key] = (on_response, request, destination)
        self._waiting_on.setdefault(_route(destination), {})[key] = None
        self._pump()
        return key

    def _unwait(self, key: TransactionKey
                ) -> tuple[ResponseHandler, Request, Address] | None:
        waiter = self._waiters.pop(key, None)
        if waiter is not None:
            route = _route(waiter[2])
            keys = self._waiting_on[route]
            del keys[key]
            if not keys:
                del self._waiting_on[route]
        return waiter

    async def request(self, request: Request, destination: Address, *,
                      on_provisional: ProvisionalHandler | None = None) -> Response:
        """Send ``request`` in a client transaction and wait for its final response."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

        def on_response(response: Response) -> None:
            if response.status < 200:
                if on_provisional is not None:
                    on_provisional(response)
            elif not future.done():
                future.set_result(response)

        self.send_request(request, destination, on_response)
        return await future

    def send_response(self, response: Response, transaction: TransactionKey | None = None) -> None:
        self.layer.send_response(response, now=self.now(), transaction=transaction)
        self._pump()

    def send_stateless(self, message: Request | Response, destination: Address) -> None:
        self.layer.send_stateless(message, destination)
        self._pump()

    # ----------------------------------------------------------- internals
    def now(self) -> float:
        """The event loop's clock, which drives the transaction timers."""
        if self._time is None:
            return _clock_of(self._loop or asyncio.get_running_loop())()
        return self._time()

    def wall_clock(self) -> float:
        """UNIX time on the loop's clock: what token ``exp``/``iat`` are compared with
        (RFC 7519 §4.1.4).  It advances with :meth:`now`, so a test that moves the
        loop's clock moves both."""
        if self._epoch is None:
            self._epoch = time.time() - self.now()
        return self.now() + self._epoch

    def _receive(self, data: bytes, source: Address, *, stream: bool) -> None:
        if self._closed:  # delivered after close (already on its way): nobody is here
            return
        if self.screen is not None and not self.screen(data, source):
            return
        self.layer.receive(data, source, now=self.now(), stream=stream)
        self._pump()

    def _unreachable(self, destination: Address, reason: str) -> None:
        for key in list(self._waiting_on.get(_route(destination), ())):
            self.layer.transport_error(key, reason)
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._fired = now = self.now()
        self.layer.handle_timer(now=now)
        self._pump()

    def _pump(self) -> None:
        """Hand the layer's events to the TU and its messages to the transports until it
        has neither, then re-arm the timer.  A TU's call from within (a response sent while
        a request is dispatched, a transport failing while it sends) pumps nothing itself:
        this loop takes what it added, in order, and a message costs one pump, not two."""
        if self._pumping:
            return
        self._pumping = True
        try:
            self._drain()
        finally:
            self._pumping = False

    def _drain(self) -> None:
        layer = self.layer
        while True:
            event = layer.next_event()
            if event is not None:
                try:
                    self._dispatch(event)
                except ValueError as exc:  # a header of the peer's the TU could not parse
                    # One line, no traceback: hostile input must not fill the disk with logs.
                    logger.info("%s: malformed request refused: %s", self.name, exc)
                    self._answer_failure(event, exc)
                except Exception as exc:  # a TU bug must not take the node's SIP down
                    logger.exception("%s: transaction user failed on %r", self.name, event)
                    self._answer_failure(event, exc)
                continue
            messages = layer.messages_to_send()
            if not messages:
                break
            for data, destination in messages:
                transport = self._transports.get(destination.transport)
                if transport is None:
                    if self._closed:
                        continue  # a TU answering after close: there is no wire any more
                    logger.warning("%s: no %s transport for %s", self.name,
                                   destination.transport, destination)
                    continue
                if self.impairer.links:
                    self.impairer.send(transport.send, data, destination)
                else:
                    transport.send(data, destination)
        deadline = layer.get_timer() if not self._closed else None
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = deadline
            if deadline is not None:
                loop = self._loop or asyncio.get_running_loop()
                self._timer = loop.call_at(max(deadline, self._fired + TIMER_GAP),
                                           self._on_timer)

    def _answer_failure(self, event: object, exc: Exception) -> None:
        """A request the TU could not handle still gets a final response.

        Without one the peer waits for nothing, and a non-INVITE server
        transaction in Trying (which has no timer) would never be purged.
        A ValueError comes from parsing the peer's headers: 400; anything
        else is ours: 500 (§8.2.6, §21.5.1).
        """
        if not isinstance(event, RequestReceived) or event.transaction is None:
            return
        if self.layer.transaction_state(event.transaction) not in (State.TRYING,
                                                                   State.PROCEEDING):
            return
        if isinstance(exc, ValueError):
            status, reason = 400, f"Bad Request ({exc})"
        else:
            status, reason = 500, "Server Internal Error"
        reason = "".join(c for c in reason if c.isprintable())[:120]
        try:
            response = event.request.make_response(status, reason, to_tag=new_tag())
            self.layer.send_response(response, now=self.now(), transaction=event.transaction)
        except Exception:
            logger.exception("%s: could not answer %r", self.name, event.request)

    def _dispatch(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            self.user.request_received(event)
        elif isinstance(event, ResponseReceived):
            key = event.transaction
            waiter = self._waiters.get(key) if key is not None else None
            if key is None or waiter is None:
                # Stray, or a 2xx retransmission in RFC 6026 Accepted: the TU's
                # UA core re-sends its ACK (§13.2.2.4).
                self.user.response_received(event)
                return
            if event.response.status >= 200:
                self._unwait(key)
            waiter[0](event.response)
        elif isinstance(event, TransactionTimedOut | TransportFailed):
            waiter = self._unwait(event.transaction)
            if waiter is not None:
                status = 408 if isinstance(event, TransactionTimedOut) else 503
                waiter[0](event.request.make_response(status))
        elif isinstance(event, MessageDropped):
            logger.info("%s: dropped message from %s: %s", self.name, event.source, event.reason)
            self.dropped.append(event)
            del self.dropped[:-100]  # keep the last few for inspection


def _clock_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``; ``time.monotonic`` itself where that is all it is (asyncio's own loop):
    a node reads the clock a dozen times a message, and the loop's method is a Python call.
    A loop with a clock of its own (uvloop's, simulated time in tests) is asked."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


def _route(address: Address) -> tuple[str, str, int | None]:
    """What a transport failure at ``address`` takes down: that address on UDP; on a
    stream, every port of the host (flow reuse: one connection carries them all)."""
    stream = address.transport in ("tcp", "tls")
    return (address.transport, address.host, None if stream else address.port)

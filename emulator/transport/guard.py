"""Connection hygiene for every stream listener: SIP over TCP/TLS and HTTPS alike.

A :class:`ListenerGuard` stands between a listening socket and the protocol that
serves it.  At accept time, before any TLS or parsing, it decides from the peer's
address alone whether the connection may stay:

* the listener's own ``admit`` test (the gateway: is the address attached?);
* the process's descriptor budget: accepted connections never hold more than
  three quarters of the process's file descriptors, whatever the caps, so the
  rest stay for outgoing connections, files and other listeners;
* the per-source cap, then the listener's cap.  At its cap, the listener closes
  its oldest connection that has not completed a message yet (a silent or
  half-sent one: what a connection flood is made of) to make room; with none,
  the newcomer is refused.

Then it times each connection out (one sweep per listener, driven by the loop's
clock): a message must be complete within ``header_timeout`` of its first byte,
and the first message within ``header_timeout`` of the accept (TLS handshake
included); a connection without a byte from its peer for ``idle_timeout`` is
closed.  RFC 5626 CRLF keep-alives are bytes, so they keep a flow open.

TLS runs on top of the admitted TCP connection (``loop.start_tls``), so a refused
peer never costs a handshake.  The serving protocol learns about message
boundaries through :meth:`GuardedConnection.mark`: the SIP framer knows them, and
the HTTPS server marks a request complete when it starts answering it.

When accept() itself fails for want of descriptors, asyncio already stops
accepting for a second and retries; :func:`quiet_resource_errors` makes that
one log line per interval instead of a traceback a second per listener.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from typing import cast

from emulator.topology.model import ConnectionLimits

logger = logging.getLogger(__name__)

DEFAULT_CONNECTION_LIMITS = ConnectionLimits()

RESERVED_SHARE = 4
"""One descriptor in this many is never given to an accepted connection."""
LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same kind of refusal or resource error."""


class DescriptorBudget:
    """How many accepted connections one process may hold at once, over all listeners.

    With no fixed ``capacity``, three quarters of the process's descriptor limit as it
    is at each accept (a supervisor may lower it while the node runs)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.fixed = capacity
        self.used = 0

    @property
    def capacity(self) -> int:
        if self.fixed is not None:
            return self.fixed
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        return soft - max(64, soft // RESERVED_SHARE)

    def take(self) -> bool:
        if self.used >= self.capacity:
            return False
        self.used += 1
        return True

    def give(self) -> None:
        self.used -= 1


_PROCESS_BUDGET: DescriptorBudget | None = None


def process_budget() -> DescriptorBudget:
    """The budget of this process, sized from its descriptor limit when first asked."""
    global _PROCESS_BUDGET
    if _PROCESS_BUDGET is None:
        _PROCESS_BUDGET = DescriptorBudget()
    return _PROCESS_BUDGET


class _RateLimitedLog:
    """One log line per ``interval`` per key, with how many were left unsaid."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._quiet: Counter[str] = Counter()

    def __call__(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._quiet[key] += 1
            return
        self._last[key] = now
        quiet = self._quiet.pop(key, 0)
        suffix = f" ({quiet} more like it not logged)" if quiet else ""
        logger.warning(message + suffix, *args)


class GuardedConnection(asyncio.Protocol):
    """One accepted connection: admission, timers, then the serving protocol inside."""

    def __init__(self, guard: ListenerGuard) -> None:
        self.guard = guard
        self.source = ""
        self.raw: asyncio.Transport | None = None
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        """What the serving protocol writes on (the TLS transport over ``raw`` for TLS)."""
        self.accepted = self.last_byte = 0.0
        self.busy_since: float | None = 0.0
        """When the message under way began; None between messages."""
        self.completed = 0
        """Messages completed so far (0: still a candidate for eviction)."""
        self._early: list[bytes] = []
        self._pre_tls: list[bytes] | None = None
        """TLS: bytes the loop read before the TLS layer took the transport over."""
        self._lost = False

    # ------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        guard = self.guard
        if self.raw is not None:  # TLS: start_tls does not call it again, but be sure
            return
        self.raw = transport
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else ""
        if not guard.admit(self):
            transport.abort()
            return
        now = guard.now()
        self.accepted = self.last_byte = now
        self.busy_since = now
        if guard.ssl_context is None:
            self._serve(transport)
            return
        transport.pause_reading()  # until start_tls has put TLS in between
        self._pre_tls = []
        guard.spawn(self._handshake(transport))

    async def _handshake(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        assert self.guard.ssl_context is not None
        # uvloop ignores a pause_reading() made in connection_made (as asyncio did before
        # CPython gh-103607): a ClientHello may have reached us, not the TLS layer.  It
        # goes to the TLS protocol start_tls makes, on the next turn, before that
        # protocol's connection_made and resume_reading (start_tls queues them after this):
        # both loops' SSL protocols keep what arrives before the handshake for it, and
        # whatever the socket holds still comes after, in order.
        loop.call_soon(self._replay, transport)
        try:
            tls = await loop.start_tls(transport, self, self.guard.ssl_context, server_side=True,
                                       ssl_handshake_timeout=self.guard.limits.header_timeout)
        except Exception as exc:  # reset, timeout, bad ClientHello: the peer's loss alone
            logger.debug("%s: TLS handshake with %s failed: %s", self.guard.name,
                         self.source, exc)
            transport.abort()
            self.guard.release(self)
            return
        if tls is None or self._lost:
            transport.abort()
            self.guard.release(self)
            return
        self._serve(tls)

    def _replay(self, transport: asyncio.Transport) -> None:
        early, self._pre_tls = self._pre_tls, None
        tls = transport.get_protocol()
        if not early or tls is self or transport.is_closing():
            return
        data = b"".join(early)
        # Both loops' SSL protocols are buffered protocols (uvloop's without the base class).
        buffered = cast(asyncio.BufferedProtocol, tls)
        while data:
            buffer = memoryview(buffered.get_buffer(len(data)))
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            buffered.buffer_updated(size)
            data = data[size:]

    def _serve(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.guard.serving[transport] = self
        self.inner = inner = self.guard.serve(self)
        inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            inner.data_received(data)

    def data_received(self, data: bytes) -> None:
        self.last_byte = self.guard.now()
        if self.busy_since is None and not self.guard.framed:
            self.busy_since = self.last_byte
        if self._pre_tls is not None:
            self._pre_tls.append(data)
        elif self.inner is None:
            self._early.append(data)  # TLS app data that came with the handshake's end
        else:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.guard.release(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # ------------------------------------------------------------ serving protocol
    def mark(self, *, busy: bool) -> None:
        """The serving protocol's word: a message is under way (``busy``), or none is."""
        if busy:
            if self.busy_since is None:
                self.busy_since = self.guard.now()
        else:
            if self.busy_since is not None:
                self.completed += 1
            self.busy_since = None

    def close(self) -> None:
        if self.raw is not None:
            self.raw.abort()


class ListenerGuard:
    """Admission and time-outs for one listener's accepted connections.

    ``serve(connection)`` makes the serving protocol for an admitted connection.
    ``admit(host)`` is the listener's own test of a peer address (None: any).
    ``budget`` and ``clock`` default to the process's and the running loop's.
    """

    def __init__(self, name: str, limits: ConnectionLimits,
                 serve: Callable[[GuardedConnection], asyncio.Protocol], *,
                 ssl_context: ssl.SSLContext | None = None,
                 admit: Callable[[str], bool] | None = None,
                 budget: DescriptorBudget | None = None,
                 clock: Callable[[], float] | None = None, framed: bool = False) -> None:
        self.name = name
        self.framed = framed
        """The serving protocol marks where messages start (SIP: its framer knows, and a
        keep-alive is not one); otherwise any byte between messages starts one (HTTP)."""
        self.limits = limits
        self.serve = serve
        self.ssl_context = ssl_context
        self._admit = admit
        self.budget = budget if budget is not None else process_budget()
        self._clock = clock
        self.connections: dict[GuardedConnection, None] = {}
        """Held connections, oldest first."""
        self.serving: dict[asyncio.BaseTransport, GuardedConnection] = {}
        """By the transport its serving protocol writes on (how an HTTP handler finds it)."""
        self._per_source: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        """Connections refused or closed, by reason (for state() and the tests)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._log = _RateLimitedLog()

    @property
    def backlog(self) -> int:
        """The listen backlog to ask for: a burst of connects waits in the kernel's queue
        for the guard to decide (asyncio's default of 100 leaves the rest unanswered)."""
        return min(4096, self.limits.max_connections)

    async def listen(self, host: str, port: int) -> asyncio.Server:
        """Listen on ``host:port`` with this guard in front of every accepted connection."""
        loop = asyncio.get_running_loop()
        quiet_resource_errors(loop)
        return await loop.create_server(self.protocol, host, port, reuse_address=True,
                                        backlog=self.backlog)

    def protocol(self) -> GuardedConnection:
        """The protocol factory to give ``loop.create_server``."""
        return GuardedConnection(self)

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ admission
    def admit(self, connection: GuardedConnection) -> bool:
        source = connection.source
        if self._admit is not None and not self._admit(source):
            return self._refuse("not admitted", source)
        if self._per_source[source] >= self.limits.max_per_source:
            return self._refuse("per-source cap", source)
        if len(self.connections) >= self.limits.max_connections and not self._evict():
            return self._refuse("listener cap", source)
        if not self.budget.take():
            if not self._evict() or not self.budget.take():
                return self._refuse("descriptor budget", source)
        self.connections[connection] = None
        self._per_source[source] += 1
        self._arm()
        return True

    def _refuse(self, reason: str, source: str) -> bool:
        self.refused[reason] += 1
        self._log(reason, "%s: refusing connections (%s), e.g. from %s", self.name, reason,
                  source)
        return False

    def _evict(self) -> bool:
        """Close the oldest connection that has not completed a message; False: none."""
        for held in self.connections:
            if held.completed == 0:
                self.refused["evicted"] += 1
                self.release(held)
                held.close()
                return True
        return False

    def release(self, connection: GuardedConnection) -> None:
        """Forget ``connection`` (idempotent: closing paths may meet)."""
        if self.connections.pop(connection, ...) is ...:
            return
        if connection.transport is not None:
            self.serving.pop(connection.transport, None)
        self.budget.give()
        source = connection.source
        self._per_source[source] -= 1
        if self._per_source[source] <= 0:
            del self._per_source[source]

    # ------------------------------------------------------------ time-outs
    def expired(self, now: float) -> list[tuple[GuardedConnection, str]]:
        """Every held connection past a deadline at ``now``, with which one."""
        header, idle = self.limits.header_timeout, self.limits.idle_timeout
        out = []
        for connection in self.connections:
            since = connection.busy_since
            if since is not None and now - since > header:
                out.append((connection, "incomplete message"))
            elif now - connection.last_byte > idle:
                out.append((connection, "idle"))
        return out

    def sweep(self) -> None:
        self._sweep = None
        for connection, reason in self.expired(self.now()):
            self.refused[reason] += 1
            self.release(connection)
            connection.close()
        self._arm()

    def _arm(self) -> None:
        if self._sweep is None and self.connections:
            interval = min(1.0, self.limits.header_timeout / 4, self.limits.idle_timeout / 4)
            self._sweep = asyncio.get_running_loop().call_later(interval, self.sweep)

    def close(self) -> None:
        """Stop the sweep and the handshakes (the listener closes the connections)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self.connections):
            self.release(connection)
            connection.close()

    def state(self) -> dict[str, object]:
        return {"connections": len(self.connections), "refused": dict(self.refused)}


_RESOURCE_LOG = _RateLimitedLog()
_RESOURCE_MESSAGES = ("socket.accept() out of system resource",)


def quiet_resource_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Make the loop log accept()'s out-of-descriptors errors once per interval.

    asyncio already backs off (it stops accepting on that socket for a second), but
    it reports every retry with a traceback, on every listener: under a flood that is
    megabytes of log a minute, a second denial of service, of the disk.  Idempotent.
    """
    previous = loop.get_exception_handler()
    if getattr(previous, "_mcx_quiet", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message in _RESOURCE_MESSAGES:
            _RESOURCE_LOG(message, "%s: %s; accepting again in a second", message,
                          context.get("exception"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler._mcx_quiet = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)

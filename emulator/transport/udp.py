"""SIP over UDP: one socket, datagram boundaries are message boundaries (§18.1.1).

The socket is read straight off the event loop (``add_reader``), not through asyncio's
datagram transport, which under load costs several times the CPU per datagram
(``benchmarks/udp_receive.py``: ~27-32 against ~7.5 µs for a 1,200-byte datagram sent
and received, on this project's 2-core machine):

* asyncio receives every datagram into a fresh 256 kB ``bytes`` and then shrinks it to
  the datagram's size (a large allocation and a reallocation per datagram).  Here a
  datagram is read into one reused buffer and copied out at its size.
* asyncio reads one datagram per socket per turn of the loop; under load a SIP node
  spends its turns polling.  Here one turn reads up to :data:`BATCH` datagrams.

With ``on_wait``, every datagram's wait in the socket's receive queue is measured (the
kernel's receive timestamp, ``SO_TIMESTAMPNS``, against the moment it is read) and
reported: what a node's overload control (``nodes.overload``) decides from.

In a process that serves one node, reads coalesce under load (:func:`coalesce_reads`), as a
network card moderates its interrupts: a turn that found a backlog and drained it leaves
the socket alone for :data:`COALESCE`, and the next turn reads what came meanwhile in one
go.  Three nodes, four sipps and the kernel's loopback share two vCPUs here; a node woken
for nearly every datagram spent much of its CPU being woken and refilling its caches.  What
the node sends while it handles such a turn's datagrams leaves together at the turn's end
(:meth:`UdpTransport.send`), so that a peer is woken once for them, not once each.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import struct
import time
from collections.abc import Callable
from functools import lru_cache

from emulator.sip.events import Address

from .base import ErrorHandler
from .base import Receiver
from .base import Tap

logger = logging.getLogger(__name__)

RECEIVE_BUFFER = 4 * 1024 * 1024
"""SO_RCVBUF: a burst of REGISTERs (or a GC pause) must not overflow the default ~200 kB
buffer, or drops become retransmissions under load."""
MAX_DATAGRAM = 65535
"""Larger than any UDP payload over IPv4 (65,507) or IPv6 without jumbograms (65,527), so
no datagram is ever cut short by the receive buffer."""
BATCH = 16
"""Datagrams read per readiness of the socket: fewer polls under load, and still a turn
for the node's other sockets and timers every few milliseconds."""
SO_TIMESTAMPNS = 35
"""<asm-generic/socket.h> (x86-64, arm64), which Python's socket module does not name; the
control message it brings is SCM_TIMESTAMPNS, the same number: a ``struct timespec``."""
_TIMESPEC = struct.Struct("@qq")
_TIMESTAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
COALESCE = 0.002
"""Seconds a socket is left alone after a turn that drained a backlog (project-defined):
at most that much more wait for a datagram, only under load, far below overload
control's 50 ms target and T1 (500 ms).  A datagram read alone is never held, nor is a
turn that stopped at :data:`BATCH` with more waiting.  At 3,000 REGISTER/s through the
migration path (``benchmarks/migration_path.py``, four runs each, alternated): 0.403-0.465
ms of CPU per REGISTER over the three nodes and no refusal, against 0.493-0.580 ms and
refusals in three of four runs without."""
MAX_PENDING = 1024
"""Datagrams queued while the kernel's send buffer is full; beyond that they are dropped,
as a full network would (retransmissions recover, §17.1.2.1)."""


_coalescing = 0.0


def coalesce_reads(seconds: float = COALESCE) -> None:
    """UDP sockets opened from now on in this process coalesce their reads (0: never).

    For a process that serves one node (``emulator.orchestration.serve``).  Where several
    nodes share a loop (``inproc``), tests and tools, reads are never held."""
    global _coalescing
    _coalescing = seconds


@lru_cache(maxsize=4096)
def is_address_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address, which sendto() takes as it is.  Given a
    name, sendto() would resolve it, synchronously: a request routed to a domain (a UE's
    BYE to ``sip:alice@partner.example``) held the whole node for the resolver's 5 s
    time-out.  Nodes are addressed by IP here; no RFC 3263 lookup is made."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except (OSError, ValueError):
            continue
    return False


class UdpTransport:
    """A bound UDP socket.  Create with :meth:`open`."""

    def __init__(self, sock: socket.socket, receiver: Receiver, tap: Tap | None,
                 on_error: ErrorHandler | None, on_wait: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._sock = sock
        self._on_wait = on_wait
        self._clock = clock
        self._receiver = receiver
        self._tap = tap
        self._on_error = on_error
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buffer)
        self._pending: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque()
        self._closed = False
        self.coalesce = _coalescing
        """Seconds the socket is left alone after a turn that drained a backlog."""
        self._read = self._read_ready if on_wait is None else self._read_ready_timed
        self._held: asyncio.TimerHandle | None = None
        self._outbox: list[tuple[bytes, Address]] | None = None
        """While a coalescing turn reads: what is sent meanwhile, in order (:meth:`send`)."""
        host, port = sock.getsockname()[:2]
        self._local = Address("udp", host, port)

    @classmethod
    async def open(cls, host: str, port: int, receiver: Receiver, *, tap: Tap | None = None,
                   on_error: ErrorHandler | None = None,
                   on_wait: Callable[[float], None] | None = None,
                   clock: Callable[[], float] = time.time) -> UdpTransport:
        """Bind ``host``:``port`` (0: any free port); OSError when it cannot be bound.

        ``on_wait(seconds)`` hears how long each datagram waited to be read, by ``clock``
        (the kernel stamps with the wall clock; a test passes one that runs ahead)."""
        loop = asyncio.get_running_loop()
        try:  # an address literal (every plan's): no resolver, no thread
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                       flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError:
                pass
            sock.bind(address)
            if on_wait is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                except OSError as exc:  # another kernel ABI: no waits, the rest as usual
                    logger.warning("udp %s:%s: no receive timestamps (%s): no overload "
                                   "control", host, port, exc)
            transport = cls(sock, receiver, tap, on_error, on_wait, clock)
            loop.add_reader(sock, transport._turn)
        except BaseException:
            sock.close()
            raise
        return transport

    @property
    def local(self) -> Address:
        return self._local

    @property
    def holding(self) -> bool:
        """The socket is left alone for now (:data:`COALESCE`)."""
        return self._held is not None

    def _turn(self) -> None:
        """The socket is readable: read it.  Coalescing, what the node sends while it
        handles this turn's datagrams waits in the outbox, and leaves when they are all
        handled (a failure to send it is reported then, :meth:`send`)."""
        if not self.coalesce:
            self._read()
            return
        self._outbox = []
        try:
            self._read()
        finally:
            outbox, self._outbox = self._outbox, None
            for data, destination in outbox or ():  # None: closed within the turn, sent
                self.send(data, destination)

    def _read_ready(self) -> None:
        for read in range(BATCH):
            try:
                size, addr = self._sock.recvfrom_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                self._drained(read)
                return
            except OSError as exc:
                # An ICMP error queued on the socket; nothing to match it to reliably, so
                # retransmission timers deal with it (§17.1.2.2).
                logger.debug("udp %s: %s", self._local, exc)
                continue
            if not self._deliver(size, addr):
                return

    def _deliver(self, size: int, addr: tuple[str, int]) -> bool:
        """The datagram in the buffer, up; False once the receiver has closed us."""
        data = bytes(self._view[:size])
        source = Address("udp", addr[0], addr[1])
        if self._tap is not None:
            self._tap("in", self._local, source, data)
        self._receiver(data, source, stream=False)
        return not self._closed

    def _read_ready_timed(self) -> None:
        """:meth:`_read_ready`, and each datagram's wait in the queue to ``on_wait``."""
        assert self._on_wait is not None
        for read in range(BATCH):
            try:
                size, ancillary, _, addr = self._sock.recvmsg_into((self._view,),
                                                                    _TIMESTAMP_SPACE)
            except (BlockingIOError, InterruptedError):
                self._drained(read)
                return
            except OSError as exc:
                logger.debug("udp %s: %s", self._local, exc)
                continue
            for level, kind, stamp in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(stamp)
                    self._on_wait(max(0.0, self._clock() - seconds - nanoseconds * 1e-9))
            if not self._deliver(size, addr):
                return

    def _drained(self, read: int) -> None:
        """The queue emptied after ``read`` datagrams this turn: two or more were a backlog,
        so the socket is left alone for :attr:`coalesce` seconds."""
        if read < 2 or not self.coalesce or self._closed:
            return
        self._loop.remove_reader(self._sock)
        self._held = self._loop.call_later(self.coalesce, self._release)

    def _release(self) -> None:
        self._held = None
        if not self._closed:
            self._loop.add_reader(self._sock, self._turn)

    def send(self, data: bytes, destination: Address) -> None:
        """Send ``data`` to ``destination`` now, or, within a coalescing turn, at its end.

        A peer woken for every datagram it is sent spends its CPU being woken (as the
        nodes here do, sharing two vCPUs with sipp): a turn's datagrams, sent back to
        back at its end, wake it once.  At 3,000 REGISTER/s through the migration path,
        alternated in one topology (``benchmarks/migration_path.py``'s load, 5 s each):
        0.575 ms of CPU per REGISTER over the three nodes (median of six) and 3,700
        refused against 0.601 ms and 12,435 refused."""
        if self._outbox is not None:
            self._outbox.append((data, destination))
            return
        if self._closed:
            if self._on_error is not None:
                self._on_error(destination, "UDP socket closed")
            return
        target = (destination.host, destination.port)
        try:
            if not is_address_literal(destination.host):
                raise ValueError("not an IP address (no name is resolved)")
            if self._pending:  # keep the order: behind what waits already
                self._queue(data, target)
            else:
                try:
                    self._sock.sendto(data, target)
                except (BlockingIOError, InterruptedError):
                    self._queue(data, target)
                    self._loop.add_writer(self._sock, self._write_ready)
        except (OSError, OverflowError, TypeError, ValueError, UnicodeError) as exc:
            # A bad destination (a peer's rport=70000, a non-ASCII host) must not end the
            # socket: the peer's message is refused, the node goes on.
            logger.info("udp %s: cannot send to %s: %s", self._local, destination, exc)
            if self._on_error is not None:
                self._on_error(destination, f"send failed: {exc}")
            return
        if self._tap is not None:
            self._tap("out", self._local, destination, data)

    def _queue(self, data: bytes, target: tuple[str, int]) -> None:
        if len(self._pending) >= MAX_PENDING:
            raise OSError("send queue full")
        self._pending.append((data, target))

    def _write_ready(self) -> None:
        while self._pending:
            data, target = self._pending[0]
            try:
                self._sock.sendto(data, target)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.info("udp %s: cannot send to %s: %s", self._local, target, exc)
            self._pending.popleft()
        self._loop.remove_writer(self._sock)

    async def close(self) -> None:
        if self._closed:
            return
        outbox, self._outbox = self._outbox, None
        for data, destination in outbox or ():  # closed within a turn: what it sent, first
            self.send(data, destination)
        self._closed = True
        self._pending.clear()
        if self._held is not None:
            self._held.cancel()
            self._held = None
        self._loop.remove_reader(self._sock)
        self._loop.remove_writer(self._sock)
        self._sock.close()

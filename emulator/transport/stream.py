"""SIP over TCP and TLS (§18.3): Content-Length framing, connection reuse.

One :class:`StreamTransport` listens on a local address and keeps every
connection, accepted or opened, in a table keyed by the remote address.  A
response goes back on the connection its request came in on (§18.2.2); a
request to a peer reuses an open connection to it or opens one (§18.1.1).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import cast

from emulator.sip.errors import RemoteProtocolError
from emulator.sip.events import Address
from emulator.sip.framing import PONG
from emulator.sip.framing import KeepAlive
from emulator.sip.framing import StreamFramer
from emulator.sip.message import DEFAULT_LIMITS
from emulator.sip.message import ParserLimits
from emulator.topology.model import ConnectionLimits

from .base import ErrorHandler
from .base import Receiver
from .base import Tap
from .guard import DEFAULT_CONNECTION_LIMITS
from .guard import GuardedConnection
from .guard import ListenerGuard

logger = logging.getLogger(__name__)


class _Connection(asyncio.Protocol):
    """One TCP/TLS connection: framing in, writes out."""

    def __init__(self, owner: StreamTransport, guarded: GuardedConnection | None = None) -> None:
        self.owner = owner
        self.remote: Address | None = None
        self.framer = StreamFramer(owner.limits)
        self.transport: asyncio.Transport | None = None
        self.local = owner.local
        self.guarded = guarded
        """The listener guard's view of an accepted connection (None: one we opened)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.remote = Address(self.owner.name, host, port)
        # The connection's own address: an opened connection's port is ephemeral,
        # and captures and ladders must show the port the packets really use.
        local_host, local_port = transport.get_extra_info("sockname")[:2]
        self.local = Address(self.owner.name, local_host, local_port)
        self.owner._connections[self.remote] = self

    def data_received(self, data: bytes) -> None:
        assert self.remote is not None
        try:
            items = self.framer.feed(data)
        except RemoteProtocolError as exc:
            logger.info("%s: closing %s: %s", self.owner.local, self.remote, exc.reason)
            if self.transport is not None:
                self.transport.close()
            return
        guarded = self.guarded
        if guarded is not None:
            # Message boundaries for the guard's header timeout; a keep-alive is not one.
            if any(not isinstance(item, KeepAlive) for item in items):
                guarded.mark(busy=False)
            if self.framer.partial:
                guarded.mark(busy=True)
        owner = self.owner
        for item in items:
            if isinstance(item, KeepAlive):
                self.write(PONG)
                continue
            if owner.tap is not None:
                owner.tap("in", self.local, self.remote, item)
            owner.receiver(item, self.remote, stream=True)
        if self.framer.error is not None:  # after the messages before it: the stream is over
            logger.info("%s: closing %s: %s", owner.local, self.remote,
                        self.framer.error.reason)
            if self.transport is not None:
                self.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.remote is not None and self.owner._connections.get(self.remote) is self:
            del self.owner._connections[self.remote]
            self.owner._lost(self.remote, exc)


class StreamTransport:
    """A TCP or TLS listener plus its connections.  Create with :meth:`open`."""

    def __init__(self, name: str, receiver: Receiver, *, tap: Tap | None,
                 on_error: ErrorHandler | None, server_ssl: ssl.SSLContext | None,
                 client_ssl: ssl.SSLContext | None, limits: ParserLimits,
                 connection_limits: ConnectionLimits,
                 admit: Callable[[str], bool] | None) -> None:
        self.name = name
        self.receiver = receiver
        self.tap = tap
        self.limits = limits
        self._on_error = on_error
        self._client_ssl = client_ssl
        self._server: asyncio.Server | None = None
        self._connections: dict[Address, _Connection] = {}
        self._pending: dict[Address, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._local = Address(name, "0.0.0.0", 0)
        self.guard = ListenerGuard(f"{name} listener", connection_limits,
                                   lambda guarded: _Connection(self, guarded),
                                   ssl_context=server_ssl, admit=admit, framed=True)
        """Admission and time-outs of the accepted connections (TLS runs under it)."""

    @classmethod
    async def open(cls, name: str, host: str, port: int, receiver: Receiver, *,
                   tap: Tap | None = None, on_error: ErrorHandler | None = None,
                   server_ssl: ssl.SSLContext | None = None,
                   client_ssl: ssl.SSLContext | None = None,
                   limits: ParserLimits = DEFAULT_LIMITS,
                   connection_limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS,
                   admit: Callable[[str], bool] | None = None) -> StreamTransport:
        """Listen on ``host:port``; ``admit(host)`` may refuse a peer at accept time."""
        if name == "tls" and server_ssl is None:
            raise ValueError("a TLS transport needs a server SSLContext")
        self = cls(name, receiver, tap=tap, on_error=on_error, server_ssl=server_ssl,
                   client_ssl=client_ssl, limits=limits, connection_limits=connection_limits,
                   admit=admit)
        self._server = await self.guard.listen(host, port)
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        self._local = Address(name, sock_host, sock_port)
        self.guard.name = f"{name} {sock_host}:{sock_port}"
        return self

    @property
    def local(self) -> Address:
        return self._local

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _flow_to(self, destination: Address) -> _Connection | None:
        """An open connection to ``destination``, or one its host opened to us.

        A UE (or a P-CSCF) behind TCP/TLS is reached over the connection it
        opened when it registered, whatever port its Contact names: the
        flow reuse of RFC 5626 §5.3 and 24.229 §5.2.2, keyed here by host.
        """
        connection = self._connections.get(destination)
        if connection is not None:
            return connection
        for remote, candidate in self._connections.items():
            if remote.host == destination.host:
                return candidate
        return None

    def send(self, data: bytes, destination: Address) -> None:
        connection = self._flow_to(destination)
        if connection is not None:
            connection.write(data)
            if self.tap is not None:
                self.tap("out", connection.local, connection.remote or destination, data)
            return
        pending = self._pending.get(destination)
        if pending is not None:
            pending.append(data)  # a connect is already under way
            return
        self._pending[destination] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(destination))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lost(self, remote: Address, exc: Exception | None) -> None:
        """A connection ended: what was waiting on it fails now (RFC 3261 §8.1.3.1: a
        transport error is a 503), unless another connection to that host remains."""
        if self._on_error is None or self._closing:
            return
        if any(other.host == remote.host for other in self._connections):
            return
        self._on_error(remote, f"connection lost{f': {exc}' if exc else ''}")

    async def _connect(self, destination: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Bind the client side to our listening host so the peer (and the
            # capture) sees the node's own 127.x address as the source.
            _, protocol = await loop.create_connection(
                lambda: _Connection(self), destination.host, destination.port,
                ssl=self._client_ssl if self.name == "tls" else None,
                server_hostname=destination.host if self.name == "tls" else None,
                local_addr=(self._local.host, 0))
        except Exception as exc:  # OSError, SSL errors, bad addresses: all end the same way
            self._pending.pop(destination, None)
            logger.info("%s: cannot connect to %s: %s", self._local, destination, exc)
            if self._on_error is not None:
                self._on_error(destination, f"connect failed: {exc}")
            return
        queued = self._pending.pop(destination, [])
        for data in queued:
            protocol.write(data)
            if self.tap is not None:
                self.tap("out", protocol.local, destination, data)

    def disconnect(self, host: str) -> int:
        """Close every connection with ``host`` (an address given back, say); how many."""
        closing = [c for remote, c in self._connections.items() if remote.host == host]
        for connection in closing:
            if connection.transport is not None:
                connection.transport.close()
        return len(closing)

    async def close(self) -> None:
        self._closing = True
        self.guard.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        if self._server is not None:
            await self._server.wait_closed()

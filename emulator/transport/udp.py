"""SIP over UDP: one socket, datagram boundaries are message boundaries (§18.1.1)."""

from __future__ import annotations

import asyncio
import logging
import socket

from emulator.sip.events import Address

from .base import ErrorHandler
from .base import Receiver
from .base import Tap

logger = logging.getLogger(__name__)

RECEIVE_BUFFER = 4 * 1024 * 1024


class UdpTransport(asyncio.DatagramProtocol):
    """A bound UDP socket.  Create with :meth:`open`."""

    def __init__(self, receiver: Receiver, tap: Tap | None, on_error: ErrorHandler | None) -> None:
        self._receiver = receiver
        self._tap = tap
        self._on_error = on_error
        self._transport: asyncio.DatagramTransport | None = None
        self._local = Address("udp", "0.0.0.0", 0)

    @classmethod
    async def open(cls, host: str, port: int, receiver: Receiver, *, tap: Tap | None = None,
                   on_error: ErrorHandler | None = None) -> UdpTransport:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(receiver, tap, on_error), local_addr=(host, port))
        return protocol

    @property
    def local(self) -> Address:
        return self._local

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A burst of REGISTERs (or a GC pause) must not overflow the
            # default ~200 kB buffer: drops become retransmissions under load.
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError:
                pass
        host, port = transport.get_extra_info("sockname")[:2]
        self._local = Address("udp", host, port)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        source = Address("udp", addr[0], addr[1])
        if self._tap is not None:
            self._tap("in", self._local, source, data)
        self._receiver(data, source, stream=False)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable surfaces here on Linux; nothing to match it to
        # reliably, so retransmission timers deal with it (§17.1.2.2).
        logger.debug("udp %s: %s", self._local, exc)

    def send(self, data: bytes, destination: Address) -> None:
        if self._transport is None or self._transport.is_closing():
            if self._on_error is not None:
                self._on_error(destination, "UDP socket closed")
            return
        try:
            self._transport.sendto(data, (destination.host, destination.port))
        except (OSError, OverflowError, TypeError, ValueError) as exc:
            # A bad destination (a peer's rport=70000, a non-ASCII host) must not get
            # as far as asyncio, which closes the whole socket on a non-OSError.
            logger.info("udp %s: cannot send to %s: %s", self._local, destination, exc)
            if self._on_error is not None:
                self._on_error(destination, f"send failed: {exc}")
            return
        if self._tap is not None:
            self._tap("out", self._local, destination, data)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

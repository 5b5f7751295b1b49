"""What every transport adapter shares: the receive callback and the capture tap.

Transports are the only code with sockets.  They do framing (on streams) and
nothing else: bytes go up through ``Receiver``, and every datagram or stream
message, in or out, is shown to the ``Tap`` so captures see exactly what
crossed the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from emulator.sip.events import Address


class Receiver(Protocol):
    """Called with one datagram, or one framed stream message, and where it came from."""

    def __call__(self, data: bytes, source: Address, *, stream: bool) -> None: ...


Tap = Callable[[str, Address, Address, bytes], None]
"""Capture hook: ``tap(direction, local, remote, data)``, direction "out" or "in"."""

ErrorHandler = Callable[[Address, str], None]
"""Called when a destination cannot be reached (connection refused, TLS failure...)."""


class Transport(Protocol):
    """The face every adapter shows to :class:`~emulator.transport.endpoint.SipEndpoint`."""

    @property
    def local(self) -> Address: ...

    def send(self, data: bytes, destination: Address) -> None: ...

    async def close(self) -> None: ...

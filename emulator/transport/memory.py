"""An in-memory network for tests: transports that deliver through the event loop.

A :class:`MemoryHub` stands for the wire.  Each :class:`MemoryTransport`
registers its address with the hub; ``send`` schedules delivery with
``loop.call_soon`` so ordering and re-entrancy match real sockets.  A
``loss`` callable lets a test drop chosen messages deterministically.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from emulator.sip.events import Address

from .base import Receiver
from .base import Tap

LossRule = Callable[[bytes, Address, Address], bool]


class MemoryHub:
    """The shared wire of the in-memory transports."""

    def __init__(self, loss: LossRule | None = None) -> None:
        self.loss = loss
        self.delivered = 0
        self.dropped = 0
        self._members: dict[Address, MemoryTransport] = {}

    def attach(self, transport: MemoryTransport) -> None:
        if transport.local in self._members:
            raise ValueError(f"{transport.local} is already in use")
        self._members[transport.local] = transport

    def detach(self, transport: MemoryTransport) -> None:
        self._members.pop(transport.local, None)

    def carry(self, data: bytes, source: Address, destination: Address) -> None:
        target = self._members.get(destination)
        if target is None or (self.loss is not None and self.loss(data, source, destination)):
            self.dropped += 1
            return
        self.delivered += 1
        asyncio.get_running_loop().call_soon(target.deliver, data, source)


class MemoryTransport:
    """A transport on a :class:`MemoryHub`; ``transport`` names the semantics it stands for."""

    def __init__(self, hub: MemoryHub, address: Address, receiver: Receiver,
                 tap: Tap | None = None) -> None:
        self._hub = hub
        self._local = address
        self._receiver = receiver
        self._tap = tap
        hub.attach(self)

    @property
    def local(self) -> Address:
        return self._local

    def send(self, data: bytes, destination: Address) -> None:
        if self._tap is not None:
            self._tap("out", self._local, destination, data)
        self._hub.carry(data, self._local, destination)

    def deliver(self, data: bytes, source: Address) -> None:
        if self._tap is not None:
            self._tap("in", self._local, source, data)
        self._receiver(data, source, stream=self._local.reliable)

    async def close(self) -> None:
        self._hub.detach(self)

"""Link impairments, applied where a packet leaves: this kernel has no netem qdisc.

An :class:`Impairer` sits between a node's endpoint and its transports.  For
each impaired destination host it decides, from the link's own seeded random
generator, what happens to a packet: dropped, sent once or twice, now or
later.  Decisions follow netem's model (``tc-netem(8)``): a fixed delay plus
uniform jitter; loss and duplication per packet; a reordered packet goes at
once and overtakes the delayed ones; a rate makes each packet wait for the
ones before it to be serialised.

Only datagrams are lost, duplicated or reordered.  A stream (TCP, TLS)
delivers every byte in order, so there a link only delays, and no packet is
sent before one sent earlier.  A dropped packet never reaches the transport,
so the capture shows what really crossed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

from emulator.sip.events import Address
from emulator.topology.model import Impairment

Send = Callable[[bytes, Address], None]


@dataclass
class _Link:
    impairment: Impairment
    random: random.Random
    free_at: float = 0.0
    """When the link has serialised everything queued so far (rate)."""
    last_at: float = 0.0
    """When the latest packet on a stream goes: none may go before it."""

    def delays(self, size: int, *, now: float, stream: bool) -> list[float]:
        """Seconds from now at which each copy of a ``size``-byte packet goes; [] drops it."""
        impairment, draw = self.impairment, self.random.random
        copies = 1
        if not stream:
            if draw() < impairment.loss:
                return []
            if draw() < impairment.duplicate:
                copies = 2
        out = []
        for _ in range(copies):
            if not stream and draw() < impairment.reorder:
                at = now
            else:
                at = now + max(0.0, impairment.delay + self.random.uniform(
                    -impairment.jitter, impairment.jitter))
            if impairment.rate:
                self.free_at = max(now, self.free_at) + size * 8 / impairment.rate
                at += self.free_at - now
            if stream:
                at = self.last_at = max(at, self.last_at)
            out.append(at - now)
        return out


@dataclass
class Impairer:
    """The impaired links of one node, keyed by destination host."""

    links: dict[str, _Link] = field(default_factory=dict)
    dropped: int = 0
    """Packets the links lost (what a capture never shows)."""
    _pending: set[asyncio.TimerHandle] = field(default_factory=set)

    def set(self, host: str, impairment: Impairment | None) -> None:
        """Impair what goes to ``host`` (None: no longer)."""
        if impairment is None:
            self.links.pop(host, None)
        else:
            self.links[host] = _Link(impairment, random.Random(impairment.seed))

    def send(self, send: Send, data: bytes, destination: Address) -> None:
        link = self.links.get(destination.host)
        if link is None:
            send(data, destination)
            return
        loop = asyncio.get_running_loop()
        delays = link.delays(len(data), now=loop.time(), stream=destination.reliable)
        if not delays:
            self.dropped += 1
        for delay in delays:
            if delay <= 0:
                send(data, destination)
            else:
                self._later(loop, delay, send, data, destination)

    def _later(self, loop: asyncio.AbstractEventLoop, delay: float, send: Send, data: bytes,
               destination: Address) -> None:
        def fire() -> None:
            self._pending.discard(handle)
            send(data, destination)

        handle = loop.call_later(delay, fire)
        self._pending.add(handle)

    def close(self) -> None:
        """Forget what was still in flight: the transports are closing."""
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()

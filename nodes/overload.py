"""Overload control at a SIP node: shed new requests while a queue stands (time comes in).

Past its capacity, a UDP node that serves everything falls further behind with every
request: each waits longer than T1 in the receive queue, its sender retransmits, and the
retransmissions queue too, so the node spends its time on copies and serves fewer
requests than it could (``benchmarks/migration_path.py`` showed 1,000 REGISTER/s served
at an offer of 1,000/s, and 742-817/s served at 1,250/s).  A node that refuses new
requests cheaply while it is behind, with 503 and Retry-After (RFC 3261 §21.5.4), keeps
answering the ones it serves in time.

The trigger is CoDel's (RFC 8289 §3): not the length of one wait, which a burst or a
garbage collection also makes, but a wait that *stays* above ``target`` for ``interval``.
One datagram read within ``target`` ends it.  The figures are the topology's
``limits.overload`` (project-defined).
"""

from __future__ import annotations

from emulator.sip.message import Request
from emulator.topology.model import OverloadLimit


class OverloadGate:
    """Whether a node sheds new requests, from the queue waits of what it reads."""

    def __init__(self, limit: OverloadLimit) -> None:
        self.limit = limit
        self.shedding = False
        self.shed = 0
        """New requests refused so far (a retransmission of a refused one is screened, and
        counted, again: the refusal is stateless)."""
        self.episodes = 0
        """Times shedding began."""
        self.wait = 0.0
        """The last datagram's wait, seconds."""
        self._above_since: float | None = None

    def observe(self, wait: float, now: float) -> None:
        """A datagram waited ``wait`` seconds in the queue, and is read at ``now``."""
        self.wait = wait
        limit = self.limit
        if not limit.enabled or wait <= limit.target:
            self._above_since = None
            self.shedding = False
            return
        if self._above_since is None:
            self._above_since = now
        if not self.shedding and now - self._above_since >= limit.interval:
            self.shedding = True
            self.episodes += 1

    def refuses(self, request: Request) -> bool:
        """Whether ``request`` is to be refused now: a new one (no To tag; never ACK or
        CANCEL, which end what was already taken on) while shedding."""
        if not self.shedding or request.method in ("ACK", "CANCEL"):
            return False
        if request.to.tag is not None:  # in a dialog: part of what the node already serves
            return False
        self.shed += 1
        return True

    def state(self) -> dict[str, object]:
        return {"shedding": self.shedding, "shed": self.shed, "episodes": self.episodes,
                "wait_ms": round(self.wait * 1000, 1)}

"""A minimal RFC 3261 §12 dialog: enough for a private call (INVITE, ACK, BYE).

Pure data and pure functions, like the rest of ``emulator.sip``.

The UAC builds the route set from the 2xx's Record-Route in reverse
(§12.1.2), the UAS from the INVITE's Record-Route in order (§12.1.1); the
remote target is the peer's Contact.  In-dialog requests carry the route
set as Route headers and go to the first of them (loose routing).
"""

from __future__ import annotations

import sys

from .builder import new_request
from .events import Address
from .headers import NameAddress
from .headers import Via
from .headers import shared_strings
from .message import Request
from .message import Response
from .uri import URI


class Dialog:
    """One dialog's state (§12).  The addresses are kept as their text and parsed when
    used (the parse memos make that cheap): a registered UE's reg-event dialog lives in
    the SIP core and in the gateway for its whole stay, and kept as text the gateway's
    share of a registered UE fell from 3.5 to 2.9 kB (``benchmarks/scale.py``)."""

    __slots__ = ("_local", "_remote", "_remote_target", "call_id", "invite_cseq",
                 "local_cseq", "route_set")

    def __init__(self, call_id: str, local: NameAddress, remote: NameAddress,
                 remote_target: URI, route_set: tuple[str, ...], local_cseq: int,
                 invite_cseq: int) -> None:
        self.call_id = call_id
        self._local = str(local)
        self._remote = str(remote)
        # Interned: the peer's Contact is one and the same for every dialog it holds
        # with us (a registrar's reg-event NOTIFYs, a P-CSCF's subscriptions).
        self._remote_target = sys.intern(str(remote_target))
        self.route_set = shared_strings(route_set)  # the same for many dialogs
        self.local_cseq = local_cseq
        self.invite_cseq = invite_cseq

    @property
    def local(self) -> NameAddress:
        return NameAddress.parse(self._local)

    @property
    def remote(self) -> NameAddress:
        return NameAddress.parse(self._remote)

    @property
    def remote_target(self) -> URI:
        return URI.parse(self._remote_target)

    def __repr__(self) -> str:
        return (f"Dialog({self.call_id!r}, local={self._local!r}, remote={self._remote!r}, "
                f"target={self._remote_target!r}, cseq={self.local_cseq})")

    @classmethod
    def as_uac(cls, invite: Request, response: Response) -> Dialog:
        routes = tuple(reversed(response.headers.values("Record-Route")))
        # A 2xx must carry a Contact (§12.1.1); without one, the Request-URI is the only
        # target left, and the dialog must still be ACKed and ended (§13.2.2.4).
        contacts = response.contacts
        target = contacts[0].uri if contacts else invite.uri
        return cls(invite.call_id, invite.from_, response.to, target, routes,
                   invite.cseq.seq, invite.cseq.seq)

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str) -> Dialog:
        routes = tuple(invite.headers.values("Record-Route"))
        return cls(invite.call_id, invite.to.with_tag(local_tag), invite.from_,
                   invite.contacts[0].uri, routes, 0, invite.cseq.seq)

    def next_hop(self) -> Address:
        target = NameAddress.parse(self.route_set[0]).uri if self.route_set else \
            self.remote_target
        return Address(target.transport, target.host, target.port or 5060)

    def request(self, method: str, via: Via, *, cseq: int | None = None) -> Request:
        """An in-dialog request (§12.2.1.1); ACK reuses the INVITE's CSeq number."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        return new_request(method, self.remote_target, via=via, from_=self.local,
                           to=self.remote, call_id=self.call_id, cseq=cseq,
                           routes=self.route_set)

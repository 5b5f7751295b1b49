"""Building requests: the one place a request's header block is written.

RFC 3261 §8.1.1 names the headers every request carries: Via, Max-Forwards,
From (with a tag), To, Call-ID and CSeq, plus the route set as Route.
:func:`new_request` writes them in one order for every role; a dialog
(:mod:`emulator.sip.dialog`) uses it for in-dialog requests, and the
transaction layer and proxies use :func:`non_2xx_ack` and :func:`cancel_for`,
which copy what §17.1.1.3 and §9.1 say to copy from the INVITE.

Pure code: random identifiers come from the kernel's generator (:func:`os.urandom`, as
:mod:`secrets` reads it), nothing else.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from .headers import BRANCH_MAGIC_COOKIE
from .headers import CSeq
from .headers import Headers
from .headers import NameAddress
from .headers import Via
from .message import TOP_VIA
from .message import Request
from .message import Response
from .uri import URI

_POOL_BYTES = 4096
_pool = b""
_taken = 0


def random_hex(size: int) -> str:
    """``size`` random bytes from the kernel's generator, as hex, as
    ``secrets.token_hex(size)`` gives them; but read 4 kB at a time: a proxy wants three
    identifiers a message, and one ``getrandom`` call each was ~3 % of its CPU."""
    global _pool, _taken
    if _taken + size > len(_pool):
        _pool, _taken = os.urandom(max(_POOL_BYTES, size)), 0
    start, _taken = _taken, _taken + size
    return _pool[start:_taken].hex()


def _forget_pool() -> None:
    """A forked child (every node process is forked from the zygote) draws its own bytes,
    never its parent's: the same tags and branches in two nodes would collide."""
    global _pool, _taken
    _pool, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def new_branch() -> str:
    """A fresh Via branch with the RFC 3261 magic cookie (§8.1.1.7)."""
    return BRANCH_MAGIC_COOKIE + random_hex(8)


def new_tag() -> str:
    """A From/To tag: random, at least 32 bits (§19.3)."""
    return random_hex(4)


def stateless_tag(request: Request) -> str:
    """The To tag of a stateless answer to ``request``: the same for the same request and
    its retransmissions (§8.2.7), from the §17.2.3 matching fields, ours alone."""
    via = request.top_via
    seed = f"{via.branch}\0{via.host}\0{request.call_id}\0{request.from_.tag}\0{request.cseq}"
    return "sl" + hashlib.sha256(seed.encode()).hexdigest()[:12]


def new_call_id(host: str) -> str:
    """A globally unique Call-ID, ``random@host`` (§8.1.1.4)."""
    return f"{random_hex(10)}@{host}"


def new_request(method: str, uri: URI, *, via: Via, from_: NameAddress, to: NameAddress,
                call_id: str, cseq: int = 1, routes: Iterable[object] = (),
                max_forwards: int = 70) -> Request:
    """A request with the §8.1.1 header block, ready for more headers and a body.

    ``from_`` gets a fresh tag unless it has one (§8.1.1.3: the UAC always
    tags From).  ``routes`` become Route headers in order (§8.1.2 loose
    routing: the first is the next hop).
    """
    headers = Headers()
    # The typed views of what is built here are kept: the transaction layer and the TU
    # read them again, and they would parse the text just written.
    headers.prepend("Via", via, view=TOP_VIA)  # (the first line: as add would put it)
    headers.add("Max-Forwards", max_forwards)
    for route in routes:
        headers.add("Route", route)
    headers.add("From", from_ if from_.tag else from_.with_tag(new_tag()), view="from")
    headers.add("To", to, view="to")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", CSeq(cseq, method), view="cseq")
    return Request(method, uri, headers)


def _from_invite(method: str, invite: Request, to: str | None) -> Request:
    """ACK or CANCEL for ``invite``: its Request-URI, top Via, Route, From, Call-ID, CSeq number."""
    headers = Headers()
    headers.add("Via", invite.headers.values("Via")[0])
    headers.add("Max-Forwards", 70)
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("From", invite.headers.get("From"))
    headers.add("To", to if to is not None else invite.headers.get("To"))
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.seq} {method}")
    return Request(method, invite.uri, headers)


def non_2xx_ack(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a non-2xx final (§17.1.1.3).

    Same branch (the INVITE's top Via), the response's To (with its tag).
    """
    ack = _from_invite("ACK", invite, response.headers.get("To"))
    ack.headers.add("Content-Length", 0)
    return ack


def cancel_for(invite: Request) -> Request:
    """The CANCEL for a pending INVITE (§9.1): same top Via, so the next hop matches it."""
    return _from_invite("CANCEL", invite, None)

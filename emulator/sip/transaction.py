"""The RFC 3261 §17 transaction layer, sans-IO.

Theory of operation
-------------------
:class:`TransactionLayer` is driven from outside, aioquic-style:

* bytes in: ``receive(data, source, now=...)``;
* TU calls: ``send_request``, ``send_response``, ``send_stateless``;
* time: ``handle_timer(now=...)`` when ``get_timer()`` is due;
* out: ``next_event()`` for the TU, ``messages_to_send()`` for the transport.

It never reads a clock, sleeps or touches a socket, so a test walks Timer F's
32 seconds in microseconds.

Four state machines (§17.1.1, §17.1.2, §17.2.1, §17.2.2, with the RFC 6026
"Accepted" state for INVITE 2xx) live in one table each below.  Each
transaction owns a set of named timers; a single heap orders every deadline
of the layer, and entries of disarmed timers are skipped lazily.  A
transaction is deleted from the layer the moment it reaches Terminated, so
the layer holds only live transactions (the prototype's 270 MB lesson).

Matching follows §17.1.3 for responses (top Via branch + CSeq method) and
§17.2.3 for requests (branch + sent-by + method, ACK matching INVITE), with
the RFC 2543 fallback for branches lacking the magic cookie.

Incoming peer garbage never raises: requests that can be answered get a
stateless 400/505 (queued in ``messages_to_send``), everything else
becomes a :class:`MessageDropped` event.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from enum import Enum

from .builder import new_branch
from .builder import non_2xx_ack
from .errors import LocalProtocolError
from .errors import RemoteProtocolError
from .events import Address
from .events import Event
from .events import MessageDropped
from .events import RequestReceived
from .events import ResponseReceived
from .events import TransactionKey
from .events import TransactionTimedOut
from .events import TransportFailed
from .headers import BRANCH_MAGIC_COOKIE
from .message import DEFAULT_LIMITS
from .message import TOP_VIA
from .message import ParserLimits
from .message import Request
from .message import Response
from .message import check_request
from .message import check_response
from .message import parse_message
from .timers import DEFAULT_TIMERS
from .timers import TimerConfig

logger = logging.getLogger(__name__)


class State(Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026
    TERMINATED = "Terminated"


class _Transaction:
    """State common to the four kinds; the layer runs the transitions."""

    __slots__ = (
        "ack_bytes",
        "address",
        "interval",
        "key",
        "kind",
        "last_response",
        "method",
        "reliable",
        "request",
        "request_bytes",
        "state",
        "timers",
    )

    def __init__(self, key: TransactionKey, kind: str, state: State, request: Request,
                 address: Address) -> None:
        self.key = key
        self.kind = kind  # "ict", "nict", "ist", "nist"
        self.state = state
        self.request: Request | None = request
        """Dropped on completion: absorbing retransmissions needs only the key and the
        last response's bytes (a completed transaction lives on for Timer J/K/D)."""
        self.method = request.method
        self.address = address
        self.reliable = address.reliable
        self.timers: dict[str, int] = {}
        self.request_bytes = b""
        self.last_response: bytes | None = None
        self.interval = 0.0
        self.ack_bytes: bytes | None = None

    def __repr__(self) -> str:
        return f"<{self.kind.upper()} {self.method} {self.key[0]} {self.state.value}>"


class TransactionLayer:
    """All client and server transactions of one SIP element.

    ``auto_trying`` makes INVITE server transactions answer 100 Trying at
    once (§17.2.1 requires it unless the TU answers within 200 ms).
    """

    def __init__(self, *, timers: TimerConfig = DEFAULT_TIMERS,
                 limits: ParserLimits = DEFAULT_LIMITS, auto_trying: bool = True,
                 name: str = "sip") -> None:
        self.timers = timers
        self.limits = limits
        self.auto_trying = auto_trying
        self.name = name
        self._transactions: dict[TransactionKey, _Transaction] = {}
        self._completed: dict[TransactionKey, tuple[bytes, str, str, int, int]] = {}
        """Non-INVITE transactions in Completed, waiting out Timer J (server, 32 s on UDP)
        or K (client): what absorbing a retransmission needs, as one plain tuple (the last
        response's bytes, b"" for a client; the peer's transport, host and port; the
        timer's sequence number).  A plain tuple of plain values is one the garbage
        collector stops walking, where a transaction object and its Address stayed in
        every full collection: at 1,000 REGISTER/s through three nodes, 82,000 of the
        106,000 objects it walked, a 100 ms pause."""
        self._events: deque[Event] = deque()
        self._outgoing: list[tuple[bytes, Address]] = []
        self._heap: list[tuple[float, int, TransactionKey, str]] = []
        self._seq = 0
        self.before_transaction: Callable[[Request], Response | None] | None = None
        """The TU's look at a new non-INVITE request before a transaction is made for it:
        a response it returns goes back statelessly (§8.2.7) and nothing is kept.  Overload
        control answers so: its 503 would otherwise hold a completed transaction for Timer
        J (32 s) each, 50,000 of them at 1,600 refusals/s, just when the node has the least
        to spare.  A retransmission is screened again (the TU makes the same To tag)."""

    def __repr__(self) -> str:
        return f"<TransactionLayer {self.name} transactions={len(self._transactions)}>"

    # ------------------------------------------------------------------ output
    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def messages_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        """The earliest armed deadline, or None when no timer is armed."""
        heap = self._heap
        while heap:
            deadline, seq, key, name = heap[0]
            txn = self._transactions.get(key)
            if txn is not None and txn.timers.get(name) == seq:
                return deadline
            completed = self._completed.get(key) if txn is None else None
            if completed is not None and completed[4] == seq:
                return deadline
            heapq.heappop(heap)  # stale entry of a disarmed timer
        return None

    def __len__(self) -> int:
        return len(self._transactions) + len(self._completed)

    def transaction_state(self, key: TransactionKey) -> State:
        """The state of a live transaction; Terminated once it has been purged."""
        txn = self._transactions.get(key)
        if txn is not None:
            return txn.state
        return State.COMPLETED if key in self._completed else State.TERMINATED

    def invite_for_cancel(self, cancel: Request) -> TransactionKey | None:
        """The live INVITE server transaction a CANCEL targets (§9.2), or None.

        A CANCEL carries the same top Via branch and sent-by as the INVITE
        it cancels; it matches that INVITE's transaction key (§17.2.3).
        """
        try:
            key = _server_key(cancel)
        except ValueError:
            return None
        key = (*key[:-1], "INVITE")
        return key if key in self._transactions else None

    # ------------------------------------------------------------------- input
    def receive(self, data: bytes, source: Address, *, now: float, stream: bool = False) -> None:
        """Feed one datagram (or one framed stream message) received from ``source``."""
        try:
            message = parse_message(data, self.limits, stream=stream)
        except RemoteProtocolError as exc:
            self._reject(exc, getattr(exc, "message", None), source)
            return
        if isinstance(message, Request):
            self.receive_request(message, source, now=now)
        else:
            self.receive_response(message, source, now=now)

    def receive_request(self, request: Request, source: Address, *, now: float) -> None:
        try:
            check_request(request)
        except RemoteProtocolError as exc:
            self._reject(exc, request, source)
            return
        self._stamp_via(request, source)
        try:
            key = _server_key(request)
        except ValueError as malformed:  # (a name of its own: compiled, a name has one type)
            self._reject(RemoteProtocolError(str(malformed), 400), request, source)
            return
        txn = self._transactions.get(key)
        method = request.method
        completed = self._completed.get(key) if txn is None else None
        if completed is not None:
            # A retransmission to a completed non-INVITE: its final response again
            # (§17.2.2).
            data, transport, host, port, _ = completed
            self._outgoing.append((data, Address(transport, host, port)))
            return
        if txn is None:
            if method == "ACK":
                # ACK for a 2xx (new branch) or for a transaction already gone:
                # it belongs to the TU (§17.2.3, RFC 6026 §7.1).
                self._events.append(RequestReceived(request, source, None))
                return
            if self.before_transaction is not None and method != "INVITE":
                try:
                    answer = self.before_transaction(request)
                except Exception:  # the TU's defect: the request is served as if unscreened
                    logger.exception("%s: before_transaction failed", self.name)
                    answer = None
                if answer is not None:
                    self._outgoing.append((answer.to_bytes(), source))
                    return
            kind = "ist" if method == "INVITE" else "nist"
            state = State.PROCEEDING if kind == "ist" else State.TRYING
            txn = _Transaction(key, kind, state, request, source)
            self._transactions[key] = txn
            self._events.append(RequestReceived(request, source, key))
            if kind == "ist" and self.auto_trying:
                self._send_response(txn, request.make_response(100), now)
            return
        self._server_retransmission(txn, request, source, now)

    def receive_response(self, response: Response, source: Address, *, now: float) -> None:
        try:
            check_response(response)
            via = response.top_via
            cseq = response.cseq
        except (RemoteProtocolError, ValueError) as exc:
            self._events.append(MessageDropped(source, f"bad response: {exc}"))
            return
        branch = via.branch or ""
        key = ("c", branch, cseq.method)
        txn = self._transactions.get(key)
        if txn is None:
            if key not in self._completed:  # else Completed absorbs it (§17.1.2.2)
                self._events.append(ResponseReceived(response, source, None))
            return
        if txn.kind == "nict":
            self._nict_response(txn, response, source, now)
        else:
            self._ict_response(txn, response, source, now)

    def transport_error(self, key: TransactionKey, reason: str) -> None:
        """The transport failed to send for ``key`` (§17.1.4 / §17.2.4): end it, tell the TU."""
        self._completed.pop(key, None)  # completed: nobody waits for it any more
        txn = self._transactions.get(key)
        if txn is None:
            return
        self._terminate(txn)
        if txn.request is not None:  # else completed: nobody waits for it any more
            self._events.append(TransportFailed(key, txn.request, reason))

    def handle_timer(self, *, now: float) -> None:
        """Fire every timer whose deadline is at or before ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, key, name = heapq.heappop(heap)
            txn = self._transactions.get(key)
            if txn is None:
                completed = self._completed.get(key)
                if completed is not None and completed[4] == seq:  # J or K: it ends
                    del self._completed[key]
                continue
            if txn.timers.get(name) != seq:
                continue
            del txn.timers[name]
            self._fire(txn, name, now)

    # --------------------------------------------------------------- TU calls
    def send_request(self, request: Request, destination: Address, *,
                     now: float) -> TransactionKey:
        """Start a client transaction for ``request`` (never ACK) and send it.

        The top Via must exist; a branch with the magic cookie is added when
        missing.  Returns the transaction key that responses will carry.
        """
        method = request.method
        if method == "ACK":
            raise LocalProtocolError("ACK has no client transaction; use send_stateless")
        via = request.top_via
        branch = via.branch
        if not branch or not branch.startswith(BRANCH_MAGIC_COOKIE):
            branch = new_branch()
            request.headers.pop_first_value("Via")
            request.headers.prepend("Via", via.with_param("branch", branch), view=TOP_VIA)
        if request.cseq.method != method:
            raise LocalProtocolError("CSeq method must equal the request method (§8.1.1.5)")
        key: TransactionKey = ("c", branch, method)
        if key in self._transactions or key in self._completed:
            raise LocalProtocolError(f"transaction {branch} {method} already exists")
        kind = "ict" if method == "INVITE" else "nict"
        txn = _Transaction(key, kind, State.CALLING if kind == "ict" else State.TRYING,
                           request, destination)
        txn.request_bytes = request.to_bytes()
        self._transactions[key] = txn
        self._outgoing.append((txn.request_bytes, destination))
        if kind == "ict":
            if not txn.reliable:
                txn.interval = self.timers.timer_a()
                self._arm(txn, "A", now + txn.interval)
            self._arm(txn, "B", now + self.timers.timer_b())
        else:
            if not txn.reliable:
                txn.interval = self.timers.timer_e()
                self._arm(txn, "E", now + txn.interval)
            self._arm(txn, "F", now + self.timers.timer_f())
        return key

    def send_response(self, response: Response, *, now: float,
                      transaction: TransactionKey | None = None) -> None:
        """Send ``response`` through its server transaction.

        The transaction is found from the response's Via and CSeq (the same
        values §8.2.6.2 copied from the request) unless given.  Raises
        :class:`LocalProtocolError` when no such live transaction exists.
        """
        key = transaction
        if key is None:
            try:
                via = response.top_via
                method = response.cseq.method
            except ValueError as exc:
                raise LocalProtocolError(f"response lacks Via/CSeq: {exc}") from None
            key = ("s", via.branch or "", via.host.lower(), str(via.port or ""),
                   "INVITE" if method == "ACK" else method)
        txn = self._transactions.get(key)
        if txn is None and transaction is None:
            txn = self._find_2543(response)
        if txn is None or txn.kind not in ("ist", "nist"):
            raise LocalProtocolError(f"no server transaction for {response!r}")
        self._send_response(txn, response, now)

    def _find_2543(self, response: Response) -> _Transaction | None:
        """The RFC 2543-matched server transaction a response answers.

        Its key holds the Request-URI, which a response does not carry, so the
        other parts are compared instead (requests without a cookie branch,
        RFC 4475 §3.4.1).
        """
        try:
            via = str(response.top_via)
            tag = response.from_.tag or ""
            cseq = response.cseq
        except ValueError:
            return None
        method = "INVITE" if cseq.method == "ACK" else cseq.method
        wanted = (tag, response.headers.get("Call-ID"), str(cseq.seq), via, method)
        for key, txn in self._transactions.items():
            if key[0] == "s2543" and key[2:] == wanted:
                return txn
        return None

    def send_stateless(self, message: Request | Response, destination: Address) -> None:
        """Send outside any transaction: ACK to a 2xx, stateless proxy forwarding."""
        self._outgoing.append((message.to_bytes(), destination))

    # -------------------------------------------------------- server machines
    def _send_response(self, txn: _Transaction, response: Response, now: float) -> None:
        status = response.status
        data = response.to_bytes()
        state = txn.state
        if state in (State.COMPLETED, State.CONFIRMED, State.TERMINATED):
            raise LocalProtocolError(f"{txn!r} already sent a final response")
        if txn.kind == "ist" and state == State.ACCEPTED:
            if not 200 <= status < 300:
                raise LocalProtocolError("only 2xx retransmissions in Accepted (RFC 6026)")
            self._outgoing.append((data, txn.address))
            return
        txn.last_response = data
        self._outgoing.append((data, txn.address))
        if status < 200:
            if txn.kind == "nist":
                self._set_state(txn, State.PROCEEDING)
            return
        if txn.kind == "nist":
            self._complete(txn, "J", self.timers.timer_j(txn.reliable), data, now)
        elif status < 300:
            # RFC 6026 §8.5: 2xx moves to Accepted; the TU retransmits 2xx until ACK.
            self._set_state(txn, State.ACCEPTED)
            txn.request = None
            self._arm(txn, "L", now + self.timers.timer_l())
        else:
            self._set_state(txn, State.COMPLETED)
            if not txn.reliable:
                txn.interval = self.timers.timer_g()
                self._arm(txn, "G", now + txn.interval)
            self._arm(txn, "H", now + self.timers.timer_h())

    def _server_retransmission(self, txn: _Transaction, request: Request, source: Address,
                               now: float) -> None:
        if txn.kind == "ist":
            if request.method == "ACK":
                if txn.state == State.COMPLETED:
                    self._set_state(txn, State.CONFIRMED)
                    self._disarm(txn, "G")
                    self._disarm(txn, "H")
                    self._arm_or_terminate(txn, "I", self.timers.timer_i(txn.reliable), now)
                elif txn.state == State.ACCEPTED:
                    self._events.append(RequestReceived(request, source, None))
                return  # Confirmed: absorbed
            # A retransmitted INVITE: repeat the last response (Proceeding/Completed).
            if txn.state in (State.PROCEEDING, State.COMPLETED) and txn.last_response:
                self._outgoing.append((txn.last_response, txn.address))
            return
        # non-INVITE: Trying absorbs; Proceeding repeats the last response (Completed ones
        # answer from _completed, in receive_request).
        if txn.state == State.PROCEEDING and txn.last_response:
            self._outgoing.append((txn.last_response, txn.address))

    # -------------------------------------------------------- client machines
    def _nict_response(self, txn: _Transaction, response: Response, source: Address,
                       now: float) -> None:
        if txn.state not in (State.TRYING, State.PROCEEDING):
            return  # Completed: absorb retransmitted finals
        if response.status < 200:
            self._set_state(txn, State.PROCEEDING)
        else:
            self._complete(txn, "K", self.timers.timer_k(txn.reliable), b"", now)
        self._events.append(ResponseReceived(response, source, txn.key))

    def _ict_response(self, txn: _Transaction, response: Response, source: Address,
                      now: float) -> None:
        status = response.status
        state = txn.state
        if state == State.ACCEPTED:
            if 200 <= status < 300:
                self._events.append(ResponseReceived(response, source, txn.key))
            return
        if state == State.COMPLETED:
            if status >= 300 and txn.ack_bytes:
                self._outgoing.append((txn.ack_bytes, txn.address))  # re-ACK
            return
        if state not in (State.CALLING, State.PROCEEDING):
            return
        self._disarm(txn, "A")
        if status < 200:
            self._set_state(txn, State.PROCEEDING)
        elif status < 300:
            self._disarm(txn, "B")
            self._set_state(txn, State.ACCEPTED)
            txn.request, txn.request_bytes = None, b""
            self._arm(txn, "M", now + self.timers.timer_m())
        else:
            self._disarm(txn, "B")
            self._set_state(txn, State.COMPLETED)
            assert txn.request is not None  # kept until now: the ACK copies from it
            txn.ack_bytes = non_2xx_ack(txn.request, response).to_bytes()
            txn.request, txn.request_bytes = None, b""
            self._outgoing.append((txn.ack_bytes, txn.address))
            self._arm_or_terminate(txn, "D", self.timers.timer_d(txn.reliable), now)
        self._events.append(ResponseReceived(response, source, txn.key))

    # ------------------------------------------------------------------ timers
    def _fire(self, txn: _Transaction, name: str, now: float) -> None:
        t = self.timers
        if name == "A" and txn.state == State.CALLING:
            self._outgoing.append((txn.request_bytes, txn.address))
            txn.interval *= 2  # Timer A doubles without a cap (§17.1.1.2)
            self._arm(txn, "A", now + txn.interval)
        elif name == "E" and txn.state in (State.TRYING, State.PROCEEDING):
            self._outgoing.append((txn.request_bytes, txn.address))
            # §17.1.2.2: doubles up to T2 in Trying; T2 once Proceeding.
            txn.interval = t.t2 if txn.state == State.PROCEEDING else min(2 * txn.interval, t.t2)
            self._arm(txn, "E", now + txn.interval)
        elif name == "G" and txn.state == State.COMPLETED and txn.last_response:
            self._outgoing.append((txn.last_response, txn.address))
            txn.interval = min(2 * txn.interval, t.t2)
            self._arm(txn, "G", now + txn.interval)
        elif name in ("B", "F", "H"):
            if (name == "B" and txn.state != State.CALLING) or \
                    (name == "H" and txn.state != State.COMPLETED):
                return
            self._terminate(txn)
            assert txn.request is not None  # B, F and H fire only before completion
            self._events.append(TransactionTimedOut(txn.key, txn.request, name))
        elif name in ("D", "I", "J", "K", "L", "M"):
            self._terminate(txn)

    def _arm(self, txn: _Transaction, name: str, deadline: float) -> None:
        self._seq += 1
        txn.timers[name] = self._seq
        heapq.heappush(self._heap, (deadline, self._seq, txn.key, name))

    def _complete(self, txn: _Transaction, name: str, delay: float, last_response: bytes,
                  now: float) -> None:
        """A non-INVITE transaction enters Completed (§17.1.2.2, §17.2.2): it leaves the
        table of live ones for :attr:`_completed` until timer ``name`` (J or K) ends it;
        on a reliable transport, at once."""
        if delay <= 0:
            self._terminate(txn)
            return
        self._set_state(txn, State.COMPLETED)  # its last use: the object goes now
        del self._transactions[txn.key]
        self._seq += 1
        address = txn.address
        self._completed[txn.key] = (last_response, address.transport, address.host,
                                    address.port, self._seq)
        heapq.heappush(self._heap, (now + delay, self._seq, txn.key, name))

    def _arm_or_terminate(self, txn: _Transaction, name: str, delay: float, now: float) -> None:
        if delay <= 0:
            self._terminate(txn)
        else:
            self._arm(txn, name, now + delay)

    @staticmethod
    def _disarm(txn: _Transaction, name: str) -> None:
        txn.timers.pop(name, None)

    def _set_state(self, txn: _Transaction, state: State) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %r: %s -> %s", self.name, txn, txn.state.value, state.value)
        txn.state = state

    def _terminate(self, txn: _Transaction) -> None:
        self._set_state(txn, State.TERMINATED)
        txn.timers.clear()
        self._transactions.pop(txn.key, None)

    # ----------------------------------------------------------------- helpers
    def _stamp_via(self, request: Request, source: Address) -> None:
        """§18.2.1 received and RFC 3581 §4 rport on the top Via."""
        via = request.top_via
        changed = via
        if via.host != source.host:
            changed = changed.with_param("received", source.host)
        if via.rport == "":
            changed = changed.with_param("received", source.host).with_param(
                "rport", str(source.port))
        if changed is not via:
            request.headers.pop_first_value("Via")
            # Kept as the top Via's view: the key, the TU and a proxy's relay all read it.
            request.headers.prepend("Via", changed, view=TOP_VIA)

    def _reject(self, exc: RemoteProtocolError, message: Request | Response | None,
                source: Address) -> None:
        """Answer a broken request statelessly when possible, else drop it."""
        if exc.status is not None and isinstance(message, Request) and message.method != "ACK":
            try:
                response = message.make_response(exc.status, _reason_for(exc))
                # The answer goes back to ``source`` (§18.2.2 with RFC 3581), so a
                # Via that is present but malformed is echoed, not a reason to
                # drop: RFC 4475 §3.1.2.1 (badinv01) expects a 400.
                if "Via" not in response.headers:
                    raise ValueError("no Via to answer")
                self._outgoing.append((response.to_bytes(), source))
                self._events.append(MessageDropped(source, exc.reason, answered=True))
                return
            except (ValueError, LocalProtocolError):
                pass
        self._events.append(MessageDropped(source, exc.reason))


def _reason_for(exc: RemoteProtocolError) -> str:
    from .status import reason_phrase

    detail = "".join(c for c in exc.reason if c.isprintable())[:100]
    return f"{reason_phrase(exc.status or 400)} ({detail})"


def _server_key(request: Request) -> TransactionKey:
    """§17.2.3 matching key; RFC 2543 fallback when the branch lacks the cookie."""
    via = request.top_via
    branch = via.branch
    method = request.method
    match_method = "INVITE" if method == "ACK" else method
    # A bare cookie carries no identifier (RFC 4475 §3.2.1): use the fallback.
    if branch and branch.startswith(BRANCH_MAGIC_COOKIE) and len(branch) > len(BRANCH_MAGIC_COOKIE):
        return ("s", branch, via.host.lower(), str(via.port or ""), match_method)
    # RFC 2543: Request-URI, From tag, Call-ID, CSeq number and top Via;
    # the To tag is left out so the ACK (which carries it) matches its INVITE.
    return ("s2543", str(request.uri), request.from_.tag or "", request.call_id,
            str(request.cseq.seq), str(via), match_method)

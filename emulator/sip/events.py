"""Events the transaction layer hands to its transaction user (TU).

Frozen dataclasses with past-tense names, in the style of aioquic and h11.
The TU drains them with ``TransactionLayer.next_event()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .message import Request
from .message import Response


class Address(NamedTuple):
    """A transport address: the transport name (udp, tcp, tls) and host:port."""

    transport: str
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """True on stream transports, which neither retransmit nor linger (§17)."""
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


TransactionKey = tuple[str, ...]
"""Opaque transaction identifier (§17.1.3 / §17.2.3 matching key)."""


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU.

    ``transaction`` is the server transaction to answer through, or ``None``
    for an ACK, which has none of its own (an ACK to a 2xx is end-to-end,
    §17.1.1.3; stray ACKs too).
    """

    request: Request
    source: Address
    transaction: TransactionKey | None

    def __init__(self, request: Request, source: Address,
                 transaction: TransactionKey | None) -> None:
        # Written out: compiled, dataclass's own __init__ still runs interpreted (see
        # emulator.sip.compiled), ~10 times slower to call than this one mypyc builds.
        object.__setattr__(self, "request", request)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "transaction", transaction)


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the TU.

    ``transaction`` is the client transaction it belongs to, or ``None`` for
    a stray response (e.g. a retransmitted 2xx to an INVITE whose
    transaction has ended: the UA core re-sends its ACK).
    """

    response: Response
    source: Address
    transaction: TransactionKey | None

    def __init__(self, response: Response, source: Address,
                 transaction: TransactionKey | None) -> None:
        object.__setattr__(self, "response", response)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "transaction", transaction)


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B, F or H fired: no final response (client) or no ACK (server).

    The client side reports it as a 408 to its TU (§8.1.3.1).
    """

    transaction: TransactionKey
    request: Request
    timer: str

    def __init__(self, transaction: TransactionKey, request: Request, timer: str) -> None:
        object.__setattr__(self, "transaction", transaction)
        object.__setattr__(self, "request", request)
        object.__setattr__(self, "timer", timer)


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport could not deliver a message of this transaction (§17.1.4, §17.2.4)."""

    transaction: TransactionKey
    request: Request
    reason: str

    def __init__(self, transaction: TransactionKey, request: Request, reason: str) -> None:
        object.__setattr__(self, "transaction", transaction)
        object.__setattr__(self, "request", request)
        object.__setattr__(self, "reason", reason)


@dataclass(frozen=True, slots=True)
class MessageDropped:
    """Bytes that could not be processed and were not answered.

    ``answered`` is True when a stateless error response (400, 505 ...) was
    queued in reply instead of silently dropping.
    """

    source: Address
    reason: str
    answered: bool = False

    def __init__(self, source: Address, reason: str, answered: bool = False) -> None:
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "answered", answered)


Event = RequestReceived | ResponseReceived | TransactionTimedOut | TransportFailed | MessageDropped

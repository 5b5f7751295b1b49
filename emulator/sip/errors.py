"""The two kinds of failure of the SIP core (the h11 split).

*Remote* errors are the peer's fault: bytes that are not valid SIP, or a
message the transaction layer cannot accept.  They never escape a node; they
carry what to do about them, either a status to answer (``status``) or
``None`` when the message cannot be answered and must be dropped.

*Local* errors are our own misuse of the API (a response built for an ACK, a
message without the headers RFC 3261 §8.1.1 requires) and are raised as
ordinary exceptions, so bugs are loud.
"""

from __future__ import annotations


class RemoteProtocolError(Exception):
    """The peer sent something we cannot process.

    ``status`` is the SIP status code to answer with (400, 413, 416, 505, ...)
    when the message is a request that can still be answered, or ``None`` when
    it must be dropped (responses, requests too broken to build a reply for).
    ``fatal`` marks stream errors after which the byte stream cannot be
    resynchronised, so the connection has to be closed.
    """

    def __init__(self, reason: str, status: int | None = 400, *, fatal: bool = False,
                 message: object | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.fatal = fatal
        self.message: object | None = message
        """What could be parsed of the offending message, to build the answer from."""

    def __repr__(self) -> str:
        return f"RemoteProtocolError({self.reason!r}, status={self.status}, fatal={self.fatal})"


class LocalProtocolError(Exception):
    """We tried to do something the protocol forbids; a bug in the caller."""

"""Stream framing for SIP over TCP and TLS (RFC 3261 §18.3, RFC 5626 §3.5.1).

On a stream the only message boundary is Content-Length.  :class:`StreamFramer`
takes bytes as they arrive, in any split, and hands back whole messages.
Empty lines between messages are keep-alives: a double CRLF "ping" is
reported so the transport can answer with a single CRLF "pong" (RFC 5626
§3.5.1); lone CRLFs are skipped (§7.5).

Errors are :class:`RemoteProtocolError` with ``fatal=True``: once framing is
lost the stream cannot be resynchronised and the connection must close.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RemoteProtocolError
from .message import DEFAULT_LIMITS
from .message import ParserLimits


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A CRLFCRLF ping was received; answer with CRLF (RFC 5626 §3.5.1)."""


PING = b"\r\n\r\n"
PONG = b"\r\n"


class StreamFramer:
    """Cuts a byte stream into SIP messages by Content-Length.

    ``feed(data)`` returns the complete messages (bytes) and keep-alives found
    so far; partial data is kept for the next call.

    Framing errors are fatal.  When one comes after complete messages in the same
    call, those messages are returned and the error is kept in :attr:`error` (and
    raised by the next call): so how a stream is cut never changes what it frames.
    """

    __slots__ = ("_buffer", "_limits", "error")

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self._buffer = bytearray()
        self._limits = limits
        self.error: RemoteProtocolError | None = None
        """The fatal error met after this call's frames; the stream is over."""

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def partial(self) -> bool:
        """Part of a message is held (CRLFs waiting to be a keep-alive are not one)."""
        return bool(self._buffer.lstrip(b"\r\n"))

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        if self.error is not None:
            raise self.error
        self._buffer += data
        out: list[bytes | KeepAlive] = []
        try:
            self._frame(out)
        except RemoteProtocolError as exc:
            if not out:
                raise
            self.error = exc
        return out

    def _frame(self, out: list[bytes | KeepAlive]) -> None:
        buf = self._buffer
        while buf:
            # Leading CRLFs: keep-alives (§7.5 says ignore; RFC 5626 pings want a pong).
            if buf[0] in (0x0D, 0x0A):
                if buf.startswith(PING):
                    del buf[:4]
                    out.append(KeepAlive())
                    continue
                if buf.startswith(b"\r\n"):
                    if len(buf) == 2 or (len(buf) == 3 and buf[2] == 0x0D):
                        break  # could be the start of a ping: wait
                    del buf[:2]
                    continue
                if buf[0] == 0x0D and len(buf) == 1:
                    break
                raise RemoteProtocolError("stray line feed between messages", None, fatal=True)
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._limits.max_message_size:
                    raise RemoteProtocolError("header section exceeds the size limit", 513,
                                              fatal=True)
                break
            length = _content_length(bytes(buf[:end]))
            total = end + 4 + length
            if total > self._limits.max_message_size:
                raise RemoteProtocolError(f"message of {total} bytes exceeds the size limit",
                                          513, fatal=True)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]


def _content_length(head: bytes) -> int:
    """Find Content-Length (or compact ``l``) in a header block, without a full parse."""
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        if not line or line[0] in b" \t":
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        name = name.strip().lower()
        if name == b"content-length" or name == b"l":
            text = value.strip()
            if not text.isdigit() or len(text) > 9:
                raise RemoteProtocolError(f"bad Content-Length {text[:20]!r}", 400, fatal=True)
            if found is not None and found != int(text):
                raise RemoteProtocolError("conflicting Content-Length headers", 400, fatal=True)
            found = int(text)
    if found is None:
        raise RemoteProtocolError("no Content-Length on a stream transport (§18.3)", 400,
                                  fatal=True)
    return found

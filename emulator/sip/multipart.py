"""multipart/mixed bodies (RFC 2046 §5.1) as used by 24.379 §6.5.

A SIP message with more than one body uses ``multipart/mixed`` with a
Content-Type per part; SDP, when present, goes first; a single body is never
wrapped (24.379 §6.5).  Parts keep their content as bytes, so binary parts
(RFC 4475 mpart01) survive untouched.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from dataclasses import field

from .grammar import header_key
from .grammar import is_token
from .message import Message

_MAX_PARTS = 32


class MultipartError(ValueError):
    """The body is not a well-formed multipart entity."""


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One body part: its MIME headers and content."""

    content_type: str
    content: bytes
    headers: tuple[tuple[str, str], ...] = field(default=())

    def header(self, name: str) -> str | None:
        key = header_key(name)
        for n, v in self.headers:
            if header_key(n) == key:
                return v
        return None

    @property
    def mime_type(self) -> str:
        return self.content_type.split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class MultipartBody:
    """A multipart/mixed body and the boundary it is (to be) delimited with."""

    parts: tuple[BodyPart, ...]
    boundary: str = field(default_factory=lambda: "mcx-" + secrets.token_hex(8))

    @property
    def content_type(self) -> str:
        return f"multipart/mixed;boundary={self.boundary}"

    def to_bytes(self) -> bytes:
        out = []
        for part in self.parts:
            head = [f"Content-Type: {part.content_type}"]
            head.extend(f"{n}: {v}" for n, v in part.headers if header_key(n) != "content-type")
            out.append(f"--{self.boundary}\r\n".encode() + "\r\n".join(head).encode()
                       + b"\r\n\r\n" + part.content + b"\r\n")
        out.append(f"--{self.boundary}--\r\n".encode())
        return b"".join(out)

    def find(self, mime_type: str) -> list[BodyPart]:
        """The parts whose media type is ``mime_type`` (parameters ignored)."""
        wanted = mime_type.lower()
        return [p for p in self.parts if p.mime_type == wanted]

    @classmethod
    def build(cls, parts: list[BodyPart]) -> MultipartBody:
        """Order parts as 24.379 §6.5 requires: application/sdp first."""
        ordered = sorted(parts, key=lambda p: p.mime_type != "application/sdp")
        return cls(tuple(ordered))

    @classmethod
    def parse(cls, body: bytes, boundary: str) -> MultipartBody:
        """Split ``body`` at ``boundary``; raises :class:`MultipartError`."""
        if not boundary or len(boundary) > 70:
            raise MultipartError("missing or over-long boundary (RFC 2046 §5.1.1)")
        delimiter = b"--" + boundary.encode("utf-8", "replace")
        # The first delimiter may start the body; later ones follow a CRLF.
        if body.startswith(delimiter):
            position = 0
        else:
            position = body.find(b"\r\n" + delimiter)
            if position < 0:
                raise MultipartError("boundary not found in body")
            position += 2
        parts: list[BodyPart] = []
        while True:
            after = position + len(delimiter)
            if body.startswith(b"--", after):
                break  # close-delimiter
            line_end = body.find(b"\r\n", after)
            if line_end < 0:
                raise MultipartError("delimiter line not terminated")
            if body[after:line_end].strip(b" \t"):
                raise MultipartError("junk after boundary delimiter")
            next_delim = body.find(b"\r\n" + delimiter, line_end)
            if next_delim < 0:
                raise MultipartError("no closing boundary")
            # The delimiter line's CRLF may be the one before the next delimiter (an
            # empty part): clamp, since compiled code (mypyc) does not slice backwards to b"".
            parts.append(_parse_part(body[line_end + 2:max(next_delim, line_end + 2)]))
            if len(parts) > _MAX_PARTS:
                raise MultipartError(f"more than {_MAX_PARTS} body parts")
            position = next_delim + 2
        return cls(tuple(parts), boundary)


def _parse_part(raw: bytes) -> BodyPart:
    if raw.startswith(b"\r\n"):
        head, content = b"", raw[2:]
    else:
        split = raw.find(b"\r\n\r\n")
        if split < 0:
            raise MultipartError("body part without a blank line after its headers")
        head, content = raw[:split], raw[split + 4:]
    headers: list[tuple[str, str]] = []
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise MultipartError("body part headers are not UTF-8") from None
    for line in text.split("\r\n") if text else []:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not is_token(name.strip()):
            raise MultipartError(f"bad body part header {line[:60]!r}")
        headers.append((name.strip(), value.strip()))
    content_type = next((v for n, v in headers if header_key(n) == "content-type"),
                        "text/plain")  # RFC 2046 §5.1: the default for a part
    return BodyPart(content_type, content,
                    tuple((n, v) for n, v in headers if header_key(n) != "content-type"))


def body_parts(message: Message) -> list[BodyPart]:
    """A message's bodies: the parts of a ``multipart/mixed`` body, else the one body
    (24.379 §6.5 never wraps a single one); none without a body.  Raises
    :class:`MultipartError` on a broken multipart body."""
    content_type = message.content_type
    if content_type is None or not message.body:
        return []
    if content_type.mime_type == "multipart/mixed":
        return list(MultipartBody.parse(message.body, content_type.param("boundary") or "").parts)
    return [BodyPart(str(content_type), message.body)]

"""SIP requests and responses: model, parser and serializer (RFC 3261 §7).

Theory of operation
-------------------
:func:`parse_message` turns one complete message (a datagram, or what the
stream framer cut out) into a :class:`Request` or :class:`Response`.  Header
lines are stored as strings, in order and as written (after unfolding), and
typed views (``msg.vias``, ``msg.cseq`` ...) parse them on demand.  So a
message that is not modified serialises back to its input byte for byte, and
a proxy that only pushes a Via does not re-render the rest.

The parser has one failure mode, :class:`RemoteProtocolError`, whose
``status`` says how to answer (400, 413, 505) or ``None`` to drop.
:func:`check_request` / :func:`check_response` then enforce what §8.2 and
§18.1.2 require before a transaction may be created; the transaction layer
calls them, and so do the RFC 4475 tests.

Messages are built through the API (``Request(...)``, ``make_response``,
``set_body``); serialisation is the only place that writes CRLFs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RemoteProtocolError
from .grammar import METHOD_RE
from .grammar import SIP_VERSION_RE
from .grammar import STATUS_CODE_RE
from .grammar import header_key
from .headers import Contact
from .headers import ContentType
from .headers import CSeq
from .headers import Headers
from .headers import NameAddress
from .headers import Via
from .headers import parse_name_addresses
from .status import reason_phrase
from .uri import URI
from .uri import URIError

SIP_VERSION = "SIP/2.0"

TOP_VIA = "via:top"
"""The typed view of the top Via (:meth:`Headers.typed`, :meth:`Headers.prepend`)."""

# §8.2.6.2: header fields a response copies from its request (To handled apart).
_COPIED_TO_RESPONSE = frozenset({"via", "from", "call-id", "cseq"})


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Hard limits applied before and during parsing (defence against hostile peers)."""

    max_message_size: int = 65_535
    """Largest message accepted, headers and body (UDP's maximum payload)."""
    max_headers: int = 256
    """Most header lines in one message."""
    max_line_length: int = 16_384
    """Longest header line after unfolding (RFC 4475 longreq needs several kB)."""


DEFAULT_LIMITS = ParserLimits()


class Message:
    """Common part of requests and responses: headers and body."""

    __slots__ = ("body", "headers")

    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body

    # -- body ----------------------------------------------------------------
    def set_body(self, body: bytes, content_type: str | ContentType | None = None) -> None:
        """Replace the body, keeping Content-Length (and Content-Type) right."""
        self.body = body
        if content_type is not None:
            self.headers.set("Content-Type", content_type)
        elif not body:
            self.headers.remove("Content-Type")
        self.headers.set("Content-Length", len(body))

    # -- typed views (parsed on demand and memoised; ValueError on bad syntax) --
    @property
    def call_id(self) -> str:
        value = self.headers.get("Call-ID")
        if not value:
            raise ValueError("no Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        return self.headers.typed("cseq", _parse_cseq)

    @property
    def from_(self) -> NameAddress:
        return self.headers.typed("from", _parse_from)

    @property
    def to(self) -> NameAddress:
        return self.headers.typed("to", _parse_to)

    @property
    def vias(self) -> list[Via]:
        return list(self.headers.typed("via", _parse_vias))

    @property
    def top_via(self) -> Via:
        return self.headers.typed(TOP_VIA, _parse_top_via)

    @property
    def contacts(self) -> list[Contact]:
        return list(self.headers.typed("contact", _parse_contacts))

    @property
    def routes(self) -> list[NameAddress]:
        return parse_name_addresses(self.headers.values("Route"))

    @property
    def record_routes(self) -> list[NameAddress]:
        return parse_name_addresses(self.headers.values("Record-Route"))

    @property
    def paths(self) -> list[NameAddress]:
        return parse_name_addresses(self.headers.values("Path"))

    @property
    def service_routes(self) -> list[NameAddress]:
        return parse_name_addresses(self.headers.values("Service-Route"))

    @property
    def content_type(self) -> ContentType | None:
        value = self.headers.get("Content-Type")
        return None if value is None else ContentType.parse(value)

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit():
            raise ValueError(f"bad Max-Forwards {value!r}")
        return int(value)

    @property
    def expires(self) -> int | None:
        """The Expires header as delta-seconds (§20.19), None when absent."""
        value = self.headers.get("Expires")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit():
            raise ValueError(f"bad Expires {value!r}")
        return min(int(value), 2**32 - 1)

    @property
    def retry_after(self) -> int | None:
        """The Retry-After header as delta-seconds (§20.33: its comment and parameters
        dropped), None when absent."""
        value = self.headers.get("Retry-After")
        if value is None:
            return None
        seconds = value.split(";", 1)[0].split("(", 1)[0].strip()
        if not (seconds.isascii() and seconds.isdigit()):
            raise ValueError(f"bad Retry-After {value!r}")
        return min(int(seconds), 2**32 - 1)

    @property
    def event_package(self) -> str:
        """The package of the Event header (RFC 6665 §8.2.1, parameters dropped),
        lower-cased; empty when absent."""
        return (self.headers.get("Event") or "").split(";", 1)[0].strip().lower()

    def option_tags(self, name: str) -> set[str]:
        """The option tags of Require / Supported / Proxy-Require / Unsupported, lower-cased."""
        return {v.lower() for v in self.headers.values(name)}

    # -- output --------------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise; adds Content-Length when missing (mandatory on streams, §18.3)."""
        lines = [self.start_line()]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if "Content-Length" not in self.headers:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8") + self.body

    def __bytes__(self) -> bytes:  # (an alias assigned in the class body: mypyc has none)
        return self.to_bytes()


class Request(Message):
    """A SIP request.  ``uri`` is the Request-URI."""

    __slots__ = ("method", "uri", "version")

    def __init__(self, method: str, uri: URI | str, headers: Headers | None = None,
                 body: bytes = b"", version: str = SIP_VERSION) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri if isinstance(uri, URI) else URI.parse(uri)
        self.version = version

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def make_response(self, status: int, reason: str | None = None, *,
                      to_tag: str | None = None) -> Response:
        """Build a response per §8.2.6.2: Via, From, Call-ID, CSeq and To copied.

        ``to_tag`` is added to To when the request's To has no tag and the
        response is not a 100 (§8.2.6.2: 100 Trying carries no To tag).
        Raises :class:`~emulator.sip.errors.LocalProtocolError` for an ACK,
        which is never answered (§17.2.1).
        """
        from .errors import LocalProtocolError

        if self.method == "ACK":
            raise LocalProtocolError("ACK is never answered (RFC 3261 §17)")
        items = []
        for item in self.headers._items:
            key = item[1]
            if key in _COPIED_TO_RESPONSE:
                items.append(item)
            elif key == "to":
                # The parsed To, not a search for "tag=": a URI parameter such
                # as ;mytag=1 inside <...> is not the To tag.
                if to_tag is not None and status != 100:
                    to = self.to
                    if to.tag is None:
                        item = (item[0], key, str(to.with_tag(to_tag)))
                items.append(item)
            elif key == "timestamp" and status == 100:
                items.append(item)  # §8.2.6.1
        return Response(status, reason if reason is not None else reason_phrase(status),
                        Headers._from_parsed(items))

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("reason", "status", "version")

    def __init__(self, status: int, reason: str | None = None, headers: Headers | None = None,
                 body: bytes = b"", version: str = SIP_VERSION) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason if reason is not None else reason_phrase(status)
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    @property
    def provisional(self) -> bool:
        return self.status < 200

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise ValueError(f"no {name}")
    return value


def _parse_cseq(headers: Headers) -> CSeq:
    return CSeq.parse(_required(headers, "CSeq"))


def _parse_from(headers: Headers) -> NameAddress:
    return NameAddress.parse(_required(headers, "From"))


def _parse_to(headers: Headers) -> NameAddress:
    return NameAddress.parse(_required(headers, "To"))


def _parse_vias(headers: Headers) -> tuple[Via, ...]:
    return tuple(Via.parse(v) for v in headers.values("Via"))


def _parse_top_via(headers: Headers) -> Via:
    return Via.parse(_first_value(_required(headers, "Via")))


def _parse_contacts(headers: Headers) -> tuple[Contact, ...]:
    return tuple(Contact.parse_all(headers.values("Contact")))


def _first_value(value: str) -> str:
    if "," not in value and '"' not in value:
        return value
    from .grammar import split_header_values

    return split_header_values(value)[0]


# Request-Line = Method SP Request-URI SP SIP-Version CRLF  (exactly one SP each, §7.1;
# RFC 4475 §3.1.2.9 lwsstart and §3.1.2.10 trws rely on it)
# HCOLON = *( SP / HTAB ) ":" SWS
# header-name = token (§25.1).  A line is cut at its first colon (a token holds none), so
# no regular expression runs per line; names already seen skip even the token check.
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_NAMES_SEEN: set[str] = set()


def _valid_name(name: str) -> bool:
    if _HEADER_NAME_RE.match(name) is None:
        return False
    if len(_NAMES_SEEN) < 4096:  # bounded against a peer inventing names
        _NAMES_SEEN.add(name)
    return True



def parse_message(data: bytes, limits: ParserLimits = DEFAULT_LIMITS, *,
                  stream: bool = False) -> Request | Response:
    """Parse one complete SIP message.

    ``stream`` is True for messages cut out by the stream framer, where the
    body length was already fixed by Content-Length.  On a datagram, bytes
    beyond Content-Length are discarded and a Content-Length larger than the
    datagram is an error (§18.3).  Raises :class:`RemoteProtocolError`.
    """
    if len(data) > limits.max_message_size:
        raise RemoteProtocolError(f"message of {len(data)} bytes exceeds "
                                  f"{limits.max_message_size}", 513)
    lines, body = _split_head(data, stream)
    message, error = _parse_start_line(lines[0])
    bad = 400 if isinstance(message, Request) else None
    _parse_header_lines(message, lines, error, bad, limits)
    message.body = _framed_body(message, body, bad, stream)
    return message


def _split_head(data: bytes, stream: bool) -> tuple[list[str], bytes]:
    """Cut ``data`` at the empty line after the headers: the head's lines (decoded) and the body."""
    # §7.5: CRLFs before the start line are ignored.
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        body = data[end + 4:]
    elif not stream and data.endswith(b"\r\n"):
        # A datagram's end is unambiguous, so a missing empty line after the
        # last header is forgiven (RFC 4475 §3.1.2.15's baddn ends this way).
        # (max: a datagram of nothing but CRLFs gives end < start, which compiled code
        # (mypyc) does not slice to b"" as Python does.)
        end, body = max(len(data) - 2, start), b""
    else:
        raise RemoteProtocolError("no empty line after the headers", None)
    try:
        head = data[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"header section is not UTF-8 ({exc.reason} at {exc.start})",
                                  None) from None
    return head.split("\r\n"), body


def _parse_header_lines(message: Request | Response, lines: list[str],
                        error: RemoteProtocolError | None, bad: int | None,
                        limits: ParserLimits) -> None:
    """Store the header lines (``lines[1:]``) in ``message.headers``, unfolded.

    ``error`` is the start line's answerable error, if any; it or the first
    bad header line is raised once all lines are stored.  Exceeding a limit
    raises at once.
    """
    # A bad header line does not stop parsing: the rest is collected so that
    # a 400 can still be routed back with the request's Via/From/To/CSeq.
    items: list[tuple[str, str, str]] = []
    for line in lines[1:]:
        if not line:
            error = error or RemoteProtocolError("empty header line", bad, message=message)
            continue
        if "\r" in line or "\n" in line:
            # §7.3.1: lines end only at CRLF.  A bare CR or LF kept in a value
            # would be written out as a line break when the value is copied
            # into a response, so the line is malformed (and is not kept).
            error = error or RemoteProtocolError("bare CR or LF in a header line", bad,
                                                 message=message)
            continue
        if line[0] in " \t":
            # §7.3.1 header folding: a continuation joins the previous line with one SP.
            if not items:
                error = error or RemoteProtocolError("continuation before the first header", bad,
                                                     message=message)
                continue
            name, key, value = items[-1]
            # A blank continuation adds nothing: values never end in whitespace,
            # folded or not, so they survive a serialise/parse round trip.
            more = line.strip()
            value = f"{value} {more}" if value and more else value or more
            if len(value) > limits.max_line_length:
                raise RemoteProtocolError("header line too long", bad)
            items[-1] = (name, key, value)
            continue
        if len(line) > limits.max_line_length:
            raise RemoteProtocolError("header line too long", bad)
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or (name not in _NAMES_SEEN and not _valid_name(name)):
            error = error or RemoteProtocolError(f"malformed header line {line[:60]!r}", bad,
                                                 message=message)
            continue
        value = value.strip(" \t")
        items.append((name, header_key(name), value))
        if len(items) > limits.max_headers:
            raise RemoteProtocolError(f"more than {limits.max_headers} header lines", bad)
    message.headers = Headers._from_parsed(items)
    if error is not None:
        raise error


def _framed_body(message: Request | Response, body: bytes, bad: int | None,
                 stream: bool) -> bytes:
    """The body as Content-Length delimits it (§18.3: datagram and stream rules)."""
    lengths = message.headers.get_all("Content-Length")
    if len(set(v.strip() for v in lengths)) > 1:
        # RFC 4475 §3.3.9 (mcl01): conflicting lengths are a framing error.
        raise RemoteProtocolError("conflicting Content-Length headers", bad, fatal=stream,
                                  message=message)
    length_text = lengths[0] if lengths else None
    if length_text is not None:
        length_text = length_text.strip()
        # str.isdigit() also accepts digits such as '²' that int() rejects.
        if not (length_text.isascii() and length_text.isdigit()):
            raise RemoteProtocolError(f"bad Content-Length {length_text!r}", bad, fatal=stream,
                                      message=message)
        length = int(length_text)
        if length > len(body):
            raise RemoteProtocolError(
                f"Content-Length {length} larger than the {len(body)} bytes received", bad,
                message=message)
        return body[:length]
    if stream:
        raise RemoteProtocolError("no Content-Length on a stream transport (§18.3)", bad,
                                  fatal=True)
    return body


def _parse_start_line(line: str) -> tuple[Request | Response, RemoteProtocolError | None]:
    """Parse the start line; errors that still allow an answer are returned, not raised."""
    parts = line.split(" ", 2)
    if len(parts) < 3:
        raise RemoteProtocolError(f"malformed start line {line[:80]!r}", None)
    if parts[0].upper().startswith("SIP/"):
        version, code, reason = parts
        if not SIP_VERSION_RE.match(version) or not STATUS_CODE_RE.match(code):
            raise RemoteProtocolError(f"malformed status line {line[:80]!r}", None)
        status = int(code)
        if version.upper() != SIP_VERSION:
            raise RemoteProtocolError(f"unsupported version {version}", None)
        if "\r" in reason or "\n" in reason:
            # §25.1 Reason-Phrase holds no CR or LF; a proxy would forward it as a line break.
            raise RemoteProtocolError("bare CR or LF in the reason phrase", None)
        return Response(status, reason, Headers(), version=version), None
    method, uri_text, version = parts
    if not METHOD_RE.match(method):
        raise RemoteProtocolError(f"bad method {method[:40]!r}", None)
    uri_error = None
    try:
        uri = URI.parse(uri_text)
    except URIError as exc:
        uri_error = f"bad Request-URI: {exc}"
        uri = URI("invalid", opaque=uri_text)  # placeholder: only used to answer
    request = Request(method, uri, Headers(), version=version)
    # The error carries the request (its headers are added later) to build the answer from.
    if " " in version or not SIP_VERSION_RE.match(version):
        return request, RemoteProtocolError(f"malformed Request-Line {line[:80]!r}", 400,
                                            message=request)
    if version.upper() != SIP_VERSION:
        return request, RemoteProtocolError(f"SIP version {version} not supported", 505,
                                            message=request)
    if uri_error is not None:
        return request, RemoteProtocolError(uri_error, 400, message=request)
    return request, None


def check_request(request: Request) -> None:
    """The checks of §8.2.1-8.2.2 and §16.3 before a request may be processed.

    Raises :class:`RemoteProtocolError` with status 400 when a mandatory
    header is missing or malformed, when CSeq's method differs from the
    Request-Line's (§8.1.1.5, RFC 4475 §3.1.2.17), or when the Request-URI
    carries headers (§19.1.1 table 1, RFC 4475 §3.1.2.11).
    """
    headers = request.headers
    for name in ("To", "From", "Call-ID", "CSeq", "Via"):
        if name not in headers:
            raise RemoteProtocolError(f"missing {name} header", 400)
    try:
        cseq = request.cseq
        request.to  # noqa: B018 - parse for validation
        request.from_  # noqa: B018
        vias = request.vias
        request.max_forwards  # noqa: B018
        if headers.count("Call-ID") > 1 or headers.count("CSeq") > 1:
            raise ValueError("duplicated Call-ID or CSeq")
        if "Contact" in headers:
            for contact in request.contacts:
                contact.expires  # noqa: B018
        if "Content-Type" in headers:
            request.content_type  # noqa: B018
        if "Date" in headers:
            _check_date(headers.get("Date") or "")
    except ValueError as exc:
        raise RemoteProtocolError(f"{exc}", 400) from None
    if not vias:
        raise RemoteProtocolError("missing Via header", 400)
    if cseq.method != request.method:
        raise RemoteProtocolError(
            f"CSeq method {cseq.method} does not match {request.method}", 400)
    if request.uri.headers:
        raise RemoteProtocolError("Request-URI must not contain headers (§19.1.1)", 400)


def check_response(response: Response) -> None:
    """Checks before a response is matched (§18.1.2); failures mean drop (status None)."""
    try:
        response.cseq  # noqa: B018
        response.top_via  # noqa: B018
        response.call_id  # noqa: B018
        response.from_  # noqa: B018
        response.to  # noqa: B018
    except ValueError as exc:
        raise RemoteProtocolError(f"{exc}", None) from None


# rfc1123-date = wkday "," SP date1 SP time SP "GMT"  (§20.17)
_DATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d{2}:\d{2}:\d{2} GMT\Z")


def _check_date(value: str) -> None:
    if not _DATE_RE.match(value.strip()):
        raise ValueError(f"Date is not an rfc1123-date in GMT: {value!r}")

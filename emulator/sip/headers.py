"""Header storage and the typed header values of RFC 3261 §20.

:class:`Headers` keeps header lines in order, exactly as received (name as
spelled, value with folding already unfolded), so a proxy forwards fields it
does not touch byte for byte (sippy's lazy parsing).  Typed views are parsed
on demand from those strings; they raise :class:`ValueError` on bad syntax and
the message layer turns that into a 400 (see ``message.py``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from functools import lru_cache
from typing import TypeVar

from .grammar import canonical_name
from .grammar import format_params
from .grammar import header_key
from .grammar import is_token
from .grammar import parse_params
from .grammar import quote
from .grammar import split_header_values
from .grammar import split_unquoted
from .grammar import unquote
from .uri import PARSE_MEMO
from .uri import URI
from .uri import URIError

T = TypeVar("T")


class Headers:
    """Ordered, case-insensitive, repeatable SIP header fields.

    Compact and long names are the same field (``i`` is ``Call-ID``).  Each
    entry is one header *line*; a line may hold several comma-separated
    values, which :meth:`values` splits.
    """

    __slots__ = ("_cache", "_items")

    def __init__(self, items: Iterable[tuple[str, object]] | None = None) -> None:
        self._items: list[tuple[str, str, str]] = []
        # Parsed typed views (see ``typed``); any mutation clears it.
        self._cache: dict[str, object] = {}
        for name, value in items or ():
            self.add(name, value)

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str, str]]) -> Headers:
        new = cls()  # (not cls.__new__: mypyc's compiled classes have none to call)
        new._items = items
        return new

    def typed(self, key: str, parse: Callable[[Headers], T]) -> T:
        """``parse(self)``, memoised until the headers change.

        A proxy or registrar asks for To, Via or Contact several times per
        message; parsing once keeps the hot path cheap.  ``key`` is the
        header key, optionally with ":variant"; changing that header drops it.
        Errors are not cached.
        """
        cache = self._cache
        if key in cache:
            return cache[key]  # type: ignore[return-value]
        value = parse(self)
        cache[key] = value
        return value

    def copy(self) -> Headers:
        return Headers._from_parsed(list(self._items))

    # -- reading --------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for name, _, value in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        for _, k, _ in self._items:
            if k == key:
                return True
        return False

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first line named ``name``, or ``default``."""
        key = header_key(name)
        for _, k, value in self._items:
            if k == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """The values of every line named ``name``, one per line."""
        key = header_key(name)
        return [value for _, k, value in self._items if k == key]

    def values(self, name: str) -> list[str]:
        """Every comma-separated value of ``name``, across all its lines (§7.3.1)."""
        key = header_key(name)
        out: list[str] = []
        for _, k, value in self._items:
            if k == key:
                out.extend(split_header_values(value))
        return out

    def count(self, name: str) -> int:
        key = header_key(name)
        return sum(1 for _, k, _ in self._items if k == key)

    # -- writing --------------------------------------------------------------
    def add(self, name: str, value: object, *, view: str | None = None) -> None:
        """Append a line at the end.  ``view`` names the typed view (:meth:`typed`) that
        ``value`` itself now is: for a field of one line, from a value that prints as it
        parses (a :class:`NameAddress`, :class:`CSeq` or :class:`Via` built here, or
        parsed), so its next reader does not parse the text again."""
        key = header_key(name)
        self._invalidate(key)
        self._items.append((_checked_name(name), key, _checked_value(value)))
        if view is not None:
            self._cache[view] = value

    def _invalidate(self, key: str) -> None:
        # Typed views are cached under the header key ("via") or "key:variant"
        # ("via:top"); only those of the changed field are dropped.
        cache = self._cache
        if cache:
            for cached in [c for c in cache if c == key or c.startswith(key + ":")]:
                del cache[cached]

    def prepend(self, name: str, value: object, *, view: str | None = None) -> None:
        """Insert a line before the first line of the same field (or first of all).

        Via, Route, Record-Route and Path are stacks whose top is the first
        value; a proxy pushes onto them with this.  ``view`` as for :meth:`add`, here
        of the field's first value (``"via:top"``).
        """
        key = header_key(name)
        self._invalidate(key)
        index = next((i for i, (_, k, _) in enumerate(self._items) if k == key), 0)
        self._items.insert(index, (_checked_name(name), key, _checked_value(value)))
        if view is not None:
            self._cache[view] = value

    def set(self, name: str, value: object) -> None:
        """Replace every line of ``name`` with one line, kept at the first line's place."""
        key = header_key(name)
        self._invalidate(key)
        entry = (_checked_name(name), key, _checked_value(value))
        for i, (_, k, _) in enumerate(self._items):
            if k == key:
                self._items[i] = entry
                self._items[i + 1:] = [item for item in self._items[i + 1:] if item[1] != key]
                return
        self._items.append(entry)

    def remove(self, name: str) -> int:
        """Delete every line of ``name``; returns how many were removed."""
        key = header_key(name)
        self._invalidate(key)
        before = len(self._items)
        self._items = [item for item in self._items if item[1] != key]
        return before - len(self._items)

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the topmost value of a comma-list field (e.g. Via, Route)."""
        key = header_key(name)
        self._invalidate(key)
        for i, (n, k, value) in enumerate(self._items):
            if k == key:
                parts = split_header_values(value)
                if len(parts) <= 1:
                    del self._items[i]
                else:
                    self._items[i] = (n, k, ", ".join(parts[1:]))
                return parts[0] if parts else None
        return None

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


def _checked_name(name: str) -> str:
    if not is_token(name):
        raise ValueError(f"bad header name {name!r}")
    return name


def _checked_value(value: object) -> str:
    text = str(value)
    # A CR or LF inside a value would let a caller smuggle header lines.
    if "\r" in text or "\n" in text:
        raise ValueError(f"line break inside header value {text!r}")
    return text


# --------------------------------------------------------------------------
# Typed header values.  Each parses from and serialises to the field value.
# --------------------------------------------------------------------------

def _param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return "" if value is None else value
    return None


def _replace_param(params: tuple[tuple[str, str | None], ...], name: str,
                   value: str | None) -> tuple[tuple[str, str | None], ...]:
    lname = name.lower()
    kept = tuple(p for p in params if p[0].lower() != lname)
    return (*kept, (name, value))


# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport
# SLASH = SWS "/" SWS   (so whitespace may surround the slashes: RFC 4475 wsinv)
_VIA_RE = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s;:]+)(?:\s*:\s*(\d+))?\s*(;.*)?\Z",
    re.DOTALL,
)

BRANCH_MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (§20.42, §18.2.1 received, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    protocol: str = "SIP/2.0"

    def __init__(self, transport: str, host: str, port: int | None = None,
                 params: tuple[tuple[str, str | None], ...] = (),
                 protocol: str = "SIP/2.0") -> None:
        # Written out: compiled, dataclass's own __init__ still runs interpreted (see
        # emulator.sip.compiled), ~10 times slower to call than this one mypyc builds.
        object.__setattr__(self, "transport", transport)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "protocol", protocol)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Memoised, as the value is immutable (see :data:`PARSE_MEMO`)."""
        return _parse_via(text)

    @classmethod
    def _parse(cls, text: str) -> Via:
        match = _VIA_RE.match(text)
        if match is None:
            raise ValueError(f"bad Via {text!r}")
        name, version, transport, host, port, params = match.groups()
        port_num = None
        if port is not None:
            if len(port) > 5 or int(port) > 65535:
                raise ValueError(f"bad Via port {port!r}")
            port_num = int(port)
        return cls(transport.upper(), host, port_num,
                   tuple(parse_params(params or "")), f"{name}/{version}")

    @property
    def branch(self) -> str | None:
        return _param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return _param(self.params, "received")

    @property
    def rport(self) -> int | str | None:
        """None when absent, '' when present without a value, else the port."""
        value = _param(self.params, "rport")
        if value:
            # isascii(): str.isdigit() also accepts '²', which int() rejects.
            return int(value) if value.isascii() and value.isdigit() else value
        return value

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return (self.host.lower(), self.port)

    def param(self, name: str) -> str | None:
        return _param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> Via:
        # The constructor, not dataclasses.replace: this runs for every request received.
        return Via(self.transport, self.host, self.port,
                   _replace_param(self.params, name, value), self.protocol)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        params = format_params(list(self.params))
        return f"{self.protocol}/{self.transport} {self.host}{port}{params}"


# display-name = *(token LWS) / quoted-string
_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:\s+[A-Za-z0-9\-.!%*_+`'~]+)*\Z")


@dataclass(frozen=True, slots=True)
class NameAddress:
    """name-addr or addr-spec with header parameters (From, To, Contact, Route, Path...).

    ``display_name`` keeps its quotes as written; :attr:`display` gives the
    unquoted text.
    """

    uri: URI
    display_name: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    bracketed: bool = True

    def __init__(self, uri: URI, display_name: str | None = None,
                 params: tuple[tuple[str, str | None], ...] = (),
                 bracketed: bool = True) -> None:
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "display_name", display_name)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "bracketed", bracketed)

    @classmethod
    def parse(cls, text: str) -> NameAddress:
        """Memoised, as the value is immutable (see :data:`PARSE_MEMO`)."""
        return _parse_nameaddress(text)

    @classmethod
    def _parse(cls, text: str) -> NameAddress:
        text = text.strip()
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise ValueError(f"unterminated '<' in {text!r}")
            display = text[:lt].strip()
            if display:
                if display.startswith('"'):
                    if len(display) < 2 or not display.endswith('"'):
                        raise ValueError(f"bad quoted display-name {display!r}")
                    _check_quoted(display)
                elif not _DISPLAY_TOKENS_RE.match(display):
                    raise ValueError(f"display-name is neither tokens nor quoted {display!r}")
            uri = _parse_uri(text[lt + 1:gt])
            rest = text[gt + 1:].strip()
            if rest and not rest.startswith(";"):
                raise ValueError(f"junk after '>' in {text!r}")
            return cls(uri, display or None, tuple(parse_params(rest)), True)
        if '"' in text:
            raise ValueError(f"quoted display-name without <uri> in {text!r}")
        # addr-spec: semicolon parameters belong to the header, not the URI (§20.10).
        uri_text, semi, params = text.partition(";")
        params = semi + params
        if "?" in uri_text or "," in uri_text:
            raise ValueError(f"URI with '?' or ',' must be enclosed in <> (§20): {text!r}")
        return cls(_parse_uri(uri_text.strip()), None, tuple(parse_params(params)), False)

    @property
    def display(self) -> str | None:
        return None if self.display_name is None else unquote(self.display_name)

    @property
    def tag(self) -> str | None:
        return _param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return _param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> NameAddress:
        return NameAddress(self.uri, self.display_name,
                           _replace_param(self.params, name, value), self.bracketed)

    def with_tag(self, tag: str) -> NameAddress:
        return self.with_param("tag", tag)

    @classmethod
    def build(cls, uri: URI | str, display: str | None = None, **params: str | None) -> NameAddress:
        """Build a bracketed name-addr; ``display`` is quoted for you."""
        parsed = uri if isinstance(uri, URI) else URI.parse(uri)
        return cls(parsed, quote(display) if display is not None else None,
                   tuple(params.items()), True)

    def __str__(self) -> str:
        params = format_params(list(self.params))
        if not self.bracketed and self.display_name is None:
            return f"{self.uri}{params}"
        display = f"{self.display_name} " if self.display_name else ""
        return f"{display}<{self.uri}>{params}"


def _find_unquoted(text: str, char: str) -> int:
    in_quotes = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == char:
            return i
        i += 1
    if in_quotes:
        raise ValueError(f"unterminated quoted-string in {text!r}")
    return -1


def _check_quoted(text: str) -> None:
    inner = text[1:-1]
    i = 0
    while i < len(inner):
        if inner[i] == "\\":
            i += 2
            continue
        if inner[i] == '"':
            raise ValueError(f"unescaped quote inside {text!r}")
        i += 1
    if i != len(inner):
        raise ValueError(f"dangling escape in {text!r}")


def _parse_uri(text: str) -> URI:
    try:
        return URI.parse(text)
    except URIError as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Contact:
    """One Contact value (§20.10), or the wildcard ``*`` (§10.2.2)."""

    address: NameAddress | None
    wildcard: bool = False

    def __init__(self, address: NameAddress | None, wildcard: bool = False) -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "wildcard", wildcard)

    @classmethod
    def parse(cls, text: str) -> Contact:
        if text.strip() == "*":
            return cls(None, True)
        return cls(NameAddress.parse(text))

    @classmethod
    def parse_all(cls, values: list[str]) -> list[Contact]:
        return [cls.parse(v) for v in values]

    @property
    def uri(self) -> URI:
        if self.address is None:
            raise ValueError("wildcard Contact has no URI")
        return self.address.uri

    @property
    def expires(self) -> int | None:
        """The ``expires`` parameter (delta-seconds), None when absent."""
        if self.address is None:
            return None
        value = self.address.param("expires")
        if value is None:
            return None
        if not value.isdigit():
            raise ValueError(f"bad Contact expires {value!r}")
        return min(int(value), 2**32 - 1)

    @property
    def q(self) -> float | None:
        value = None if self.address is None else self.address.param("q")
        return None if value is None else float(value)

    @property
    def feature_tags(self) -> dict[str, str | None]:
        """Media feature tags (RFC 3840 §9), e.g. ``+g.3gpp.mcptt`` (24.379 D.2)."""
        if self.address is None:
            return {}
        return {k.lower(): v for k, v in self.address.params if k.startswith("+")}

    def __str__(self) -> str:
        return "*" if self.wildcard else str(self.address)


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq = 1*DIGIT LWS Method (§20.16); the number is below 2**31 (§8.1.1.5)."""

    seq: int
    method: str

    def __init__(self, seq: int, method: str) -> None:
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "method", method)

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Memoised, as the value is immutable (see :data:`PARSE_MEMO`)."""
        return _parse_cseq(text)

    @classmethod
    def _parse(cls, text: str) -> CSeq:
        number, _, method = text.strip().partition(" ")
        method = method.strip()
        if not number.isdigit() or len(number) > 10 or int(number) >= 2**31:
            raise ValueError(f"bad CSeq number {number!r}")
        if not is_token(method):
            raise ValueError(f"bad CSeq method {method!r}")
        return cls(int(number), method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@dataclass(frozen=True, slots=True)
class ContentType:
    """media-type = m-type SLASH m-subtype *(SEMI m-parameter) (§20.15)."""

    type: str
    subtype: str
    params: tuple[tuple[str, str | None], ...] = field(default=())

    def __init__(self, type: str, subtype: str,
                 params: tuple[tuple[str, str | None], ...] = ()) -> None:
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "subtype", subtype)
        object.__setattr__(self, "params", params)

    @classmethod
    def parse(cls, text: str) -> ContentType:
        """Memoised, as the value is immutable (see :data:`PARSE_MEMO`)."""
        return _parse_contenttype(text)

    @classmethod
    def _parse(cls, text: str) -> ContentType:
        main, semi, params = text.partition(";")
        params = semi + params
        mtype, slash, subtype = main.strip().partition("/")
        mtype, subtype = mtype.strip(), subtype.strip()
        if not slash or not is_token(mtype) or not is_token(subtype):
            raise ValueError(f"bad media type {text!r}")
        return cls(mtype.lower(), subtype.lower(), tuple(parse_params(params)))

    @property
    def mime_type(self) -> str:
        return f"{self.type}/{self.subtype}"

    def param(self, name: str) -> str | None:
        value = _param(self.params, name)
        return None if value is None else unquote(value)

    def __str__(self) -> str:
        return f"{self.type}/{self.subtype}{format_params(list(self.params))}"


def parse_name_addresses(values: list[str]) -> list[NameAddress]:
    """Parse Route / Record-Route / Path / Service-Route values (all name-addr)."""
    return [NameAddress.parse(v) for v in values]


__all__ = [
    "BRANCH_MAGIC_COOKIE", "CSeq", "Contact", "ContentType", "Headers", "NameAddress", "Via",
    "canonical_name", "parse_name_addresses", "shared_strings", "split_unquoted",
]


@lru_cache(maxsize=PARSE_MEMO)
def _parse_via(text: str) -> Via:
    return Via._parse(text)


@lru_cache(maxsize=PARSE_MEMO)
def _parse_nameaddress(text: str) -> NameAddress:
    return NameAddress._parse(text)


@lru_cache(maxsize=PARSE_MEMO)
def _parse_cseq(text: str) -> CSeq:
    return CSeq._parse(text)


@lru_cache(maxsize=PARSE_MEMO)
def _parse_contenttype(text: str) -> ContentType:
    return ContentType._parse(text)


_SHARED_LIMIT = 256
"""Distinct string tuples :func:`shared_strings` keeps at once (PROJECT-DEFINED)."""
_SHARED_SIZE = 1024
"""Characters at most in a tuple kept so: a peer's made-up Path vectors cost no memory
here."""
_shared: dict[tuple[str, ...], tuple[str, ...]] = {}


def shared_strings(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``values`` as a tuple of interned strings, one object for all who hold the same
    (a Path vector, a dialog's route set, a Service-Route: the same for every UE behind one
    P-CSCF).  Full, the table starts again rather than refusing newcomers: a peer sending
    made-up vectors would otherwise end the sharing for the node's life; this way the
    common value is kept again at its next use."""
    if not values:
        return ()
    key = tuple(values)
    kept = _shared.get(key)
    if kept is None:
        kept = tuple(map(sys.intern, key))
        if sum(map(len, kept)) <= _SHARED_SIZE:
            if len(_shared) >= _SHARED_LIMIT:
                _shared.clear()
            _shared[kept] = kept
    return kept


def clear_parse_memos() -> None:
    """Forget every memoised parse (they are bounded; a memory measurement may want them
    out of the way)."""
    from .uri import _parse as parse_uri

    for memo in (parse_uri, _parse_via, _parse_nameaddress, _parse_cseq, _parse_contenttype):
        memo.cache_clear()

"""SIP, SIPS, tel and urn URIs (RFC 3261 §19.1, RFC 3966, RFC 8141).

A :class:`URI` is immutable; ``with_param``/``without_param`` return copies.
Parsing keeps the text of each part as written, so a URI that is not touched
serialises back to the same characters.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from functools import lru_cache

from .grammar import is_token

# hostname = *( domainlabel "." ) toplabel [ "." ]; IPv4address; IPv6reference
_HOSTNAME_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*"
                          r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?\Z")
_IPV6_REF_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
# Characters allowed (unescaped) in the user/password/param/header parts: the
# union of unreserved, escaped and the user-unreserved / param-unreserved /
# hnv-unreserved sets of §25.1.  Space, '<', '>', '"' and controls are never
# allowed; RFC 4475 §3.1.2.8 (lwsruri) depends on this.
_URI_CHARS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:\[\]]*\Z")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ILLEGAL_RE = re.compile(r'[\s<>"]')
# The SIP URIs nearly every message carries (``user@host[:port][;params]``, no escape,
# password, IPv6 reference or headers) in one match, where the general parser takes six
# (~2.5 against ~1.0 µs compiled).  Its character sets are narrower than the general
# parser's, so what it accepts that parser accepts with the same parts; whatever it does
# not accept goes to that parser (tests/sip/test_uri.py checks both ways).
_COMMON_SIP_RE = re.compile(
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,]++)@)?"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?)"
    r"(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()&+$,/:\[\]]++(?:=[A-Za-z0-9\-_.!~*'()&=+$,/:\[\]]*+)?)*+)\Z")


PARSE_MEMO = 512
"""Parsed values remembered, per kind (URIs here; Via, name-addr, CSeq and Content-Type in
``headers``): an LRU, bounded, and a hostile peer's unique values only cost what parsing
costs anyway.  The hits that pay come within a transaction or a dialog (a response's Via,
the From, To and Contact that a proxy reads again), seconds apart at most, and 512 keeps
them: the SIP nodes' CPU per migrated UE was the same with 256 as with 2,048 entries, and
the migration path was as fast (``benchmarks/migration_path.py``).  At 2,048 the memos of
the three SIP nodes held ~14 MB once full (~2.3 kB an entry over the five kinds), ~1 kB
of every UE's share at 10,000 UEs (``benchmarks/scale.py``); at 512, ~3.5 MB."""


class URIError(ValueError):
    """The text is not a URI of a scheme we understand."""


@dataclass(frozen=True, slots=True)
class URI:
    """A parsed URI.

    For ``sip``/``sips`` every field is filled in from the text.  For ``tel``
    the number is in ``user`` and the parameters in ``params``.  Any other
    scheme (``urn``, ``http``, ...) keeps its scheme-specific part in
    ``opaque``.
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    opaque: str | None = None
    _text: str | None = field(default=None, compare=False, repr=False)

    def __init__(self, scheme: str, user: str | None = None, password: str | None = None,
                 host: str = "", port: int | None = None,
                 params: tuple[tuple[str, str | None], ...] = (),
                 headers: tuple[tuple[str, str], ...] = (), opaque: str | None = None,
                 _text: str | None = None) -> None:
        # Written out: compiled, dataclass's own __init__ still runs interpreted (see
        # emulator.sip.compiled), ~10 times slower to call than this one mypyc builds.
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "password", password)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "headers", headers)
        object.__setattr__(self, "opaque", opaque)
        object.__setattr__(self, "_text", _text)

    # -- construction -------------------------------------------------------
    @classmethod
    def sip(cls, user: str | None, host: str, port: int | None = None, *,
            params: tuple[tuple[str, str | None], ...] = (), secure: bool = False) -> URI:
        """Build a SIP (or SIPS) URI from its parts."""
        return cls("sips" if secure else "sip", user=user, host=host, port=port, params=params)

    @classmethod
    def parse(cls, text: str) -> URI:
        """Parse ``text``; raises :class:`URIError` with a reason on bad input.

        Memoised (URIs are immutable): the same From, To and Contact cross every hop
        and every re-registration, and each hop would parse them again."""
        return _parse(text)

    @classmethod
    def _parse(cls, text: str) -> URI:
        common = cls._parse_common(text)
        return common if common is not None else cls._parse_general(text)

    @classmethod
    def _parse_common(cls, text: str) -> URI | None:
        """The SIP URIs nearly every message carries, in one regular expression; None for
        any other text, which :meth:`_parse_general` then parses (or refuses)."""
        scheme, _, rest = text.partition(":")
        if scheme != "sip" and scheme != "sips":
            return None
        common = _COMMON_SIP_RE.match(rest)
        if common is None:
            return None
        user, host, port_text, param_text = common.groups()
        port = None if port_text is None else int(port_text)
        if port is not None and port > 65535:
            return None
        params = () if not param_text else _parse_uri_params(param_text[1:], text)
        return cls(scheme, user=user, host=host, port=port, params=params, _text=text)

    @classmethod
    def _parse_general(cls, text: str) -> URI:
        scheme, colon, rest = text.partition(":")
        if not colon or not _SCHEME_RE.match(scheme):
            raise URIError(f"no URI scheme in {text!r}")
        if not rest:
            raise URIError(f"empty URI after {scheme}:")
        if _ILLEGAL_RE.search(text):
            raise URIError(f"illegal character in URI {text!r}")
        lowered = scheme.lower()
        if lowered in ("sip", "sips"):
            return cls._parse_sip(lowered, rest, text)
        if lowered == "tel":
            number, params = _split_params(rest)
            if not number:
                raise URIError("tel URI without a number")
            return cls("tel", user=number, params=params, _text=text)
        return cls(lowered, opaque=rest, _text=text)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str, text: str) -> URI:
        if not _URI_CHARS_RE.match(rest.replace("@", "")):
            raise URIError(f"illegal character in SIP URI {text!r}")
        if _ESCAPE_RE.search(rest):
            raise URIError(f"bad %-escape in SIP URI {text!r}")
        user = password = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1:]
            if "@" in rest:
                raise URIError(f"more than one '@' in SIP URI {text!r}")
            if not userinfo:
                raise URIError("empty user part before '@'")
            user, colon, pw = userinfo.partition(":")
            password = pw if colon else None
        rest, qmark, header_text = rest.partition("?")
        hostport, _, param_text = rest.partition(";")
        host, port = _split_hostport(hostport, text)
        params = _parse_uri_params(param_text, text) if param_text or ";" in rest else ()
        headers: tuple[tuple[str, str], ...] = ()
        if qmark:
            pairs = []
            for item in header_text.split("&"):
                name, eq, value = item.partition("=")
                if not name or not eq:
                    raise URIError(f"bad URI header {item!r}")
                pairs.append((name, value))
            headers = tuple(pairs)
        return cls(scheme, user=user, password=password, host=host, port=port,
                   params=params, headers=headers, _text=text)

    # -- access -------------------------------------------------------------
    def param(self, name: str) -> str | None:
        """The value of a parameter ('' for a flag), or None when absent."""
        lname = name.lower()
        for key, value in self.params:
            if key.lower() == lname:
                return "" if value is None else value
        return None

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(key.lower() == lname for key, _ in self.params)

    @property
    def transport(self) -> str:
        """The ``transport`` parameter, lower-cased; ``udp`` when absent (§19.1.1)."""
        value = self.param("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def aor(self) -> str:
        """The address-of-record form: scheme, user and host, no port or params (§10.3 step 5).

        Interned: a registered user's AOR keys the location, its expiry, the reg-event
        subscriptions, the journal and the MC server's tables, each from another message;
        one string serves them all (interned strings still go when nothing holds them)."""
        if self.opaque is not None:
            return sys.intern(f"{self.scheme}:{self.opaque}")
        if self.scheme == "tel":
            return sys.intern(f"tel:{self.user}")
        user = f"{self.user}@" if self.user else ""
        return sys.intern(f"{self.scheme}:{user}{self.host.lower()}")

    # -- modification -------------------------------------------------------
    def with_param(self, name: str, value: str | None = None) -> URI:
        params = tuple(p for p in self.params if p[0].lower() != name.lower())
        return replace(self, params=(*params, (name, value)), _text=None)

    def without_param(self, name: str) -> URI:
        params = tuple(p for p in self.params if p[0].lower() != name.lower())
        return replace(self, params=params, _text=None)

    def without_headers(self) -> URI:
        return replace(self, headers=(), _text=None) if self.headers else self

    # -- output -------------------------------------------------------------
    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        if self.scheme == "tel":
            return f"tel:{self.user}{params}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        port = "" if self.port is None else f":{self.port}"
        headers = ("?" + "&".join(f"{k}={v}" for k, v in self.headers)) if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{params}{headers}"

    def __repr__(self) -> str:
        return f"URI({str(self)!r})"

    def equivalent(self, other: URI) -> bool:
        """URI comparison per RFC 3261 §19.1.4 (the parts the registrar needs).

        Scheme, host and parameter names compare case-insensitively; the user
        part compares case-sensitively; ``user``, ``ttl``, ``method``,
        ``maddr`` and ``transport`` must match when present in either; header
        components are never ignored.  An escape of a character outside the
        "reserved" set equals the character itself (``%61lice`` is ``alice``).
        """
        if self.scheme != other.scheme or self.opaque != other.opaque:
            return False
        if not _same_escaped(self.user, other.user) or \
                not _same_escaped(self.password, other.password):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        for name in ("user", "ttl", "method", "maddr", "transport"):
            a, b = self.param(name), other.param(name)
            if not _same_escaped(a and a.lower(), b and b.lower()):
                return False
        mine = {_unescape(k).lower(): _unescape(v or "").lower() for k, v in self.params}
        theirs = {_unescape(k).lower(): _unescape(v or "").lower() for k, v in other.params}
        if not all(theirs[k] == v for k, v in mine.items() if k in theirs):
            return False
        # "Any present header component MUST be present in both URIs and match."
        return _header_set(self.headers) == _header_set(other.headers)


# reserved = ";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","  (§25.1)
_RESERVED = frozenset(";/?:@&=+$,")
_HEX_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def _unescape_one(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    if char in _RESERVED or not char.isascii():
        return "%" + match.group(1).upper()  # stays an escape; hex case is irrelevant
    return char


def _unescape(text: str) -> str:
    """Decode the escapes §19.1.4 makes equal to their character (not the reserved ones)."""
    return _HEX_ESCAPE_RE.sub(_unescape_one, text) if "%" in text else text


def _same_escaped(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return _unescape(a) == _unescape(b)


def _header_set(headers: tuple[tuple[str, str], ...]) -> set[tuple[str, str]]:
    """URI headers for comparison: names case-insensitive, order irrelevant (§19.1.4)."""
    return {(_unescape(name).lower(), _unescape(value)) for name, value in headers}


def _split_hostport(hostport: str, text: str) -> tuple[str, int | None]:
    if not hostport:
        raise URIError(f"no host in SIP URI {text!r}")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise URIError(f"unterminated IPv6 reference in {text!r}")
        host, after = hostport[: end + 1], hostport[end + 1:]
        if not _IPV6_REF_RE.match(host):
            raise URIError(f"bad IPv6 reference {host!r}")
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            raise URIError(f"junk after IPv6 reference in {text!r}")
    else:
        host, colon, port_text_ = hostport.partition(":")
        port_text = port_text_ if colon else None
        if not _HOSTNAME_RE.match(host):
            raise URIError(f"bad host {host!r} in {text!r}")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
            raise URIError(f"bad port {port_text!r} in {text!r}")
        port = int(port_text)
    return host, port


def _parse_uri_params(param_text: str, text: str) -> tuple[tuple[str, str | None], ...]:
    params = []
    for item in param_text.split(";"):
        if not item:
            raise URIError(f"empty URI parameter in {text!r}")
        name, eq, value = item.partition("=")
        if not name:
            raise URIError(f"empty URI parameter name in {text!r}")
        params.append((name, value if eq else None))
    return tuple(params)


def _split_params(text: str) -> tuple[str, tuple[tuple[str, str | None], ...]]:
    head, *items = text.split(";")
    params = []
    for item in items:
        name, eq, value = item.partition("=")
        if not is_token(name):
            raise URIError(f"bad parameter {item!r}")
        params.append((name, value if eq else None))
    return head, tuple(params)


@lru_cache(maxsize=PARSE_MEMO)
def _parse(text: str) -> URI:
    return URI._parse(text)

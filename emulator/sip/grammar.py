"""RFC 3261 §25 grammar pieces shared by the parser and the header types.

Everything here is pure string work: no I/O, no state.  The ABNF each regex
implements is quoted above it.
"""

from __future__ import annotations

import re

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN_FULL = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")

# Method = INVITEm / ... / extension-method; extension-method = token
METHOD_RE = _TOKEN_FULL

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT   (case-insensitive per §7.1)
SIP_VERSION_RE = re.compile(r"SIP/\d+\.\d+\Z", re.IGNORECASE)

# Status-Code = 3DIGIT (the classes 1xx-6xx of §21)
STATUS_CODE_RE = re.compile(r"[1-6]\d\d\Z")

# RFC 3261 §7.3.3 and the later RFCs that register compact forms in the IANA
# "Header Fields" registry.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",  # RFC 4474
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
}

# Canonical spelling of the header names we emit, so that messages we build
# read like those of other stacks (Wireshark shows names as written).
_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info",
        "Contact", "Content-Disposition", "Content-Encoding", "Content-ID", "Content-Language",
        "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires",
        "From", "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires",
        "MIME-Version", "Organization", "P-Access-Network-Info", "P-Asserted-Identity",
        "P-Associated-URI", "P-Called-Party-ID", "P-Charging-Vector",
        "P-Charging-Function-Addresses", "P-Preferred-Identity", "P-Preferred-Service",
        "P-Asserted-Service", "P-Visited-Network-ID", "Path", "Priority", "Proxy-Authenticate",
        "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To",
        "Referred-By", "Reject-Contact", "Reply-To", "Request-Disposition", "Require",
        "Retry-After", "Route", "RSeq", "Security-Client", "Security-Server",
        "Security-Verify", "Server", "Service-Route", "Session-Expires", "SIP-ETag",
        "SIP-If-Match", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
        "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
    )
}


_KEYS: dict[str, str] = {}


def header_key(name: str) -> str:
    """The lookup key of a header name: lower-case long form (§7.3.3, §7.3.5)."""
    key = _KEYS.get(name)
    if key is not None:
        return key
    key = name.lower()
    if len(key) == 1:
        long = COMPACT_FORMS.get(key)
        if long is not None:
            key = long.lower()
    if len(_KEYS) < 4096:  # memo of the names seen; bounded against hostile peers
        _KEYS[name] = key
    return key


def canonical_name(name: str) -> str:
    """The long form of ``name`` in its usual capitalisation."""
    key = header_key(name)
    return _CANONICAL.get(key) or "-".join(part.capitalize() for part in key.split("-"))


def is_token(text: str) -> bool:
    return _TOKEN_FULL.match(text) is not None


_SPECIALS: dict[str, re.Pattern[str]] = {
    sep: re.compile("[" + re.escape('"<>\\' + sep) + "]") for sep in ",;"
}


def split_unquoted(text: str, separator: str) -> list[str]:
    """Split ``text`` at ``separator`` where it is outside quotes and <...>.

    Header values such as ``Contact: "A, B" <sip:a@b;x=1,2>, <sip:c@d>`` hold
    separators inside quoted strings (§25.1 quoted-string, with quoted-pair
    escapes) and inside angle-bracketed URIs; both must be skipped.  Raises
    ``ValueError`` on an unterminated quote or bracket.
    """
    if '"' not in text and "<" not in text:
        return text.split(separator)  # the common case: nothing to skip
    # Jump between the few characters that matter instead of walking every one.
    pattern = _SPECIALS.get(separator) or re.compile("[" + re.escape('"<>\\' + separator) + "]")
    parts: list[str] = []
    start = 0
    in_quotes = in_angle = False
    escaped_until = -1
    for match in pattern.finditer(text):
        i = match.start()
        if i < escaped_until:
            continue  # the character after a quoted-pair backslash
        ch = text[i]
        if in_quotes:
            if ch == "\\":
                escaped_until = i + 2
            elif ch == '"':
                in_quotes = False
        elif in_angle:
            if ch == ">":
                in_angle = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == separator:
            parts.append(text[start:i])
            start = i + 1
    if in_quotes:
        raise ValueError("unterminated quoted-string")
    if in_angle:
        raise ValueError("unterminated '<' in header value")
    parts.append(text[start:])
    return parts


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header field value into its elements (§7.3.1).

    SIP's list grammar (``x *(COMMA x)``) has no empty elements, unlike
    HTTP's; ``Via: a,,b`` is malformed (RFC 4475 §3.1.2.1), so an empty
    element raises ``ValueError``.
    """
    if "," not in value:
        stripped = value.strip()
        if not stripped:
            raise ValueError("empty header value in list")
        return [stripped]
    parts = [part.strip() for part in split_unquoted(value, ",")]
    if not all(parts):
        raise ValueError(f"empty element in list {value!r}")
    return parts


def parse_params(text: str) -> list[tuple[str, str | None]]:
    """Parse ``;name=value;flag`` into ordered (name, value) pairs.

    generic-param = token [ EQUAL gen-value ]; gen-value = token / host /
    quoted-string.  Values keep their quotes so they serialise back as written.
    Raises ``ValueError`` on an empty or non-token name.
    """
    params: list[tuple[str, str | None]] = []
    text = text.strip()
    if not text:
        return params
    if not text.startswith(";"):
        raise ValueError(f"parameters must start with ';': {text!r}")
    for raw in split_unquoted(text[1:], ";"):
        raw = raw.strip()
        if not raw:
            raise ValueError(f"empty parameter in {text!r}")
        name, eq, value = raw.partition("=")
        name = name.strip()
        if not is_token(name):
            raise ValueError(f"bad parameter name {name!r}")
        params.append((name, value.strip() if eq else None))
    return params


def format_params(params: list[tuple[str, str | None]]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def unquote(value: str) -> str:
    """Remove the quotes and quoted-pair escapes of a quoted-string."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        if "\\" not in inner:
            return inner
        out = []
        i = 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner):
                i += 1
            out.append(inner[i])
            i += 1
        return "".join(out)
    return value


def quote(value: str) -> str:
    """Quote ``value`` as a quoted-string, escaping backslash and quote."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

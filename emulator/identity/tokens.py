"""MCX tokens: issue and validate JWS-signed JWTs (33.180 Annex B), sans-IO.

Three kinds, told apart by the JWS ``typ`` header so one can never stand
in for another:

* ID token (B.2.1), ``typ: JWT``: iss, sub, aud = client_id, exp, iat and
  the MC service IDs (mcptt_id, mcdata_id, mcvideo_id).
* Access token (B.2.2), ``typ: at+jwt`` (RFC 9068 §2.1): iss, sub, aud,
  iat, exp, scope (space-separated), client_id and the MC service IDs.
* Security token (B.8), ``typ: mcx-st+jwt``: iss, sub, aud = [client_id,
  partner IdMS address], exp, iat.  The ``typ`` value is **project-defined**:
  B.8 lists the claims but no type; a distinct type makes "access token
  presented as a security token" fail by construction.

Validation (RFC 8725 best practice, 33.180 B.2.1 leeway): the token size is
capped; ``alg`` must be one of the pinned algorithms *and* the algorithm of
the key named by ``kid`` (so ``none`` and HS256-with-the-public-key can
never verify); ``kid`` must be a plain identifier of a provisioned key (no
paths, no URLs: keys are never fetched); ``jku``/``x5u``/``jwk``/``x5c``
headers are refused; the signing certificate chain must be valid at ``now``;
then signature, ``iss``, ``aud``, ``exp``/``nbf``/``iat`` with at most 30 s of
leeway, and scope.

Time is the caller's ``now`` (seconds since the epoch); keys are objects
loaded once, so the hot path is one signature check and a few comparisons.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import secrets
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.jwk import RSAKey

from .pki import Credential
from .trust import KID_RE
from .trust import VerificationKey
from .trust import algorithm_for
from .trust import kid_for

ID_TOKEN_TYP = "JWT"
ACCESS_TOKEN_TYP = "at+jwt"  # RFC 9068 §2.1
SECURITY_TOKEN_TYP = "mcx-st+jwt"  # project-defined, see the module docstring
MAX_TOKEN_BYTES = 16 * 1024
VERIFIED_TOKENS = 8192
"""Signature checks remembered per validator (their tokens' next uses skip RSA): at most
~1.2 MB."""
MAX_LEEWAY = 30  # 33.180 B.2.1: clock-skew leeway "not to exceed 30 seconds"
SUPPORTED_ALGORITHMS = ("RS256", "ES256")
MC_ID_CLAIMS = ("mcptt_id", "mcdata_id", "mcvideo_id")
_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
_K = TypeVar("_K")
_V = TypeVar("_V")


class TokenError(Exception):
    """A token was refused.  ``description`` says exactly why (for logs and OAuth errors)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass(frozen=True)
class SigningKey:
    """An IdMS's token-signing key, loaded once from its signing credential."""

    kid: str
    algorithm: str
    key: RSAKey | ECKey

    @classmethod
    def from_credential(cls, credential: Credential) -> SigningKey:
        algorithm = algorithm_for(credential.certificate)
        # The loaded key object itself: re-importing its PEM would parse and check it again.
        native = credential.key
        key: RSAKey | ECKey = (RSAKey(native, native) if isinstance(native, rsa.RSAPrivateKey)
                               else ECKey(native, native))
        return cls(kid_for(credential.certificate), algorithm, key)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK for the IdMS's JWKS (RFC 7517 §4)."""
        jwk = self.key.as_dict(private=False)
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return jwk


class TokenIssuer:
    """Signs the three token kinds for one IdMS (``issuer`` is its iss URL)."""

    def __init__(self, issuer: str, signing_key: SigningKey) -> None:
        self.issuer = issuer
        self.signing_key = signing_key

    def sign(self, claims: Mapping[str, Any], typ: str) -> str:
        key = self.signing_key
        header = {"alg": key.algorithm, "typ": typ, "kid": key.kid}
        payload = json.dumps(claims, separators=(",", ":")).encode()
        return jws.serialize_compact(header, payload, key.key, algorithms=[key.algorithm])

    def _base(self, sub: str, aud: str | list[str], now: float, lifetime: int) -> dict[str, Any]:
        issued = int(now)
        return {"iss": self.issuer, "sub": sub, "aud": aud, "iat": issued,
                "exp": issued + lifetime, "jti": secrets.token_urlsafe(12)}

    def id_token(self, *, sub: str, client_id: str, now: float, lifetime: int = 3600,
                 mc_ids: Mapping[str, str] | None = None, nonce: str | None = None,
                 extra: Mapping[str, Any] | None = None) -> str:
        claims = self._base(sub, client_id, now, lifetime)
        claims.update(mc_ids or {})
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(extra or {})
        return self.sign(claims, ID_TOKEN_TYP)

    def access_token(self, *, sub: str, client_id: str, scope: Iterable[str], now: float,
                     audience: str | list[str], lifetime: int = 3600,
                     mc_ids: Mapping[str, str] | None = None,
                     extra: Mapping[str, Any] | None = None) -> str:
        claims = self._base(sub, audience, now, lifetime)
        claims["client_id"] = client_id
        claims["scope"] = " ".join(scope)
        claims.update(mc_ids or {})
        claims.update(extra or {})
        return self.sign(claims, ACCESS_TOKEN_TYP)

    def security_token(self, *, sub: str, client_id: str, target_idms: str, now: float,
                       lifetime: int = 600, extra: Mapping[str, Any] | None = None) -> str:
        claims = self._base(sub, [client_id, target_idms], now, lifetime)
        claims.update(extra or {})
        return self.sign(claims, SECURITY_TOKEN_TYP)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_segment(segment: str) -> Any:
    """A base64url segment's JSON (ValueError or binascii.Error otherwise); decoded to text
    first, so json does not guess the bytes' encoding in Python (RFC 7515 §5.2: UTF-8)."""
    return json.loads(_b64decode(segment).decode("utf-8"))


def _remember(memo: dict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """``memo[key] = value``, the oldest entry forgotten first once ``limit`` are held."""
    if len(memo) >= limit:
        del memo[next(iter(memo))]
    memo[key] = value


HEADERS_REMEMBERED = 16
"""Decoded JWS headers kept by their segment: an issuer's key signs every token under the
same header, so a handful serve every token a validator sees."""


class TokenValidator:
    """Validates tokens against a fixed set of provisioned keys.

    ``keys`` may hold several issuers' keys (the partner IdMS trusts its own
    and the primary's); each token is checked against the issuer its key was
    provisioned for.
    """

    def __init__(self, keys: Iterable[VerificationKey], *,
                 algorithms: Iterable[str] = SUPPORTED_ALGORITHMS,
                 leeway: int = MAX_LEEWAY, remembered: int = VERIFIED_TOKENS) -> None:
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway must be within 0..{MAX_LEEWAY} s (33.180 B.2.1)")
        self.algorithms = frozenset(algorithms)
        unknown = self.algorithms - set(SUPPORTED_ALGORITHMS)
        if unknown:
            raise ValueError(f"algorithms not supported: {sorted(unknown)}")
        self.leeway = leeway
        self.remembered = remembered
        """Signature checks remembered (:meth:`_verify`), the oldest forgotten first."""
        self._keys: dict[str, VerificationKey] = {}
        self._verified: dict[bytes, VerificationKey] = {}
        """SHA-256 of a token -> the key that verified it (see :meth:`_verify`)."""
        self._headers: dict[str, dict[str, Any]] = {}
        """Header segment -> its decoded JSON object (:data:`HEADERS_REMEMBERED`); what
        the header says is judged on every use (:meth:`_check_header`)."""
        for key in keys:
            self.add_key(key)

    def add_key(self, key: VerificationKey) -> None:
        if not KID_RE.match(key.kid):
            raise ValueError(f"kid {key.kid!r} is not a plain identifier")
        self._keys[key.kid] = key
        self._verified.clear()  # what the old key of this kid verified no longer counts

    def validate(self, token: str | bytes, *, now: float, typ: str,
                 audience: str | None = None, issuer: str | None = None,
                 required_scope: str | None = None) -> dict[str, Any]:
        """Return the claims of a valid token; raise :class:`TokenError` otherwise."""
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise TokenError("token is not ASCII") from None
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError(f"token of {len(token)} bytes exceeds {MAX_TOKEN_BYTES}")
        if not token.isascii():  # compact JWS is base64url and dots (RFC 7515 §7.1)
            raise TokenError("token is not ASCII")
        parts = token.strip().split(".")
        if len(parts) != 3:
            raise TokenError("not a compact JWS (expected three dot-separated parts)")
        header = self._header(parts[0])
        key = self._check_header(header, typ, now)
        digest = hashlib.sha256(token.encode("ascii")).digest()
        claims: dict[str, Any]
        if self._verified.get(digest) is key:
            # The digest covers the payload segment: these are the bytes once verified.
            claims = _json_segment(parts[1])
        else:
            claims = self._verify(token, digest, key)
        # Every use is judged against ``now`` and the caller's needs, remembered or not.
        self._check_claims(claims, key, now, audience, issuer, required_scope)
        return claims

    def valid_until(self, claims: Mapping[str, Any]) -> float:
        """The last moment a token that :meth:`validate` just accepted with ``claims``
        stays acceptable, for a caller that remembers its decision: its ``exp`` with the
        leeway, and its issuer's keys' certificates (every other check gives the same
        answer later; ``nbf`` and ``iat`` held already, and time only moves on)."""
        keys = [key.not_after for key in self._keys.values() if key.issuer == claims["iss"]]
        return min([float(claims["exp"]) + self.leeway, *keys])

    def _verify(self, token: str, digest: bytes, key: VerificationKey) -> dict[str, Any]:
        """The signature checked and the claims decoded, remembered for the token's next
        use (a re-REGISTER shows the same token): the signature of the same bytes under the
        same provisioned key cannot change.  Remembered by the token's SHA-256 alone
        (~0.15 kB an entry; with the payload's bytes it was ~0.7 kB, ~2 kB per UE over a
        10,000-UE run's four validators): a later use decodes the claims from the token
        it shows, whose bytes the digest covers.  Bounded, the oldest forgotten first."""
        try:
            verified = jws.deserialize_compact(token, key.key, algorithms=[key.algorithm])
        except JoseError as exc:
            raise TokenError(f"signature check failed: {exc.error}") from None
        except (ValueError, TypeError):
            raise TokenError("malformed JWS") from None
        try:
            claims = json.loads(verified.payload)
        except ValueError:
            raise TokenError("JWS payload is not JSON") from None
        if not isinstance(claims, dict):
            raise TokenError("JWT claims are not a JSON object")
        if self.remembered:
            _remember(self._verified, digest, key, self.remembered)
        return claims

    def _header(self, segment: str) -> dict[str, Any]:
        header = self._headers.get(segment)
        if header is not None:
            return header
        try:
            header = _json_segment(segment)
        except (ValueError, binascii.Error):
            raise TokenError("JWS header is not base64url JSON") from None
        if not isinstance(header, dict):
            raise TokenError("JWS header is not a JSON object")
        _remember(self._headers, segment, header, HEADERS_REMEMBERED)
        return header

    def _check_header(self, header: dict[str, Any], typ: str, now: float) -> VerificationKey:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise TokenError(f"algorithm {alg!r} is not allowed (pinned: "
                             f"{', '.join(sorted(self.algorithms))})")
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise TokenError(f"JWS header {name!r} is not accepted: keys are provisioned, "
                                 "never taken from the token")
        if header.get("typ") != typ:
            raise TokenError(f"token type {header.get('typ')!r} where {typ!r} is required")
        kid = header.get("kid")
        if not isinstance(kid, str) or not KID_RE.match(kid):
            raise TokenError(f"kid {str(kid)[:80]!r} is not a plain key identifier")
        key = self._keys.get(kid)
        if key is None:
            raise TokenError(f"unknown kid {kid!r}: no such key was provisioned")
        if key.algorithm != alg:
            raise TokenError(f"algorithm {alg} does not match key {kid} ({key.algorithm})")
        if now < key.not_before:
            raise TokenError(f"signing certificate {key.subject} is not yet valid")
        if now > key.not_after:
            raise TokenError(f"signing certificate {key.subject} has expired")
        return key

    def _check_claims(self, claims: dict[str, Any], key: VerificationKey, now: float,
                      audience: str | None, issuer: str | None,
                      required_scope: str | None) -> None:
        leeway = self.leeway
        iss = claims.get("iss")
        if iss != key.issuer:
            raise TokenError(f"iss {iss!r} is not the issuer key {key.kid} belongs to")
        if issuer is not None and iss != issuer:
            raise TokenError(f"iss {iss!r} where {issuer!r} is required")
        for name in ("exp", "iat"):
            if name not in claims:
                raise TokenError(f"claim {name!r} is missing")
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            # json.loads accepts NaN and Infinity, which no comparison would ever refuse.
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)
                                      or not math.isfinite(value)):
                raise TokenError(f"claim {name!r} is not a number")
        if now > claims["exp"] + leeway:
            raise TokenError(f"token expired {int(now - claims['exp'])} s ago")
        if "nbf" in claims and now + leeway < claims["nbf"]:
            raise TokenError(f"token not valid before {claims['nbf']} (now {int(now)})")
        if claims["iat"] > now + leeway:
            raise TokenError(f"token issued in the future (iat {claims['iat']}, now {int(now)})")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenError("claim 'sub' is missing")
        if audience is not None:
            aud = claims.get("aud")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if audience not in audiences:
                raise TokenError(f"aud {aud!r} does not include {audience!r}")
        if required_scope is not None and required_scope not in scopes_of(claims):
            raise TokenError(f"scope lacks {required_scope!r}")


def scopes_of(claims: Mapping[str, Any]) -> set[str]:
    """The scope claim as a set: a space-separated string (B.2.2), or a list as some IdMSs send."""
    scope = claims.get("scope", "")
    if isinstance(scope, str):
        return set(scope.split())
    if isinstance(scope, list):
        return {s for s in scope if isinstance(s, str)}
    return set()

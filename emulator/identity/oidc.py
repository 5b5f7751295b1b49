"""The IdMS's OpenID Connect / OAuth 2.0 logic, sans-IO (24.482, 33.180 Annex B).

:class:`IdentityProvider` is everything an IdMS decides, as plain methods of
its inputs and ``now``; ``nodes/idms.py`` only moves HTTP in and out.

Grants of the token endpoint:

* ``authorization_code`` with PKCE S256 (RFC 7636, 33.180 B.4): codes are
  single use, short-lived, bound to client_id, redirect_uri and challenge.
* ``refresh_token`` (33.180 B.5, RFC 6749 §6), rotating (RFC 9700 §4.14.2): each
  refresh token is single use and its refresh brings a new one.  A partner's refresh
  tokens name the migration profile they were granted under and refresh into partner
  access tokens; they die with the profile.
* Token exchange (RFC 8693, 33.180 B.7.2): a local access token becomes a
  *security token* for a partner IdMS named by ``resource``; only users whose
  account authorises migration to that partner get one.
* JWT bearer (RFC 7523 §2.1) in the partner role: the primary's security
  token, checked against the out-of-band provisioned primary certificate,
  becomes a *partner access token* for the user's migration profile, with a
  refresh token.  This grant is the **project's reading of 33.180 B.7.4**, whose
  text the spec digest could not retrieve.

Errors are :class:`Refusal` carrying the RFC 6749 §5.2 code and a
description that says what was wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sys
import urllib.parse
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from types import MappingProxyType
from typing import Any

from emulator.expiry import ExpiringTable
from emulator.expiry import TableFull
from emulator.refusal import Refusal

from .tokens import ACCESS_TOKEN_TYP
from .tokens import MC_ID_CLAIMS
from .tokens import SECURITY_TOKEN_TYP
from .tokens import TokenError
from .tokens import TokenIssuer
from .tokens import TokenValidator
from .tokens import scopes_of

GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
ACR_PASSWORD = "3gpp:acr:password"
CLAIM_MIGRATION_PARTNER = "mcx_migration_partner"
"""PROJECT-DEFINED security-token claim: the partner IdMS the primary authorised this
migration to (the ``resource`` of the token exchange).  B.8 requires only iss, sub, aud, exp
and iat; the security token's ``scope`` (what the primary authorised, copied from the
subject token's MC scopes) is project-defined as well."""
# RFC 7636 §4.1/§4.2: code_verifier and code_challenge are 43..128 unreserved characters.
_PKCE_RE = re.compile(r"[A-Za-z0-9._~-]{43,128}\Z")

# 33.180 B.4 scope values (MCOP's list, spec digest §2.4).
MC_SCOPES = (
    "3gpp:mc:ptt_service", "3gpp:mc:ptt_group_management_service",
    "3gpp:mc:ptt_config_management_service", "3gpp:mc:ptt_key_management_service",
    "3gpp:mc:video_service", "3gpp:mc:video_group_management_service",
    "3gpp:mc:video_config_management_service", "3gpp:mc:video_key_management_service",
    "3gpp:mc:data_service", "3gpp:mc:data_group_management_service",
    "3gpp:mc:data_config_management_service", "3gpp:mc:data_key_management_service",
)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """PBKDF2-SHA256 password hash in ``salt$hash`` form (never store plain text)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10_000)
    return f"{salt.hex()}${digest.hex()}"


VERIFIED_MEMORY = 4096
"""Verified (hash, password) pairs remembered before the memory starts over."""


def check_password(password: str, stored: str) -> bool:
    salt_hex, _, digest_hex = stored.partition("$")
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    return hmac.compare_digest(hash_password(password, salt).partition("$")[2], digest_hex)


def s256_challenge(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class OidcClient:
    """A registered native client (33.180 B.3): its id and exact redirect URIs."""

    client_id: str
    redirect_uris: tuple[str, ...]


@dataclass(frozen=True)
class UserAccount:
    """An MC service user known to this IdMS."""

    username: str
    password_hash: str
    mc_ids: Mapping[str, str]
    """mcptt_id / mcdata_id / mcvideo_id (33.180 B.2.1)."""
    scopes: tuple[str, ...] = MC_SCOPES
    migration_targets: tuple[str, ...] = ()
    """Partner IdMS addresses this user is authorised to migrate to (token exchange)."""
    security_token_lifetime: int = 600
    """Seconds this user's security tokens live (exp - iat, and the exchange's expires_in).
    The 600 s default is PROJECT-DEFINED: 33.180 B.7.2/B.8 require an exp but give no value.
    Below zero makes them born expired (how a test shows that the partner checks exp)."""

    @property
    def sub(self) -> str:
        return self.username


@dataclass(frozen=True)
class MigrationProfile:
    """The partner's provisioned profile for a migrating primary user.

    Keyed by the primary IdMS (``primary_issuer``) and the user's ``sub`` there: the
    claims 33.180 B.8 guarantees in a security token (iss, sub).  Gives the user's primary
    MCPTT ID, the partner-assigned identities (23.280 §10.16.5.1: the migrated user gets a
    new MC service ID) and the services allowed.
    """

    primary_issuer: str
    primary_sub: str
    primary_mcptt_id: str
    partner_username: str
    mc_ids: Mapping[str, str]
    scopes: tuple[str, ...] = MC_SCOPES
    access_token_lifetime: int | None = None
    """Seconds this migrant's partner access tokens live, from the jwt-bearer grant and from
    refresh; None: the IdMS's ``access_token_lifetime``.  Project-defined, like the profile."""

    @property
    def key(self) -> tuple[str, str]:
        """(primary_issuer, primary_sub): what the partner finds the profile by."""
        return self.primary_issuer, self.primary_sub

    def __post_init__(self) -> None:
        # Frozen means frozen: profiles travel in plans, which nothing may change.
        object.__setattr__(self, "mc_ids", MappingProxyType(dict(self.mc_ids)))


@dataclass(slots=True)
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    username: str
    scope: tuple[str, ...]
    nonce: str | None
    expires_at: float
    used: bool = False


@dataclass(slots=True)
class _Refresh:
    client_id: str
    username: str
    """The sub of the tokens it refreshes: a local account, or a migrant's partner_username."""
    scope: tuple[str, ...]
    expires_at: float
    migration_profile: tuple[str, str] | None = None
    """A migrant's: the key (primary_iss, primary_sub) of the migration profile it was granted
    under, which refresh reads again (the migrant has no account here).  None: local user."""


@dataclass(frozen=True)
class AuthorizationRequest:
    """A checked authorization request (33.180 B.4.2.2)."""

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    state: str
    code_challenge: str
    nonce: str | None
    acr_values: str

    def as_params(self) -> dict[str, str]:
        params = {"response_type": "code", "client_id": self.client_id,
                  "redirect_uri": self.redirect_uri, "scope": " ".join(self.scope),
                  "state": self.state, "code_challenge": self.code_challenge,
                  "code_challenge_method": "S256", "acr_values": self.acr_values}
        if self.nonce is not None:
            params["nonce"] = self.nonce
        return params


@dataclass
class IdentityProvider:
    """One IdMS: accounts, clients, codes and tokens; partner-role trust when configured."""

    issuer: TokenIssuer
    clients: Mapping[str, OidcClient]
    users: Mapping[str, UserAccount]
    resource_audience: str
    """aud of the access tokens: the MC system's resource servers (project-defined URL)."""
    trusted_primaries: TokenValidator | None = None
    """Partner role: the out-of-band provisioned primary IdMS keys."""
    migration_profiles: Mapping[tuple[str, str], MigrationProfile] = field(default_factory=dict)
    code_lifetime: int = 60
    access_token_lifetime: int = 3600
    refresh_token_lifetime: int = 86400
    record: Callable[[str, str, Any], None] | None = None
    """Told every change of what a real IdMS keeps across a restart, as
    ``(table, key, value)`` (value None: deleted): ``refresh`` (by token digest: client_id,
    username, scope, expires_at and migration_profile, [primary_iss, primary_sub] or null) and
    ``replay`` (security token jti -> until when it is remembered).  See :meth:`recover`."""
    table_capacity: int = 200_000
    """Most live entries in each of the codes, refresh tokens and seen security tokens
    (PROJECT-DEFINED); a full table refuses with 503 temporarily_unavailable."""
    _codes: ExpiringTable[str, _Code] = field(init=False)
    _refresh: ExpiringTable[str, _Refresh] = field(init=False)
    """By SHA-256 of the token: like passwords, refresh tokens are kept only as digests."""
    _seen_security_tokens: ExpiringTable[str, float] = field(init=False)

    @property
    def address(self) -> str:
        """This IdMS's address as used in ``resource``/``aud`` (its issuer URL)."""
        return self.issuer.issuer

    # ------------------------------------------------------------ discovery
    def discovery(self) -> dict[str, Any]:
        """OpenID Connect Discovery 1.0 §3 metadata."""
        base = self.address
        grants = [GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN, GRANT_TOKEN_EXCHANGE]
        if self.trusted_primaries is not None:
            grants.append(GRANT_JWT_BEARER)
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": grants,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.issuer.signing_key.algorithm],
            "token_endpoint_auth_methods_supported": ["none"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", *MC_SCOPES],
            "acr_values_supported": [ACR_PASSWORD],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", *MC_ID_CLAIMS],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.issuer.signing_key.public_jwk()]}

    # ------------------------------------------------------ authorization
    def check_authorization_request(self, params: Mapping[str, str]) -> AuthorizationRequest:
        """Validate the query of the authorization endpoint (RFC 6749 §4.1.1, RFC 7636 §4.3).

        client_id and redirect_uri problems are raised with status 400 and
        must not be redirected (§4.1.2.1: the redirect URI is not trusted).
        """
        client = self.clients.get(params.get("client_id", ""))
        if client is None:
            raise Refusal("invalid_client", f"unknown client_id {params.get('client_id')!r}")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            raise Refusal("invalid_request",
                             f"redirect_uri {redirect_uri!r} is not registered for "
                             f"{client.client_id} (exact match required)")
        if params.get("response_type") != "code":
            raise Refusal("unsupported_response_type", "only response_type=code is supported")
        scope = tuple(params.get("scope", "").split())
        if "openid" not in scope:
            raise Refusal("invalid_scope", "scope must include openid")
        if params.get("code_challenge_method") != "S256":
            raise Refusal("invalid_request", "code_challenge_method must be S256 (PKCE)")
        challenge = params.get("code_challenge", "")
        if not _PKCE_RE.match(challenge):
            raise Refusal("invalid_request", "code_challenge missing or malformed")
        state = params.get("state", "")
        if not state:
            raise Refusal("invalid_request", "state is required")
        acr = params.get("acr_values", ACR_PASSWORD)
        if ACR_PASSWORD not in acr.split():
            raise Refusal("invalid_request", f"acr_values must include {ACR_PASSWORD}")
        return AuthorizationRequest(client.client_id, redirect_uri, scope, state, challenge,
                                    params.get("nonce"), acr)

    def authenticate(self, username: str, password: str) -> UserAccount:
        """The account for these credentials; :class:`Refusal` (401) otherwise.

        Reads only immutable accounts, so a server may run it off its event loop
        (the password hash is deliberately slow).
        """
        user = self.users.get(username)
        if user is None or not self._password_ok(password, user.password_hash):
            raise Refusal("access_denied", "unknown user or wrong password", 401)
        return user

    def _password_ok(self, password: str, stored: str) -> bool:
        """PROJECT CHOICE: a (hash, password) pair once verified is remembered (an HMAC of
        it under a per-process key, at most :data:`VERIFIED_MEMORY`), so a load run's
        thousands of users sharing their template's password do not each pay PBKDF2.  A
        wrong password always pays it.  Set operations are atomic, so threads may share it."""
        memo = hmac.new(self._memo_key, f"{stored}\0{password}".encode(), "sha256").digest()
        if memo in self._verified:
            return True
        if not check_password(password, stored):
            return False
        if len(self._verified) >= VERIFIED_MEMORY:
            self._verified.clear()
        self._verified.add(memo)
        return True

    def issue_code(self, request: AuthorizationRequest, user: UserAccount, *,
                   now: float) -> str:
        """A fresh authorization code for an authenticated user: the redirect URL."""
        username = user.username
        granted = _shared(s for s in request.scope if s == "openid" or s in user.scopes)
        code = secrets.token_urlsafe(24)
        self._purge(now)
        kept = _Code(sys.intern(request.client_id), sys.intern(request.redirect_uri),
                     request.code_challenge, username, granted, request.nonce,
                     now + self.code_lifetime)
        _put(self._codes, code, kept, kept.expires_at, now)
        query = urllib.parse.urlencode({"code": code, "state": request.state})
        separator = "&" if "?" in request.redirect_uri else "?"
        return f"{request.redirect_uri}{separator}{query}"

    # ----------------------------------------------------------- token
    def token(self, form: Mapping[str, str], *, now: float) -> dict[str, Any]:
        """The token endpoint (RFC 6749 §3.2): dispatch on grant_type."""
        # Each request also forgets what expired: codes live a minute, and the requests that
        # add rows (logins) may be long over when a mass migration's exchanges come.
        self._purge(now)
        grant = form.get("grant_type", "")
        if grant == GRANT_AUTHORIZATION_CODE:
            return self._authorization_code(form, now)
        if grant == GRANT_REFRESH_TOKEN:
            return self._refresh_token(form, now)
        if grant == GRANT_TOKEN_EXCHANGE:
            return self._token_exchange(form, now)
        if grant == GRANT_JWT_BEARER and self.trusted_primaries is not None:
            return self._jwt_bearer(form, now)
        raise Refusal("unsupported_grant_type", f"grant_type {grant!r} is not supported here")

    def _client(self, form: Mapping[str, str]) -> OidcClient:
        client = self.clients.get(form.get("client_id", ""))
        if client is None:
            raise Refusal("invalid_client", f"unknown client_id {form.get('client_id')!r}",
                             401)
        return client

    def _tokens_for(self, user: UserAccount, client_id: str, scope: tuple[str, ...],
                    now: float, nonce: str | None = None) -> dict[str, Any]:
        access = self.issuer.access_token(
            sub=user.sub, client_id=client_id, scope=scope, now=now,
            audience=self.resource_audience, lifetime=self.access_token_lifetime,
            mc_ids=user.mc_ids)
        refresh = self._new_refresh(_Refresh(client_id, user.username, scope,
                                             now + self.refresh_token_lifetime), now)
        response: dict[str, Any] = {
            "access_token": access, "token_type": "Bearer",
            "expires_in": self.access_token_lifetime, "refresh_token": refresh,
            "scope": " ".join(scope)}
        if "openid" in scope:
            response["id_token"] = self.issuer.id_token(
                sub=user.sub, client_id=client_id, now=now, mc_ids=user.mc_ids, nonce=nonce,
                lifetime=self.access_token_lifetime)
        return response

    def _partner_tokens(self, profile: MigrationProfile, client_id: str,
                        scope: tuple[str, ...], now: float) -> dict[str, Any]:
        """A partner access token for a migrant, from its migration profile, and a refresh
        token bound to that profile (jwt-bearer and refresh alike)."""
        lifetime = (self.access_token_lifetime if profile.access_token_lifetime is None
                    else profile.access_token_lifetime)
        access = self.issuer.access_token(
            sub=profile.partner_username, client_id=client_id, scope=scope, now=now,
            audience=self.resource_audience, lifetime=lifetime, mc_ids=profile.mc_ids,
            # PROJECT-DEFINED claims: who the user is at home, for the partner MC server.
            extra={"primary_iss": profile.primary_issuer,
                   "primary_mcptt_id": profile.primary_mcptt_id})
        # RFC 6749 §5.1 leaves the refresh token optional.  With one, the migrant renews here
        # without a new security token, so without reaching the primary, which a migration
        # without interconnection may have put out of its reach.
        refresh = self._new_refresh(_Refresh(client_id, profile.partner_username, scope,
                                             now + self.refresh_token_lifetime, profile.key),
                                    now)
        return {"access_token": access, "token_type": "Bearer", "expires_in": lifetime,
                "refresh_token": refresh, "scope": " ".join(scope)}

    def _new_refresh(self, kept: _Refresh, now: float) -> str:
        """Keep ``kept`` under a fresh refresh token (only its digest, and in the journal)."""
        refresh = secrets.token_urlsafe(32)
        self._purge(now)
        kept.client_id, kept.scope = sys.intern(kept.client_id), _shared(kept.scope)
        key = _digest(refresh)
        _put(self._refresh, key, kept, kept.expires_at, now)
        self._note("refresh", key, {
            "client_id": kept.client_id, "username": kept.username, "scope": list(kept.scope),
            "expires_at": kept.expires_at,
            "migration_profile": None if kept.migration_profile is None
            else list(kept.migration_profile)})
        return refresh

    def _authorization_code(self, form: Mapping[str, str], now: float) -> dict[str, Any]:
        client = self._client(form)
        code = self._codes.get(_required(form, "code"), now)
        if code is None or code.expires_at < now:
            raise Refusal("invalid_grant", "authorization code unknown or expired")
        if code.used:
            # RFC 6749 §4.1.2: a code is single use; a second use is an attack.
            raise Refusal("invalid_grant", "authorization code already used")
        if code.client_id != client.client_id:
            raise Refusal("invalid_grant", "authorization code was issued to another client")
        if form.get("redirect_uri") != code.redirect_uri:
            raise Refusal("invalid_grant", "redirect_uri does not match the authorization "
                                              "request (RFC 6749 §4.1.3)")
        verifier = form.get("code_verifier", "")
        if not _PKCE_RE.match(verifier):
            raise Refusal("invalid_request", "code_verifier missing or malformed (RFC 7636)")
        code.used = True
        if not hmac.compare_digest(s256_challenge(verifier), code.challenge):
            raise Refusal("invalid_grant", "PKCE code_verifier does not match the "
                                              "code_challenge (RFC 7636 §4.6)")
        user = self.users[code.username]
        try:
            tokens = self._tokens_for(user, client.client_id, code.scope, now, code.nonce)
        except Refusal:
            # A full table (503, "retry later"): nothing was issued, so the retry may work.
            code.used = False
            raise
        # Redeemed: until it would have expired, only a replay of it is left to refuse.
        # What the grant said goes (~0.3 kB a code; a mass migration redeems thousands a
        # minute, each kept a minute); the code stays, spent, to its own deadline.
        code.client_id = code.redirect_uri = code.challenge = code.username = ""
        code.scope, code.nonce = (), None
        return tokens

    def _refresh_token(self, form: Mapping[str, str], now: float) -> dict[str, Any]:
        client = self._client(form)
        key = _digest(_required(form, "refresh_token"))
        refresh = self._refresh.get(key, now)
        if refresh is None or refresh.expires_at < now:
            raise Refusal("invalid_grant", "refresh token unknown, used or expired")
        if refresh.client_id != client.client_id:
            # Not consumed: another client presenting it must not revoke it for its owner.
            raise Refusal("invalid_grant", "refresh token was issued to another client")
        # Checked before the token is consumed: a request refused for its scope leaves the
        # owner's grant as it was.
        scope = self._narrowed(refresh.scope, form.get("scope"))
        migration = refresh.migration_profile
        profile = None if migration is None else self.migration_profiles.get(migration)
        if profile is not None:
            # The partner's profile is the authority on what a migrant may have here, now.
            scope = tuple(s for s in scope if s in profile.scopes)
            if not scope:
                raise Refusal("invalid_scope", "the migration profile no longer allows any of "
                                               "the granted scope")
        # Refresh tokens rotate (RFC 9700 §4.14.2): the old one is gone, whatever follows, so a
        # second use of it (a stolen copy, or the owner after the thief) is refused.
        self._refresh.pop(key)
        self._note("refresh", key, None)
        if migration is not None:
            if profile is None:
                raise Refusal("invalid_grant", f"no migration profile for {migration[1]} of "
                                               f"{migration[0]} any more")
            return self._partner_tokens(profile, client.client_id, scope, now)
        user = self.users.get(refresh.username)
        if user is None:
            raise Refusal("invalid_grant", f"no account {refresh.username} any more")
        return self._tokens_for(user, client.client_id, scope, now)

    @staticmethod
    def _narrowed(granted: tuple[str, ...], requested: str | None) -> tuple[str, ...]:
        """RFC 6749 §6: a refresh gets the original grant's scope, or the part of it that
        ``scope`` asks for, never more; in the grant's order."""
        if requested is None:
            return granted
        wanted = set(requested.split())
        if not wanted:
            # An empty scope would make a token good for nothing; say so rather than issue it.
            raise Refusal("invalid_scope", "scope is empty")
        if not wanted <= set(granted):
            raise Refusal("invalid_scope", "requested scope exceeds the original grant")
        return tuple(s for s in granted if s in wanted)

    def _own_validator(self) -> TokenValidator:
        from .trust import VerificationKey

        key = self.issuer.signing_key
        own = VerificationKey(self.address, key.kid, key.algorithm, key.key, 0.0, float("inf"),
                              "own signing key")
        return TokenValidator([own])

    def _token_exchange(self, form: Mapping[str, str], now: float) -> dict[str, Any]:
        client = self._client(form)
        if form.get("subject_token_type") != TOKEN_TYPE_ACCESS_TOKEN:
            raise Refusal("invalid_request",
                             f"subject_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}")
        resource = form.get("resource", "")
        if not resource:
            raise Refusal("invalid_request", "resource (the partner IdMS address) is required")
        try:
            claims = self._validator.validate(_required(form, "subject_token"), now=now,
                                              typ=ACCESS_TOKEN_TYP, issuer=self.address)
        except TokenError as exc:
            raise Refusal("invalid_grant", f"subject_token refused: {exc.description}") \
                from None
        if claims.get("client_id") != client.client_id:
            raise Refusal("invalid_grant", "subject_token was issued to another client")
        user = self.users.get(claims["sub"])
        if user is None:
            raise Refusal("invalid_grant", "subject_token names an unknown user")
        if resource not in user.migration_targets:
            # RFC 8693 §2.2.2: the target is not acceptable for this user.
            raise Refusal("invalid_target", f"{user.username} is not authorised to migrate "
                                               f"to {resource}")
        # What the primary authorised travels with the token: the partner may grant no more
        # (project-defined claims, see CLAIM_MIGRATION_PARTNER).
        authorised = sorted(scopes_of(claims) & set(MC_SCOPES))
        security = self.issuer.security_token(
            sub=user.sub, client_id=client.client_id, target_idms=resource, now=now,
            lifetime=user.security_token_lifetime,
            extra={"scope": " ".join(authorised), CLAIM_MIGRATION_PARTNER: resource})
        return {"access_token": security, "issued_token_type": TOKEN_TYPE_JWT,
                "token_type": "N_A", "expires_in": user.security_token_lifetime}

    def _jwt_bearer(self, form: Mapping[str, str], now: float) -> dict[str, Any]:
        assert self.trusted_primaries is not None
        client = self._client(form)
        try:
            claims = self.trusted_primaries.validate(
                _required(form, "assertion"), now=now, typ=SECURITY_TOKEN_TYP,
                audience=self.address)
        except TokenError as exc:
            raise Refusal("invalid_grant", f"security token refused: {exc.description}") \
                from None
        aud = claims.get("aud")
        if not isinstance(aud, list) or client.client_id not in aud:
            raise Refusal("invalid_grant", "security token was not issued to this client")
        jti = claims.get("jti")
        if not isinstance(jti, str):
            raise Refusal("invalid_grant", "security token has no jti")
        self._purge(now)
        if jti in self._seen_security_tokens:
            raise Refusal("invalid_grant", "security token already used (replay)")
        until = float(claims["exp"]) + 60
        _put(self._seen_security_tokens, jti, until, until, now)
        self._note("replay", jti, until)
        # By (iss, sub), what B.8 guarantees; the IDs come from the partner's own profile.
        profile = self.migration_profiles.get((claims["iss"], claims["sub"]))
        if profile is None:
            raise Refusal("invalid_grant", f"no migration profile for {claims['sub']} of "
                                              f"{claims['iss']}")
        if claims.get(CLAIM_MIGRATION_PARTNER) != self.address:
            raise Refusal("invalid_grant", "the primary did not authorise migration to this "
                                           "partner")
        scope = self._partner_scope(claims, profile, form.get("scope"))
        try:
            tokens = self._partner_tokens(profile, client.client_id, scope, now)
        except Refusal:
            # A full table (503, "retry later"): nothing was issued, so the same security
            # token may retry; the migrant may have no way back to the primary for another.
            self._seen_security_tokens.pop(jti)
            self._note("replay", jti, None)
            raise
        return {**tokens, "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN}

    @staticmethod
    def _partner_scope(claims: Mapping[str, Any], profile: MigrationProfile,
                       requested: str | None) -> tuple[str, ...]:
        """The partner grants at most what the primary authorised: the security token's
        scope, within what the migration profile allows and (RFC 6749 §3.3) what the UE
        asks for; in MC_SCOPES order."""
        granted = scopes_of(claims) & set(profile.scopes)
        if requested is not None:
            granted &= set(requested.split())
        if not granted:
            raise Refusal("invalid_scope", "nothing the primary authorised is allowed here")
        return tuple(s for s in MC_SCOPES if s in granted)

    def __post_init__(self) -> None:
        self._validator = self._own_validator()
        self._codes = ExpiringTable(self.table_capacity)
        self._refresh = ExpiringTable(self.table_capacity)
        self._seen_security_tokens = ExpiringTable(self.table_capacity)
        self._memo_key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()
        """HMACs of verified (hash, password) pairs: see :meth:`_password_ok`."""

    def _purge(self, now: float) -> None:
        """Forget what expired (O(log n) per entry gone, never a scan)."""
        self._codes.purge(now)
        for token, _ in self._refresh.purge(now):
            self._note("refresh", token, None)
        for jti, _ in self._seen_security_tokens.purge(now):
            self._note("replay", jti, None)

    def _note(self, table: str, key: str, value: Any) -> None:
        if self.record is not None:
            self.record(table, key, value)

    def recover(self, tables: Mapping[str, Mapping[str, Any]], *, now: float) -> int:
        """Take back the refresh tokens and replay cache an earlier life kept (what
        ``record`` was told); returns how many entries are live again.

        A refresh row without ``migration_profile`` (written before partner refresh tokens
        existed) is a local user's.  A token whose account or migration profile is gone is
        not taken back: refreshing it would be refused anyway."""
        for key, row in tables.get("refresh", {}).items():
            try:
                migration = row.get("migration_profile")
                kept = _Refresh(str(row["client_id"]), str(row["username"]),
                                tuple(row["scope"]), float(row["expires_at"]),
                                None if migration is None else _profile_key(migration))
            except (AttributeError, KeyError, TypeError, ValueError):
                continue  # damaged: that token is simply unknown now
            known = (kept.username in self.users if kept.migration_profile is None
                     else kept.migration_profile in self.migration_profiles)
            if kept.expires_at >= now and known and len(self._refresh) < self.table_capacity:
                self._refresh.put(key, kept, kept.expires_at, now=now)
        for jti, until in tables.get("replay", {}).items():
            if isinstance(until, (int, float)) and until >= now and \
                    len(self._seen_security_tokens) < self.table_capacity:
                self._seen_security_tokens.put(jti, float(until), float(until), now=now)
        return len(self._refresh) + len(self._seen_security_tokens)


def _put(table: ExpiringTable[str, Any], key: str, value: Any, expires_at: float,
         now: float) -> None:
    try:
        table.put(key, value, expires_at, now=now)
    except TableFull:
        raise Refusal("temporarily_unavailable", "the IdMS holds too many live grants; "
                                                 "retry later", 503) from None


def _shared(scope: Iterable[str]) -> tuple[str, ...]:
    """``scope`` with each name the one shared string of that name: a kept row's scope
    then costs its tuple, not a copy of every name (a dozen per user, every user)."""
    return tuple(sys.intern(name) for name in scope)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _profile_key(value: Any) -> tuple[str, str]:
    """A journal row's ``migration_profile`` ([primary_iss, primary_sub]) as a profile key."""
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(part, str) for part in value)):
        raise ValueError(f"migration_profile {value!r} is not [primary_iss, primary_sub]")
    return value[0], value[1]


def migration_profile_index(profiles: Iterable[MigrationProfile]) -> dict[tuple[str, str],
                                                                            MigrationProfile]:
    return {p.key: p for p in profiles}


__all__ = [
    "GRANT_JWT_BEARER",
    "GRANT_TOKEN_EXCHANGE",
    "AuthorizationRequest",
    "IdentityProvider",
    "MigrationProfile",
    "OidcClient",
    "Refusal",
    "UserAccount",
    "hash_password",
    "s256_challenge",
    "scopes_of",
]


def _required(form: Mapping[str, str], name: str) -> str:
    """A grant's parameter, present and not empty: else ``invalid_request`` (RFC 6749 §5.2,
    "missing a required parameter"), not a judgement of the grant."""
    value = form.get(name, "")
    if not value:
        raise Refusal("invalid_request", f"{name} is required")
    return value

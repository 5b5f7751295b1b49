"""Every error branch of the IdMS's endpoints that no other test reached.

One primary and one partner IdMS (tests/support/identity.py) run for the whole module,
over real HTTPS; a test that changes one (a client, a profile, its clock, a provider
with small tables) puts it back.  Three branches live wholly in the sans-IO core and need
time or a configuration the running pair lacks: those tests drive :class:`IdentityProvider`
with ``now``.  Next to each refusal the same request with the one wrong thing put right
succeeds, or is refused for another reason, so a refusal that is really some other failure
would show.

o = emulator/identity/oidc.py (IdentityProvider), n = nodes/idms.py (IdmsNode).

/authorize (GET: the login form; POST: the login)
  n _check / o check_authorization_request: unknown or missing client_id
      400 invalid_client, JSON, never redirected         RFC 6749 §4.1.2.1
      -> test_an_unknown_client_at_authorize_is_answered_not_redirected
  n _check / o check_authorization_request: a valid client and redirect_uri, and
      response_type not code   -> 302 unsupported_response_type    RFC 6749 §4.1.2.1
      no openid in scope       -> 302 invalid_scope   OIDC Core §3.1.2.1, §3.1.2.6
      code_challenge_method not S256, code_challenge missing or malformed
                               -> 302 invalid_request              RFC 7636 §4.4.1
      no state                 -> 302 invalid_request (required here; RFC 6749 §10.12)
      acr_values without 3gpp:acr:password -> 302 invalid_request  (33.180 B.4)
      -> test_a_faulty_authorization_request_is_sent_back_with_its_error
      ... keeping the registered redirect URI's own query         RFC 6749 §3.1.2
      -> test_an_error_sent_back_keeps_the_query_of_the_registered_redirect_uri
  o authenticate: unknown user, wrong password: the login page, 401, one message for
      both                                                        OIDC Core §3.1.2.3
      -> test_a_wrong_password_or_an_unknown_user_gets_the_login_page_again
  n _authorize_submit: the failure that starts a lockout says so on the page
      -> test_the_failed_login_that_starts_a_lockout_says_so
  n _locked_out: 302 access_denied + Retry-After, keeping the redirect URI's query
      RFC 6749 §4.1.2.1 -> test_the_failed_login_that_starts_a_lockout_says_so
  o issue_code / _put: code table full: the login page, 503 (temporarily_unavailable)
      RFC 6749 §4.1.2.1 -> test_a_full_code_table_shows_retry_later_until_codes_expire

/token, every grant (n _token, o token, o _client)                RFC 6749 §5.2
  n _token: not application/x-www-form-urlencoded -> 400 invalid_request (RFC 6749 §3.2)
      -> test_the_token_endpoint_takes_only_a_form
  o token: missing or unknown grant_type -> 400 unsupported_grant_type
      -> test_an_unknown_grant_type_is_unsupported
  o token: jwt-bearer at an IdMS trusting no primary -> 400 unsupported_grant_type
      -> test_an_idms_trusting_no_primary_does_not_take_the_jwt_bearer_grant (sans-IO)
  o _client + n _token: unknown or missing client_id -> 401 invalid_client,
      WWW-Authenticate -> test_an_unknown_client_at_the_token_endpoint_gets_401
authorization_code (o _authorization_code)                RFC 6749 §4.1.3, §5.2
  code never issued -> 400 invalid_grant; no code at all -> 400 invalid_request (§5.2)
      -> test_an_authorization_code_never_issued_is_refused
  code expired -> 400 invalid_grant (RFC 6749 §4.1.2)
      -> test_an_authorization_code_expires_after_its_lifetime (sans-IO, ``now``)
  code of another client -> 400 invalid_grant
      -> test_an_authorization_code_of_another_client_is_refused_and_not_spent (sans-IO)
  _put: refresh table full -> 503 temporarily_unavailable, and the code stays good
      -> test_a_code_refused_for_a_full_table_is_still_good_for_the_retry
refresh_token (o _refresh_token)                          RFC 6749 §6, RFC 9700 §4.14.2
  the primary, a local user: scope beyond the grant -> 400 invalid_scope (not spent);
      a rotated token again -> 400 invalid_grant (the same lines as the partner's, which
      test_partner_refresh.py covers; here for the primary's own users)
      -> test_a_local_users_refresh_at_the_primary_rotates_and_never_widens
  the partner: the migration profile allows none of the grant any more -> 400 invalid_scope
      -> test_a_partner_refresh_the_profile_no_longer_covers_is_refused_and_not_spent
token exchange (o _token_exchange)                        RFC 8693 §2.1, §2.2.2
  subject_token_type missing or not an access token, resource missing -> 400 invalid_request
      -> test_a_token_exchange_missing_a_required_parameter_is_an_invalid_request
  subject token of another client -> 400 invalid_grant
      -> test_a_subject_token_issued_to_another_client_is_refused
  subject token of no local account (a migrant's, at the partner) -> 400 invalid_grant
      -> test_a_migrants_partner_token_cannot_be_exchanged_at_the_partner
jwt-bearer (o _jwt_bearer)                                RFC 7523 §3, §3.1
  aud does not list the presenting client -> 400 invalid_grant
      -> test_a_security_token_unfit_for_the_jwt_bearer_grant_is_refused
  no jti (or not a string): no replay check possible -> 400 invalid_grant
      -> test_a_security_token_unfit_for_the_jwt_bearer_grant_is_refused
  _put: refresh table full -> 503 temporarily_unavailable, and the token stays good
      -> test_a_security_token_refused_for_a_full_table_is_still_good_for_the_retry

Tested elsewhere, so not here: redirect_uri unregistered at /authorize and mismatched at
/token, PKCE verifier mismatch and malformed, a code used twice (test_attacks.py); the
lockout redirect itself (test_lockout.py); a partner refresh token reused, expired, of
another client, widened, empty scope, of a removed profile, of a removed account
(test_partner_refresh.py); subject and security tokens refused by the validator (forged,
expired, wrong aud/iss/typ), replayed security tokens, no migration profile, another
partner's token, no authorised scope (test_attacks.py); invalid_target for a user not
authorised to migrate (test_migration_tokens.py); a request body over 64 kB
(test_attacks.py).  Discovery and the JWKS have no error path of their own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import pytest
import pytest_asyncio

from emulator.identity import CLAIM_MIGRATION_PARTNER
from emulator.identity import GRANT_JWT_BEARER
from emulator.identity import GRANT_TOKEN_EXCHANGE
from emulator.identity import SECURITY_TOKEN_TYP
from emulator.identity import TOKEN_TYPE_ACCESS_TOKEN
from emulator.identity import IdentityProvider
from emulator.identity import OidcClient
from emulator.identity import SigningKey
from emulator.identity import TokenIssuer
from emulator.identity import TokenValidator
from emulator.identity import UserAccount
from emulator.identity import hash_password
from emulator.identity import issue_signing_certificate
from emulator.identity import make_ca
from emulator.identity import migration_profile_index
from emulator.identity import s256_challenge
from emulator.refusal import Refusal
from emulator.topology.model import LoginLimit
from emulator.transport import client_context
from nodes.idm_client import IdmClient
from tests.support.identity import ALICE_MCPTT_ID
from tests.support.identity import ALICE_PASSWORD
from tests.support.identity import CLIENT_ID
from tests.support.identity import PARTNER_ISSUER
from tests.support.identity import PRIMARY_ISSUER
from tests.support.identity import REDIRECT_URI
from tests.support.identity import System
from tests.support.identity import Systems
from tests.support.identity import two_systems

PRIMARY_TOKEN = f"{PRIMARY_ISSUER}/token"
PARTNER_TOKEN = f"{PARTNER_ISSUER}/token"
PRIMARY_RESOURCES = "https://mcx.primary.example"  # aud of the primary's access tokens
OTHER_CLIENT = "other-mcx-client"
QUERY_CLIENT = "query-mcx-client"
QUERY_REDIRECT = "http://127.0.0.1/callback?app=mcx"  # RFC 6749 §3.1.2 allows a query
SCOPE = "openid 3gpp:mc:ptt_service 3gpp:mc:data_service"
ACR = "3gpp:acr:password"
PAGE_ERROR = "<p role=alert>{}</p>"
# The partner locks out after 2 failures, so one test sees a lockout start; no slow-down.
PARTNER_LOGIN = LoginLimit(max_failures=2, window=300.0, lockout=60.0, slowdown=0.0)

on_servers = pytest.mark.asyncio(loop_scope="module")


# ----------------------------------------------------------------------- fixtures
@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def systems(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Systems]:
    async with two_systems(tmp_path_factory.mktemp("idms-errors"),
                           login=PARTNER_LOGIN) as running:
        yield running


def _client(systems: Systems, local_address: str | None = None) -> IdmClient:
    cas = [systems.primary.material.ca.certificate_pem(),
           systems.partner.material.ca.certificate_pem()]
    return IdmClient(CLIENT_ID, REDIRECT_URI, client_context(cas), local_address=local_address)


@pytest_asyncio.fixture(loop_scope="module")
async def client(systems: Systems) -> AsyncIterator[IdmClient]:
    async with _client(systems) as opened:
        yield opened


@contextmanager
def reconfigured(system: System, **changes: Any) -> Iterator[IdentityProvider]:
    """``system``'s IdMS runs a copy of its provider with ``changes`` (and empty tables)
    until the block ends; its clock, which the block may move, is put back too."""
    node = system.idms
    before, offset = node.provider, node.clock_offset
    node.provider = dataclasses.replace(before, **changes)
    try:
        yield node.provider
    finally:
        node.provider, node.clock_offset = before, offset


def _with_client(provider: IdentityProvider, client_id: str, redirect_uri: str
                 ) -> dict[str, OidcClient]:
    return {**provider.clients, client_id: OidcClient(client_id, (redirect_uri,))}


# ------------------------------------------------------------------ HTTP helpers
@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    text: str
    location: str | None
    headers: Mapping[str, str]

    @property
    def redirect(self) -> dict[str, str]:
        """The query of the redirect: where an authorization error goes to the client."""
        assert self.location is not None, (self.status, self.text[:200])
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.location).query))


def _authorization(verifier: str, **changes: str | None) -> dict[str, str]:
    """A valid authorization request (33.180 B.4.2.2); None removes a parameter."""
    form: dict[str, str | None] = {
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
        "scope": SCOPE, "state": "st-1", "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256", "acr_values": ACR, **changes}
    return {k: v for k, v in form.items() if v is not None}


async def _authorize(client: IdmClient, form: Mapping[str, str], *, method: str = "POST",
                     issuer: str = PRIMARY_ISSUER) -> Reply:
    url = f"{issuer}/authorize"
    request = (client.session.get(url, params=form, allow_redirects=False) if method == "GET"
               else client.session.post(url, data=form, allow_redirects=False))
    async with request as response:
        return Reply(response.status, await response.text(), response.headers.get("Location"),
                     dict(response.headers))


def _login(method: str) -> dict[str, str]:
    """alice's right credentials, which a POST to /authorize carries and a GET does not."""
    return {"username": "alice", "password": ALICE_PASSWORD} if method == "POST" else {}


async def _code(client: IdmClient, verifier: str, *, issuer: str = PRIMARY_ISSUER,
                username: str = "alice", password: str = ALICE_PASSWORD) -> str:
    """Log in at /authorize by hand; the authorization code."""
    reply = await _authorize(client, {**_authorization(verifier), "username": username,
                                      "password": password}, issuer=issuer)
    assert reply.status == 302, reply.text
    return reply.redirect["code"]


def _redemption(code: str, verifier: str) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier}


async def _post_token(client: IdmClient, endpoint: str, form: Mapping[str, str], *,
                      as_json: bool = False) -> Reply:
    """POST to a token endpoint exactly ``form`` (no client_id added)."""
    request = (client.session.post(endpoint, json=dict(form)) if as_json
               else client.session.post(endpoint, data=dict(form)))
    async with request as response:
        return Reply(response.status, await response.text(), None, dict(response.headers))


def _error(reply: Reply) -> tuple[int, str]:
    return reply.status, json.loads(reply.text)["error"]


async def _security_token(client: IdmClient) -> str:
    tokens = await client.login(PRIMARY_ISSUER, "alice", ALICE_PASSWORD)
    return await client.exchange_for_partner(PRIMARY_TOKEN, tokens.access_token,
                                             PARTNER_ISSUER)


def _exchange(subject_token: str, **changes: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": subject_token,
        "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN, "resource": PARTNER_ISSUER, **changes}
    return {k: v for k, v in form.items() if v is not None}


def _signed_security_token(systems: Systems, **changes: Any) -> str:
    """A security token as the primary's own issuer signs it, with ``changes`` to its
    claims (None removes one): the partner trusts the signature, so only the changes can
    fail it."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": PRIMARY_ISSUER, "sub": "alice", "aud": [CLIENT_ID, PARTNER_ISSUER],
        "iat": now, "exp": now + 600, "jti": secrets.token_urlsafe(12),
        "scope": "3gpp:mc:ptt_service", CLAIM_MIGRATION_PARTNER: PARTNER_ISSUER, **changes}
    return systems.primary.provider.issuer.sign(
        {k: v for k, v in claims.items() if v is not None}, SECURITY_TOKEN_TYP)


# ==================================================================== /authorize
@on_servers
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("client_id", ["nobody", None], ids=["unknown", "missing"])
async def test_an_unknown_client_at_authorize_is_answered_not_redirected(
        client: IdmClient, method: str, client_id: str | None) -> None:
    """RFC 6749 §4.1.2.1: with no client to trust the redirect URI for, the IdMS answers
    the user agent itself."""
    verifier = secrets.token_urlsafe(48)
    form = {**_authorization(verifier, client_id=client_id), **_login(method)}
    refused = await _authorize(client, form, method=method)
    known = await _authorize(client, {**form, "client_id": CLIENT_ID}, method=method)
    assert _error(refused) == (400, "invalid_client")
    assert refused.location is None
    assert known.status == (200 if method == "GET" else 302)


FAULTY_REQUESTS = [
    pytest.param({"response_type": "token"}, "unsupported_response_type",
                 "only response_type=code is supported", id="response-type-token"),
    pytest.param({"scope": "3gpp:mc:ptt_service"}, "invalid_scope",
                 "scope must include openid", id="no-openid"),
    pytest.param({"code_challenge_method": "plain"}, "invalid_request",
                 "code_challenge_method must be S256 (PKCE)", id="pkce-plain"),
    pytest.param({"code_challenge_method": None}, "invalid_request",
                 "code_challenge_method must be S256 (PKCE)", id="no-pkce-method"),
    pytest.param({"code_challenge": None}, "invalid_request",
                 "code_challenge missing or malformed", id="no-pkce-challenge"),
    pytest.param({"code_challenge": "too-short"}, "invalid_request",
                 "code_challenge missing or malformed", id="short-pkce-challenge"),
    pytest.param({"state": None}, "invalid_request", "state is required", id="no-state"),
    pytest.param({"acr_values": "urn:example:acr:none"}, "invalid_request",
                 f"acr_values must include {ACR}", id="acr-without-password"),
]


@on_servers
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(("change", "error", "description"), FAULTY_REQUESTS)
async def test_a_faulty_authorization_request_is_sent_back_with_its_error(
        client: IdmClient, method: str, change: dict[str, str | None], error: str,
        description: str) -> None:
    """RFC 6749 §4.1.2.1 / OIDC Core §3.1.2.6: client and redirect URI are verified, so the
    error goes back to the client.  POST carries the right password: no code all the same."""
    verifier = secrets.token_urlsafe(48)
    refused = await _authorize(client, {**_authorization(verifier, **change), **_login(method)},
                               method=method)
    fixed = await _authorize(client, {**_authorization(verifier), **_login(method)},
                             method=method)
    assert refused.status == 302
    assert refused.location is not None and refused.location.startswith(f"{REDIRECT_URI}?")
    sent_back = refused.redirect
    # The state as sent; a request without one gets none (or an empty one) back.
    assert sent_back.pop("state", "") == ("" if "state" in change else "st-1")
    assert sent_back == {"error": error, "error_description": description}
    if method == "GET":
        assert fixed.status == 200 and "<form" in fixed.text
    else:
        assert fixed.status == 302 and "code" in fixed.redirect


@on_servers
async def test_an_error_sent_back_keeps_the_query_of_the_registered_redirect_uri(
        systems: Systems, client: IdmClient) -> None:
    """RFC 6749 §3.1.2: the redirection endpoint's query "MUST be retained when adding
    additional query parameters", for an error as for a code."""
    verifier = secrets.token_urlsafe(48)
    form = _authorization(verifier, client_id=QUERY_CLIENT, redirect_uri=QUERY_REDIRECT)
    with reconfigured(systems.primary, clients=_with_client(
            systems.primary.provider, QUERY_CLIENT, QUERY_REDIRECT)):
        refused = await _authorize(client, {**form, "scope": "3gpp:mc:ptt_service"},
                                   method="GET")
        issued = await _authorize(client, {**form, "username": "alice",
                                           "password": ALICE_PASSWORD})
    assert refused.status == 302
    assert refused.location is not None and refused.location.startswith(f"{QUERY_REDIRECT}&")
    assert refused.redirect == {"app": "mcx", "error": "invalid_scope",
                                "error_description": "scope must include openid",
                                "state": "st-1"}
    assert issued.status == 302 and issued.redirect.keys() == {"app", "code", "state"}


# ------------------------------------------------------------------ the login page
@on_servers
@pytest.mark.parametrize(("username", "password", "source"), [
    pytest.param("alice", "not-alices-password", "127.0.70.1", id="wrong-password"),
    pytest.param("mallory", ALICE_PASSWORD, "127.0.70.2", id="unknown-user"),
])
async def test_a_wrong_password_or_an_unknown_user_gets_the_login_page_again(
        systems: Systems, username: str, password: str, source: str) -> None:
    """The same words for both, so the page does not tell which user names exist.  Each
    case from its own address, so the login throttle never slows one down."""
    verifier = secrets.token_urlsafe(48)
    async with _client(systems, source) as client:
        refused = await _authorize(client, {**_authorization(verifier), "username": username,
                                            "password": password})
        fixed = await _authorize(client, {**_authorization(verifier), "username": "alice",
                                          "password": ALICE_PASSWORD})
    assert refused.status == 401
    assert refused.location is None
    assert PAGE_ERROR.format("unknown user or wrong password") in refused.text
    # The form again, with the request's parameters, for another try.
    assert '<input type="hidden" name="state" value="st-1">' in refused.text
    assert "<form" in refused.text and 'name="password"' in refused.text
    assert fixed.status == 302 and "code" in fixed.redirect


@on_servers
async def test_the_failed_login_that_starts_a_lockout_says_so(systems: Systems) -> None:
    """At the partner (2 failures lock out): the second failure's page names the lockout,
    and the next attempt goes back to the client as access_denied, keeping the registered
    redirect URI's query (RFC 6749 §3.1.2, §4.1.2.1)."""
    verifier = secrets.token_urlsafe(48)
    form = {**_authorization(verifier, client_id=QUERY_CLIENT, redirect_uri=QUERY_REDIRECT),
            "username": "mallory", "password": "guess"}
    with reconfigured(systems.partner, clients=_with_client(
            systems.partner.provider, QUERY_CLIENT, QUERY_REDIRECT)):
        async with _client(systems, "127.0.71.1") as guesser:
            first = await _authorize(guesser, form, issuer=PARTNER_ISSUER)
            second = await _authorize(guesser, form, issuer=PARTNER_ISSUER)
            locked = await _authorize(guesser, form, issuer=PARTNER_ISSUER)
    assert (first.status, second.status) == (401, 401)
    assert PAGE_ERROR.format("unknown user or wrong password") in first.text
    assert PAGE_ERROR.format("too many failed logins: locked out for 60 s") in second.text
    assert locked.status == 302
    assert locked.location is not None and locked.location.startswith(f"{QUERY_REDIRECT}&")
    assert locked.redirect.keys() == {"app", "error", "error_description", "state"}
    assert (locked.redirect["app"], locked.redirect["error"]) == ("mcx", "access_denied")
    assert 1 <= int(locked.headers["Retry-After"]) <= 60


@on_servers
async def test_a_full_code_table_shows_retry_later_until_codes_expire(
        systems: Systems, client: IdmClient) -> None:
    """RFC 6749 §4.1.2.1 temporarily_unavailable, shown on the login page: the user is
    authenticated, but the IdMS has no room for another code (room for one here)."""
    verifier = secrets.token_urlsafe(48)
    with reconfigured(systems.primary, table_capacity=1) as provider:
        await _code(client, verifier)  # the one code there is room for
        full = await _authorize(client, {**_authorization(verifier), "username": "alice",
                                         "password": ALICE_PASSWORD})
        systems.primary.idms.clock_offset += provider.code_lifetime + 1  # that code expired
        again = await _code(client, verifier)
    assert full.status == 503
    assert full.location is None
    assert PAGE_ERROR.format("the IdMS holds too many live grants; retry later") in full.text
    assert again


# ================================================================= /token, any grant
@on_servers
@pytest.mark.parametrize("endpoint", [PRIMARY_TOKEN, PARTNER_TOKEN])
async def test_the_token_endpoint_takes_only_a_form(client: IdmClient, endpoint: str) -> None:
    """RFC 6749 §3.2 / §4.1.3: parameters come form-encoded; JSON is not read at all, where
    the same fields as a form reach the grant dispatch."""
    fields = {"grant_type": "nonsense", "client_id": CLIENT_ID}
    refused = await _post_token(client, endpoint, fields, as_json=True)
    as_form = await _post_token(client, endpoint, fields)
    assert _error(refused) == (400, "invalid_request")
    assert "application/x-www-form-urlencoded" in refused.text
    assert _error(as_form) == (400, "unsupported_grant_type")


@on_servers
@pytest.mark.parametrize("endpoint", [PRIMARY_TOKEN, PARTNER_TOKEN])
@pytest.mark.parametrize("grant_type", [None, "password", "client_credentials", "implicit"])
async def test_an_unknown_grant_type_is_unsupported(
        client: IdmClient, endpoint: str, grant_type: str | None) -> None:
    """RFC 6749 §5.2 unsupported_grant_type; a supported grant with the same nonsense
    behind it is judged by that grant instead."""
    form = {"client_id": CLIENT_ID, "refresh_token": "made-up"}
    refused = await _post_token(client, endpoint, {
        **form, **({} if grant_type is None else {"grant_type": grant_type})})
    supported = await _post_token(client, endpoint, {**form, "grant_type": "refresh_token"})
    assert _error(refused) == (400, "unsupported_grant_type")
    assert f"grant_type {grant_type or ''!r} is not supported here" in refused.text
    assert _error(supported) == (400, "invalid_grant")


@on_servers
@pytest.mark.parametrize("endpoint, grant_type, parameter", [
    (PRIMARY_TOKEN, "authorization_code", "code"),
    (PRIMARY_TOKEN, "refresh_token", "refresh_token"),
    (PARTNER_TOKEN, "refresh_token", "refresh_token"),
    (PRIMARY_TOKEN, GRANT_TOKEN_EXCHANGE, "subject_token"),
    (PARTNER_TOKEN, GRANT_JWT_BEARER, "assertion")])
async def test_a_grant_without_its_credential_is_an_invalid_request(
        client: IdmClient, endpoint: str, grant_type: str, parameter: str) -> None:
    """RFC 6749 §5.2: a missing parameter makes the request malformed (invalid_request),
    where a wrong one is a bad grant (invalid_grant)."""
    form = {"client_id": CLIENT_ID, "grant_type": grant_type, "code_verifier": "v" * 43,
            "redirect_uri": REDIRECT_URI, "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "resource": PARTNER_ISSUER}
    missing = await _post_token(client, endpoint, form)
    wrong = await _post_token(client, endpoint, {**form, parameter: "made-up"})
    assert _error(missing) == (400, "invalid_request")
    assert f"{parameter} is required" in missing.text
    assert _error(wrong) == (400, "invalid_grant")


@on_servers
@pytest.mark.parametrize(("issuer", "username", "password"), [
    pytest.param(PRIMARY_ISSUER, "alice", ALICE_PASSWORD, id="primary"),
    pytest.param(PARTNER_ISSUER, "carol", "carol-secret", id="partner"),
])
@pytest.mark.parametrize("client_id", ["nobody", None], ids=["unknown", "missing"])
async def test_an_unknown_client_at_the_token_endpoint_gets_401(
        client: IdmClient, issuer: str, username: str, password: str,
        client_id: str | None) -> None:
    """RFC 6749 §5.2 invalid_client, 401 with a challenge; the code it presented is not
    spent, so its own client still redeems it."""
    verifier = secrets.token_urlsafe(48)
    code = await _code(client, verifier, issuer=issuer, username=username, password=password)
    form = _redemption(code, verifier)
    refused = await _post_token(client, f"{issuer}/token", {
        **form, **({} if client_id is None else {"client_id": client_id})})
    redeemed = await client.token(f"{issuer}/token", form)
    assert _error(refused) == (401, "invalid_client")
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert redeemed["token_type"] == "Bearer"


# ============================================================= authorization_code
@on_servers
@pytest.mark.parametrize("code, error, description", [
    ("never-issued", "invalid_grant", "authorization code unknown or expired"),
    # RFC 6749 §5.2: a missing parameter is a malformed request, not a bad grant.
    ("", "invalid_request", "code is required")], ids=["never-issued", "missing"])
async def test_an_authorization_code_never_issued_is_refused(
        client: IdmClient, code: str, error: str, description: str) -> None:
    verifier = secrets.token_urlsafe(48)
    with pytest.raises(Refusal) as refused:
        await client.token(PRIMARY_TOKEN, _redemption(code, verifier))
    issued = await client.token(PRIMARY_TOKEN,
                                _redemption(await _code(client, verifier), verifier))
    assert (refused.value.status, refused.value.error) == (400, error)
    assert refused.value.description == description
    assert issued["token_type"] == "Bearer"


# The sans-IO core, for what turns on time or on a configuration the running pair lacks.
T = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC).timestamp()
VERIFIER = "v" * 43  # RFC 7636 §4.1: 43 unreserved characters at least


@pytest.fixture(scope="module")
def core_key() -> SigningKey:
    ca = make_ca("MC system primary", now=dt.datetime.fromtimestamp(T, dt.UTC))
    return SigningKey.from_credential(issue_signing_certificate(
        ca, "primary IdMS token signing", now=dt.datetime.fromtimestamp(T, dt.UTC),
        algorithm="ES256"))


def _core(key: SigningKey) -> IdentityProvider:
    """A primary IdMS's decisions alone: alice, and two clients."""
    alice = UserAccount("alice", hash_password(ALICE_PASSWORD), {"mcptt_id": ALICE_MCPTT_ID})
    return IdentityProvider(
        TokenIssuer(PRIMARY_ISSUER, key),
        {c: OidcClient(c, (REDIRECT_URI,)) for c in (CLIENT_ID, OTHER_CLIENT)},
        {"alice": alice}, PRIMARY_RESOURCES)


def _issue(idms: IdentityProvider, now: float, client_id: str = CLIENT_ID) -> str:
    request = idms.check_authorization_request(
        _authorization(VERIFIER, client_id=client_id, acr_values=None))
    location = idms.issue_code(request, idms.authenticate("alice", ALICE_PASSWORD), now=now)
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]


def _redeem(idms: IdentityProvider, code: str, now: float,
            client_id: str = CLIENT_ID) -> dict[str, Any]:
    return idms.token({**_redemption(code, VERIFIER), "client_id": client_id}, now=now)


def test_an_authorization_code_expires_after_its_lifetime(core_key: SigningKey) -> None:
    """RFC 6749 §4.1.2: codes are short-lived; this one is good for exactly
    ``code_lifetime`` seconds."""
    idms = _core(core_key)
    late, in_time = _issue(idms, T), _issue(idms, T)
    assert _redeem(idms, in_time, T + idms.code_lifetime - 1)["access_token"]
    with pytest.raises(Refusal) as refused:
        _redeem(idms, late, T + idms.code_lifetime)
    assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
    assert refused.value.description == "authorization code unknown or expired"


def test_a_redeemed_code_is_refused_again_to_its_deadline_and_keeps_no_grant(
        core_key: SigningKey) -> None:
    """RFC 6749 §4.1.2: a second use is refused, as "already used", until the code would
    have expired, and not forgotten earlier; what the grant said (user, scope, PKCE
    challenge, nonce) is no longer held: thousands are redeemed a minute in a mass
    migration, each kept a minute."""
    idms = _core(core_key)
    code = _issue(idms, T)
    assert _redeem(idms, code, T + 1)["access_token"]
    kept = idms._codes.get(code, T + 2)  # what the table holds is the point
    assert kept is not None and kept.used
    assert (kept.username, kept.challenge, kept.scope, kept.nonce) == ("", "", (), None)
    for at in (T + 2, T + idms.code_lifetime - 1):
        with pytest.raises(Refusal) as refused:
            _redeem(idms, code, at)
        assert refused.value.description == "authorization code already used"
    assert idms._codes.deadline(code) == T + idms.code_lifetime
    with pytest.raises(Refusal) as late:
        _redeem(idms, code, T + idms.code_lifetime)
    assert late.value.description == "authorization code unknown or expired"


def test_an_authorization_code_of_another_client_is_refused_and_not_spent(
        core_key: SigningKey) -> None:
    """RFC 6749 §4.1.3: the code must have been issued to the client_id redeeming it."""
    idms = _core(core_key)
    code = _issue(idms, T, client_id=OTHER_CLIENT)
    with pytest.raises(Refusal) as refused:
        _redeem(idms, code, T, client_id=CLIENT_ID)
    assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
    assert refused.value.description == "authorization code was issued to another client"
    assert _redeem(idms, code, T, client_id=OTHER_CLIENT)["access_token"]


def test_an_idms_trusting_no_primary_does_not_take_the_jwt_bearer_grant(
        core_key: SigningKey) -> None:
    """Without trusted primaries the grant is neither offered (discovery) nor accepted
    (RFC 6749 §5.2).  Sans-IO: every IdMS a plan starts has a trust directory, so over
    HTTPS both IdMSs here take the grant."""
    idms = _core(core_key)
    form = {"grant_type": GRANT_JWT_BEARER, "client_id": CLIENT_ID, "assertion": "x.y.z"}
    with pytest.raises(Refusal) as refused:
        idms.token(form, now=T)
    trusting = dataclasses.replace(idms, trusted_primaries=TokenValidator([]))
    with pytest.raises(Refusal) as dispatched:
        trusting.token(form, now=T)
    assert (refused.value.status, refused.value.error) == (400, "unsupported_grant_type")
    assert GRANT_JWT_BEARER not in idms.discovery()["grant_types_supported"]
    assert (dispatched.value.status, dispatched.value.error) == (400, "invalid_grant")
    assert dispatched.value.description.startswith("security token refused: ")
    assert GRANT_JWT_BEARER in trusting.discovery()["grant_types_supported"]


@on_servers
async def test_a_code_refused_for_a_full_table_is_still_good_for_the_retry(
        systems: Systems, client: IdmClient) -> None:
    """503 temporarily_unavailable says "retry later", so the retry must be able to work:
    nothing was issued, and the code is not spent.  Room for one grant of each kind;
    refresh tokens live 100 s here, codes 60 s, the IdMS's clock moves on."""
    verifier = secrets.token_urlsafe(48)
    with reconfigured(systems.primary, table_capacity=1, refresh_token_lifetime=100):
        await client.token(PRIMARY_TOKEN, _redemption(await _code(client, verifier), verifier))
        systems.primary.idms.clock_offset += 70  # the first code is gone, its refresh not
        form = _redemption(await _code(client, verifier), verifier)
        with pytest.raises(Refusal) as refused:
            await client.token(PRIMARY_TOKEN, form)
        systems.primary.idms.clock_offset += 31  # now the refresh token expired too
        retried = await client.token(PRIMARY_TOKEN, form)
    assert (refused.value.status, refused.value.error) == (503, "temporarily_unavailable")
    assert retried["token_type"] == "Bearer"


# ================================================================== refresh_token
@on_servers
async def test_a_local_users_refresh_at_the_primary_rotates_and_never_widens(
        client: IdmClient) -> None:
    """RFC 6749 §6 and RFC 9700 §4.14.2 for a user of the primary itself (the partner's
    migrants: test_partner_refresh.py).  A widening request leaves the grant as it was."""
    tokens = await client.login(PRIMARY_ISSUER, "alice", ALICE_PASSWORD,
                                scope="openid 3gpp:mc:ptt_service")
    first = str(tokens.refresh_token)
    with pytest.raises(Refusal) as widened:
        await client.refresh(PRIMARY_TOKEN, first,
                             scope="3gpp:mc:ptt_service 3gpp:mc:video_service")
    renewed = await client.refresh(PRIMARY_TOKEN, first)
    with pytest.raises(Refusal) as reused:
        await client.refresh(PRIMARY_TOKEN, first)
    again = await client.refresh(PRIMARY_TOKEN, str(renewed.refresh_token))
    assert (widened.value.status, widened.value.error) == (400, "invalid_scope")
    assert widened.value.description == "requested scope exceeds the original grant"
    assert renewed.refresh_token not in (None, first)
    assert (reused.value.status, reused.value.error) == (400, "invalid_grant")
    assert reused.value.description == "refresh token unknown, used or expired"
    assert again.scope == renewed.scope == "openid 3gpp:mc:ptt_service"


@on_servers
async def test_a_partner_refresh_the_profile_no_longer_covers_is_refused_and_not_spent(
        systems: Systems, client: IdmClient) -> None:
    """The partner re-provisions the migrant for a service the primary never authorised:
    nothing of the grant is left to refresh into (RFC 6749 §5.2 invalid_scope)."""
    answer = await client.partner_access_token(PARTNER_TOKEN, await _security_token(client))
    provider = systems.partner.provider
    profiles = provider.migration_profiles
    (profile,) = profiles.values()
    provider.migration_profiles = migration_profile_index([dataclasses.replace(
        profile, scopes=("3gpp:mc:data_key_management_service",))])
    try:
        with pytest.raises(Refusal) as refused:
            await client.refresh(PARTNER_TOKEN, answer["refresh_token"])
    finally:
        provider.migration_profiles = profiles
    renewed = await client.refresh(PARTNER_TOKEN, answer["refresh_token"])
    assert (refused.value.status, refused.value.error) == (400, "invalid_scope")
    assert refused.value.description == ("the migration profile no longer allows any of the "
                                         "granted scope")
    assert renewed.scope == answer["scope"]


# ================================================================ token exchange
@on_servers
@pytest.mark.parametrize(("change", "description"), [
    pytest.param({"subject_token_type": None},
                 f"subject_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}", id="no-type"),
    pytest.param({"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"},
                 f"subject_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}", id="id-token-type"),
    pytest.param({"resource": None}, "resource (the partner IdMS address) is required",
                 id="no-resource"),
    pytest.param({"resource": ""}, "resource (the partner IdMS address) is required",
                 id="empty-resource"),
])
async def test_a_token_exchange_missing_a_required_parameter_is_an_invalid_request(
        client: IdmClient, change: dict[str, str | None], description: str) -> None:
    """RFC 8693 §2.1 requires subject_token_type; 33.180 B.7.2 names the partner IdMS in
    resource.  RFC 8693 §2.2.2 refers to RFC 6749 §5.2: invalid_request."""
    tokens = await client.login(PRIMARY_ISSUER, "alice", ALICE_PASSWORD)
    with pytest.raises(Refusal) as refused:
        await client.token(PRIMARY_TOKEN, _exchange(tokens.access_token, **change))
    exchanged = await client.token(PRIMARY_TOKEN, _exchange(tokens.access_token))
    assert (refused.value.status, refused.value.error) == (400, "invalid_request")
    assert refused.value.description == description
    assert exchanged["issued_token_type"] == "urn:ietf:params:oauth:token-type:jwt"


@on_servers
async def test_a_subject_token_issued_to_another_client_is_refused(
        systems: Systems, client: IdmClient) -> None:
    """RFC 8693 §2.2.2: a valid access token, signed by the primary itself, but for another
    client than the one exchanging it."""
    issuer = systems.primary.provider.issuer

    def access_token(client_id: str) -> str:
        return issuer.access_token(sub="alice", client_id=client_id, now=time.time(),
                                   scope=["3gpp:mc:ptt_service"], audience=PRIMARY_RESOURCES)

    with pytest.raises(Refusal) as refused:
        await client.token(PRIMARY_TOKEN, _exchange(access_token(OTHER_CLIENT)))
    exchanged = await client.token(PRIMARY_TOKEN, _exchange(access_token(CLIENT_ID)))
    assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
    assert refused.value.description == "subject_token was issued to another client"
    assert exchanged["token_type"] == "N_A"


@on_servers
async def test_a_migrants_partner_token_cannot_be_exchanged_at_the_partner(
        client: IdmClient) -> None:
    """The migrant has no account at the partner, only a migration profile: its partner
    access token is genuine but names no user who could migrate on from there.  The
    partner's own user gets past that check (to invalid_target: carol may migrate
    nowhere)."""
    answer = await client.partner_access_token(PARTNER_TOKEN, await _security_token(client))
    carol = await client.login(PARTNER_ISSUER, "carol", "carol-secret")
    with pytest.raises(Refusal) as refused:
        await client.token(PARTNER_TOKEN, _exchange(answer["access_token"],
                                                    resource=PRIMARY_ISSUER))
    with pytest.raises(Refusal) as local:
        await client.token(PARTNER_TOKEN, _exchange(carol.access_token, resource=PRIMARY_ISSUER))
    assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
    assert refused.value.description == "subject_token names an unknown user"
    assert (local.value.status, local.value.error) == (400, "invalid_target")


# ===================================================================== jwt-bearer
@on_servers
@pytest.mark.parametrize("claims, description", [
    # 33.180 B.8: aud is [client_id, partner IdMS]; RFC 7523 §3: the token is for the
    # client presenting it.
    pytest.param({"aud": [OTHER_CLIENT, PARTNER_ISSUER]},
                 "security token was not issued to this client", id="aud-another-client"),
    pytest.param({"aud": PARTNER_ISSUER}, "security token was not issued to this client",
                 id="aud-partner-only"),
    # Without a jti no replay could be recognised (RFC 7523 §3 item 7).
    pytest.param({"jti": None}, "security token has no jti", id="jti-missing"),
    pytest.param({"jti": 42}, "security token has no jti", id="jti-number"),
])
async def test_a_security_token_unfit_for_the_jwt_bearer_grant_is_refused(
        systems: Systems, client: IdmClient, claims: dict[str, Any], description: str) -> None:
    """invalid_grant (RFC 7523 §3.1); the same token made right is taken."""
    with pytest.raises(Refusal) as refused:
        await client.partner_access_token(PARTNER_TOKEN,
                                          _signed_security_token(systems, **claims))
    taken = await client.partner_access_token(PARTNER_TOKEN, _signed_security_token(systems))
    assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
    assert refused.value.description == description
    assert taken["token_type"] == "Bearer"


@on_servers
async def test_a_security_token_refused_for_a_full_table_is_still_good_for_the_retry(
        systems: Systems, client: IdmClient) -> None:
    """503 "retry later" must not make the retry a replay: the migrant may have no way back
    to the primary for a new security token.  Room for one refresh token, taken by carol's
    (300 s here); the partner's clock moves on until it expires."""
    security = await _security_token(client)
    with reconfigured(systems.partner, table_capacity=1, refresh_token_lifetime=300):
        await client.login(PARTNER_ISSUER, "carol", "carol-secret")
        with pytest.raises(Refusal) as refused:
            await client.partner_access_token(PARTNER_TOKEN, security)
        systems.partner.idms.clock_offset += 301  # carol's refresh token expired
        taken = await client.partner_access_token(PARTNER_TOKEN, security)
    assert (refused.value.status, refused.value.error) == (503, "temporarily_unavailable")
    assert taken["token_type"] == "Bearer"

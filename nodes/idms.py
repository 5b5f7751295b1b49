"""The identity management server (IdMS) over HTTPS (24.482 CSC-1, 33.180 Annex B).

Endpoints (OpenID Connect Discovery names them all):

``GET  /.well-known/openid-configuration``  discovery metadata
``GET  /jwks``                              the signing key as a JWK set
``GET  /authorize``                         login form for an authorization request
``POST /authorize``                         ``username`` + ``password`` + the request's
                                            parameters: 302 to redirect_uri?code&state
``POST /token``                             authorization_code, refresh_token (local
                                            users and, in the partner role, migrants),
                                            RFC 8693 token exchange, RFC 7523 jwt-bearer
                                            (partner)

All decisions are :class:`~emulator.identity.oidc.IdentityProvider`'s, and the
login throttle's (``emulator.identity.lockout``: failed logins slow down, then lock
the user or the source out, answered as ``access_denied``); this module only turns
HTTP into their calls and their answers into HTTP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import logging
import math
import time
import urllib.parse
from collections.abc import Mapping
from typing import NoReturn

from aiohttp import web

from emulator.identity.lockout import Lockout
from emulator.identity.lockout import LoginThrottle
from emulator.identity.oidc import AuthorizationRequest
from emulator.identity.oidc import IdentityProvider
from emulator.identity.oidc import UserAccount
from emulator.identity.oidc import hash_password
from emulator.identity.oidc import migration_profile_index
from emulator.identity.tokens import SigningKey
from emulator.identity.tokens import TokenIssuer
from emulator.identity.tokens import TokenValidator
from emulator.keystore import load_trusted_issuers
from emulator.keystore import read_credential
from emulator.refusal import Refusal

from .httpd import HttpsRole
from .httpd import json_response
from .httpd import new_application
from .journal import Journal
from .plan import IdmsOptions
from .plan import NodePlan

logger = logging.getLogger(__name__)

_FORM = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{message}
<form method="post" action="/authorize">
{hidden}
<label>Username <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form></body></html>
"""


class IdmsNode(HttpsRole):
    """An IdMS: the :class:`IdentityProvider` its plan describes, served over HTTPS."""

    def __init__(self, plan: NodePlan, *, clock_offset: float = 0.0) -> None:
        options = plan.options
        assert isinstance(options, IdmsOptions)
        self.clock_offset = clock_offset + options.clock_offset
        """Seconds added to this IdMS's clock: simulated time for tests, or a skewed issuer."""
        self.provider, self.refused_trust = identity_provider(plan, options)
        self.journal = Journal(plan.state_file)
        """Refresh tokens and the replay cache, kept across a restart (see nodes.journal)."""
        self.provider.record = self._record
        self.title = options.title
        self.requests = 0
        self.throttle = LoginThrottle(options.login)
        """Failed logins per user and per source: slow-down, then lockout."""
        app = new_application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize_form)
        app.router.add_post("/authorize", self._authorize_submit)
        app.router.add_post("/token", self._token)
        super().__init__(plan, app)

    def now(self) -> float:
        return time.time() + self.clock_offset

    def state(self) -> dict[str, object]:
        return {**super().state(), "issuer": self.provider.address, "requests": self.requests,
                "refused_trust": dict(self.refused_trust), "restored": self.journal.restored,
                "lockouts": self.throttle.lockouts}

    async def start(self) -> None:
        self.provider.recover(self.journal.open(), now=self.now())
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        self.journal.close()

    def _record(self, table: str, key: str, value: object) -> None:
        if value is None:
            self.journal.delete(table, key)
        else:
            self.journal.put(table, key, value)

    # -- handlers -------------------------------------------------------------
    async def _discovery(self, request: web.Request) -> web.Response:
        self.requests += 1
        return json_response(self.provider.discovery())

    async def _jwks(self, request: web.Request) -> web.Response:
        self.requests += 1
        return json_response(self.provider.jwks())

    def _form(self, auth: AuthorizationRequest, message: str = "", status: int = 200
              ) -> web.Response:
        hidden = "\n".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in auth.as_params().items())
        return web.Response(text=_FORM.format(title=html.escape(self.title),
                                              message=message, hidden=hidden),
                            status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    def _check(self, params: Mapping[str, str]) -> AuthorizationRequest | web.Response:
        try:
            return self.provider.check_authorization_request(params)
        except Refusal as exc:
            if exc.error in ("invalid_client",) or "redirect_uri" in exc.description:
                # RFC 6749 §4.1.2.1: never redirect to an unverified URI.
                return json_response(exc.as_json(), status=400)
            raise web.HTTPFound(_redirect(params.get("redirect_uri", ""), {
                **exc.as_json(), "state": params.get("state", "")})) from None

    async def _authorize_form(self, request: web.Request) -> web.Response:
        self.requests += 1
        checked = self._check(dict(request.query))
        if isinstance(checked, web.Response):
            return checked
        return self._form(checked)

    async def _authorize_submit(self, request: web.Request) -> web.Response:
        self.requests += 1
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        checked = self._check(form)
        if isinstance(checked, web.Response):
            return checked
        username, source = form.get("username", ""), request.remote or ""
        locked = self.throttle.locked(username, source, self.now())
        if locked is not None:
            self._locked_out(checked, locked)
        try:
            # The slow password hash runs off the event loop, so a login storm does not
            # stall every other request this IdMS serves.
            user = await asyncio.to_thread(self.provider.authenticate, username,
                                           form.get("password", ""))
        except Refusal as exc:
            delay, started = self.throttle.failed(username, source, self.now())
            message = exc.description
            for lockout in started:
                logger.warning("%s: %s locked out for %.0f s after %d failed logins",
                               self.name, lockout.key, lockout.remaining,
                               self.throttle.limit.max_failures)
                message = (f"too many failed logins: locked out for "
                           f"{lockout.remaining:.0f} s")
            if delay:
                await asyncio.sleep(delay)  # the slow-down itself: a guesser waits for it
            return self._form(checked, f"<p role=alert>{html.escape(message)}</p>",
                              status=exc.status)
        self.throttle.succeeded(username, source)
        try:
            location = self.provider.issue_code(checked, user, now=self.now())
        except Refusal as exc:
            return self._form(checked, f"<p role=alert>{html.escape(exc.description)}</p>",
                              status=exc.status)
        raise web.HTTPFound(location)

    def _locked_out(self, auth: AuthorizationRequest, locked: Lockout) -> NoReturn:
        """RFC 6749 §4.1.2.1 ``access_denied`` to the (verified) redirect URI: the client
        learns the login is refused, and for how long (Retry-After, RFC 9110 §10.2.3)."""
        wait = max(1, math.ceil(locked.remaining))
        location = _redirect(auth.redirect_uri, {
            "error": "access_denied", "state": auth.state,
            "error_description": f"too many failed logins: locked out, retry in {wait} s"})
        raise web.HTTPFound(location, headers={"Retry-After": str(wait)})

    async def _token(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.content_type != "application/x-www-form-urlencoded":
            return json_response({"error": "invalid_request",
                                  "error_description": "the token endpoint takes "
                                  "application/x-www-form-urlencoded (RFC 6749 §3.2)"}, 400)
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        try:
            body = self.provider.token(form, now=self.now())
        except Refusal as exc:
            logger.info("%s: token request refused: %s", self.name, exc)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
            return json_response(exc.as_json(), status=exc.status, **headers)
        return json_response(body)


def _redirect(redirect_uri: str, params: Mapping[str, str]) -> str:
    """``redirect_uri`` with ``params`` added to its query, which is kept (RFC 6749 §3.1.2),
    as ``IdentityProvider.issue_code`` does for a code."""
    separator = "&" if "?" in redirect_uri else "?"
    return f"{redirect_uri}{separator}{urllib.parse.urlencode(params)}"


def identity_provider(plan: NodePlan, options: IdmsOptions
                      ) -> tuple[IdentityProvider, dict[str, str]]:
    """The IdMS's decisions, from its plan: accounts, clients, keys and, in the partner
    role, the primary IdMS certificates provisioned out of band (33.180 §5.1.4.2).

    Also returns, per peer system, why its provisioned certificate was refused.
    """
    credentials = plan.credentials
    if credentials.signing_certificate is None or credentials.signing_key is None:
        raise ValueError(f"{plan.name}: an IdMS needs its signing credential")
    signing = read_credential(credentials.signing_certificate, credentials.signing_key)
    trusted, refused = None, dict[str, str]()
    if credentials.trust_dir is not None:
        keys, refused = load_trusted_issuers(credentials.trust_dir, now=dt.datetime.now(dt.UTC))
        for peer, reason in refused.items():
            logger.warning("%s does not trust %s: %s", plan.name, peer, reason)
        trusted = TokenValidator(keys)
    # One hash per distinct password: a load run's generated users share their template's
    # (PROJECT CHOICE: same password, same salt), and 10,000 PBKDF2 runs would take 40 s.
    hashes: dict[str, str] = {}
    for account in options.accounts:
        if account.password not in hashes:
            hashes[account.password] = hash_password(account.password)
    accounts = {a.username: UserAccount(
        a.username, hashes[a.password], a.mc_ids, migration_targets=a.migration_targets,
        security_token_lifetime=a.security_token_lifetime, scopes=a.scopes)
        for a in options.accounts}
    return IdentityProvider(
        issuer=TokenIssuer(options.issuer, SigningKey.from_credential(signing)),
        clients={c.client_id: c for c in options.clients}, users=accounts,
        resource_audience=options.resource_audience, trusted_primaries=trusted,
        migration_profiles=migration_profile_index(options.migration_profiles)), refused

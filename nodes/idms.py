"""The identity management server (IdMS) over HTTPS (24.482 CSC-1, 33.180 Annex B).

Endpoints (OpenID Connect Discovery names them all):

``GET  /.well-known/openid-configuration``  discovery metadata
``GET  /jwks``                              the signing key as a JWK set
``GET  /authorize``                         login form for an authorization request
``POST /authorize``                         ``username`` + ``password`` + the request's
                                            parameters: 302 to redirect_uri?code&state
``POST /token``                             authorization_code, refresh_token, RFC 8693
                                            token exchange, RFC 7523 jwt-bearer (partner)

All decisions are :class:`~emulator.identity.oidc.IdentityProvider`'s; this
module only turns HTTP into its calls and its answers into HTTP.
"""

from __future__ import annotations

import asyncio
import html
import logging
import ssl
import time
import urllib.parse
from collections.abc import Mapping

from aiohttp import web

from emulator.identity.oidc import AuthorizationRequest, IdentityProvider, OAuthError

from .httpd import HttpsServer, json_response, new_application

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


class IdmsNode:
    """An IdMS: an :class:`IdentityProvider` served over HTTPS."""

    def __init__(self, name: str, provider: IdentityProvider, host: str, port: int,
                 ssl_context: ssl.SSLContext | None, *, title: str = "MC IdMS",
                 clock_offset: float = 0.0) -> None:
        self.name = name
        self.clock_offset = clock_offset
        """Seconds added to this IdMS's clock (negative scenarios: a skewed issuer)."""
        self.provider = provider
        self.title = title
        self.requests = 0
        app = new_application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize_form)
        app.router.add_post("/authorize", self._authorize_submit)
        app.router.add_post("/token", self._token)
        self.server = HttpsServer(name, app, host, port, ssl_context)

    def now(self) -> float:
        return time.time() + self.clock_offset

    def __repr__(self) -> str:
        return f"<IdmsNode {self.name} {self.server.url}>"

    async def start(self) -> str:
        return await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

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
        except OAuthError as exc:
            if exc.error in ("invalid_client",) or "redirect_uri" in exc.description:
                # RFC 6749 §4.1.2.1: never redirect to an unverified URI.
                return json_response(exc.as_json(), status=400)
            redirect = params.get("redirect_uri", "")
            query = urllib.parse.urlencode({**exc.as_json(), "state": params.get("state", "")})
            raise web.HTTPFound(f"{redirect}?{query}") from None

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
        try:
            # The slow password hash runs off the event loop, so a login storm does not
            # stall every other request this IdMS serves.
            user = await asyncio.to_thread(self.provider.authenticate,
                                           form.get("username", ""), form.get("password", ""))
            location = self.provider.issue_code(checked, user, now=self.now())
        except OAuthError as exc:
            return self._form(checked, f"<p role=alert>{html.escape(exc.description)}</p>",
                              status=exc.status)
        raise web.HTTPFound(location)

    async def _token(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.content_type != "application/x-www-form-urlencoded":
            return json_response({"error": "invalid_request",
                                  "error_description": "the token endpoint takes "
                                  "application/x-www-form-urlencoded (RFC 6749 §3.2)"}, 400)
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        try:
            body = self.provider.token(form, now=self.now())
        except OAuthError as exc:
            logger.info("%s: token request refused: %s", self.name, exc)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
            return json_response(exc.as_json(), status=exc.status, **headers)
        return json_response(body)

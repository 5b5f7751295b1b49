"""The UE's IdM client and CM client (24.482 CSC-1, 24.484 CSC-4), over HTTPS with aiohttp.

Plays the part a native MC client app plays (33.180 B.4): drives the login
form, redeems the code with PKCE, exchanges tokens for a partner IdMS
(RFC 8693), presents the security token to the partner IdMS (RFC 7523) and
downloads the user profile with a bearer token (RFC 6750).
"""

from __future__ import annotations

import re
import secrets
import ssl
import urllib.parse
from dataclasses import dataclass, field
from html import unescape
from typing import Any

import aiohttp

from emulator import profile as profiles
from emulator.identity.oidc import (
    GRANT_JWT_BEARER,
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_ACCESS_TOKEN,
    s256_challenge,
)
from emulator.trace import Trace


class IdmError(Exception):
    """An IdMS or CMS refused; ``error`` is the OAuth error code, ``status`` the HTTP status."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"HTTP {status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description


@dataclass
class Tokens:
    """What the login produced (24.482 §4.1)."""

    access_token: str
    id_token: str | None
    refresh_token: str | None
    expires_in: int
    scope: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


class IdmClient:
    """An HTTPS client bound to one CA bundle; use as an async context manager."""

    def __init__(self, client_id: str, redirect_uri: str, ssl_context: ssl.SSLContext,
                 *, local_address: str | None = None, trace: Trace | None = None,
                 name: str = "ue") -> None:
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.name = name
        self._ssl = ssl_context
        self._local = local_address
        self._trace = trace
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> IdmClient:
        connector = aiohttp.TCPConnector(
            ssl=self._ssl, local_addr=(self._local, 0) if self._local else None)
        hooks = []
        if self._trace is not None:
            hooks.append(self._trace_config(self._trace))
        self._session = aiohttp.ClientSession(connector=connector, trace_configs=hooks,
                                              timeout=aiohttp.ClientTimeout(total=15))
        return self

    def _trace_config(self, trace: Trace) -> aiohttp.TraceConfig:
        """Tell the run's trace about each HTTPS exchange (the pcap has them encrypted)."""
        config = aiohttp.TraceConfig()

        async def on_end(session: object, context: object,
                         params: aiohttp.TraceRequestEndParams) -> None:
            url = params.url
            peer = trace.name_of_host(str(url))
            what = describe_http(params.method, url.path, self._last_form)
            trace.record(self.name, peer, "https", what)
            trace.record(peer, self.name, "https",
                         f"{params.response.status} {params.response.reason}")

        config.on_request_end.append(on_end)
        return config

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use IdmClient as an async context manager"
        return self._session

    async def discover(self, issuer: str) -> dict[str, Any]:
        async with self.session.get(f"{issuer}/.well-known/openid-configuration") as response:
            return await _json(response)

    async def login(self, issuer: str, username: str, password: str, *,
                    scope: str = "openid 3gpp:mc:ptt_service 3gpp:mc:data_service "
                                 "3gpp:mc:video_service 3gpp:mc:ptt_config_management_service"
                    ) -> Tokens:
        """Authorization code + PKCE S256 with the password ACR (33.180 B.4)."""
        metadata = await self.discover(issuer)
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(16)
        query = {"response_type": "code", "client_id": self.client_id,
                 "redirect_uri": self.redirect_uri, "scope": scope, "state": state,
                 "code_challenge": s256_challenge(verifier), "code_challenge_method": "S256",
                 "acr_values": "3gpp:acr:password"}
        async with self.session.get(metadata["authorization_endpoint"], params=query) as form:
            page = await form.text()
            if form.status != 200:
                raise IdmError(form.status, "authorization_refused", page[:200])
        fields = {unescape(k): unescape(v) for k, v in _HIDDEN.findall(page)}
        fields.update(username=username, password=password)
        async with self.session.post(metadata["authorization_endpoint"], data=fields,
                                     allow_redirects=False) as answer:
            if answer.status != 302:
                raise IdmError(answer.status, "access_denied", "login refused")
            location = answer.headers["Location"]
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        if params.get("state") != state:
            raise IdmError(302, "invalid_state", "state mismatch in the redirect")
        if "error" in params:
            raise IdmError(302, params["error"], params.get("error_description", ""))
        body = await self.token(metadata["token_endpoint"], {
            "grant_type": "authorization_code", "code": params["code"],
            "redirect_uri": self.redirect_uri, "code_verifier": verifier})
        return Tokens(body["access_token"], body.get("id_token"), body.get("refresh_token"),
                      int(body.get("expires_in", 0)), body.get("scope", ""), body)

    _last_form: dict[str, str] | None = None

    async def token(self, endpoint: str, form: dict[str, str]) -> dict[str, Any]:
        """POST to a token endpoint; raises :class:`IdmError` on an OAuth error."""
        self._last_form = form
        async with self.session.post(endpoint, data={"client_id": self.client_id, **form}) \
                as response:
            return await _json(response)

    async def exchange_for_partner(self, primary_token_endpoint: str, access_token: str,
                                   partner_idms: str) -> str:
        """RFC 8693 token exchange at the primary IdMS (33.180 B.7.2): the security token."""
        body = await self.token(primary_token_endpoint, {
            "grant_type": GRANT_TOKEN_EXCHANGE, "subject_token": access_token,
            "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN, "resource": partner_idms})
        return str(body["access_token"])

    async def partner_access_token(self, partner_token_endpoint: str,
                                   security_token: str) -> dict[str, Any]:
        """RFC 7523 jwt-bearer at the partner IdMS (the project's reading of 33.180 B.7.4)."""
        return await self.token(partner_token_endpoint, {
            "grant_type": GRANT_JWT_BEARER, "assertion": security_token})

    async def fetch_profile(self, cms_url: str, xui: str, access_token: str,
                            index: int = 1) -> profiles.UserProfile:
        """GET the user profile from the CMS with a bearer token (RFC 6750 §2.1)."""
        path = profiles.xcap_path(xui, index)
        async with self.session.get(f"{cms_url}{path}",
                                    headers={"Authorization": f"Bearer {access_token}"}) as r:
            if r.status != 200:
                body = await r.json(content_type=None)
                raise IdmError(r.status, body.get("error", "?"), body.get("error_description", ""))
            return profiles.parse(await r.read())


_GRANT_NAMES = {"authorization_code": "authorization_code", "refresh_token": "refresh_token",
                GRANT_TOKEN_EXCHANGE: "token-exchange", GRANT_JWT_BEARER: "jwt-bearer"}


def describe_http(method: str, path: str, form: dict[str, str] | None) -> str:
    """A one-line summary of an IdM/CM request for the ladder."""
    if path.endswith("/token") and form:
        grant = form.get("grant_type", "")
        return f"{method} {path} grant_type={_GRANT_NAMES.get(grant, grant)}"
    if len(path) > 48:
        path = path[:45] + "..."
    return f"{method} {path}"


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await response.json(content_type=None)
    except ValueError:
        raise IdmError(response.status, "invalid_response", "not JSON") from None
    if response.status != 200 or not isinstance(body, dict):
        error = body.get("error", "?") if isinstance(body, dict) else "?"
        description = body.get("error_description", "") if isinstance(body, dict) else ""
        raise IdmError(response.status, error, description)
    return body

"""The UE's IdM client and CM client (24.482 CSC-1, 24.484 CSC-4), over HTTPS with aiohttp.

Plays the part a native MC client app plays (33.180 B.4): drives the login
form, redeems the code with PKCE, refreshes tokens (RFC 6749 §6), exchanges
tokens for a partner IdMS (RFC 8693), presents the security token to the
partner IdMS (RFC 7523) and downloads the user profile with a bearer token
(RFC 6750).
"""

from __future__ import annotations

import re
import secrets
import ssl
import urllib.parse
from dataclasses import dataclass
from dataclasses import field
from html import unescape
from typing import Any

import aiohttp

from emulator.documents import groups
from emulator.documents import profile as profiles
from emulator.identity.oidc import GRANT_JWT_BEARER
from emulator.identity.oidc import GRANT_REFRESH_TOKEN
from emulator.identity.oidc import GRANT_TOKEN_EXCHANGE
from emulator.identity.oidc import TOKEN_TYPE_ACCESS_TOKEN
from emulator.identity.oidc import s256_challenge
from emulator.refusal import Refusal


@dataclass
class Tokens:
    """What the login produced (24.482 §4.1)."""

    access_token: str
    id_token: str | None
    refresh_token: str | None
    expires_in: int
    scope: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> Tokens:
        """A successful token response (RFC 6749 §5.1)."""
        return cls(body["access_token"], body.get("id_token"), body.get("refresh_token"),
                   int(body.get("expires_in", 0)), body.get("scope", ""), body)


_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


class IdmClient:
    """An HTTPS client bound to one CA bundle; use as an async context manager."""

    def __init__(self, client_id: str, redirect_uri: str, ssl_context: ssl.SSLContext,
                 *, local_address: str | None = None) -> None:
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self._ssl = ssl_context
        self._local = local_address
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> IdmClient:
        connector = aiohttp.TCPConnector(
            ssl=self._ssl, local_addr=(self._local, 0) if self._local else None)
        self._session = aiohttp.ClientSession(connector=connector,
                                              timeout=aiohttp.ClientTimeout(total=15))
        return self

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
                                 "3gpp:mc:video_service 3gpp:mc:ptt_config_management_service "
                                 "3gpp:mc:ptt_group_management_service"
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
                raise Refusal("authorization_refused", page[:200], form.status)
        fields = {unescape(k): unescape(v) for k, v in _HIDDEN.findall(page)}
        fields.update(username=username, password=password)
        async with self.session.post(metadata["authorization_endpoint"], data=fields,
                                     allow_redirects=False) as answer:
            if answer.status != 302:
                raise Refusal("access_denied", "login refused", answer.status)
            location = answer.headers["Location"]
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        if params.get("state") != state:
            raise Refusal("invalid_state", "state mismatch in the redirect", 302)
        if "error" in params:
            raise Refusal(params["error"], params.get("error_description", ""), 302)
        body = await self.token(metadata["token_endpoint"], {
            "grant_type": "authorization_code", "code": params["code"],
            "redirect_uri": self.redirect_uri, "code_verifier": verifier})
        return Tokens.from_response(body)

    async def refresh(self, token_endpoint: str, refresh_token: str, *,
                      scope: str | None = None) -> Tokens:
        """The refresh_token grant (RFC 6749 §6, 33.180 B.5), at the primary or, for a migrant,
        at the partner IdMS.  The IdMS rotates refresh tokens (RFC 9700 §4.14.2): keep the
        returned one, the one given here is spent.  ``scope`` asks for less than the grant."""
        form = {"grant_type": GRANT_REFRESH_TOKEN, "refresh_token": refresh_token}
        if scope is not None:
            form["scope"] = scope
        return Tokens.from_response(await self.token(token_endpoint, form))

    async def token(self, endpoint: str, form: dict[str, str]) -> dict[str, Any]:
        """POST to a token endpoint; raises :class:`Refusal` on an OAuth error."""
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
                                   security_token: str, *,
                                   scope: str | None = None) -> dict[str, Any]:
        """RFC 7523 jwt-bearer at the partner IdMS (the project's reading of 33.180 B.7.4).

        The token response as it came: the partner access token and the ``refresh_token``
        that renews it with :meth:`refresh` at the partner, without a new security token."""
        form = {"grant_type": GRANT_JWT_BEARER, "assertion": security_token}
        if scope is not None:  # RFC 7523 §2.1 / RFC 6749 §3.3: ask for less
            form["scope"] = scope
        return await self.token(partner_token_endpoint, form)

    async def fetch_profile(self, cms_url: str, xui: str, access_token: str,
                            index: int = 1) -> profiles.UserProfile:
        """GET the user profile from the CMS with a bearer token (RFC 6750 §2.1)."""
        path = profiles.xcap_path(xui, index)
        async with self.session.get(f"{cms_url}{path}",
                                    headers={"Authorization": f"Bearer {access_token}"}) as r:
            if r.status != 200:
                body = await r.json(content_type=None)
                raise Refusal(body.get("error", "?"), body.get("error_description", ""), r.status)
            return profiles.parse(await r.read())

    async def fetch_group(self, gms_url: str, group: str,
                          access_token: str) -> groups.GroupDocument:
        """GET a group document from the GMS with a bearer token (24.481, RFC 6750 §2.1)."""
        async with self.session.get(f"{gms_url}{groups.xcap_path(group)}",
                                    headers={"Authorization": f"Bearer {access_token}"}) as r:
            if r.status != 200:
                body = await r.json(content_type=None)
                raise Refusal(body.get("error", "?"), body.get("error_description", ""), r.status)
            return groups.parse(await r.read())


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await response.json(content_type=None)
    except ValueError:
        raise Refusal("invalid_response", "not JSON", response.status) from None
    if response.status != 200 or not isinstance(body, dict):
        error = body.get("error", "?") if isinstance(body, dict) else "?"
        description = body.get("error_description", "") if isinstance(body, dict) else ""
        raise Refusal(error, description, response.status)
    return body

"""The configuration management server (CMS) over HTTPS (24.484, 23.280 §10.1.4).

Serves MC service user profiles at their XCAP path
``/org.3gpp.mcptt.user-profile/users/{XUI}/mcptt-user-profile-{index}.xml``
to a client presenting a bearer access token (RFC 6750 §2.1) from its own
system's IdMS.  The token must carry the config-management scope
(33.180 B.4) and a ``mcptt_id`` equal to the XUI: users read only their
own profile.  Refusals follow RFC 6750 §3 (``WWW-Authenticate: Bearer
error=...``).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Mapping

from aiohttp import web

from emulator import profile as profiles
from emulator.identity.tokens import ACCESS_TOKEN_TYP, TokenError, TokenValidator

from .httpd import HttpsServer, json_response, new_application

logger = logging.getLogger(__name__)

CONFIG_SCOPE = "3gpp:mc:ptt_config_management_service"


class CmsNode:
    """A CMS holding ``profiles`` keyed by MCPTT ID (the XUI)."""

    def __init__(self, name: str, profiles_by_id: Mapping[str, profiles.UserProfile],
                 validator: TokenValidator, issuer: str, host: str, port: int,
                 ssl_context: ssl.SSLContext | None, *, audience: str | None = None) -> None:
        self.name = name
        self.profiles = dict(profiles_by_id)
        self.validator = validator
        self.issuer = issuer
        self.audience = audience
        """The resource-server audience the access tokens must name (RFC 9068 §4)."""
        self.requests = 0
        app = new_application()
        app.router.add_get(profiles.xcap_path("{xui}", "{index}"), self._get)
        self.server = HttpsServer(name, app, host, port, ssl_context)

    def __repr__(self) -> str:
        return f"<CmsNode {self.name} profiles={len(self.profiles)}>"

    async def start(self) -> str:
        return await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def _get(self, request: web.Request) -> web.Response:
        self.requests += 1
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _bearer_error(401, "invalid_request", "a Bearer access token is required")
        try:
            claims = self.validator.validate(token.strip(), now=time.time(),
                                             typ=ACCESS_TOKEN_TYP, issuer=self.issuer,
                                             audience=self.audience)
        except TokenError as exc:
            return _bearer_error(401, "invalid_token", exc.description)
        if CONFIG_SCOPE not in str(claims.get("scope", "")).split():
            return _bearer_error(403, "insufficient_scope", f"scope lacks {CONFIG_SCOPE}")
        xui = request.match_info["xui"]
        if claims.get("mcptt_id") != xui:
            return _bearer_error(403, "insufficient_scope",
                                 "a user may only read their own profile")
        profile = self.profiles.get(xui)
        if profile is None or str(profile.index) != request.match_info["index"]:
            return json_response({"error": "not_found",
                                  "error_description": f"no profile for {xui}"}, 404)
        return web.Response(body=profiles.render(profile), content_type=profiles.MIME_TYPE,
                            headers={"Cache-Control": "no-store"})


def _bearer_error(status: int, error: str, description: str) -> web.Response:
    quoted = description.replace('"', "'")
    return json_response({"error": error, "error_description": description}, status,
                         **{"WWW-Authenticate": f'Bearer error="{error}", '
                                                f'error_description="{quoted}"'})

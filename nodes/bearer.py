"""The resource-server side of RFC 6750 for the CMS and the GMS: a bearer access token
from the system's own IdMS (signature, ``typ``, ``iss``, ``aud``, lifetime) with the scope
the server needs (33.180 B.4); refusals as RFC 6750 §3 says."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from emulator.identity.tokens import ACCESS_TOKEN_TYP
from emulator.identity.tokens import TokenError
from emulator.identity.tokens import TokenValidator

from .httpd import json_response


class BearerRefused(Exception):
    """A request the resource server refuses: status, RFC 6750 §3.1 error, why."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> web.Response:
        quoted = self.description.replace('"', "'")
        return json_response({"error": self.error, "error_description": self.description},
                             self.status, **{"WWW-Authenticate": f'Bearer error="{self.error}", '
                                                                 f'error_description="{quoted}"'})


@dataclass(frozen=True)
class BearerGuard:
    validator: TokenValidator
    issuer: str
    audience: str
    """The resource-server audience the tokens must name (RFC 9068 §4)."""
    scope: str

    def claims(self, request: web.Request) -> dict[str, Any]:
        """The claims of the request's valid token; :class:`BearerRefused` otherwise."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise BearerRefused(401, "invalid_request", "a Bearer access token is required")
        try:
            claims = self.validator.validate(token.strip(), now=time.time(),
                                             typ=ACCESS_TOKEN_TYP, issuer=self.issuer,
                                             audience=self.audience)
        except TokenError as exc:
            raise BearerRefused(401, "invalid_token", exc.description) from None
        if self.scope not in str(claims.get("scope", "")).split():
            raise BearerRefused(403, "insufficient_scope", f"scope lacks {self.scope}")
        return claims

"""A stock OIDC client (authlib's OAuth2Session) against the primary IdMS over HTTPS.

33.180 B.4 / 24.482: discovery, authorization code with PKCE S256 and the
mandatory password ACR, refresh, and the ID token validated with the JWKS.
"""

from __future__ import annotations

import asyncio
import re
import time
from html import unescape
from pathlib import Path
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.identity import ALICE_MCPTT_ID
from tests.support.identity import ALICE_PASSWORD
from tests.support.identity import CLIENT_ID
from tests.support.identity import PRIMARY_ISSUER
from tests.support.identity import REDIRECT_URI
from tests.support.identity import two_systems

SCOPE = "openid 3gpp:mc:ptt_service 3gpp:mc:ptt_config_management_service"


def login(session: OAuth2Session, metadata: dict[str, Any], ca: Path, *,
          username: str = "alice", password: str = ALICE_PASSWORD) -> tuple[str, str]:
    """Drive the login form like a browser; returns (redirect location, code_verifier)."""
    verifier = generate_token(64)
    url, _state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier,
        acr_values="3gpp:acr:password")
    form = requests.get(url, verify=str(ca), timeout=10)
    assert form.status_code == 200 and "<form" in form.text
    fields = {unescape(k): unescape(v) for k, v in
              re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.text)}
    fields.update(username=username, password=password)
    answer = requests.post(metadata["authorization_endpoint"], data=fields, verify=str(ca),
                           allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"], verifier


def _flow(ca: Path) -> dict[str, Any]:
    metadata = requests.get(f"{PRIMARY_ISSUER}/.well-known/openid-configuration",
                            verify=str(ca), timeout=10).json()
    session = OAuth2Session(CLIENT_ID, redirect_uri=REDIRECT_URI, scope=SCOPE,
                            code_challenge_method="S256", token_endpoint_auth_method="none")
    with session:
        location, verifier = login(session, metadata, ca)
        token = session.fetch_token(metadata["token_endpoint"], authorization_response=location,
                                    code_verifier=verifier, verify=str(ca))
        jwks = requests.get(metadata["jwks_uri"], verify=str(ca), timeout=10).json()
        refreshed = session.refresh_token(metadata["token_endpoint"],
                                          refresh_token=token["refresh_token"], verify=str(ca))
    return {"metadata": metadata, "token": dict(token), "jwks": jwks,
            "refreshed": dict(refreshed)}


async def test_stock_client_discovery_pkce_refresh_and_id_token(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems:
        result = await asyncio.to_thread(_flow, systems.primary.ca_file)
    metadata, token = result["metadata"], result["token"]
    assert metadata["issuer"] == PRIMARY_ISSUER
    assert "S256" in metadata["code_challenge_methods_supported"]
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in metadata["grant_types_supported"]
    # 24.482 §4.1: the procedure yields an ID token, an access token and a refresh token.
    assert {"access_token", "id_token", "refresh_token", "expires_in"} <= set(token)
    assert token["token_type"].lower() == "bearer"
    # The ID token verifies with the published JWKS and carries the B.2.1 claims.
    keys = KeySet.import_key_set(result["jwks"])
    id_token = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
    claims = id_token.claims
    registry = jwt.JWTClaimsRegistry(iss={"essential": True, "value": PRIMARY_ISSUER},
                                     aud={"essential": True, "value": CLIENT_ID},
                                     sub={"essential": True}, exp={"essential": True},
                                     iat={"essential": True})
    registry.validate(claims)
    assert claims["mcptt_id"] == ALICE_MCPTT_ID
    assert claims["exp"] > time.time()
    # Refresh returns a new access token (and rotates the refresh token).
    refreshed = result["refreshed"]
    assert refreshed["access_token"] != token["access_token"]
    assert refreshed["refresh_token"] != token["refresh_token"]

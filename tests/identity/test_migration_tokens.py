"""Token exchange at the primary, security token at the partner (33.180 §5.1.4, B.7, B.8)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path

import pytest
from joserfc import jws

from emulator.identity import ACCESS_TOKEN_TYP
from emulator.identity import CLAIM_MIGRATION_PARTNER
from emulator.identity import GRANT_JWT_BEARER
from emulator.identity import TokenValidator
from emulator.identity import verification_key
from emulator.orchestration import create_system
from emulator.refusal import Refusal
from emulator.transport.tls import client_context
from nodes import Account
from nodes import IdmsOptions
from nodes.idm_client import IdmClient
from nodes.idms import identity_provider
from tests.support.identity import ALICE_MCPTT_ID
from tests.support.identity import ALICE_PARTNER_ID
from tests.support.identity import ALICE_PASSWORD
from tests.support.identity import CLIENT_ID
from tests.support.identity import PARTNER_ISSUER
from tests.support.identity import PRIMARY_CMS
from tests.support.identity import PRIMARY_IDMS
from tests.support.identity import PRIMARY_ISSUER
from tests.support.identity import REDIRECT_URI
from tests.support.identity import Systems
from tests.support.identity import idms_plan
from tests.support.identity import two_systems

NARROWED = "3gpp:mc:ptt_service 3gpp:mc:ptt_config_management_service"  # no data, no video


def _client(systems: Systems) -> IdmClient:
    cas = [systems.primary.material.ca.certificate_pem(),
           systems.partner.material.ca.certificate_pem()]
    return IdmClient(CLIENT_ID, REDIRECT_URI, client_context(cas))


async def _security_token(client: IdmClient) -> tuple[str, str]:
    tokens = await client.login(PRIMARY_ISSUER, "alice", ALICE_PASSWORD)
    security = await client.exchange_for_partner(f"{PRIMARY_ISSUER}/token",
                                                 tokens.access_token, PARTNER_ISSUER)
    return tokens.access_token, security


async def test_security_token_has_the_b8_claims(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        _, security = await _security_token(client)
        claims = TokenValidator([verification_key(
            PRIMARY_ISSUER, systems.primary.material.signing.certificate,
            [systems.primary.material.ca.certificate], now=dt.datetime.now(dt.UTC))]).validate(
            security, now=time.time(), typ="mcx-st+jwt")
    # B.8: iss, sub, aud = [client_id, target IdMS address (the 'resource')], exp, iat.
    assert claims["iss"] == PRIMARY_ISSUER
    assert claims["sub"] == "alice"
    assert claims["aud"] == [CLIENT_ID, PARTNER_ISSUER]
    assert claims["iat"] <= time.time() < claims["exp"]
    # No MC service ID: the partner finds the user by (iss, sub), all B.8 guarantees.
    assert "mcptt_id" not in claims
    # Project-defined: what the primary authorised, and for which partner.
    assert claims[CLAIM_MIGRATION_PARTNER] == PARTNER_ISSUER
    assert set(claims["scope"].split()) == {
        "3gpp:mc:ptt_service", "3gpp:mc:data_service", "3gpp:mc:video_service",
        "3gpp:mc:ptt_config_management_service",
        "3gpp:mc:ptt_group_management_service"}  # the login's MC scopes, not openid


@pytest.mark.parametrize("login_scope,asked,granted", [
    # The partner grants what the primary authorised, never the rest of MC_SCOPES.
    ("openid 3gpp:mc:ptt_service 3gpp:mc:data_service", None,
     {"3gpp:mc:ptt_service", "3gpp:mc:data_service"}),
    # ... and within that, what the UE asks for (RFC 6749 §3.3).
    ("openid 3gpp:mc:ptt_service 3gpp:mc:data_service", "3gpp:mc:data_service",
     {"3gpp:mc:data_service"}),
    # Asking for more than the primary authorised gets none of the extra.
    ("openid 3gpp:mc:ptt_service", "3gpp:mc:ptt_service 3gpp:mc:ptt_key_management_service",
     {"3gpp:mc:ptt_service"}),
])
async def test_the_partner_grants_at_most_what_the_primary_authorised(
        tmp_path: Path, login_scope: str, asked: str | None, granted: set[str]) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        tokens = await client.login(PRIMARY_ISSUER, "alice", ALICE_PASSWORD, scope=login_scope)
        security = await client.exchange_for_partner(f"{PRIMARY_ISSUER}/token",
                                                     tokens.access_token, PARTNER_ISSUER)
        form = {"grant_type": GRANT_JWT_BEARER, "assertion": security}
        if asked is not None:
            form["scope"] = asked
        answer = await client.token(f"{PARTNER_ISSUER}/token", form)
    body = json.loads(jws.extract_compact(answer["access_token"].encode()).payload)
    assert set(body["scope"].split()) == set(answer["scope"].split()) == granted


async def test_asking_the_partner_only_for_what_the_primary_did_not_authorise_is_refused(
        tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        tokens = await client.login(PRIMARY_ISSUER, "alice", ALICE_PASSWORD,
                                    scope="openid 3gpp:mc:ptt_service")
        security = await client.exchange_for_partner(f"{PRIMARY_ISSUER}/token",
                                                     tokens.access_token, PARTNER_ISSUER)
        with pytest.raises(Refusal) as refused:
            await client.token(f"{PARTNER_ISSUER}/token", {
                "grant_type": GRANT_JWT_BEARER, "assertion": security,
                "scope": "3gpp:mc:video_service"})
    assert (refused.value.status, refused.value.error) == (400, "invalid_scope")


async def test_partner_issues_its_own_access_token(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        _, security = await _security_token(client)
        answer = await client.partner_access_token(f"{PARTNER_ISSUER}/token", security)
        token = answer["access_token"]
        # The partner CMS accepts the partner token and serves the migration profile.
        profile = await client.fetch_profile(systems.partner.cms.server.url, ALICE_PARTNER_ID,
                                             token)
    compact = jws.extract_compact(token.encode())
    assert compact.headers()["typ"] == ACCESS_TOKEN_TYP
    body = json.loads(compact.payload)
    assert body["iss"] == PARTNER_ISSUER  # issued by the partner, not the primary
    assert body["mcptt_id"] == ALICE_PARTNER_ID  # 23.280 §10.16.5.1: a new MC service ID
    assert body["primary_mcptt_id"] == ALICE_MCPTT_ID
    assert "3gpp:mc:ptt_service" in body["scope"].split()
    assert profile.migration_for == ALICE_MCPTT_ID


@pytest.mark.parametrize("mode", ["withhold", "corrupt"])
async def test_partner_refuses_without_valid_out_of_band_provisioning(
        tmp_path: Path, mode: str) -> None:
    async with two_systems(tmp_path, provision_mode=mode) as systems, \
            _client(systems) as client:
        _, security = await _security_token(client)
        with pytest.raises(Refusal) as refused:
            await client.partner_access_token(f"{PARTNER_ISSUER}/token", security)
        if mode == "corrupt":
            assert "signature does not match" in systems.partner.refused_trust["primary"]
    assert refused.value.status == 400
    assert refused.value.error == "invalid_grant"
    assert "no such key was provisioned" in refused.value.description


async def test_the_migrant_refreshes_its_partner_token_at_the_partner(tmp_path: Path) -> None:
    """RFC 6749 §6 at the partner IdMS: a new partner access token, the refresh token rotated
    (RFC 9700 §4.14.2), and neither the primary nor a new security token needed."""
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        _, security = await _security_token(client)
        answer = await client.partner_access_token(f"{PARTNER_ISSUER}/token", security)
        await systems.primary.idms.stop()
        refreshed = await client.refresh(f"{PARTNER_ISSUER}/token", answer["refresh_token"],
                                         scope=NARROWED)
        profile = await client.fetch_profile(systems.partner.cms.server.url, ALICE_PARTNER_ID,
                                             refreshed.access_token)
        with pytest.raises(Refusal) as reused:
            await client.refresh(f"{PARTNER_ISSUER}/token", answer["refresh_token"])
        again = await client.refresh(f"{PARTNER_ISSUER}/token", str(refreshed.refresh_token))
    assert refreshed.refresh_token and refreshed.refresh_token != answer["refresh_token"]
    assert refreshed.scope == NARROWED and refreshed.id_token is None
    assert refreshed.expires_in == systems.partner.provider.access_token_lifetime
    body = json.loads(jws.extract_compact(refreshed.access_token.encode()).payload)
    assert (body["iss"], body["mcptt_id"], body["primary_mcptt_id"]) == (
        PARTNER_ISSUER, ALICE_PARTNER_ID, ALICE_MCPTT_ID)
    assert profile.migration_for == ALICE_MCPTT_ID
    assert (reused.value.status, reused.value.error) == (400, "invalid_grant")
    assert "refresh token unknown, used or expired" in reused.value.description
    assert again.scope == NARROWED  # the narrowed grant is what rotates on


def test_the_plan_sets_each_users_security_token_lifetime(tmp_path: Path) -> None:
    """nodes.idms: the account's own setting (from the topology's user), else 600 s."""
    create_system(tmp_path, "primary", {"idms": [PRIMARY_IDMS[0]]},
                  now=dt.datetime.now(dt.UTC))
    accounts = (Account("alice", ALICE_PASSWORD, {"mcptt_id": ALICE_MCPTT_ID},
                        security_token_lifetime=60),
                Account("bob", "bob-secret", {"mcptt_id": "sip:bob@mcx.primary.example"}))
    plan = idms_plan(tmp_path, "primary", PRIMARY_IDMS, accounts)
    assert isinstance(plan.options, IdmsOptions)
    provider, _ = identity_provider(plan, plan.options)
    assert provider.users["alice"].security_token_lifetime == 60
    assert provider.users["bob"].security_token_lifetime == 600


async def test_partner_validates_with_the_primary_idms_stopped(tmp_path: Path) -> None:
    """Nothing of the primary IdMS is reached or needed when the partner checks the token:
    with the primary's IdMS and CMS stopped, a tripwire listens on their addresses and
    counts every connection made to them (a JWKS fetch or discovery would be one)."""
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        _, security = await _security_token(client)
        await systems.primary.idms.stop()
        await systems.primary.cms.stop()
        reached: list[object] = []

        async def tripwire(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            reached.append(writer.get_extra_info("peername"))
            writer.close()

        wires = [await asyncio.start_server(tripwire, *at) for at in (PRIMARY_IDMS, PRIMARY_CMS)]
        try:
            answer = await client.partner_access_token(f"{PARTNER_ISSUER}/token", security)
        finally:
            for wire in wires:
                wire.close()
        assert answer["token_type"] == "Bearer"
        assert reached == []


async def test_user_without_migration_authorisation_gets_no_security_token(
        tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        tokens = await client.login(PRIMARY_ISSUER, "bob", "bob-secret")
        with pytest.raises(Refusal) as refused:
            await client.exchange_for_partner(f"{PRIMARY_ISSUER}/token", tokens.access_token,
                                              PARTNER_ISSUER)
    assert refused.value.error == "invalid_target"  # RFC 8693 §2.2.2
    assert "not authorised to migrate" in refused.value.description


async def test_primary_profile_names_the_partner(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        tokens = await client.login(PRIMARY_ISSUER, "alice", ALICE_PASSWORD)
        profile = await client.fetch_profile(systems.primary.cms.server.url, ALICE_MCPTT_ID,
                                             tokens.access_token)
    partner = profile.partner("partner")
    assert partner is not None and partner.authorised_to_migrate
    assert partner.idms_audience == PARTNER_ISSUER
    assert partner.idms_token_endpoint == f"{PARTNER_ISSUER}/token"
    assert partner.partner_impu == ALICE_PARTNER_ID

"""Refresh at the partner IdMS and the token lifetimes, without sockets (RFC 6749 §6,
RFC 9700 §4.14.2, RFC 7523, 33.180 B.5/B.7/B.8).

Both IdMSs are :class:`IdentityProvider` objects driven by ``now``: the primary issues
alice's access token and security token, the partner turns the security token into a
partner access token with a refresh token, and every refresh happens at an exact offset.
The journal is the real one, on disk, so recovery reads what a restart would.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.identity import ACCESS_TOKEN_TYP
from emulator.identity import GRANT_JWT_BEARER
from emulator.identity import GRANT_TOKEN_EXCHANGE
from emulator.identity import MC_SCOPES
from emulator.identity import SECURITY_TOKEN_TYP
from emulator.identity import TOKEN_TYPE_ACCESS_TOKEN
from emulator.identity import Credential
from emulator.identity import IdentityProvider
from emulator.identity import MigrationProfile
from emulator.identity import OidcClient
from emulator.identity import SigningKey
from emulator.identity import TokenError
from emulator.identity import TokenIssuer
from emulator.identity import TokenValidator
from emulator.identity import UserAccount
from emulator.identity import VerificationKey
from emulator.identity import hash_password
from emulator.identity import issue_signing_certificate
from emulator.identity import make_ca
from emulator.identity import migration_profile_index
from emulator.identity import s256_challenge
from emulator.identity import verification_key
from emulator.refusal import Refusal
from nodes.journal import Journal
from tests.support.identity import ALICE_MCPTT_ID
from tests.support.identity import ALICE_PARTNER_ID
from tests.support.identity import CLIENT_ID
from tests.support.identity import PARTNER_ISSUER
from tests.support.identity import PRIMARY_ISSUER
from tests.support.identity import REDIRECT_URI

NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
T = NOW.timestamp()
OTHER_CLIENT = "other-mcx-client"
PASSWORD = "alice-secret"
VERIFIER = "v" * 43  # RFC 7636 §4.1: 43 unreserved characters at least
LOGIN_SCOPE = ("openid", "3gpp:mc:ptt_service", "3gpp:mc:data_service",
               "3gpp:mc:ptt_config_management_service")
GRANTED = ("3gpp:mc:ptt_service", "3gpp:mc:ptt_config_management_service",
           "3gpp:mc:data_service")  # the login's MC scopes, in MC_SCOPES order
PARTNER_IDS = {"mcptt_id": ALICE_PARTNER_ID,
               "mcdata_id": "sip:alice.visitor.data@mcx.partner.example"}


@dataclasses.dataclass(frozen=True)
class Keys:
    """One IdMS's signing key and the verification key others are provisioned with."""

    signing: SigningKey
    verification: VerificationKey

    @classmethod
    def make(cls, system: str, issuer: str) -> Keys:
        ca = make_ca(f"MC system {system}", now=NOW)
        credential: Credential = issue_signing_certificate(
            ca, f"{system} IdMS token signing", now=NOW, algorithm="ES256")
        return cls(SigningKey.from_credential(credential),
                   verification_key(issuer, credential.certificate, [ca.certificate], now=NOW))


@pytest.fixture(scope="module")
def primary_keys() -> Keys:
    return Keys.make("primary", PRIMARY_ISSUER)


@pytest.fixture(scope="module")
def partner_keys() -> Keys:
    return Keys.make("partner", PARTNER_ISSUER)


def _clients() -> dict[str, OidcClient]:
    return {c: OidcClient(c, (REDIRECT_URI,)) for c in (CLIENT_ID, OTHER_CLIENT)}


def primary_idms(keys: Keys, **alice: Any) -> IdentityProvider:
    account = UserAccount("alice", hash_password(PASSWORD), {"mcptt_id": ALICE_MCPTT_ID},
                          migration_targets=(PARTNER_ISSUER,), **alice)
    return IdentityProvider(TokenIssuer(PRIMARY_ISSUER, keys.signing), _clients(),
                            {"alice": account}, "https://mcx.primary.example")


def alice_profile(**more: Any) -> MigrationProfile:
    return MigrationProfile(PRIMARY_ISSUER, "alice", ALICE_MCPTT_ID, "alice.visitor",
                            PARTNER_IDS, **more)


def partner_idms(keys: Keys, primary: Keys, *profiles: MigrationProfile,
                 journal: Journal | None = None) -> IdentityProvider:
    provider = IdentityProvider(
        TokenIssuer(PARTNER_ISSUER, keys.signing), _clients(), {},
        "https://mcx.partner.example", trusted_primaries=TokenValidator([primary.verification]),
        migration_profiles=migration_profile_index(profiles or (alice_profile(),)))
    if journal is not None:
        provider.record = _recorder(journal)
    return provider


def _recorder(journal: Journal) -> Any:
    """What IdmsNode does with ``record``: every change through to the journal."""
    def record(table: str, key: str, value: object) -> None:
        if value is None:
            journal.delete(table, key)
        else:
            journal.put(table, key, value)
    return record


def login(primary: IdentityProvider, now: float) -> dict[str, Any]:
    """Authorization code + PKCE at the primary (33.180 B.4), sans-IO."""
    request = primary.check_authorization_request({
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
        "scope": " ".join(LOGIN_SCOPE), "state": "s", "code_challenge": s256_challenge(VERIFIER),
        "code_challenge_method": "S256"})
    location = primary.issue_code(request, primary.authenticate("alice", PASSWORD), now=now)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    return primary.token({"grant_type": "authorization_code", "client_id": CLIENT_ID,
                          "code": code, "redirect_uri": REDIRECT_URI,
                          "code_verifier": VERIFIER}, now=now)


def security_token(primary: IdentityProvider, now: float) -> dict[str, Any]:
    """RFC 8693 token exchange at the primary (33.180 B.7.2)."""
    return primary.token({
        "grant_type": GRANT_TOKEN_EXCHANGE, "client_id": CLIENT_ID,
        "subject_token": login(primary, now)["access_token"],
        "subject_token_type": TOKEN_TYPE_ACCESS_TOKEN, "resource": PARTNER_ISSUER}, now=now)


def migrate(primary: IdentityProvider, partner: IdentityProvider, now: float
            ) -> dict[str, Any]:
    """RFC 7523 jwt-bearer at the partner: the partner access token and its refresh token."""
    return partner.token({"grant_type": GRANT_JWT_BEARER, "client_id": CLIENT_ID,
                          "assertion": security_token(primary, now)["access_token"]}, now=now)


def refresh(idms: IdentityProvider, token: str, now: float, *, client_id: str = CLIENT_ID,
            scope: str | None = None) -> dict[str, Any]:
    form = {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": token}
    if scope is not None:
        form["scope"] = scope
    return idms.token(form, now=now)


def partner_claims(keys: Keys, answer: dict[str, Any], now: float) -> dict[str, Any]:
    return TokenValidator([keys.verification]).validate(
        answer["access_token"], now=now, typ=ACCESS_TOKEN_TYP, issuer=PARTNER_ISSUER,
        audience="https://mcx.partner.example")


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    kept = Journal(tmp_path / "partner.idms.journal")
    kept.open()
    yield kept
    kept.close()


# ------------------------------------------------------------- partner refresh
def test_partner_refresh_issues_a_new_partner_token_with_the_same_claims(
        primary_keys: Keys, partner_keys: Keys) -> None:
    partner = partner_idms(partner_keys, primary_keys)
    first = migrate(primary_idms(primary_keys), partner, T)
    assert first["refresh_token"]  # RFC 6749 §5.1: issued with the partner access token
    second = refresh(partner, first["refresh_token"], T + 1800)
    before, after = (partner_claims(partner_keys, first, T),
                     partner_claims(partner_keys, second, T + 1800))
    # Rotation (RFC 9700 §4.14.2): a new refresh token and a new, later access token.
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert after["iat"] == before["iat"] + 1800
    # Still a *partner* access token for the migrant, from the migration profile.
    same = ("iss", "sub", "aud", "client_id", "scope", "mcptt_id", "mcdata_id",
            "primary_iss", "primary_mcptt_id")
    assert {k: after[k] for k in same} == {k: before[k] for k in same}
    assert after["sub"] == "alice.visitor" and after["mcptt_id"] == ALICE_PARTNER_ID
    assert (after["primary_iss"], after["primary_mcptt_id"]) == (PRIMARY_ISSUER, ALICE_MCPTT_ID)
    assert second["scope"] == first["scope"] == after["scope"] == " ".join(GRANTED)
    assert (second["token_type"], second["expires_in"]) == ("Bearer", 3600)
    assert "id_token" not in second  # no openid at the partner: the migrant has no login here


def test_a_rotated_partner_refresh_token_is_refused(primary_keys: Keys,
                                                    partner_keys: Keys) -> None:
    partner = partner_idms(partner_keys, primary_keys)
    first = migrate(primary_idms(primary_keys), partner, T)
    second = refresh(partner, first["refresh_token"], T + 10)
    with pytest.raises(Refusal) as refused:
        refresh(partner, first["refresh_token"], T + 20)
    assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
    assert "refresh token unknown, used or expired" in refused.value.description
    # The reuse did not cost the current holder its token.
    assert refresh(partner, second["refresh_token"], T + 30)["refresh_token"]


def test_a_partner_refresh_token_expires(primary_keys: Keys, partner_keys: Keys) -> None:
    partner = partner_idms(partner_keys, primary_keys)
    first = migrate(primary_idms(primary_keys), partner, T)
    with pytest.raises(Refusal) as refused:
        refresh(partner, first["refresh_token"], T + partner.refresh_token_lifetime + 1)
    assert refused.value.error == "invalid_grant"


def test_partner_refresh_by_another_client_is_refused_and_does_not_consume(
        primary_keys: Keys, partner_keys: Keys) -> None:
    partner = partner_idms(partner_keys, primary_keys)
    first = migrate(primary_idms(primary_keys), partner, T)
    with pytest.raises(Refusal) as refused:
        refresh(partner, first["refresh_token"], T + 10, client_id=OTHER_CLIENT)
    assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
    assert "issued to another client" in refused.value.description
    with pytest.raises(Refusal) as unknown:
        refresh(partner, first["refresh_token"], T + 10, client_id="nobody")
    assert (unknown.value.status, unknown.value.error) == (401, "invalid_client")
    assert refresh(partner, first["refresh_token"], T + 20)["refresh_token"]


@pytest.mark.parametrize("asked", [
    "3gpp:mc:data_service",
    "3gpp:mc:data_service 3gpp:mc:ptt_service",  # any order: granted in MC_SCOPES order
    "3gpp:mc:ptt_service 3gpp:mc:ptt_service",
])
def test_partner_refresh_narrows_the_scope(primary_keys: Keys, partner_keys: Keys,
                                           asked: str) -> None:
    partner = partner_idms(partner_keys, primary_keys)
    first = migrate(primary_idms(primary_keys), partner, T)
    narrowed = refresh(partner, first["refresh_token"], T + 10, scope=asked)
    wanted = tuple(s for s in MC_SCOPES if s in asked.split())
    assert narrowed["scope"] == partner_claims(partner_keys, narrowed, T + 10)["scope"] \
        == " ".join(wanted)
    # The rotated token carries the narrowed grant: it cannot widen back (RFC 6749 §6).
    with pytest.raises(Refusal) as refused:
        refresh(partner, narrowed["refresh_token"], T + 20, scope=" ".join(GRANTED))
    assert refused.value.error == "invalid_scope"


@pytest.mark.parametrize("asked", [
    "3gpp:mc:ptt_service 3gpp:mc:video_service",  # video: the primary never authorised it
    "openid",
    "",
])
def test_partner_refresh_widening_the_scope_is_refused_and_does_not_consume(
        primary_keys: Keys, partner_keys: Keys, asked: str) -> None:
    partner = partner_idms(partner_keys, primary_keys)
    first = migrate(primary_idms(primary_keys), partner, T)
    with pytest.raises(Refusal) as refused:
        refresh(partner, first["refresh_token"], T + 10, scope=asked)
    assert (refused.value.status, refused.value.error) == (400, "invalid_scope")
    assert refresh(partner, first["refresh_token"], T + 20)["scope"] == " ".join(GRANTED)


def test_partner_refresh_keeps_within_the_current_migration_profile(
        primary_keys: Keys, partner_keys: Keys) -> None:
    partner = partner_idms(partner_keys, primary_keys)
    first = migrate(primary_idms(primary_keys), partner, T)
    # The partner reprovisions alice for PTT only: a refresh grants no more than that.
    narrower = alice_profile(scopes=("3gpp:mc:ptt_service",))
    partner.migration_profiles = migration_profile_index([narrower])
    assert refresh(partner, first["refresh_token"], T + 10)["scope"] == "3gpp:mc:ptt_service"


def test_partner_refresh_after_the_migration_profile_was_removed_is_refused(
        primary_keys: Keys, partner_keys: Keys) -> None:
    partner = partner_idms(partner_keys, primary_keys)
    first = migrate(primary_idms(primary_keys), partner, T)
    partner.migration_profiles = {}
    with pytest.raises(Refusal) as refused:
        refresh(partner, first["refresh_token"], T + 10)
    assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
    assert f"no migration profile for alice of {PRIMARY_ISSUER}" in refused.value.description
    # The grant died with the profile: giving the profile back does not revive it.
    partner.migration_profiles = migration_profile_index([alice_profile()])
    with pytest.raises(Refusal, match="refresh token unknown"):
        refresh(partner, first["refresh_token"], T + 20)


def test_a_local_users_refresh_is_not_a_partner_token(primary_keys: Keys,
                                                      partner_keys: Keys) -> None:
    """The same refresh grant at the primary: alice's own account, an ID token, no
    project-defined migration claims."""
    primary = primary_idms(primary_keys)
    tokens = login(primary, T)
    renewed = refresh(primary, tokens["refresh_token"], T + 10)
    claims = TokenValidator([primary_keys.verification]).validate(
        renewed["access_token"], now=T + 10, typ=ACCESS_TOKEN_TYP, issuer=PRIMARY_ISSUER)
    assert claims["sub"] == "alice" and claims["mcptt_id"] == ALICE_MCPTT_ID
    assert "primary_iss" not in claims and renewed["id_token"]
    primary.users = {}
    with pytest.raises(Refusal) as refused:
        refresh(primary, renewed["refresh_token"], T + 20)
    assert refused.value.error == "invalid_grant"
    assert "no account alice any more" in refused.value.description


# ------------------------------------------------------------ across a restart
def test_a_partner_refresh_token_survives_a_restart(
        primary_keys: Keys, partner_keys: Keys, journal: Journal) -> None:
    first = migrate(primary_idms(primary_keys), partner_idms(partner_keys, primary_keys,
                                                             journal=journal), T)
    journal.close()
    # The row on disk names the migration profile the token was granted under.
    reopened = Journal(journal.path)
    tables = reopened.open()
    (row,) = tables["refresh"].values()
    assert row == {"client_id": CLIENT_ID, "username": "alice.visitor",
                   "scope": list(GRANTED), "expires_at": T + 86400,
                   "migration_profile": [PRIMARY_ISSUER, "alice"]}
    restarted = partner_idms(partner_keys, primary_keys, journal=reopened)
    assert restarted.recover(tables, now=T + 60) == 2  # the refresh token and the replay jti
    answer = refresh(restarted, first["refresh_token"], T + 60)
    claims = partner_claims(partner_keys, answer, T + 60)
    assert (claims["sub"], claims["primary_iss"], claims["primary_mcptt_id"]) == (
        "alice.visitor", PRIMARY_ISSUER, ALICE_MCPTT_ID)
    # Rotation was recorded too: after another restart only the new token is live.
    reopened.close()
    again = Journal(journal.path)
    later = partner_idms(partner_keys, primary_keys)
    later.recover(again.open(), now=T + 120)
    again.close()
    with pytest.raises(Refusal, match="refresh token unknown"):
        refresh(later, first["refresh_token"], T + 120)
    assert refresh(later, answer["refresh_token"], T + 120)["refresh_token"]


def test_a_refresh_row_of_an_older_life_without_the_profile_key_is_a_local_users(
        primary_keys: Keys) -> None:
    primary = primary_idms(primary_keys)
    tables: dict[str, dict[str, Any]] = {}
    primary.record = lambda table, key, value: tables.setdefault(table, {}).update({key: value})
    tokens = login(primary, T)
    (row,) = tables["refresh"].values()
    assert row.pop("migration_profile") is None  # what rows looked like before
    restarted = primary_idms(primary_keys)
    assert restarted.recover(tables, now=T + 60) == 1
    assert refresh(restarted, tokens["refresh_token"], T + 60)["id_token"]


@pytest.mark.parametrize("migration_profile", [
    "alice", ["alice"], [PRIMARY_ISSUER, 7], {"iss": PRIMARY_ISSUER}])
def test_a_refresh_row_with_a_damaged_profile_key_is_skipped(
        primary_keys: Keys, partner_keys: Keys, migration_profile: object) -> None:
    partner = partner_idms(partner_keys, primary_keys)
    row = {"client_id": CLIENT_ID, "username": "alice.visitor", "scope": list(GRANTED),
           "expires_at": T + 600, "migration_profile": migration_profile}
    assert partner.recover({"refresh": {"0" * 64: row, "1" * 64: "not a row"}}, now=T) == 0


def test_a_refresh_row_of_a_removed_migration_profile_is_not_recovered(
        primary_keys: Keys, partner_keys: Keys, journal: Journal) -> None:
    first = migrate(primary_idms(primary_keys), partner_idms(partner_keys, primary_keys,
                                                             journal=journal), T)
    elsewhere = MigrationProfile(PRIMARY_ISSUER, "bob", "sip:bob@mcx.primary.example",
                                 "bob.visitor", {"mcptt_id": "sip:bob.visitor@partner"})
    restarted = partner_idms(partner_keys, primary_keys, elsewhere)
    assert restarted.recover(journal.tables, now=T + 60) == 1  # the replay jti only
    with pytest.raises(Refusal, match="refresh token unknown"):
        refresh(restarted, first["refresh_token"], T + 60)


# ------------------------------------------------------------------- lifetimes
@pytest.mark.parametrize("lifetime", [60, 600, 1800])
def test_the_users_security_token_lifetime_sets_exp(primary_keys: Keys,
                                                    lifetime: int) -> None:
    primary = primary_idms(primary_keys, security_token_lifetime=lifetime)
    answer = security_token(primary, T)
    claims = TokenValidator([primary_keys.verification]).validate(
        answer["access_token"], now=T, typ=SECURITY_TOKEN_TYP, audience=PARTNER_ISSUER)
    assert claims["exp"] - claims["iat"] == answer["expires_in"] == lifetime


def test_the_security_token_lifetime_defaults_to_600_seconds() -> None:
    assert UserAccount("alice", "", {}).security_token_lifetime == 600


def test_a_security_token_born_expired_is_refused_by_the_partner(
        primary_keys: Keys, partner_keys: Keys) -> None:
    primary = primary_idms(primary_keys, security_token_lifetime=-120)
    with pytest.raises(Refusal) as refused:
        migrate(primary, partner_idms(partner_keys, primary_keys), T)
    assert refused.value.error == "invalid_grant"
    assert "token expired 120 s ago" in refused.value.description


@pytest.mark.parametrize("lifetime", [None, 300])
def test_the_migration_profile_sets_the_partner_token_lifetime(
        primary_keys: Keys, partner_keys: Keys, lifetime: int | None) -> None:
    partner = partner_idms(partner_keys, primary_keys,
                           alice_profile(access_token_lifetime=lifetime))
    expected = partner.access_token_lifetime if lifetime is None else lifetime
    first = migrate(primary_idms(primary_keys), partner, T)
    second = refresh(partner, first["refresh_token"], T + 100)
    for answer, at in ((first, T), (second, T + 100)):
        claims = partner_claims(partner_keys, answer, at)
        assert claims["exp"] - claims["iat"] == answer["expires_in"] == expected
    # A short partner token really is short: past it (and the leeway) it is refused, and
    # the refresh token is how the migrant carries on.
    if lifetime is not None:
        with pytest.raises(TokenError, match="token expired"):
            partner_claims(partner_keys, first, T + lifetime + 31)
        assert refresh(partner, second["refresh_token"], T + lifetime + 31)["access_token"]


"""Attack battery against the identity servers (33.180 Annex B, RFC 8725, RFC 6749/7636).

Every attack is refused with an OAuth/Bearer error code and a description
saying why, and every test then runs the genuine migration flow to show the
servers kept working.  Forged tokens are tried on the wire at the three
places that take a token (the partner IdMS jwt-bearer grant, the primary
IdMS token exchange, the CMS bearer) and at the :class:`TokenValidator`.

The *forger* holds what an attacker can hold (the primary's public
certificate and kid, a rogue CA of its own) and, for the claim checks only
validator logic can catch (expired, wrong iss, ...), the real primary
signing key standing in for a buggy or compromised issuer.  A baseline test
shows its untampered token is accepted everywhere, so each refusal is due to
the one thing the attack changed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator.identity import ACCESS_TOKEN_TYP
from emulator.identity import CLAIM_MIGRATION_PARTNER
from emulator.identity import SECURITY_TOKEN_TYP
from emulator.identity import Credential
from emulator.identity import MigrationProfile
from emulator.identity import SigningKey
from emulator.identity import TokenError
from emulator.identity import TokenIssuer
from emulator.identity import TokenValidator
from emulator.identity import TrustError
from emulator.identity import issue_signing_certificate
from emulator.identity import kid_for
from emulator.identity import make_ca
from emulator.identity import s256_challenge
from emulator.identity import verification_key
from emulator.identity.tokens import MAX_TOKEN_BYTES
from emulator.keystore import SystemFiles
from emulator.keystore import load_trusted_issuers
from emulator.orchestration import create_system
from emulator.orchestration import provision
from emulator.refusal import Refusal
from emulator.transport.tls import client_context
from nodes import IdmsNode
from nodes.idm_client import IdmClient
from tests.support.identity import ALICE_MCPTT_ID
from tests.support.identity import ALICE_PARTNER_ID
from tests.support.identity import ALICE_PASSWORD
from tests.support.identity import CLIENT_ID
from tests.support.identity import PARTNER_ISSUER
from tests.support.identity import PRIMARY_ISSUER
from tests.support.identity import REDIRECT_URI
from tests.support.identity import Systems
from tests.support.identity import idms_plan
from tests.support.identity import two_systems

PRIMARY_TOKEN = f"{PRIMARY_ISSUER}/token"
PARTNER_TOKEN = f"{PARTNER_ISSUER}/token"
PRIMARY_RESOURCES = "https://mcx.primary.example"  # aud of the primary's access tokens
THIRD_IDMS = ("127.0.121.4", 9443)
THIRD_ISSUER = f"https://{THIRD_IDMS[0]}:{THIRD_IDMS[1]}"
BOB_MCPTT_ID = "sip:bob@mcx.primary.example"
SCOPE = "openid 3gpp:mc:ptt_service 3gpp:mc:ptt_config_management_service"

Claims = dict[str, Any]


# --------------------------------------------------------------- forging tools
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64json(value: object) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def compact(header: Claims, claims: Claims, sign: Callable[[bytes], bytes] | None = None) -> str:
    """A compact JWS built by hand (joserfc refuses to build most of these)."""
    signing_input = f"{_b64json(header)}.{_b64json(claims)}"
    signature = _b64(sign(signing_input.encode())) if sign is not None else ""
    return f"{signing_input}.{signature}"


def rs256(key: object) -> Callable[[bytes], bytes]:
    assert isinstance(key, rsa.RSAPrivateKey)
    return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())


@functools.cache
def rogue_signing() -> Credential:
    """A rogue CA's signing credential with exactly the primary's names (CA and signer)."""
    now = dt.datetime.now(dt.UTC)
    rogue_ca = make_ca("MC system primary", now=now)
    return issue_signing_certificate(rogue_ca, "primary IdMS token signing", now=now)


@dataclasses.dataclass(frozen=True)
class Forger:
    signing: Credential
    """The primary's real signing credential (its certificate is public)."""

    @property
    def kid(self) -> str:
        return kid_for(self.signing.certificate)

    def public_pem(self) -> bytes:
        return self.signing.certificate.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, typ: str, claims: Claims, *, kid: str | None = None,
             key: object = None) -> str:
        header = {"alg": "RS256", "typ": typ, "kid": self.kid if kid is None else kid}
        return compact(header, claims, rs256(key if key is not None else self.signing.key))


def security_claims(now: float) -> Claims:
    """What the primary puts in a security token for alice (33.180 B.8, plus the
    project-defined scope and migration partner)."""
    return {"iss": PRIMARY_ISSUER, "sub": "alice", "aud": [CLIENT_ID, PARTNER_ISSUER],
            "iat": int(now), "exp": int(now) + 600, "jti": secrets.token_urlsafe(12),
            "mcptt_id": ALICE_MCPTT_ID, "scope": "3gpp:mc:ptt_service",
            CLAIM_MIGRATION_PARTNER: PARTNER_ISSUER}


def access_claims(now: float) -> Claims:
    """What the primary puts in alice's access token (33.180 B.2.2)."""
    return {"iss": PRIMARY_ISSUER, "sub": "alice", "aud": PRIMARY_RESOURCES, "iat": int(now),
            "exp": int(now) + 3600, "jti": secrets.token_urlsafe(12), "client_id": CLIENT_ID,
            "scope": SCOPE, "mcptt_id": ALICE_MCPTT_ID}


# An attack turns the legitimate claims of a token kind into a hostile token.
Attack = Callable[[Forger, str, Claims], str]


def alg_none(forger: Forger, typ: str, claims: Claims) -> str:
    return compact({"alg": "none", "typ": typ, "kid": forger.kid}, claims)


def hs256_public_key_as_secret(forger: Forger, typ: str, claims: Claims) -> str:
    """The classic key confusion: HMAC keyed with the verifier's public key PEM."""
    secret = forger.public_pem()
    return compact({"alg": "HS256", "typ": typ, "kid": forger.kid}, claims,
                   lambda data: hmac.new(secret, data, hashlib.sha256).digest())


def unknown_kid(forger: Forger, typ: str, claims: Claims) -> str:
    return forger.sign(typ, claims, kid="0123456789abcdef")


def kid_injection(kid: str) -> Attack:
    return lambda forger, typ, claims: forger.sign(typ, claims, kid=kid)


def with_claims(**offsets: Any) -> Attack:
    """Claims changed: numbers are offsets from now for exp/nbf/iat, other values replace."""
    def attack(forger: Forger, typ: str, claims: Claims) -> str:
        now = int(time.time())
        changed = {k: now + v if k in ("exp", "nbf", "iat") else v for k, v in offsets.items()}
        return forger.sign(typ, {**claims, **changed})
    return attack


def rogue_key_with_real_kid(forger: Forger, typ: str, claims: Claims) -> str:
    return forger.sign(typ, claims, key=rogue_signing().key)


def tampered_payload(forger: Forger, typ: str, claims: Claims) -> str:
    header, _, signature = forger.sign(typ, claims).split(".")
    flipped = {**claims, "sub": "bob", "mcptt_id": BOB_MCPTT_ID}
    return f"{header}.{_b64json(flipped)}.{signature}"


def oversized(forger: Forger, typ: str, claims: Claims) -> str:
    return forger.sign(typ, {**claims, "padding": "A" * MAX_TOKEN_BYTES})


KID_INJECTIONS = [
    pytest.param("../../etc/passwd", id="kid-path-traversal"),
    pytest.param("https://evil.example/key", id="kid-url"),
    pytest.param("a/b", id="kid-slash"),
    pytest.param("%2e%2e", id="kid-percent-encoded-dots"),
]

# Attacks on any token kind: (attack, a regex for what the refusal must say).
TOKEN_ATTACKS = [
    pytest.param(alg_none, "algorithm 'none' is not allowed", id="alg-none"),
    pytest.param(hs256_public_key_as_secret, "algorithm 'HS256' is not allowed",
                 id="hs256-public-key-as-hmac-secret"),
    pytest.param(unknown_kid, "unknown kid '0123456789abcdef'", id="unknown-kid"),
    *[pytest.param(kid_injection(p.values[0]), "is not a plain key identifier", id=p.id)
      for p in KID_INJECTIONS],
    pytest.param(with_claims(iat=-660, exp=-45), r"token expired 4[5-9] s ago",
                 id="expired-45s-ago"),
    pytest.param(with_claims(nbf=60), "token not valid before", id="nbf-in-60s"),
    pytest.param(with_claims(iat=120, exp=720), "token issued in the future",
                 id="iat-in-120s"),
    pytest.param(with_claims(iss="https://idms.evil.example"),
                 r"iss 'https://idms\.evil\.example' is not the issuer key", id="wrong-iss"),
    pytest.param(rogue_key_with_real_kid, "signature check failed",
                 id="rogue-ca-key-with-real-kid"),
    pytest.param(tampered_payload, "signature check failed", id="tampered-payload"),
]
OVERSIZED = pytest.param(oversized, f"exceeds {MAX_TOKEN_BYTES}", id="oversized-token")
WRONG_AUD = pytest.param(with_claims(aud=[CLIENT_ID, THIRD_ISSUER]),
                         f"does not include '{PARTNER_ISSUER}'", id="aud-names-another-partner")
SECURITY_TOKEN_ATTACKS = [*TOKEN_ATTACKS, OVERSIZED, WRONG_AUD]
WITHIN_LEEWAY = [
    pytest.param(with_claims(iat=-620, exp=-20), id="expired-20s-ago"),
    pytest.param(with_claims(nbf=20), id="nbf-in-20s"),
]


# ------------------------------------------------------------ client helpers
def _client(systems: Systems, *extra_ca: bytes) -> IdmClient:
    cas = [systems.primary.material.ca.certificate_pem(),
           systems.partner.material.ca.certificate_pem(), *extra_ca]
    return IdmClient(CLIENT_ID, REDIRECT_URI, client_context(cas))


def _forger(systems: Systems) -> Forger:
    return Forger(systems.primary.material.signing)


async def _security_token(client: IdmClient, partner: str = PARTNER_ISSUER) -> str:
    tokens = await client.login(PRIMARY_ISSUER, "alice", ALICE_PASSWORD)
    return await client.exchange_for_partner(PRIMARY_TOKEN, tokens.access_token, partner)


async def still_serving(client: IdmClient, systems: Systems) -> None:
    """The genuine flow end to end: both IdMSs and both CMSs answer as before."""
    tokens = await client.login(PRIMARY_ISSUER, "alice", ALICE_PASSWORD)
    own = await client.fetch_profile(systems.primary.cms.server.url, ALICE_MCPTT_ID,
                                     tokens.access_token)
    assert own.mcptt_id == ALICE_MCPTT_ID
    security = await client.exchange_for_partner(PRIMARY_TOKEN, tokens.access_token,
                                                 PARTNER_ISSUER)
    answer = await client.partner_access_token(PARTNER_TOKEN, security)
    migrated = await client.fetch_profile(systems.partner.cms.server.url, ALICE_PARTNER_ID,
                                          answer["access_token"])
    assert migrated.migration_for == ALICE_MCPTT_ID


def _authorize_form(verifier: str, redirect_uri: str = REDIRECT_URI) -> dict[str, str]:
    return {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect_uri,
            "scope": SCOPE, "state": "st-1", "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256", "acr_values": "3gpp:acr:password"}


async def _code(client: IdmClient, verifier: str) -> str:
    """Log alice in at /authorize by hand; returns the authorization code."""
    form = {**_authorize_form(verifier), "username": "alice", "password": ALICE_PASSWORD}
    async with client.session.post(f"{PRIMARY_ISSUER}/authorize", data=form,
                                   allow_redirects=False) as answer:
        assert answer.status == 302
        location = answer.headers["Location"]
    assert location.startswith(f"{REDIRECT_URI}?")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]


async def _redeem(client: IdmClient, code: str, verifier: str,
                  redirect_uri: str = REDIRECT_URI) -> dict[str, Any]:
    return await client.token(PRIMARY_TOKEN, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "code_verifier": verifier})


# ------------------------------------------------- forged tokens on the wire
@pytest.mark.parametrize("target", ["partner-jwt-bearer", "primary-token-exchange", "cms"])
async def test_forger_baseline_is_accepted(tmp_path: Path, target: str) -> None:
    """Control: the forger's untampered token passes, so each refusal below is the attack's."""
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        forger, now = _forger(systems), time.time()
        if target == "partner-jwt-bearer":
            answer = await client.partner_access_token(
                PARTNER_TOKEN, forger.sign(SECURITY_TOKEN_TYP, security_claims(now)))
            assert answer["token_type"] == "Bearer"
        elif target == "primary-token-exchange":
            security = await client.exchange_for_partner(
                PRIMARY_TOKEN, forger.sign(ACCESS_TOKEN_TYP, access_claims(now)),
                PARTNER_ISSUER)
            assert security.count(".") == 2
        else:
            profile = await client.fetch_profile(
                systems.primary.cms.server.url, ALICE_MCPTT_ID,
                forger.sign(ACCESS_TOKEN_TYP, access_claims(now)))
            assert profile.mcptt_id == ALICE_MCPTT_ID


@pytest.mark.parametrize(("attack", "reason"), SECURITY_TOKEN_ATTACKS)
async def test_partner_idms_refuses_forged_security_token(
        tmp_path: Path, attack: Attack, reason: str) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        assertion = attack(_forger(systems), SECURITY_TOKEN_TYP, security_claims(time.time()))
        with pytest.raises(Refusal) as refused:
            await client.partner_access_token(PARTNER_TOKEN, assertion)
        await still_serving(client, systems)
    assert refused.value.status == 400
    assert refused.value.error == "invalid_grant"
    assert refused.value.description.startswith("security token refused: ")
    assert re.search(reason, refused.value.description), refused.value.description


@pytest.mark.parametrize("attack", WITHIN_LEEWAY)
async def test_partner_idms_accepts_clock_skew_within_leeway(
        tmp_path: Path, attack: Attack) -> None:
    """33.180 B.2.1: up to 30 s of clock skew is tolerated."""
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        assertion = attack(_forger(systems), SECURITY_TOKEN_TYP, security_claims(time.time()))
        answer = await client.partner_access_token(PARTNER_TOKEN, assertion)
    assert answer["token_type"] == "Bearer"
    assert answer["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"


@pytest.mark.parametrize(("attack", "reason"), [*TOKEN_ATTACKS, OVERSIZED])
async def test_primary_idms_refuses_forged_subject_token(
        tmp_path: Path, attack: Attack, reason: str) -> None:
    """RFC 8693 token exchange at the primary: the subject token is a forged access token."""
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        subject = attack(_forger(systems), ACCESS_TOKEN_TYP, access_claims(time.time()))
        with pytest.raises(Refusal) as refused:
            await client.exchange_for_partner(PRIMARY_TOKEN, subject, PARTNER_ISSUER)
        await still_serving(client, systems)
    assert refused.value.status == 400
    assert refused.value.error == "invalid_grant"
    assert refused.value.description.startswith("subject_token refused: ")
    assert re.search(reason, refused.value.description), refused.value.description


@pytest.mark.parametrize(("attack", "reason"), TOKEN_ATTACKS)
async def test_cms_refuses_forged_bearer_token(
        tmp_path: Path, attack: Attack, reason: str) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        bearer = attack(_forger(systems), ACCESS_TOKEN_TYP, access_claims(time.time()))
        with pytest.raises(Refusal) as refused:
            await client.fetch_profile(systems.primary.cms.server.url, ALICE_MCPTT_ID, bearer)
        await still_serving(client, systems)
    assert refused.value.status == 401  # RFC 6750 §3.1
    assert refused.value.error == "invalid_token"
    assert re.search(reason, refused.value.description), refused.value.description


# ------------------------------------------- the same attacks, sans IO
@pytest.fixture(scope="module")
def primary_signing() -> tuple[Credential, TokenValidator]:
    """The partner's view: the primary's signing credential and the provisioned validator."""
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("MC system primary", now=now)
    signing = issue_signing_certificate(ca, "primary IdMS token signing", now=now)
    key = verification_key(PRIMARY_ISSUER, signing.certificate, [ca.certificate], now=now)
    return signing, TokenValidator([key])


@pytest.mark.parametrize(("attack", "reason"), SECURITY_TOKEN_ATTACKS)
def test_validator_refuses_forged_security_token(
        primary_signing: tuple[Credential, TokenValidator], attack: Attack,
        reason: str) -> None:
    signing, validator = primary_signing
    forger = Forger(signing)
    token = attack(forger, SECURITY_TOKEN_TYP, security_claims(time.time()))
    with pytest.raises(TokenError) as refused:
        validator.validate(token, now=time.time(), typ=SECURITY_TOKEN_TYP,
                           audience=PARTNER_ISSUER)
    assert re.search(reason, refused.value.description), refused.value.description
    genuine = forger.sign(SECURITY_TOKEN_TYP, security_claims(time.time()))
    claims = validator.validate(genuine, now=time.time(), typ=SECURITY_TOKEN_TYP,
                                audience=PARTNER_ISSUER)
    assert claims["mcptt_id"] == ALICE_MCPTT_ID


@pytest.mark.parametrize("attack", WITHIN_LEEWAY)
def test_validator_accepts_clock_skew_within_leeway(
        primary_signing: tuple[Credential, TokenValidator], attack: Attack) -> None:
    signing, validator = primary_signing
    token = attack(Forger(signing), SECURITY_TOKEN_TYP, security_claims(time.time()))
    claims = validator.validate(token, now=time.time(), typ=SECURITY_TOKEN_TYP,
                                audience=PARTNER_ISSUER)
    assert claims["sub"] == "alice"


# ------------------------------------------------------ rogue CA, same names
def test_rogue_signing_certificate_with_the_right_name_is_not_provisioned(
        tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    primary = create_system(tmp_path, "primary", {}, now=now)
    rogue = rogue_signing()
    assert rogue.certificate.subject == primary.signing.certificate.subject
    assert rogue.certificate.issuer == primary.signing.certificate.issuer
    # (a) directly: the chain does not verify against the primary's CA.
    with pytest.raises(TrustError, match=r"is not trusted.*signature does not match"):
        verification_key(PRIMARY_ISSUER, rogue.certificate, [primary.ca.certificate], now=now)
    # (a) on disk: the certificate is swapped during the out-of-band transfer.
    trust = provision(tmp_path, "primary", "partner", PRIMARY_ISSUER)
    assert trust is not None
    (trust / "idms-signing.crt").write_bytes(rogue.certificate_pem())
    keys, refused_trust = load_trusted_issuers(SystemFiles(tmp_path, "partner").trust, now=now)
    assert keys == []
    assert "is not trusted" in refused_trust["primary"]
    assert "signature does not match" in refused_trust["primary"]
    # A correct provisioning afterwards is accepted.
    provision(tmp_path, "primary", "partner", PRIMARY_ISSUER)
    keys, refused_trust = load_trusted_issuers(SystemFiles(tmp_path, "partner").trust, now=now)
    assert refused_trust == {}
    assert [k.kid for k in keys] == [kid_for(primary.signing.certificate)]


# --------------------------------------------- signing certificate validity
DAY = dt.timedelta(days=1)


@pytest.mark.parametrize(("start", "days"), [
    pytest.param(-400 * DAY, 365, id="expired"),
    pytest.param(DAY, 365, id="not-yet-valid"),
])
def test_signing_certificate_outside_its_validity_is_not_provisioned(
        tmp_path: Path, start: dt.timedelta, days: int) -> None:
    now = dt.datetime.now(dt.UTC)
    # The CA is older than any of the windows tried, so only the signer's validity matters.
    create_system(tmp_path, "primary", {}, now=now - 500 * DAY,
                  signing_not_before=now + start, signing_days=days)
    provision(tmp_path, "primary", "partner", PRIMARY_ISSUER)
    keys, refused = load_trusted_issuers(SystemFiles(tmp_path, "partner").trust, now=now)
    assert keys == []
    assert "is not trusted" in refused["primary"]
    assert "not valid at validation time" in refused["primary"]
    # The same certificate provisioned inside its window is accepted.
    inside = now + start + DAY
    keys, refused = load_trusted_issuers(SystemFiles(tmp_path, "partner").trust, now=inside)
    assert refused == {} and len(keys) == 1


@pytest.mark.parametrize(("start", "token_at", "reason"), [
    pytest.param(-DAY, 2 * DAY, "has expired", id="expired-since-provisioning"),
    pytest.param(DAY, dt.timedelta(0), "is not yet valid", id="not-yet-valid"),
])
def test_token_outside_the_signing_certificate_window_is_refused(
        start: dt.timedelta, token_at: dt.timedelta, reason: str) -> None:
    """Provisioned while valid, the chain window still bounds every token's ``now``."""
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("MC system primary", now=now - 2 * DAY)
    signing = issue_signing_certificate(ca, "primary IdMS token signing", now=now,
                                        not_before=now + start, days=2)
    provisioned_at = now + start + dt.timedelta(hours=1)
    validator = TokenValidator([verification_key(PRIMARY_ISSUER, signing.certificate,
                                                 [ca.certificate], now=provisioned_at)])
    issuer = TokenIssuer(PRIMARY_ISSUER, SigningKey.from_credential(signing))
    at = (now + token_at).timestamp()
    token = issuer.security_token(sub="alice", client_id=CLIENT_ID, target_idms=PARTNER_ISSUER,
                                  now=at)
    with pytest.raises(TokenError, match=f"signing certificate .*primary IdMS token signing.* "
                                         f"{reason}"):
        validator.validate(token, now=at, typ=SECURITY_TOKEN_TYP, audience=PARTNER_ISSUER)
    inside = provisioned_at.timestamp()
    fresh = issuer.security_token(sub="alice", client_id=CLIENT_ID, target_idms=PARTNER_ISSUER,
                                  now=inside)
    assert validator.validate(fresh, now=inside, typ=SECURITY_TOKEN_TYP,
                              audience=PARTNER_ISSUER)["sub"] == "alice"


async def test_partner_refuses_primary_whose_signing_certificate_expired(
        tmp_path: Path) -> None:
    """Provisioned while valid, the primary's signing certificate runs out while the servers
    run (both IdMS clocks moved two days on); the primary keeps signing with it."""
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    async with two_systems(tmp_path, primary_signing_expires=expiry) as systems, \
            _client(systems) as client:
        assert systems.partner.refused_trust == {}
        for system in (systems.primary, systems.partner):
            system.idms.clock_offset = (2 * DAY).total_seconds()  # simulated: two days on
        security = await _security_token(client)
        with pytest.raises(Refusal) as refused:
            await client.partner_access_token(PARTNER_TOKEN, security)
        # The partner keeps serving its own users.
        carol = await client.login(PARTNER_ISSUER, "carol", "carol-secret")
        assert carol.access_token
    assert refused.value.error == "invalid_grant"
    assert "signing certificate CN=primary IdMS token signing" in refused.value.description
    assert refused.value.description.endswith("has expired")


# ----------------------------------------------------- replayed security tokens
async def test_security_token_replayed_to_the_same_partner(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        security = await _security_token(client)
        first = await client.partner_access_token(PARTNER_TOKEN, security)
        with pytest.raises(Refusal) as refused:
            await client.partner_access_token(PARTNER_TOKEN, security)
        await still_serving(client, systems)
    assert first["token_type"] == "Bearer"
    assert refused.value.error == "invalid_grant"
    assert "security token already used (replay)" in refused.value.description


@asynccontextmanager
async def third_idms(directory: Path) -> AsyncIterator[tuple[IdmsNode, bytes]]:
    """A second partner IdMS that also trusts the primary and knows alice."""
    now = dt.datetime.now(dt.UTC)
    material = create_system(directory, "third", {"idms": [THIRD_IDMS[0]]}, now=now)
    provision(directory, "primary", "third", PRIMARY_ISSUER)
    trusted, refused = load_trusted_issuers(SystemFiles(directory, "third").trust, now=now)
    assert refused == {} and len(trusted) == 1
    node = IdmsNode(idms_plan(directory, "third", THIRD_IDMS, accounts=(), migration=(
        MigrationProfile(PRIMARY_ISSUER, "alice", ALICE_MCPTT_ID, "alice.guest",
                         {"mcptt_id": "sip:alice.guest@mcx.third.example"}),)))
    await node.start()
    try:
        yield node, material.ca.certificate_pem()
    finally:
        await node.stop()


async def test_security_token_replayed_to_a_second_partner(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, third_idms(tmp_path) as (third, third_ca), \
            _client(systems, third_ca) as client:
        security = await _security_token(client)
        await client.partner_access_token(PARTNER_TOKEN, security)  # used where meant
        with pytest.raises(Refusal) as refused:
            await client.partner_access_token(f"{THIRD_ISSUER}/token", security)
        # Once alice is authorised for the third system, her own token for it is accepted:
        # the refusal was the audience, not the trust in the primary.
        users = dict(systems.primary.provider.users)
        users["alice"] = dataclasses.replace(
            users["alice"], migration_targets=(PARTNER_ISSUER, THIRD_ISSUER))
        systems.primary.provider.users = users
        own = await _security_token(client, THIRD_ISSUER)
        answer = await client.partner_access_token(f"{THIRD_ISSUER}/token", own)
        await still_serving(client, systems)
    assert refused.value.status == 400
    assert refused.value.error == "invalid_grant"
    assert f"does not include '{THIRD_ISSUER}'" in refused.value.description
    assert answer["token_type"] == "Bearer"
    assert third.requests >= 2


# ----------------------------------------------- the wrong kind of token
@pytest.mark.parametrize(("kind", "typ"), [
    pytest.param("access_token", ACCESS_TOKEN_TYP, id="access-token-as-security-token"),
    pytest.param("id_token", "JWT", id="id-token-as-security-token"),
])
async def test_primary_token_presented_as_security_token(
        tmp_path: Path, kind: str, typ: str) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        tokens = await client.login(PRIMARY_ISSUER, "alice", ALICE_PASSWORD)
        with pytest.raises(Refusal) as refused:
            await client.partner_access_token(PARTNER_TOKEN, tokens.raw[kind])
        await still_serving(client, systems)
    assert refused.value.error == "invalid_grant"
    assert f"token type '{typ}' where 'mcx-st+jwt' is required" in refused.value.description


async def test_security_token_presented_to_the_cms(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        security = await _security_token(client)
        with pytest.raises(Refusal) as refused:
            await client.fetch_profile(systems.primary.cms.server.url, ALICE_MCPTT_ID, security)
        await still_serving(client, systems)
    assert refused.value.status == 401
    assert refused.value.error == "invalid_token"
    assert "token type 'mcx-st+jwt' where 'at+jwt' is required" in refused.value.description


@pytest.mark.parametrize("authorization", [
    pytest.param(None, id="no-authorization-header"),
    pytest.param("Basic YWxpY2U6YWxpY2Utc2VjcmV0", id="basic-credentials"),
    pytest.param("Bearer ", id="empty-bearer"),
])
async def test_cms_requires_a_bearer_token(tmp_path: Path, authorization: str | None) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        url = (f"{systems.primary.cms.server.url}/org.3gpp.mcptt.user-profile/users/"
               f"{ALICE_MCPTT_ID}/mcptt-user-profile-1.xml")
        headers = {"Authorization": authorization} if authorization is not None else {}
        async with client.session.get(url, headers=headers) as response:
            status, body = response.status, await response.json()
            challenge = response.headers.get("WWW-Authenticate", "")
        await still_serving(client, systems)
    assert status == 401
    assert body == {"error": "invalid_request",
                    "error_description": "a Bearer access token is required"}
    assert challenge.startswith('Bearer error="invalid_request"')  # RFC 6750 §3


async def test_access_token_of_one_user_for_another_users_profile(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        bob = await client.login(PRIMARY_ISSUER, "bob", "bob-secret")
        with pytest.raises(Refusal) as refused:
            await client.fetch_profile(systems.primary.cms.server.url, ALICE_MCPTT_ID,
                                       bob.access_token)
        await still_serving(client, systems)
    assert refused.value.status == 403
    assert refused.value.error == "insufficient_scope"
    assert "a user may only read their own profile" in refused.value.description


# ------------------------------------------------ authorization code + PKCE
async def test_pkce_verifier_mismatch(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        verifier = secrets.token_urlsafe(48)
        code = await _code(client, verifier)
        with pytest.raises(Refusal) as refused:
            await _redeem(client, code, secrets.token_urlsafe(48))
        # One guess only: the code is gone even for the right verifier now.
        with pytest.raises(Refusal) as burned:
            await _redeem(client, code, verifier)
        await still_serving(client, systems)
    assert refused.value.status == 400
    assert refused.value.error == "invalid_grant"
    assert "PKCE code_verifier does not match the code_challenge" in refused.value.description
    assert burned.value.error == "invalid_grant"
    assert "already used" in burned.value.description


async def test_pkce_verifier_outside_the_rfc7636_alphabet(tmp_path: Path) -> None:
    """Regression: a non-ASCII verifier was a 500 (UnicodeEncodeError) instead of a refusal."""
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        verifier = secrets.token_urlsafe(48)
        code = await _code(client, verifier)
        with pytest.raises(Refusal) as refused:
            await _redeem(client, code, "é" * 43)
        # A malformed verifier is not a guess: the code still works with the right one.
        tokens = await _redeem(client, code, verifier)
        await still_serving(client, systems)
    assert refused.value.status == 400
    assert refused.value.error == "invalid_request"
    assert "code_verifier missing or malformed" in refused.value.description
    assert tokens["token_type"] == "Bearer"


async def test_authorization_code_reused(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        verifier = secrets.token_urlsafe(48)
        code = await _code(client, verifier)
        first = await _redeem(client, code, verifier)
        with pytest.raises(Refusal) as refused:
            await _redeem(client, code, verifier)
        await still_serving(client, systems)
    assert first["access_token"]
    assert refused.value.status == 400
    assert refused.value.error == "invalid_grant"
    assert "authorization code already used" in refused.value.description


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("redirect_uri", [
    pytest.param("https://evil.example/callback", id="other-host"),
    pytest.param(f"{REDIRECT_URI}?next=https://evil.example", id="extra-query"),
    pytest.param(f"{REDIRECT_URI}/../../evil", id="path-suffix"),
])
async def test_unregistered_redirect_uri_at_authorize_is_not_followed(
        tmp_path: Path, method: str, redirect_uri: str) -> None:
    """RFC 6749 §4.1.2.1: an unregistered redirect_uri gets a 400, never a redirect."""
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        form = _authorize_form(secrets.token_urlsafe(48), redirect_uri)
        if method == "POST":
            form.update(username="alice", password=ALICE_PASSWORD)
            request = client.session.post(f"{PRIMARY_ISSUER}/authorize", data=form,
                                          allow_redirects=False)
        else:
            request = client.session.get(f"{PRIMARY_ISSUER}/authorize", params=form,
                                         allow_redirects=False)
        async with request as response:
            status, body = response.status, await response.json()
            location = response.headers.get("Location")
        await still_serving(client, systems)
    assert status == 400
    assert location is None
    assert body["error"] == "invalid_request"
    assert "is not registered for mcx-client (exact match required)" in body["error_description"]


async def test_redirect_uri_mismatch_at_token(tmp_path: Path) -> None:
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        verifier = secrets.token_urlsafe(48)
        code = await _code(client, verifier)
        with pytest.raises(Refusal) as refused:
            await _redeem(client, code, verifier, "http://127.0.0.1/other-callback")
        await still_serving(client, systems)
    assert refused.value.status == 400
    assert refused.value.error == "invalid_grant"
    assert "redirect_uri does not match the authorization request" in refused.value.description


# ------------------------------------------------------------ oversized input
async def test_oversized_bearer_token_at_the_cms(tmp_path: Path) -> None:
    """A token just over the 16 kB cap reaches the validator and gets an RFC 6750 refusal;
    a header beyond the server's 20 kB line limit is refused before any handler runs."""
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        claims = {**access_claims(time.time()), "padding": "A" * 12_800}
        bearer = _forger(systems).sign(ACCESS_TOKEN_TYP, claims)
        assert MAX_TOKEN_BYTES < len(bearer) < 20 * 1024
        url = (f"{systems.primary.cms.server.url}/org.3gpp.mcptt.user-profile/users/"
               f"{ALICE_MCPTT_ID}/mcptt-user-profile-1.xml")
        async with client.session.get(url, headers={"Authorization": f"Bearer {bearer}"}) \
                as response:
            status, body = response.status, await response.json()
            challenge = response.headers.get("WWW-Authenticate", "")
        huge = oversized(_forger(systems), ACCESS_TOKEN_TYP, access_claims(time.time()))
        async with client.session.get(url, headers={"Authorization": f"Bearer {huge}"}) \
                as response:
            huge_status, huge_text = response.status, await response.text()
        await still_serving(client, systems)
    assert status == 401
    assert body["error"] == "invalid_token"
    assert f"exceeds {MAX_TOKEN_BYTES}" in body["error_description"]
    assert challenge.startswith('Bearer error="invalid_token"')
    assert huge_status == 400
    assert "mcptt-user-profile" not in huge_text


async def test_oversized_token_request_body_at_the_partner_idms(tmp_path: Path) -> None:
    """Beyond the 64 kB request cap the body is not even read."""
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "client_id": CLIENT_ID, "assertion": "A" * (100 * 1024)}
        async with client.session.post(PARTNER_TOKEN, data=form) as response:
            status, text = response.status, await response.text()
        await still_serving(client, systems)
    assert status == 413
    assert "Maximum request body size 65536 exceeded" in text


@pytest.mark.parametrize(("change", "error", "reason"), [
    # Validly signed by the primary, but for a migration it authorised elsewhere.
    ({CLAIM_MIGRATION_PARTNER: "https://elsewhere.example"}, "invalid_grant",
     "did not authorise migration to this partner"),
    ({CLAIM_MIGRATION_PARTNER: None}, "invalid_grant",
     "did not authorise migration to this partner"),
    # What the primary authorised, stated as nothing an MC service uses: no scope escalation.
    ({"scope": "openid profile"}, "invalid_scope", "nothing the primary authorised"),
    ({"scope": None}, "invalid_scope", "nothing the primary authorised"),
])
async def test_partner_grants_nothing_the_primary_did_not_authorise(
        tmp_path: Path, change: dict[str, object], error: str, reason: str) -> None:
    claims = security_claims(time.time())
    for key, value in change.items():
        if value is None:
            claims.pop(key)
        else:
            claims[key] = value
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        with pytest.raises(Refusal) as refused:
            await client.partner_access_token(
                PARTNER_TOKEN, _forger(systems).sign(SECURITY_TOKEN_TYP, claims))
        await still_serving(client, systems)
    assert (refused.value.status, refused.value.error) == (400, error)
    assert reason in refused.value.description


async def test_the_partner_finds_the_user_by_iss_and_sub_not_by_a_claimed_mcptt_id(
        tmp_path: Path) -> None:
    """33.180 B.8 guarantees iss and sub only: an mcptt_id claim naming the migrant does not
    make another primary user one."""
    claims = {**security_claims(time.time()), "sub": "bob"}  # claims alice's MCPTT ID
    async with two_systems(tmp_path) as systems, _client(systems) as client:
        with pytest.raises(Refusal) as refused:
            await client.partner_access_token(
                PARTNER_TOKEN, _forger(systems).sign(SECURITY_TOKEN_TYP, claims))
        answer = await client.partner_access_token(
            PARTNER_TOKEN, _forger(systems).sign(SECURITY_TOKEN_TYP, {
                k: v for k, v in security_claims(time.time()).items() if k != "mcptt_id"}))
    assert (refused.value.error, refused.value.description) == (
        "invalid_grant", f"no migration profile for bob of {PRIMARY_ISSUER}")
    payload = answer["access_token"].split(".")[1]
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert body["primary_mcptt_id"] == ALICE_MCPTT_ID  # from the partner's own profile

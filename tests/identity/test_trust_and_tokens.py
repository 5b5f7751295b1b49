"""Token validation policy and out-of-band trust, without sockets (33.180 B.2, §5.1.4.2).

Time is injected everywhere: certificates are made at ``NOW`` and tokens are
checked at exact offsets from it, so the boundaries are tested exactly.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws

from emulator.identity import ACCESS_TOKEN_TYP
from emulator.identity import SECURITY_TOKEN_TYP
from emulator.identity import Credential
from emulator.identity import SigningKey
from emulator.identity import TokenError
from emulator.identity import TokenIssuer
from emulator.identity import TokenValidator
from emulator.identity import VerificationKey
from emulator.identity import issue_signing_certificate
from emulator.identity import kid_for
from emulator.identity import make_ca
from emulator.identity import scopes_of
from emulator.identity import verification_key
from emulator.identity.tokens import HEADERS_REMEMBERED
from emulator.identity.tokens import ID_TOKEN_TYP
from emulator.identity.tokens import MAX_LEEWAY
from emulator.keystore import SystemFiles
from emulator.keystore import load_trusted_issuers
from emulator.orchestration.provisioning import create_system
from emulator.orchestration.provisioning import load_system
from emulator.orchestration.provisioning import provision

NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
T = NOW.timestamp()
ISSUER = "https://127.0.110.4:9443"
PARTNER = "https://127.0.120.4:9443"
CLIENT_ID = "mcx-client"


class Signer:
    """One IdMS signing credential with its issuer and the provisioned verification key."""

    def __init__(self, algorithm: str) -> None:
        self.ca = make_ca("MC system primary", now=NOW)
        self.credential: Credential = issue_signing_certificate(
            self.ca, "primary IdMS token signing", now=NOW, algorithm=algorithm)
        self.signing_key = SigningKey.from_credential(self.credential)
        self.issuer = TokenIssuer(ISSUER, self.signing_key)
        self.key: VerificationKey = verification_key(
            ISSUER, self.credential.certificate, [self.ca.certificate], now=NOW)

    def validator(self, **options: Any) -> TokenValidator:
        return TokenValidator([self.key], **options)

    def access_token(self, now: float = T, lifetime: int = 3600, **extra: Any) -> str:
        return self.issuer.access_token(sub="alice", client_id=CLIENT_ID,
                                        scope=["3gpp:mc:ptt_service"], now=now,
                                        audience="https://mcx.primary.example",
                                        lifetime=lifetime, extra=extra)


@pytest.fixture(scope="module")
def rs() -> Signer:
    return Signer("RS256")


@pytest.fixture(scope="module")
def es() -> Signer:
    return Signer("ES256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rs256_by_hand(signer: Signer, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """RS256 over arbitrary headers, which joserfc would vet."""
    key = signer.credential.key
    assert isinstance(key, rsa.RSAPrivateKey)
    signing_input = (f"{_b64(json.dumps(header).encode())}."
                     f"{_b64(json.dumps(claims).encode())}")
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def claims_at(now: float) -> dict[str, Any]:
    return {"iss": ISSUER, "sub": "alice", "aud": "https://mcx.primary.example",
            "iat": int(now), "exp": int(now) + 600}


# ------------------------------------------------------------------ leeway
@pytest.mark.parametrize("leeway", [MAX_LEEWAY + 1, 60, 3600, -1])
def test_leeway_above_30_seconds_cannot_be_configured(rs: Signer, leeway: int) -> None:
    with pytest.raises(ValueError, match=r"leeway must be within 0\.\.30 s"):
        rs.validator(leeway=leeway)


@pytest.mark.parametrize(("leeway", "late", "accepted"), [
    (0, 0, True), (0, 1, False), (10, 10, True), (10, 11, False),
    (MAX_LEEWAY, MAX_LEEWAY, True), (MAX_LEEWAY, MAX_LEEWAY + 1, False),
])
def test_leeway_bounds_expiry_exactly(rs: Signer, leeway: int, late: int,
                                      accepted: bool) -> None:
    validator = rs.validator(leeway=leeway)
    token = rs.access_token(lifetime=60)
    at = T + 60 + late
    if accepted:
        assert validator.validate(token, now=at, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"
    else:
        with pytest.raises(TokenError, match=f"token expired {late} s ago"):
            validator.validate(token, now=at, typ=ACCESS_TOKEN_TYP)


@pytest.mark.parametrize("lifetime", [60, 10 * 365 * 86400])
def test_valid_until_is_the_last_moment_validate_still_accepts(rs: Signer,
                                                               lifetime: int) -> None:
    """What a caller remembering a decision relies on: up to ``valid_until`` the token is
    accepted, a second later it is not, whether its ``exp`` ends it (with the leeway) or
    its signing certificate's end does (a token that would outlive it)."""
    validator = rs.validator(leeway=10)
    token = rs.access_token(lifetime=lifetime)
    until = validator.valid_until(validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP))
    assert until == min(T + lifetime + 10, rs.key.not_after)
    assert validator.validate(token, now=until, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"
    with pytest.raises(TokenError, match="expired"):
        validator.validate(token, now=until + 1, typ=ACCESS_TOKEN_TYP)


def test_default_leeway_is_the_maximum(rs: Signer) -> None:
    assert rs.validator().leeway == MAX_LEEWAY == 30


# -------------------------------------------------------- algorithm pinning
@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["RS256", "HS256"], ["PS256"]])
def test_only_asymmetric_supported_algorithms_can_be_pinned(
        rs: Signer, algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="algorithms not supported"):
        rs.validator(algorithms=algorithms)


def test_pinned_algorithm_refuses_the_other_one(rs: Signer, es: Signer) -> None:
    es_only = TokenValidator([rs.key, es.key], algorithms=["ES256"])
    with pytest.raises(TokenError, match=r"algorithm 'RS256' is not allowed \(pinned: ES256\)"):
        es_only.validate(rs.access_token(), now=T, typ=ACCESS_TOKEN_TYP)
    assert es_only.validate(es.access_token(), now=T, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"
    rs_only = TokenValidator([rs.key, es.key], algorithms=["RS256"])
    with pytest.raises(TokenError, match=r"algorithm 'ES256' is not allowed \(pinned: RS256\)"):
        rs_only.validate(es.access_token(), now=T, typ=ACCESS_TOKEN_TYP)
    assert rs_only.validate(rs.access_token(), now=T, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"


@pytest.mark.parametrize(("alg", "signed_by", "named_key"), [
    pytest.param("ES256", "es", "rs", id="es256-header-on-the-rsa-kid"),
    pytest.param("RS256", "rs", "es", id="rs256-header-on-the-ec-kid"),
])
def test_alg_must_be_the_algorithm_of_the_named_key(
        rs: Signer, es: Signer, alg: str, signed_by: str, named_key: str) -> None:
    signers = {"rs": rs, "es": es}
    signer, named = signers[signed_by], signers[named_key]
    header = {"alg": alg, "typ": ACCESS_TOKEN_TYP, "kid": named.key.kid}
    token = jws.serialize_compact(header, json.dumps(claims_at(T)).encode(),
                                  signer.signing_key.key, algorithms=[alg])
    validator = TokenValidator([rs.key, es.key])
    with pytest.raises(TokenError, match=f"algorithm {alg} does not match key {named.key.kid} "
                                         f"\\({named.key.algorithm}\\)"):
        validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP)


# ------------------------------------------------------------------- ES256
def test_es256_signing_keys_work_for_every_token_kind(es: Signer) -> None:
    assert es.signing_key.algorithm == es.key.algorithm == "ES256"
    jwk = es.signing_key.public_jwk()
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["kid"]) == ("EC", "P-256", "ES256",
                                                                 es.key.kid)
    assert "d" not in jwk  # the public half only
    validator = es.validator()
    tokens = {
        ID_TOKEN_TYP: es.issuer.id_token(sub="alice", client_id=CLIENT_ID, now=T),
        ACCESS_TOKEN_TYP: es.access_token(),
        SECURITY_TOKEN_TYP: es.issuer.security_token(sub="alice", client_id=CLIENT_ID,
                                                     target_idms=PARTNER, now=T),
    }
    for typ, token in tokens.items():
        assert validator.validate(token, now=T, typ=typ)["iss"] == ISSUER
        signature = token.split(".")[2]
        # RFC 7518 §3.4: R || S, 64 octets, not DER.
        assert len(base64.urlsafe_b64decode(signature + "==")) == 64
    assert validator.validate(tokens[SECURITY_TOKEN_TYP], now=T, typ=SECURITY_TOKEN_TYP,
                              audience=PARTNER)["aud"] == [CLIENT_ID, PARTNER]


# --------------------------------------------------------- forbidden headers
@pytest.mark.parametrize(("name", "value"), [
    ("jku", "https://evil.example/jwks.json"),
    ("x5u", "https://evil.example/cert.pem"),
    ("jwk", {"kty": "oct", "k": "c2VjcmV0"}),
    ("x5c", ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
    ("crit", ["exp"]),
])
def test_key_carrying_headers_are_refused(rs: Signer, name: str, value: Any) -> None:
    header = {"alg": "RS256", "typ": ACCESS_TOKEN_TYP, "kid": rs.key.kid}
    validator = rs.validator()
    control = rs256_by_hand(rs, header, claims_at(T))
    assert validator.validate(control, now=T, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"
    token = rs256_by_hand(rs, {**header, name: value}, claims_at(T))
    with pytest.raises(TokenError, match=f"JWS header '{name}' is not accepted: keys are "
                                         "provisioned, never taken from the token"):
        validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP)


# -------------------------------------------------------------- typ confusion
KINDS = [ID_TOKEN_TYP, ACCESS_TOKEN_TYP, SECURITY_TOKEN_TYP]


def _token_of(signer: Signer, typ: str) -> str:
    if typ == ID_TOKEN_TYP:
        return signer.issuer.id_token(sub="alice", client_id=CLIENT_ID, now=T)
    if typ == ACCESS_TOKEN_TYP:
        return signer.access_token()
    return signer.issuer.security_token(sub="alice", client_id=CLIENT_ID, target_idms=PARTNER,
                                        now=T)


@pytest.mark.parametrize("presented", KINDS)
@pytest.mark.parametrize("required", KINDS)
def test_one_token_kind_never_stands_in_for_another(rs: Signer, presented: str,
                                                    required: str) -> None:
    token = _token_of(rs, presented)
    validator = rs.validator()
    if presented == required:
        assert validator.validate(token, now=T, typ=required)["sub"] == "alice"
    else:
        expected = f"token type '{presented}' where '{required}' is required"
        with pytest.raises(TokenError, match=re.escape(expected)):
            validator.validate(token, now=T, typ=required)


@pytest.mark.parametrize("typ", [None, "at+JWT", "application/at+jwt", ""])
def test_missing_or_variant_typ_is_refused(rs: Signer, typ: str | None) -> None:
    header = {"alg": "RS256", "kid": rs.key.kid}
    if typ is not None:
        header["typ"] = typ
    with pytest.raises(TokenError, match=re.escape(f"token type {typ!r} where 'at+jwt' is "
                                                   "required")):
        rs.validator().validate(rs256_by_hand(rs, header, claims_at(T)), now=T,
                                typ=ACCESS_TOKEN_TYP)


# ---------------------------------------------------- numeric date claims
@pytest.mark.parametrize(("name", "value"), [
    ("exp", float("nan")), ("exp", float("inf")), ("iat", float("nan")),
    ("nbf", float("-inf")), ("exp", "2099-01-01"), ("exp", True),
])
def test_non_numeric_dates_are_refused(rs: Signer, name: str, value: Any) -> None:
    """Regression: NaN/Infinity (which json.loads accepts) made ``exp`` never expire."""
    token = rs.issuer.sign({**claims_at(T), name: value}, ACCESS_TOKEN_TYP)
    with pytest.raises(TokenError, match=f"claim '{name}' is not a number"):
        rs.validator().validate(token, now=T + 1, typ=ACCESS_TOKEN_TYP)


# ---------------------------------------------------------------- scopes
@pytest.mark.parametrize(("scope", "expected"), [
    ("3gpp:mc:ptt_service 3gpp:mc:data_service", {"3gpp:mc:ptt_service",
                                                   "3gpp:mc:data_service"}),
    ("  3gpp:mc:ptt_service  ", {"3gpp:mc:ptt_service"}),
    (["3gpp:mc:ptt_service", "3gpp:mc:data_service"], {"3gpp:mc:ptt_service",
                                                       "3gpp:mc:data_service"}),
    (["3gpp:mc:ptt_service", 7, None, {"x": 1}], {"3gpp:mc:ptt_service"}),
    ("", set()),
    (42, set()),
    ({"3gpp:mc:ptt_service": True}, set()),
])
def test_scopes_of_accepts_a_string_or_a_list(scope: Any, expected: set[str]) -> None:
    assert scopes_of({"scope": scope}) == expected


def test_scopes_of_without_scope_claim() -> None:
    assert scopes_of({}) == set()


@pytest.mark.parametrize("scope", ["3gpp:mc:ptt_service openid", ["openid",
                                                                  "3gpp:mc:ptt_service"]])
def test_required_scope_in_either_form(rs: Signer, scope: str | list[str]) -> None:
    token = rs.issuer.sign({**claims_at(T), "scope": scope}, ACCESS_TOKEN_TYP)
    validator = rs.validator()
    assert validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP,
                              required_scope="3gpp:mc:ptt_service")["sub"] == "alice"
    with pytest.raises(TokenError, match="scope lacks '3gpp:mc:video_service'"):
        validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP,
                           required_scope="3gpp:mc:video_service")


# ----------------------------------------------------- provisioning on disk
@pytest.fixture
def systems_dir(tmp_path: Path) -> Path:
    create_system(tmp_path, "primary", {"idms": ["127.0.110.4"]}, now=NOW)
    create_system(tmp_path, "partner", {"idms": ["127.0.120.4"]}, now=NOW)
    return tmp_path


def _trust(directory: Path) -> Path:
    return directory / "partner" / "trust" / "primary"


def test_normal_provisioning_copies_certificates_and_issuer_only(systems_dir: Path) -> None:
    trust = provision(systems_dir, "primary", "partner", ISSUER)
    assert trust == _trust(systems_dir)
    assert sorted(p.name for p in trust.iterdir()) == ["ca.crt", "idms-signing.crt", "issuer"]
    source = systems_dir / "primary"
    assert (trust / "ca.crt").read_bytes() == (source / "ca.crt").read_bytes()
    assert (trust / "idms-signing.crt").read_bytes() == (source / "idms-signing.crt").read_bytes()
    assert (trust / "issuer").read_text().strip() == ISSUER
    keys, refused = load_trusted_issuers(SystemFiles(systems_dir, "partner").trust, now=NOW)
    assert refused == {}
    [key] = keys
    assert key.issuer == ISSUER
    assert key.algorithm == "RS256"
    assert key.subject == "CN=primary IdMS token signing,O=MC system primary"
    assert key.kid == kid_for(load_system(systems_dir, "primary").signing.certificate)
    # The primary was given nothing about the partner.
    assert load_trusted_issuers(SystemFiles(systems_dir, "primary").trust, now=NOW) == ([], {})


def test_withhold_removes_an_earlier_provisioning(systems_dir: Path) -> None:
    provision(systems_dir, "primary", "partner", ISSUER)
    assert len(load_trusted_issuers(SystemFiles(systems_dir, "partner").trust, now=NOW)[0]) == 1
    assert provision(systems_dir, "primary", "partner", ISSUER, mode="withhold") is None
    assert not _trust(systems_dir).exists()
    assert load_trusted_issuers(SystemFiles(systems_dir, "partner").trust, now=NOW) == ([], {})


def test_corrupt_provisioning_yields_a_refusal_reason(systems_dir: Path) -> None:
    trust = provision(systems_dir, "primary", "partner", ISSUER, mode="corrupt")
    assert trust is not None
    # A broken transfer: still a parseable certificate, with the right names.
    damaged = x509.load_pem_x509_certificate((trust / "idms-signing.crt").read_bytes())
    assert damaged.subject.rfc4514_string() == (
        "CN=primary IdMS token signing,O=MC system primary")
    keys, refused = load_trusted_issuers(SystemFiles(systems_dir, "partner").trust, now=NOW)
    assert keys == []
    assert "is not trusted" in refused["primary"]
    assert "signature does not match" in refused["primary"]
    # Re-provisioning properly repairs it.
    provision(systems_dir, "primary", "partner", ISSUER)
    keys, refused = load_trusted_issuers(SystemFiles(systems_dir, "partner").trust, now=NOW)
    assert refused == {} and len(keys) == 1


def test_incomplete_provisioning_yields_a_refusal_reason(systems_dir: Path) -> None:
    trust = provision(systems_dir, "primary", "partner", ISSUER)
    assert trust is not None
    (trust / "ca.crt").unlink()
    keys, refused = load_trusted_issuers(SystemFiles(systems_dir, "partner").trust, now=NOW)
    assert keys == []
    assert "ca.crt" in refused["primary"]


def test_unknown_provisioning_mode_is_refused(systems_dir: Path) -> None:
    with pytest.raises(ValueError, match="mode must be one of normal, withhold, corrupt"):
        provision(systems_dir, "primary", "partner", ISSUER, mode="partial")
    assert not _trust(systems_dir).exists()


@pytest.mark.parametrize("mode", ["normal", "corrupt", "withhold"])
def test_trust_directory_never_holds_a_private_key(systems_dir: Path, mode: str) -> None:
    provision(systems_dir, "primary", "partner", ISSUER, mode=mode)
    source_keys = [p.read_bytes() for p in (systems_dir / "primary").rglob("*.key")]
    assert len(source_keys) == 3  # ca, idms-signing, tls/idms: there was something to leak
    trust_root = systems_dir / "partner" / "trust"
    copied = [p for p in trust_root.rglob("*") if p.is_file()] if trust_root.exists() else []
    assert not [p for p in copied if p.suffix == ".key"]
    for path in copied:
        content = path.read_bytes()
        assert b"PRIVATE KEY" not in content
        assert all(key not in content for key in source_keys)


# ------------------------------------------------- remembered signature checks
def test_a_remembered_token_is_still_judged_at_every_use(rs: Signer) -> None:
    """A token's second use skips the RSA check, never the checks that depend on time or
    on the caller: it expires, and a wrong audience or type is refused, as on first use."""
    validator = rs.validator(leeway=0)
    token = rs.access_token(lifetime=60)
    assert validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"
    assert validator.validate(token, now=T + 30, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"
    with pytest.raises(TokenError, match="expired"):
        validator.validate(token, now=T + 61, typ=ACCESS_TOKEN_TYP)
    with pytest.raises(TokenError, match="aud"):
        validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP, audience="https://other")
    with pytest.raises(TokenError, match="token type"):
        validator.validate(token, now=T, typ=SECURITY_TOKEN_TYP)
    # The claims handed out are the caller's own copy.
    validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP)["sub"] = "mallory"
    assert validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"


@pytest.mark.parametrize("remembered", [0, 2])
def test_a_validator_remembers_as_many_signature_checks_as_it_is_told(
        rs: Signer, remembered: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oldest check forgotten first; none kept at 0 (the MC server keeps few: it
    remembers its decisions instead)."""
    checks: list[str] = []
    deserialize = jws.deserialize_compact

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        checks.append(token)
        return deserialize(token, *args, **kwargs)

    monkeypatch.setattr("emulator.identity.tokens.jws.deserialize_compact", counting)
    validator = rs.validator(remembered=remembered)
    tokens = [rs.access_token(lifetime=60 + n) for n in range(3)]
    for token in (*tokens, tokens[2], tokens[1], tokens[0]):
        assert validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"
    # Kept: the last `remembered` checked; tokens[0] was crowded out and is checked again.
    assert len(checks) == (6 if remembered == 0 else 4)


def test_a_remembered_header_is_judged_at_every_use_and_others_cannot_crowd_it_out(
        rs: Signer) -> None:
    """The decoded JWS header is kept by its segment, never its verdict: once the signing
    certificate has expired the same header is refused; and a stream of forged headers,
    each refused, leaves the memo bounded and the good token valid."""
    validator = rs.validator()
    token = rs.access_token()
    assert validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"
    with pytest.raises(TokenError, match=r"certificate .* has expired"):
        validator.validate(token, now=rs.key.not_after + 1, typ=ACCESS_TOKEN_TYP)
    _, payload, signature = token.split(".")
    for n in range(3 * HEADERS_REMEMBERED):
        forged = _b64(json.dumps({"alg": "none", "typ": ACCESS_TOKEN_TYP, "n": n}).encode())
        with pytest.raises(TokenError, match="algorithm 'none'"):
            validator.validate(f"{forged}.{payload}.{signature}", now=T, typ=ACCESS_TOKEN_TYP)
    assert len(validator._headers) <= HEADERS_REMEMBERED  # type: ignore[attr-defined]
    assert validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"


def test_a_tampered_copy_of_a_remembered_token_is_refused(rs: Signer) -> None:
    validator = rs.validator()
    token = rs.access_token()
    validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP)
    header, payload, signature = token.split(".")
    forged = _b64(json.dumps({**json.loads(base64.urlsafe_b64decode(
        payload + "=" * (-len(payload) % 4))), "sub": "mallory"}).encode())
    with pytest.raises(TokenError, match="signature"):
        validator.validate(f"{header}.{forged}.{signature}", now=T, typ=ACCESS_TOKEN_TYP)
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(TokenError, match=r"signature|malformed"):
        validator.validate(f"{header}.{payload}.{flipped}", now=T, typ=ACCESS_TOKEN_TYP)


def test_a_token_with_a_character_outside_ascii_is_refused_not_crashed_on(rs: Signer) -> None:
    """A str token (an XML text, a header) may carry any character; the memo's digest must
    never meet one: refused as a token error, on first use and after a good one."""
    validator = rs.validator()
    token = rs.access_token()
    header, payload, signature = token.split(".")
    for hostile in (f"{header}.{payload}.{signature}é", f"{header}.{payload}\udcff.{signature}"):
        with pytest.raises(TokenError, match="not ASCII"):
            validator.validate(hostile, now=T, typ=ACCESS_TOKEN_TYP)
    assert validator.validate(token, now=T, typ=ACCESS_TOKEN_TYP)["sub"] == "alice"
    with pytest.raises(TokenError, match="not ASCII"):
        validator.validate(token + "é", now=T, typ=ACCESS_TOKEN_TYP)

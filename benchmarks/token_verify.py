#!/usr/bin/env python3
"""Partner access token verifications per second on ONE core, without sockets.

What a partner resource server (SIP core, CMS) does per request: validate
the partner access token (``typ`` at+jwt, ``iss``, scope) with the partner
IdMS's provisioned key.  The token is a real one: the primary's security
token redeemed at a partner :class:`IdentityProvider` through the RFC 7523
jwt-bearer grant, so it carries the same claims as in the running network.
Also timed: validating the security token itself (the partner IdMS's check)
and both with ES256 keys instead of RS256 for comparison.

    python benchmarks/token_verify.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.identity.oidc import GRANT_JWT_BEARER
from emulator.identity.oidc import IdentityProvider
from emulator.identity.oidc import MigrationProfile
from emulator.identity.oidc import OidcClient
from emulator.identity.oidc import migration_profile_index
from emulator.identity.pki import issue_signing_certificate
from emulator.identity.pki import make_ca
from emulator.identity.tokens import ACCESS_TOKEN_TYP
from emulator.identity.tokens import SECURITY_TOKEN_TYP
from emulator.identity.tokens import SigningKey
from emulator.identity.tokens import TokenIssuer
from emulator.identity.tokens import TokenValidator
from emulator.identity.trust import VerificationKey
from emulator.identity.trust import verification_key

PRIMARY_ISSUER = "https://127.0.10.4:9443"
PARTNER_ISSUER = "https://127.0.20.4:9443"
CLIENT_ID = "mcx-client"
PRIMARY_MCPTT_ID = "sip:alice@mcx.primary.example"
REQUIRED_SCOPE = "3gpp:mc:ptt_service"


def pin_to_one_core() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core}"


def idms(name: str, issuer: str, algorithm: str, now: dt.datetime
         ) -> tuple[TokenIssuer, VerificationKey]:
    """An IdMS signing key as create_system makes it, and its provisioned verification key."""
    ca = make_ca(f"MC system {name}", now=now)
    signing = issue_signing_certificate(ca, f"{name} IdMS token signing", now=now,
                                        algorithm=algorithm)
    key = verification_key(issuer, signing.certificate, [ca.certificate], now=now)
    return TokenIssuer(issuer, SigningKey.from_credential(signing)), key


def tokens(algorithm: str) -> dict[str, tuple[str, TokenValidator, dict[str, str]]]:
    """A security token and the partner access token it buys, with their validators."""
    now = dt.datetime.now(dt.UTC)
    t = now.timestamp()
    primary, primary_key = idms("primary", PRIMARY_ISSUER, algorithm, now)
    partner_issuer, partner_key = idms("partner", PARTNER_ISSUER, algorithm, now)
    partner = IdentityProvider(
        issuer=partner_issuer, clients={CLIENT_ID: OidcClient(CLIENT_ID, ())}, users={},
        resource_audience="https://mcx.partner.example",
        trusted_primaries=TokenValidator([primary_key]),
        migration_profiles=migration_profile_index([MigrationProfile(
            PRIMARY_ISSUER, "alice", PRIMARY_MCPTT_ID, "alice.visitor", {
                "mcptt_id": "sip:alice.visitor@mcx.partner.example",
                "mcdata_id": "sip:alice.visitor.data@mcx.partner.example",
                "mcvideo_id": "sip:alice.visitor.video@mcx.partner.example"})]))
    security = primary.security_token(
        sub="alice", client_id=CLIENT_ID, target_idms=PARTNER_ISSUER, now=t,
        extra={"mcptt_id": PRIMARY_MCPTT_ID, "mcdata_id": "sip:alice.data@mcx.primary.example",
               "mcvideo_id": "sip:alice.video@mcx.primary.example"})
    answer = partner.token({"grant_type": GRANT_JWT_BEARER, "client_id": CLIENT_ID,
                            "assertion": security}, now=t)
    return {
        "partner access token": (answer["access_token"], TokenValidator([partner_key]), {
            "typ": ACCESS_TOKEN_TYP, "issuer": PARTNER_ISSUER,
            "required_scope": REQUIRED_SCOPE}),
        "security token (partner IdMS check)": (security, TokenValidator([primary_key]), {
            "typ": SECURITY_TOKEN_TYP, "audience": PARTNER_ISSUER}),
    }


def rate(check: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Run ``check`` in batches for about ``seconds``; returns (count, elapsed)."""
    check()  # warm-up, and proof that it validates
    count, batch = 0, 100
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(batch):
            check()
        count += batch
    return count, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    print(f"token_verify: TokenValidator.validate, {pin_to_one_core()}, "
          f"{args.seconds:g} s per line")
    for algorithm in ("RS256", "ES256"):
        for label, (token, validator, options) in tokens(algorithm).items():
            now = time.time()

            def check(token: str = token, validator: TokenValidator = validator,
                      options: dict[str, str] = options, now: float = now) -> object:
                return validator.validate(token, now=now, **options)  # type: ignore[arg-type]

            count, elapsed = rate(check, args.seconds)
            print(f"{algorithm} {label:<36} {len(token):5d} B  "
                  f"{elapsed / count * 1e6:8.1f} us/op  {count / elapsed:9.0f} op/s")


if __name__ == "__main__":
    main()

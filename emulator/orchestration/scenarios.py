"""The scenario catalogue: the seed and its variants, each with what it must show.

A scenario is data: the :class:`~.plan.Faults` it injects, what the UE
does differently (``variant``), and, for a negative scenario, where and how
it must be refused (:class:`Expectation`).  :mod:`.driver` runs them.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from dataclasses import field

from .plan import Faults


@dataclass(frozen=True)
class Expectation:
    """Where and how a negative scenario must be refused."""

    step: str
    status: int
    error: str
    """OAuth error code, or the SIP Warning text / reason fragment."""
    reason: str
    """A fragment of the error description or reason phrase."""


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    faults: Faults = field(default_factory=Faults)
    expect: Expectation | None = None
    variant: str = "normal"
    """normal, direct, interconnection, forged, replay, unattached or restart: what the UE
    does (restart: the partner's MC server and SIP core are killed and revived after
    migration, and the user goes on)."""


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("default", "The seed: migration without interconnection (TR 23.700-90 7.X)"),
    Scenario("no-oob-provisioning", "The partner IdMS was never given the primary certificate",
             Faults(provision_mode="withhold"),
             Expectation("partner-token", 400, "invalid_grant", "no such key was provisioned")),
    Scenario("corrupt-oob-provisioning", "The certificate was damaged on its out-of-band way",
             Faults(provision_mode="corrupt"),
             Expectation("partner-token", 400, "invalid_grant", "no such key was provisioned")),
    Scenario("partner-profile-missing", "The partner MC system has no migration profile",
             Faults(drop_migration_profiles=True),
             Expectation("partner-register", 403, "101 service authorisation failed",
                         "no migration profile")),
    Scenario("migration-not-authorised", "The primary profile does not authorise migration",
             Faults(deny_migration=True),
             Expectation("security-token", 400, "invalid_target", "not authorised to migrate")),
    Scenario("expired-token", "The security token expired before it reached the partner",
             Faults(expired_security_tokens=True),
             Expectation("partner-token", 400, "invalid_grant", "token expired")),
    Scenario("forged-token", "The UE presents a partner access token it forged",
             expect=Expectation("partner-register", 403, "101 service authorisation failed",
                                "signature check failed"), variant="forged"),
    Scenario("replayed-security-token", "The security token is presented a second time",
             expect=Expectation("partner-token-replay", 400, "invalid_grant", "replay"),
             variant="replay"),
    Scenario("unattached-ue", "The UE sends SIP to the gateway without attaching",
             expect=Expectation("partner-register", 403, "", "not attached"),
             variant="unattached"),
    Scenario("direct", "NON-NORMATIVE: the partner MC server checks the security token itself",
             Faults(partner_mode="direct"), variant="direct"),
    Scenario("partner-restart", "The partner MC server and SIP core are killed (SIGKILL) "
             "after migration and restarted; they kept their state, the user goes on",
             variant="restart"),
    Scenario("partner-restart-amnesia", "As partner-restart, but the partner keeps nothing: "
             "the UEs re-register (no new login)", Faults(amnesia=True), variant="restart"),
    Scenario("with-interconnection", "Baseline 23.280 §10.6.3: the partner asks the primary",
             Faults(partner_mode="interconnection"), variant="interconnection"),
)}


def forge(token: str) -> str:
    """Re-sign ``token``'s header and claims with a key nobody provisioned (a forgery)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric import rsa

    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = claims.get("scope", "") + " 3gpp:mc:ptt_key_management_service"
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signature = key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"

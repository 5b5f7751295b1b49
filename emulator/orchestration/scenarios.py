"""The scenario catalogue: the seed and its variants, each with what it must show.

A scenario is data: the :class:`~.plan.Faults` it injects, what the UE
does differently (``variant``), and, for a negative scenario, where and how
it must be refused (:class:`Expectation`).  :mod:`.driver` runs them.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from dataclasses import field

from emulator.topology.model import Topology

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
    topology: str | None = None
    """The shipped topology the scenario needs, used instead of the default one."""
    variant: str = "normal"
    """normal, direct, interconnection, forged, replay, unattached, restart, refused or
    publish: what the UE does (restart: the partner's MC server and SIP core are killed
    and revived after migration, and the user goes on; refused: as normal, with the capture
    judged for a refusal after the 200; publish: it authorises by PUBLISH, 24.379 §7.3.3)."""


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("default", "The seed: migration without interconnection (TR 23.700-90 7.X)"),
    Scenario("no-oob-provisioning", "The partner IdMS was never given the primary certificate",
             Faults(provision_mode="withhold"),
             Expectation("partner-token", 400, "invalid_grant", "no such key was provisioned")),
    Scenario("corrupt-oob-provisioning", "The certificate was damaged on its out-of-band way",
             Faults(provision_mode="corrupt"),
             Expectation("partner-token", 400, "invalid_grant", "no such key was provisioned")),
    Scenario("partner-profile-missing", "The partner MC system has no migration profile "
             "for the user: its IdMS refuses the security token",
             Faults(drop_migration_profiles=True),
             Expectation("partner-token", 400, "invalid_grant", "no migration profile")),
    Scenario("mc-server-profile-missing", "Only the partner MC server lacks the profile: "
             "its own check (defence in depth) refuses after the 200 to REGISTER",
             Faults(drop_mc_server_profiles=True),
             Expectation("partner-register", 403, "101 service authorisation failed",
                         "no migration profile")),
    Scenario("migration-not-authorised", "The primary profile does not authorise migration",
             Faults(deny_migration=True),
             Expectation("security-token", 400, "invalid_target", "not authorised to migrate")),
    Scenario("expired-token", "The security token (well formed, 600 s) reaches the partner "
             "IdMS after its exp: the partner's clocks are 700 s on",
             Faults(partner_clock_offset=700.0),
             Expectation("partner-token", 400, "invalid_grant", "token expired")),
    Scenario("refused-after-registration", "The UE asked the partner for configuration "
             "management only, so its token authorises no MC service: 200 to REGISTER, then "
             "the MC server refuses the third-party REGISTER and the network de-registers "
             "the user (NOTIFY)",
             expect=Expectation("partner-register", 403, "101 service authorisation failed",
                                "scope lacks"), variant="refused"),
    Scenario("publish-authorisation", "Service authorisation by PUBLISH (Event: "
             "poc-settings) after a REGISTER without tokens", variant="publish"),
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
    Scenario("scope-escalation", "The primary never authorised MCVideo; the UE asks the "
             "partner for it anyway", Faults(primary_withholds=("3gpp:mc:video_service",)),
             variant="escalation"),
    Scenario("wrong-partner", "A security token the primary addressed to partner-b is shown "
             "to partner", expect=Expectation("partner-token", 400, "invalid_grant", "aud"),
             variant="wrong-partner", topology="two-partners"),
    Scenario("long-stay", "Short lifetimes (partner token 20 s, registration 30 s) and a "
             "75 s stay: the UE refreshes and re-registers before each runs out",
             Faults(partner_token_lifetime=20, partner_registration_expires=30, stay=75.0),
             variant="long-stay"),
    Scenario("deregister", "After its services, the migrated user de-registers through the "
             "gateway and detaches; a call to it is then refused", variant="deregister"),
    Scenario("return-home", "Migrate, stay, de-register, detach, go home: the UE refreshes "
             "its primary tokens, registers at home and calls a primary-local user",
             variant="return-home"),
    Scenario("with-interconnection", "Baseline 23.280 §10.6.3: the partner asks the primary",
             Faults(partner_mode="interconnection"), variant="interconnection"),
)}


def not_applicable(scenario: Scenario, topology: Topology) -> str | None:
    """Why ``scenario`` cannot run on ``topology``, or None.  Only a scenario that brings
    its own topology can miss something (the default one is swapped for it)."""
    partners = Counter((p.primary, p.user) for s in topology.systems
                       for p in s.migration_profiles)
    if scenario.variant == "wrong-partner" and max(partners.values(), default=0) < 2:
        return (f"it needs a user with migration profiles in two partner systems (topology "
                f"{scenario.topology}); {topology.name} has none")
    return None


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

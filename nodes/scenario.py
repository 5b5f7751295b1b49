"""The seed's scenario and its variants, run step by step with verdicts.

Each step names the clause it implements; the trace labels every message
with the step, so the ladder reads as the procedure.  A negative scenario
passes when the partner (or the primary) refuses at the expected step, for
the expected reason, and the refusal is visible on the wire.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from emulator import profile as profiles
from emulator.capture.analysis import crossings
from emulator.sip.events import Address
from emulator.sip.message import Response

from .idm_client import IdmError
from .network import Network, NetworkOptions
from .ue import Registration, UserEquipment

logger = logging.getLogger(__name__)


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
    options: dict[str, Any] = field(default_factory=dict)
    expect: Expectation | None = None
    variant: str = "normal"
    """normal, direct, interconnection, forged, replay or unattached: what the UE does."""


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("default", "The seed: migration without interconnection (TR 23.700-90 7.X)"),
    Scenario("no-oob-provisioning", "The partner IdMS was never given the primary certificate",
             {"provision_mode": "withhold"},
             Expectation("partner-token", 400, "invalid_grant", "no such key was provisioned")),
    Scenario("corrupt-oob-provisioning", "The certificate was damaged on its out-of-band way",
             {"provision_mode": "corrupt"},
             Expectation("partner-token", 400, "invalid_grant", "no such key was provisioned")),
    Scenario("partner-profile-missing", "The partner MC system has no migration profile",
             {"drop_migration_profiles": True},
             Expectation("partner-register", 403, "101 service authorisation failed",
                         "no migration profile")),
    Scenario("migration-not-authorised", "The primary profile does not authorise migration",
             {"deny_migration": True},
             Expectation("security-token", 400, "invalid_target", "not authorised to migrate")),
    Scenario("expired-token", "The security token expired before it reached the partner",
             {"expired_security_tokens": True},
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
             {"partner_mode": "direct"}, variant="direct"),
    Scenario("with-interconnection", "Baseline 23.280 §10.6.3: the partner asks the primary",
             {"partner_mode": "interconnection"}, variant="interconnection"),
)}


@dataclass
class Verdict:
    step: str
    title: str
    clause: str
    passed: bool
    detail: str


@dataclass
class ScenarioResult:
    scenario: Scenario
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(v.passed for v in self.verdicts)


class Refused(Exception):
    """A step was refused: HTTP/SIP status, error code and description."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(f"{status} {error} {reason}")
        self.status, self.error, self.reason = status, error, reason


StepFunction = Callable[[], Awaitable[str]]


def _sip_outcome(response: Response) -> str:
    if response.status >= 300:
        raise Refused(response.status, ",".join(response.headers.get_all("Warning")),
                      response.reason)
    return f"{response.status} {response.reason}"


class ScenarioRunner:
    """Drives the UEs of a running network through one scenario."""

    def __init__(self, network: Network, scenario: Scenario, *, ue: str = "ue-alice",
                 peer: str = "ue-carol") -> None:
        self.net = network
        self.scenario = scenario
        self.result = ScenarioResult(scenario)
        self.ue: UserEquipment = network.ues[ue]
        self.peer: UserEquipment | None = network.ues.get(peer)
        topology = network.topology
        self.home = topology.system(topology.ue(ue).home)
        self.partner = topology.system(topology.local_plmn.serves)
        self.registration: Registration | None = None
        self.partner_registration: Registration | None = None

    # -- the steps --------------------------------------------------------------
    def steps(self) -> list[tuple[str, str, str, StepFunction]]:
        variant = self.scenario.variant
        steps: list[tuple[str, str, str, StepFunction]] = []
        if self.peer is not None:
            steps.append(("peer-register", "A partner-local user logs in and registers",
                          "33.180 §5.1.3 steps A-C", self.peer_register))
        steps += [
            ("login-primary", "UE logs in at the primary IdMS (auth code + PKCE S256)",
             "33.180 B.4; 24.482 §4.1", self.login_primary),
            ("register-primary", "REGISTER at the primary SIP core with the access token",
             "24.379 §7.2.1, §7.3.1; 33.180 §5.1.3", self.register_primary),
            ("profile", "Download the user profile: partner access info, migration allowed",
             "24.484; 23.280 §10.1.4, §10.1.6.1", self.download_profile),
        ]
        if variant != "interconnection":
            steps.append(("security-token", "Token exchange: a security token for the partner "
                                            "IdMS", "33.180 B.7.2, B.8, C.2 steps 5-6; RFC 8693",
                          self.security_token))
        if variant != "unattached":
            steps.append(("attach", "Attach to the local PLMN (gateway acts as P-CSCF)",
                          "TR 23.700-90 7.X.2 step 1; 23.280 §10.1.6.2",
                          self.attach))
        if variant not in ("direct", "interconnection", "unattached"):
            steps.append(("partner-token", "Partner IdMS checks the security token against the "
                                           "out-of-band certificate; issues a partner token",
                          "33.180 §5.1.4.2, B.7.4 (project reading); RFC 7523",
                          self.partner_token))
        if variant == "replay":
            steps.append(("partner-token-replay", "The same security token presented again",
                          "33.180 B.12; RFC 7523 §3 (jti)", self.partner_token))
        steps.append(("partner-register", "REGISTER through the gateway; the partner MC "
                                          "system authorises the user",
                      "TR 23.700-90 7.X.2 steps 1-2; 23.280 §10.1.6.2, §10.6.3; 24.379 §7.3.1",
                      self.partner_register))
        if self.peer is not None:
            steps += [
                ("private-call", "Private call to a partner-local user (INVITE/200/ACK/BYE)",
                 "23.379 §10.7 private call; 24.379 (simplified)", self.private_call),
                ("short-data", "MCData short data service (SIP MESSAGE)",
                 "23.282 §7.4 SDS; 24.282 (simplified)", self.short_data),
            ]
        return steps

    async def peer_register(self) -> str:
        assert self.peer is not None
        spec = self.net.topology.ue(self.peer.name)
        system = self.net.systems[spec.home]
        tokens = await self.peer.login(system.issuer)
        user = system.spec.user(spec.user)
        registration = await self.peer.register(
            self.peer.sip, self._core_address(spec.home, self.peer.name), system.spec.domain,
            user.mcptt_id, user.mcptt_id.removeprefix("sip:"), tokens.access_token, user.mc_ids)
        return _sip_outcome(registration.response)

    async def login_primary(self) -> str:
        tokens = await self.ue.login(self.net.systems[self.home.name].issuer)
        return f"ID, access and refresh tokens; scope {tokens.scope}"

    def _core_address(self, system: str, ue: str) -> Address:
        node = self.net.topology.system(system).node("sip-core")
        assert node.sip is not None
        transport = self.net.topology.link_transport(ue, node.qualified_name) or "udp"
        port = node.sip.port + 1 if transport == "tls" else node.sip.port
        return Address(transport, node.host, port)

    async def register_primary(self) -> str:
        assert self.ue.tokens is not None
        user = self.home.user(self.net.topology.ue(self.ue.name).user)
        self.registration = await self.ue.register(
            self.ue.sip, self._core_address(self.home.name, self.ue.name), self.home.domain,
            user.mcptt_id, user.mcptt_id.removeprefix("sip:"), self.ue.tokens.access_token,
            user.mc_ids)
        return _sip_outcome(self.registration.response)

    async def download_profile(self) -> str:
        user = self.home.user(self.net.topology.ue(self.ue.name).user)
        cms = self.net.systems[self.home.name].cms.server.url
        profile = await self.ue.download_profile(cms, user.mcptt_id)
        partner = profile.partner(self.partner.name)
        if partner is None:
            raise Refused(0, "profile", f"profile names no partner {self.partner.name}")
        allowed = "authorised" if partner.authorised_to_migrate else "NOT authorised"
        return (f"partner {partner.system_id}: {allowed} to migrate, gateway "
                f"{partner.attach_url}, identity {partner.partner_impu}")

    async def security_token(self) -> str:
        partner = self._partner_info()
        await self.ue.request_security_token(
            f"{self.net.systems[self.home.name].issuer}/token", partner.idms_audience)
        return f"security token for {partner.idms_audience}"

    async def attach(self) -> str:
        partner = self._partner_info()
        address = await self.ue.attach(partner.attach_url, partner.sip_transport)
        return f"UE address in {self.net.topology.local_plmn.name}: {address}"

    async def partner_token(self) -> str:
        body = await self.ue.request_partner_token(self._partner_info().idms_token_endpoint)
        return f"partner access token, scope {body.get('scope')}"

    async def partner_register(self) -> str:
        partner = self._partner_info()
        variant = self.scenario.variant
        client = self.ue.visited_sip or self.ue.sip
        gateway = Address(partner.sip_transport, partner.sip_core_host, partner.sip_core_port)
        ids = {"mcptt_id": partner.partner_impu}
        migration = next(p for p in self.partner.migration_profiles
                         if p.user == self.net.topology.ue(self.ue.name).user)
        if migration.partner_mcdata_id:
            ids["mcdata_id"] = migration.partner_mcdata_id
        if migration.partner_mcvideo_id:
            ids["mcvideo_id"] = migration.partner_mcvideo_id
        if variant == "direct":
            token = self.ue.security_token or ""
        elif variant == "interconnection":
            assert self.ue.tokens is not None
            token = self.ue.tokens.access_token
        elif variant == "unattached":
            token = "not-a-token"
        else:
            assert self.ue.partner_token is not None
            token = str(self.ue.partner_token["access_token"])
            if variant == "forged":
                token = forge(token)
        self.partner_registration = await self.ue.register(
            client, gateway, partner.sip_domain, partner.partner_impu, partner.partner_impi,
            token, ids, via_p_cscf=True)
        outcome = _sip_outcome(self.partner_registration.response)
        service_route = ", ".join(self.partner_registration.service_route)
        return f"{outcome}; Service-Route {service_route}"

    async def private_call(self) -> str:
        assert self.partner_registration is not None and self.peer is not None
        client = self.ue.visited_sip or self.ue.sip
        callee = self.partner.user(self.net.topology.ue(self.peer.name).user).mcptt_id
        record = await client.private_call(callee, self.partner_registration)
        if record.invite_status != 200:
            raise Refused(record.invite_status, "", "INVITE refused")
        if record.bye_status != 200:
            raise Refused(record.bye_status, "", "BYE refused")
        answered = self.peer.sip.calls_answered
        if not answered or answered[-1] != self.partner_registration.impu:
            raise Refused(0, "", f"callee saw {answered}")
        return f"INVITE 200, ACK, BYE 200; callee saw caller {answered[-1]}"

    async def short_data(self) -> str:
        assert self.partner_registration is not None and self.peer is not None
        client = self.ue.visited_sip or self.ue.sip
        target = self.partner.user(self.net.topology.ue(self.peer.name).user)
        text = "Arrived in the partner area, ready to assist."
        response = await client.send_short_data(target.mcptt_id, text,
                                                self.partner_registration, mcdata_id=None)
        outcome = _sip_outcome(response)
        received = self.peer.sip.messages
        if not received or text.encode() not in received[-1].body:
            raise Refused(0, "", "the message did not reach the callee")
        return f"{outcome}; delivered to {target.mcptt_id}"

    def _partner_info(self) -> profiles.PartnerSystem:
        partner = self.ue.profile.partner(self.partner.name) if self.ue.profile else None
        if partner is None:
            raise Refused(0, "profile", "no partner information in the user profile")
        return partner

    # -- running ---------------------------------------------------------------
    async def run(self) -> ScenarioResult:
        expect = self.scenario.expect
        for step, title, clause, function in self.steps():
            self.net.trace.set_step(f"{step}: {title}", clause)
            try:
                detail = await function()
            except IdmError as exc:
                refusal: Refused | None = Refused(exc.status, exc.error, exc.description)
            except Refused as exc:
                refusal = exc
            else:
                refusal = None
            if refusal is None:
                self.result.verdicts.append(Verdict(step, title, clause, True, detail))
                continue
            if expect is not None and expect.step == step:
                ok = (refusal.status == expect.status and expect.error in refusal.error and
                      expect.reason in refusal.reason)
                text = f"refused: {refusal.status} {refusal.error} ({refusal.reason})"
                self.result.verdicts.append(Verdict(
                    step, title, clause, ok, ("as expected, " if ok else "NOT as expected, ")
                    + text))
                break
            self.result.verdicts.append(Verdict(step, title, clause, False,
                                                f"{refusal.status} {refusal.error} "
                                                f"{refusal.reason}"))
            break
        else:
            if expect is not None:
                self.result.verdicts.append(Verdict(expect.step, "expected refusal", "", False,
                                                    "the scenario was never refused"))
        self.net.trace.set_step("")
        return self.result

    def capture_verdict(self) -> Verdict:
        """No packet between the primary and the partner systems (or, for the baseline, some)."""
        path = self.net.capture_file
        title = "No packet between the primary and partner MC systems"
        clause = "TR 23.700-90 7.X.1 (no interconnection)"
        if path is None or not path.exists():
            return Verdict("capture", title, clause, False,
                           "no kernel capture (needs root and tcpdump)")
        found = crossings(path, self.home.hosts, self.partner.hosts)
        if self.scenario.variant == "interconnection":
            return Verdict("capture", "Baseline: primary<->partner traffic is present",
                           "23.280 §10.6.3", bool(found),
                           f"{len(found)} packets between the systems")
        detail = f"{len(found)} packets between {sorted(self.home.hosts)} and " \
                 f"{sorted(self.partner.hosts)} in {path.name}"
        if self.net.capture is None:  # the application tap sees SIP, not HTTPS
            detail += " (application-level tap: SIP only)"
        return Verdict("capture", title, clause, not found, detail)


def forge(token: str) -> str:
    """Re-sign ``token``'s header and claims with a key nobody provisioned (a forgery)."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = claims.get("scope", "") + " 3gpp:mc:ptt_key_management_service"
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signature = key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def options_for(scenario: Scenario, **overrides: Any) -> NetworkOptions:
    return NetworkOptions(**{**scenario.options, **overrides})

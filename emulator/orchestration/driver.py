"""Runs a scenario against a running network, step by step, with verdicts.

Each step names the clause it implements and is written to the network's
step log, so every captured packet is labelled with it.  A negative
scenario passes when the partner (or the primary) refuses at the expected
step, for the expected reason, and the refusal is visible on the wire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from emulator.capture.analysis import crossings
from emulator.capture.ladder import LadderError
from emulator.capture.ladder import LadderMessage
from emulator.capture.ladder import extract
from emulator.documents import profile as profiles
from emulator.refusal import Refusal
from emulator.sip.events import Address
from emulator.topology.model import McSystem
from nodes import SipOutcome
from nodes import Tokens
from nodes import UserEquipment
from nodes import mc_service_psi
from nodes import mcptt_server_psi

from .network import Network
from .scenarios import Scenario
from .scenarios import forge

logger = logging.getLogger(__name__)

ESCALATION_SCOPES = ("3gpp:mc:ptt_service", "3gpp:mc:data_service", "3gpp:mc:video_service",
                     "3gpp:mc:ptt_config_management_service",
                     "3gpp:mc:ptt_group_management_service")
WARNING_101 = "101 service authorisation failed"  # 24.379 §4.4


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


StepFunction = Callable[[], Awaitable[str]]


def _sip_outcome(outcome: SipOutcome) -> str:
    """The verdict text of a SIP request; a refusal raises, including a registration the
    network ended right after its 200 (24.229 §5.4.1.7), as its reg event told the UE."""
    if outcome.status >= 300:
        raise Refusal(",".join(outcome.warnings), outcome.reason, outcome.status)
    text = f"{outcome.status} {outcome.reason}"
    registration = outcome.registration
    if registration is None:
        return text
    if registration.state != "active":
        events = ", ".join(registration.events) or "no contact"
        raise Refusal(",".join(registration.warnings),
                      f"{text}, then NOTIFY: registration {registration.state} ({events}); "
                      f"{registration.reason}", registration.status or outcome.status)
    return f"{text}; reg event: registration active"


def _deregistered(outcome: SipOutcome) -> str:
    """The verdict of a de-REGISTER: 200, and the NOTIFY that ended the subscription."""
    if outcome.status >= 300:
        raise Refusal(",".join(outcome.warnings), outcome.reason, outcome.status)
    state = outcome.registration
    if state is None:
        return f"{outcome.status} {outcome.reason} (no reg-event subscription)"
    if state.state != "terminated":
        raise Refusal("", f"the reg event still says {state.state}", 0)
    return f"{outcome.status} {outcome.reason}; NOTIFY: registration terminated " \
           f"({', '.join(state.events) or 'no contact'})"


class ScenarioDriver:
    """Drives the UEs of a running network through one scenario."""

    def __init__(self, network: Network, scenario: Scenario, *, ue: str = "ue-alice",
                 peer: str = "ue-carol", home_peer: str = "ue-bob") -> None:
        self.net = network
        self.scenario = scenario
        self.result = ScenarioResult(scenario)
        self.ue: UserEquipment = network.ues[ue]
        self.peer: UserEquipment | None = network.ues.get(peer)
        topology = network.topology
        partner_name = topology.local_plmn.serves
        self.locals: list[UserEquipment] = [
            u for name, u in network.ues.items()
            if topology.ue(name).home == partner_name and name != ue]
        """The partner-local users (the peer first): they register and affiliate."""
        self.home_peer: UserEquipment | None = network.ues.get(home_peer)
        """A user of the primary at home, whom the returning UE calls."""
        topology = network.topology
        self.home = topology.system(topology.ue(ue).home)
        self.partner = topology.system(topology.local_plmn.serves)
        self.tokens: Tokens | None = None
        self.profile: profiles.UserProfile | None = None
        self.security: str | None = None
        """The security token for the partner IdMS."""
        self.partner_tokens: dict[str, object] | None = None
        self.registered_impu: str | None = None
        """The identity the UE registered in the partner system."""
        self.partner_ids: dict[str, str] = {}
        """The partner-assigned MC service IDs it registered with."""
        self.peer_tokens: dict[str, str] = {}
        """The partner-local UEs' access tokens (a re-registration needs no new login)."""
        self.partner_groups: list[str] = []
        """The partner groups the migrated user may join (its partner profile)."""

    # -- the steps --------------------------------------------------------------
    def steps(self) -> list[tuple[str, str, str, StepFunction]]:
        variant = self.scenario.variant
        steps: list[tuple[str, str, str, StepFunction]] = []
        if self.peer is not None:
            steps.append(("peer-register", "The partner-local users log in, register and "
                                           "affiliate to their groups",
                          "33.180 §5.1.3 steps A-C; 23.280 §10.8.3", self.peer_register))
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
        steps.append(("leave-primary", "De-REGISTER at the primary before leaving "
                                       "(Expires: 0): the primary MC server drops the user",
                      "24.229 §5.1.1.6, §5.4.1.7; 24.379 §7.3.1 (project choice: "
                      "de-register, not lapse)", self.leave_primary))
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
        if self.by_publish:
            steps += [
                ("partner-register", "REGISTER through the gateway, without tokens; reg event",
                 "TR 23.700-90 7.X.2 step 1; 24.229 §5.1.1.2, §5.1.1.3; 24.379 §7.2.1",
                 self.partner_register),
                ("partner-publish", "PUBLISH (Event: poc-settings) with the partner token: "
                                    "the partner MC server authorises the user",
                 "TR 23.700-90 7.X.2 step 2; 24.379 §7.2.2, §7.3.3", self.partner_publish)]
        else:
            steps.append(("partner-register", "REGISTER through the gateway; the partner MC "
                                              "system authorises the user (reg event)",
                          "TR 23.700-90 7.X.2 steps 1-2; 23.280 §10.1.6.2, §10.6.3; "
                          "24.229 §5.4.1.7; 24.379 §7.3.1", self.partner_register))
        if self.peer is not None:
            if variant not in ("direct", "interconnection", "unattached"):
                steps.append(("partner-profile", "Download the partner's user profile (CMS) "
                                                 "and its groups (GMS) with the partner token",
                              "23.280 §10.16.2 steps 2-3; 24.484; 24.481",
                              self.partner_profile))
            if self.partner.groups:  # a partner without groups has none to join
                steps += [
                    ("affiliation", "Affiliate to the partner group (PUBLISH to the MCPTT "
                                    "server's PSI)", "23.280 §10.8.3; 24.379 §9.2.2",
                     self.affiliation),
                    ("group-call", "Prearranged group call: the MC server invites the "
                                   "affiliated members", "23.379 §10.6.2.3.1.1; 24.379 "
                                   "§10.1.1 (simplified)", self.group_call)]
            steps += [
                ("private-call", "Private call to a partner-local user, via the MCPTT "
                                 "server's PSI (INVITE/200/ACK/BYE)",
                 "23.379 §10.7; 24.379 §11.1.1 (simplified)", self.private_call),
                ("short-data", "MCData standalone SDS (MESSAGE with signalling and payload)",
                 "23.282 §7.4; 24.282 §9.2.2, §15.1", self.short_data),
            ]
        if variant == "escalation" and self.peer is not None:
            steps.append(("video-call", "An MCVideo call, a service the primary did not "
                                        "authorise: refused by the partner MC server",
                          "23.281; 24.281 (simplified); 24.379 §4.4 (Warning 101)",
                          self.video_call_refused))
        if variant == "long-stay" and self.peer is not None:
            steps.append(("long-stay", "The stay goes on: refresh the partner token, "
                                       "re-REGISTER with it, send an SDS; again and again",
                          "33.180 B.5; RFC 6749 §6; 24.229 §5.1.1.4 (re-registration); "
                          "23.282 §7.4", self.long_stay))
        if variant in ("deregister", "return-home") and self.peer is not None:
            steps += [
                ("deregister", "De-REGISTER through the gateway (Expires: 0): third-party "
                               "de-REGISTER, NOTIFY ends the registration",
                 "24.229 §5.1.1.6, §5.4.1.7; RFC 3680", self.deregister),
                ("detach", "Detach from the local PLMN (DELETE /attach/<address>)",
                 "TR 23.700-90 7.X (project-defined attach API)", self.detach),
                ("call-after-deregister", "A partner-local user calls the migrated "
                                          "identity: refused",
                 "RFC 3261 §10.3; 24.229 §5.4.3.3 (not registered: 480)",
                 self.call_after_deregister),
            ]
        if variant == "return-home":
            steps += [
                ("home-peer-register", "A primary-local user logs in and registers at home",
                 "33.180 §5.1.3 steps A-C", self.home_peer_register),
                ("refresh-primary", "Back home: the UE refreshes its primary tokens "
                                    "(no new login)",
                 "33.180 B.5; RFC 6749 §6", self.refresh_primary),
                ("register-home", "REGISTER at the primary SIP core with the refreshed token",
                 "24.229 §5.1.1.2; 24.379 §7.2.1, §7.3.1", self.register_home),
                ("private-call-home", "Private call to a primary-local user, at home",
                 "23.379 §10.7 private call; 24.379 (simplified)", self.private_call_home),
            ]
        if variant == "restart" and self.peer is not None:
            steps += [
                ("partner-restart", "The partner MC server and SIP core are killed (SIGKILL) "
                                    "and started again",
                 "project-defined fault; RFC 3261 §10.3 (location service)",
                 self.restart_partner),
                ("short-data-after-restart", "The migrated user's next MCData message, "
                                             "without a new login",
                 "23.282 §7.4 SDS; 24.229 §5.1.1.4 (re-registration)",
                 self.short_data_after_restart),
            ]
        return steps

    async def peer_register(self) -> str:
        """Every partner-local UE logs in (once), registers and affiliates to its groups."""
        done = []
        for peer in self.locals:
            spec = self.net.topology.ue(peer.plan.name)
            system = self.net.topology.system(spec.home)
            token = self.peer_tokens.get(peer.plan.name)
            if token is None:
                token = (await peer.login(system.issuer)).access_token
                self.peer_tokens[peer.plan.name] = token
            user = system.user(spec.user)
            text = await self._register(peer, self._core_address(spec.home, peer.plan.name),
                                        system.domain, user.mcptt_id, token, user.mc_ids)
            groups = [g.group_id for g in system.groups if user.name in g.members]
            if groups:
                _sip_outcome(await peer.affiliate(groups, mcptt_server_psi(system.domain),
                                                  user.mcptt_id))
                text += f", affiliated to {', '.join(groups)}"
            done.append(f"{user.name}: {text}")
        return "; ".join(done)

    async def login_primary(self) -> str:
        self.tokens = await self.ue.login(self.home.issuer)
        return f"ID, access and refresh tokens; scope {self.tokens.scope}"

    def _core_address(self, system: str, ue: str) -> Address:
        node = self.net.topology.system(system).node("sip-core")
        assert node.sip is not None
        transport = self.net.topology.link_transport(ue, node.qualified_name) or "udp"
        return Address(transport, node.host, node.sip.port_for(transport))

    @property
    def by_publish(self) -> bool:
        """Whether the migrating UE hands its partner tokens over by PUBLISH (24.379
        §7.3.3): in the publish-authorisation scenario, or by its ``service_authorisation``
        key, except in the scenarios judged on the REGISTER itself."""
        if self.scenario.variant == "publish":
            return True
        expect = self.scenario.expect
        if self.scenario.variant in ("direct", "interconnection", "unattached", "refused") \
                or (expect is not None and expect.step == "partner-register"):
            return False
        return self._publishes(self.ue)

    def _publishes(self, ue: UserEquipment) -> bool:
        return self.net.topology.ue(ue.plan.name).service_authorisation == "publish"

    async def _register(self, ue: UserEquipment, core: Address, domain: str, impu: str, token: str,
                        ids: dict[str, str]) -> str:
        """A REGISTER in ``ue``'s own MC system, then, for a UE that authorises by PUBLISH,
        the PUBLISH to its MC server (24.379 §7.3.1 or §7.3.3)."""
        publish = self._publishes(ue)
        outcome = await ue.register(core, domain, impu, impu.removeprefix("sip:"), token, ids,
                                    publish=publish)
        text = _sip_outcome(outcome)
        if publish:
            published = await ue.publish_service_authorisation(mcptt_server_psi(domain), token,
                                                               ids)
            text += f", {_sip_outcome(published)} to PUBLISH"
        return text

    async def register_primary(self) -> str:
        assert self.tokens is not None
        user = self.home.user(self.net.topology.ue(self.ue.plan.name).user)
        return await self._register(
            self.ue, self._core_address(self.home.name, self.ue.plan.name), self.home.domain,
            user.mcptt_id, self.tokens.access_token, user.mc_ids)

    async def download_profile(self) -> str:
        user = self.home.user(self.net.topology.ue(self.ue.plan.name).user)
        cms = self.home.node("cms").https_url
        assert cms is not None
        self.profile = await self.ue.download_profile(cms, user.mcptt_id)
        partner = self.profile.partner(self.partner.name)
        if partner is None:
            raise Refusal("profile", f"profile names no partner {self.partner.name}", 0)
        allowed = "authorised" if partner.authorised_to_migrate else "NOT authorised"
        return (f"partner {partner.system_id}: {allowed} to migrate, gateway "
                f"{partner.attach_url}, identity {partner.partner_impu}")

    async def security_token(self) -> str:
        audience = self._partner_info().idms_audience
        if self.scenario.variant == "wrong-partner":
            audience = self._other_partner().issuer  # the UE shows it to the wrong one
        self.security = await self.ue.request_security_token(f"{self.home.issuer}/token",
                                                             audience)
        return f"security token for {audience}"

    def _other_partner(self) -> McSystem:
        """A partner the user may also migrate to, other than the one the local PLMN
        serves (the two-partners topology has one)."""
        user = self.net.topology.ue(self.ue.plan.name).user
        other = next((s for s in self.net.topology.systems
                      if s.name not in (self.home.name, self.partner.name) and
                      any(p.user == user for p in s.migration_profiles)), None)
        if other is None:
            raise Refusal("topology", "this scenario needs a second partner the user may "
                                      "migrate to (topology two-partners)", 0)
        return other

    async def attach(self) -> str:
        partner = self._partner_info()
        via = await self.net.radio_attach(self.ue.plan.name)
        address = await self.ue.attach(partner.attach_url, partner.sip_transport, via=via)
        self.net.name_address(address, self.ue.plan.name)
        return f"UE address in {self.net.topology.local_plmn.name}: {address}"

    async def partner_token(self) -> str:
        # The refused variant asks for configuration management only (RFC 6749 §3.3); the
        # escalation variant for every MC service, some the primary never authorised.
        scope = {"refused": "3gpp:mc:ptt_config_management_service",
                 "escalation": " ".join(ESCALATION_SCOPES)}.get(self.scenario.variant)
        self.partner_tokens = await self.ue.request_partner_token(
            self._partner_info().idms_token_endpoint, scope=scope)
        granted = str(self.partner_tokens.get("scope"))
        if scope is not None:
            return f"asked for {scope}; partner access token, scope {granted}"
        return f"partner access token, scope {granted}"

    async def partner_register(self) -> str:
        partner = self._partner_info()
        variant = self.scenario.variant
        gateway = Address(partner.sip_transport, partner.sip_core_host, partner.sip_core_port)
        ids = {"mcptt_id": partner.partner_impu}
        migration = next(p for p in self.partner.migration_profiles
                         if p.user == self.net.topology.ue(self.ue.plan.name).user)
        if migration.partner_mcdata_id:
            ids["mcdata_id"] = migration.partner_mcdata_id
        if migration.partner_mcvideo_id:
            ids["mcvideo_id"] = migration.partner_mcvideo_id
        if variant == "direct":
            token = self.security or ""
        elif variant == "interconnection":
            assert self.tokens is not None
            token = self.tokens.access_token
        elif variant == "unattached":
            token = "not-a-token"
        else:
            assert self.partner_tokens is not None
            token = str(self.partner_tokens["access_token"])
            if variant == "forged":
                token = forge(token)
        visited = variant != "unattached"
        if not visited:  # on the access network without attaching, where one can be
            address = await self.net.radio_attach(self.ue.plan.name, allocate=False)
            if address is not None:
                await self.ue.camp(address, partner.sip_transport)
                visited = True
        outcome = await self.ue.register(
            gateway, partner.sip_domain, partner.partner_impu, partner.partner_impi, token, ids,
            visited=visited, via_p_cscf=True, publish=self.by_publish,
            expires=self.scenario.faults.partner_registration_expires or 3600)
        self.registered_impu = partner.partner_impu
        self.partner_ids = ids
        return f"{_sip_outcome(outcome)}; Service-Route {', '.join(outcome.service_route)}"

    async def partner_publish(self) -> str:
        assert self.partner_tokens is not None
        outcome = await self.ue.publish_service_authorisation(
            mcptt_server_psi(self.partner.domain), str(self.partner_tokens["access_token"]),
            self.partner_ids, visited=True)
        return f"{_sip_outcome(outcome)} to PUBLISH for {', '.join(sorted(self.partner_ids))}"

    async def partner_profile(self) -> str:
        partner = self._partner_info()
        if not partner.cms_url:
            raise Refusal("profile", "the profile names no partner CMS", 0)
        assert self.registered_impu is not None
        profile = await self.ue.download_partner_profile(partner.cms_url, self.registered_impu)
        if profile.migration_for is None:
            raise Refusal("profile", "the partner profile is not a migration profile", 0)
        self.partner_groups = list(profile.groups)
        members = []
        if partner.gms_url:
            for group in profile.groups:
                document = await self.ue.download_group(partner.gms_url, group)
                members.append(f"{document.display_name} ({len(document.members)} members)")
        return (f"partner profile for {profile.migration_for}: groups "
                f"{', '.join(profile.groups) or 'none'}; GMS: {', '.join(members) or '-'}")

    def _groups(self) -> list[str]:
        """The partner groups the user may join: from its partner profile, else (variants
        with no partner token) from the partner's provisioning."""
        if self.partner_groups:
            return self.partner_groups
        user = self.net.topology.ue(self.ue.plan.name).user
        return [g.group_id for g in self.partner.groups if user in g.members]

    async def affiliation(self) -> str:
        assert self.registered_impu is not None
        groups = self._groups()
        if not groups:
            raise Refusal("", "the partner gives the user no group to affiliate to", 0)
        outcome = await self.ue.affiliate(groups, mcptt_server_psi(self.partner.domain),
                                          self.registered_impu, visited=True)
        return f"{_sip_outcome(outcome)} to PUBLISH (Event: presence): affiliated to " \
               f"{', '.join(groups)}"

    async def group_call(self) -> str:
        group = self._groups()[0]
        record = await self.ue.group_call(group, mcptt_server_psi(self.partner.domain),
                                          visited=True)
        if record.invite_status != 200 or record.bye_status != 200:
            raise Refusal(",".join(record.warnings), f"group INVITE {record.invite_status}, "
                          f"BYE {record.bye_status}", record.invite_status or 0)
        reached = []
        for member in self.locals:
            answered = (await member.received()).calls_answered
            if answered and answered[-1] == self.registered_impu:
                reached.append(member.plan.name)
        expected = [m.plan.name for m in self.locals]
        if reached != expected:
            raise Refusal("", f"the group call reached {reached}, not {expected}", 0)
        return f"INVITE to {group} 200, ACK, BYE 200; reached {', '.join(reached)}"

    async def private_call(self) -> str:
        assert self.registered_impu is not None and self.peer is not None
        callee = self.partner.user(self.net.topology.ue(self.peer.plan.name).user).mcptt_id
        record = await self.ue.private_call(callee, visited=True,
                                            psi=mcptt_server_psi(self.partner.domain))
        if record.invite_status != 200:
            raise Refusal("", "INVITE refused", record.invite_status)
        if record.bye_status != 200:
            raise Refusal("", "BYE refused", record.bye_status)
        answered = (await self.peer.received()).calls_answered
        if not answered or answered[-1] != self.registered_impu:
            raise Refusal("", f"callee saw {list(answered)}", 0)
        return f"INVITE 200, ACK, BYE 200; callee saw caller {answered[-1]}"

    async def short_data(self) -> str:
        assert self.registered_impu is not None and self.peer is not None
        target = self.partner.user(self.net.topology.ue(self.peer.plan.name).user)
        text = "Arrived in the partner area, ready to assist."
        to = target.mcdata_id or target.mcptt_id
        outcome = _sip_outcome(await self.ue.send_short_data(
            to, text, visited=True, psi=mc_service_psi("mcdata", self.partner.domain),
            mcdata_id=self.partner_ids.get("mcdata_id")))
        received = (await self.peer.received()).messages
        if not received or text not in received[-1]:
            raise Refusal("", "the message did not reach the callee", 0)
        return f"{outcome}; delivered to {to} (signalling and payload parts)"

    async def video_call_refused(self) -> str:
        assert self.peer is not None
        callee = self.partner.user(self.net.topology.ue(self.peer.plan.name).user).mcptt_id
        record = await self.ue.private_call(callee, visited=True, service="mcvideo")
        warned = any(WARNING_101 in w for w in record.warnings)
        if record.invite_status != 403 or not warned:
            raise Refusal("", f"the MCVideo INVITE got {record.invite_status} "
                              f"{list(record.warnings)}, expected 403 with Warning 101",
                          record.invite_status or 0)
        return f"403 with {record.warnings[0]}, as it must; the other services go on"

    async def long_stay(self) -> str:
        """Cycles of refresh grant, re-REGISTER with the new token and an SDS, each before
        the shorter of the token's and the registration's lifetimes runs out, for the
        scenario's ``stay``; at least two."""
        faults = self.scenario.faults
        token_life = faults.partner_token_lifetime or 3600
        registration = faults.partner_registration_expires or 3600
        period = 0.6 * min(token_life, registration)
        loop = asyncio.get_running_loop()
        end = loop.time() + faults.stay
        partner = self._partner_info()
        gateway = Address(partner.sip_transport, partner.sip_core_host, partner.sip_core_port)
        cycles = 0
        while loop.time() + period <= end:
            await asyncio.sleep(period)  # the user's stay: real time on the wire
            self.partner_tokens = await self.ue.refresh_partner_token(
                partner.idms_token_endpoint)
            token = str(self.partner_tokens["access_token"])
            outcome = await self.ue.register(
                gateway, partner.sip_domain, partner.partner_impu, partner.partner_impi,
                token, self.partner_ids, visited=True, via_p_cscf=True, expires=registration,
                publish=self.by_publish)
            _sip_outcome(outcome)
            if self.by_publish:
                _sip_outcome(await self.ue.publish_service_authorisation(
                    mcptt_server_psi(self.partner.domain), token, self.partner_ids,
                    visited=True, expires=registration))
            await self.short_data()
            cycles += 1
        if cycles < 2:
            raise Refusal("", f"only {cycles} refresh cycles in {faults.stay:.0f} s", 0)
        return (f"{cycles} cycles over {faults.stay:.0f} s (partner token {token_life} s, "
                f"registration {registration} s): refresh grant, re-REGISTER with the new "
                "token, SDS delivered")

    async def leave_primary(self) -> str:
        user = self.home.user(self.net.topology.ue(self.ue.plan.name).user)
        outcome = await self.ue.register(
            self._core_address(self.home.name, self.ue.plan.name), self.home.domain,
            user.mcptt_id, user.mcptt_id.removeprefix("sip:"), "", user.mc_ids, expires=0)
        return _deregistered(outcome)

    async def deregister(self) -> str:
        partner = self._partner_info()
        gateway = Address(partner.sip_transport, partner.sip_core_host, partner.sip_core_port)
        outcome = await self.ue.register(
            gateway, partner.sip_domain, partner.partner_impu, partner.partner_impi, "",
            self.partner_ids, visited=True, via_p_cscf=True, expires=0)
        return _deregistered(outcome)

    async def detach(self) -> str:
        address = await self.ue.detach(self._partner_info().attach_url)
        await self.net.radio_detach(self.ue.plan.name)
        return f"{address} given back to {self.net.topology.local_plmn.name}"

    async def call_after_deregister(self) -> str:
        assert self.peer is not None and self.registered_impu is not None
        record = await self.peer.private_call(self.registered_impu,
                                              psi=mcptt_server_psi(self.partner.domain))
        if record.invite_status not in (404, 480):
            raise Refusal("", f"INVITE to {self.registered_impu} got {record.invite_status}, "
                              "expected 404 or 480", record.invite_status or 0)
        return f"INVITE to {self.registered_impu}: {record.invite_status}, as expected"

    async def home_peer_register(self) -> str:
        if self.home_peer is None:
            raise Refusal("topology", "return-home needs a UE of the primary to call at home "
                                      "(ue-bob in the default topology)", 0)
        spec = self.net.topology.ue(self.home_peer.plan.name)
        system = self.net.topology.system(spec.home)
        token = (await self.home_peer.login(system.issuer)).access_token
        user = system.user(spec.user)
        return await self._register(
            self.home_peer, self._core_address(spec.home, self.home_peer.plan.name),
            system.domain, user.mcptt_id, token, user.mc_ids)

    async def refresh_primary(self) -> str:
        self.tokens = await self.ue.refresh_tokens(f"{self.home.issuer}/token")
        return f"new access and refresh tokens; scope {self.tokens.scope}"

    async def register_home(self) -> str:
        return await self.register_primary()

    async def private_call_home(self) -> str:
        assert self.home_peer is not None
        spec = self.net.topology.ue(self.home_peer.plan.name)
        callee = self.home.user(spec.user).mcptt_id
        record = await self.ue.private_call(callee, psi=mcptt_server_psi(self.home.domain))
        if record.invite_status != 200 or record.bye_status != 200:
            raise Refusal("", f"INVITE {record.invite_status}, BYE {record.bye_status}",
                          record.invite_status or 0)
        caller = self.home.user(self.net.topology.ue(self.ue.plan.name).user).mcptt_id
        answered = (await self.home_peer.received()).calls_answered
        if not answered or answered[-1] != caller:
            raise Refusal("", f"callee saw {list(answered)}", 0)
        return f"INVITE 200, ACK, BYE 200 at home; callee saw caller {caller}"

    async def restart_partner(self) -> str:
        names = [self.partner.node(role).qualified_name for role in ("mc-server", "sip-core")]
        before = {name: self.net.runner.nodes[name].state().get("pid") for name in names}
        for name in names:
            await self.net.kill(name)
        for name in names:  # the MC server first: the SIP core starts after it
            await self.net.revive(name)
        after = {name: self.net.runner.nodes[name].state() for name in names}
        how = ", ".join(f"{name} pid {before[name]} -> {after[name].get('pid')}"
                        for name in names) if before[names[0]] else \
            "in process: stopped and started again (SIGKILL needs --placement proc or netns)"
        kept = ", ".join(f"{name} {after[name].get('restored', 0)}" for name in names)
        return f"{how}; entries read back from state/: {kept}"

    async def short_data_after_restart(self) -> str:
        """The next MESSAGE.  If it fails because the partner forgot the registrations (403,
        480) or because the connections to the UEs died with it (503: over TCP or TLS a UE
        is reached on the flow it opened, RFC 5626 §5.3), the UEs register again with the
        tokens they hold (24.229 §5.1.1.4), and the verdict says which happened."""
        try:
            return f"state kept: no REGISTER, no login; {await self.short_data()}"
        except Refusal as exc:
            if exc.status not in (403, 480, 503):
                raise
            lost = f"{exc.status} {exc.description}".strip()
        await self.peer_register()
        await self.partner_register()
        return f"re-registered: the first MESSAGE got {lost}; both UEs registered again " \
               f"with the tokens they hold (no login); {await self.short_data()}"

    def _partner_info(self) -> profiles.PartnerSystem:
        partner = self.profile.partner(self.partner.name) if self.profile else None
        if partner is None:
            raise Refusal("profile", "no partner information in the user profile", 0)
        return partner

    # -- running ---------------------------------------------------------------
    async def run(self) -> ScenarioResult:
        expect = self.scenario.expect
        for step, title, clause, function in self.steps():
            self.net.steps.begin(f"{step}: {title}", clause)
            try:
                detail = await function()
            except Refusal as exc:
                refusal: Refusal | None = exc
            else:
                refusal = None
            if refusal is None:
                self.result.verdicts.append(Verdict(step, title, clause, True, detail))
                continue
            if expect is not None and expect.step == step:
                ok = (refusal.status == expect.status and expect.error in refusal.error and
                      expect.reason in refusal.description)
                text = f"refused: {refusal.status} {refusal.error} ({refusal.description})"
                self.result.verdicts.append(Verdict(
                    step, title, clause, ok, ("as expected, " if ok else "NOT as expected, ")
                    + text))
                break
            self.result.verdicts.append(Verdict(step, title, clause, False,
                                                f"{refusal.status} {refusal.error} "
                                                f"{refusal.description}"))
            break
        else:
            if expect is not None:
                self.result.verdicts.append(Verdict(expect.step, "expected refusal", "", False,
                                                    "the scenario was never refused"))
        self.net.steps.begin("")
        return self.result

    def capture_verdicts(self) -> list[Verdict]:
        """What the capture alone shows: no interconnection, and for a restart, what the
        UE did after it."""
        verdicts = [self.capture_verdict()]
        capture = self.net.capture_file
        if capture is None:
            return verdicts
        if self.scenario.variant == "restart":
            verdicts.append(self.restart_verdict(capture))
        if any(v.step == "partner-register" and v.passed for v in self.result.verdicts) and \
                (self._refused_by_mc_server() or self.scenario.expect is None or
                 self.scenario.expect.step != "partner-register"):
            verdicts.append(self.registration_verdict(capture))
        return verdicts

    def _refused_by_mc_server(self) -> bool:
        """A scenario whose partner registration the MC server refuses (Warning 101)."""
        expect = self.scenario.expect
        return expect is not None and expect.step == "partner-register" and \
            WARNING_101 in expect.error

    def registration_verdict(self, capture: Path) -> Verdict:
        """The partner registration, in 24.229 order, from the capture: the SIP core's 200
        to the gateway before its third-party REGISTER to the MC server (§5.4.1.7); the UE
        and the gateway subscribe to the reg event and are notified (§5.1.1.3, §5.2.3);
        for a refusal, the NOTIFY that ends the registration follows the MC server's 403."""
        title = "Partner registration in 24.229 order, from the capture"
        clause = "24.229 §5.4.1.7, §5.1.1.3, §5.2.3; RFC 3680"
        try:
            during = [m for m in extract(capture) if m.step.startswith("partner-register")]
        except LadderError as exc:
            return Verdict("registration-capture", title, clause, False, str(exc))
        core = self.partner.node("sip-core").qualified_name
        mc = self.partner.node("mc-server").qualified_name
        gateway = self.net.topology.local_plmn.gateway.qualified_name
        ue = self.ue.plan.name

        def first(predicate: Callable[[LadderMessage], bool]) -> int | None:
            return next((i for i, m in enumerate(during) if predicate(m)), None)

        # The 200 leaves the SIP core towards the gateway (or the edge proxy before it).
        ok_to_gateway = first(lambda m: m.source == core and m.destination != mc and
                              m.label.startswith("200 (REGISTER)"))
        third_party = first(lambda m: m.source == core and m.destination == mc and
                            m.label.startswith("REGISTER"))
        subscribers = {m.source for m in during if m.label.startswith("SUBSCRIBE")}
        notified = {m.destination for m in during if m.label.startswith("NOTIFY")}
        ordered = ok_to_gateway is not None and third_party is not None and \
            ok_to_gateway < third_party
        watched = {ue, gateway} <= subscribers and {ue, gateway} <= notified
        detail = (f"200 (REGISTER) from {core} at #{ok_to_gateway}, third-party REGISTER to "
                  f"{mc} at #{third_party}; SUBSCRIBE (reg) from {sorted(subscribers)}, "
                  f"NOTIFY to {sorted(notified)}")
        ok = ordered and watched
        if self._refused_by_mc_server():
            refused = first(lambda m: m.source == mc and m.label.startswith("403 (REGISTER)"))
            ended = next((i for i, m in enumerate(during) if m.label.startswith("NOTIFY")
                          and m.destination == ue and refused is not None and i > refused),
                         None)
            ok = ok and refused is not None and ended is not None
            detail += f"; MC server 403 at #{refused}, NOTIFY to {ue} after it at #{ended}"
        return Verdict("registration-capture", title, clause, ok, detail)

    def restart_verdict(self, capture: Path) -> Verdict:
        """After the restart, from the capture: the MESSAGE was answered 200, the UE never
        logged in again, and whether it re-registered matches what the step said."""
        title = "After the restart, from the capture"
        clause = "23.282 §7.4; 33.180 §5.1.3 (no new login)"
        try:
            after = [m for m in extract(capture) if m.step.startswith("short-data-after-restart")]
        except LadderError as exc:
            return Verdict("restart-capture", title, clause, False, str(exc))
        ue = self.ue.plan.name
        registers = sum(1 for m in after if m.source == ue and m.label.startswith("REGISTER"))
        logins = sum(1 for m in after if m.source == ue and m.protocol == "HTTP")
        delivered = any(m.destination == ue and m.label.startswith("200 (MESSAGE)")
                        for m in after)
        step = next((v for v in self.result.verdicts if v.step == "short-data-after-restart"),
                    None)
        claimed = step is not None and step.detail.startswith("re-registered")
        ok = delivered and not logins and (registers > 0) == claimed
        return Verdict("restart-capture", title, clause, ok,
                       f"{ue}: {registers} REGISTER, {logins} HTTP requests (logins), MESSAGE "
                       f"{'answered 200' if delivered else 'NOT answered 200'}; "
                       f"{'re-registered' if registers else 'state kept'}")

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
        if self.net.kernel_capture is None:  # the application tap sees SIP, not HTTPS
            detail += " (application-level tap: SIP only)"
        return Verdict("capture", title, clause, not found, detail)

"""Refusals of the interconnection baseline (23.280 §10.6.3), each branch on its own.

Two MC systems on one in-memory hub, in simulated time (tests/review/conftest.py):

* the primary MC server trusts its own IdMS's tokens (a fresh CA and signing key) and
  answers the project-defined "migration service authorisation request" (a SIP MESSAGE
  with a ``MIGRATION_AUTH_TYPE`` body, ``render_migration_request``);
* the partner MC server, planned as the orchestration plans it for
  ``Faults(partner_mode="interconnection")`` (``mode="interconnection"``, a ``mc-server``
  peer for the primary's MC server), asks the primary when its SIP core's third-party
  REGISTER (24.229 §5.4.1.7) brings a migrating user with the primary access token.

A partner refusal is 403 with ``Warning: 399 <host> "101 service authorisation failed"``
(24.379 §4.4); the primary answers its partner with a plain 400/403/200.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest

from emulator.documents import mcx_info
from emulator.documents.xmlsafe import parse_xml
from emulator.identity.oidc import MigrationProfile
from emulator.identity.pki import issue_signing_certificate
from emulator.identity.pki import make_ca
from emulator.identity.tokens import SigningKey
from emulator.identity.tokens import TokenIssuer
from emulator.sip.events import Address
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.multipart import BodyPart
from emulator.sip.multipart import MultipartBody
from emulator.transport.memory import LossRule
from emulator.transport.memory import MemoryHub
from nodes import Credentials
from nodes import McServerOptions
from nodes import NodePlan
from nodes import Peer as PlanPeer
from nodes.mc_server import MIGRATION_AUTH_NS
from nodes.mc_server import MIGRATION_AUTH_TYPE
from nodes.mc_server import McServer
from nodes.mc_server import render_migration_request

from .support import Peer
from .support import request
from .support import settle
from .support import sip

PRIMARY_HOST, PARTNER_HOST, CORE_HOST = "127.0.91.3", "127.0.91.13", "127.0.91.11"
PRIMARY = Address("udp", PRIMARY_HOST, 5060)
PARTNER = Address("udp", PARTNER_HOST, 5060)
ISSUER, AUDIENCE = "https://idms.primary.example", "sip:primary.example"
PARTNER_ISSUER, PARTNER_AUDIENCE = "https://idms.partner.example", "sip:partner.example"
MCPTT_SCOPE = mcx_info.MCPTT.scope

# Primary MCPTT IDs, and the partner-assigned ones of the migrants (23.280 §10.16.5.1).
ALICE, BOB, CAROL = ("sip:alice@primary.example", "sip:bob@primary.example",
                     "sip:carol@primary.example")
ALICE_VISITOR, CAROL_VISITOR = "sip:alice.v@partner.example", "sip:carol.v@partner.example"
ALICE_VISITOR_DATA = "sip:alice.v.data@partner.example"
STRANGER = "sip:dave.v@partner.example"
"""A partner identity with no migration profile at the partner."""

WARNING_101 = f'399 {PARTNER_HOST} "101 service authorisation failed"'  # 24.379 §4.4


# ===================================================================== the primary IdMS
@dataclass
class Authority:
    """The primary IdMS as its MC server sees it: a CA and a signing key, the certificates
    written where the MC server's plan names them (as tests/review/test_lifecycle.py)."""

    credentials: Credentials
    signing_key: SigningKey
    issuer: TokenIssuer = field(init=False)

    def __post_init__(self) -> None:
        self.issuer = TokenIssuer(ISSUER, self.signing_key)

    @classmethod
    def create(cls, directory: Path, name: str = "primary") -> Authority:
        now = dt.datetime.now(dt.UTC)
        ca = make_ca(f"MCX Review {name}", now=now)
        signer = issue_signing_certificate(ca, f"{name} idms signing", now=now,
                                           algorithm="ES256")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.crt").write_bytes(ca.certificate_pem())
        (directory / "signing.crt").write_bytes(signer.certificate_pem())
        return cls(Credentials(system_ca=str(directory / "ca.crt"),
                               signing_certificate=str(directory / "signing.crt")),
                   SigningKey.from_credential(signer))

    def token(self, now: float, user: str = ALICE, *, issuer: str = ISSUER,
              scope: tuple[str, ...] = (MCPTT_SCOPE, mcx_info.MCDATA.scope),
              lifetime: int = 3600) -> str:
        """``user``'s primary access token (33.180 B.2.2), signed with this IdMS's key
        under ``issuer`` (another than its own: a token claiming the wrong iss)."""
        return TokenIssuer(issuer, self.signing_key).access_token(
            sub=user.removeprefix("sip:").partition("@")[0], client_id="mcx-client",
            now=now, audience=AUDIENCE, lifetime=lifetime, scope=scope,
            mc_ids={"mcptt_id": user})


# ======================================================================== the MC servers
def primary_plan(authority: Authority) -> NodePlan:
    """The primary MC server: alice and bob may migrate to the partner, carol may not
    (the planner's ``allowed_partners``: MCPTT ID -> ``migrate_to``)."""
    options = McServerOptions(ISSUER, AUDIENCE, allowed_partners={
        ALICE: ("partner",), BOB: ("partner",), CAROL: ()})
    return NodePlan("primary.mc-server", "mc-server", "primary", PRIMARY_HOST, (), options,
                    authority.credentials)


def profile(primary: str, visitor: str) -> MigrationProfile:
    sub = primary.removeprefix("sip:").partition("@")[0]
    return MigrationProfile(ISSUER, sub, primary, visitor.removeprefix("sip:"),
                            {"mcptt_id": visitor, "mcdata_id": visitor.replace("@", ".data@")})


def partner_plan(*, interconnected: bool = True) -> NodePlan:
    """The partner MC server as ``emulator.orchestration.plan`` makes it in the baseline:
    mode interconnection, the migration profiles of alice and carol (their partner
    MCPTT IDs in ``migrant_identities``), its SIP core and (unless ``interconnected`` is
    False) the primary MC server as peers.  It trusts no token of its own IdMS (its plan
    names no signing certificate): the baseline never needs it to."""
    peers = [PlanPeer("partner.sip-core", "sip-core", "udp", CORE_HOST, 5060)]
    if interconnected:
        peers.append(PlanPeer("primary.mc-server", "mc-server", "udp", PRIMARY_HOST, 5060))
    options = McServerOptions(
        PARTNER_ISSUER, PARTNER_AUDIENCE, mode="interconnection",
        migration_profiles=(profile(ALICE, ALICE_VISITOR), profile(CAROL, CAROL_VISITOR)),
        migrant_identities=(ALICE_VISITOR, CAROL_VISITOR), domain="partner.example")
    return NodePlan("partner.mc-server", "mc-server", "partner", PARTNER_HOST, (), options,
                    peers=tuple(peers))


@asynccontextmanager
async def started(plan: NodePlan, hub: MemoryHub) -> AsyncIterator[McServer]:
    mc = McServer(plan)
    await mc.endpoint.listen("udp", plan.host, 5060, hub=hub)
    await mc.start()  # no planned listeners: it serves on the hub
    try:
        yield mc
    finally:
        await mc.stop()


@dataclass
class Systems:
    hub: MemoryHub
    authority: Authority
    primary: McServer | None
    partner: McServer
    core: Peer
    """The partner's SIP core (it sends the third-party REGISTERs)."""


@asynccontextmanager
async def systems(directory: Path, *, loss: LossRule | None = None, interconnected: bool = True,
                  real_primary: bool = True) -> AsyncIterator[Systems]:
    """Both MC servers on one hub (``real_primary`` False: none at the primary's address,
    a test puts its own stub there), and the partner's SIP core."""
    hub = MemoryHub(loss=loss)
    authority = Authority.create(directory / "primary")
    async with started(partner_plan(interconnected=interconnected), hub) as partner:
        core = Peer(hub, CORE_HOST)
        if not real_primary:
            yield Systems(hub, authority, None, partner, core)
            return
        async with started(primary_plan(authority), hub) as primary:
            yield Systems(hub, authority, primary, partner, core)


# ============================================================== the primary side, direct
async def ask(partner: Peer, body: bytes, n: int = 1) -> Response:
    """The partner's MESSAGE, sent to the primary by hand; the primary's final answer."""
    partner.send(request("MESSAGE", f"sip:mcptt-server@{PRIMARY_HOST}:5060",
                         via=f"{PARTNER_HOST}:5060", call_id=f"ask{n}", body=body,
                         extra=(f"Content-Type: {MIGRATION_AUTH_TYPE}",)), PRIMARY)
    await settle(0.05)
    [final] = [r for r in partner.responses()
               if r.call_id == f"ask{n}@review" and r.status >= 200]
    return final


@asynccontextmanager
async def primary_alone(directory: Path) -> AsyncIterator[tuple[McServer, Peer, Authority]]:
    """The primary MC server, and a raw SIP peer at the partner MC server's address."""
    hub = MemoryHub()
    authority = Authority.create(directory)
    async with started(primary_plan(authority), hub) as primary:
        yield primary, Peer(hub, PARTNER_HOST), authority


@pytest.mark.parametrize("body", [
    b"this is not XML",
    b"<migration-authorisation-request xmlns='" + MIGRATION_AUTH_NS.encode() + b"'>"
    b"<access-token>x</migration-authorisation-request>",  # broken: mismatched tag
    b"",  # no body at all
], ids=["not-xml", "broken-xml", "empty"])
async def test_primary_answers_400_to_a_body_that_is_not_xml(tmp_path: Path,
                                                             body: bytes) -> None:
    async with primary_alone(tmp_path) as (_, partner, _):
        response = await ask(partner, body)
        assert response.status == 400
        assert response.reason.startswith("Bad Request (malformed XML: "), response.reason
        assert response.headers.get("Warning") is None


async def test_primary_answers_400_to_a_body_with_a_dtd(tmp_path: Path) -> None:
    """xmlsafe refuses DTDs (billion laughs, XXE): the same 400, saying why."""
    body = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e "x">]>'
            b"<r xmlns='" + MIGRATION_AUTH_NS.encode() + b"'>&e;</r>")
    async with primary_alone(tmp_path) as (_, partner, _):
        response = await ask(partner, body)
        assert response.status == 400
        assert response.reason.startswith("Bad Request (XML refused: "), response.reason


def bad_signature(authority: Authority, now: float) -> str:
    """alice's token with bob's payload: a signature that does not match its bytes."""
    header, _, signature = authority.token(now, ALICE).split(".")
    payload = authority.token(now, BOB).split(".")[1]
    return f"{header}.{payload}.{signature}"


def foreign(directory: Path, now: float) -> str:
    """alice's token from another IdMS (the partner's, say): a key never provisioned."""
    return Authority.create(directory / "foreign", "foreign").token(now, ALICE)


TOKEN_CASES = {
    # case -> (the token for alice, what the reason must say)
    "bad-signature": (lambda a, d, now: bad_signature(a, now), "(signature check failed: "),
    "expired": (lambda a, d, now: a.token(now - 3600, lifetime=60), "(token expired "),
    "wrong-issuer": (lambda a, d, now: a.token(now, issuer="https://idms.evil.example"),
                     "(iss 'https://idms.evil.example' is not the issuer key "),
    "no-mcptt-scope": (lambda a, d, now: a.token(now, scope=(mcx_info.MCDATA.scope,)),
                       f"(scope lacks {MCPTT_SCOPE!r})"),
    "other-idms": (lambda a, d, now: foreign(d, now), "(unknown kid "),
    "no-token": (lambda a, d, now: "", "(not a compact JWS "),
}


@pytest.mark.parametrize("case", list(TOKEN_CASES))
async def test_primary_refuses_an_invalid_access_token_with_403(tmp_path: Path,
                                                                case: str) -> None:
    """The primary validates the token as its own IdMS's MCPTT access token (signature,
    iss, exp, typ, MCPTT scope) and says in the reason what failed."""
    make, expected = TOKEN_CASES[case]
    async with primary_alone(tmp_path) as (primary, partner, authority):
        token = make(authority, tmp_path, primary.now())
        response = await ask(partner, render_migration_request(ALICE_VISITOR, ALICE,
                                                                    token))
        assert response.status == 403
        assert response.reason.startswith("Forbidden ("), response.reason
        assert expected in response.reason, response.reason
        assert response.headers.get("Warning") is None


async def test_primary_refuses_a_token_for_another_user(tmp_path: Path) -> None:
    """bob's valid token cannot migrate alice (nor is alice's ID bound to bob's token)."""
    async with primary_alone(tmp_path) as (primary, partner, authority):
        response = await ask(partner, render_migration_request(
            ALICE_VISITOR, ALICE, authority.token(primary.now(), BOB)))
        assert (response.status, response.reason) == (403,
                                                      "Forbidden (token is for another user)")


async def test_primary_refuses_a_user_with_no_allowed_partner(tmp_path: Path) -> None:
    """carol's profile names no partner system (``allowed_partners`` empty), and dave is
    not in it at all: neither may migrate, valid token or not."""
    async with primary_alone(tmp_path) as (primary, partner, authority):
        for n, user in enumerate((CAROL, "sip:dave@primary.example")):
            response = await ask(partner, render_migration_request(
                CAROL_VISITOR, user, authority.token(primary.now(), user), "partner"), n)
            assert (response.status, response.reason) == (403,
                                                          "Forbidden (user may not migrate)")


async def test_primary_allows_a_user_with_an_allowed_partner(tmp_path: Path) -> None:
    """The positive control of the primary side."""
    async with primary_alone(tmp_path) as (primary, partner, authority):
        response = await ask(partner, render_migration_request(
            ALICE_VISITOR, ALICE, authority.token(primary.now()), "partner"))
        assert response.status == 200


async def test_primary_refuses_a_partner_the_user_may_not_migrate_to(tmp_path: Path) -> None:
    """alice may migrate to "partner" (her migrate_to), not to whichever system asks."""
    async with primary_alone(tmp_path) as (primary, partner, authority):
        for n, asking in enumerate(("elsewhere", "")):
            response = await ask(partner, render_migration_request(
                ALICE_VISITOR, ALICE, authority.token(primary.now()), asking), n)
            assert (response.status, response.reason) == (403,
                                                          "Forbidden (user may not migrate)")


# ============================================== the partner side: third-party REGISTER
def third_party_register(user: str, parts: list[BodyPart], *, n: int = 1,
                         expires: int = 600) -> bytes:
    """The partner SIP core's third-party REGISTER (24.229 §5.4.1.7) for ``user``: the
    UE's REGISTER, with ``parts`` as its body, inside as message/sip (24.379 §7.3.1)."""
    body = MultipartBody.build(parts) if parts else None
    headers = ["REGISTER sip:partner.example SIP/2.0",
               f"Via: SIP/2.0/UDP 127.0.91.21:5060;branch=z9hG4bKin{n};rport",
               "Max-Forwards: 70", f"From: <{user}>;tag=ue", f"To: <{user}>",
               f"Call-ID: inner{n}@review", f"CSeq: {n} REGISTER",
               "Contact: <sip:ue@127.0.91.21:5060>", f"Expires: {expires}"]
    if body is not None:
        headers.append(f"Content-Type: {body.content_type}")
    inner = sip(headers, body.to_bytes() if body is not None else b"")
    return sip([f"REGISTER sip:{PARTNER_HOST}:5060 SIP/2.0",
                f"Via: SIP/2.0/UDP {CORE_HOST}:5060;branch=z9hG4bKtp{n};rport",
                "Max-Forwards: 70", f"From: <sip:scscf@{CORE_HOST}>;tag=core",
                f"To: <{user}>", f"Call-ID: third-party{n}@review", f"CSeq: {n} REGISTER",
                f"Contact: <sip:{CORE_HOST}:5060>", f"Expires: {expires}",
                "Content-Type: message/sip"], inner)


def info(fmt: mcx_info.ServiceInfoFormat, token: str | None, uri: str) -> BodyPart:
    return BodyPart(fmt.mime_type, mcx_info.render(mcx_info.ServiceInfo(fmt, token, uri, "c")))


def migrant_parts(token: str | None, visitor: str = ALICE_VISITOR) -> list[BodyPart]:
    """The info documents a migrated UE sends: its primary access token in each."""
    return [info(mcx_info.MCPTT, token, visitor),
            info(mcx_info.MCDATA, token, visitor.replace("@", ".data@"))]


async def register(s: Systems, user: str, parts: list[BodyPart], *, wait: float = 0.05,
                   n: int = 1) -> Response:
    """The partner MC server's final answer to the third-party REGISTER."""
    s.core.send(third_party_register(user, parts, n=n), PARTNER)
    await settle(wait)
    [final] = [r for r in s.core.responses()
               if r.call_id == f"third-party{n}@review" and r.status >= 200]
    return final


def refused(response: Response, reason: str) -> None:
    """403 with Warning 101 (24.379 §4.4) and exactly ``reason`` in the reason phrase."""
    assert response.status == 403, response
    assert response.headers.get("Warning") == WARNING_101
    assert response.reason == f"Forbidden ({reason})"[:200], response.reason


async def test_partner_without_an_interconnection_refuses(tmp_path: Path) -> None:
    """Interconnection mode, but the plan names no primary MC server to ask."""
    async with systems(tmp_path, interconnected=False) as s:
        assert s.partner.interconnection is None
        token = s.authority.token(s.partner.now())
        delivered = s.hub.delivered
        refused(await register(s, ALICE_VISITOR, migrant_parts(token)),
                "no interconnection to the primary MC system")
        assert s.hub.delivered == delivered + 2, "sent anything but the REGISTER's answer"
        assert s.partner.refusals[-1] == (ALICE_VISITOR,
                                          "no interconnection to the primary MC system")
        assert s.partner.state()["authorised_users"] == 0


@pytest.mark.parametrize("parts, reason", [
    # The mcptt-info without an access token: nothing to show the primary.
    (migrant_parts(None), "no MCPTT access token for the primary MC system"),
    # An mcdata-info (with the token) but no mcptt-info: likewise.
    ([info(mcx_info.MCDATA, "x.y.z", ALICE_VISITOR_DATA)],
     "no MCPTT access token for the primary MC system"),
    # A body with no info document at all.
    ([BodyPart("application/sdp", b"v=0\r\n")],
     "no mcptt/mcdata/mcvideo info document in REGISTER"),
    # An mcptt-info that is not XML.
    ([BodyPart(mcx_info.MCPTT.mime_type, b"<mcpttinfo")],
     f"bad {mcx_info.MCPTT.mime_type}: malformed XML: "),
], ids=["mcptt-info-without-token", "no-mcptt-info", "no-info-document", "broken-info"])
async def test_partner_refuses_a_migrant_without_a_usable_mcptt_token(
        tmp_path: Path, parts: list[BodyPart], reason: str) -> None:
    """Before asking anyone: no MCPTT access token to show the primary, no question."""
    async with systems(tmp_path) as s:
        response = await register(s, ALICE_VISITOR, parts)
        if reason.endswith(": "):  # the parser's own words follow
            assert response.reason.startswith(f"Forbidden ({reason}"), response.reason
            assert response.status == 403 and response.headers.get("Warning") == WARNING_101
        else:
            refused(response, reason)
        assert s.hub.delivered == 2, "the primary was asked"
        assert s.partner.state()["authorised_users"] == 0


async def test_partner_refuses_a_user_without_migration_profile(tmp_path: Path) -> None:
    """dave has no migration profile at the partner: not a migrant, so he is authorised
    as the partner's own user would be, and his primary token is no token of the
    partner's IdMS.  The primary is not asked."""
    async with systems(tmp_path) as s:
        token = s.authority.token(s.partner.now(), "sip:dave@primary.example")
        response = await register(s, STRANGER, migrant_parts(token, STRANGER))
        assert response.status == 403 and response.headers.get("Warning") == WARNING_101
        assert response.reason.startswith("Forbidden (mcptt token refused: unknown kid "), \
            response.reason
        assert s.hub.delivered == 2, "the primary was asked"
        assert s.partner.state()["authorised_users"] == 0


@pytest.mark.parametrize("user, visitor, when, reason", [
    (CAROL, CAROL_VISITOR, 0, "Forbidden (user may not migrate)"),
    (ALICE, ALICE_VISITOR, -3600, "Forbidden (token expired "),
], ids=["may-not-migrate", "expired-token"])
async def test_partner_refuses_when_the_primary_refuses(
        tmp_path: Path, user: str, visitor: str, when: int, reason: str) -> None:
    """The primary MC server answers 403: the partner refuses with W101 and the
    primary's reason, and authorises nobody."""
    async with systems(tmp_path) as s:
        token = s.authority.token(s.partner.now() + when, user, lifetime=60 if when else 3600)
        response = await register(s, visitor, migrant_parts(token, visitor))
        assert response.status == 403 and response.headers.get("Warning") == WARNING_101
        assert response.reason.startswith(f"Forbidden (primary MC system refused: {reason}"), \
            response.reason
        assert s.partner.state()["authorised_users"] == 0
        assert s.partner.refusals[-1][0] == visitor


class StubPrimary(Peer):
    """Stands at the primary MC server's address: answers every MESSAGE with a 100
    Trying, then ``status`` and ``reason``, keeping what it was asked.  (A provisional
    response decides nothing: the partner waits for the final one.)"""

    def __init__(self, hub: MemoryHub, status: int, reason: str | None = None) -> None:
        super().__init__(hub, PRIMARY_HOST, on_message=self._answer)
        self.status, self.reason = status, reason

    def _answer(self, peer: Peer, message: Request | Response, source: Address) -> None:
        if isinstance(message, Request):
            self.send(message.make_response(100).to_bytes(), source)
            self.send(message.make_response(self.status, self.reason, to_tag="primary")
                      .to_bytes(), source)


@pytest.mark.parametrize("status, reason", [
    (403, "Forbidden (for the stub's own reasons)"), (404, "Not Found"),
    (480, "Temporarily Unavailable")])
async def test_partner_refuses_on_any_final_non_2xx_of_the_primary(
        tmp_path: Path, status: int, reason: str) -> None:
    """The primary's final 3xx/4xx is its decision: the partner refuses (403 W101),
    quoting the primary's reason phrase."""
    async with systems(tmp_path, real_primary=False) as s:
        stub = StubPrimary(s.hub, status, reason)
        response = await register(s, ALICE_VISITOR,
                                  migrant_parts(s.authority.token(s.partner.now())))
        refused(response, f"primary MC system refused: {reason}")
        assert len(stub.requests("MESSAGE")) == 1
        assert s.partner.state()["authorised_users"] == 0


@pytest.mark.parametrize("status, reason", [
    (500, "Server Internal Error"), (503, "Service Unavailable")])
async def test_a_primary_that_fails_is_no_refusal_but_a_504(
        tmp_path: Path, status: int, reason: str) -> None:
    """A 5xx is no decision of the primary's: the partner answers 504 (RFC 3261
    §21.5.5), without Warning 101, and authorises nobody."""
    async with systems(tmp_path, real_primary=False) as s:
        StubPrimary(s.hub, status, reason)
        response = await register(s, ALICE_VISITOR,
                                  migrant_parts(s.authority.token(s.partner.now())))
        assert (response.status, response.reason) == (
            504, f"Server Time-out (primary MC system: {reason})")
        assert response.headers.get("Warning") is None
        assert s.partner.state()["authorised_users"] == 0


async def test_partner_asks_the_primary_with_the_migration_request(tmp_path: Path) -> None:
    """What goes over the interconnection: a MESSAGE to the primary MC server with the
    project-defined body naming the partner ID, the primary ID (from the migration
    profile) and the UE's primary access token, untouched."""
    async with systems(tmp_path, real_primary=False) as s:
        stub = StubPrimary(s.hub, 200)
        token = s.authority.token(s.partner.now())
        assert (await register(s, ALICE_VISITOR, migrant_parts(token))).status == 200
        [message] = stub.requests("MESSAGE")
        assert (message.uri.user, message.uri.host) == ("mcptt-server", PRIMARY_HOST)
        assert message.content_type is not None
        assert message.content_type.mime_type == MIGRATION_AUTH_TYPE
        root = parse_xml(message.body)
        ns = f"{{{MIGRATION_AUTH_NS}}}"
        assert root.tag == f"{ns}migration-authorisation-request"
        assert root.findtext(f"{ns}partner-mc-system") == "partner"
        assert (root.findtext(f"{ns}partner-mc-service-id"),
                root.findtext(f"{ns}primary-mc-service-id"),
                root.findtext(f"{ns}access-token")) == (ALICE_VISITOR, ALICE, token)


async def test_partner_refuses_when_the_primary_never_answers(tmp_path: Path) -> None:
    """Everything to the primary is lost: the partner's MESSAGE is retransmitted (Timer
    E) until Timer F (64·T1, RFC 3261 §17.1.2.2) ends its transaction with a local 408
    (§8.1.3.1).  The primary decided nothing: 504 (RFC 3261 §21.5.5), no Warning,
    no earlier than Timer F."""
    loop = asyncio.get_running_loop()
    to_primary: LossRule = lambda data, source, destination: destination == PRIMARY  # noqa: E731
    async with systems(tmp_path, loss=to_primary) as s:
        answered_at: list[float] = []
        s.core.on_message = lambda peer, message, source: answered_at.append(loop.time())
        t1 = s.partner.endpoint.layer.timers.t1
        token = s.authority.token(s.partner.now())
        t0 = loop.time()
        response = await register(s, ALICE_VISITOR, migrant_parts(token), wait=64 * t1 + 1)
        assert (response.status, response.reason) == (
            504, "Server Time-out (primary MC system: Request Timeout)")
        assert response.headers.get("Warning") is None
        assert t0 + 64 * t1 <= answered_at[-1] < t0 + 64 * t1 + 1
        assert s.hub.dropped > 1, "the MESSAGE was not retransmitted"
        assert s.partner.state()["authorised_users"] == 0


async def test_partner_authorises_a_migrant_the_primary_allows(tmp_path: Path) -> None:
    """The positive control: the primary allows alice, the partner authorises her
    partner identity for MCPTT and MCData (from her migration profile), her primary
    identity noted."""
    async with systems(tmp_path) as s:
        token = s.authority.token(s.partner.now())
        response = await register(s, ALICE_VISITOR, migrant_parts(token))
        assert response.status == 200 and response.headers.get("Warning") is None
        assert s.partner.state()["authorised_users"] == 1
        user = s.partner.users.get(ALICE_VISITOR, s.partner.now())
        assert user is not None and user.primary_identity == ALICE
        assert dict(user.services) == {"mcptt": ALICE_VISITOR, "mcdata": ALICE_VISITOR_DATA}

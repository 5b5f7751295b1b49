"""Lifecycles nothing else tested: registrar bindings and MC service authorisations that
run out, and a gateway's UE pool filling up and emptying again with detach.

Every node runs on its own clock, the event loop's (``SipEndpoint.now``; the MC server
reads ``wall_clock``, which advances with it), and these tests run in simulated time
(tests/support/simtime.py): waiting a registration out is an exact, instant jump of the
clock, never a real sleep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from emulator.documents import affiliation
from emulator.documents import mcx_info
from emulator.documents import poc_settings
from emulator.documents import reginfo
from emulator.documents.groups import GroupDocument
from emulator.identity.pki import issue_signing_certificate
from emulator.identity.pki import make_ca
from emulator.identity.tokens import SigningKey
from emulator.identity.tokens import TokenIssuer
from emulator.sip.events import Address
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.multipart import BodyPart
from emulator.sip.multipart import MultipartBody
from emulator.transport.memory import MemoryHub
from nodes import Credentials
from nodes import Gateway
from nodes import GatewayOptions
from nodes import Listener
from nodes import McServer
from nodes import McServerOptions
from nodes import NodePlan
from nodes import Peer as PlanPeer
from nodes import SipCoreOptions
from nodes.sip_core import EXPIRY_SWEEP
from nodes.sip_core import SipCore

from .support import Peer
from .support import request
from .support import settle
from .support import sip

DOMAIN = "mcx.example"
ALICE = f"sip:alice@{DOMAIN}"


async def until_time(t: float) -> None:
    """Let simulated time run up to ``t`` on the loop's clock."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, t - loop.time()))


def answering(status: int = 200) -> Callable[[Peer, Request | Response, Address], None]:
    """A Peer callback that answers every request but ACK with ``status``."""

    def answer(peer: Peer, message: Request | Response, source: Address) -> None:
        if isinstance(message, Request) and message.method != "ACK":
            peer.send(message.make_response(status, to_tag="peer").to_bytes(), source)

    return answer


# =========================================================================== registrar
CORE_HOST, MC_HOST, UE_HOST = "127.0.89.1", "127.0.89.3", "127.0.89.2"
CORE = Address("udp", CORE_HOST, 5060)
TERM = f"Route: <sip:term@{CORE_HOST}:5060;lr>"


class Watcher(Peer):
    """The UE: answers what it is sent (NOTIFY, MESSAGE) with 200, noting when."""

    def __init__(self, hub: MemoryHub, host: str) -> None:
        super().__init__(hub, host, on_message=self._answer)
        self.notified: list[tuple[float, Request]] = []

    def _answer(self, peer: Peer, message: Request | Response, source: Address) -> None:
        if isinstance(message, Request) and message.method != "ACK":
            if message.method == "NOTIFY":
                self.notified.append((asyncio.get_running_loop().time(), message))
            self.send(message.make_response(200, to_tag="ue").to_bytes(), source)


def register(expires: int, cseq: int) -> bytes:
    """alice's REGISTER from her UE, one Call-ID so refreshes are ordered (§10.2.4)."""
    return sip([f"REGISTER sip:{DOMAIN} SIP/2.0",
                f"Via: SIP/2.0/UDP {UE_HOST}:5060;branch=z9hG4bKlife{cseq};rport",
                "Max-Forwards: 70", f"From: <{ALICE}>;tag=ue", f"To: <{ALICE}>",
                "Call-ID: life-reg@review", f"CSeq: {cseq} REGISTER",
                f"Contact: <sip:alice@{UE_HOST}:5060>", f"Expires: {expires}"])


def subscribe() -> bytes:
    return sip([f"SUBSCRIBE {ALICE} SIP/2.0",
                f"Via: SIP/2.0/UDP {UE_HOST}:5060;branch=z9hG4bKlifesub;rport",
                "Max-Forwards: 70", f"From: <{ALICE}>;tag=w", f"To: <{ALICE}>",
                "Call-ID: life-sub@review", "CSeq: 1 SUBSCRIBE", "Event: reg",
                "Accept: application/reginfo+xml", f"Contact: <sip:alice@{UE_HOST}:5060>",
                "Expires: 600000"])


def core_plan(state_file: str | None = None) -> NodePlan:
    return NodePlan("core", "sip-core", "review", CORE_HOST, (), SipCoreOptions(DOMAIN),
                    peers=(PlanPeer("mc", "mc-server", "udp", MC_HOST, 5060),),
                    state_file=state_file)


@asynccontextmanager
async def registrar(state_file: str | None = None, *, mc_answers: bool = True
                    ) -> AsyncIterator[tuple[SipCore, Peer, Watcher]]:
    """A started SIP core (its expiry sweep running, as ``start()`` runs it) on a hub, its
    MC server answering 200 to everything (or nothing), and alice's UE."""
    hub = MemoryHub()
    core = SipCore(core_plan(state_file))
    await core.endpoint.listen("udp", CORE_HOST, 5060, hub=hub)
    await core.start()  # no planned listeners: it serves on the hub
    mc = Peer(hub, MC_HOST, on_message=answering() if mc_answers else None)
    ue = Watcher(hub, UE_HOST)
    try:
        yield core, mc, ue
    finally:
        await core.stop()


async def terminating(mc: Peer) -> int:
    """A MESSAGE for alice, back from the MC server on the terminating leg (Route term):
    the status the core's routing gives it."""
    before = len(mc.responses())
    mc.send(request("MESSAGE", ALICE, via=f"{MC_HOST}:5060", extra=(TERM,)), CORE)
    await settle(0.05)
    [response] = mc.responses()[before:]
    return response.status


def expired_contacts(ue: Watcher) -> list[reginfo.ContactInfo]:
    return [c for _, n in ue.notified for r in reginfo.parse(n.body).registrations
            for c in r.contacts if (c.state, c.event) == ("terminated", "expired")]


async def test_a_binding_that_is_not_refreshed_ends_at_its_expiry() -> None:
    """RFC 3261 §10.2.1 / §10.3: a binding lasts Expires seconds.  Until then the core
    routes alice's terminating requests to her contact; after it (within one sweep) the
    binding is gone from state(), her requests get 480, and her reg-event subscriber
    hears contact event ``expired`` with the subscription terminated (RFC 3680 §5.1,
    24.229 §5.4.2.1.2)."""
    async with registrar() as (core, mc, ue):
        loop = asyncio.get_running_loop()
        ue.send(register(60, 1), CORE)
        t0 = loop.time()
        await settle(0.05)
        [ok] = ue.responses()
        assert ok.status == 200 and ok.contacts[0].expires == 60
        ue.send(subscribe(), CORE)
        await settle(0.05)
        assert len(ue.notified) == 1  # the subscription's first NOTIFY: active
        assert core.state()["bindings"] == 1 and core.state()["registered_aors"] == 1

        await until_time(t0 + 59)
        assert await terminating(mc) == 200
        assert [m.uri.host for m in ue.requests("MESSAGE")] == [UE_HOST]
        assert expired_contacts(ue) == [] and core.state()["bindings"] == 1

        await until_time(t0 + 60 + EXPIRY_SWEEP + 0.01)
        # Gone by the sweep, with no request needed to notice it.
        assert core.state()["bindings"] == 0 and core.state()["registered_aors"] == 0
        assert core.state()["reg_event_subscriptions"] == 0
        [contact] = expired_contacts(ue)
        assert contact.uri == f"sip:alice@{UE_HOST}:5060"
        when, last = ue.notified[-1]
        assert t0 + 60 <= when <= t0 + 60 + EXPIRY_SWEEP + 0.01
        assert (last.headers.get("Subscription-State") or "").startswith("terminated")
        assert reginfo.parse(last.body).registrations[0].state == "terminated"
        assert await terminating(mc) == 480
        assert len(ue.requests("MESSAGE")) == 1  # nothing more reached the old contact


async def test_a_refresh_before_expiry_keeps_the_binding() -> None:
    """§10.2.4/§10.3 step 7: a re-REGISTER (same Call-ID, higher CSeq) before the binding
    runs out gives it a new Expires from then: still routed past the first deadline, gone
    only after the refreshed one."""
    async with registrar() as (core, mc, ue):
        loop = asyncio.get_running_loop()
        ue.send(register(60, 1), CORE)
        t0 = loop.time()
        await settle(0.05)
        ue.send(subscribe(), CORE)
        await until_time(t0 + 50)
        ue.send(register(60, 2), CORE)  # refreshed at t0 + 50: now until t0 + 110
        await settle(0.05)
        assert [r.status for r in ue.responses() if r.cseq.method == "REGISTER"] == [200, 200]

        await until_time(t0 + 100)
        assert core.state()["bindings"] == 1
        assert expired_contacts(ue) == []
        assert await terminating(mc) == 200

        await until_time(t0 + 110 + EXPIRY_SWEEP + 0.01)
        assert core.state()["bindings"] == 0
        assert len(expired_contacts(ue)) == 1
        assert await terminating(mc) == 480


async def test_third_party_registers_of_a_user_keep_one_call_id_and_users_differ() -> None:
    """RFC 3261 §10.2: a UA uses one Call-ID for its registrations in a boot cycle; the
    S-CSCF is that UA towards the MC server (24.229 §5.4.1.7): initial, refresh and
    de-registration of alice share one, ascending CSeq; bob's is another."""
    async with registrar() as (_core, mc, ue):
        bob = "sip:bob@" + DOMAIN
        for expires, cseq in ((60, 1), (60, 2), (0, 3)):
            ue.send(register(expires, cseq), CORE)
            await settle(0.05)
        ue.send(register(60, 1).replace(b"alice", b"bob").replace(b"life", b"bob"), CORE)
        await settle(0.05)
        sent = mc.requests("REGISTER")
        alice = [r for r in sent if r.to.uri.aor == ALICE]
        assert [r.expires for r in alice] == [60, 60, 0]
        assert len({r.call_id for r in alice}) == 1
        cseqs = [r.cseq.seq for r in alice]
        assert cseqs == sorted(cseqs) and len(set(cseqs)) == 3
        [for_bob] = [r for r in sent if r.to.uri.aor == bob]
        assert for_bob.call_id != alice[0].call_id
        assert alice[0].call_id.endswith(f"@{CORE_HOST}")


async def test_stopping_the_core_before_the_mc_server_answers_keeps_the_binding(
        tmp_path: Path) -> None:
    """The core answered alice's REGISTER 200, then stops while its third-party REGISTER
    (24.229 §5.4.1.7) is unanswered.  The 503 its closing endpoint gives that transaction
    is no answer of the MC server: it must not de-register her (no NOTIFY ``rejected``),
    and what the core keeps across a restart (nodes.journal) still holds her binding."""
    state_file = str(tmp_path / "core.journal")
    async with registrar(state_file, mc_answers=False) as (core, mc, ue):
        ue.send(register(600, 1), CORE)
        await settle(0.05)
        ue.send(subscribe(), CORE)
        await settle(0.05)
        assert [r.status for r in ue.responses()] == [200, 200] and mc.requests("REGISTER")
        assert core.state()["bindings"] == 1
    await settle(0.05)  # whatever the stop sent has arrived
    assert ue.notified == [], "told the watcher the MC server refused"
    restarted = SipCore(core_plan(state_file))
    await restarted.endpoint.listen("udp", CORE_HOST, 5060, hub=MemoryHub())
    await restarted.start()
    try:
        assert restarted.state()["bindings"] == 1
    finally:
        await restarted.stop()


# =========================================================================== MC server
MC2_HOST, CORE2_HOST = "127.0.89.13", "127.0.89.11"
MC2 = Address("udp", MC2_HOST, 5060)
ISSUER, AUDIENCE = "https://idms.mcx.example", "https://mcx.example"
BOB = f"sip:bob@{DOMAIN}"
MCDATA_IDS = {ALICE: f"sip:alice.data@{DOMAIN}", BOB: f"sip:bob.data@{DOMAIN}"}
GROUP = f"sip:fire-1@{DOMAIN}"
WARNING_101 = "101 service authorisation failed"  # 24.379 §4.4 warn-text


@dataclass
class Authority:
    """The system's IdMS as far as the MC server is concerned: a CA and a signing key,
    the certificates written where the MC server's plan names them."""

    credentials: Credentials
    issuer: TokenIssuer

    @classmethod
    def create(cls, directory: Path) -> Authority:
        now = dt.datetime.now(dt.UTC)
        ca = make_ca("MCX Review", now=now)
        signer = issue_signing_certificate(ca, "idms signing", now=now, algorithm="ES256")
        (directory / "ca.crt").write_bytes(ca.certificate_pem())
        (directory / "signing.crt").write_bytes(signer.certificate_pem())
        return cls(Credentials(system_ca=str(directory / "ca.crt"),
                               signing_certificate=str(directory / "signing.crt")),
                   TokenIssuer(ISSUER, SigningKey.from_credential(signer)))

    def token(self, now: float, user: str = ALICE) -> str:
        """``user``'s access token for MCPTT and MCData, valid for an hour: longer than
        any authorisation below, so what ends one is its own expiry, never the token's."""
        return self.issuer.access_token(
            sub=name(user), client_id="mcx-client", now=now, audience=AUDIENCE,
            lifetime=3600, scope=(mcx_info.MCPTT.scope, mcx_info.MCDATA.scope),
            mc_ids={"mcptt_id": user, "mcdata_id": MCDATA_IDS[user]})


def name(user: str) -> str:
    return user.removeprefix("sip:").partition("@")[0]


def info_parts(token: str, user: str) -> list[BodyPart]:
    return [BodyPart(fmt.mime_type, mcx_info.render(mcx_info.ServiceInfo(fmt, token, uri, "c")))
            for fmt, uri in ((mcx_info.MCPTT, user), (mcx_info.MCDATA, MCDATA_IDS[user]))]


def third_party_register(token: str, expires: int, cseq: int, user: str = ALICE) -> bytes:
    """The SIP core's third-party REGISTER (24.229 §5.4.1.7): the user's own REGISTER,
    info bodies and tokens inside, as message/sip (24.379 §7.3.1)."""
    body = MultipartBody.build(info_parts(token, user))
    who = name(user)
    inner = sip([f"REGISTER sip:{DOMAIN} SIP/2.0",
                 f"Via: SIP/2.0/UDP {UE_HOST}:5060;branch=z9hG4bKin{who}{cseq};rport",
                 "Max-Forwards: 70", f"From: <{user}>;tag=ue", f"To: <{user}>",
                 f"Call-ID: inner-{who}@review", f"CSeq: {cseq} REGISTER",
                 f"Contact: <sip:{who}@{UE_HOST}:5060>", f"Expires: {expires}",
                 f"Content-Type: {body.content_type}"], body.to_bytes())
    return sip([f"REGISTER sip:{MC2_HOST}:5060 SIP/2.0",
                f"Via: SIP/2.0/UDP {CORE2_HOST}:5060;branch=z9hG4bKtp{who}{cseq};rport",
                "Max-Forwards: 70", f"From: <sip:scscf@{CORE2_HOST}>;tag=core",
                f"To: <{user}>", f"Call-ID: third-party-{who}@review",
                f"CSeq: {cseq} REGISTER", f"Contact: <sip:{CORE2_HOST}:5060>",
                f"Expires: {expires}", "Content-Type: message/sip"], inner)


def publish(token: str | None, expires: int, n: int, *, via: str = CORE2_HOST,
            user: str = ALICE) -> bytes:
    """The user's PUBLISH of poc-settings (24.379 §7.3.3), as the S-CSCF passes it on,
    the user asserted; ``token`` None: no bodies (an ``Expires: 0`` ends the
    authorisation)."""
    headers = [f"PUBLISH sip:mcptt-server@{MC2_HOST} SIP/2.0",
               f"Via: SIP/2.0/UDP {via}:5060;branch=z9hG4bKpub{name(user)}{n};rport",
               "Max-Forwards: 70", f"From: <{user}>;tag=ue", f"To: <{user}>",
               f"Call-ID: publish-{name(user)}{n}@review", "CSeq: 1 PUBLISH",
               "Event: poc-settings", f"P-Asserted-Identity: <{user}>",
               f"Expires: {expires}"]
    if token is None:
        return sip(headers)
    settings = poc_settings.render(poc_settings.PocSettings("urn:uuid:00000000-0000-4000-8000-"
                                                            "000000000001", "automatic"))
    body = MultipartBody.build([BodyPart(poc_settings.MIME_TYPE, settings),
                                *info_parts(token, user)])
    return sip([*headers, f"Content-Type: {body.content_type}"], body.to_bytes())


@asynccontextmanager
async def mc_server(directory: Path, hub: MemoryHub | None = None
                    ) -> AsyncIterator[tuple[McServer, Peer, Authority]]:
    """An MC server trusting a fresh IdMS's tokens, serving the group ``GROUP`` of alice
    and bob, on a hub with its SIP core, which answers what the MC server sends on (the
    terminating leg): 486 to an INVITE, 200 to anything else."""
    authority = Authority.create(directory)
    hub = hub or MemoryHub()
    options = McServerOptions(ISSUER, AUDIENCE, domain=DOMAIN,
                              groups=(GroupDocument(GROUP, "Fire 1", (ALICE, BOB)),))
    plan = NodePlan("mc", "mc-server", "review", MC2_HOST, (), options, authority.credentials,
                    peers=(PlanPeer("core", "sip-core", "udp", CORE2_HOST, 5060),))
    mc = McServer(plan)
    await mc.endpoint.listen("udp", MC2_HOST, 5060, hub=hub)
    await mc.start()
    def answer(peer: Peer, message: Request | Response, source: Address) -> None:
        if isinstance(message, Request) and message.method != "ACK":
            status = 486 if message.method == "INVITE" else 200
            peer.send(message.make_response(status, to_tag="core").to_bytes(), source)

    core = Peer(hub, CORE2_HOST, on_message=answer)
    try:
        yield mc, core, authority
    finally:
        await mc.stop()


async def originating(core: Peer, method: str, uri: str, call_id: str,
                      extra: tuple[str, ...] = (), body: bytes = b"") -> Response:
    """alice's request on her originating leg: S-CSCF -> AS (24.229 §5.4.3.2), her
    identity asserted.  The MC server's final answer."""
    core.send(request(method, uri, via=f"{CORE2_HOST}:5060", call_id=call_id, body=body,
                      extra=(f"Route: <sip:{MC2_HOST}:5060;lr>",
                             f"Route: <sip:term@{CORE2_HOST}:5060;lr>", *extra,
                             f"P-Asserted-Identity: <{ALICE}>")), MC2)
    await settle(0.05)
    [final] = [r for r in core.responses()
               if r.call_id == f"{call_id}@review" and r.status >= 200]
    return final


async def short_data(core: Peer, n: int) -> Response:
    """alice sends an SDS (MESSAGE, MCData)."""
    return await originating(core, "MESSAGE", f"sip:bob@{DOMAIN}", f"sds{n}")


def served(core: Peer) -> int:
    """How many of alice's MESSAGEs the MC server let through to the terminating leg."""
    return len(core.requests("MESSAGE"))


def refused_with_warning_101(response: Response) -> bool:
    return response.status == 403 and WARNING_101 in (response.headers.get("Warning") or "")


async def authorise(core: Peer, authority: Authority, mc: McServer, how: str,
                    expires: int, n: int, user: str = ALICE) -> Response:
    """Authorise ``user`` for ``expires`` s by third-party REGISTER or by PUBLISH."""
    token = authority.token(mc.now(), user)
    data = third_party_register(token, expires, n, user) if how == "register" else \
        publish(token, expires, n, user=user)
    before = len(core.responses())
    core.send(data, MC2)
    await settle(0.05)
    [answer] = [r for r in core.responses()[before:] if r.cseq.method in ("REGISTER",
                                                                           "PUBLISH")]
    return answer


async def re_register(core: Peer, token: str, expires: int, n: int) -> Response:
    """alice's third-party REGISTER number ``n`` with ``token``: the MC server's answer."""
    before = len(core.responses())
    core.send(third_party_register(token, expires, n), MC2)
    await settle(0.05)
    [answer] = [r for r in core.responses()[before:] if r.cseq.method == "REGISTER"]
    return answer


async def test_the_same_documents_are_not_checked_again_while_their_tokens_hold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A UE re-registers with the info documents and tokens it registered with: while
    every token is acceptable, the MC server renews the decision those very bytes had,
    without checking the tokens again; a changed document is checked; once a token has
    expired (past the leeway), the same bytes are refused as they would be if checked."""
    async with mc_server(tmp_path) as (mc, core, authority):
        checked: list[str] = []
        validate = mc.authoriser.own_tokens.validate

        def counting(token: str | bytes, **kwargs: Any) -> dict[str, Any]:
            checked.append(str(token))
            return validate(token, **kwargs)

        monkeypatch.setattr(mc.authoriser.own_tokens, "validate", counting)
        t0 = asyncio.get_running_loop().time()
        token = authority.token(mc.now())
        assert (await re_register(core, token, 7200, 1)).status == 200
        assert len(checked) == 2  # the MCPTT and the MCData document
        first = mc.users.get(ALICE, mc.now())
        assert first is not None
        await until_time(t0 + 600)
        assert (await re_register(core, token, 7200, 2)).status == 200
        assert len(checked) == 2  # the same bytes: not checked again
        renewed = mc.users.get(ALICE, mc.now())
        assert renewed is not None and renewed.services == first.services
        assert renewed.expires_at == pytest.approx(first.expires_at + 600)

        tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        refused = await re_register(core, tampered, 7200, 3)
        assert refused_with_warning_101(refused) and len(checked) == 3

        # The token lives an hour from t0; the leeway is 30 s (33.180 B.2.1).
        await until_time(t0 + 3600 + 25)
        assert (await re_register(core, token, 7200, 4)).status == 200
        assert len(checked) == 3
        await until_time(t0 + 3600 + 35)
        expired = await re_register(core, token, 7200, 5)
        assert refused_with_warning_101(expired), expired
        assert "expired" in (expired.reason or "") and len(checked) == 4


@pytest.mark.parametrize("how", ["register", "publish"])
async def test_an_mc_service_authorisation_ends_at_its_expiry(tmp_path: Path,
                                                              how: str) -> None:
    """24.379 §7.3.1 (third-party REGISTER) and §7.3.3 (PUBLISH): the authorisation lasts
    the request's Expires.  Within it alice's SDS is served; after it (her token still
    valid) it is refused like any unauthorised request: 403 with Warning 101 (24.379
    §4.4), and nothing is passed on."""
    async with mc_server(tmp_path) as (mc, core, authority):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        answer = await authorise(core, authority, mc, how, 120, 1)
        assert answer.status == 200
        if how == "publish":
            assert answer.headers.get("Expires") == "120"
        await until_time(t0 + 119)
        assert (await short_data(core, 1)).status == 200 and served(core) == 1
        assert mc.state()["authorised_users"] == 1
        await until_time(t0 + 121)
        # Not counted once lapsed, though no request of anyone's came by since.
        assert mc.state()["authorised_users"] == 0
        refused = await short_data(core, 2)
        assert refused_with_warning_101(refused), refused
        assert served(core) == 1 and mc.state()["authorised_users"] == 0


@pytest.mark.parametrize("how", ["register", "publish"])
async def test_a_refreshed_mc_service_authorisation_outlives_its_first_expiry(
        tmp_path: Path, how: str) -> None:
    """A refresh before the end (a re-REGISTER's third-party REGISTER, or a new PUBLISH)
    restarts the authorisation's lifetime from then."""
    async with mc_server(tmp_path) as (mc, core, authority):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert (await authorise(core, authority, mc, how, 120, 1)).status == 200
        await until_time(t0 + 100)
        assert (await authorise(core, authority, mc, how, 120, 2)).status == 200
        await until_time(t0 + 200)  # past the first expiry, within the refreshed one
        assert (await short_data(core, 1)).status == 200 and served(core) == 1
        await until_time(t0 + 222)
        assert refused_with_warning_101(await short_data(core, 2))
        assert served(core) == 1


async def test_publish_expires_zero_ends_the_authorisation_but_only_from_the_core(
        tmp_path: Path) -> None:
    """24.379 §7.3.5: a PUBLISH with Expires 0 ends the user's authorisation at once.
    Like the third-party REGISTER (24.229 §5.4.1.7), it counts only from the system's own
    S-CSCF, which asserted the user (RFC 3325 §5): anyone else reaching the MC server
    directly, asserting alice, is refused and cannot end her service."""
    hub = MemoryHub()
    async with mc_server(tmp_path, hub) as (mc, core, authority):
        assert (await authorise(core, authority, mc, "register", 600, 1)).status == 200
        outsider = Peer(hub, "127.0.89.66")
        outsider.send(publish(None, 0, 2, via="127.0.89.66"), MC2)
        await settle(0.05)
        assert [r.status for r in outsider.responses()] == [403]
        assert (await short_data(core, 1)).status == 200, "an outsider ended her service"
        core.send(publish(None, 0, 3), MC2)
        await settle(0.05)
        assert [r.status for r in core.responses() if r.cseq.method == "PUBLISH"] == [200]
        assert refused_with_warning_101(await short_data(core, 2))


# =========================================================================== gateway
GW_HOST = "127.0.0.1"
"""Its HTTP attach API and TCP listener are real sockets (127.0.0.1, ephemeral ports);
its UDP SIP is on the hub."""
GW = Address("udp", GW_HOST, 5060)
CORE3_HOST = "127.0.89.31"
POOL = ("127.0.89.21", "127.0.89.22")


class Core(Peer):
    """The served SIP core: 200 to REGISTER (Service-Route, P-Associated-URI, the
    contact), 200 to everything else; what it received stays in its inbox."""

    def __init__(self, hub: MemoryHub) -> None:
        super().__init__(hub, CORE3_HOST, on_message=self._answer)

    def _answer(self, peer: Peer, message: Request | Response, source: Address) -> None:
        if not isinstance(message, Request) or message.method == "ACK":
            return
        response = message.make_response(200, to_tag="core")
        if message.method == "REGISTER":
            response.headers.add("Contact", f"{message.headers.get('Contact')};expires=600")
            response.headers.add("Service-Route", f"<sip:orig@{CORE3_HOST}:5060;lr>")
            response.headers.add("P-Associated-URI", f"<{ALICE}>")
        self.send(response.to_bytes(), source)


@asynccontextmanager
async def gateway(pool: tuple[str, ...], hub: MemoryHub | None = None, *, tcp: bool = False
                  ) -> AsyncIterator[tuple[Gateway, aiohttp.ClientSession]]:
    """A started gateway with its attach API (plain HTTP: no credentials in its plan), and
    an HTTP client for it."""
    listeners: tuple[Listener, ...] = (Listener("https", GW_HOST, 0),)
    if tcp:
        listeners += (Listener("tcp", GW_HOST, 0),)
    plan = NodePlan("visited.gateway", "gateway", "visited", GW_HOST, listeners,
                    GatewayOptions("visited", "001-02", pool),
                    peers=(PlanPeer("core", "sip-core", "udp", CORE3_HOST, 5060),))
    gw = Gateway(plan)
    if hub is not None:
        await gw.endpoint.listen("udp", GW_HOST, 5060, hub=hub)
    await gw.start()
    try:
        async with aiohttp.ClientSession(gw.http.url) as http:
            yield gw, http
    finally:
        await gw.stop()


async def attach(http: aiohttp.ClientSession, ue: str) -> tuple[int, dict[str, Any]]:
    async with http.post("/attach", json={"ue": ue}) as response:
        return response.status, await response.json()


async def detach(http: aiohttp.ClientSession, address: str) -> tuple[int, dict[str, Any]]:
    async with http.delete(f"/attach/{address}") as response:
        return response.status, await response.json()


async def test_attach_fills_the_pool_then_503_and_a_detach_frees_an_address() -> None:
    """The attach API (README, project-defined): each attach holds one pool address; with
    none left the next gets 503 ``unavailable`` saying so, while an attached UE attaching
    again keeps its address.  A detach gives the address back, a second detach of it is
    404, and the next UE gets that address."""
    async with gateway(POOL, MemoryHub()) as (gw, http):
        assert await attach(http, "ue-a") == (200, {
            "ue_address": POOL[0], "plmn_id": "001-02",
            "p_cscf": {"host": GW_HOST, "port": 5060, "tls_port": None, "transports": ["udp"]}})
        status, body = await attach(http, "ue-b")
        assert (status, body["ue_address"]) == (200, POOL[1])
        assert gw.state()["attachments"] == 2

        status, body = await attach(http, "ue-c")
        assert status == 503 and body["error"] == "unavailable"
        assert "pool exhausted" in body["error_description"]
        status, body = await attach(http, "ue-a")  # re-attach: same address, pool full
        assert (status, body["ue_address"]) == (200, POOL[0])

        assert await detach(http, POOL[0]) == (200, {"detached": POOL[0]})
        assert gw.state()["attachments"] == 1
        assert gw.state()["attached"] == {POOL[1]: "ue-b"}
        status, body = await detach(http, POOL[0])
        assert (status, body["error"]) == (404, "not_found")

        status, body = await attach(http, "ue-c")
        assert (status, body["ue_address"]) == (200, POOL[0])
        assert gw.state()["attached"] == {POOL[0]: "ue-c", POOL[1]: "ue-b"}
        status, body = await attach(http, "ue-a")  # ue-a detached: a new UE, no room
        assert status == 503


async def test_after_detach_the_gateway_relays_nothing_from_or_to_the_address() -> None:
    """P-CSCF (24.229 §5.2; README: the gateway refuses SIP from any address that is not
    attached): while attached and registered alice's MESSAGE is relayed to the core; once
    detached, the same MESSAGE gets 403 and never reaches the core, her ACKs are dropped,
    and a request from the core for her old address gets 404, not a relay."""
    hub = MemoryHub()
    core = Core(hub)
    async with gateway(POOL, hub) as (gw, http):
        status, body = await attach(http, "ue-a")
        assert status == 200
        address = body["ue_address"]
        ue = Peer(hub, address)
        ue.send(request("REGISTER", f"sip:{DOMAIN}", via=f"{address}:5060", extra=(
            f"Contact: <sip:alice@{address}:5060>", "Expires: 600")), GW)
        await settle(0.05)
        ue.send(request("MESSAGE", f"sip:bob@{DOMAIN}", via=f"{address}:5060"), GW)
        await settle(0.05)
        ack = request("ACK", f"sip:bob@{DOMAIN}", via=f"{address}:5060", to_tag="t",
                      extra=(f"Route: <sip:{CORE3_HOST}:5060;lr>",))
        ue.send(ack, GW)
        await settle(0.05)
        assert [r.status for r in ue.responses()] == [200, 200]
        assert len(core.requests("MESSAGE")) == 1 and len(core.requests("ACK")) == 1

        assert (await detach(http, address))[0] == 200
        assert gw.state()["attachments"] == 0
        before = len(core.inbox)
        ue.send(request("MESSAGE", f"sip:bob@{DOMAIN}", via=f"{address}:5060"), GW)
        ue.send(ack, GW)
        await settle(0.05)
        last = ue.responses()[-1]
        assert (last.status, last.reason) == (403, "Forbidden (not attached to visited)")
        assert core.inbox[before:] == [], "relayed from a detached address"

        core.send(request("MESSAGE", f"sip:alice@{address}:5060", via=f"{CORE3_HOST}:5060",
                          extra=(f"Route: <sip:term@{GW_HOST}:5060;lr>",)), GW)
        await settle(0.05)
        assert ue.requests() == []
        assert [r.status for r in core.responses() if r.cseq.method == "MESSAGE"][-1] == 404


async def test_ues_behind_the_gateway_share_one_service_route() -> None:
    """The registrar gives every UE the same Service-Route (24.229 §5.4.1.2.2): the gateway
    keeps it once for all its UEs, not a copy per registered UE (memory per UE,
    benchmarks/scale.py), and each UE's context holds exactly what the 200 said."""
    hub = MemoryHub()
    Core(hub)
    async with gateway(POOL, hub) as (gw, _):
        contexts = []
        for ue in ("ue-a", "ue-b"):
            context = gw.attach(ue)
            Peer(hub, context.address).send(request(
                "REGISTER", f"sip:{DOMAIN}", via=f"{context.address}:5060", call_id=ue,
                extra=(f"Contact: <sip:{ue}@{context.address}:5060>", "Expires: 600")), GW)
            contexts.append(context)
        await settle(0.05)
        assert all(c.registered for c in contexts)
        assert contexts[0].service_route == (f"<sip:orig@{CORE3_HOST}:5060;lr>",)
        assert contexts[0].service_route is contexts[1].service_route


async def test_a_detached_address_is_refused_at_tcp_accept() -> None:
    """TCP from an address is admitted only while it is attached, decided at accept time
    (before any parse): attached, a connection is served (its OPTIONS gets the gateway's
    403 "register first"); detached, the connection it had is closed by the gateway, and
    a new one is closed at once, counted as refused."""
    async with gateway((GW_HOST,), tcp=True) as (gw, http):
        port = gw.endpoint.local("tcp").port
        assert not gw.admits_connection(GW_HOST)
        assert (await attach(http, "ue-a"))[1]["ue_address"] == GW_HOST
        assert gw.admits_connection(GW_HOST)
        reader, writer = await asyncio.open_connection(GW_HOST, port)
        try:
            writer.write(request("OPTIONS", f"sip:{DOMAIN}", via=f"{GW_HOST}:5060"))
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert answer.startswith(b"SIP/2.0 403 Forbidden (register first)")

            assert (await detach(http, GW_HOST))[0] == 200
            assert not gw.admits_connection(GW_HOST)
            try:  # the flow the UE opened ends with its address
                rest = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:
                rest = b""
            assert rest == b"", "kept a detached address's connection open"
            late_reader, late_writer = await asyncio.open_connection(GW_HOST, port)
            try:
                late_writer.write(request("OPTIONS", f"sip:{DOMAIN}", via=f"{GW_HOST}:5060"))
                try:
                    closed = await asyncio.wait_for(late_reader.read(), 5)
                except ConnectionResetError:
                    closed = b""
                assert closed == b"", "served a connection from a detached address"
            finally:
                late_writer.close()
            assert gw.state()["guards"]["tcp"]["refused"] == {  # type: ignore[index]
                "not admitted": 1}
            assert gw.state()["guards"]["tcp"]["connections"] == 0  # type: ignore[index]
        finally:
            writer.close()


class HoldingCore(Core):
    """A served core that holds REGISTERs (retransmissions too) until told to answer."""

    def __init__(self, hub: MemoryHub) -> None:
        super().__init__(hub)
        self.held: list[tuple[Request, Address]] = []
        self.holding = True

    def _answer(self, peer: Peer, message: Request | Response, source: Address) -> None:
        if self.holding and isinstance(message, Request) and message.method == "REGISTER":
            self.held.append((message, source))
            return
        super()._answer(peer, message, source)

    def release(self) -> None:
        """Answer the first REGISTER held, as the core would have."""
        self.holding = False
        super()._answer(self, *self.held[0])


async def test_a_register_answered_after_detach_does_not_bring_the_attachment_back(
        tmp_path: Path) -> None:
    """What the gateway keeps across a restart (nodes.journal) follows attach and detach:
    a 200 to a REGISTER that the core sends after its UE detached (and its address went
    to another UE) must not write the old attachment back, or the restarted gateway
    would hand the address to the detached UE and lose the new one's."""
    hub = MemoryHub()
    core = HoldingCore(hub)
    state_file = str(tmp_path / "gateway.journal")
    plan = NodePlan("visited.gateway", "gateway", "visited", GW_HOST,
                    (Listener("https", GW_HOST, 0),),
                    GatewayOptions("visited", "001-02", POOL[:1]), state_file=state_file,
                    peers=(PlanPeer("core", "sip-core", "udp", CORE3_HOST, 5060),))
    gw = Gateway(plan)
    await gw.endpoint.listen("udp", GW_HOST, 5060, hub=hub)
    await gw.start()
    try:
        async with aiohttp.ClientSession(gw.http.url) as http:
            address = (await attach(http, "ue-a"))[1]["ue_address"]
            ue = Peer(hub, address)
            ue.send(request("REGISTER", f"sip:{DOMAIN}", via=f"{address}:5060", extra=(
                f"Contact: <sip:alice@{address}:5060>", "Expires: 600")), GW)
            await settle(0.05)
            assert core.held, "the core holds the REGISTER"
            assert (await detach(http, address))[0] == 200
            assert (await attach(http, "ue-b"))[1]["ue_address"] == address
            core.release()
            await settle(0.05)
            assert gw.state()["attached"] == {address: "ue-b"}
    finally:
        await gw.stop()
    restarted = Gateway(plan)
    await restarted.start()
    try:
        assert restarted.state()["attached"] == {address: "ue-b"}
    finally:
        await restarted.stop()


async def affiliate(core: Peer, user: str) -> int:
    """``user`` affiliates to GROUP (PUBLISH of a PIDF affiliation, 24.379 §9.2.2)."""
    document = affiliation.render(affiliation.AffiliationDocument(
        user, "c", (affiliation.Affiliation(GROUP),)))
    call_id = f"affiliate-{name(user)}"
    core.send(request("PUBLISH", f"sip:mcptt-server@{DOMAIN}", via=f"{CORE2_HOST}:5060",
                      call_id=call_id, body=document, extra=(
                          f"Event: {affiliation.EVENT}", "Expires: 3600",
                          f"Content-Type: {affiliation.MIME_TYPE}",
                          f"P-Asserted-Identity: <{user}>")), MC2)
    await settle(0.05)
    [final] = [r for r in core.responses() if r.call_id == f"{call_id}@review"]
    return final.status


async def group_call(core: Peer, n: int) -> Response:
    """alice calls GROUP (prearranged, 24.379 §10.1.1): INVITE to the MCPTT PSI."""
    info = mcx_info.render(mcx_info.ServiceInfo(mcx_info.MCPTT, None, GROUP, None,
                                                session_type="prearranged"))
    body = MultipartBody.build([BodyPart("application/sdp", b"v=0\r\n"),
                                BodyPart(mcx_info.MCPTT.mime_type, info)])
    return await originating(core, "INVITE", f"sip:mcptt-server@{DOMAIN}", f"call{n}",
                             (f"Content-Type: {body.content_type}",
                              f"Contact: <sip:alice@{CORE2_HOST}:5070>"), body.to_bytes())


def invited(core: Peer) -> list[str]:
    """Whom the MC server invited to a group call (its INVITEs on the terminating leg)."""
    return [str(r.uri) for r in core.requests("INVITE")]


async def test_a_user_whose_authorisation_lapsed_is_not_called_as_an_affiliated_member(
        tmp_path: Path) -> None:
    """An affiliation stands on the user's MC service authorisation (23.280 §10.8.3; the
    MC server drops a user's affiliations with the authorisation).  Once bob's ran out,
    alice's group call does not invite him, though no request of his came by since."""
    async with mc_server(tmp_path) as (mc, core, authority):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert (await authorise(core, authority, mc, "register", 600, 1, ALICE)).status == 200
        assert (await authorise(core, authority, mc, "register", 120, 1, BOB)).status == 200
        assert await affiliate(core, ALICE) == 200 and await affiliate(core, BOB) == 200
        await until_time(t0 + 60)
        declined = await group_call(core, 1)  # bob is invited, and (486) declines
        assert invited(core) == [BOB] and declined.status == 480
        await until_time(t0 + 121)
        alone = await group_call(core, 2)
        assert invited(core) == [BOB], "invited a member whose authorisation lapsed"
        assert alone.status == 480 and "affiliated" in alone.reason

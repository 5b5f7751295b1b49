"""A review of the prearranged group call's 2xx handling (nodes/group_call.py and the
``AnswerRetransmitter`` of nodes/sipnode.py), in simulated time over a MemoryHub.

As a UAS the MC server re-sends its 200 to the caller's INVITE, first T1 after it, the
interval doubling up to T2, until the caller's ACK (RFC 3261 §13.3.1.4); without an ACK
for 64·T1 the session ends with a BYE to the caller and to every member.  As a UAC it ACKs
each 2xx a member re-sends because its ACK was lost (§13.2.2.4).  The UE's own 2xx
retransmissions stop on a BYE as on an ACK.

The cast: the MC server, its SIP core (a raw peer that relays alice's INVITE and ACK, and
answers each member INVITE it is sent 200 on the member's behalf with the member's own
Contact), and each member's UE (a raw peer: in-dialog ACK and BYE reach it directly).  The
hub's loss rule doubles as a wire tap: every message carried, with its simulated time.
The RFC's own timers (T1 = 500 ms, T2 = 4 s): 64·T1 is 32 s of simulated time, instant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from dataclasses import field

import pytest

from emulator.documents import affiliation
from emulator.documents import mcx_info
from emulator.documents.groups import GroupDocument
from emulator.sip.events import Address
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.message import parse_message
from emulator.sip.multipart import BodyPart
from emulator.sip.multipart import MultipartBody
from emulator.sip.timers import DEFAULT_TIMERS
from emulator.transport.memory import MemoryHub
from nodes import McServer
from nodes import McServerOptions
from nodes import NodePlan
from nodes import Peer as PlanPeer
from nodes import mc_service_psi
from nodes.mc_server import AuthorisedUser
from nodes.ue import McClient

from .support import Peer
from .support import on_hub
from .support import request
from .support import settle
from .support import sip

T1, T2 = DEFAULT_TIMERS.t1, DEFAULT_TIMERS.t2
GIVE_UP = 64 * T1
DOMAIN = "mcx.example"
PSI = mc_service_psi("mcptt", DOMAIN)
GROUP = f"sip:fire-9@{DOMAIN}"
ALICE, BOB, CAROL = (f"sip:{who}@{DOMAIN}" for who in ("alice", "bob", "carol"))
MC_HOST, CORE_HOST, ALICE_HOST = "127.0.86.3", "127.0.86.1", "127.0.86.10"
MC, CORE = Address("udp", MC_HOST, 5060), Address("udp", CORE_HOST, 5060)
MEMBER_HOSTS = {BOB: "127.0.86.21", CAROL: "127.0.86.22"}
MEMBER_ADDRESSES = {Address("udp", host, 5060) for host in MEMBER_HOSTS.values()}
CALL = "gcall@review"


# ----------------------------------------------------------------------------- the wire
@dataclass
class Carried:
    at: float
    data: bytes
    source: Address
    destination: Address
    dropped: bool = False

    @property
    def message(self) -> Request | Response:
        return parse_message(self.data)


@dataclass
class Wire:
    """The hub's loss rule: records every message carried and drops, once each, the
    first message each of ``lose`` matches."""

    log: list[Carried] = field(default_factory=list)
    lose: list[Callable[[Carried], bool]] = field(default_factory=list)

    def __call__(self, data: bytes, source: Address, destination: Address) -> bool:
        carried = Carried(asyncio.get_running_loop().time(), data, source, destination)
        for rule in self.lose:
            if rule(carried):
                self.lose.remove(rule)
                carried.dropped = True
                break
        self.log.append(carried)
        return carried.dropped

    def requests(self, method: str, *, source: Address = MC) -> list[Carried]:
        return [c for c in self.log if c.source == source and c.data.startswith(method.encode()
                                                                                + b" ")]

    def invite_2xx(self, *, source: Address, call_id: str | None = None) -> list[Carried]:
        found = []
        for c in self.log:
            if c.source != source or not c.data.startswith(b"SIP/2.0 200 "):
                continue
            response = c.message
            assert isinstance(response, Response)
            if response.cseq.method == "INVITE" and call_id in (None, response.call_id):
                found.append(c)
        return found


def caller_200(carried: Carried) -> bool:
    """The MC server's 200 to alice's INVITE."""
    return carried.source == MC and carried.destination == CORE and \
        carried.data.startswith(b"SIP/2.0 200 ") and b"INVITE" in carried.data and \
        f"Call-ID: {CALL}".encode() in carried.data


def ack_to(host: str) -> Callable[[Carried], bool]:
    return lambda c: c.source == MC and c.destination.host == host and \
        c.data.startswith(b"ACK ")


# ----------------------------------------------------------------------------- the cast
def core_answers(peer: Peer, message: Request | Response, source: Address) -> None:
    """The SIP core, collapsed with the members' UEs for their INVITEs: 200 with the
    member's own Contact (so the leg's ACK and BYE go to the member); 200 to anything else
    (the BYE to alice, relayed in a real core)."""
    if not isinstance(message, Request) or message.method == "ACK":
        return
    if message.method == "INVITE":
        who = message.uri.user or ""
        response = message.make_response(200, to_tag=f"{who}-tag")
        response.headers.add("Contact", f"<sip:{who}@{MEMBER_HOSTS[message.uri.aor]}:5060>")
    else:
        response = message.make_response(200, to_tag="core")
    peer.send(response.to_bytes(), source)


def member_answers(peer: Peer, message: Request | Response, source: Address) -> None:
    if isinstance(message, Request) and message.method != "ACK":
        peer.send(message.make_response(200).to_bytes(), source)


async def affiliate(core: Peer, user: str) -> int:
    """``user`` affiliates to GROUP (24.379 §9.2.2), its PUBLISH passed on by the core."""
    document = affiliation.render(affiliation.AffiliationDocument(
        user, "c", (affiliation.Affiliation(GROUP),)))
    call_id = f"affiliate-{user.removeprefix('sip:').partition('@')[0]}"
    core.send(request("PUBLISH", PSI, via=f"{CORE_HOST}:5060", call_id=call_id,
                      body=document, extra=(f"Event: {affiliation.EVENT}", "Expires: 3600",
                                            f"Content-Type: {affiliation.MIME_TYPE}",
                                            f"P-Asserted-Identity: <{user}>")), MC)
    await settle(0.01)
    [final] = [r for r in core.responses() if r.call_id == f"{call_id}@review"]
    return final.status


@asynccontextmanager
async def group(wire: Wire) -> AsyncIterator[tuple[McServer, Peer, dict[str, Peer]]]:
    """An MC server with GROUP (alice, bob, carol), each authorised for MCPTT and
    affiliated; its core; the members' UEs."""
    hub = MemoryHub(loss=wire)
    options = McServerOptions("https://idms.example", "https://mcx.example", domain=DOMAIN,
                              groups=(GroupDocument(GROUP, "Fire 9", (ALICE, BOB, CAROL)),))
    mc = McServer(NodePlan("mc", "mc-server", "review", MC_HOST, (), options,
                           peers=(PlanPeer("core", "sip-core", "udp", CORE_HOST, 5060),)))
    await mc.endpoint.listen("udp", MC_HOST, 5060, hub=hub)
    await mc.start()
    assert mc.endpoint.layer.timers == DEFAULT_TIMERS
    core = Peer(hub, CORE_HOST, on_message=core_answers)
    members = {user: Peer(hub, host, on_message=member_answers)
               for user, host in MEMBER_HOSTS.items()}
    try:
        for user in (ALICE, BOB, CAROL):
            assert mc.authorised(AuthorisedUser(user, {"mcptt": user}, None, mc.now() + 3600))
            assert await affiliate(core, user) == 200
        yield mc, core, members
    finally:
        await mc.stop()


def invite(call_id: str = CALL) -> bytes:
    """alice's prearranged group call (24.379 §10.1.1), as her S-CSCF passes it on: its Via
    over hers, Record-Route'd, her Contact."""
    info = mcx_info.render(mcx_info.ServiceInfo(mcx_info.MCPTT, None, GROUP, None,
                                                session_type="prearranged"))
    body = MultipartBody.build([BodyPart("application/sdp", b"v=0\r\n"),
                                BodyPart(mcx_info.MCPTT.mime_type, info)])
    return sip([f"INVITE {PSI} SIP/2.0",
                f"Via: SIP/2.0/UDP {CORE_HOST}:5060;branch=z9hG4bKcore1;rport",
                f"Via: SIP/2.0/UDP {ALICE_HOST}:5060;branch=z9hG4bKalice1;rport",
                "Max-Forwards: 69", f"Route: <sip:{MC_HOST}:5060;lr>",
                f"Record-Route: <sip:{CORE_HOST}:5060;lr>",
                f"From: <{ALICE}>;tag=alice-tag", f"To: <{PSI}>", f"Call-ID: {call_id}",
                "CSeq: 1 INVITE", f"Contact: <sip:alice@{ALICE_HOST}:5060>",
                f"P-Asserted-Identity: <{ALICE}>", f"Content-Type: {body.content_type}"],
               body.to_bytes())


def in_caller_dialog(method: str, mc_tag: str, cseq: int) -> bytes:
    """alice's ACK or BYE, relayed by the core to the MC server's Contact."""
    return sip([f"{method} sip:{MC_HOST}:5060 SIP/2.0",
                f"Via: SIP/2.0/UDP {CORE_HOST}:5060;branch=z9hG4bKcore{method};rport",
                f"Via: SIP/2.0/UDP {ALICE_HOST}:5060;branch=z9hG4bKalice{method};rport",
                "Max-Forwards: 69", f"From: <{ALICE}>;tag=alice-tag",
                f"To: <{PSI}>;tag={mc_tag}", f"Call-ID: {CALL}", f"CSeq: {cseq} {method}"])


async def until(t: float) -> None:
    """Let simulated time run up to ``t``."""
    await asyncio.sleep(max(0.0, t - asyncio.get_running_loop().time()))


def mc_tag(wire: Wire) -> str:
    response = wire.invite_2xx(source=MC)[0].message
    assert isinstance(response, Response) and response.to.tag
    return response.to.tag


def offsets(carried: list[Carried], t0: float) -> list[float]:
    return [c.at - t0 for c in carried]


# ----------------------------------------------------------------------------- a) - d)
async def test_a_lost_200_is_resent_byte_for_byte_t1_doubling_to_t2_until_the_ack() -> None:
    """§13.3.1.4: alice's first 200 is lost.  The MC server sends the same 200 again T1
    after it, then 2·T1, 4·T1 later..., the interval capped at T2, until her ACK; after
    the ACK no 200 comes, the call stays up and nobody gets a BYE."""
    wire = Wire(lose=[caller_200])
    async with group(wire) as (mc, core, members):
        t0 = asyncio.get_running_loop().time()
        core.send(invite(), MC)
        await until(t0 + 20)
        sent = wire.invite_2xx(source=MC, call_id=CALL)
        assert sent[0].dropped and not any(c.dropped for c in sent[1:])
        assert offsets(sent, t0) == pytest.approx(
            [0, T1, 3 * T1, 7 * T1, 15 * T1, 15 * T1 + T2, 15 * T1 + 2 * T2, 15 * T1 + 3 * T2])
        assert {c.data for c in sent} == {sent[0].data}, "not the same 200, byte for byte"
        assert all(c.destination == CORE for c in sent)
        assert len(core.requests("INVITE")) == 2  # one per member, never re-sent

        core.send(in_caller_dialog("ACK", mc_tag(wire), 1), MC)
        await until(t0 + 2 * GIVE_UP)
        assert len(wire.invite_2xx(source=MC, call_id=CALL)) == len(sent), \
            "a 200 after the ACK"
        assert wire.requests("BYE") == []
        assert all(len(peer.requests("ACK")) == 1 for peer in members.values())
        assert mc.state()["group_calls"] == 1 and len(mc.group_calls.unacked) == 0


async def test_no_ack_after_64_t1_ends_the_call_with_bye_to_every_leg_and_the_caller() -> None:
    """§13.3.1.4: no ACK ever.  Until 64·T1 the 200 is re-sent and the call holds; then
    the re-sending stops, every member's leg gets a BYE in its dialog, alice gets one in
    hers (to her Contact, through the core's Record-Route), and the call is gone."""
    wire = Wire(lose=[caller_200])
    async with group(wire) as (mc, core, members):
        t0 = asyncio.get_running_loop().time()
        core.send(invite(), MC)
        await until(t0 + GIVE_UP - 0.01)
        assert wire.requests("BYE") == [] and mc.state()["group_calls"] == 1

        await until(t0 + GIVE_UP + 2 * T2)
        byes = wire.requests("BYE")
        assert byes, "the unacknowledged call was never ended"
        assert all(GIVE_UP - 1e-6 <= c.at - t0 <= GIVE_UP + T2 for c in byes), \
            offsets(byes, t0)
        ended = byes[0].at
        sent = wire.invite_2xx(source=MC, call_id=CALL)
        assert sent[-1].at <= ended, "200 re-sent after the call ended"

        # Each member: exactly one BYE, in the dialog of its leg.
        for user, peer in members.items():
            [bye] = peer.requests("BYE")
            [leg_invite] = [r for r in core.requests("INVITE") if r.uri.aor == user]
            assert bye.call_id == leg_invite.call_id
            assert bye.from_.tag == leg_invite.from_.tag
            assert bye.to.tag == f"{user.removeprefix('sip:').partition('@')[0]}-tag"
            assert str(bye.uri) == f"sip:{bye.to.uri.user}@{MEMBER_HOSTS[user]}:5060"
        # alice: one BYE in her dialog, to the core (the route set), for her Contact.
        [to_alice] = [c for c in byes if c.destination == CORE]
        bye = to_alice.message
        assert isinstance(bye, Request)
        assert bye.call_id == CALL and str(bye.uri) == f"sip:alice@{ALICE_HOST}:5060"
        assert [str(r.uri) for r in bye.routes] == [f"sip:{CORE_HOST}:5060;lr"]
        assert bye.from_.tag == mc_tag(wire) and bye.to.tag == "alice-tag"
        assert len(byes) == 1 + len(members)

        await until(t0 + 4 * GIVE_UP)
        assert len(wire.requests("BYE")) == len(byes)  # each answered 200: not re-sent
        assert len(wire.invite_2xx(source=MC, call_id=CALL)) == len(sent)
        assert mc.state()["group_calls"] == 0 and mc.group_calls.calls == {}
        assert len(mc.group_calls.unacked) == 0


async def test_the_callers_bye_before_the_ack_stops_the_200s_and_ends_the_legs() -> None:
    """alice hangs up before her ACK got through (it was lost, or she gave up): her BYE
    gets 200, ends every member's leg, and ends the 200's re-sending too."""
    wire = Wire(lose=[caller_200])
    async with group(wire) as (mc, core, members):
        t0 = asyncio.get_running_loop().time()
        core.send(invite(), MC)
        await until(t0 + 2 * T1)
        assert len(wire.invite_2xx(source=MC, call_id=CALL)) == 2  # at 0 (lost) and T1
        core.send(in_caller_dialog("BYE", mc_tag(wire), 2), MC)
        await until(t0 + 3 * T1 - 0.01)
        assert [(r.status, r.cseq.method) for r in core.responses()
                if r.call_id == CALL and r.cseq.method == "BYE"] == [(200, "BYE")]
        assert all(len(peer.requests("BYE")) == 1 for peer in members.values())

        await until(t0 + 2 * GIVE_UP)
        sent = wire.invite_2xx(source=MC, call_id=CALL)
        assert offsets(sent, t0) == pytest.approx([0, T1]), "200 re-sent after the BYE"
        assert all(len(peer.requests("BYE")) == 1 for peer in members.values())
        assert [c for c in wire.requests("BYE") if c.destination == CORE] == [], \
            "a BYE back to the caller who hung up"
        assert mc.state()["group_calls"] == 0 and len(mc.group_calls.unacked) == 0


async def test_a_members_2xx_resent_after_a_lost_ack_is_acked_again_and_the_leg_stays() -> None:
    """§13.2.2.4: the MC server's ACK to bob's 200 is lost, so bob re-sends the 200 (T1,
    then 2·T1 later, as §13.3.1.4 has him do).  Each time the MC server ACKs again: the
    INVITE's CSeq number, method ACK, in bob's dialog, to his Contact; and his leg stays up
    (no BYE) while alice's call lives."""
    wire = Wire(lose=[ack_to(MEMBER_HOSTS[BOB])])
    async with group(wire) as (mc, core, members):
        t0 = asyncio.get_running_loop().time()
        core.send(invite(), MC)
        await settle(0.01)
        core.send(in_caller_dialog("ACK", mc_tag(wire), 1), MC)  # alice's call is up
        first_ack = wire.requests("ACK")[0]
        assert first_ack.dropped and first_ack.destination.host == MEMBER_HOSTS[BOB]
        [bobs_invite] = [r for r in core.requests("INVITE") if r.uri.aor == BOB]
        [bobs_200] = wire.invite_2xx(source=CORE, call_id=bobs_invite.call_id)

        for at in (T1, 3 * T1):  # bob's re-sent 200, through the core as the first came
            await until(t0 + at)
            core.send(bobs_200.data, MC)
        await until(t0 + 2 * GIVE_UP)

        acks = [c for c in wire.requests("ACK") if c.destination.host == MEMBER_HOSTS[BOB]]
        assert len(acks) == 3, "bob's re-sent 200 was not ACKed again"
        assert offsets(acks[1:], t0) == pytest.approx([T1, 3 * T1])
        for carried in acks[1:]:
            ack = carried.message
            assert isinstance(ack, Request) and ack.method == "ACK"
            assert (ack.cseq.seq, ack.cseq.method) == (bobs_invite.cseq.seq, "ACK")
            assert ack.call_id == bobs_invite.call_id
            assert ack.from_.tag == bobs_invite.from_.tag and ack.to.tag == "bob-tag"
            assert str(ack.uri) == f"sip:bob@{MEMBER_HOSTS[BOB]}:5060"
        assert len(members[BOB].requests("ACK")) == 2  # the first was lost
        assert members[BOB].requests("BYE") == [], "bob's leg was ended"
        assert wire.requests("BYE") == []
        assert mc.state()["group_calls"] == 1
        [call] = mc.group_calls.calls.values()
        assert all(leg.dialog is not None for leg in call.legs)


# ----------------------------------------------------------------------------- e) the UE
UE_HOST = "127.0.86.40"
UE = Address("udp", UE_HOST, 5060)


async def test_the_ues_2xx_retransmissions_stop_on_a_bye_before_the_ack() -> None:
    """The UE as callee (McClient.answer): its first 200 is lost, so it re-sends it at T1
    and 3·T1; the caller's BYE (before any ACK) gets 200 and ends the re-sending."""
    wire = Wire(lose=[lambda c: c.source == UE and c.data.startswith(b"SIP/2.0 200 ")])
    hub = MemoryHub(loss=wire)
    ue = McClient("ue-bob", UE_HOST, "udp", timers=DEFAULT_TIMERS)
    await on_hub(ue, hub, DEFAULT_TIMERS)
    caller = Peer(hub, ALICE_HOST)
    try:
        t0 = asyncio.get_running_loop().time()
        caller.send(request("INVITE", f"sip:bob@{UE_HOST}", via=f"{ALICE_HOST}:5060",
                            call_id="uecall", extra=(f"Contact: <sip:alice@{ALICE_HOST}:5060>",)),
                    UE)
        await until(t0 + 4 * T1)
        sent = wire.invite_2xx(source=UE)
        assert offsets(sent, t0) == pytest.approx([0, T1, 3 * T1])
        assert {c.data for c in sent} == {sent[0].data}
        tag = caller.responses()[-1].to.tag
        caller.send(request("BYE", f"sip:bob@{UE_HOST}", via=f"{ALICE_HOST}:5060", cseq=2,
                            call_id="uecall", to_tag=tag), UE)
        await until(t0 + 2 * GIVE_UP)
        assert [r.status for r in caller.responses() if r.cseq.method == "BYE"] == [200]
        assert len(wire.invite_2xx(source=UE)) == len(sent), "200 re-sent after the BYE"
        assert len(ue.unacked) == 0 and ue._dialogs == {}
    finally:
        await ue.stop()

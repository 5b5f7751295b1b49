"""Regression tests from a review of the UE (McClient) and its dialogs."""

from __future__ import annotations

import asyncio

from emulator.documents import reginfo
from emulator.sip.events import Address
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.transport.memory import MemoryHub
from nodes.ue import McClient
from nodes.ue import Registration

from .support import FAST
from .support import Peer
from .support import on_hub
from .support import request
from .support import settle
from .support import sip

UE_HOST = "127.0.88.30"
UE = Address("udp", UE_HOST, 5060)


async def make_ue(hub: MemoryHub) -> McClient:
    ue = McClient("ue-bob", UE_HOST, "udp")
    await on_hub(ue, hub)
    return ue


async def test_invite_without_contact_gets_400_and_is_purged() -> None:
    """§8.1.1.8/§12.1.1: an INVITE must carry Contact; the UAS answers 400, and the
    server transaction ends (Timer H/I) instead of waiting forever in Proceeding."""
    hub = MemoryHub()
    ue = await make_ue(hub)
    caller = Peer(hub, "127.0.88.2")
    caller.send(request("INVITE", f"sip:bob@{UE_HOST}", via="127.0.88.2:5060"), UE)
    await settle(1.0)
    assert [r.status for r in caller.responses()][:2] == [100, 400]
    assert len(ue.endpoint.layer) == 0
    await ue.endpoint.close()


async def test_bye_for_unknown_dialog_gets_481() -> None:
    """§12.2.2: a request that matches no dialog SHOULD get 481."""
    hub = MemoryHub()
    ue = await make_ue(hub)
    peer = Peer(hub, "127.0.88.2")
    peer.send(request("BYE", f"sip:bob@{UE_HOST}", via="127.0.88.2:5060", to_tag="nope"), UE)
    await settle()
    assert [r.status for r in peer.responses()] == [481]
    await ue.endpoint.close()


async def test_cancel_without_its_invite_gets_481() -> None:
    """§9.2: a UAS answers CANCEL 200 (matching transaction) or 481 (none)."""
    hub = MemoryHub()
    ue = await make_ue(hub)
    peer = Peer(hub, "127.0.88.2")
    peer.send(request("CANCEL", f"sip:bob@{UE_HOST}", via="127.0.88.2:5060"), UE)
    await settle()
    assert [r.status for r in peer.responses()] == [481]
    await ue.endpoint.close()


async def test_uas_retransmits_a_lost_2xx_until_the_ack() -> None:
    """§13.3.1.4: the UAS core retransmits its 2xx (T1 doubling to T2) until the ACK,
    so losing the first 200 on UDP does not lose the call."""
    lost: list[bytes] = []

    def lose_first_200(data: bytes, source: Address, destination: Address) -> bool:
        if data.startswith(b"SIP/2.0 200") and not lost:
            lost.append(data)
            return True
        return False

    hub = MemoryHub(loss=lose_first_200)
    ue = await make_ue(hub)
    caller = Peer(hub, "127.0.88.2")
    invite = request("INVITE", f"sip:bob@{UE_HOST}", via="127.0.88.2:5060",
                     extra=("Contact: <sip:alice@127.0.88.2:5060>",))
    loop = asyncio.get_running_loop()
    started = loop.time()
    caller.send(invite, UE)
    await settle(0.03)  # T1 = 5 ms: the 2xx re-sent at 5 and 15 ms (then every 10, 20...)
    assert lost
    finals = [r for r in caller.responses() if r.status == 200]
    assert len(finals) >= 2, "the 2xx was not re-sent"
    assert all(bytes(r) == lost[0] for r in finals)  # the same 2xx, byte for byte
    ack = request("ACK", f"sip:bob@{UE_HOST}", via="127.0.88.2:5060",
                  to_tag=finals[0].to.tag, call_id=invite.split(b"Call-ID: ")[1]
                  .split(b"@")[0].decode())
    caller.send(ack, UE)
    await settle(0.001)
    count = len(caller.responses())
    await settle(0.2)  # without the ACK, four more 2xx would come (interval capped at T2)
    assert loop.time() - started < 64 * FAST.t1  # ...and they would not have given up yet
    assert len(caller.responses()) == count  # the ACK stopped the retransmissions
    await ue.stop()


async def test_2xx_without_contact_is_still_acked_and_ended() -> None:
    """§13.2.2.4: the UAC ACKs every 2xx; without a Contact the Request-URI is the target,
    and the call is ended with BYE rather than left half-open."""
    hub = MemoryHub()
    ue = await make_ue(hub)

    def answer(peer: Peer, message, source: Address) -> None:
        if isinstance(message, Request) and message.method == "INVITE":
            peer.send(message.make_response(200, to_tag="callee").to_bytes(), source)

    callee = Peer(hub, "127.0.88.40", on_message=answer)
    registration = Registration(callee.address, "mcx.example", "sip:bob@mcx.example",
                                Response(200))
    record = await ue.private_call("sip:carol@127.0.88.40:5060", registration, hold=0.0)
    await settle()
    assert record.invite_status == 200
    assert len(callee.requests("ACK")) == 1
    assert callee.requests("BYE")
    await ue.endpoint.close()


async def test_reinvite_keeps_the_dialog_and_unknown_ones_get_481() -> None:
    """§14.2: a re-INVITE refreshes an existing dialog with its tags; one that matches no
    dialog gets 481 instead of silently creating a dialog with a new local tag."""
    hub = MemoryHub()
    ue = await make_ue(hub)
    caller = Peer(hub, "127.0.88.2")
    caller.send(request("INVITE", f"sip:bob@{UE_HOST}", via="127.0.88.2:5060", to_tag="t0",
                        call_id="dlg", cseq=2,
                        extra=("Contact: <sip:alice@127.0.88.2:5060>",)), UE)
    await settle()
    # (re-sent by Timer G: the raw peer never ACKs the 481)
    assert {r.status for r in caller.responses() if r.status >= 200} == {481}
    assert "dlg@review" not in ue._dialogs
    caller.send(request("INVITE", f"sip:bob@{UE_HOST}", via="127.0.88.2:5060", call_id="d2",
                        extra=("Contact: <sip:alice@127.0.88.2:5060>",)), UE)
    await settle()
    first = [r for r in caller.responses() if r.status == 200][-1]
    caller.send(request("INVITE", f"sip:bob@{UE_HOST}", via="127.0.88.2:5060", call_id="d2",
                        to_tag=first.to.tag, cseq=2,
                        extra=("Contact: <sip:alice@127.0.88.2:5060>",)), UE)
    await settle()
    again = [r for r in caller.responses() if r.status == 200][-1]
    assert again.cseq.seq == 2 and again.to.tag == first.to.tag
    assert ue._dialogs["d2@review"].local.tag == first.to.tag
    await ue.stop()


async def test_the_notify_that_ends_the_subscription_may_come_before_the_200() -> None:
    """RFC 3680 §5.2 / 24.229 §5.1.1.4: a de-REGISTER ends the UE's reg-event
    subscription with a terminating NOTIFY, which the core sends together with the
    REGISTER's 200, so it may be read first; the UE still reports the registration
    terminated, not "no subscription"."""
    hub = MemoryHub()
    ue = await make_ue(hub)

    def notify(peer: Peer, subscribe: Request, state: str, event: str, cseq: int) -> None:
        document = reginfo.RegInfo(cseq - 1, "full", (reginfo.RegistrationInfo(
            "sip:bob@mcx.example", "r1", state, (reginfo.ContactInfo(
                "c1", state, event, f"sip:bob@{UE_HOST}"),)),))
        body = reginfo.render(document)
        subscription = "terminated;reason=noresource" if state == "terminated" else \
            "active;expires=600"
        peer.send(sip([f"NOTIFY sip:bob@{UE_HOST} SIP/2.0",
                       f"Via: SIP/2.0/UDP 127.0.88.50:5060;branch=z9hG4bKn{cseq}",
                       "From: <sip:bob@mcx.example>;tag=core", f"To: {subscribe.from_}",
                       f"Call-ID: {subscribe.call_id}", f"CSeq: {cseq} NOTIFY",
                       "Event: reg", f"Subscription-State: {subscription}",
                       f"Content-Type: {reginfo.MIME_TYPE}"], body), UE)

    subscriptions: list[Request] = []

    def core(peer: Peer, message: Request | Response, source: Address) -> None:
        if not isinstance(message, Request):
            return
        if message.method == "SUBSCRIBE":
            subscriptions.append(message)
            peer.send(message.make_response(200, to_tag="core").to_bytes(), source)
            notify(peer, message, "active", "registered", 1)
        elif message.method == "REGISTER" and message.expires == 0:
            notify(peer, subscriptions[0], "terminated", "unregistered", 2)  # first...
            peer.send(message.make_response(200, to_tag="core").to_bytes(), source)
        elif message.method == "REGISTER":
            peer.send(message.make_response(200, to_tag="core").to_bytes(), source)

    registrar = Peer(hub, "127.0.88.50", on_message=core)
    registration = await ue.register(registrar.address, "sip:bob@mcx.example",
                                     domain="mcx.example")
    assert (await ue.subscribe_reg(registration)).state == "active"
    await ue.unregister(registrar.address, "sip:bob@mcx.example", domain="mcx.example")
    ended = await ue.registration_ended(registrar.address)
    assert ended is not None and ended.state == "terminated"
    assert ended.events == ("unregistered",)
    assert await ue.registration_ended(registrar.address) is None  # read once
    # An end the network made earlier is not the answer to a later de-REGISTER.
    ue.ended[registrar.address] = ended
    await ue.unregister(registrar.address, "sip:bob@mcx.example", domain="mcx.example")
    assert await ue.registration_ended(registrar.address) is None
    await ue.stop()

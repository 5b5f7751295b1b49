"""Regression tests from a review of the proxies (SipNode, SipCore, Gateway): peer garbage
always gets an answer, never a dead socket or a leaked transaction."""

from __future__ import annotations

import asyncio

from emulator.sip.events import Address
from emulator.sip.headers import Contact
from emulator.sip.message import Request
from emulator.transport.memory import MemoryHub
from nodes import GatewayOptions
from nodes import Peer as PlanPeer
from nodes import SipCoreOptions
from nodes.gateway import Gateway
from nodes.gateway import UeContext
from nodes.sip_core import SipCore

from .support import Peer
from .support import on_hub
from .support import request
from .support import settle
from .support import sip
from .support import sip_plan

CORE_HOST = "127.0.88.1"
MC_HOST = "127.0.88.3"
DOMAIN = "mcx.example"


def make_core(port: int = 5060, p_cscf: str | None = None) -> SipCore:
    """A SIP core whose MC server is MC_HOST; ``p_cscf`` joins its trust domain."""
    peers = (PlanPeer("mc", "mc-server", "udp", MC_HOST, 5060),)
    if p_cscf is not None:
        peers += (PlanPeer("gw", "gateway", "udp", p_cscf, 5060),)
    return SipCore(sip_plan("core", "sip-core", CORE_HOST, SipCoreOptions(DOMAIN), port=port,
                            peers=peers))


def core_addr() -> Address:
    return Address("udp", CORE_HOST, 5060)


# --------------------------------------------------------------------------- 1
async def test_stray_response_with_out_of_range_rport_does_not_kill_the_socket() -> None:
    """A stray response whose second Via names rport=70000 is dropped, not relayed: relaying
    made sendto raise OverflowError, which asyncio's datagram transport treated as fatal,
    closing the UDP socket; ours reports it and goes on."""
    core = make_core(port=0)
    await core.start()
    loop = asyncio.get_running_loop()
    got: list[bytes] = []

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.append(data)

    transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.88.2", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        core_port = core.endpoint.local("udp").port
        target = ("127.0.88.1", core_port)
        query = request("REGISTER", f"sip:{DOMAIN}", via=f"127.0.88.2:{port}")
        transport.sendto(query, target)
        await asyncio.sleep(0.2)
        assert any(b"SIP/2.0 200" in d for d in got), "sanity: the core answers a query"
        got.clear()
        stray = sip([
            "SIP/2.0 200 OK",
            f"Via: SIP/2.0/UDP {CORE_HOST}:{core_port};branch=z9hG4bKnotours",
            f"Via: SIP/2.0/UDP 127.0.88.2:{port};branch=z9hG4bKup;rport=70000",
            "From: <sip:alice@mcx.example>;tag=1", "To: <sip:bob@mcx.example>;tag=2",
            "Call-ID: stray@review", "CSeq: 1 INVITE",
        ])
        transport.sendto(stray, target)
        await asyncio.sleep(0.1)
        transport.sendto(request("REGISTER", f"sip:{DOMAIN}", via=f"127.0.88.2:{port}"),
                         target)
        await asyncio.sleep(0.3)
        assert not core.endpoint._transports["udp"]._closed  # type: ignore[attr-defined]
        assert any(b"SIP/2.0 200" in d for d in got), "the core still answers"
    finally:
        transport.close()
        await core.stop()


# --------------------------------------------------------------------------- 2
async def test_core_answers_an_unparseable_route_with_400() -> None:
    """Route: <sip:x  (unterminated) passes check_request and fails in the core's routing:
    the endpoint answers 400 for the failed handler, so the transaction completes and is
    purged (a non-INVITE server transaction in Trying has no timer of its own)."""
    hub = MemoryHub()
    core = make_core()
    await on_hub(core, hub)
    ue = Peer(hub, "127.0.88.2")
    ue.send(request("MESSAGE", f"sip:bob@{DOMAIN}", via="127.0.88.2:5060",
                    extra=("Route: <sip:127.0.88.1:5060;lr",)), core_addr())
    await settle(1.0)  # > 64*T1 with FAST timers
    assert [r.status for r in ue.responses()] == [400]
    assert len(core.endpoint.layer) == 0
    await core.endpoint.close()


async def test_core_answers_an_unparseable_p_asserted_identity() -> None:
    hub = MemoryHub()
    core = make_core()
    await on_hub(core, hub)
    ue = Peer(hub, "127.0.88.2")
    ue.send(request("MESSAGE", f"sip:bob@{DOMAIN}", via="127.0.88.2:5060",
                    extra=('P-Asserted-Identity: "unterminated <sip:a@b>',)), core_addr())
    await settle(0.5)
    # An untrusted sender's asserted identity is removed (RFC 3325 §5), and the sender
    # is not registered: 403, not silence.
    assert [r.status for r in ue.responses()] == [403]
    await core.endpoint.close()


async def test_core_terminating_to_non_sip_contact_gets_480() -> None:
    """A binding whose Contact is not a SIP URI (tel:, urn:, ...) cannot be reached by SIP:
    the terminating request gets 480 instead of an assertion failure and silence."""
    hub = MemoryHub()
    core = make_core()
    await on_hub(core, hub)
    now = core.endpoint.now()
    core.location.update(f"sip:bob@{DOMAIN}", [Contact.parse("<tel:+15551234>")],
                         header_expires=600, call_id="c", cseq=1, now=now)
    caller = Peer(hub, MC_HOST)  # the MC server sends it back with Route term
    caller.send(request("MESSAGE", f"sip:bob@{DOMAIN}", via=f"{MC_HOST}:5060",
                        extra=(f"Route: <sip:term@{CORE_HOST}:5060;lr>",)), core_addr())
    await settle(0.5)
    assert [r.status for r in caller.responses()] == [480]
    await core.endpoint.close()


# --------------------------------------------------------------------------- 3
async def test_core_ignores_p_asserted_identity_from_outside_the_trust_domain() -> None:
    """RFC 3325 §5 / 24.229 §5.4.3.2: PAI is only trusted from inside the trust domain, so
    an unregistered host cannot originate as alice by asserting her identity."""
    hub = MemoryHub()
    mc = Peer(hub, MC_HOST)
    attacker = Peer(hub, "127.0.88.66")
    for p_cscf in (None, "127.0.88.66"):
        core = make_core(p_cscf=p_cscf)
        await on_hub(core, hub)
        core.location.update(f"sip:alice@{DOMAIN}",
                             [Contact.parse("<sip:alice@127.0.88.50:5060>")],
                             header_expires=600, call_id="c", cseq=1, now=core.endpoint.now())
        attacker.send(request("MESSAGE", f"sip:bob@{DOMAIN}", via="127.0.88.66:5060",
                              extra=(f"P-Asserted-Identity: <sip:alice@{DOMAIN}>",)),
                      core_addr())
        await settle(0.1)
        await core.endpoint.close()
        if p_cscf is None:
            assert mc.requests("MESSAGE") == []
            assert [r.status for r in attacker.responses()] == [403]
    # From inside the trust domain (a P-CSCF the core knows), the same request is taken.
    assert mc.requests("MESSAGE")


# --------------------------------------------------------------------------- 4
async def test_proxy_answers_cancel_and_cancels_on_the_forwarded_branch() -> None:
    """§16.10 / §9.1: the proxy answers the CANCEL itself and sends its own CANCEL with
    the branch of the INVITE it forwarded, so the downstream UAS can match it."""
    hub = MemoryHub()
    core = make_core()
    await on_hub(core, hub)
    callee = Peer(hub, "127.0.88.40")
    caller = Peer(hub, "127.0.88.2")
    branch = "z9hG4bKreinvite1"
    common = dict(via="127.0.88.2:5060", to_tag="t1", call_id="cx", branch=branch,
                  extra=("Route: <sip:127.0.88.1:5060;lr>",))
    caller.send(request("INVITE", "sip:bob@127.0.88.40:5060", **common), core_addr())
    await settle()
    caller.send(request("CANCEL", "sip:bob@127.0.88.40:5060", **common), core_addr())
    await settle()
    invite = callee.requests("INVITE")[0]   # (Timer A retransmits on FAST timers)
    cancel = callee.requests("CANCEL")[0]
    assert invite.top_via.branch == cancel.top_via.branch
    assert cancel.cseq.method == "CANCEL" and cancel.cseq.seq == invite.cseq.seq
    assert 200 in [r.status for r in caller.responses() if r.cseq.method == "CANCEL"]
    # A CANCEL that matches nothing gets 481 (§9.2).
    caller.send(request("CANCEL", "sip:bob@127.0.88.40:5060", via="127.0.88.2:5060",
                        branch="z9hG4bKnothing", extra=("Route: <sip:127.0.88.1:5060;lr>",)),
                core_addr())
    await settle()
    assert 481 in [r.status for r in caller.responses() if r.cseq.method == "CANCEL"]
    await core.endpoint.close()


# --------------------------------------------------------------------------- 5
async def test_ack_with_max_forwards_zero_is_not_forwarded_and_others_decrement() -> None:
    """§16.3 step 3: a request with Max-Forwards 0 is not forwarded; §16.6 step 3: a
    forwarded one has Max-Forwards decremented."""
    hub = MemoryHub()
    core = make_core()
    await on_hub(core, hub)
    callee = Peer(hub, "127.0.88.40")
    sender = Peer(hub, "127.0.88.2")
    sender.send(request("ACK", "sip:bob@127.0.88.40:5060", via="127.0.88.2:5060",
                        to_tag="t", max_forwards=0), core_addr())
    await settle()
    assert callee.requests("ACK") == []
    sender.send(request("ACK", "sip:bob@127.0.88.40:5060", via="127.0.88.2:5060",
                        to_tag="t", max_forwards=5), core_addr())
    await settle()
    [ack] = callee.requests("ACK")
    assert ack.max_forwards == 4
    await core.endpoint.close()


async def test_ack_to_self_is_dropped_not_looped() -> None:
    hub = MemoryHub()
    core = make_core()
    await on_hub(core, hub)
    sender = Peer(hub, "127.0.88.2")
    before = hub.delivered
    sender.send(request("ACK", f"sip:x@{CORE_HOST}:5060", via="127.0.88.2:5060", to_tag="t"),
                core_addr())
    await settle(1.0)
    assert hub.delivered - before == 1  # the ACK reached the core, and went nowhere
    await core.endpoint.close()


# --------------------------------------------------------------------------- 6
async def test_registrations_refused_by_the_mc_server_leave_nothing_behind() -> None:
    """A registration the MC server refuses is de-registered by the network, and nothing
    of it stays in the core: churn does not grow it.  The third-party Call-IDs are derived
    from each AOR (one per user, RFC 3261 §10.2), not held.  The UE is answered 200 first
    (24.229 §5.4.1.7)."""
    hub = MemoryHub()
    core = make_core()
    await on_hub(core, hub)

    def refuse(peer: Peer, message, source: Address) -> None:
        if isinstance(message, Request):
            peer.send(message.make_response(403, to_tag="x").to_bytes(), source)

    mc = Peer(hub, MC_HOST, on_message=refuse)
    ue = Peer(hub, "127.0.88.2")
    for i in range(50):
        data = sip([
            f"REGISTER sip:{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.88.2:5060;branch=z9hG4bKr{i};rport",
            "Max-Forwards: 70", f"From: <sip:u{i}@{DOMAIN}>;tag=f{i}",
            f"To: <sip:u{i}@{DOMAIN}>", f"Call-ID: reg{i}@review", "CSeq: 1 REGISTER",
            f"Contact: <sip:u{i}@127.0.88.2:5060>", "Expires: 600",
        ])
        ue.send(data, core_addr())
    await settle(0.3)
    assert [r.status for r in ue.responses()].count(200) == 50
    assert len(core.location) == 0  # every one de-registered by the network
    assert core.state()["registered_aors"] == 0
    call_ids = {r.to.uri.aor: r.call_id for r in mc.requests("REGISTER")}
    assert len(call_ids) == 50 and len(set(call_ids.values())) == 50
    await core.endpoint.close()


# --------------------------------------------------------------------------- 7
async def test_responses_to_different_requests_have_different_to_tags() -> None:
    """§19.3: To tags are globally unique and random (at least 32 bits)."""
    hub = MemoryHub()
    core = make_core()
    await on_hub(core, hub)
    ue = Peer(hub, "127.0.88.2")
    for _ in range(2):
        ue.send(request("INVITE", f"sip:bob@{DOMAIN}", via="127.0.88.2:5060"), core_addr())
    await settle()
    tags = {r.to.tag for r in ue.responses() if r.status >= 200}
    assert len(tags) == 2 and all(tag and len(tag) >= 8 for tag in tags)
    await core.endpoint.close()


# --------------------------------------------------------------------------- 8
def make_gateway() -> Gateway:
    return Gateway(sip_plan("visited.gateway", "gateway", "127.0.88.20",
                            GatewayOptions("visited", "001-02", ("127.0.88.21",)), https=8443,
                            peers=(PlanPeer("core", "sip-core", "udp", CORE_HOST, 5060),)))


async def test_gateway_answers_an_unparseable_p_preferred_identity_with_400() -> None:
    hub = MemoryHub()
    gw = make_gateway()
    await on_hub(gw, hub)
    gw.attached["127.0.88.21"] = UeContext(
        "ue", "127.0.88.21", registered=True, associated=(f"sip:alice@{DOMAIN}",),
        service_route=(f"<sip:orig@{CORE_HOST}:5060;lr>",))
    ue = Peer(hub, "127.0.88.21")
    ue.send(request("MESSAGE", f"sip:bob@{DOMAIN}", via="127.0.88.21:5060",
                    extra=("P-Preferred-Identity: <sip:alice@",)),
            Address("udp", "127.0.88.20", 5060))
    await settle(0.5)
    assert [r.status for r in ue.responses()] == [400]
    assert len(gw.endpoint.layer) == 0
    await gw.endpoint.close()


async def test_gateway_answers_an_in_dialog_unparseable_route_with_400() -> None:
    hub = MemoryHub()
    gw = make_gateway()
    await on_hub(gw, hub)
    gw.attached["127.0.88.21"] = UeContext(
        "ue", "127.0.88.21", registered=True, associated=(f"sip:alice@{DOMAIN}",))
    ue = Peer(hub, "127.0.88.21")
    ue.send(request("BYE", f"sip:bob@{DOMAIN}", via="127.0.88.21:5060", to_tag="t",
                    extra=("Route: <sip:127.0.88.20;lr",)),
            Address("udp", "127.0.88.20", 5060))
    await settle(0.5)
    assert [r.status for r in ue.responses()] == [400]
    await gw.endpoint.close()


async def test_a_node_names_itself_by_the_listeners_it_has_now() -> None:
    """A node's own URI (Path, Service-Route, Record-Route, Contact) is remembered, but only
    while its listeners stay: on a new endpoint (another port) and with a TCP listener
    added, it names what it listens on then, never what it did."""
    hub = MemoryHub()
    core = SipCore(sip_plan("uri.core", "sip-core", CORE_HOST, SipCoreOptions(DOMAIN)))
    await on_hub(core, hub)
    first = core.uri("orig")
    assert (first.host, first.port, first.params) == (CORE_HOST, 5060, (("lr", None),))
    assert core.uri("orig") is first  # remembered
    await on_hub(core, hub, port=5070)
    assert core.uri("orig").port == 5070
    await core.endpoint.listen("tcp", CORE_HOST, 5071, hub=hub)
    on_tcp = core.uri("orig", transport="tcp")
    assert (on_tcp.port, on_tcp.params) == (5071, (("transport", "tcp"), ("lr", None)))
    assert core.uri("orig").port == 5070
    await core.endpoint.close()

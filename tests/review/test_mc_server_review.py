"""Regression tests from a review of the MC server: hostile input gets an answer, and only
the system's own SIP core may speak for registrations."""

from __future__ import annotations

from emulator.sip.events import Address
from emulator.transport.memory import MemoryHub
from nodes import McServerOptions
from nodes import Peer as PlanPeer
from nodes.mc_server import AuthorisedUser
from nodes.mc_server import McServer

from .support import Peer
from .support import on_hub
from .support import request
from .support import settle
from .support import sip
from .support import sip_plan

MC_HOST = "127.0.88.3"
MC = Address("udp", MC_HOST, 5060)
ALICE = "sip:alice@mcx.example"


async def make_mc(hub: MemoryHub, core: str = "127.0.88.66") -> McServer:
    """An MC server that trusts no token (its plan names no signing certificate)."""
    mc = McServer(sip_plan("mc", "mc-server", MC_HOST,
                           McServerOptions("https://idms.example", "sip:mcx.example"),
                           peers=(PlanPeer("core", "sip-core", "udp", core, 5060),)))
    await on_hub(mc, hub)
    assert mc.authorised(AuthorisedUser(ALICE, {"mcptt": ALICE}, None, mc.now() + 600))
    return mc


def third_party(expires: int, body: bytes = b"", content_type: str | None = None) -> bytes:
    extra = [f"Expires: {expires}"]
    if content_type:
        extra.append(f"Content-Type: {content_type}")
    return sip([
        f"REGISTER sip:{MC_HOST}:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.88.66:5060;branch=z9hG4bKevil;rport",
        "Max-Forwards: 70", "From: <sip:whoever@evil.example>;tag=1",
        f"To: <{ALICE}>", "Call-ID: evil@review", "CSeq: 1 REGISTER", *extra,
    ], body)


async def test_only_the_own_sip_core_may_deauthorise_a_user() -> None:
    """24.229 §5.4.1.7: third-party REGISTERs come from the system's own S-CSCF.  Anyone
    else is refused, so nobody can drop another user's service authorisation."""
    hub = MemoryHub()
    mc = await make_mc(hub, core="127.0.88.1")
    attacker = Peer(hub, "127.0.88.66")
    attacker.send(third_party(0), MC)
    await settle()
    assert [r.status for r in attacker.responses()] == [403]
    assert ALICE in mc.users
    await mc.endpoint.close()


async def test_inner_register_with_bad_content_type_is_refused() -> None:
    """A malformed header inside the message/sip body is a service-authorisation failure
    (403 + Warning), not an unanswered request."""
    hub = MemoryHub()
    mc = await make_mc(hub)
    inner = request("REGISTER", "sip:mcx.example", via="127.0.88.21:5060",
                    extra=("Content-Type: not a media type",), body=b"x")
    attacker = Peer(hub, "127.0.88.66")
    attacker.send(third_party(600, inner, "message/sip"), MC)
    await settle(0.5)
    [response] = attacker.responses()
    assert response.status == 403
    assert "101 service authorisation failed" in (response.headers.get("Warning") or "")
    await mc.endpoint.close()


async def test_third_party_register_without_message_sip_is_refused() -> None:
    hub = MemoryHub()
    mc = await make_mc(hub)
    attacker = Peer(hub, "127.0.88.66")
    attacker.send(third_party(600, b"<x/>", "application/xml"), MC)
    await settle()
    [response] = attacker.responses()
    assert response.status == 403 and "message/sip" in response.reason
    await mc.endpoint.close()


async def test_service_request_with_bad_p_asserted_identity_gets_400() -> None:
    hub = MemoryHub()
    mc = await make_mc(hub)
    peer = Peer(hub, "127.0.88.66")  # the core: only what it asserts is read at all
    peer.send(request("MESSAGE", "sip:bob@mcx.example", via="127.0.88.66:5060",
                      extra=('P-Asserted-Identity: <sip:alice@',)), MC)
    await settle(0.5)
    assert [r.status for r in peer.responses()] == [400]
    assert len(mc.endpoint.layer) == 0  # 0.5 s > Timer J (64·T1): the transaction ended
    await mc.endpoint.close()


async def test_only_the_own_sip_core_asserts_who_asks_for_a_service() -> None:
    """RFC 3325 §5: P-Asserted-Identity is trusted from within the trust domain only, the
    MC server's own SIP core.  A host sending an SDS or a call straight to the MC server,
    asserting alice (authorised), gets 403 and nothing goes on in her name."""
    hub = MemoryHub()
    mc = await make_mc(hub, core="127.0.88.1")
    core = Peer(hub, "127.0.88.1")
    attacker = Peer(hub, "127.0.88.66")
    for n, method in enumerate(("MESSAGE", "INVITE", "PUBLISH")):
        attacker.send(request(method, "sip:bob@mcx.example", via="127.0.88.66:5060",
                              call_id=f"spoof{n}", extra=(f"P-Asserted-Identity: <{ALICE}>",
                                                          "Contact: <sip:x@127.0.88.66>")), MC)
    await settle()
    finals = {(r.call_id, r.status, r.reason) for r in attacker.responses() if r.status >= 200}
    assert finals == {(f"spoof{n}@review", 403, "Forbidden (not this system's SIP core)")
                      for n in range(3)}
    assert ALICE in mc.users and core.inbox == []
    await mc.endpoint.close()


async def test_an_mcdata_id_reaches_only_its_current_holder() -> None:
    """MCData messages are routed by the target's MCData ID (24.282): the index follows
    each authorisation, a new one replacing the old ID and a de-registration dropping
    it, never another user's."""
    hub = MemoryHub()
    mc = await make_mc(hub)
    bob = "sip:bob@mcx.example"
    now = mc.now()
    assert mc.authorised(AuthorisedUser(bob, {"mcptt": bob, "mcdata": "sip:bob-data@x"},
                                        None, now + 600))
    assert mc.by_mcdata_id == {"sip:bob-data@x": bob}  # ALICE has no MCData ID
    assert mc.authorised(AuthorisedUser(bob, {"mcptt": bob, "mcdata": "sip:bob-2@x"},
                                        None, now + 600))
    assert mc.by_mcdata_id == {"sip:bob-2@x": bob}
    carol = "sip:carol@mcx.example"  # the ID moves to another user, then bob leaves
    assert mc.authorised(AuthorisedUser(carol, {"mcptt": carol, "mcdata": "sip:bob-2@x"},
                                        None, now + 600))
    mc.forget(bob)
    assert mc.by_mcdata_id == {"sip:bob-2@x": carol}
    mc.forget(carol)
    assert mc.by_mcdata_id == {}
    await mc.endpoint.close()

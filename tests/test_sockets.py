"""The UE's user agent registers with a SIP core acting as plain registrar (no MC server),
over real UDP, TCP and TLS sockets on 127.0.0.0/8."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from emulator.identity import issue_server_certificate
from emulator.identity import make_ca
from emulator.keystore import write_credential
from emulator.sip import URI
from emulator.sip import Address
from emulator.sip import TimerConfig
from emulator.transport import MemoryHub
from emulator.transport import SipEndpoint
from emulator.transport import client_context
from nodes import Credentials
from nodes import Listener
from nodes import McClient
from nodes import NodePlan
from nodes import SipCore
from nodes import SipCoreOptions

DOMAIN = "mc.example.org"
ALICE = f"sip:alice@{DOMAIN}"
FAST = TimerConfig(t1=0.005, t2=0.04, t4=0.05)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("Test MC System", now=now)
    server = issue_server_certificate(ca, "registrar", hosts=["127.0.2.2", DOMAIN], now=now)
    certificate, key = write_credential(tmp_path, "registrar", server)
    return {
        "server": Credentials(tls_certificate=str(certificate), tls_key=str(key)),
        "client": client_context([ca.certificate_pem()]),
        "other_client": client_context([make_ca("Other", now=now).certificate_pem()]),
    }


def registrar(host: str, transport: str, credentials: Credentials | None = None) -> SipCore:
    """The SIP core with no MC server peer: a plain RFC 3261 §10.3 registrar."""
    return SipCore(NodePlan("registrar", "sip-core", "test", host,
                            (Listener(transport, host, 0),), SipCoreOptions(DOMAIN),
                            credentials or Credentials()))


async def on_hub(node: SipCore | McClient, hub: MemoryHub) -> None:
    """Put ``node`` on an in-memory link, with fast timers, at port 5060."""
    node.endpoint = SipEndpoint(node.name, node, timers=FAST)
    await node.endpoint.listen("udp", node.host, 5060, hub=hub)


async def _pair(transport: str, pki: dict[str, object], *, client_key: str = "client"
                ) -> tuple[SipCore, McClient]:
    core = registrar("127.0.2.2", transport, pki["server"])  # type: ignore[arg-type]
    ua = McClient("ue", "127.0.2.1", transport, client_ssl=pki[client_key])  # type: ignore[arg-type]
    await core.start()
    await ua.start()
    return core, ua


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_register_refresh_and_remove(transport: str, pki: dict[str, object]) -> None:
    core, ua = await _pair(transport, pki)
    try:
        target = core.endpoint.local(transport)
        first = (await ua.register(target, ALICE, expires=600)).response
        assert first.status == 200
        [contact] = first.contacts
        assert contact.uri.host == "127.0.2.1"
        assert contact.expires == 600
        assert first.to.tag  # §8.2.6.2
        # A refresh with the same Call-ID and a higher CSeq keeps one binding (§10.3 step 7).
        refresh = (await ua.register(target, ALICE, expires=300)).response
        assert refresh.status == 200 and refresh.contacts[0].expires == 300
        assert len(core.location) == 1
        gone = (await ua.unregister(target, ALICE)).response
        assert gone.status == 200 and gone.contacts == []
        assert len(core.location) == 0
    finally:
        await ua.stop()
        await core.stop()


async def test_tcp_reuses_one_connection(pki: dict[str, object]) -> None:
    core, ua = await _pair("tcp", pki)
    try:
        for _ in range(5):
            assert (await ua.register(core.endpoint.local("tcp"), ALICE)).response.status == 200
        assert ua.endpoint._transports["tcp"].connection_count == 1  # type: ignore[attr-defined]
    finally:
        await ua.stop()
        await core.stop()


async def test_tls_refuses_a_server_from_an_untrusted_ca(pki: dict[str, object]) -> None:
    """A UA that trusts another CA cannot complete the handshake: the request
    fails with a locally generated 503 (§8.1.3.1) instead of hanging."""
    core, ua = await _pair("tls", pki, client_key="other_client")
    try:
        response = (await ua.register(core.endpoint.local("tls"), ALICE)).response
        assert response.status == 503
    finally:
        await ua.stop()
        await core.stop()


async def test_unanswered_register_times_out_with_408() -> None:
    """Nobody listens: Timer F ends the transaction and the TU sees a 408 (§8.1.3.1)."""
    ua = McClient("ue", "127.0.2.5", "udp")
    ua.endpoint = SipEndpoint("ue", ua, timers=FAST)
    await ua.endpoint.listen("udp", "127.0.2.5", 0)
    try:
        response = (await ua.register(Address("udp", "127.0.2.6", 9), ALICE)).response
        assert response.status == 408
        assert len(ua.endpoint.layer) == 0
    finally:
        await ua.stop()


async def test_in_memory_link_with_loss_recovers() -> None:
    """The in-memory link drops the first two REGISTER copies; Timer E recovers."""
    dropped: list[bytes] = []

    def lose_first_two(data: bytes, source: Address, destination: Address) -> bool:
        if data.startswith(b"REGISTER") and len(dropped) < 2:
            dropped.append(data)
            return True
        return False

    hub = MemoryHub(loss=lose_first_two)
    core = registrar("127.0.9.2", "udp")
    ua = McClient("ue", "127.0.9.1", "udp")
    await on_hub(core, hub)
    await on_hub(ua, hub)
    response = (await ua.register(core.endpoint.local("udp"), ALICE)).response
    assert response.status == 200
    assert len(dropped) == 2
    assert dropped[0] == dropped[1]  # a retransmission is the same bytes (§17.1.2.2)
    await ua.stop()
    await core.stop()


async def test_plain_registrar_answers_options_and_refuses_other_methods() -> None:
    """With no MC server the SIP core is a plain registrar: OPTIONS gets 200 with what it
    allows and supports (§11.2), any other method 405 with Allow (§21.4.6)."""
    core = registrar("127.0.2.7", "udp")
    ua = McClient("ue", "127.0.2.8", "udp")
    await core.start()
    await ua.start()
    try:
        target = core.endpoint.local("udp")
        for method, status in (("OPTIONS", 200), ("INFO", 405)):
            request = ua.new_request(method, URI("sip", host=DOMAIN), identity=ALICE)
            response = await ua.endpoint.request(request, target)
            assert response.status == status, method
            assert response.headers.get("Allow") == "REGISTER, OPTIONS"
            assert response.headers.get("Supported") == ("path" if status == 200 else None)
    finally:
        await ua.stop()
        await core.stop()

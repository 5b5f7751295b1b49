"""A UA registers with the registrar over real UDP, TCP and TLS sockets on 127.0.0.0/8."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from emulator.identity.pki import issue_server_certificate, make_ca
from emulator.sip.events import Address
from emulator.sip.timers import TimerConfig
from emulator.transport.endpoint import SipEndpoint
from emulator.transport.memory import MemoryHub
from emulator.transport.tls import client_context, server_context
from nodes.registrar import Registrar
from nodes.ua import UserAgent

DOMAIN = "mc.example.org"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("Test MC System", now=now)
    server = issue_server_certificate(ca, "registrar", hosts=["127.0.2.2", DOMAIN], now=now)
    return {
        "server": server_context(server.certificate_pem(), server.key_pem(), tmp_path, "reg"),
        "client": client_context([ca.certificate_pem()]),
        "other_client": client_context([make_ca("Other", now=now).certificate_pem()]),
    }


async def _pair(transport: str, pki: dict[str, object], *, client_key: str = "client"):
    registrar = Registrar("registrar", {DOMAIN})
    reg_ep = SipEndpoint("registrar", registrar)
    registrar.attach(reg_ep)
    ua = UserAgent("ue", f"sip:alice@{DOMAIN}")
    ua_ep = SipEndpoint("ue", ua, client_ssl=pki[client_key])  # type: ignore[arg-type]
    ua.attach(ua_ep)
    server_ssl = pki["server"] if transport == "tls" else None
    await reg_ep.listen(transport, "127.0.2.2", 0, server_ssl=server_ssl)  # type: ignore[arg-type]
    await ua_ep.listen(transport, "127.0.2.1", 0, server_ssl=server_ssl)  # type: ignore[arg-type]
    return registrar, reg_ep, ua, ua_ep


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_register_refresh_and_remove(transport: str, pki: dict[str, object]) -> None:
    registrar, reg_ep, ua, ua_ep = await _pair(transport, pki)
    try:
        target = reg_ep.local(transport)
        first = await ua.register(target, expires=600)
        assert first.status == 200
        [contact] = first.contacts
        assert contact.uri.host == "127.0.2.1"
        assert contact.expires == 600
        assert first.to.tag  # §8.2.6.2
        # A refresh with the same Call-ID and a higher CSeq keeps one binding (§10.3 step 7).
        refresh = await ua.register(target, expires=300)
        assert refresh.status == 200 and refresh.contacts[0].expires == 300
        assert len(registrar.location) == 1
        gone = await ua.unregister(target)
        assert gone.status == 200 and gone.contacts == []
        assert len(registrar.location) == 0
    finally:
        await ua_ep.close()
        await reg_ep.close()


async def test_tcp_reuses_one_connection(pki: dict[str, object]) -> None:
    _registrar, reg_ep, ua, ua_ep = await _pair("tcp", pki)
    try:
        for _ in range(5):
            assert (await ua.register(reg_ep.local("tcp"))).status == 200
        assert ua_ep._transports["tcp"].connection_count == 1  # type: ignore[attr-defined]
    finally:
        await ua_ep.close()
        await reg_ep.close()


async def test_tls_refuses_a_server_from_an_untrusted_ca(pki: dict[str, object]) -> None:
    """A UA that trusts another CA cannot complete the handshake: the request
    fails with a locally generated 503 (§8.1.3.1) instead of hanging."""
    _, reg_ep, ua, ua_ep = await _pair("tls", pki, client_key="other_client")
    try:
        response = await ua.register(reg_ep.local("tls"))
        assert response.status == 503
    finally:
        await ua_ep.close()
        await reg_ep.close()


async def test_unanswered_register_times_out_with_408() -> None:
    """Nobody listens: Timer F ends the transaction and the TU sees a 408 (§8.1.3.1)."""
    ua = UserAgent("ue", f"sip:alice@{DOMAIN}")
    ep = SipEndpoint("ue", ua, timers=TimerConfig(t1=0.005, t2=0.04, t4=0.05))
    ua.attach(ep)
    await ep.listen("udp", "127.0.2.5", 0)
    try:
        response = await ua.register(Address("udp", "127.0.2.6", 9))
        assert response.status == 408
        assert len(ep.layer) == 0
    finally:
        await ep.close()


async def test_in_memory_link_with_loss_recovers() -> None:
    """The in-memory link drops the first two REGISTER copies; Timer E recovers."""
    dropped: list[bytes] = []

    def lose_first_two(data: bytes, source: Address, destination: Address) -> bool:
        if data.startswith(b"REGISTER") and len(dropped) < 2:
            dropped.append(data)
            return True
        return False

    hub = MemoryHub(loss=lose_first_two)
    timers = TimerConfig(t1=0.005, t2=0.04, t4=0.05)
    registrar = Registrar("registrar", {DOMAIN})
    reg_ep = SipEndpoint("registrar", registrar, timers=timers)
    registrar.attach(reg_ep)
    ua = UserAgent("ue", f"sip:alice@{DOMAIN}")
    ua_ep = SipEndpoint("ue", ua, timers=timers)
    ua.attach(ua_ep)
    await reg_ep.listen("udp", "127.0.9.2", 5060, hub=hub)
    await ua_ep.listen("udp", "127.0.9.1", 5060, hub=hub)
    response = await ua.register(reg_ep.local("udp"))
    assert response.status == 200
    assert len(dropped) == 2
    assert dropped[0] == dropped[1]  # a retransmission is the same bytes (§17.1.2.2)
    await ua_ep.close()
    await reg_ep.close()

"""The SIP core as reg-event notifier (RFC 3680; 24.229 §5.4.1.7, §5.4.2.1), on an
in-memory hub: the first NOTIFY waits for the MC server's answer, a refusal ends the
registration with its Warning, and the subscription table is bounded per AOR."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager

from emulator.documents import reginfo
from emulator.sip.events import Address
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.transport.memory import MemoryHub
from nodes.reg_event import MAX_PER_AOR
from nodes.sip_core import SipCore

from .support import Peer
from .support import on_hub
from .support import sip
from .test_proxy_review import DOMAIN
from .test_proxy_review import MC_HOST
from .test_proxy_review import core_addr
from .test_proxy_review import make_core

UE = "127.0.88.2"
AOR = f"sip:u@{DOMAIN}"
WARNING = '399 127.0.88.3 "101 service authorisation failed"'


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait for ``predicate`` (an event on the hub), failing after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


def register(cseq: int = 1) -> bytes:
    return sip([f"REGISTER sip:{DOMAIN} SIP/2.0",
                f"Via: SIP/2.0/UDP {UE}:5060;branch=z9hG4bKreg{cseq};rport",
                "Max-Forwards: 70", f"From: <{AOR}>;tag=f1", f"To: <{AOR}>",
                "Call-ID: reg@review", f"CSeq: {cseq} REGISTER",
                f"Contact: <sip:u@{UE}:5060>", "Expires: 600"])


def subscribe(n: int, *, to_tag: str | None = None, expires: int = 600000) -> bytes:
    to = f"<{AOR}>" + (f";tag={to_tag}" if to_tag else "")
    return sip([f"SUBSCRIBE {AOR} SIP/2.0",
                f"Via: SIP/2.0/UDP {UE}:5060;branch=z9hG4bKsub{n}x{expires};rport",
                "Max-Forwards: 70", f"From: <{AOR}>;tag=s{n}", f"To: {to}",
                f"Call-ID: sub{n}@review", f"CSeq: {2 if to_tag else 1} SUBSCRIBE",
                "Event: reg", "Accept: application/reginfo+xml",
                f"Contact: <sip:u@{UE}:5060>", f"Expires: {expires}"])


class McServer:
    """Holds the third-party REGISTER until told how to answer it."""

    def __init__(self, hub: MemoryHub) -> None:
        self.held: list[tuple[Request, Address]] = []
        self.peer = Peer(hub, MC_HOST, on_message=self._on)

    def _on(self, peer: Peer, message: Request | Response, source: Address) -> None:
        if isinstance(message, Request):
            self.held.append((message, source))

    def answer(self, status: int, *warning: str) -> None:
        request, source = self.held.pop(0)
        response = request.make_response(status, to_tag="mc")
        for value in warning:
            response.headers.add("Warning", value)
        self.peer.send(response.to_bytes(), source)


@asynccontextmanager
async def registering() -> AsyncIterator[tuple[SipCore, McServer, Peer]]:
    """A SIP core on an in-memory hub, its MC server holding third-party REGISTERs, and
    a UE that has just sent its REGISTER; the core's endpoint closed afterwards."""
    hub = MemoryHub()
    core = make_core()
    await on_hub(core, hub)
    mc = McServer(hub)
    ue = Peer(hub, UE)
    ue.send(register(), core_addr())
    try:
        yield core, mc, ue
    finally:
        await core.endpoint.close()


def notifies(ue: Peer) -> list[reginfo.RegInfo]:
    return [reginfo.parse(r.body) for r in ue.requests("NOTIFY")]


async def test_the_first_notify_waits_for_the_mc_servers_answer() -> None:
    async with registering() as (_, mc, ue):
        await until(lambda: bool(mc.held) and bool(ue.responses()))
        assert ue.responses()[0].status == 200  # answered before the MC server was
        ue.send(subscribe(1), core_addr())
        await until(lambda: len(ue.responses()) == 2)
        assert ue.responses()[1].status == 200 and not ue.requests("NOTIFY")
        mc.answer(200)
        await until(lambda: bool(ue.requests("NOTIFY")))
        (document,) = notifies(ue)
        assert document.registrations[0].state == "active"


async def test_a_refusal_ends_the_registration_and_the_notify_names_it() -> None:
    async with registering() as (core, mc, ue):
        await until(lambda: bool(mc.held))
        ue.send(subscribe(1), core_addr())
        await until(lambda: len(ue.responses()) == 2)
        mc.answer(403, WARNING)
        await until(lambda: bool(ue.requests("NOTIFY")))
        (notify,) = ue.requests("NOTIFY")
        assert notify.headers.get("Subscription-State", "").startswith("terminated")
        contact = reginfo.parse(notify.body).registrations[0].contacts[0]
        assert (contact.state, contact.event) == ("terminated", "rejected")
        assert contact.service_authorisation is not None
        assert contact.service_authorisation.status == 403
        assert contact.service_authorisation.warnings == (WARNING,)
        assert len(core.location) == 0 and len(core.reg_event) == 0


async def test_subscriptions_are_bounded_per_aor_and_unsubscribe_frees_a_place() -> None:
    async with registering() as (core, mc, ue):
        await until(lambda: bool(mc.held))
        mc.answer(200)
        for n in range(MAX_PER_AOR + 1):
            ue.send(subscribe(n), core_addr())
        await until(lambda: len(ue.responses()) == MAX_PER_AOR + 2)
        statuses = [r.status for r in ue.responses()[1:]]
        assert statuses.count(200) == MAX_PER_AOR and statuses.count(503) == 1
        first = next(r for r in ue.responses()[1:] if r.call_id == "sub0@review")
        ue.send(subscribe(0, to_tag=first.to.tag, expires=0), core_addr())  # unsubscribe
        await until(lambda: len(core.reg_event) == MAX_PER_AOR - 1)
        ue.send(subscribe(99), core_addr())
        await until(lambda: len(ue.responses()) == MAX_PER_AOR + 4)
        assert ue.responses()[-1].status == 200 and len(core.reg_event) == MAX_PER_AOR


async def test_an_expired_registration_ends_its_subscriptions_with_event_expired() -> None:
    """RFC 3680 §5.1: a registration that runs out ends with contact event ``expired``;
    the core's clock is stepped past Expires rather than waited for."""
    async with registering() as (core, mc, ue):
        await until(lambda: bool(mc.held))
        mc.answer(200)
        ue.send(subscribe(1), core_addr())
        await until(lambda: bool(ue.requests("NOTIFY")))
        core.expire(core.endpoint.now() + 599)
        assert len(ue.requests("NOTIFY")) == 1 and len(core.location) == 1
        core.expire(core.endpoint.now() + 601)
        await until(lambda: len(ue.requests("NOTIFY")) == 2)
        last = ue.requests("NOTIFY")[-1]
        assert last.headers.get("Subscription-State", "").startswith("terminated")
        contact = reginfo.parse(last.body).registrations[0].contacts[0]
        assert (contact.state, contact.event) == ("terminated", "expired")
        assert len(core.location) == 0 and len(core.reg_event) == 0


async def test_a_new_subscription_on_a_live_call_id_replaces_the_old_one() -> None:
    """An initial SUBSCRIBE (no To tag) on a Call-ID already subscribed: one subscription
    stays, and the registration's end is told to it once."""
    async with registering() as (core, mc, ue):
        await until(lambda: bool(mc.held))
        mc.answer(200)
        ue.send(subscribe(1), core_addr())
        await until(lambda: len(ue.requests("NOTIFY")) == 1)
        again = subscribe(1).replace(b"tag=s1", b"tag=s1b").replace(b"z9hG4bKsub1x",
                                                                    b"z9hG4bKsub1bx")
        ue.send(again, core_addr())
        await until(lambda: len(ue.requests("NOTIFY")) == 2)
        assert ue.responses()[-1].status == 200 and len(core.reg_event) == 1
        core.expire(core.endpoint.now() + 601)
        await until(lambda: len(ue.requests("NOTIFY")) >= 3)
        await asyncio.sleep(0)  # a duplicate would have been sent in the same turn
        ended = [n for n in ue.requests("NOTIFY")
                 if n.headers.get("Subscription-State", "").startswith("terminated")]
        assert len(ended) == 1 and ended[0].to.tag == "s1b"
        assert len(core.reg_event) == 0

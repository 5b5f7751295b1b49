"""The node handlers fuzzed over the in-memory link, in simulated time: the gateway, the
SIP core, the MC server and a plain registrar each get batches of mutated requests
(valid UTF-8, so they pass the parser's first check and reach the handlers).

Whatever arrives: every request the node can parse gets exactly one final answer (its
retransmissions aside), a request it cannot parse gets at most one, the handler never
raises into the endpoint, and once every SIP timer has run out the transaction layer
holds nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from emulator.sip.errors import RemoteProtocolError
from emulator.sip.events import Address
from emulator.sip.message import Request
from emulator.sip.message import parse_message
from emulator.transport.memory import MemoryHub
from nodes import Gateway
from nodes import GatewayOptions
from nodes import McServer
from nodes import McServerOptions
from nodes import Peer as PlanPeer
from nodes import SipCore
from nodes import SipCoreOptions
from nodes.gateway import UeContext
from tests.support.mutation import utf8_mutate
from tests.support.simtime import SimulatedTimeLoop

from .support import Peer
from .support import on_hub
from .support import request
from .support import sip_plan

DOMAIN = "mcx.example"
NODE_HOST = "127.0.88.40"
SOURCE = "127.0.88.41"
NODE = Address("udp", NODE_HOST, 5060)
METHODS = ("REGISTER", "MESSAGE", "OPTIONS", "SUBSCRIBE", "INVITE", "BYE", "CANCEL",
           "PUBLISH", "NOTIFY", "INFO", "UPDATE", "REFER")
SETTLE = 60.0
"""Simulated seconds after the batch: past Timers B, F, H, J and K (64·T1 = 0.32 s)."""


def gateway() -> Gateway:
    node = Gateway(sip_plan("fuzz.gateway", "gateway", NODE_HOST,
                            GatewayOptions("visited", "001-02", (SOURCE,)), https=8443,
                            peers=(PlanPeer("core", "sip-core", "udp", "127.0.88.42", 5060),)))
    node.attached[SOURCE] = UeContext("ue", SOURCE, registered=True,
                                      associated=(f"sip:alice@{DOMAIN}",),
                                      service_route=("<sip:orig@127.0.88.42:5060;lr>",))
    return node


def sip_core() -> SipCore:
    return SipCore(sip_plan("fuzz.core", "sip-core", NODE_HOST, SipCoreOptions(DOMAIN),
                            peers=(PlanPeer("mc", "mc-server", "udp", "127.0.88.43", 5060),
                                   PlanPeer("gw", "gateway", "udp", SOURCE, 5060))))


def mc_server() -> McServer:
    return McServer(sip_plan("fuzz.mc", "mc-server", NODE_HOST,
                             McServerOptions("https://idms.example", f"sip:{DOMAIN}"),
                             peers=(PlanPeer("core", "sip-core", "udp", SOURCE, 5060),)))


def registrar() -> SipCore:
    return SipCore(sip_plan("fuzz.registrar", "sip-core", NODE_HOST, SipCoreOptions(DOMAIN)))


NODES: dict[str, Callable[[], Any]] = {"gateway": gateway, "sip-core": sip_core,
                                       "mc-server": mc_server, "registrar": registrar}


def seed_request(rng: random.Random, n: int) -> str:
    method = rng.choice(METHODS)
    extra = [f"Contact: <sip:alice@{SOURCE}:5060>"]
    if rng.random() < 0.5:
        extra.append(f"Route: <sip:{NODE_HOST}:5060;lr>")
    if method in ("SUBSCRIBE", "NOTIFY", "PUBLISH"):
        extra.append("Event: reg")
    if method == "REGISTER":
        extra.append(f"Expires: {rng.choice([0, 60, 600000])}")
    if rng.random() < 0.3:
        extra.append(f"P-Asserted-Identity: <sip:alice@{DOMAIN}>")
    body = b"<x/>" if rng.random() < 0.2 else b""
    if body:
        extra.append("Content-Type: application/vnd.3gpp.mcptt-info+xml")
    return request(method, f"sip:bob@{DOMAIN}", via=f"{SOURCE}:5060", extra=tuple(extra),
                   call_id=f"fuzz-{n}", branch=f"z9hG4bKfuzz{n:04d}", to_tag=(
                       "t" if method in ("BYE", "INFO", "UPDATE") else None),
                   body=body).decode()


async def exercise(kind: str, batch: list[bytes]) -> None:
    hub = MemoryHub()
    node = NODES[kind]()
    await on_hub(node, hub)
    peer = Peer(hub, SOURCE)
    failures: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: failures.append(record.getMessage())  # type: ignore[method-assign]
    handler.setLevel(logging.ERROR)
    endpoint_log = logging.getLogger("emulator.transport.endpoint")
    endpoint_log.addHandler(handler)
    try:
        for data in batch:
            peer.send(data, NODE)
            await asyncio.sleep(0.01)
        await asyncio.sleep(SETTLE)
        assert not failures, failures  # "transaction user failed": a handler raised
        # By branch; None (no branch parameter: a broken request's stateless 400 echoing
        # its Via) is not the empty branch a request may carry.
        finals: dict[str | None, set[int]] = {}
        for message, _ in peer.inbox:
            if not isinstance(message, Request) and message.status >= 200:
                try:
                    branch = message.top_via.branch
                except (RemoteProtocolError, ValueError):
                    continue
                finals.setdefault(branch, set()).add(message.status)
        branches: list[str] = []
        unparsed: list[bytes] = []
        for data in batch:
            try:
                sent = parse_message(data)
                branch = sent.top_via.branch if isinstance(sent, Request) else None
            except (RemoteProtocolError, ValueError):
                unparsed.append(data)  # at most the layer's stateless 400, echoing its Via
                continue
            if branch is not None and sent.method != "ACK":
                branches.append(branch)
        for branch in set(branches):
            # A broken request on the same branch (a CANCEL's is its INVITE's) may have its
            # own 400 there, which the branch alone cannot tell apart.
            shared = any(f"branch={branch}".encode() in data for data in unparsed)
            if branches.count(branch) == 1 and not shared:
                assert len(finals.get(branch, set())) == 1, (kind, branch, finals, batch)
        assert len(node.endpoint.layer) == 0, (kind, node.endpoint.layer._transactions)
    finally:
        endpoint_log.removeHandler(handler)
        await node.endpoint.close()


@settings(deadline=None, max_examples=300, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(NODES)), st.integers(0, 2**64 - 1))
@example("gateway", 54828)  # an in-dialog UPDATE routed to ";transport=tcp060": 503, no crash
@example("gateway", 1013591)  # "branch=" (empty) beside a broken Via's 400, which has none
@example("gateway", 5_772_549_929_394_034)  # a broken CANCEL's 400 on its NOTIFY's branch
def test_every_request_gets_one_final_answer_and_every_layer_drains(kind: str,
                                                                    seed: int) -> None:
    rng = random.Random(seed)
    batch = [utf8_mutate(seed_request(rng, n), rng, rng.randint(0, 4)) for n in range(5)]
    loop = SimulatedTimeLoop()
    try:
        loop.run_until_complete(exercise(kind, batch))
    finally:
        loop.close()


@pytest.mark.parametrize("kind", sorted(NODES))
def test_the_unmutated_requests_get_their_answers(kind: str) -> None:
    """Control: with no mutation at all, the same property holds."""
    rng = random.Random(7)
    batch = [seed_request(rng, n).encode() for n in range(len(METHODS))]
    loop = SimulatedTimeLoop()
    try:
        loop.run_until_complete(exercise(kind, batch))
    finally:
        loop.close()

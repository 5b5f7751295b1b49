"""Harness for the review tests: raw SIP peers on an in-memory hub, message builders."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from emulator.sip.events import Address
from emulator.sip.message import Request
from emulator.sip.message import Response
from emulator.sip.message import parse_message
from emulator.sip.timers import TimerConfig
from emulator.transport.endpoint import SipEndpoint
from emulator.transport.memory import MemoryHub
from emulator.transport.memory import MemoryTransport
from nodes import Listener
from nodes import NodePlan
from nodes import Peer as PlanPeer

FAST = TimerConfig(t1=0.005, t2=0.04, t4=0.05)


def sip(lines: list[str], body: bytes = b"") -> bytes:
    return ("\r\n".join([*lines, f"Content-Length: {len(body)}", "", ""])).encode() + body


def request(method: str, ruri: str, *, via: str, extra: tuple[str, ...] = (),
            cseq: int = 1, to_tag: str | None = None, call_id: str | None = None,
            branch: str | None = None, body: bytes = b"", max_forwards: int = 70) -> bytes:
    branch = branch or "z9hG4bK" + secrets.token_hex(6)
    to = "<sip:bob@mcx.example>" + (f";tag={to_tag}" if to_tag else "")
    return sip([
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {via};branch={branch};rport",
        f"Max-Forwards: {max_forwards}",
        "From: <sip:alice@mcx.example>;tag=abc123",
        f"To: {to}",
        f"Call-ID: {call_id or secrets.token_hex(6)}@review",
        f"CSeq: {cseq} {method}",
        *extra,
    ], body)


class Peer:
    """A raw SIP element on a MemoryHub: sends bytes, records what it receives."""

    def __init__(self, hub: MemoryHub, host: str, port: int = 5060,
                 on_message: Callable[[Peer, Request | Response, Address], None] | None = None
                 ) -> None:
        self.address = Address("udp", host, port)
        self.inbox: list[tuple[Request | Response, Address]] = []
        self.on_message = on_message
        self.transport = MemoryTransport(hub, self.address, self._receive)

    def _receive(self, data: bytes, source: Address, *, stream: bool) -> None:
        message = parse_message(data)
        self.inbox.append((message, source))
        if self.on_message is not None:
            self.on_message(self, message, source)

    def send(self, data: bytes, destination: Address) -> None:
        self.transport.send(data, destination)

    def responses(self) -> list[Response]:
        return [m for m, _ in self.inbox if isinstance(m, Response)]

    def requests(self, method: str | None = None) -> list[Request]:
        return [m for m, _ in self.inbox
                if isinstance(m, Request) and (method is None or m.method == method)]


async def on_hub(node, hub: MemoryHub, timers: TimerConfig = FAST, port: int = 5060) -> None:
    """Give a SipNode a fresh endpoint with fast timers, listening on ``hub`` at ``port``."""
    node.endpoint = SipEndpoint(node.name, node, timers=timers)
    await node.endpoint.listen("udp", node.host, port, hub=hub)


def sip_plan(name: str, role: str, host: str, options: object, *, port: int = 5060,
             peers: tuple[PlanPeer, ...] = (), https: int | None = None) -> NodePlan:
    """A UDP-only plan for one role, as the orchestration would make it."""
    listeners = (Listener("udp", host, port),)
    if https is not None:
        listeners += (Listener("https", host, https),)
    return NodePlan(name, role, "review", host, listeners, options,  # type: ignore[arg-type]
                    peers=peers)


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)

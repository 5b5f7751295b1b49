"""Overload control at a SIP node, over real sockets: while its receive queue stands, new
requests get 503 with Retry-After, what it already took on does not, and once a datagram is
read in time it serves again (nodes/overload.py)."""

from __future__ import annotations

import asyncio
import socket
import time

from emulator.sip import parse_message
from emulator.sip.message import Response
from emulator.topology.model import OverloadLimit
from nodes.plan import Listener
from nodes.sipnode import SipNode

HOST = "127.0.78.1"
CLIENT = "127.0.78.2"


def _register(branch: str, to_tag: str = "") -> bytes:
    return (f"REGISTER sip:partner.example SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {CLIENT};branch=z9hG4bK{branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@partner.example>;tag=a\r\n"
            f"To: <sip:alice@partner.example>{to_tag}\r\nCall-ID: {branch}\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <sip:alice@{CLIENT}>\r\nContent-Length: 0\r\n\r\n"
            ).encode()


async def _answer(client: socket.socket) -> Response:
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(client, 65535), 10)
    response = parse_message(data)
    assert isinstance(response, Response)
    return response


async def test_a_node_behind_refuses_new_requests_and_serves_again_once_caught_up() -> None:
    # The node's queue clock runs ahead while `behind` is set: every datagram it reads then
    # looks as if it had waited `behind` seconds, a standing queue (interval 0: at once).
    behind = [1.0]
    node = SipNode("partner.sip-core", HOST, (Listener("udp", HOST, 0),),
                   overload=OverloadLimit(target=0.05, interval=0.0, retry_after=7))
    node.endpoint.queue_clock = lambda: time.time() + behind[0]
    await node.start()
    port = node.endpoint.addresses[0].port
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind((CLIENT, 0))
    client.setblocking(False)
    try:
        client.sendto(_register("one"), (HOST, port))
        refused = await _answer(client)
        assert (refused.status, refused.headers.get("Retry-After")) == (503, "7")
        assert refused.reason == "Service Unavailable (overload)"
        # Refused statelessly (§8.2.7): no transaction kept; its retransmission gets the
        # same 503, To tag included.
        assert len(node.endpoint.layer) == 0
        client.sendto(_register("one"), (HOST, port))
        again = await _answer(client)
        assert (again.status, again.to.tag) == (503, refused.to.tag)
        assert len(node.endpoint.layer) == 0
        # Another request gets another tag.
        client.sendto(_register("four"), (HOST, port))
        assert (await _answer(client)).to.tag not in (None, refused.to.tag)
        # A request in a dialog is part of what the node serves already (SipNode: 501).
        client.sendto(_register("two", ";tag=b"), (HOST, port))
        assert (await _answer(client)).status == 501
        assert node.overload.state()["shed"] == 3
        behind[0] = 0.0  # caught up: the next datagram is read in time
        client.sendto(_register("three"), (HOST, port))
        assert (await _answer(client)).status == 501
        assert node.overload.state()["shedding"] is False
    finally:
        client.close()
        await node.stop()

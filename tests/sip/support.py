"""Shared material for the SIP core tests: canonical messages and a wire between layers.

The canonical messages are written the way this stack serialises (one SP after
each colon, no folding, Content-Length present and right), so that
``parse_message(x).to_bytes() == x`` must hold byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from emulator.sip import Address
from emulator.sip import Event
from emulator.sip import Headers
from emulator.sip import Request
from emulator.sip import TimerConfig
from emulator.sip import TransactionLayer
from emulator.sip import new_branch

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rfc4475"
MANIFEST: list[dict[str, str]] = json.loads((FIXTURES / "manifest.json").read_text())


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixtures_of_kind(kind: str) -> list[str]:
    return [entry["file"] for entry in MANIFEST if entry["kind"] == kind]


def sip_bytes(lines: list[str], body: bytes = b"") -> bytes:
    """Join header lines with CRLF, append Content-Length and the body."""
    head = "\r\n".join([*lines, f"Content-Length: {len(body)}", "", ""])
    return head.encode() + body


SDP = (b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
       b"c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

REGISTER = sip_bytes([
    "REGISTER sip:mcx.example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds7;rport",
    "Max-Forwards: 70",
    "From: <sip:alice@mcx.example.com>;tag=a73kszlfl",
    "To: <sip:alice@mcx.example.com>",
    "Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.10",
    "CSeq: 1 REGISTER",
    'Contact: <sip:alice@192.0.2.10:5060>;expires=600;+g.3gpp.mcptt;'
    '+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.mcptt"',
    "Expires: 600",
])

INVITE = sip_bytes([
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    'To: "Bob" <sip:bob@biloxi.example.com>',
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
    "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
    "Content-Type: application/sdp",
], SDP)

OK_200 = sip_bytes([
    "SIP/2.0 200 OK",
    "Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1",
    "Record-Route: <sip:server10.biloxi.example.com;lr>",
    "Record-Route: <sip:bigbox3.site3.atlanta.example.com;lr>",
    'To: "Bob" <sip:bob@biloxi.example.com>;tag=a6c85cf',
    'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:bob@192.0.2.4>",
    "Content-Type: application/sdp",
], SDP)

BOUNDARY = "mcx-boundary-42"
# A binary part containing CRLF, a bare CR, NUL and every other octet value.
BINARY_PART = bytes(range(256)) + b"\r\n--not-the-boundary\r\n\x00\r"
MULTIPART_BODY = (
    f"--{BOUNDARY}\r\nContent-Type: application/vnd.3gpp.mcptt-info+xml\r\n\r\n".encode()
    + b'<?xml version="1.0"?><mcpttinfo><mcptt-Params/></mcpttinfo>'
    + f"\r\n--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
      "Content-Disposition: attachment\r\n\r\n".encode()
    + BINARY_PART
    + f"\r\n--{BOUNDARY}--\r\n".encode()
)
MESSAGE = sip_bytes([
    "MESSAGE sip:group-1@mcx.example.com SIP/2.0",
    "Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKmsg1",
    "Max-Forwards: 70",
    "From: <sip:alice@mcx.example.com>;tag=49583",
    "To: <sip:group-1@mcx.example.com>",
    "Call-ID: msg-7@192.0.2.10",
    "CSeq: 2 MESSAGE",
    "P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.mcptt",
    f"Content-Type: multipart/mixed;boundary={BOUNDARY}",
], MULTIPART_BODY)

CANONICAL = {"register": REGISTER, "invite": INVITE, "ok200": OK_200, "message": MESSAGE}


# --------------------------------------------------------------------------
# Transaction-layer helpers
# --------------------------------------------------------------------------

def make_request(method: str, *, transport: str = "udp", branch: str | None = None,
                 host: str = "192.0.2.1", port: int = 5060, cseq: int = 1,
                 call_id: str = "call-1@192.0.2.1", routes: tuple[str, ...] = (),
                 extra_vias: tuple[str, ...] = ()) -> Request:
    """A request as a UAC hands it to its transaction layer."""
    headers = Headers([
        ("Via", f"SIP/2.0/{transport.upper()} {host}:{port};branch={branch or new_branch()}"),
        *(("Via", via) for via in extra_vias),
        ("Max-Forwards", "70"),
        *(("Route", route) for route in routes),
        ("From", "<sip:alice@example.com>;tag=1928301774"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:alice@{host}:{port}>"),
    ])
    return Request(method, "sip:bob@example.com", headers)


def drain(layer: TransactionLayer) -> list[Event]:
    events = []
    while (event := layer.next_event()) is not None:
        events.append(event)
    return events


def advance(layer: TransactionLayer, until: float) -> list[tuple[float, bytes]]:
    """Fire the layer's timers in order up to ``until``; returns what it sent and when."""
    sent: list[tuple[float, bytes]] = []
    while (deadline := layer.get_timer()) is not None and deadline <= until:
        layer.handle_timer(now=deadline)
        sent.extend((deadline, data) for data, _ in layer.messages_to_send())
    layer.handle_timer(now=until)
    sent.extend((until, data) for data, _ in layer.messages_to_send())
    return sent


class Wire:
    """Two transaction layers back to back, with bytes moved by hand.

    ``drop`` sees every datagram before delivery and returns True to lose it.
    """

    def __init__(self, transport: str = "udp", *,
                 drop: Callable[[bytes], bool] | None = None, auto_trying: bool = True) -> None:
        self.client = TransactionLayer(timers=TimerConfig(), name="client")
        self.server = TransactionLayer(timers=TimerConfig(), name="server",
                                       auto_trying=auto_trying)
        self.client_addr = Address(transport, "192.0.2.1", 5060)
        self.server_addr = Address(transport, "192.0.2.2", 5060)
        self.stream = transport != "udp"
        self.drop = drop
        self.delivered: list[bytes] = []

    def pump(self, now: float) -> int:
        """Move queued messages both ways until both sides are quiet; returns how many moved."""
        moved = 0
        while True:
            batch = [(self.client, self.server, self.client_addr, self.server_addr),
                     (self.server, self.client, self.server_addr, self.client_addr)]
            progress = False
            for sender, receiver, src, dst in batch:
                for data, destination in sender.messages_to_send():
                    progress = True
                    assert destination == dst, (destination, dst)
                    if self.drop is not None and self.drop(data):
                        continue
                    moved += 1
                    self.delivered.append(data)
                    receiver.receive(data, src, now=now, stream=self.stream)
            if not progress:
                return moved

    def run(self, until: float, start: float = 0.0) -> None:
        """Advance both layers' timers to ``until``, delivering everything they send."""
        now = start
        self.pump(now)
        while True:
            deadlines = [t for t in (self.client.get_timer(), self.server.get_timer())
                         if t is not None and t <= until]
            if not deadlines:
                break
            now = min(deadlines)
            self.client.handle_timer(now=now)
            self.server.handle_timer(now=now)
            self.pump(now)
        self.client.handle_timer(now=until)
        self.server.handle_timer(now=until)
        self.pump(until)

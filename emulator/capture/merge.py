"""One capture from several: the bridges of a netns run, each captured on its own.

A packet a router (or the gateway) forwards crosses two bridges, so it is captured twice:
the same IPv4 source, destination, identification, protocol and payload, with only the
link header, TTL and checksum changed.  The merged capture keeps the first and drops a
copy seen within :data:`SAME_PACKET` seconds; a real retransmission comes much later
(SIP's T1 is 500 ms, TCP's minimum RTO 200 ms) and is a new packet anyway.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from .pcapng import Packet

SAME_PACKET = 0.05
_ETHERNET = 14


def _identity(frame: bytes) -> bytes | None:
    """What stays the same when a router forwards an IPv4 packet, or None if not IPv4."""
    if len(frame) < _ETHERNET + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[_ETHERNET:]
    header = (ip[0] & 0x0F) * 4
    # source and destination, identification, protocol, then the whole payload
    return ip[12:20] + ip[4:6] + ip[9:10] + ip[header:]


def merge(captures: Iterable[list[Packet]]) -> list[Packet]:
    """Every packet of ``captures`` in time order, each forwarded packet once."""
    ordered = heapq.merge(*(sorted(c, key=lambda p: p.timestamp) for c in captures),
                          key=lambda p: p.timestamp)
    seen: dict[bytes, float] = {}
    out = []
    for packet in ordered:
        identity = _identity(packet.data)
        if identity is not None:
            earlier = seen.get(identity)
            if earlier is not None and packet.timestamp - earlier < SAME_PACKET:
                continue
            seen[identity] = packet.timestamp
            if len(seen) > 100_000:  # bounded: only the last moments matter
                horizon = packet.timestamp - SAME_PACKET
                seen = {k: t for k, t in seen.items() if t >= horizon}
        out.append(packet)
    return out

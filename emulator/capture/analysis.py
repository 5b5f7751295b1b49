"""Reading a capture back with scapy: who talked to whom.

The "no interconnection" verdict is computed here, from the file, not from
in-memory state: a packet whose source is an address of one MC system and
whose destination is an address of the other is a crossing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Flow:
    source: str
    destination: str
    protocol: str
    sport: int
    dport: int


def flows(path: Path) -> list[Flow]:
    """Every IPv4 packet of the capture as (source, destination, protocol, ports)."""
    from scapy.layers.inet import IP  # scapy is slow to import: only when reading
    from scapy.layers.inet import TCP  # scapy is slow to import: only when reading
    from scapy.layers.inet import UDP  # scapy is slow to import: only when reading
    from scapy.utils import PcapReader

    # Our pcapng embeds TLS secrets, which scapy warns it will not use: only addresses matter.
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    out = []
    with PcapReader(str(path)) as reader:
        for packet in reader:
            ip = packet.getlayer(IP)
            if ip is None:
                continue
            layer = ip.getlayer(TCP) or ip.getlayer(UDP)
            proto = "tcp" if ip.haslayer(TCP) else "udp" if ip.haslayer(UDP) else str(ip.proto)
            out.append(Flow(ip.src, ip.dst, proto, int(getattr(layer, "sport", 0) or 0),
                            int(getattr(layer, "dport", 0) or 0)))
    return out


def crossings(path: Path, side_a: Iterable[str], side_b: Iterable[str]) -> list[Flow]:
    """Packets between an address of ``side_a`` and one of ``side_b``, either way."""
    a, b = set(side_a), set(side_b)
    return [f for f in flows(path)
            if (f.source in a and f.destination in b) or (f.source in b and f.destination in a)]

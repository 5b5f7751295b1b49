"""Application-level capture: frames synthesized from the transports' tap.

When tcpdump cannot run (not root), every SIP message a transport sends or
receives still passes its ``Tap`` (``emulator.transport.base``).  A
:class:`TapWriter` turns each one into the Ethernet/IPv4/UDP or TCP frames
that would have carried it, so the run still yields a pcapng that tshark
dissects like a kernel capture:

* IPv4 (RFC 791 §3.1): DF set, TTL 64, an incrementing ID, header checksum;
  UDP (RFC 768) and TCP (RFC 9293 §3.1) checksums over the pseudo-header.
  All three are RFC 1071 one's complement sums, computed here as one big
  integer modulo 0xFFFF (2**16 is 1 modulo 0xFFFF), which needs no loop.
* TCP: each flow gets a synthesized SYN, SYN-ACK, ACK the first time it is
  seen (the first sender is taken as the client), sequence numbers that
  advance by the payload length, PSH|ACK segments of at most ``MSS`` bytes
  each acknowledged by the peer, and FIN/ACK, FIN/ACK, ACK on ``close()``.
  Initial sequence numbers hash the 4-tuple, as RFC 6528 §3 does (without
  its secret and clock), so a run gives the same numbers every time.
* TLS: the tap sees SIP *after* decryption, so there are no TLS records to
  write and no keys would help.  The plaintext is written as TCP on the real
  ports.  tshark (4.0) gives port 5061 to its TLS dissector, which refuses
  data that does not start like a TLS record (a SIP start line never does);
  SIP's TCP heuristic then claims the stream, so SIP shows, reassembled,
  with no "Decode As" and no malformed frame.  Renaming 5061 to 5060 would
  work too, but it would contradict the Via header and could land on the
  4-tuple of a real TCP flow.  The SYN of such a flow carries a comment
  saying the wire carried TLS.

One message is often tapped twice: sent by one node and received by
another.  Hosts listed in ``tapped_hosts`` feed this writer themselves, so a
message received *from* one of them is already recorded as sent and is
skipped: each message appears once, as in a kernel capture.

Flows are only as right as the addresses tapped: a stream transport must
give each connection's own local address (the ephemeral port of one it
opened), not its listener's, or one connection shows as two flows.
"""

from __future__ import annotations

import socket
import struct
import time
import zlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emulator.sip.events import Address

from .pcapng import Packet
from .pcapng import write_pcapng

MSS = 65000
"""Largest TCP payload per segment: with 40 bytes of headers, an IPv4 packet stays < 65535."""

_MAX_UDP_PAYLOAD = 65535 - 20 - 8

_ETHERNET = bytes(12) + b"\x08\x00"  # lo's all-zero MACs, as tcpdump -i lo records them
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_MSS_OPTION = struct.pack("!BBH", 2, 4, MSS)  # RFC 9293 §3.7.1, on SYNs only
_FIN, _SYN, _PSH, _ACK = 0x01, 0x02, 0x08, 0x10
_WINDOW = 65535
_TCP_PROTOCOL, _UDP_PROTOCOL = 6, 17


def _checksum(total: int) -> int:
    """RFC 1071 checksum of a byte string given as a big-endian integer (zero-padded)."""
    folded = total % 0xFFFF
    if folded == 0 and total:
        folded = 0xFFFF  # one's complement "negative zero": a sum of non-zero words
    return 0xFFFF - folded


@dataclass(slots=True)
class _Flow:
    """One TCP connection: side 0 is the client (first sender), side 1 the server."""

    ends: tuple[tuple[bytes, int], tuple[bytes, int]]  # (packed address, port) per side
    client: tuple[str, int]
    next_seq: list[int]


class TapWriter:
    """A ``Tap`` (call it with direction, local, remote, data) recording synthesized frames."""

    def __init__(self, *, tapped_hosts: Iterable[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.tapped_hosts = frozenset(tapped_hosts)
        self.clock = clock
        self.packets: list[Packet] = []
        self.skipped = 0
        """Messages not recorded: non-IPv4 hosts, or UDP datagrams too large for IPv4."""
        self._flows: dict[tuple[str, str, int, str, int], _Flow] = {}
        self._addresses: dict[str, bytes | None] = {}
        self._ident = 0
        self._last = 0.0

    def __call__(self, direction: str, local: Address, remote: Address, data: bytes) -> None:
        if direction == "out":
            source, destination = local, remote
        elif remote.host in self.tapped_hosts:
            return  # its sender's tap recorded it
        else:
            source, destination = remote, local
        src, dst = self._address(source.host), self._address(destination.host)
        if src is None or dst is None:
            self.skipped += 1
            return
        now = max(self.clock(), self._last)  # a stepped-back wall clock must not reorder TCP
        self._last = now
        if source.transport == "udp":
            if len(data) > _MAX_UDP_PAYLOAD:
                self.skipped += 1  # the kernel refuses it too (EMSGSIZE): nothing crossed
                return
            self._emit(now, self._udp(src, source.port, dst, destination.port, data))
            return
        flow, side = self._flow(now, source, destination, src, dst)
        view = memoryview(data)
        for start in range(0, len(data), MSS):
            segment = bytes(view[start:start + MSS])
            self._segment(now, flow, side, _PSH | _ACK, segment)
            self._segment(now, flow, 1 - side, _ACK)

    def close(self) -> list[Packet]:
        """End every TCP flow with FIN/ACK both ways (RFC 9293 §3.6); returns all packets."""
        now = max(self.clock(), self._last)
        for flow in self._flows.values():
            for side in (0, 1):
                self._segment(now, flow, side, _FIN | _ACK)
                flow.next_seq[side] = (flow.next_seq[side] + 1) & 0xFFFFFFFF  # FIN takes one
            self._segment(now, flow, 0, _ACK)
        self._flows.clear()
        return self.packets

    # ---------------------------------------------------------------- internals
    def _address(self, host: str) -> bytes | None:
        try:
            return self._addresses[host]
        except KeyError:
            try:
                packed: bytes | None = socket.inet_pton(socket.AF_INET, host)
            except OSError:
                packed = None  # IPv6 or a name: not written
            self._addresses[host] = packed
            return packed

    def _flow(self, now: float, source: Address, destination: Address, src: bytes,
              dst: bytes) -> tuple[_Flow, int]:
        a, b = (source.host, source.port), (destination.host, destination.port)
        key = (source.transport, *min(a, b), *max(a, b))
        flow = self._flows.get(key)
        if flow is None:
            flow = self._open(now, source, destination, src, dst)
            self._flows[key] = flow
        return flow, 0 if flow.client == a else 1

    def _open(self, now: float, client: Address, server: Address, src: bytes,
              dst: bytes) -> _Flow:
        isn = [zlib.crc32(struct.pack("!4sH4sH", src, client.port, dst, server.port)),
               zlib.crc32(struct.pack("!4sH4sH", dst, server.port, src, client.port))]
        flow = _Flow(((src, client.port), (dst, server.port)), (client.host, client.port), isn)
        comment = None
        if client.transport == "tls":
            comment = ("SIP over TLS on the wire: this flow holds the plaintext "
                       "the application tap saw")
        for side, flags in ((0, _SYN), (1, _SYN | _ACK)):
            self._segment(now, flow, side, flags, comment=None if side else comment)
            flow.next_seq[side] = (flow.next_seq[side] + 1) & 0xFFFFFFFF  # SYN takes one
        self._segment(now, flow, 0, _ACK)
        return flow

    def _segment(self, now: float, flow: _Flow, side: int, flags: int, payload: bytes = b"",
                 comment: str | None = None) -> None:
        (src, sport), (dst, dport) = flow.ends[side], flow.ends[1 - side]
        seq = flow.next_seq[side]
        ack = flow.next_seq[1 - side] if flags & _ACK else 0
        options = _MSS_OPTION if flags & _SYN else b""
        length = 20 + len(options) + len(payload)
        header = _TCP.pack(sport, dport, seq, ack, (20 + len(options)) << 2, flags, _WINDOW,
                           0, 0) + options
        pseudo = int.from_bytes(src) + int.from_bytes(dst) + _TCP_PROTOCOL + length
        body = int.from_bytes(payload) << 8 if len(payload) % 2 else int.from_bytes(payload)
        checksum = _checksum(pseudo + int.from_bytes(header) + body)
        header = header[:16] + checksum.to_bytes(2) + header[18:]
        self._emit(now, self._ipv4(src, dst, _TCP_PROTOCOL, header + payload), comment)
        flow.next_seq[side] = (seq + len(payload)) & 0xFFFFFFFF

    def _udp(self, src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
        length = 8 + len(payload)
        pseudo = int.from_bytes(src) + int.from_bytes(dst) + _UDP_PROTOCOL + length
        body = int.from_bytes(payload) << 8 if len(payload) % 2 else int.from_bytes(payload)
        checksum = _checksum(pseudo + int.from_bytes(_UDP.pack(sport, dport, length, 0)) + body)
        # A computed 0 is sent as 0xFFFF: 0 means "no checksum" (RFC 768).
        header = _UDP.pack(sport, dport, length, checksum or 0xFFFF)
        return self._ipv4(src, dst, _UDP_PROTOCOL, header + payload)

    def _ipv4(self, src: bytes, dst: bytes, protocol: int, payload: bytes) -> bytes:
        self._ident = (self._ident + 1) & 0xFFFF
        fields = [0x45, 0, 20 + len(payload), self._ident, 0x4000, 64, protocol]
        checksum = _checksum(int.from_bytes(_IPV4.pack(*fields, 0, src, dst)))
        return _ETHERNET + _IPV4.pack(*fields, checksum, src, dst) + payload

    def _emit(self, now: float, frame: bytes, comment: str | None = None) -> None:
        self.packets.append(Packet(now, frame, comment))


def write_tap_capture(path: Path, writer: TapWriter, *,
                      names: Mapping[str, str | Sequence[str]] | None = None,
                      comment: str | None = None) -> list[Packet]:
    """Close ``writer`` and write its frames as pcapng (no TLS secrets: nothing is encrypted)."""
    packets = writer.close()
    write_pcapng(path, packets, names=names, interface="tap", comment=comment,
                 description="SIP messages from the transports' tap, frames synthesized")
    return packets

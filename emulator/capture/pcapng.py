"""pcapng files with node names, TLS secrets and comments inside.

A classic pcap (what tcpdump writes) holds packets only: to read HTTPS one
needs the key log beside it, and addresses show as numbers.  pcapng
(draft-ietf-opsawg-pcapng) carries all of it in one file, which Wireshark
and tshark read with no option:

* Section Header Block (§4.1), optionally with a comment for the run;
* Interface Description Block (§4.2): LINKTYPE_ETHERNET, as tcpdump on ``lo``;
* Name Resolution Block (§4.5): each address with its node name(s);
* Decryption Secrets Block (§4.7): the NSS key log of the run's TLS
  connections.  It precedes every packet: Wireshark applies secrets only to
  packets read after them;
* Enhanced Packet Blocks (§4.3), each with an optional UTF-8 comment.

Every block is ``type, total length, body, total length``; bodies and option
values are padded to 32 bits (§3.1).  Blocks are written in host byte order,
which the Section Header's byte-order magic announces (§4.1).

The classic pcap reader is here too (draft-ietf-opsawg-pcap §4, §5): a
tcpdump killed mid-packet leaves a truncated last record, which is dropped
rather than failing the whole run's capture.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
SECRETS_TLS_KEY_LOG = 0x544C534B  # "TLSK", NSS key log format (§4.7)

_SHB, _IDB, _EPB, _NRB, _DSB = 0x0A0D0D0A, 0x00000001, 0x00000006, 0x00000004, 0x0000000A
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_ENDOFOPT, _OPT_COMMENT = 0, 1
_SHB_USERAPPL = 4
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_NRB_RECORD_END, _NRB_RECORD_IPV4 = 0, 1

# Classic pcap magics as read little-endian: µs or ns timestamps, either byte order.
_PCAP_MAGICS = {
    0xA1B2C3D4: ("<", 1e-6), 0xD4C3B2A1: (">", 1e-6),
    0xA1B23C4D: ("<", 1e-9), 0x4D3CB2A1: (">", 1e-9),
}
_MAX_RECORD = 0x40000  # libpcap's MAXIMUM_SNAPLEN: a longer record is garbage, not a packet


@dataclass(frozen=True, slots=True)
class Packet:
    """One Ethernet frame; ``original_length`` when the capture cut it (snap length)."""

    timestamp: float
    data: bytes
    comment: str | None = None
    original_length: int | None = None


# ------------------------------------------------------------------ reading pcap

def read_pcap(path: Path | str) -> list[Packet]:
    """Every record of a classic Ethernet pcap; a truncated last record is dropped."""
    raw = Path(path).read_bytes()
    if len(raw) < 24:
        raise ValueError(f"{path}: not a pcap file (only {len(raw)} bytes)")
    magic = struct.unpack_from("<I", raw)[0]
    if magic not in _PCAP_MAGICS:
        raise ValueError(f"{path}: not a pcap file (magic {magic:#010x})")
    order, unit = _PCAP_MAGICS[magic]
    linktype = struct.unpack_from(order + "I", raw, 20)[0] & 0xFFFF  # upper bits: FCS (§4)
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, only Ethernet ({LINKTYPE_ETHERNET})")
    record = struct.Struct(order + "IIII")
    limit = 1_000_000 if unit == 1e-6 else 1_000_000_000
    packets: list[Packet] = []
    offset = 24
    while offset < len(raw):
        if offset + 16 > len(raw):
            break  # writer killed inside a record header
        seconds, fraction, captured, original = record.unpack_from(raw, offset)
        if captured > _MAX_RECORD or fraction >= limit:
            raise ValueError(f"{path}: garbage record at byte {offset} "
                             f"(length {captured}, fraction {fraction})")
        start = offset + 16
        if start + captured > len(raw):
            break  # writer killed inside the packet data
        packets.append(Packet(seconds + fraction * unit, raw[start:start + captured], None,
                              original if original != captured else None))
        offset = start + captured
    return packets


# ------------------------------------------------------------------ writing pcapng

def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _options(options: Sequence[tuple[int, bytes]]) -> bytes:
    """Options (§3.5): code, length, padded value; ended by opt_endofopt when any."""
    if not options:
        return b""
    out = b"".join(struct.pack("=HH", code, len(value)) + _pad(value) for code, value in options)
    return out + struct.pack("=HH", _OPT_ENDOFOPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)  # body is already a multiple of 4
    return struct.pack("=II", block_type, total) + body + struct.pack("=I", total)


def _comment(text: str | None) -> list[tuple[int, bytes]]:
    return [(_OPT_COMMENT, text.encode())] if text else []


def section_header(comment: str | None = None) -> bytes:
    # Section length -1: not computed, readers skip sections block by block (§4.1).
    body = struct.pack("=IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
    return _block(_SHB, body + _options(
        [*_comment(comment), (_SHB_USERAPPL, b"mcx-migration-emulator")]))


def interface_description(name: str, description: str | None = None, snaplen: int = 0) -> bytes:
    """Interface 0; snaplen 0 means no limit (§4.2); timestamps in µs (if_tsresol 6)."""
    options = [(_IF_NAME, name.encode())]
    if description:
        options.append((_IF_DESCRIPTION, description.encode()))
    options.append((_IF_TSRESOL, bytes([6])))
    body = struct.pack("=HHI", LINKTYPE_ETHERNET, 0, snaplen)
    return _block(_IDB, body + _options(options))


def name_resolution(names: Mapping[str, str | Sequence[str]]) -> bytes:
    """nrb_record_ipv4 records (§4.5): 4 address bytes, then zero-terminated names.

    With several names for one address, Wireshark (4.0) displays the last one
    it reads, so the first name given, the node's own, is written last.
    """
    records = b""
    for address, entry in names.items():
        labels = [entry] if isinstance(entry, str) else list(reversed(entry))
        value = socket.inet_aton(address) + b"".join(n.encode() + b"\0" for n in labels)
        records += struct.pack("=HH", _NRB_RECORD_IPV4, len(value)) + _pad(value)
    records += struct.pack("=HH", _NRB_RECORD_END, 0)
    return _block(_NRB, records)


def decryption_secrets(secrets: bytes, secrets_type: int = SECRETS_TLS_KEY_LOG) -> bytes:
    return _block(_DSB, struct.pack("=II", secrets_type, len(secrets)) + _pad(secrets))


def enhanced_packet(packet: Packet) -> bytes:
    microseconds = round(packet.timestamp * 1_000_000)
    original = packet.original_length or len(packet.data)
    body = struct.pack("=IIIII", 0, microseconds >> 32, microseconds & 0xFFFFFFFF,
                       len(packet.data), original)
    return _block(_EPB, body + _pad(packet.data) + _options(_comment(packet.comment)))


def write_pcapng(path: Path | str, packets: Iterable[Packet], *,
                 names: Mapping[str, str | Sequence[str]] | None = None,
                 tls_keylog: bytes | None = None, interface: str = "lo",
                 description: str | None = None, comment: str | None = None,
                 snaplen: int = 0) -> None:
    """Write the packets (sorted by time, stably) with names and TLS secrets before them.

    The file appears complete or not at all: it is written beside ``path``
    and renamed over it (rename is atomic within a file system).
    """
    target = Path(path)
    ordered = sorted(packets, key=lambda p: p.timestamp)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # mkstemp makes 0600; tcpdump's are world-readable
            out.write(section_header(comment))
            out.write(interface_description(interface, description, snaplen))
            if names:
                out.write(name_resolution(names))
            if tls_keylog:
                out.write(decryption_secrets(tls_keylog))
            for packet in ordered:
                out.write(enhanced_packet(packet))
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def _ipv4_header(frame: bytes) -> int | None:
    """Where the IPv4 header of an Ethernet frame starts (802.1Q tags skipped), else None."""
    offset = 12
    ethertype = int.from_bytes(frame[offset:offset + 2])
    while ethertype in (0x8100, 0x88A8):  # VLAN tags (IEEE 802.1Q / 802.1ad)
        offset += 4
        ethertype = int.from_bytes(frame[offset:offset + 2])
    header = offset + 2
    if ethertype != 0x0800 or len(frame) < header + 20 or frame[header] >> 4 != 4:
        return None
    return header


def ipv4_endpoints(frame: bytes) -> tuple[str, str] | None:
    """(source, destination) of an Ethernet/IPv4 frame (802.1Q tags skipped), else None."""
    header = _ipv4_header(frame)
    if header is None:
        return None
    return (socket.inet_ntoa(frame[header + 12:header + 16]),
            socket.inet_ntoa(frame[header + 16:header + 20]))


def client_random(frame: bytes) -> bytes | None:
    """The 32-byte random of a TLS ClientHello (RFC 8446 §4.1.2) that starts the TCP
    payload of an Ethernet/IPv4 ``frame``, else None.  It names the session's lines in
    an NSS key log, so a file can carry the secrets of its own sessions only."""
    ip = _ipv4_header(frame)
    if ip is None or frame[ip + 9] != 6:  # TCP
        return None
    tcp = ip + (frame[ip] & 0x0F) * 4
    if len(frame) < tcp + 20:
        return None
    payload = tcp + (frame[tcp + 12] >> 4) * 4
    # record: type 22 (handshake), version, length; handshake: type 1, length (3), version
    record = frame[payload:payload + 43]
    if len(record) < 43 or record[0] != 22 or record[1] != 3 or record[5] != 1:
        return None
    return record[11:43]


def keylog_by_session(keylog: bytes) -> dict[bytes, list[bytes]]:
    """An NSS key log's lines (label, client random in hex, secret) by client random."""
    sessions: dict[bytes, list[bytes]] = {}
    for line in keylog.splitlines(keepends=True):
        fields = line.split(b" ", 2)
        if len(fields) == 3:
            try:
                random = bytes.fromhex(fields[1].decode("ascii"))
            except ValueError:
                continue
            sessions.setdefault(random, []).append(line)
    return sessions

"""The application tap's synthesized frames: valid IPv4/UDP/TCP that tshark reads as SIP.

A scripted run (fixed clock) sends SIP over UDP, over TCP (one message of
150 kB, three segments) and over TLS, tapped on both ends; tshark must show
each message once as SIP, reassembled, with good checksums and no expert
warning.  The frames are also checked here without tshark, by an
independent, loop-based RFC 1071 checksum.  Last, the emulator's own
transports feed a tap while tcpdump records the same exchange: both files
show the same SIP messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import shutil
import ssl
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from emulator.capture.kernel import KernelCapture
from emulator.capture.pcapng import Packet
from emulator.capture.pcapng import read_pcap
from emulator.capture.pcapng import write_pcapng
from emulator.capture.tap import MSS
from emulator.capture.tap import TapWriter
from emulator.capture.tap import write_tap_capture
from emulator.identity.pki import issue_server_certificate
from emulator.identity.pki import make_ca
from emulator.keystore import write_credential
from emulator.sip.events import Address
from emulator.transport.stream import StreamTransport
from emulator.transport.tls import client_context
from emulator.transport.tls import server_context
from emulator.transport.udp import UdpTransport

TSHARK = shutil.which("tshark")
ROOT_CAPTURE = os.geteuid() == 0 and shutil.which("tcpdump") is not None
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

UE, CORE, PEER = "127.0.77.1", "127.0.77.2", "127.0.77.3"
NAMES = {UE: "visited-plmn.ue77", CORE: "primary.sip-core77", PEER: "sipp77"}
BIG_BODY = 150_000  # > 2 * MSS: three segments
CHECKSUMS = ("-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
             "-o", "tcp.check_checksum:TRUE")
PROBLEMS = "_ws.malformed || _ws.expert.severity >= warning || tcp.analysis.flags"


def tshark(path: Path, *args: str) -> list[str]:
    assert TSHARK is not None
    done = subprocess.run([TSHARK, "-r", str(path), *args], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.strip()]


def request(method: str, source: Address, target: str, n: int, body: bytes = b"") -> bytes:
    via = "TLS" if source.transport == "tls" else source.transport.upper()
    kind = b"Content-Type: text/plain\r\n" if body else b""
    return (f"{method} sip:{target} SIP/2.0\r\n"
            f"Via: SIP/2.0/{via} {source.host}:{source.port};branch=z9hG4bK-77-{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:ue77@{source.host}>;tag=f{n}\r\n"
            f"To: <sip:{target}>\r\nCall-ID: call-77-{n}@{source.host}\r\n"
            f"CSeq: {n} {method}\r\n").encode() + kind + \
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def response(to: bytes, status: str = "200 OK") -> bytes:
    head = to.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    kept = [h for h in head if h.split(b":")[0] in (b"Via", b"From", b"To", b"Call-ID", b"CSeq")]
    return (f"SIP/2.0 {status}\r\n".encode() + b"\r\n".join(kept)
            + b"\r\nContent-Length: 0\r\n\r\n")


def first_line(message: bytes) -> str:
    return message.split(b"\r\n", 1)[0].decode()


# ------------------------------------------------------------------ a scripted run

@dataclass(frozen=True)
class Run:
    path: Path
    packets: list[Packet]
    messages: list[bytes]
    flows: int


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    clock = itertools.count(1_700_000_000.0, 0.000_25)
    tap = TapWriter(tapped_hosts=[UE, CORE], clock=lambda: next(clock))
    messages: list[bytes] = []

    def exchange(a: Address, b: Address, data: bytes, *, b_tapped: bool = True) -> None:
        """a sends to b: a's tap sees it go out, b's tap sees it come in."""
        tap("out", a, b, data)
        if b_tapped:
            tap("in", b, a, data)  # the echo, skipped: a is a tapped host
        messages.append(data)

    udp_ue, udp_core = Address("udp", UE, 5060), Address("udp", CORE, 5060)
    invite = request("INVITE", udp_ue, CORE, 1, b"v=0\r\n")
    exchange(udp_ue, udp_core, invite)
    for status in ("100 Trying", "180 Ringing", "200 OK"):
        exchange(udp_core, udp_ue, response(invite, status))
    bye = request("BYE", udp_ue, CORE, 2)
    exchange(udp_ue, udp_core, bye)
    exchange(udp_core, udp_ue, response(bye))

    tcp_ue, tcp_core = Address("tcp", UE, 40001), Address("tcp", CORE, 5060)
    big = request("MESSAGE", tcp_ue, CORE, 3, b"m" * BIG_BODY)
    exchange(tcp_ue, tcp_core, big)
    exchange(tcp_core, tcp_ue, response(big))
    for n in (4, 5):
        options = request("OPTIONS", tcp_ue, CORE, n)
        exchange(tcp_ue, tcp_core, options)
        exchange(tcp_core, tcp_ue, response(options))

    # An untapped peer (sipp, say): only the core's tap sees its messages.
    tcp_peer = Address("tcp", PEER, 41000)
    options = request("OPTIONS", tcp_peer, CORE, 6)
    tap("in", tcp_core, tcp_peer, options)
    messages.append(options)
    exchange(tcp_core, tcp_peer, response(options), b_tapped=False)

    tls_ue, tls_core = Address("tls", UE, 40002), Address("tls", CORE, 5061)
    register = request("REGISTER", tls_ue, CORE, 7)
    exchange(tls_ue, tls_core, register)
    exchange(tls_core, tls_ue, response(register))

    path = tmp_path_factory.mktemp("tap") / "capture.pcapng"
    packets = write_tap_capture(path, tap, names=NAMES, comment="tap run 77")
    return Run(path, packets, messages, flows=3)


@needs_tshark
def test_each_message_is_one_sip_frame(run: Run) -> None:
    seen = tshark(run.path, "-Y", "sip", "-T", "fields", "-e", "sip.Request-Line",
                  "-e", "sip.Status-Line")
    assert [line.strip("\t") for line in seen] == [first_line(m) for m in run.messages]


@needs_tshark
def test_no_malformed_frame_no_warning_no_tcp_anomaly(run: Run, tmp_path: Path) -> None:
    assert tshark(run.path, *CHECKSUMS, "-Y", PROBLEMS) == []
    # The filter does catch trouble: lose one data segment and it reports it.
    data = [i for i, p in enumerate(run.packets) if len(p.data) > 54]
    damaged = tmp_path / "damaged.pcapng"
    write_pcapng(damaged, run.packets[:data[-1]] + run.packets[data[-1] + 1:])
    assert tshark(damaged, "-Y", PROBLEMS) != []


@needs_tshark
def test_checksums_verified_good(run: Run, tmp_path: Path) -> None:
    bad = 'ip.checksum.status == "Bad" || udp.checksum.status == "Bad" ' \
          '|| tcp.checksum.status == "Bad"'
    assert tshark(run.path, *CHECKSUMS, "-Y", bad) == []
    fields = tshark(run.path, *CHECKSUMS, "-T", "fields", "-e", "ip.checksum.status",
                    "-e", "udp.checksum.status", "-e", "tcp.checksum.status")
    # Status 1 is "Good": every frame's IP header and its UDP or TCP checksum were checked.
    assert all(line.split("\t")[0] == "1" and "1" in line.split("\t")[1:] for line in fields)
    assert len(fields) == len(run.packets)
    # ...and a flipped payload bit is caught.
    last = [p for p in run.packets if p.data[23] == 17][-1]  # the 200 OK to BYE
    flipped = last.data[:-3] + bytes([last.data[-3] ^ 1]) + last.data[-2:]
    write_pcapng(tmp_path / "flipped.pcapng", [Packet(0, flipped)])
    assert tshark(tmp_path / "flipped.pcapng", *CHECKSUMS, "-Y", bad) != []


@needs_tshark
def test_large_message_is_reassembled(run: Run) -> None:
    big = next(m for m in run.messages if m.startswith(b"MESSAGE"))
    out = tshark(run.path, "-Y", 'sip.Method == "MESSAGE"', "-T", "fields",
                 "-e", "tcp.reassembled.length", "-e", "tcp.segment.count", "-e", "sip.msg_body")
    assert len(out) == 1
    length, segments, _ = out[0].split("\t")
    assert int(length) == len(big) and int(segments) == -(-len(big) // MSS) == 3


@needs_tshark
def test_tls_transport_is_plaintext_sip_on_its_own_port(run: Run) -> None:
    # tshark gives 5061 to TLS, which refuses plaintext; SIP's TCP heuristic takes it.
    assert tshark(run.path, "-Y", "tls || ssl") == []
    ports = tshark(run.path, "-Y", 'sip.Method == "REGISTER" || sip.CSeq.method == "REGISTER"',
                   "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport")
    assert ports == ["40002\t5061", "5061\t40002"]
    comments = tshark(run.path, "-Y", "frame.comment", "-T", "fields", "-e", "tcp.flags",
                      "-e", "frame.comment")  # on the SYN (flags 0x0002) of the TLS flow
    assert comments == ["0x0002\tSIP over TLS on the wire: this flow holds the plaintext "
                        "the application tap saw"]


@needs_tshark
def test_flows_open_and_close(run: Run) -> None:
    syn = tshark(run.path, "-N", "n", "-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0",
                 "-T", "fields", "-e", "ip.src_host", "-e", "ip.dst_host")
    assert syn == ["visited-plmn.ue77\tprimary.sip-core77", "sipp77\tprimary.sip-core77",
                   "visited-plmn.ue77\tprimary.sip-core77"]
    assert len(tshark(run.path, "-Y", "tcp.flags.fin == 1")) == 2 * run.flows
    streams = tshark(run.path, "-Y", "tcp", "-T", "fields", "-e", "tcp.stream")
    assert len(set(streams)) == run.flows


# ------------------------------------------------------------------ without tshark

def rfc1071(data: bytes) -> int:
    """The one's complement sum, word by word, as RFC 1071 §4.1 writes it."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def check_frame(frame: bytes) -> tuple[int, bytes, bytes]:
    """Validate one synthesized frame; returns (protocol, transport header, payload)."""
    assert frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    total_length, protocol = struct.unpack_from("!H", ip, 2)[0], ip[9]
    assert total_length == len(frame) - 14 <= 65535
    assert rfc1071(ip) == 0xFFFF
    segment = frame[34:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, protocol, len(segment))
    assert rfc1071(pseudo + segment) == 0xFFFF
    if protocol == 17:
        assert struct.unpack_from("!H", segment, 4)[0] == len(segment)
        return protocol, segment[:8], segment[8:]
    offset = (segment[12] >> 4) * 4
    assert len(segment) - offset <= MSS
    return protocol, segment[:offset], segment[offset:]


def test_frames_are_valid_and_sequence_numbers_advance(run: Run) -> None:
    next_seq: dict[tuple[bytes, int, bytes, int], int] = {}
    payloads: dict[tuple[bytes, int, bytes, int], bytes] = {}
    times = [p.timestamp for p in run.packets]
    assert times == sorted(times)
    for packet in run.packets:
        protocol, header, payload = check_frame(packet.data)
        if protocol != 6:
            continue
        sport, dport, seq, ack, _, flags = struct.unpack_from("!HHIIBB", header)
        key = (packet.data[26:30], sport, packet.data[30:34], dport)
        reverse = (key[2], key[3], key[0], key[1])
        if flags & 0x02:  # SYN takes one sequence number
            next_seq[key] = (seq + 1) & 0xFFFFFFFF
            continue
        assert seq == next_seq[key]
        assert ack == next_seq[reverse]
        next_seq[key] = (seq + len(payload) + (flags & 0x01)) & 0xFFFFFFFF
        payloads[key] = payloads.get(key, b"") + payload
    streamed = b"".join(payloads.values())
    for message in run.messages:
        if b"SIP/2.0/UDP" not in message:
            assert message in streamed


def test_udp_checksum_zero_is_sent_as_all_ones() -> None:
    tap = TapWriter()
    a, b = Address("udp", UE, 5060), Address("udp", CORE, 5060)
    probe = b"OPTIONS sip:xy SIP/2.0\r\n\r\n"
    assert len(probe) % 2 == 0  # so the two bytes appended are one 16-bit word
    tap("out", a, b, probe + b"\0\0")
    computed = struct.unpack_from("!H", tap.packets[0].data, 40)[0]
    tap("out", a, b, probe + computed.to_bytes(2))  # makes the sum 0xFFFF: checksum 0
    frame = tap.packets[1].data
    assert struct.unpack_from("!H", frame, 40)[0] == 0xFFFF  # RFC 768: 0 means "none"
    check_frame(frame)


def test_echoes_of_tapped_hosts_are_dropped() -> None:
    a, b = Address("udp", UE, 5060), Address("udp", CORE, 5060)
    for tapped, frames in (([UE, CORE], 1), ([], 2)):
        tap = TapWriter(tapped_hosts=tapped)
        tap("out", a, b, b"x")
        tap("in", b, a, b"x")
        assert len(tap.close()) == frames


def test_unwritable_messages_are_counted_not_raised() -> None:
    tap = TapWriter()
    tap("out", Address("udp", "::1", 5060), Address("udp", "::1", 5062), b"x")
    tap("out", Address("udp", UE, 5060), Address("udp", CORE, 5060), b"x" * 70_000)
    assert tap.close() == [] and tap.skipped == 2


def test_a_clock_stepping_back_does_not_reorder() -> None:
    times: Callable[[], float] = iter([10.0, 5.0, 7.0, 12.0, 1.0]).__next__
    tap = TapWriter(clock=times)
    a, b = Address("tcp", UE, 40003), Address("tcp", CORE, 5060)
    for _ in range(4):
        tap("out", a, b, b"x")
    stamps = [p.timestamp for p in tap.close()]
    assert stamps == sorted(stamps) and stamps[0] == 10.0 and stamps[-1] == 12.0


# ------------------------------------------------------------------ the emulator's transports

async def test_emulator_transports_tap_matches_the_kernel_capture(tmp_path: Path) -> None:
    """UDP, TCP and TLS through the real transports: the tap and tcpdump agree on SIP."""
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("Tap Test", now=now)
    keylog = tmp_path / "tls-keys.log"
    client_ssl = client_context([ca.certificate_pem()], keylog=keylog)

    def server_ssl(host: str) -> ssl.SSLContext:
        cred = issue_server_certificate(ca, host, hosts=[host], now=now)
        return server_context(*write_credential(tmp_path, host, cred))

    kernel = KernelCapture(tmp_path / "capture.pcap", [UE, CORE]) if ROOT_CAPTURE else None
    if kernel is not None:
        await kernel.start()
    tap = TapWriter(tapped_hosts=[UE, CORE])
    answered: list[bytes] = []
    done = asyncio.Event()
    transports: dict[tuple[str, str], UdpTransport | StreamTransport] = {}

    def receiver(host: str) -> Callable[..., None]:
        def receive(data: bytes, source: Address, *, stream: bool) -> None:
            if data.startswith(b"SIP/2.0"):
                answered.append(data)
                if len(answered) == 3:
                    done.set()
            else:
                transports[(host, source.transport)].send(response(data), source)
        return receive

    try:
        for host in (UE, CORE):
            transports[(host, "udp")] = await UdpTransport.open(host, 5060, receiver(host),
                                                                 tap=tap)
            for name, port in (("tcp", 5060), ("tls", 5061)):
                transports[(host, name)] = await StreamTransport.open(
                    name, host, port, receiver(host), tap=tap,
                    server_ssl=server_ssl(host) if name == "tls" else None,
                    client_ssl=client_ssl)
        for n, (name, port) in enumerate((("udp", 5060), ("tcp", 5060), ("tls", 5061))):
            source = transports[(UE, name)].local
            transports[(UE, name)].send(request("OPTIONS", source, CORE, n + 1),
                                        Address(name, CORE, port))
        await asyncio.wait_for(done.wait(), 10)
    finally:
        for transport in transports.values():
            await transport.close()
        await asyncio.sleep(0.05)
        if kernel is not None:
            await kernel.stop()

    packets = write_tap_capture(tmp_path / "tap.pcapng", tap, names=NAMES)
    assert sum(p.data[23] == 17 for p in packets) == 2  # one request, one answer: no echoes
    if TSHARK is None:
        pytest.skip("tshark not installed: the dissection half of this test did not run")
    lines = ["OPTIONS sip:127.0.77.2 SIP/2.0", "SIP/2.0 200 OK"] * 3
    fields = ("-Y", "sip", "-T", "fields", "-e", "sip.Request-Line", "-e", "sip.Status-Line")
    seen = tshark(tmp_path / "tap.pcapng", *fields)
    assert sorted(line.strip("\t") for line in seen) == sorted(lines)
    assert tshark(tmp_path / "tap.pcapng", *CHECKSUMS, "-Y", PROBLEMS) == []
    if kernel is None:
        pytest.skip("no kernel capture (root and tcpdump): the comparison did not run")
    write_pcapng(tmp_path / "kernel.pcapng", read_pcap(kernel.path), names=NAMES,
                 tls_keylog=keylog.read_bytes())
    # Same messages between the same addresses and ports: the kernel's SIP over
    # TLS decrypted with the key log, the tap's written as the plaintext it saw.
    endpoints = ("-Y", "sip", "-T", "fields", "-e", "ip.src", "-e", "tcp.srcport",
                 "-e", "udp.srcport", "-e", "ip.dst", "-e", "tcp.dstport", "-e", "udp.dstport",
                 "-e", "sip.Request-Line", "-e", "sip.Status-Line")
    assert sorted(tshark(tmp_path / "kernel.pcapng", *endpoints)) == sorted(
        tshark(tmp_path / "tap.pcapng", *endpoints))

"""pcapng writing and classic pcap reading, checked block by block and with tshark.

A real loopback capture (tcpdump, root only) of SIP-like UDP datagrams and an
HTTPS exchange between 127.0.77.1 and 127.0.77.2 is converted to pcapng with
node names, a comment and the TLS key log; tshark must then show the names,
the comment and the decrypted HTTP from the file alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emulator.capture.kernel import settle
from emulator.capture.pcapng import SECRETS_TLS_KEY_LOG
from emulator.capture.pcapng import Packet
from emulator.capture.pcapng import client_random
from emulator.capture.pcapng import ipv4_endpoints
from emulator.capture.pcapng import keylog_by_session
from emulator.capture.pcapng import read_pcap
from emulator.capture.pcapng import write_pcapng
from emulator.capture.publish import publish
from emulator.capture.tap import TapWriter
from emulator.identity.pki import issue_server_certificate
from emulator.identity.pki import make_ca
from emulator.keystore import write_credential
from emulator.sip.events import Address
from emulator.transport.tls import client_context
from emulator.transport.tls import server_context

TSHARK = shutil.which("tshark")
CAPINFOS = shutil.which("capinfos")
ROOT_CAPTURE = os.geteuid() == 0 and shutil.which("tcpdump") is not None
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
needs_capture = pytest.mark.skipif(not ROOT_CAPTURE, reason="needs root and tcpdump")

CLIENT, SERVER = "127.0.77.1", "127.0.77.2"
NAMES = {CLIENT: "visited-plmn.ue77", SERVER: ["primary.idms77", "idms77.alias"]}
HTTPS_PORT = 9443  # the IdMS port of the topologies: tshark finds TLS there by itself
UDP_MESSAGES = 3


def tshark(path: Path, *args: str) -> str:
    assert TSHARK is not None
    done = subprocess.run([TSHARK, "-r", str(path), *args], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def classic_pcap(packets: list[tuple[int, int, bytes]], *, order: str = "<",
                 nanoseconds: bool = False, linktype: int = 1) -> bytes:
    """A classic pcap of (seconds, fraction, frame) records, as libpcap writes it."""
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for seconds, fraction, frame in packets:
        out += struct.pack(order + "IIII", seconds, fraction, len(frame), len(frame)) + frame
    return out


def sample_frames() -> list[Packet]:
    """A UDP and a TCP exchange between the two test hosts, synthesized."""
    tick = iter(range(1_700_000_000, 1_700_000_100))
    tap = TapWriter(clock=lambda: float(next(tick)))
    a, b = Address("udp", CLIENT, 5060), Address("udp", SERVER, 5060)
    tap("out", a, b, b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    tap("out", a._replace(transport="tcp", port=40000), b._replace(transport="tcp"), b"x" * 5)
    return tap.close()


# ------------------------------------------------------------------ block structure

def blocks(raw: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each block, checking both total lengths and the 32-bit alignment."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(raw):
        block_type, total = struct.unpack_from("=II", raw, offset)
        assert total % 4 == 0 and total >= 12
        assert struct.unpack_from("=I", raw, offset + total - 4)[0] == total
        out.append((block_type, raw[offset + 8:offset + total - 4]))
        offset += total
    assert offset == len(raw)
    return out


def options(raw: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    offset = 0
    while True:
        code, length = struct.unpack_from("=HH", raw, offset)
        if code == 0:
            assert length == 0 and offset + 4 == len(raw)
            return out
        out.append((code, raw[offset + 4:offset + 4 + length]))
        offset += 4 + length + (-length % 4)


def test_blocks_names_secrets_and_comments(tmp_path: Path) -> None:
    frames = sample_frames()
    packets = [frames[1], Packet(frames[0].timestamp, frames[0].data, "first, ünïcode"),
               *frames[2:]]  # out of order: the writer sorts by time
    path = tmp_path / "out.pcapng"
    write_pcapng(path, packets, names=NAMES, tls_keylog=b"CLIENT_RANDOM 00 11\n",
                 comment="run 77")
    found = blocks(path.read_bytes())
    assert [t for t, _ in found[:4]] == [0x0A0D0D0A, 1, 4, 0x0A]
    assert [t for t, _ in found[4:]] == [6] * len(frames)
    shb, idb, nrb, dsb = (body for _, body in found[:4])
    assert struct.unpack_from("=IHHq", shb) == (0x1A2B3C4D, 1, 0, -1)
    assert (1, b"run 77") in options(shb[16:])
    assert struct.unpack_from("=HHI", idb) == (1, 0, 0)
    assert (2, b"lo") in options(idb[8:]) and (9, b"\x06") in options(idb[8:])
    # NRB: one ipv4 record per address, the node's own name last (Wireshark shows the last).
    first = struct.unpack_from("=HH", nrb)
    assert first[0] == 1 and nrb[4:8] == socket.inet_aton(CLIENT)
    assert nrb[8:4 + first[1]] == b"visited-plmn.ue77\0"
    assert b"idms77.alias\0primary.idms77\0" in nrb and nrb.endswith(b"\0\0\0\0")
    assert struct.unpack_from("=II", dsb) == (SECRETS_TLS_KEY_LOG, 20)
    assert dsb[8:28] == b"CLIENT_RANDOM 00 11\n"
    epbs = [body for _, body in found[4:]]
    first_epb = struct.unpack_from("=IIIII", epbs[0])
    assert first_epb[3] == first_epb[4] == len(frames[0].data)
    assert ((first_epb[1] << 32) | first_epb[2]) == 1_700_000_000 * 1_000_000
    padded = len(frames[0].data) + (-len(frames[0].data) % 4)
    assert options(epbs[0][20 + padded:]) == [(1, "first, ünïcode".encode())]
    assert len(epbs[1]) == 20 + len(frames[1].data) + (-len(frames[1].data) % 4)  # no options


def test_interrupted_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.pcapng"
    path.write_bytes(b"previous")

    def broken() -> Iterator[Packet]:
        yield from sample_frames()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_pcapng(path, broken())
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.pcapng"]


# ------------------------------------------------------------------ reading pcap

@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanoseconds", [False, True])
def test_read_pcap_byte_orders_and_resolutions(tmp_path: Path, order: str,
                                               nanoseconds: bool) -> None:
    frames = [f.data for f in sample_frames()[:2]]
    fraction = 250_000_000 if nanoseconds else 250_000
    path = tmp_path / "in.pcap"
    path.write_bytes(classic_pcap([(10, fraction, frames[0]), (11, 0, frames[1])], order=order,
                                  nanoseconds=nanoseconds))
    assert read_pcap(path) == [Packet(10.25, frames[0]), Packet(11.0, frames[1])]


@pytest.mark.parametrize("cut", [1, 10, 17])  # inside the data, or inside the record header
def test_truncated_last_record_is_dropped(tmp_path: Path, cut: int) -> None:
    frames = [f.data for f in sample_frames()[:3]]
    raw = classic_pcap([(1, 0, frames[0]), (2, 0, frames[1]), (3, 0, frames[2][:16])])
    path = tmp_path / "killed.pcap"
    path.write_bytes(raw[:-cut])
    assert [p.data for p in read_pcap(path)] == frames[:2]


@pytest.mark.parametrize("raw", [
    b"",
    b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
    os.urandom(4096),
    struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)[:20],
    classic_pcap([(1, 0, b"\0" * 60)], linktype=101),  # raw IP, not Ethernet
    # a record claiming 2 GB, followed by more data: garbage, not a killed writer
    classic_pcap([(1, 0, b"\0" * 60)]) + struct.pack("<IIII", 2, 0, 1 << 31, 60) + b"\0" * 64,
    classic_pcap([(1, 5_000_000, b"\0" * 60)]),  # µs fraction past one second
], ids=["empty", "text", "random", "short-header", "raw-ip", "huge-record", "bad-fraction"])
def test_garbage_is_refused(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "garbage.pcap"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=r"garbage\.pcap"):
        read_pcap(path)


def test_endpoints() -> None:
    frames = sample_frames()
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    vlan = frames[0].data[:12] + b"\x81\x00\x00\x4d" + frames[0].data[12:]
    assert ipv4_endpoints(frames[0].data) == (CLIENT, SERVER)
    assert ipv4_endpoints(vlan) == (CLIENT, SERVER)
    assert ipv4_endpoints(arp) is None and ipv4_endpoints(b"") is None
    # A ClientHello's random names its session's key-log lines; nothing else has one.
    random = bytes(range(32))
    hello = b"\x16\x03\x01\x00\x40" + b"\x01\x00\x00\x3c\x03\x03" + random + bytes(30)
    tap = TapWriter(clock=lambda: 1.0)
    tap("out", Address("tcp", CLIENT, 40001), Address("tcp", SERVER, 443), hello)
    randoms = [(f.data, client_random(f.data)) for f in tap.close()]  # SYN, ... then it
    assert [r for _, r in randoms if r is not None] == [random]
    tls = next(data for data, r in randoms if r is not None)
    assert client_random(tls[:12] + b"\x81\x00\x00\x4d" + tls[12:]) == random  # VLAN
    assert all(client_random(f.data) is None for f in frames)
    assert client_random(arp) is None
    sessions = keylog_by_session(b"CLIENT_RANDOM " + random.hex().encode() + b" 00ff\n"
                                 b"# a comment\nSERVER_TRAFFIC_SECRET_0 zz 00\n")
    assert list(sessions) == [random]


def test_publish_splits_by_node_in_one_pass_and_names_only_what_is_used(
        tmp_path: Path) -> None:
    frames = sample_frames()
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    # A load run's names: the nodes, and a pool of thousands no packet uses.
    names = {CLIENT: "ue-1", SERVER: "core",
             **{f"127.65.{i // 250}.{i % 250 + 1}": f"pool{i}" for i in range(5000)}}
    written = publish(tmp_path, [*frames, Packet(0, arp)], names=names,
                      label=lambda _: ("step", ""), keylog=None, method="test",
                      nodes={"core"}, most_others=0)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "capture.pcapng", "nodes/core.pcapng"]
    def frames_in(path: Path) -> list[bytes]:
        bodies = [body for kind, body in blocks(path.read_bytes()) if kind == 6]  # EPB
        return [body[20:20 + struct.unpack_from("=I", body, 12)[0]] for body in bodies]

    assert frames_in(written[0]) == [arp] + [p.data for p in frames]  # in time order
    assert frames_in(written[1]) == [p.data for p in frames]
    resolution = [body for kind, body in blocks(written[0].read_bytes()) if kind == 4]
    assert len(resolution) == 1
    assert b"ue-1" in resolution[0] and b"core" in resolution[0]
    assert b"pool" not in resolution[0]


# ------------------------------------------------------------------ a real loopback capture

@dataclass(frozen=True)
class Capture:
    pcap: Path
    pcapng: Path
    packets: list[Packet]
    tcpdump_count: int


def _read_http(connection: ssl.SSLSocket, buffer: bytes) -> tuple[bytes | None, bytes]:
    """One HTTP/1.1 message (head and Content-Length body) and what follows it."""
    while b"\r\n\r\n" not in buffer:
        chunk = connection.recv(65536)
        if not chunk:
            return None, buffer
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += connection.recv(65536)
    return head, rest[length:]


def _https_exchange(directory: Path, keylog: Path) -> None:
    """GET then POST over one TLS connection; both sides close with close_notify.

    A clean close matters: a peer closing without close_notify, or a FIN left
    un-ACKed by a socket still open, shows in the capture as TLS alerts, RSTs
    or retransmissions, which are expert warnings.
    """
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("Capture Test", now=now)
    server_cred = issue_server_certificate(ca, "idms77", hosts=[SERVER], now=now)
    server_ssl = server_context(*write_credential(directory, "idms77", server_cred))
    client_ssl = client_context([ca.certificate_pem()], keylog=keylog)
    errors: list[BaseException] = []

    def serve(listener: socket.socket) -> None:
        try:
            raw, _ = listener.accept()
            with server_ssl.wrap_socket(raw, server_side=True) as connection:
                buffer = b""
                while True:
                    head, buffer = _read_http(connection, buffer)
                    if head is None:
                        break
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                       b"Content-Length: 2\r\n\r\nok")
                connection.unwrap().close()
        except BaseException as exc:
            errors.append(exc)

    with socket.create_server((SERVER, HTTPS_PORT)) as listener:
        thread = threading.Thread(target=serve, args=(listener,))
        thread.start()
        try:
            raw = socket.create_connection((SERVER, HTTPS_PORT), timeout=10,
                                           source_address=(CLIENT, 0))
            with client_ssl.wrap_socket(raw, server_hostname=SERVER) as connection:
                buffer = b""
                for request in (b"GET /.well-known/openid-configuration HTTP/1.1\r\n"
                                b"Host: 127.0.77.2\r\n\r\n",
                                b"POST /token HTTP/1.1\r\nHost: 127.0.77.2\r\n"
                                b"Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc"):
                    connection.sendall(request)
                    head, buffer = _read_http(connection, buffer)
                    assert head is not None and head.startswith(b"HTTP/1.1 200")
                connection.unwrap().close()
        finally:
            thread.join(10)
    assert not errors, errors


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Capture:
    if not ROOT_CAPTURE:
        pytest.skip("needs root and tcpdump")
    directory = tmp_path_factory.mktemp("loopback")
    pcap, keylog = directory / "capture.pcap", directory / "tls-keys.log"
    tcpdump = subprocess.Popen(
        # A 64 MB buffer, as emulator/capture/kernel.py uses: the default drops bursts on lo.
        ["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-s", "65535", "-B", "65536", "-n",
         "-w", str(pcap),
         f"host {CLIENT} or host {SERVER}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert tcpdump.stderr is not None
    try:
        assert b"listening" in tcpdump.stderr.readline()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ue, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as core:
            ue.bind((CLIENT, 5060))
            core.bind((SERVER, 5060))
            for n in range(UDP_MESSAGES):
                ue.sendto(f"OPTIONS sip:{SERVER} SIP/2.0\r\n"
                          f"Via: SIP/2.0/UDP {CLIENT}:5060;branch=z9hG4bK77{n}\r\n"
                          f"From: <sip:ue@{CLIENT}>;tag=77\r\nTo: <sip:{SERVER}>\r\n"
                          f"Call-ID: c77-{n}\r\nCSeq: {n + 1} OPTIONS\r\nMax-Forwards: 70\r\n"
                          "Content-Length: 0\r\n\r\n".encode(), (SERVER, 5060))
                core.recv(65536)
        _https_exchange(directory, keylog)
    finally:
        asyncio.run(settle(pcap))  # as KernelCapture.stop: let tcpdump write the last packets
        tcpdump.send_signal(signal.SIGINT)
        _, summary = tcpdump.communicate(timeout=10)
    count = int(summary.decode().split(" packets captured")[0].split()[-1])
    packets = read_pcap(pcap)
    # Comment the first SIP datagram, as a scenario step would be.
    first_udp = next(i for i, p in enumerate(packets) if p.data[23] == 17)
    packets[first_udp] = Packet(packets[first_udp].timestamp, packets[first_udp].data,
                                "step 1: UE probes the IdMS (TS 24.379 §6.2)")
    out = directory / "capture.pcapng"
    write_pcapng(out, packets, names=NAMES, tls_keylog=keylog.read_bytes(), comment="run 77")
    return Capture(pcap, out, packets, count)


@needs_capture
def test_every_captured_packet_is_read(capture: Capture) -> None:
    assert len(capture.packets) == capture.tcpdump_count
    assert all(CLIENT in (ipv4_endpoints(p.data) or ()) for p in capture.packets)


@needs_capture
@needs_tshark
def test_tshark_reads_it_clean(capture: Capture) -> None:
    assert len(lines(tshark(capture.pcapng))) == len(capture.packets)
    assert tshark(capture.pcapng, "-Y", "_ws.malformed || _ws.expert.severity >= warning") == ""


@needs_capture
@needs_tshark
def test_node_names_from_the_name_resolution_block(capture: Capture) -> None:
    # NRB names are used once network name resolution is on (-N n); -N n alone
    # does not ask DNS (that is the separate "N" flag).
    hosts = set(lines(tshark(capture.pcapng, "-N", "n", "-T", "fields", "-e", "ip.src_host")))
    assert hosts == {"visited-plmn.ue77", "primary.idms77"}
    resolved = tshark(capture.pcapng, "-o", "nameres.network_name:TRUE", "-Y",
                      'ip.dst_host == "primary.idms77"', "-T", "fields", "-e", "frame.number")
    assert len(lines(resolved)) > UDP_MESSAGES
    # Without resolution the addresses stay numeric.
    assert set(lines(tshark(capture.pcapng, "-T", "fields", "-e", "ip.src_host"))) == {
        CLIENT, SERVER}


@needs_capture
@needs_tshark
def test_packet_comment_is_readable(capture: Capture) -> None:
    out = tshark(capture.pcapng, "-Y", "frame.comment", "-T", "fields", "-e", "frame.comment",
                 "-e", "sip.Method")
    assert lines(out) == ["step 1: UE probes the IdMS (TS 24.379 §6.2)\tOPTIONS"]


@needs_capture
@needs_tshark
def test_https_is_decrypted_from_the_file_alone(capture: Capture) -> None:
    out = tshark(capture.pcapng, "-Y", "http", "-T", "fields", "-e", "http.request.method",
                 "-e", "http.request.uri", "-e", "http.response.code")
    assert lines(out) == ["GET\t/.well-known/openid-configuration\t", "\t\t200",
                          "POST\t/token\t", "\t\t200"]
    # The classic pcap alone has the same packets, but no secrets: no HTTP.
    assert tshark(capture.pcap, "-Y", "http") == ""


@needs_capture
@pytest.mark.skipif(CAPINFOS is None, reason="capinfos not installed")
def test_capinfos_counts_the_packets(capture: Capture) -> None:
    assert CAPINFOS is not None
    out = subprocess.run([CAPINFOS, "-M", "-c", "-t", str(capture.pcapng)], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    assert "pcapng" in out
    assert f"Number of packets:   {len(capture.packets)}" in out


@needs_capture
@needs_tshark
def test_killed_writer_capture_is_rescued(capture: Capture, tmp_path: Path) -> None:
    killed = tmp_path / "killed.pcap"
    killed.write_bytes(capture.pcap.read_bytes()[:-7])
    assert TSHARK is not None
    assert subprocess.run([TSHARK, "-r", str(killed)], capture_output=True,
                          timeout=30).returncode == 2  # why the rescue is needed
    packets = read_pcap(killed)
    assert [p.data for p in packets] == [p.data for p in capture.packets[:-1]]
    write_pcapng(tmp_path / "rescued.pcapng", packets)
    assert len(lines(tshark(tmp_path / "rescued.pcapng"))) == len(packets)

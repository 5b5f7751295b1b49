#!/usr/bin/env python3
"""CPU cost of the SIP hot path, without sockets: parse, check, transaction, registrar, reply.

Prints microseconds per REGISTER for each stage and for the whole path, so a
change to the core shows its effect without sipp's noise.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.sip import Address
from emulator.sip import LocationService
from emulator.sip import RequestReceived
from emulator.sip import Response
from emulator.sip import TransactionLayer
from emulator.sip import check_request
from emulator.sip import parse_message
from emulator.sip import process_register
from emulator.sip import registered_response

BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\r\n<mcpttinfo xmlns="urn:3gpp:ns:mcpttInfo:1.0">'
        b'<mcptt-Params><mcptt-request-uri type="Normal"><mcpttURI>sip:user@mc.example.org'
        b'</mcpttURI></mcptt-request-uri></mcptt-Params></mcpttinfo>\r\n')


def register(n: int) -> bytes:
    return (f"REGISTER sip:mc.example.org SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.4.1:5060;branch=z9hG4bK-{n};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:user{n}@mc.example.org>;tag={n}\r\n"
            f"To: <sip:user{n}@mc.example.org>\r\n"
            f"Call-ID: {n}-bench@127.0.4.1\r\n"
            f"CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:user{n}@127.0.4.1:5060>;+g.3gpp.mcptt;+g.3gpp.icsi-ref="
            f"\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mcptt\"\r\n"
            f"Expires: 600\r\nSupported: path\r\n"
            f"Content-Type: application/vnd.3gpp.mcptt-info+xml\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY


def per_op(label: str, count: int, elapsed: float) -> None:
    print(f"{label:<44} {elapsed / count * 1e6:8.1f} us/op  {count / elapsed:9.0f} op/s")


def main(count: int = 20000) -> None:
    messages = [register(i) for i in range(count)]

    start = time.perf_counter()
    for data in messages:
        parse_message(data)
    per_op("parse_message", count, time.perf_counter() - start)

    start = time.perf_counter()
    for data in messages:
        check_request(parse_message(data))  # type: ignore[arg-type]
    per_op("parse_message + check_request", count, time.perf_counter() - start)

    layer, location, elapsed = _whole_path(messages)
    per_op("receive + registrar + 200 OK (whole path)", count, elapsed)
    print(f"live server transactions (Timer J pending): {len(layer)}; "
          f"bindings: {len(location)}")


def _whole_path(messages: list[bytes]) -> tuple[TransactionLayer, LocationService, float]:
    source = Address("udp", "127.0.4.1", 5060)
    layer = TransactionLayer()
    location = LocationService()  # the SIP core's registrar (RFC 3261 §10.3), sans-IO
    domains = {"mc.example.org"}
    start = time.perf_counter()
    for data in messages:
        layer.receive(data, source, now=0.0)
        event = layer.next_event()
        assert isinstance(event, RequestReceived)
        outcome = process_register(event.request, domains=domains, location=location,
                                   now=0.0, to_tag="bench")
        response = outcome if isinstance(outcome, Response) else registered_response(
            event.request, outcome, now=0.0, to_tag="bench")
        layer.send_response(response, now=0.0, transaction=event.transaction)
        layer.messages_to_send()
    return layer, location, time.perf_counter() - start


def gauge(count: int = 3000, repeats: int = 3) -> float:
    """Microseconds per REGISTER of the whole path above, the median of ``repeats``: how
    fast this machine runs the SIP core this minute.  A shared machine's speed moved by half
    and more from one hour to the next here; a benchmark that prints this beside its figures
    lets runs of different hours be compared.  Run it in a fresh process (``--gauge``):
    a process that has held a topology runs it slower, its heap and caches its own."""
    messages = [register(n) for n in range(count)]
    runs = sorted(_whole_path(messages)[2] for _ in range(repeats))
    return runs[len(runs) // 2] / count * 1e6


def fresh_gauge() -> float:
    """:func:`gauge` run in a process of its own, for the benchmarks that print it."""
    done = subprocess.run([sys.executable, __file__, "--gauge"], check=True,
                          capture_output=True, text=True, timeout=120)
    return float(done.stdout)


def gauge_line(gauges: list[float]) -> str:
    """What a benchmark prints of :func:`fresh_gauge`, taken at its start (and its end)."""
    if len(gauges) == 1:
        return (f"machine gauge: the SIP core's whole path (benchmarks/sip_core.py) "
                f"{gauges[0]:.1f} µs per REGISTER")
    return ("machine gauge, µs per REGISTER of the SIP core's whole path: "
            f"{gauges[0]:.1f} at the start, {gauges[-1]:.1f} at the end "
            "(the same code each time: what moves is the machine)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--gauge"]:
        print(f"{gauge():.2f}")
    else:
        main()

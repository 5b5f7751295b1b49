#!/usr/bin/env python3
"""CPU per datagram: asyncio's datagram transport against the project's UDP transport.

One event loop, one receiving socket on loopback; a plain socket sends ``--datagrams``
datagrams of ``--size`` bytes, keeping at most ``--window`` unread in the kernel (no
drops, a steady load as a busy SIP node sees it).  Prints the process's CPU time per
datagram (sending and receiving both) and the wall time, ``--runs`` times each,
alternating.

    python benchmarks/udp_receive.py [--datagrams 200000] [--size 1200] [--window 256]
        [--runs 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
import time
from collections.abc import Awaitable
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator.sip.events import Address  # noqa: E402
from emulator.transport.udp import RECEIVE_BUFFER  # noqa: E402
from emulator.transport.udp import UdpTransport  # noqa: E402

HOST = "127.0.0.1"


class _Counter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.count += 1


Receiver = tuple[int, Callable[[], int], Callable[[], Awaitable[None]]]
"""Its port, how many datagrams it has received, how to close it."""


async def _asyncio_receiver() -> Receiver:
    loop = asyncio.get_running_loop()
    transport, counter = await loop.create_datagram_endpoint(_Counter, local_addr=(HOST, 0))
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                  RECEIVE_BUFFER)

    async def close() -> None:
        transport.close()

    return transport.get_extra_info("sockname")[1], lambda: counter.count, close


async def _project_receiver() -> Receiver:
    count = [0]

    def receive(data: bytes, source: Address, *, stream: bool) -> None:
        count[0] += 1

    transport = await UdpTransport.open(HOST, 0, receive)
    return transport.local.port, lambda: count[0], transport.close


async def run(kind: str, datagrams: int, size: int, window: int) -> dict[str, float]:
    port, received, close = await (_asyncio_receiver() if kind == "asyncio"
                                   else _project_receiver())
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    payload = b"x" * size
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    sent = 0
    while received() < datagrams:
        while sent < datagrams and sent - received() < window:
            sender.sendto(payload, (HOST, port))
            sent += 1
        await asyncio.sleep(0)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    sender.close()
    await close()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"cpu_us_per_datagram": round(cpu / datagrams * 1e6, 2), "wall_s": round(wall, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datagrams", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1200)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"asyncio": [], "project": []}
    for _ in range(args.runs):
        for kind in results:
            figures = asyncio.run(run(kind, args.datagrams, args.size, args.window))
            results[kind].append(figures)
            print(f"{kind:8} {args.datagrams} datagrams of {args.size} bytes: "
                  f"{figures['cpu_us_per_datagram']:6.2f} µs CPU each (sent and received), "
                  f"{figures['wall_s']:.2f} s", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

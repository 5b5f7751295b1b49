#!/usr/bin/env python3
"""REGISTER/s the project's registrar sustains under sipp, with no retransmissions.

The registrar runs in its own process; sipp sends REGISTERs with an
mcptt-info body (tests/sipp/register_mcptt.xml), one new AOR per call, at
rising rates.  A step is *clean* when every call succeeded and sipp never
had to retransmit.  The highest clean rate is the figure to report.

    python benchmarks/register_rate.py [--rates 500,1000,...] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.sipp import SIPP  # noqa: E402
from tests.support.sipp import run_sipp  # noqa: E402

Row = tuple[int, float, int, int, int]


async def measure(rates: list[int], seconds: float, transport: str,
                  capture: Path | None = None) -> list[Row]:
    from emulator.capture.kernel import KernelCapture

    tap = KernelCapture(capture, ["127.0.4.1", "127.0.4.2"]) if capture else None
    if tap is not None:
        await tap.start()
    server = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "benchmarks" / "registrar_server.py"), "--transport", transport,
        stdout=asyncio.subprocess.PIPE)
    assert server.stdout is not None
    line = (await server.stdout.readline()).decode().split()
    target = line[1]
    rows = []
    try:
        for rate in rates:
            calls = int(rate * seconds)
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await run_sipp("register_mcptt.xml", target, local_ip="127.0.4.1",
                                    calls=calls, rate=rate,
                                    transport="u1" if transport == "udp" else "t1",
                                    timeout=seconds * 10 + 60)
            elapsed = loop.time() - started
            rows.append((rate, result.successful / elapsed, result.successful, result.failed,
                         result.retransmissions))
            print(f"target {rate:6d}/s  achieved {result.successful / elapsed:8.0f}/s  "
                  f"ok {result.successful:7d}  failed {result.failed:5d}  "
                  f"retransmissions {result.retransmissions:6d}", flush=True)
            if result.failed > 0 or result.retransmissions > calls // 10:
                break
    finally:
        server.send_signal(signal.SIGTERM)
        await server.wait()
        if tap is not None:
            await tap.stop()
            print(f"capture: {tap.summary}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="500,1000,2000,3000,3500,4000,4500,5000,6000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--transport", default="udp", choices=["udp", "tcp"])
    parser.add_argument("--capture", action="store_true",
                        help="run tcpdump on the traffic (as the emulator does) to measure "
                             "what kernel capture costs")
    args = parser.parse_args()
    if SIPP is None:
        print("sipp not found: install the Debian package sip-tester", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",")]
    print(f"registrar REGISTER rate over {args.transport.upper()}, {os.cpu_count()} cores, "
          f"{args.seconds:.0f} s per step")
    capture = None
    if args.capture:
        import tempfile

        capture = Path(tempfile.mkdtemp(prefix="mcx-bench-")) / "capture.pcap"
        print(f"with kernel capture to {capture}")
    rows = asyncio.run(measure(rates, args.seconds, args.transport, capture))
    clean = [row for row in rows if row[3] == 0 and row[4] == 0]
    if clean:
        best = max(clean, key=lambda row: row[1])
        print(f"highest clean rate: {best[1]:.0f} REGISTER/s (target {best[0]}/s, "
              f"0 failures, 0 retransmissions)")
    else:
        print("no clean step")
    return 0


if __name__ == "__main__":
    sys.exit(main())

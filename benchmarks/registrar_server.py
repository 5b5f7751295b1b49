"""Run the project's registrar alone, for load tests: prints READY host:port when listening.

The registrar is the SIP core role with no MC server peer (RFC 3261 §10.3 only).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodes import Listener
from nodes import NodePlan
from nodes import SipCore
from nodes import SipCoreOptions


async def serve(host: str, port: int, transport: str) -> None:
    registrar = SipCore(NodePlan("registrar", "sip-core", "bench", host,
                                 (Listener(transport, host, port),),
                                 SipCoreOptions("mc.example.org")))
    await registrar.start()
    endpoint = registrar.endpoint
    local = endpoint.local(transport)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {local.host}:{local.port}", flush=True)
    await stop.wait()
    print(f"bindings={len(registrar.location)} transactions={len(endpoint.layer)}", flush=True)
    await registrar.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.4.2")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--transport", default="udp", choices=["udp", "tcp"])
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.transport))

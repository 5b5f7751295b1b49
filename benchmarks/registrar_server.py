"""Run the project's registrar alone, for load tests: prints READY host:port when listening."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.transport.endpoint import SipEndpoint
from nodes.registrar import Registrar


async def serve(host: str, port: int, transport: str) -> None:
    registrar = Registrar("registrar", {"mc.example.org"})
    endpoint = SipEndpoint("registrar", registrar)
    registrar.attach(endpoint)
    local = await endpoint.listen(transport, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {local.host}:{local.port}", flush=True)
    await stop.wait()
    print(f"bindings={len(registrar.location)} transactions={len(endpoint.layer)}", flush=True)
    await endpoint.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.4.2")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--transport", default="udp", choices=["udp", "tcp"])
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.transport))

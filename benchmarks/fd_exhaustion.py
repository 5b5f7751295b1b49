#!/usr/bin/env python3
"""Issue 9's failure, measured: idle TCP connections exhaust the gateway's file descriptors;
does the IdMS still log users in?

For each placement, `up` runs the default topology; this process opens idle TCP connections
to the gateway's SIP port (20,000 by default: every descriptor a process may hold here),
waits until the process holding the gateway has taken what it can, then logs in at the
partner IdMS (auth code + PKCE over TLS) with a deadline.

    python benchmarks/fd_exhaustion.py [--connections 20000] [--placements inproc,proc]

Needs root (this process raises its own descriptor limit to hold the connections).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator.transport.tls import client_context  # noqa: E402
from nodes.idm_client import IdmClient  # noqa: E402
from tests.support.flood import idle_connections  # noqa: E402
from tests.support.flood import open_descriptors  # noqa: E402
from tests.support.up import running_up  # noqa: E402

SOURCES = [f"127.0.50.{n}" for n in range(1, 9)]


async def login(state: dict, deadline: float) -> str:  # type: ignore[type-arg]
    node = state["nodes"]["partner.idms"]
    ssl = client_context([Path(state["ca_certs"]["partner"]).read_bytes()])
    started = time.monotonic()
    try:
        async with IdmClient(state["oidc_client"]["client_id"],
                             state["oidc_client"]["redirect_uri"], ssl) as client:
            await asyncio.wait_for(client.login(node["http"], "carol",
                                                state["users"]["carol"]["password"]), deadline)
    except Exception as exc:  # what the user sees: the reason is the result
        return f"FAILED after {time.monotonic() - started:.1f} s ({type(exc).__name__})"
    return f"ok in {(time.monotonic() - started) * 1000:.0f} ms"


def settle(pid: int, quiet: float = 2.0, limit: float = 60.0) -> int:
    """Wait until ``pid``'s descriptor count has not grown for ``quiet`` seconds."""
    count, since, start = open_descriptors(pid), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - start < limit:
        time.sleep(0.2)
        now = open_descriptors(pid)
        if now != count:
            count, since = now, time.monotonic()
    return count


def measure(placement: str, connections: int) -> str:
    # Stopping takes a while: the capture holds every handshake of the flood.
    with tempfile.TemporaryDirectory(prefix="mcx-fd-") as tmp, \
            running_up(Path(tmp), "--placement", placement, stop_timeout=900) as (up, state, _):
        gateway = state["nodes"]["visited-plmn.gateway"]
        pid = gateway.get("pid", up.pid)  # inproc: the gateway is `up` itself
        tcp = next(item for item in gateway["sip"] if item["transport"] == "tcp")
        before = asyncio.run(login(state, 10))
        with idle_connections(tcp["host"], tcp["port"], connections, sources=SOURCES,
                              settle=30) as connected:
            held = settle(pid)
            during = asyncio.run(login(state, 10))
        result = (f"{placement:8s} {connected:9d} {held:12d}   before: {before:18s} "
                  f"during: {during}")
        print(result, flush=True)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=20000)
    parser.add_argument("--placements", default="inproc,proc")
    args = parser.parse_args()
    print(f"{'placement':8s} {'connected':>9s} {'gateway fds':>12s}   partner IdMS login")
    for placement in args.placements.split(","):
        measure(placement, args.connections)
    return 0


if __name__ == "__main__":
    sys.exit(main())

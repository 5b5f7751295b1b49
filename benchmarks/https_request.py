#!/usr/bin/env python3
"""What one HTTPS request costs here: the floor under each migration's three.

A migrating UE's security token, attach and partner token are each a request to a server
it has not spoken to yet, or not since its home stage's connections closed: a fresh TCP
connection, a TLS 1.3 handshake and an ``aiohttp`` POST, made as ``nodes/idm_client.py``
makes them (a new connector and session, bound to the UE's address).  This measures that
alone, between two processes on loopback, with the project's PKI (an EC P-256 CA and server
certificate) and TLS contexts (``emulator/transport/tls.py``): the latency (p50, p90,
p99), and the client's and the server's CPU per request; then the same request on a
kept-alive connection, and on a fresh plain TCP connection, for comparison.

Requests are sent one at a time, ``--gap`` apart, so that nothing queues: this is the
floor, not a load.

    python benchmarks/https_request.py [--requests 300] [--gap 0.005] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import ssl as ssl_module
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from emulator.identity.pki import issue_server_certificate
from emulator.identity.pki import make_ca
from emulator.process import run as run_loop
from emulator.transport.tls import client_context
from emulator.transport.tls import server_context

HOST = "127.0.0.1"


async def serve(directory: Path) -> None:
    """The server process: HTTPS and plain HTTP on ports of its own, announced on stdout;
    each line on stdin asks for its CPU seconds so far; end of stdin ends it."""
    async def token(request: web.Request) -> web.Response:
        await request.post()
        return web.json_response({"access_token": "x" * 600, "token_type": "Bearer"})

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = web.TCPSite(runner, HOST, 0, ssl_context=server_context(
        directory / "server.crt", directory / "server.key"))
    plain = web.TCPSite(runner, HOST, 0)
    await tls.start()
    await plain.start()
    ports = [site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
             for site in (tls, plain)]
    print(json.dumps({"tls": ports[0], "plain": ports[1]}), flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(time.process_time(), flush=True)
    await runner.cleanup()


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(url: str, ssl: ssl_module.SSLContext | bool, requests: int, gap: float, *,
                  fresh: bool, server: subprocess.Popen[str]) -> dict[str, float]:
    """``requests`` POSTs, each on a fresh connection or all on one."""
    assert server.stdin is not None and server.stdout is not None

    def server_cpu() -> float:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write("cpu\n")
        server.stdin.flush()
        return float(server.stdout.readline())

    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "y" * 800}
    latencies: list[float] = []
    session: aiohttp.ClientSession | None = None
    if not fresh:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl))
        async with session.post(url, data=form) as response:  # the connection, opened
            await response.read()
    own, theirs = time.process_time(), server_cpu()
    for _ in range(requests):
        started = time.perf_counter()
        if fresh:
            connector = aiohttp.TCPConnector(ssl=ssl, local_addr=(HOST, 0))
            async with aiohttp.ClientSession(connector=connector) as one:
                async with one.post(url, data=form) as response:
                    await response.json()
        else:
            assert session is not None
            async with session.post(url, data=form) as response:
                await response.json()
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(gap)
    own, theirs = time.process_time() - own, server_cpu() - theirs
    if session is not None:
        await session.close()
    return {"p50_ms": percentile(latencies, 0.5), "p90_ms": percentile(latencies, 0.9),
            "p99_ms": percentile(latencies, 0.99),
            "client_cpu_ms": own / requests * 1000, "server_cpu_ms": theirs / requests * 1000}


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="mcx-https-") as tmp:
        directory = Path(tmp)
        now = dt.datetime.now(dt.UTC)
        ca = make_ca("benchmark", now=now)
        server = issue_server_certificate(ca, "server", hosts=[HOST], now=now)
        (directory / "server.crt").write_bytes(server.certificate_pem())
        (directory / "server.key").write_bytes(server.key_pem())
        ssl = client_context([ca.certificate_pem()])
        with subprocess.Popen([sys.executable, __file__, "--serve", str(directory)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) as process:
            assert process.stdout is not None and process.stdin is not None
            ports = json.loads(process.stdout.readline())
            tls_url = f"https://{HOST}:{ports['tls']}/token"
            plain_url = f"http://{HOST}:{ports['plain']}/token"
            figures = {
                "fresh TLS connection": await measure(tls_url, ssl, args.requests, args.gap,
                                                      fresh=True, server=process),
                "kept-alive TLS connection": await measure(tls_url, ssl, args.requests,
                                                           args.gap, fresh=False,
                                                           server=process),
                "fresh plain TCP connection": await measure(plain_url, False, args.requests,
                                                            args.gap, fresh=True,
                                                            server=process),
            }
            process.stdin.close()
            process.wait(timeout=30)
    print(f"{'one POST, client and server in two processes':44} {'p50 ms':>7} {'p90 ms':>7} "
          f"{'p99 ms':>7} {'client CPU ms':>14} {'server CPU ms':>14}")
    for name, row in figures.items():
        print(f"{name:44} {row['p50_ms']:7.2f} {row['p90_ms']:7.2f} {row['p99_ms']:7.2f} "
              f"{row['client_cpu_ms']:14.2f} {row['server_cpu_ms']:14.2f}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.005,
                        help="seconds between requests (so that none queues)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--serve", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        run_loop(serve(args.serve))
        return 0
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    figures = run_loop(main_async(args))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""REGISTER/s through the migration path, in process against every node its own process.

The path of issue 9: sipp (an outside UE, attached to the local PLMN) -> gateway (P-CSCF)
-> partner SIP core -> partner MC server, which checks the partner access token's
signature on every REGISTER (third-party REGISTER, 24.379 §7.3.1).  For each placement,
`up` runs the default topology, scripts/outside_client.py migrates alice by hand (login,
token exchange, partner token, attach), and sipp sends REGISTERs with that token at rising
rates.  A step is clean when every call succeeded and sipp never retransmitted.

    python benchmarks/migration_rate.py [--rates 250,500,...] [--seconds 5]
                                        [--placements inproc,proc] [--transport udp]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator.topology import DEFAULT_TOPOLOGY  # noqa: E402
from tests.support.sipp import run_sipp  # noqa: E402
from tests.support.up import running_up  # noqa: E402

Row = tuple[int, float, int, int, int]


def migrate(state_file: Path) -> dict[str, str]:
    """alice migrated by the outside client; the sipp keys of its REGISTER."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "outside_client.py"),
                           str(state_file)], capture_output=True, text=True, timeout=120,
                          check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("5. "))
    argv = shlex.split(line[3:])
    keys = {argv[i + 1]: argv[i + 2] for i, arg in enumerate(argv) if arg == "-key"}
    keys["target"] = argv[3]
    keys["local_ip"] = argv[argv.index("-i") + 1]
    return keys


async def steps(keys: dict[str, str], rates: list[int], seconds: float,
                transport: str) -> list[Row]:
    rows: list[Row] = []
    extra: tuple[str, ...] = ()
    for name in ("impu", "domain", "token", "client_id"):
        extra += ("-key", name, keys[name])
    for rate in rates:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await run_sipp("register_partner.xml", keys["target"],
                                local_ip=keys["local_ip"], calls=int(rate * seconds),
                                rate=rate, transport="u1" if transport == "udp" else "t1",
                                extra=extra, timeout=seconds * 10 + 60)
        elapsed = loop.time() - started
        rows.append((rate, result.successful / elapsed, result.successful, result.failed,
                     result.retransmissions))
        if result.failed > 0 or result.retransmissions > rate * seconds // 10:
            break
    return rows


def unthrottled_topology(directory: Path) -> Path:
    """The default topology with the gateway's per-source flood limit lifted: sipp sends
    the whole load from one attached address, which is what flood control stops."""
    text = DEFAULT_TOPOLOGY.read_text()
    flood = "  flood:                    # the gateway, per source address: a token bucket\n"
    assert flood in text, "default.yaml's limits.flood section moved"
    text = text.replace(flood, flood + "    rate: 1000000\n    burst: 1000000\n", 1)
    text = re.sub(r"\n    rate: 50 [^\n]*\n    burst: 100\n", "\n", text)
    path = directory / "topology.yaml"
    path.write_text(text)
    return path


def measure(placement: str, rates: list[int], seconds: float, transport: str) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="mcx-rate-") as tmp, \
            running_up(Path(tmp), str(unthrottled_topology(Path(tmp))), "--placement",
                       placement) as (_, _, state_file):
        return asyncio.run(steps(migrate(state_file), rates, seconds, transport))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="250,500,750,1000,1250,1500,2000,2500,3000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--placements", default="inproc,proc")
    parser.add_argument("--transport", default="udp", choices=["udp", "tcp"])
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    best = {}
    for placement in args.placements.split(","):
        print(f"--- {placement}: sipp -> gateway -> partner SIP core -> partner MC server "
              f"({args.transport})", flush=True)
        for rate, achieved, ok, failed, retrans in measure(placement, rates, args.seconds,
                                                           args.transport):
            print(f"target {rate:6d}/s  achieved {achieved:8.0f}/s  ok {ok:7d}  "
                  f"failed {failed:5d}  retransmissions {retrans:6d}", flush=True)
            if failed == 0 and retrans == 0:
                best[placement] = max(best.get(placement, 0), rate)
    print()
    for placement, rate in best.items():
        print(f"highest clean rate, {placement}: {rate} REGISTER/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

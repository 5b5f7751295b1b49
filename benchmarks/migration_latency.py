#!/usr/bin/env python3
"""Migration latency percentiles: N UEs migrate at a rate, with capture on and with it off.

Each UE is the real UE role going through the whole flow over real sockets (the load
mode of ``run_topology.py load``): at home login and profile, then the migration
itself, security token, attach, partner token, REGISTER until its 200.  Prints
p50/p90/p99/max per phase and for the migration in total, once with tcpdump capturing
(as runs do by default) and once without, each with the CPU one migration cost each
process (the nodes', tcpdump's and the load generator's own): at a rate the cores cannot
carry, queueing, not the protocol, sets the latency.  It also prints a gauge of the
machine's speed at the start and at the end (``sip_core.py --gauge``), so that runs of
different hours can be compared.

    python benchmarks/migration_latency.py [--ues 1000] [--rate 100]
        [--placement auto|inproc|proc|netns] [--json FILE]

``auto`` (the default) is where ``run_topology.py load`` puts the nodes with its capture on
(``proc`` as root), for both runs, so that they differ in the capture only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from benchmarks.sip_core import fresh_gauge  # noqa: E402
from benchmarks.sip_core import gauge_line  # noqa: E402
from emulator.orchestration.load import LoadOptions  # noqa: E402
from emulator.orchestration.loadreport import kpi_table  # noqa: E402
from emulator.orchestration.session import load  # noqa: E402
from emulator.orchestration.session import resolve_placement  # noqa: E402
from emulator.process import run as run_loop  # noqa: E402  (MCX_EVENT_LOOP)
from emulator.topology.bundled import topology_path  # noqa: E402
from emulator.topology.loader import load_topology  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ues", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--placement", default="auto",
                        choices=["auto", "inproc", "proc", "netns"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    topology = load_topology(topology_path("default"))
    placement = resolve_placement(args.placement)
    console = Console()
    figures: dict[str, object] = {}
    gauges = [fresh_gauge()]
    print(gauge_line(gauges), flush=True)
    with tempfile.TemporaryDirectory(prefix="mcx-latency-") as tmp:
        for capture in (True, False):
            result, _, _ = run_loop(load(topology, LoadOptions(args.ues, args.rate),
                                            pcap_root=Path(tmp), placement=placement,
                                            capture=capture))
            console.print(kpi_table(result))
            figures["capture on" if capture else "capture off"] = result.to_json()
    gauges.append(fresh_gauge())
    print(gauge_line(gauges), flush=True)
    figures["gauge_us"] = [round(g, 2) for g in gauges]
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Start-up time of the default topology, per placement: from starting `up` to its state file.

Two figures per placement, each the median of --runs runs:
  * `up`: the command as a user starts it (interpreter start and imports included), until
    the state file is written;
  * `Network.start()`: the Python API's start, in an interpreter that has imported
    everything already (what a test pays).

    python benchmarks/startup.py [--placements inproc,proc,netns] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator.orchestration import Network  # noqa: E402
from emulator.topology import DEFAULT_TOPOLOGY  # noqa: E402
from emulator.topology import load_topology  # noqa: E402


def up_seconds(placement: str) -> float:
    with tempfile.TemporaryDirectory(prefix="mcx-start-") as tmp:
        state = Path(tmp) / "state.json"
        started = time.monotonic()
        with subprocess.Popen([sys.executable, str(ROOT / "run_topology.py"), "up",
                               "--placement", placement, "--state-file", str(state),
                               "--pcaps", tmp], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) as up:
            assert up.stdout is not None
            for line in up.stdout:  # "ready:" is printed once the state file is written
                if line.startswith(b"ready:"):
                    break
            else:
                raise RuntimeError(f"up --placement {placement} did not start")
            elapsed = time.monotonic() - started
            assert state.exists()
            up.send_signal(2)
            up.wait(timeout=60)
    return elapsed


async def api_seconds(placement: str) -> float:
    with tempfile.TemporaryDirectory(prefix="mcx-start-") as tmp:
        network = Network(load_topology(DEFAULT_TOPOLOGY), run_dir=Path(tmp) / "run",
                          placement=placement)
        started = time.monotonic()
        await network.start()
        elapsed = time.monotonic() - started
        await network.stop()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    default = "inproc,proc,netns" if os.geteuid() == 0 else "inproc,proc"
    parser.add_argument("--placements", default=default)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'placement':10s} {'up (s)':>8s} {'Network.start() (s)':>20s}   "
          f"(median of {args.runs})")
    for placement in args.placements.split(","):
        up = statistics.median(up_seconds(placement) for _ in range(args.runs))
        api = statistics.median(asyncio.run(api_seconds(placement)) for _ in range(args.runs))
        print(f"{placement:10s} {up:8.2f} {api:20.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

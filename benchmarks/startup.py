#!/usr/bin/env python3
"""Start-up time of the default topology, per placement: from starting `up` to its state file.

Two figures per placement, each the median of --runs runs (the fastest and the slowest
beside it):
  * `up`: the command as a user starts it (interpreter start and imports included), until
    the state file is written;
  * `Network.start()`: the Python API's start, in an interpreter that has imported
    everything already (what a test pays).

It ends with the target of issue 11, the default topology ready in at most 1 s on
localhost, judged on `up`'s median in the placement `up` chooses by default (`proc` as
root, `inproc` otherwise); ``--json FILE`` writes every run's figure and that verdict.

    python benchmarks/startup.py [--placements inproc,proc,netns] [--runs 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator.orchestration import Network  # noqa: E402
from emulator.orchestration.session import resolve_placement  # noqa: E402
from emulator.topology import DEFAULT_TOPOLOGY  # noqa: E402
from emulator.topology import load_topology  # noqa: E402

TARGET = 1.0
"""Seconds from starting `up` to the default topology ready (issue 11)."""
GIVE_UP = 60.0
"""Seconds after which a start that has not said it is ready counts as failed."""


def up_seconds(placement: str) -> float:
    with tempfile.TemporaryDirectory(prefix="mcx-start-") as tmp:
        state = Path(tmp) / "state.json"
        started = time.monotonic()  # the command as a user starts it: its spawn counts
        up = subprocess.Popen([sys.executable, str(ROOT / "run_topology.py"), "up",
                               "--placement", placement, "--state-file", str(state),
                               "--pcaps", tmp], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        # A start that hangs is ended (SIGTERM: `up` stops its nodes) rather than waited on.
        watchdog = threading.Timer(GIVE_UP, up.terminate)
        watchdog.start()
        try:
            assert up.stdout is not None
            output: collections.deque[bytes] = collections.deque(maxlen=20)
            for line in up.stdout:  # "ready:" is printed once the state file is written
                if line.startswith(b"ready:"):
                    break
                output.append(line)
            else:
                raise RuntimeError(
                    f"up --placement {placement} ended after {time.monotonic() - started:.1f}"
                    f" s without being ready (given {GIVE_UP:g} s); its last lines:\n"
                    + b"".join(output).decode(errors="replace"))
            elapsed = time.monotonic() - started
            if not state.exists():
                raise RuntimeError(f"up --placement {placement} said ready, no state file")
            up.send_signal(2)  # Ctrl-C, as a user stops it
            up.communicate(timeout=GIVE_UP)  # read on: a full pipe would hold its exit
        finally:
            watchdog.cancel()
            if up.poll() is None:
                up.kill()
            up.communicate()  # reaped, its pipe closed, before its directory goes
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
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    print(f"{'placement':10s} {'up (s): median':>15s} {'[min-max]':>13s}   "
          f"{'Network.start() (s): median':>28s} {'[min-max]':>13s}   "
          f"({args.runs} runs each)")
    results: dict[str, dict[str, list[float]]] = {}
    for placement in args.placements.split(","):
        up = [up_seconds(placement) for _ in range(args.runs)]
        api = [asyncio.run(api_seconds(placement)) for _ in range(args.runs)]
        results[placement] = {"up_s": up, "network_start_s": api}
        print(f"{placement:10s} {statistics.median(up):15.2f} {_spread(up):>13s}   "
              f"{statistics.median(api):28.2f} {_spread(api):>13s}", flush=True)
    chosen = resolve_placement("auto")  # where `up` runs unless told
    verdict: dict[str, object] = {"placement": chosen, "target_s": TARGET}
    if chosen in results:
        median = statistics.median(results[chosen]["up_s"])
        verdict |= {"up_median_s": median, "met": median <= TARGET}
        print(f"target: `up` ready in <= {TARGET:g} s in its default placement ({chosen}): "
              f"{median:.2f} s, {'MET' if median <= TARGET else 'NOT MET'}")
    else:
        verdict["met"] = None
        print(f"target: `up`'s default placement ({chosen}) was not measured")
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": args.runs, "placements": results,
                                         "target": verdict}, indent=2) + "\n")
    return 0


def _spread(samples: list[float]) -> str:
    return f"[{min(samples):.2f}-{max(samples):.2f}]"


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""10,000 migrated UEs in one partner system: time, peak RSS per node, memory per UE.

Every node runs in its own process (``--placement proc``, or ``netns``: each in its own
namespace too), so each node's memory is its own and the load generator's (the UEs
themselves) is not counted.  The UEs, each with
its own user, tokens and address, go through the whole flow (``run_topology.py load``)
at ``--rate``.  Then, once every transaction has drained (Timer J, 64*T1 = 32 s, and
Timer K), it prints:

* the time the migrations took to complete, and the CPU one migration cost each node and
  the load generator (``load``'s KPI table prints the same line);
* each node's peak RSS (VmHWM) and current RSS;
* the memory per registered UE: the nodes' PSS summed (their RSS counts pages shared
  with the zygote they were forked from), after draining, less what they held before the
  load, divided by the UEs registered; both read once every node has collected its
  garbage and handed its free pages back.  "Before the load" is after a warm-up:
  ``--warmup`` UEs (100) migrate first and drain, so that what a node pays once to run
  the migration at all (the pages it un-shares from the zygote as that code first runs:
  ~30 MB over the nodes, by their ``Shared_Dirty``) is the topology's, not the 10,000's.
  The figure from idle, with the warm-up's UEs counted, is printed beside it;
* the same per UE of the second half: the UEs migrate in two halves, each drained and
  read, so the second half's growth over its UEs is what one more UE costs, without what
  the load costs once whatever its size (pages a node un-shares from the zygote as its
  code first runs, the bounded memos filling, the heap a burst leaves part-used);
* per node, the objects a full garbage collection walks then and how long that one took
  (the pause a node's full collections cost at this size).

It also prints a gauge of the machine's speed at the start and at the end
(``sip_core.py --gauge``), so that runs of different hours can be compared.

``--soak MINUTES`` then re-registers every UE once a minute (each with its partner
token, at ``--rate`` or faster, so that a round takes at most 40 s), printing the
nodes' summed PSS every minute, and its spread after the first.

    python benchmarks/scale.py [--ues 10000] [--rate 180] [--placement proc|netns]
        [--warmup 100] [--soak 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sip_core import fresh_gauge  # noqa: E402
from benchmarks.sip_core import gauge_line  # noqa: E402
from emulator.orchestration.load import LoadGenerator  # noqa: E402
from emulator.orchestration.load import LoadOptions  # noqa: E402
from emulator.orchestration.load import percentiles  # noqa: E402
from emulator.orchestration.load import raise_descriptor_limit  # noqa: E402
from emulator.orchestration.loadreport import cpu_line  # noqa: E402
from emulator.orchestration.network import Network  # noqa: E402
from emulator.process import run as run_loop  # noqa: E402  (MCX_EVENT_LOOP)
from emulator.sip.timers import DEFAULT_TIMERS  # noqa: E402
from emulator.topology.bundled import topology_path  # noqa: E402
from emulator.topology.loader import load_topology  # noqa: E402
from emulator.topology.population import populate  # noqa: E402

DRAIN = 64 * DEFAULT_TIMERS.t1 + 2.0
"""Timer J (64*T1) and a margin: then no server transaction of the load is left."""


def memory(pid: int) -> tuple[int, int, int]:
    """(RSS, peak RSS, PSS) of ``pid`` in bytes, from /proc/<pid>/status and smaps_rollup.

    Node processes are forked from one zygote, so their RSS counts the pages they still
    share with it; PSS divides each shared page among its sharers, so PSS sums to what the
    nodes use together."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "Pss":
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"], fields["Pss"]


async def _live(net: Network, name: str) -> dict[str, Any]:
    """The node's own report (``emulator.process.memory``); the first one marks where
    tracemalloc's growth counts from."""
    node = net.runner.nodes[name]
    answer: dict[str, Any] = await node.call("memory", {"census": 12})  # type: ignore[attr-defined]
    return dict(answer.get("result") or {})


def total_pss(pids: dict[str, int]) -> int:
    return sum(memory(pid)[2] for pid in pids.values())


async def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    topology = load_topology(topology_path("default"))
    population = populate(topology, args.warmup + args.ues)
    net = Network(population.topology, run_dir=work / "run", placement=args.placement,
                  capture=not args.no_capture, crowd=population.ues)
    figures: dict[str, object] = {"ues": args.ues, "rate": args.rate,
                                  "placement": args.placement, "capture": not args.no_capture}
    async with net:
        await net.wait_ready()
        pids = net.process_ids(captures=False)
        # Both ends are read once every node has collected and trimmed (as each does every
        # 30 s anyway): a node just started still holds its start-up's freed heap (~45 MB
        # over the nodes), which the load reuses; read untrimmed, that baseline charged
        # ~4.5 kB less to each of 10,000 UEs than they hold.
        start = {name: (await _live(net, name)).get("pss_kib", 0) * 1024 for name in pids}
        before = total_pss(pids)
        options = LoadOptions(args.ues, args.rate, registration_expires=3600)
        # Every UE's connections stay open meanwhile.
        raise_descriptor_limit(8 * (args.warmup + args.ues) + 4096)
        warm, measured = population.ues[:args.warmup], population.ues[args.warmup:]
        half = args.ues // 2
        halves = (dataclasses.replace(population, ues=measured[:half]),
                  dataclasses.replace(population, ues=measured[half:]))
        async with contextlib.AsyncExitStack() as stack:
            warmed_up = 0
            if warm:
                # The nodes run the migration's code once before the baseline: the pages each
                # then un-shares from the zygote, and the memos filling, are the topology's
                # own cost, paid once whatever the load, not the measured UEs'.
                warming = await stack.enter_async_context(LoadGenerator(
                    net, dataclasses.replace(population, ues=warm), options))
                warmed_up = (await warming.run()).registered
                print(f"{warmed_up} of {len(warm)} warm-up UEs registered; draining "
                      f"({DRAIN:.0f} s) ...", flush=True)
                await asyncio.sleep(DRAIN)
                start = {name: (await _live(net, name)).get("pss_kib", 0) * 1024
                         for name in pids}
            warmed = total_pss(pids)
            generators = [await stack.enter_async_context(LoadGenerator(net, part, options))
                          for part in halves]
            results, marks = [], []
            for generator in generators:
                results.append(await generator.run())
                print(f"{len(generator.ues)} UEs migrated; draining transactions "
                      f"({DRAIN:.0f} s) ...", flush=True)
                await asyncio.sleep(DRAIN)  # Timer J/K: what a completed transaction holds
                # What each node holds for live objects: collected, free pages handed back.
                live = {name: await _live(net, name) for name in pids}
                marks.append((sum(r.registered for r in results), total_pss(pids), live))
            records = [record for result in results for record in result.records]
            seconds = sum(result.seconds for result in results)
            migration = sorted(m for r in records if (m := r.migration) is not None)
            registered = marks[-1][0]
            failures = sum((result.failures for result in results), Counter[str]())
            print(f"{registered} of {args.ues} UEs registered; migrations took "
                  f"{seconds:.1f} s at {args.rate:g}/s (two halves, a drain between); "
                  f"failures: {dict(failures) or 'none'}", flush=True)
            print(f"migration latency: {percentiles(migration)}", flush=True)
            spent = Counter[str]()
            for result in results:
                spent.update(result.cpu)
            both = dataclasses.replace(results[0], cpu=dict(spent),
                                       stage_ues=sum(r.stage_ues for r in results))
            print(cpu_line(both), flush=True)
            (first, middle, halfway), (_, after, live) = marks
            per_node = {name: memory(pid) for name, pid in pids.items()}
            print(f"{'node':28} {'RSS MB':>8} {'peak MB':>8} {'PSS MB':>8} "
                  f"{'live PSS':>9} {'blocks':>9} {'kB/UE':>7} {'marginal':>8} "
                  f"{'tracked':>9} {'GC ms':>6}")
            for name, (rss, peak, pss) in sorted(per_node.items()):
                held = live[name].get("pss_kib", 0) * 1024
                mid = halfway[name].get("pss_kib", 0) * 1024
                print(f"{name:28} {rss / 2**20:8.1f} {peak / 2**20:8.1f} {pss / 2**20:8.1f} "
                      f"{held / 2**20:9.1f} {live[name].get('blocks', 0):9d} "
                      f"{(held - start[name]) / max(1, registered) / 1024:7.2f} "
                      f"{(held - mid) / max(1, registered - first) / 1024:8.2f} "
                      f"{live[name].get('tracked', 0):9d} {live[name].get('gc_ms', 0):6.1f}")
            idle = (after - before) / max(1, warmed_up + registered)
            per_ue = (after - warmed) / max(1, registered)
            marginal = (after - middle) / max(1, registered - first)
            print(f"nodes' PSS, each node collected and trimmed: {before / 2**20:.1f} MB "
                  f"idle, {warmed / 2**20:.1f} MB after {warmed_up} warm-up UEs, "
                  f"{middle / 2**20:.1f} MB after {first} more, {after / 2**20:.1f} MB after "
                  f"{registered}: {per_ue / 1024:.2f} kB per registered UE after the warm-up "
                  f"({idle / 1024:.2f} kB from idle, the warm-up's UEs counted), "
                  f"{marginal / 1024:.2f} kB per UE of the second half", flush=True)
            if args.census:
                for name in sorted(live):
                    print(f"{name}: {live[name].get('census')}")
                    if "allocated" in live[name]:
                        print(f"{name}: {live[name]['allocated']}")
            figures.update(registered=registered, seconds=round(seconds, 2),
                           failures=dict(failures), per_ue_bytes=round(per_ue),
                           from_idle_per_ue_bytes=round(idle),
                           marginal_per_ue_bytes=round(marginal), warmup=warmed_up,
                           pss_before=before, pss_warmed=warmed, pss_halfway=middle,
                           pss_after=after,
                           nodes={n: {"rss": r, "peak": p, "pss": q, "live": live[n]}
                                  for n, (r, p, q) in per_node.items()},
                           migration_ms=percentiles(migration),
                           cpu_ms_per_ue=both.cpu_per_ue())
            if args.soak:
                samples = []
                # Every UE once a minute: the round paced to end well within it.
                soak_rate = max(args.rate, args.ues / 40)
                for minute in range(1, args.soak + 1):
                    loop = asyncio.get_running_loop()
                    started = loop.time()
                    again, lost = 0, Counter[str]()
                    for generator in generators:
                        round_ = await generator.reregister(soak_rate)
                        again += round_.registered
                        lost += round_.failures
                    await asyncio.sleep(max(0.0, 60 - (loop.time() - started)))
                    pss = total_pss(pids)
                    samples.append(pss)
                    print(f"soak minute {minute}: {again} re-registered, failures: "
                          f"{dict(lost) or 'none'}, nodes' PSS {pss / 2**20:.1f} MB", flush=True)
                later = samples[1:] or samples
                spread = (max(later) - min(later)) / min(later)
                print(f"PSS spread after the first minute: {spread:.1%}")
                figures["soak_pss"] = samples
                figures["soak_spread"] = spread
        stopping = time.monotonic()
    publishing = time.monotonic() - stopping  # the nodes stop, then the capture is written
    # tcpdump's own count: "N packets captured ... M packets dropped by kernel".
    capture = "; ".join(c.summary for c in net.kernel_captures)
    if capture:
        print(f"capture: {capture}; nodes stopped and capture written in {publishing:.1f} s: "
              f"{', '.join(str(p) for p in net.capture_files[:1])}", flush=True)
        figures["capture_summary"] = capture
        figures["publish_seconds"] = round(publishing, 1)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ues", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=180.0,
                        help="migrations started per second (180: what two cores carry "
                        "at ~10 ms a migration, with a little room)")
    parser.add_argument("--placement", default="proc", choices=["proc", "netns"],
                        help="each node its own process (memory is read per process)")
    parser.add_argument("--warmup", type=int, default=100, metavar="UES",
                        help="UEs that migrate before the baseline is read (0: none)")
    parser.add_argument("--soak", type=int, default=0, metavar="MINUTES")
    parser.add_argument("--no-capture", action="store_true")
    parser.add_argument("--census", action="store_true",
                        help="print each node's most numerous object types after draining")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    gauges = [fresh_gauge()]
    print(gauge_line(gauges), flush=True)
    with tempfile.TemporaryDirectory(prefix="mcx-scale-") as tmp:
        figures = run_loop(run(args, Path(tmp)))
    gauges.append(fresh_gauge())
    print(gauge_line(gauges))
    figures["gauge_us"] = [round(g, 2) for g in gauges]
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

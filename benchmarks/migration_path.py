#!/usr/bin/env python3
"""REGISTER/s through the migration path, against Kamailio as a plain registrar, one run.

Setup: the default topology with ``--users`` generated migrating users
(``emulator.topology.population``) runs in the chosen placement (by default where ``up``
places its nodes: ``auto``). The load generator takes every user through the real flow
up to its partner access token (login, profile, security token, attach, partner token),
so each user has its own token, and ``--sources`` of them hold attached addresses.

Load: sipp, ``--sources`` instances at once, each from one attached address, sends
REGISTERs with an mcptt-info body (tests/sipp/register_partner_csv.xml); every call takes
the next user and that user's own partner token from an injection file.  Targets:

(a) the migration path: gateway (P-CSCF) -> partner SIP core -> partner MC server, which
    checks the token of every REGISTER (third-party REGISTER, 24.379 §7.3.1);
(b) Kamailio 5.6 as a plain in-memory registrar, with the configuration of the tools
    notes (§6), fed the same file.

For each, the rate steps up until a step is not clean; a step is clean with no failed
call and under 1 % retransmissions.  Prints each target's highest clean rate and their
ratio; ``--json FILE`` writes them.  With ``--beyond N`` it goes on for N steps past the
first that is not clean and prints the most served per second in a step: past capacity,
the nodes' overload control (``nodes/overload.py``) refuses the excess with 503 and serves
the rest in time.

Under every step it prints the CPU each process spent per REGISTER served (200): each
node's in ``proc`` and ``netns`` (the one process's in ``inproc``), Kamailio's with its
workers, and sipp's, and the serving processes' over sipp's (``relative_to_sipp``); and,
where a node's overload control refused requests, which node refused how many (``shed``
in the JSON).  A machine shared with others moves the clean rate by half between runs;
what a REGISTER costs moves much less, and says where the time goes.  It also prints a
gauge of the machine's speed at the start and at the end:
the SIP core's whole path in microseconds per REGISTER (``benchmarks/sip_core.py``), the
same code each time, so runs of different hours can be compared.

In netns placement the generated users share the crowd's namespace, and so does sipp.

    python benchmarks/migration_path.py [--placement auto|inproc|proc|netns] [--users 2000]
        [--rates 250,500,...] [--seconds 5] [--sources 4] [--beyond 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import resource
import shutil
import sys
import tempfile
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sip_core import fresh_gauge  # noqa: E402
from benchmarks.sip_core import gauge_line  # noqa: E402
from emulator.orchestration.load import LoadGenerator  # noqa: E402
from emulator.orchestration.load import LoadOptions  # noqa: E402
from emulator.orchestration.load import cpu_used  # noqa: E402
from emulator.orchestration.network import Network  # noqa: E402
from emulator.orchestration.session import resolve_placement  # noqa: E402
from emulator.process import cpu_seconds_tree  # noqa: E402
from emulator.process import die_with_parent  # noqa: E402
from emulator.process import run as run_loop  # noqa: E402  (MCX_EVENT_LOOP)
from emulator.process import settle  # noqa: E402
from emulator.topology.bundled import topology_path  # noqa: E402
from emulator.topology.loader import load_topology  # noqa: E402
from emulator.topology.model import FloodLimit  # noqa: E402
from emulator.topology.population import populate  # noqa: E402
from tests.support.sipp import SIPP  # noqa: E402
from tests.support.sipp import run_sipp  # noqa: E402

KAMAILIO_HOST = "127.0.90.1"
KAMAILIO_SOURCES = tuple(f"127.0.91.{i}" for i in range(1, 33))
KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
children=2
tcp_children=1
listen=udp:{host}:5060
auto_aliases=no
alias="{domain}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "sanity.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", 0)
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483","Too Many Hops"); exit; }}
  if (!sanity_check("1511", "7")) {{ exit; }}
  if (is_method("REGISTER")) {{ if (!save("location")) {{ sl_reply_error(); }} exit; }}
  sl_send_reply("405","Method Not Allowed");
}}
"""


@dataclass
class Step:
    rate: int
    achieved: float
    ok: int
    failed: int
    retransmissions: int
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds per REGISTER served, by process (``sipp`` for the load's own)."""
    shed: dict[str, int] = field(default_factory=dict)
    """New requests each node's overload control refused in the step, those that did."""

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.ok > 0 and \
            self.retransmissions < 0.01 * (self.ok + self.failed)


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    """host:port sipp sends to."""
    sources: tuple[str, ...]
    domain: str


def _sipp_seconds() -> float:
    """CPU seconds of this process's ended children: every sipp of a step, once awaited."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def sweep(target: Target, inject: Path, rates: list[int], seconds: float,
                client_id: str, cpu: Callable[[], dict[str, float]],
                beyond: int = 0,
                shed: Callable[[], Awaitable[dict[str, int]]] | None = None) -> list[Step]:
    """Rising rates until a step is not clean, and ``beyond`` steps more (past capacity:
    what is still served, ``achieved``); the sources share each step's rate.  ``cpu``
    reads the CPU seconds of the target's processes, by name; ``shed``, how many new
    requests each node's overload control has refused so far."""
    steps: list[Step] = []
    for rate in rates:
        share = max(1, rate // len(target.sources))
        calls = int(share * seconds)
        loop = asyncio.get_running_loop()
        shed_before = await shed() if shed is not None else {}
        before, sipp_before = cpu(), _sipp_seconds()
        started = loop.time()
        results = await asyncio.gather(*(
            run_sipp("register_partner_csv.xml", target.address, local_ip=source, calls=calls,
                     rate=share, extra=("-inf", str(inject), "-key", "domain", target.domain,
                                        "-key", "client_id", client_id),
                     timeout=seconds * 10 + 60)
            for source in target.sources))
        elapsed = loop.time() - started
        after = cpu()
        used = {name: after[name] - before[name] for name in after if name in before}
        used["sipp"] = _sipp_seconds() - sipp_before
        shed_after = await shed() if shed is not None else {}
        ok = sum(r.successful for r in results)
        step = Step(rate, ok / elapsed, ok, sum(max(0, r.failed) for r in results),
                    sum(max(0, r.retransmissions) for r in results),
                    {name: round(1000 * seconds_used / ok, 3) if ok else 0.0
                     for name, seconds_used in used.items()},
                    {name: count - shed_before.get(name, 0)
                     for name, count in shed_after.items()
                     if count > shed_before.get(name, 0)})
        steps.append(step)
        print(f"  {target.name:16} target {rate:6d}/s  achieved {step.achieved:8.0f}/s  "
              f"ok {step.ok:7d}  failed {step.failed:5d}  retransmissions "
              f"{step.retransmissions:6d}{'' if step.clean else '  (not clean)'}", flush=True)
        print(f"  {'':16} CPU per REGISTER served: {cpu_line(step.cpu_ms)}", flush=True)
        if step.shed:
            refusals = ", ".join(f"{name} {count}" for name, count in
                                 sorted(step.shed.items(), key=lambda item: -item[1]))
            print(f"  {'':16} refused by overload control: {refusals}", flush=True)
        if sum(not s.clean for s in steps) > beyond:
            break
    return steps


def cpu_line(cpu_ms: dict[str, float]) -> str:
    """``name 0.123, ... ms; serving 0.456 ms, sipp 0.1 ms (4.6x sipp's)``: the processes
    but sipp, costliest first, those that took part (0.005 ms or more) by name.

    The last figure is the serving processes' CPU over sipp's, sending the same REGISTERs
    in the same step: sipp's code is fixed, so its cost gauges the machine that minute,
    and the quotient compares runs of different hours better than either figure (two
    builds alternated at 3,000/s: 8.6-9.0 against 7.8-8.4, where their CPU overlapped)."""
    serving = _serving(cpu_ms)
    named = sorted(((n, ms) for n, ms in serving.items() if ms >= 0.005), key=lambda i: -i[1])
    parts = [f"{name} {ms:.3f}" for name, ms in named]
    rest = sum(serving.values()) - sum(ms for _, ms in named)
    if rest > 0:
        parts.append(f"the others {rest:.3f}")
    quotient = _over_sipp(cpu_ms)
    relative = "" if quotient is None else f" ({quotient:.1f}x sipp's)"
    return (f"{', '.join(parts)} ms; serving {sum(serving.values()):.3f} ms, "
            f"sipp {cpu_ms.get('sipp', 0.0):.3f} ms{relative}")


def _over_sipp(cpu_ms: dict[str, float]) -> float | None:
    """The serving processes' CPU over sipp's (see :func:`cpu_line`); None without sipp's."""
    sipp = cpu_ms.get("sipp", 0.0)
    return None if sipp <= 0 else sum(_serving(cpu_ms).values()) / sipp


def _serving(cpu_ms: dict[str, float]) -> dict[str, float]:
    """The serving processes' share: every one but sipp."""
    return {name: ms for name, ms in cpu_ms.items() if name != "sipp"}


def best_step(steps: list[Step]) -> Step | None:
    return max((s for s in steps if s.clean), key=lambda s: s.rate, default=None)


def best(steps: list[Step]) -> int:
    step = best_step(steps)
    return 0 if step is None else step.rate


def serving_ms(step: Step | None) -> float | None:
    """CPU ms per REGISTER over the serving processes at ``step`` (sipp's left out)."""
    return None if step is None else round(sum(_serving(step.cpu_ms).values()), 3)


def relative_to_sipp(step: Step | None) -> float | None:
    """The serving processes' CPU over sipp's at ``step`` (see :func:`cpu_line`)."""
    quotient = None if step is None else _over_sipp(step.cpu_ms)
    return None if quotient is None else round(quotient, 2)


def served(steps: list[Step]) -> float:
    """The most REGISTERs answered 200 per second in a step, clean or not."""
    return max((s.achieved for s in steps), default=0.0)


async def migration_target(placement: str, users: int, sources: int, work: Path,
                           ) -> tuple[Network, Target, Path, str]:
    topology = load_topology(topology_path("default"))
    # The gateway's per-source flood limit lifted: sipp sends the load from a few attached
    # addresses, which is exactly what flood control stops.
    topology = dataclasses.replace(topology, limits=dataclasses.replace(
        topology.limits, flood=FloodLimit(rate=1e6, burst=1_000_000)))
    population = populate(topology, users)
    net = Network(population.topology, run_dir=work / "run", placement=placement,
                  capture=False, crowd=population.ues)
    await net.start()
    await net.wait_ready()
    async with LoadGenerator(net, population,
                             LoadOptions(users, rate=500, register=False)) as generator:
        result = await generator.run()  # the UEs stop; their attachments and tokens stay
    failures = result.failures
    if failures:
        raise SystemExit(f"the migration of the generated users failed: {dict(failures)}")
    lines = []
    for ue in generator.ues:
        token = ue.partner_token or {}
        lines.append(f"{generator.access[ue.name].partner_impu};{token['access_token']};")
    # Settled as `up` settles once ready, and after the set-up's own garbage (thousands of
    # logins' TLS and HTTP objects, in this process when inproc): otherwise the first full
    # collection lands in a measured step, a ~0.7 s pause at 8,000 users that sipp answers
    # with retransmissions.
    settle()
    inject = work / "users.csv"
    inject.write_text("SEQUENTIAL\n" + "\n".join(lines) + "\n")
    gateway = net.topology.local_plmn.gateway
    assert gateway.sip is not None
    attached = tuple(ue.visited_address for ue in generator.ues[:sources]
                     if ue.visited_address is not None)
    partner = net.topology.system(net.topology.local_plmn.serves)
    target = Target(f"migration/{placement}", f"{gateway.host}:{gateway.sip.port}", attached,
                    partner.domain)
    return net, target, inject, net.topology.oidc_client_id


async def kamailio(work: Path, domain: str) -> asyncio.subprocess.Process:
    binary = shutil.which("kamailio")
    if binary is None:
        raise SystemExit("kamailio is not installed (Debian package kamailio)")
    config = work / "kamailio.cfg"
    config.write_text(KAMAILIO_CFG.format(host=KAMAILIO_HOST, domain=domain))
    # It ends with this process, however that ends (a SIGTERM runs no finally: here).
    process = await asyncio.create_subprocess_exec(
        binary, "-f", str(config), "-DD", "-E", "-Y", str(work), "-m", "128", "-M", "8",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent)
    assert process.stderr is not None
    asyncio.get_running_loop().create_task(_drain(process.stderr))
    await _answers_options(KAMAILIO_HOST, 5060)
    return process


async def _answers_options(host: str, port: int) -> None:
    """Until the registrar answers an OPTIONS (its 405 will do), for at most 20 s."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[bytes] = loop.create_future()

    class Probe(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
            if not answered.done():
                answered.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Probe, local_addr=(KAMAILIO_SOURCES[-1],
                                                                           0))
    try:
        port_used = transport.get_extra_info("sockname")[1]
        options = (f"OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/UDP {KAMAILIO_SOURCES[-1]}:"
                   f"{port_used};branch=z9hG4bK-probe\r\nMax-Forwards: 70\r\nFrom: "
                   f"<sip:probe@{host}>;tag=p\r\nTo: <sip:{host}>\r\nCall-ID: probe\r\n"
                   "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        async with asyncio.timeout(20):
            while not answered.done():
                transport.sendto(options, (host, port))
                await asyncio.wait([answered], timeout=0.2)
    finally:
        transport.close()


async def shed_by(net: Network) -> dict[str, int]:
    """How many new requests each node's overload control has refused since it started."""
    return {name: int(state["overload"]["shed"]) for name, state in (await net.refresh()).items()
            if isinstance(state.get("overload"), dict) and "shed" in state["overload"]}


def _tree(pid: int) -> dict[str, float]:
    seconds = cpu_seconds_tree(pid)
    return {} if seconds is None else {"kamailio": seconds}


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    rates = [int(r) for r in args.rates.split(",")]
    gauges = [fresh_gauge()]
    print(gauge_line(gauges), flush=True)
    with tempfile.TemporaryDirectory(prefix="mcx-path-") as tmp:
        work = Path(tmp)
        print(f"setting up {args.users} migrated users ({args.placement}) ...", flush=True)
        net, target, inject, client_id = await migration_target(
            args.placement, args.users, args.sources, work)
        try:
            print(f"(a) {target.name}: sipp x{len(target.sources)} -> gateway -> partner "
                  "SIP core -> partner MC server", flush=True)
            with net.crowd_entered():  # netns: sipp sends from the crowd's namespace
                ours = await sweep(target, inject, rates, args.seconds, client_id,
                                   lambda: cpu_used(net), args.beyond, lambda: shed_by(net))
        finally:
            await net.stop()
        kam = await kamailio(work, target.domain)
        try:
            reference = Target("kamailio", f"{KAMAILIO_HOST}:5060",
                               KAMAILIO_SOURCES[:args.sources], target.domain)
            print("(b) kamailio 5.6 plain registrar, the same load", flush=True)
            theirs = await sweep(reference, inject, rates, args.seconds, client_id,
                                 lambda: _tree(kam.pid), args.beyond)
        finally:
            kam.terminate()
            await kam.wait()
    gauges.append(fresh_gauge())
    a, b = best(ours), best(theirs)
    ratio = a / b if b else None
    print()
    print(f"highest clean rate, {target.name}: {a} REGISTER/s")
    print(f"highest clean rate, kamailio: {b} REGISTER/s")
    print(f"ratio: {ratio:.3f}x Kamailio" if ratio is not None else "ratio: n/a")
    if args.beyond:
        print(f"most served in a step, {target.name}: {served(ours):.0f} REGISTER/s; "
              f"kamailio: {served(theirs):.0f} REGISTER/s")
    cost = {"migration_path": serving_ms(best_step(ours)),
            "kamailio": serving_ms(best_step(theirs))}
    print(gauge_line(gauges))
    relative = {"migration_path": relative_to_sipp(best_step(ours)),
                "kamailio": relative_to_sipp(best_step(theirs))}
    if cost["migration_path"] and cost["kamailio"]:
        print(f"CPU per REGISTER at the highest clean rate: {target.name} "
              f"{cost['migration_path']:.3f} ms, kamailio {cost['kamailio']:.3f} ms "
              f"({cost['migration_path'] / cost['kamailio']:.0f}x); over sipp's own in "
              f"the same step: {relative['migration_path']}x and {relative['kamailio']}x")
    return {"placement": args.placement, "users": args.users, "sources": args.sources,
            "seconds_per_step": args.seconds, "migration_path": a, "kamailio": b,
            "ratio": ratio, "cpu_ms_per_register": cost, "relative_to_sipp": relative,
            "gauge_us": gauges,
            "served": {"migration_path": served(ours), "kamailio": served(theirs)},
            "steps": {"migration_path": [s.__dict__ for s in ours],
                                      "kamailio": [s.__dict__ for s in theirs]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--placement", default="auto",
                        choices=["auto", "inproc", "proc", "netns"],
                        help="auto (the default): where `up` places its nodes unless told")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--sources", type=int, default=4,
                        help="sipp instances, each from its own attached address")
    parser.add_argument("--rates", default="250,500,750,1000,1500,2000,2250,2500,2750,3000,"
                                           "3250,3500,3750,4000,4500,5000,6000,7000,8000,10000,"
                                           "12000,15000,20000,25000,30000,35000,40000,50000",
                        help="the steps; the default goes past Kamailio's highest clean rate "
                             "on this project's 2-core machine (30,000-35,000/s), so that the "
                             "ratio is to what Kamailio can do, not to the sweep's top")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--beyond", type=int, default=0,
                        help="steps to go on past the first that is not clean (past capacity, "
                             "what is still served: overload control's effect)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if SIPP is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 2
    args.placement = resolve_placement(args.placement)
    figures = run_loop(main_async(args))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

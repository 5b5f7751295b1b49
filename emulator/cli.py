"""The command line: ``mcx-emulator`` (installed) or ``python run_topology.py`` (checkout).

    mcx-emulator                                 the default topology and scenario
    mcx-emulator run [TOPOLOGY] [--scenario NAME|all] [--transport udp|tcp|tls]
                     [--placement inproc|proc|netns]
    mcx-emulator --list-scenarios
    mcx-emulator up [TOPOLOGY] --state-file FILE [--placement auto|inproc|proc|netns]
    mcx-emulator load [TOPOLOGY] --ues N [--rate R] [--placement auto|inproc|proc|netns]
                      [--no-capture]             many users migrate: KPIs, plot, JSON
    mcx-emulator node --plan FILE                a node process, started from its plan
    mcx-emulator exec --state-file FILE NODE -- CMD      CMD in NODE's namespace (netns)
    mcx-emulator clean                           remove what a run killed with SIGKILL left
    mcx-emulator link set A B --state-file FILE [--from A] [--delay 50ms] [--loss 20%] ...
    mcx-emulator provision --dir DIR --from A --to B --issuer URL [--mode ...]
    mcx-emulator ladder CAPTURE [--format text|mermaid|svg|html] [-o FILE]
    mcx-emulator diff CAPTURE_A CAPTURE_B
    mcx-emulator plan [TOPOLOGY] [--scenario NAME] [--node NAME]   the nodes' plans as JSON
    mcx-emulator demo                            REGISTER over UDP, TCP and TLS

TOPOLOGY is a file, or the name of a shipped topology (``default``).  A run
prints the ladder (read back from its capture: who sent what to whom, with
each step's spec clause) and a verdict table, writes its captures under
pcaps/<run-id>/ (under the current directory, or the temporary directory when
the current one is not writable), and exits 0 if and only if every verdict
holds.  Logging is set up here and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator.capture.diff import first_difference
from emulator.capture.ladder import RENDERERS
from emulator.capture.ladder import LadderError
from emulator.capture.ladder import extract
from emulator.capture.ladder import render_text
from emulator.capture.tap import TapWriter
from emulator.capture.tap import write_tap_capture
from emulator.identity.pki import issue_server_certificate
from emulator.identity.pki import make_ca
from emulator.keystore import load_trusted_issuers
from emulator.keystore import write_credential
from emulator.orchestration.control import send as send_control
from emulator.orchestration.netns import clean as clean_namespaces
from emulator.orchestration.placement import PLACEMENTS
from emulator.orchestration.plan import plan_network
from emulator.orchestration.provisioning import PROVISION_MODES
from emulator.orchestration.provisioning import create_system
from emulator.orchestration.provisioning import provision
from emulator.orchestration.scenarios import SCENARIOS
from emulator.orchestration.scenarios import not_applicable
from emulator.orchestration.serve import run_node
from emulator.orchestration.session import prefork
from emulator.orchestration.session import resolve_placement
from emulator.orchestration.session import run_scenario
from emulator.orchestration.session import serve
from emulator.orchestration.session import topology_for
from emulator.process import run
from emulator.topology import Topology
from emulator.topology import TopologyError
from emulator.topology import load_topology
from emulator.topology import topology_path
from emulator.transport.tls import client_context
from nodes import Credentials
from nodes import Listener
from nodes import McClient
from nodes import NodePlan
from nodes import SipCore
from nodes import SipCoreOptions

DEMO_DOMAIN = "mc.example.org"
DEMO_UE, DEMO_REGISTRAR = "127.0.1.1", "127.0.1.2"

Verdict = tuple[str, str, bool]


# -- demo: the plain registrar and the UA, the project's real roles ------------------------
async def register_demo(transports: list[str], workdir: Path) -> tuple[Path, list[Verdict]]:
    """A UE registers over each transport at a SIP core acting as plain registrar."""
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("MC System A", now=now)
    server = issue_server_certificate(ca, "registrar", hosts=[DEMO_REGISTRAR, DEMO_DOMAIN],
                                      now=now)
    certificate, key = write_credential(workdir, "registrar", server)
    tap = TapWriter(tapped_hosts=[DEMO_UE, DEMO_REGISTRAR])
    registrar = SipCore(NodePlan(
        "registrar", "sip-core", "demo", DEMO_REGISTRAR,
        tuple(Listener(t, DEMO_REGISTRAR, 0) for t in transports), SipCoreOptions(DEMO_DOMAIN),
        Credentials(tls_certificate=str(certificate), tls_key=str(key))), tap=tap)
    clients = {t: McClient("UE", DEMO_UE, t, tap=tap,
                           client_ssl=client_context([ca.certificate_pem()]))
               for t in transports}
    aor = f"sip:alice@{DEMO_DOMAIN}"
    verdicts: list[Verdict] = []
    try:
        await registrar.start()
        for transport, client in clients.items():
            await client.start()
            registration = await client.register(registrar.endpoint.local(transport), aor,
                                                 expires=600)
            response = registration.response
            verdicts.append((f"REGISTER over {transport.upper()}",
                             f"{response.status} {response.reason}",
                             response.status == 200 and len(response.contacts) >= 1))
        first = transports[0]
        gone = await clients[first].unregister(registrar.endpoint.local(first), aor)
        left = len(registrar.location)
        verdicts.append(("Un-REGISTER (Expires: 0) removes a binding",
                         f"{gone.response.status}, {left} binding(s) left",
                         gone.response.status == 200 and left == len(transports) - 1))
    finally:
        for client in clients.values():
            await client.stop()
        await registrar.stop()
    capture = workdir / "demo.pcapng"
    write_tap_capture(capture, tap, names={DEMO_UE: "UE", DEMO_REGISTRAR: "registrar"})
    return capture, verdicts


def run_demo(args: argparse.Namespace) -> int:
    transports = ["udp", "tcp", "tls"] if args.transport == "all" else [args.transport]
    with tempfile.TemporaryDirectory(prefix="mcx-") as tmp:
        capture, verdicts = asyncio.run(register_demo(transports, Path(tmp)))
        try:
            print(render_text(extract(capture), width=40))
        except LadderError as exc:
            print(f"(no ladder: {exc})")
    print()
    width = max(len(v[0]) for v in verdicts)
    for name, detail, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    return 0 if all(ok for *_, ok in verdicts) else 1


# -- provision, scenarios, up ---------------------------------------------------------------
def run_provision(args: argparse.Namespace) -> int:
    """The out-of-band step of 33.180 §5.1.4.2, on its own."""
    directory = Path(args.dir)
    now = dt.datetime.now(dt.UTC)
    for system in (args.source, args.target):
        if not (directory / system / "idms-signing.crt").exists():
            create_system(directory, system, {}, now=now)
            print(f"created PKI of MC system {system!r} in {directory / system}")
    written = provision(directory, args.source, args.target, args.issuer, mode=args.mode)
    if written is None:
        print(f"withheld: {args.target!r} holds no certificate of {args.source!r}")
        return 0
    keys, refused = load_trusted_issuers(directory / args.target / "trust", now=now)
    print(f"provisioned {args.source!r} IdMS signing certificate into {written}")
    for key in keys:
        print(f"  trusted: iss={key.issuer} kid={key.kid} alg={key.algorithm} ({key.subject})")
    for peer, reason in refused.items():
        print(f"  REFUSED {peer}: {reason}")
    return 0


def list_scenarios() -> int:
    width = max(map(len, SCENARIOS))
    for name, scenario in SCENARIOS.items():
        expect = scenario.expect
        outcome = (f"refused at {expect.step}: {expect.status} {expect.error or expect.reason}"
                   if expect else "completes")
        print(f"{name:<{width}}  {scenario.description}  [{outcome}]")
    return 0


def _topology(args: argparse.Namespace) -> Topology | None:
    try:
        topology = load_topology(topology_path(args.topology))
        if getattr(args, "transport", None):
            topology.with_transport(args.transport)  # refused here, not mid-run
    except (TopologyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return topology


def run_scenarios(args: argparse.Namespace) -> int:
    topology = _topology(args)
    if topology is None:
        return 2
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"error: unknown scenario {unknown[0]!r}; see --list-scenarios", file=sys.stderr)
        return 2
    ok = True
    for name in names:
        reason = not_applicable(SCENARIOS[name], topology_for(SCENARIOS[name], topology))
        if reason is not None and args.scenario == "all":
            print(f"SKIPPED {name}: {reason}\n")
            continue
        try:
            report = run(run_scenario(topology, SCENARIOS[name], transport=args.transport,
                                      pcap_root=Path(args.pcaps), placement=args.placement,
                                      seed=args.seed, zygote=prefork(args.placement)))
        except KeyboardInterrupt:
            # asyncio.run cancelled the run; the network stopped and published its captures.
            print(f"interrupted: captures of the partial run are under {args.pcaps}/",
                  file=sys.stderr)
            return 130
        print(report.text(ladder=not args.quiet))
        ok &= report.passed
    return 0 if ok else 1


def _state(state_file: str, key: str) -> Any:
    """``key`` of a running ``up``'s state file; None (said on stderr) when it is not one."""
    try:
        return json.loads(Path(state_file).read_text())[key]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {state_file}: not a state file of up ({exc})", file=sys.stderr)
        return None


def run_exec(args: argparse.Namespace) -> int:
    """Run a command in a node's network namespace, as ``ip netns exec`` does."""
    nodes = _state(args.state_file, "nodes")
    if nodes is None:
        return 2
    namespace = nodes.get(args.node, {}).get("namespace")
    if namespace is None:
        known = ", ".join(n for n, v in nodes.items() if v.get("namespace"))
        print(f"error: no node {args.node!r} in a namespace (up --placement netns); "
              f"known: {known or 'none'}", file=sys.stderr)
        return 2
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        print("error: give a command after --", file=sys.stderr)
        return 2
    os.execvp("ip", ["ip", "netns", "exec", namespace, *command])


IMPAIRMENT_OPTIONS = ("delay", "jitter", "loss", "duplicate", "reorder", "rate", "seed")


def run_link(args: argparse.Namespace) -> int:
    """Change a link of a running ``up``: both ways, or only what ``--from`` sends."""
    control = _state(args.state_file, "control")
    if control is None:
        return 2
    values: dict[str, object] = {k: getattr(args, k) for k in IMPAIRMENT_OPTIONS
                                 if getattr(args, k) is not None}
    if args.sender not in (None, args.a, args.b):
        print(f"error: --from must be {args.a} or {args.b}", file=sys.stderr)
        return 2
    request: dict[str, object] = {"link": [args.a, args.b]}
    if args.sender in (None, args.a):
        request["from_a"] = values
    if args.sender in (None, args.b):
        request["from_b"] = values
    answer = asyncio.run(send_control(control, request))
    if "error" in answer:
        print(f"error: {answer['error']}", file=sys.stderr)
        return 2
    print(answer["ok"])
    return 0


def run_clean(args: argparse.Namespace) -> int:
    removed = asyncio.run(clean_namespaces())
    print(f"removed {len(removed)} namespace(s), process(es) and socket directories of runs "
          "that are gone"
          + (f": {', '.join(removed)}" if removed else ""))
    return 0


def run_up(args: argparse.Namespace) -> int:
    topology = _topology(args)
    if topology is None:
        return 2
    placement = resolve_placement(args.placement)
    return run(serve(topology, Path(args.state_file), transport=args.transport,
                     pcap_root=Path(args.pcaps), placement=placement, seed=args.seed,
                     zygote=prefork(placement)))


def run_plan(args: argparse.Namespace) -> int:
    """Print the plans a run would start its nodes from (JSON, one object per node)."""
    topology = _topology(args)
    if topology is None:
        return 2
    if args.scenario not in SCENARIOS:
        print(f"error: unknown scenario {args.scenario!r}; see --list-scenarios",
              file=sys.stderr)
        return 2
    if args.transport:
        topology = topology.with_transport(args.transport)
    plans = plan_network(topology, SCENARIOS[args.scenario].faults, Path(args.run_dir))
    chosen = [p for p in plans if args.node in (None, p.name)]
    if not chosen:
        print(f"error: no node {args.node!r}; nodes: {', '.join(p.name for p in plans)}",
              file=sys.stderr)
        return 2
    print(json.dumps([p.to_dict() for p in chosen], indent=2))
    return 0


# -- reading captures -------------------------------------------------------------------------
def _capture_arg(path: str) -> tuple[Path, Path | None]:
    """A capture file, or a run directory holding capture.pcapng; plus its key log if loose."""
    capture = Path(path)
    if capture.is_dir():
        published = capture / "capture.pcapng"
        capture = published if published.exists() else capture / "capture.pcap"
    keylog = capture.parent / "tls-keys.log"
    # A pcapng from the emulator embeds its TLS secrets; a plain pcap needs the key log.
    return capture, keylog if capture.suffix == ".pcap" and keylog.exists() else None


def run_ladder(args: argparse.Namespace) -> int:
    capture, keylog = _capture_arg(args.capture)
    try:
        messages = extract(capture, keylog=keylog)
    except LadderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output = RENDERERS[args.format](messages)
    if args.output:
        Path(args.output).write_text(output)
        print(f"{len(messages)} messages -> {args.output}")
    else:
        print(output)
    return 0


def run_diff(args: argparse.Namespace) -> int:
    try:
        a, b = (extract(*_capture_arg(path)[:1], keylog=_capture_arg(path)[1])
                for path in (args.a, args.b))
    except LadderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    difference = first_difference(a, b)
    if difference is None:
        print(f"same message sequence ({len(a)} messages)")
        return 0
    print(difference)
    return 1


def default_pcaps() -> Path:
    """``./pcaps``; from a directory the user cannot write (``/``), a temporary one."""
    if os.access(".", os.W_OK):
        return Path("pcaps")
    return Path(tempfile.gettempdir()) / "mcx-emulator" / "pcaps"


# -- the parser ---------------------------------------------------------------------------------
def _add_run_options(run: argparse.ArgumentParser, up: argparse.ArgumentParser) -> None:
    run.add_argument("--scenario", default="default", help="a name, or 'all'")
    run.add_argument("-q", "--quiet", action="store_true", help="verdicts only, no ladder")
    up.add_argument("--state-file", required=True, help="JSON written once every node is ready")
    for sub in (run, up):
        sub.add_argument("topology", nargs="?", default="default",
                         help="a topology file, or a shipped topology's name (default)")
        sub.add_argument("--transport", choices=["udp", "tcp", "tls"], default=None,
                         help="force every SIP link to this transport")
        sub.add_argument("--seed", type=int, default=0,
                         help="varies the random choices of impaired links (same seed, "
                              "same run)")
        sub.add_argument("--placement", choices=(("auto",) if sub is up else ()) + PLACEMENTS,
                         default="auto" if sub is up else "inproc",
                         help="inproc: one process; proc: every node its own process; "
                              "netns: every node its own process and network namespace"
                              + ("; auto (the default): proc, or inproc where only it can "
                                 "capture (no root)" if sub is up else ""))
        sub.add_argument("--pcaps", default=None,
                         help="where run directories go (default: ./pcaps, or "
                              "$TMPDIR/mcx-emulator/pcaps when . is not writable)")


def _add_running_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The commands that act on a running ``up`` or what it left."""
    execute = commands.add_parser("exec", help="run a command in a node's network namespace")
    execute.add_argument("node")
    execute.add_argument("--state-file", required=True, help="the state file of up")
    execute.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                         help="the command and its arguments")
    commands.add_parser("clean", help="remove what runs killed with SIGKILL left: namespaces, "
                                            "processes, control sockets")
    link = commands.add_parser("link", help="change a link of a running up")
    link.add_argument("action", choices=["set"])
    link.add_argument("a")
    link.add_argument("b")
    link.add_argument("--state-file", required=True, help="the state file of up")
    link.add_argument("--from", dest="sender", help="only what this end sends")
    for option in IMPAIRMENT_OPTIONS:
        link.add_argument(f"--{option}", type=int if option == "seed" else str,
                          help="as in the topology file's impair: (none given: a clean link)")


def _add_tool_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The commands that read captures, print plans, provision or demonstrate."""
    ladder = commands.add_parser("ladder", help="message sequence chart of a capture")
    ladder.add_argument("capture", help="a .pcapng/.pcap file or a run directory")
    ladder.add_argument("--format", choices=list(RENDERERS), default="text")
    ladder.add_argument("-o", "--output", help="write to this file instead of stdout")
    diff = commands.add_parser("diff", help="compare two runs' message sequences")
    diff.add_argument("a")
    diff.add_argument("b")
    node = commands.add_parser("node", help="run one node from its plan (what proc placement "
                                            "and containers start)")
    node.add_argument("--plan", required=True, help="the node's plan, as JSON")
    plan = commands.add_parser("plan", help="print the nodes' plans (JSON) for a topology")
    plan.add_argument("topology", nargs="?", default="default",
                      help="a topology file, or a shipped topology's name (default)")
    plan.add_argument("--scenario", default="default", help="whose faults to apply")
    plan.add_argument("--transport", choices=["udp", "tcp", "tls"], default=None)
    plan.add_argument("--node", default=None, help="only this node's plan")
    plan.add_argument("--run-dir", default="pcaps/<run-id>",
                      help="the run directory the credential paths are under")
    demo = commands.add_parser("demo", help="REGISTER demo over UDP, TCP and TLS")
    demo.add_argument("--transport", choices=["udp", "tcp", "tls", "all"], default="all")
    oob = commands.add_parser(
        "provision", help="out-of-band step: give one system's IdMS signing certificate "
                          "to another (33.180 §5.1.4.2)")
    oob.add_argument("--dir", required=True, help="PKI directory (created when missing)")
    oob.add_argument("--from", dest="source", required=True, help="system whose IdMS is trusted")
    oob.add_argument("--to", dest="target", required=True, help="system that will trust it")
    oob.add_argument("--issuer", required=True, help="iss URL of the source IdMS")
    oob.add_argument("--mode", choices=PROVISION_MODES, default="normal",
                     help="withhold or corrupt the certificate (negative scenarios)")


def run_load(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn
    from rich.progress import MofNCompleteColumn
    from rich.progress import Progress
    from rich.progress import TextColumn
    from rich.progress import TimeElapsedColumn

    from emulator.orchestration.load import LoadOptions
    from emulator.orchestration.loadreport import kpi_table
    from emulator.orchestration.netns import NetnsError
    from emulator.orchestration.session import load
    from emulator.topology.population import PopulationError
    from emulator.topology.population import populate

    topology = _topology(args)
    if topology is None:
        return 2
    if args.ues < 1 or args.rate <= 0 or args.concurrency < 1:
        print("error: --ues and --concurrency must be at least 1, --rate above 0",
              file=sys.stderr)
        return 2
    try:  # before anything shows or starts: a bad population is the whole answer
        population = populate(topology, args.ues)
    except PopulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    placement = resolve_placement(args.placement, capture=not args.no_capture)
    zygote = prefork(placement)  # before the progress bar's thread starts
    console = Console()
    with Progress(TextColumn("{task.description:9}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                  console=console) as bar:
        tasks = {stage: bar.add_task(stage, total=args.ues, failed=0)
                 for stage in ("home", "migration")}
        failed = dict.fromkeys(tasks, 0)

        def progress(stage: str, record: Any) -> None:
            failed[stage] += record.failure is not None
            bar.update(tasks[stage], advance=1, failed=failed[stage])

        try:
            result, run_dir, files = run(load(
                topology, LoadOptions(args.ues, args.rate, args.concurrency),
                transport=args.transport, pcap_root=Path(args.pcaps),
                placement=placement, capture=not args.no_capture, progress=progress,
                zygote=zygote, population=population))
        except (PopulationError, ValueError, NetnsError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"interrupted: captures of the partial run are under {args.pcaps}/",
                  file=sys.stderr)
            return 130
    console.print(kpi_table(result))
    console.print(f"run directory: {run_dir}")
    for path in files:
        console.print(f"  {path.name}")
    return 0 if result.registered == args.ues else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcx-emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--list-scenarios", action="store_true",
                        help="list the scenarios and what each expects")
    commands = parser.add_subparsers(dest="command")
    _add_run_options(commands.add_parser("run", help="run a topology with a scenario"),
                     commands.add_parser("up", help="start a topology and keep it running"))
    _add_running_commands(commands)
    _add_tool_commands(commands)
    _add_load_command(commands)
    return parser


def _add_load_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    load = commands.add_parser("load", help="many users migrate at a rate: KPIs, plot, JSON")
    load.add_argument("topology", nargs="?", default="default",
                      help="a topology file, or a shipped topology's name (default)")
    load.add_argument("--ues", type=int, required=True, help="how many UEs migrate")
    load.add_argument("--rate", type=float, default=100.0, help="UEs started per second")
    load.add_argument("--concurrency", type=int, default=1000, help="most UEs in flight")
    load.add_argument("--placement", choices=("auto", *PLACEMENTS), default="auto",
                      help="auto (the default): proc, or inproc where only its taps can "
                           "capture (not root)")
    load.add_argument("--transport", choices=["udp", "tcp", "tls"], default=None,
                      help="force every SIP link to this transport")
    load.add_argument("--no-capture", action="store_true", help="run without any capture")
    load.add_argument("--pcaps", default=None, help="where run directories go")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run_scenarios, "up": run_up, "provision": run_provision, "ladder": run_ladder,
    "diff": run_diff, "plan": run_plan, "demo": run_demo,
    "node": lambda args: run_node(Path(args.plan)), "exec": run_exec, "clean": run_clean,
    "link": run_link, "load": run_load}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.list_scenarios:
        return list_scenarios()
    if args.command is None:  # no subcommand: the default topology and scenario
        args = parser.parse_args(["run"])
    if getattr(args, "pcaps", "") is None:
        args.pcaps = str(default_pcaps())
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

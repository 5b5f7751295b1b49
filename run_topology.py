#!/usr/bin/env python3
"""Run the MCX migration emulator.

    python run_topology.py                       the default topology and scenario
    python run_topology.py run TOPOLOGY [--scenario NAME] [--transport udp|tcp|tls]
    python run_topology.py --list-scenarios
    python run_topology.py up TOPOLOGY --state-file FILE
    python run_topology.py provision --dir DIR --from A --to B --issuer URL [--mode ...]
    python run_topology.py ladder CAPTURE [--format text|mermaid|svg|html] [-o FILE]
    python run_topology.py diff CAPTURE_A CAPTURE_B
    python run_topology.py demo                  REGISTER over UDP, TCP and TLS

A run prints the ladder (who sent what to whom, with each step's spec
clause) and a verdict table, writes its captures under pcaps/<run-id>/, and
exits 0 if and only if every verdict holds.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
import tempfile
from pathlib import Path

from emulator.identity.pki import issue_server_certificate, make_ca
from emulator.provisioning import PROVISION_MODES, create_system, load_trusted_issuers, provision
from emulator.sip.message import Response
from emulator.trace import Trace
from emulator.transport.endpoint import SipEndpoint
from emulator.transport.tls import client_context, server_context
from nodes.registrar import Registrar
from nodes.ua import UserAgent

DOMAIN = "mc.example.org"
UE_HOST, REGISTRAR_HOST = "127.0.1.1", "127.0.1.2"
MCPTT_INFO = (
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
    b'<mcpttinfo xmlns="urn:3gpp:ns:mcpttInfo:1.0">\r\n'
    b'  <mcptt-Params>\r\n'
    b'    <mcptt-request-uri type="Normal"><mcpttURI>sip:alice@mc.example.org</mcpttURI>'
    b'</mcptt-request-uri>\r\n'
    b'    <mcptt-client-id type="Normal"><mcpttString>urn:uuid:00000000-0000-1000-8000-'
    b'000000000001</mcpttString></mcptt-client-id>\r\n'
    b'  </mcptt-Params>\r\n'
    b'</mcpttinfo>\r\n'
)


Verdict = tuple[str, str, bool]


async def register_demo(transports: list[str], workdir: Path) -> tuple[Trace, list[Verdict]]:
    now = dt.datetime.now(dt.UTC)
    ca = make_ca("MC System A", now=now)
    server = issue_server_certificate(ca, "registrar", hosts=[REGISTRAR_HOST, DOMAIN], now=now)
    trace = Trace(names={UE_HOST: "UE", REGISTRAR_HOST: "registrar"})
    registrar = Registrar("registrar", {DOMAIN})
    registrar_ep = SipEndpoint("registrar", registrar, tap=trace.tap)
    registrar.attach(registrar_ep)
    ue = UserAgent("UE", f"sip:alice@{DOMAIN}")
    ue_ep = SipEndpoint("UE", ue, tap=trace.tap, client_ssl=client_context([ca.certificate_pem()]))
    ue.attach(ue_ep)
    server_ssl = server_context(server.certificate_pem(), server.key_pem(), workdir, "registrar")
    verdicts: list[Verdict] = []
    try:
        for transport in transports:
            ssl_ctx = server_ssl if transport == "tls" else None
            await registrar_ep.listen(transport, REGISTRAR_HOST, 0, server_ssl=ssl_ctx)
            await ue_ep.listen(transport, UE_HOST, 0, server_ssl=ssl_ctx)
        for transport in transports:
            response: Response = await ue.register(
                registrar_ep.local(transport),
                contact_params=(("+g.3gpp.mcptt", None),),
                body=MCPTT_INFO, content_type="application/vnd.3gpp.mcptt-info+xml")
            ok = response.status == 200 and len(response.contacts) >= 1
            verdicts.append((f"REGISTER over {transport.upper()}",
                             f"{response.status} {response.reason}", ok))
        response = await ue.unregister(registrar_ep.local(transports[0]))
        left = len(registrar.location)
        verdicts.append(("Un-REGISTER (Expires: 0) removes a binding",
                         f"{response.status}, {left} binding(s) left",
                         response.status == 200 and left == len(transports) - 1))
    finally:
        await ue_ep.close()
        await registrar_ep.close()
    return trace, verdicts


def run_demo(args: argparse.Namespace) -> int:
    transports = ["udp", "tcp", "tls"] if args.transport == "all" else [args.transport]
    with tempfile.TemporaryDirectory(prefix="mcx-") as tmp:
        trace, verdicts = asyncio.run(register_demo(transports, Path(tmp)))
    print(trace.ladder(["UE", "registrar"], width=40))
    print()
    width = max(len(v[0]) for v in verdicts)
    for name, detail, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    return 0 if all(ok for *_, ok in verdicts) else 1


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
    keys, refused = load_trusted_issuers(directory, args.target, now=now)
    print(f"provisioned {args.source!r} IdMS signing certificate into {written}")
    for key in keys:
        print(f"  trusted: iss={key.issuer} kid={key.kid} alg={key.algorithm} ({key.subject})")
    for peer, reason in refused.items():
        print(f"  REFUSED {peer}: {reason}")
    return 0


DEFAULT_TOPOLOGY = Path(__file__).resolve().parent / "topologies" / "default.yaml"


def list_scenarios() -> int:
    from nodes.scenario import SCENARIOS

    width = max(map(len, SCENARIOS))
    for name, scenario in SCENARIOS.items():
        expect = scenario.expect
        outcome = (f"refused at {expect.step}: {expect.status} {expect.error or expect.reason}"
                   if expect else "completes")
        print(f"{name:<{width}}  {scenario.description}  [{outcome}]")
    return 0


def run_scenarios(args: argparse.Namespace) -> int:
    from emulator.topology import TopologyError, load_topology
    from nodes.scenario import SCENARIOS
    from nodes.session import run_scenario

    try:
        topology = load_topology(args.topology)
    except TopologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"error: unknown scenario {unknown[0]!r}; see --list-scenarios", file=sys.stderr)
        return 2
    ok = True
    for name in names:
        try:
            report = asyncio.run(run_scenario(topology, SCENARIOS[name],
                                              transport=args.transport,
                                              pcap_root=Path(args.pcaps)))
        except KeyboardInterrupt:
            # asyncio.run cancelled the run; the network stopped and published its captures.
            print(f"interrupted: captures of the partial run are under {args.pcaps}/",
                  file=sys.stderr)
            return 130
        print(report.text(ladder=not args.quiet))
        ok &= report.passed
    return 0 if ok else 1


def run_up(args: argparse.Namespace) -> int:
    from emulator.topology import TopologyError, load_topology
    from nodes.session import serve

    try:
        topology = load_topology(args.topology)
    except TopologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(topology, Path(args.state_file), transport=args.transport,
                             pcap_root=Path(args.pcaps)))


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
    from emulator.capture.ladder import RENDERERS, LadderError, extract

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
    from emulator.capture.diff import first_difference
    from emulator.capture.ladder import LadderError, extract

    try:
        a = extract(*_capture_arg(args.a)[:1], keylog=_capture_arg(args.a)[1])
        b = extract(*_capture_arg(args.b)[:1], keylog=_capture_arg(args.b)[1])
    except LadderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    difference = first_difference(a, b)
    if difference is None:
        print(f"same message sequence ({len(a)} messages)")
        return 0
    print(difference)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--list-scenarios", action="store_true",
                        help="list the scenarios and what each expects")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run a topology with a scenario")
    run.add_argument("topology", nargs="?", default=str(DEFAULT_TOPOLOGY))
    run.add_argument("--scenario", default="default", help="a name, or 'all'")
    up = commands.add_parser("up", help="start a topology and keep it running")
    up.add_argument("topology", nargs="?", default=str(DEFAULT_TOPOLOGY))
    up.add_argument("--state-file", required=True, help="JSON written once every node is ready")
    for sub in (run, up):
        sub.add_argument("--transport", choices=["udp", "tcp", "tls"], default=None,
                         help="force every SIP link to this transport")
        sub.add_argument("--pcaps", default="pcaps", help="where run directories go")
    run.add_argument("-q", "--quiet", action="store_true", help="verdicts only, no ladder")
    ladder = commands.add_parser("ladder", help="message sequence chart of a capture")
    ladder.add_argument("capture", help="a .pcapng/.pcap file or a run directory")
    ladder.add_argument("--format", choices=["text", "mermaid", "svg", "html"], default="text")
    ladder.add_argument("-o", "--output", help="write to this file instead of stdout")
    diff = commands.add_parser("diff", help="compare two runs' message sequences")
    diff.add_argument("a")
    diff.add_argument("b")
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.list_scenarios:
        return list_scenarios()
    if args.command == "provision":
        return run_provision(args)
    if args.command == "demo":
        return run_demo(args)
    if args.command == "ladder":
        return run_ladder(args)
    if args.command == "diff":
        return run_diff(args)
    if args.command == "up":
        return run_up(args)
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])[:0]])
    return run_scenarios(args)


if __name__ == "__main__":
    sys.exit(main())

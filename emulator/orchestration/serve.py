"""A node process's life: build the role from its plan, serve, stop on SIGTERM or SIGINT.

Both ways a node process starts use it: forked by the zygote (``proc``
placement), or ``mcx-emulator node --plan FILE`` (a container, or by hand).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from emulator.process import run
from emulator.process import settle
from emulator.process import trim
from emulator.transport.udp import coalesce_reads
from nodes import Node
from nodes import NodePlan
from nodes import build

from .remote import serve_call

READY = "READY "
TRIM_INTERVAL = 30.0
"""Seconds between a node process's malloc_trim(3): after a burst (10,000 UEs migrating)
its heap's free pages go back to the kernel, and its RSS to what it holds (it stayed at
the burst's peak: 1.2 GB summed over the nodes, against 0.55 GB once trimmed)."""


async def serve_plan(plan: NodePlan, control: str | None = None) -> int:
    """Build, start, say the node serves, serve until SIGTERM or SIGINT, stop.

    With a supervisor's ``control`` socket, the node says so there and then
    answers the calls it receives on that link (:mod:`.remote`); without one,
    it prints ``READY <state>`` on stdout.  Returns the exit code.
    """
    coalesce_reads()  # this process is this node's alone (emulator.transport.udp)
    node = build(plan)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    link: asyncio.Task[None] | None = None
    trimming = asyncio.create_task(_trim_forever(), name="malloc_trim")
    try:
        await node.start()
        await node.ready()
        if control is None:
            print(READY + json.dumps(node.state()), flush=True)
        else:
            reader, writer = await asyncio.open_unix_connection(control)
            writer.write((json.dumps({"ready": plan.name, "state": node.state()}) +
                          "\n").encode())
            link = asyncio.create_task(_answer(node, reader, writer, stop))
        settle()  # after saying so: start-up's own time stays what it was
        await stop.wait()
    finally:
        trimming.cancel()
        if link is not None:
            link.cancel()
        await node.stop()
    return 0


async def _trim_forever() -> None:
    while True:
        await asyncio.sleep(TRIM_INTERVAL)
        await asyncio.to_thread(trim)


async def _answer(node: Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  stop: asyncio.Event) -> None:
    """Answer the supervisor's calls, one at a time, until it goes (then so do we)."""
    async for line in reader:
        answer = await serve_call(node, json.loads(line))
        writer.write((json.dumps(answer) + "\n").encode())
        await writer.drain()
    stop.set()


def run_node(plan_file: Path) -> int:
    """``mcx-emulator node --plan FILE``: says ``READY <state>`` on stdout once it serves;
    exit 2 for a plan that does not load."""
    try:
        plan = NodePlan.from_json(plan_file.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: {plan_file}: {exc}", file=sys.stderr)
        return 2
    return run(serve_plan(plan))

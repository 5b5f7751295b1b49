"""A node process's life: build the role from its plan, serve, stop on SIGTERM or SIGINT.

Both ways a node process starts use it: forked by the zygote (``proc``
placement), or ``mcx-emulator node --plan FILE`` (a container, or by hand).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodes import NodePlan
from nodes import build

READY = "READY "


async def serve_plan(plan: NodePlan, announce: Callable[[dict[str, Any]], None]) -> int:
    """Build, start, ``announce`` the node's state once it serves, serve until SIGTERM or
    SIGINT, stop.  Returns the exit code."""
    node = build(plan)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
        await node.ready()
        announce(node.state())
        await stop.wait()
    finally:
        await node.stop()
    return 0


def run_node(plan_file: Path) -> int:
    """``mcx-emulator node --plan FILE``: says ``READY <state>`` on stdout once it serves;
    exit 2 for a plan that does not load."""
    try:
        plan = NodePlan.from_json(plan_file.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: {plan_file}: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve_plan(plan, lambda state: print(READY + json.dumps(state),
                                                            flush=True)))

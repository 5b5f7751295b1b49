"""The runner: starts nodes from their plans and owns them until they stop.

Every node runs as one task of a single :class:`asyncio.TaskGroup`: the
task starts the node, reports it ready, waits to be told to stop, and
stops it.  The runner starts the plans in dependency order, waiting for
each node to be ready before the next starts, and stops them in reverse.
A node that fails to start, or fails later, fails the group, so its
error reaches whoever runs the topology (trio's rule: every task has an
owner, and exceptions always propagate).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Iterable
from contextlib import asynccontextmanager
from contextlib import suppress
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from nodes import Node
from nodes import NodePlan

logger = logging.getLogger(__name__)

Builder = Callable[[NodePlan], Node]


def start_order(plans: Iterable[NodePlan]) -> list[NodePlan]:
    """``plans`` with each after the plans its ``after`` names; otherwise in the given order.

    Raises ValueError for a name that is not planned, or a cycle.
    """
    pending = list(plans)
    names = {plan.name for plan in pending}
    for plan in pending:
        unknown = [name for name in plan.after if name not in names]
        if unknown:
            raise ValueError(f"{plan.name} starts after {unknown[0]}, which is not planned")
    ordered: list[NodePlan] = []
    placed: set[str] = set()
    while pending:
        ready = next((p for p in pending if placed.issuperset(p.after)), None)
        if ready is None:
            raise ValueError(f"the start order has a cycle among {[p.name for p in pending]}")
        pending.remove(ready)
        ordered.append(ready)
        placed.add(ready.name)
    return ordered


@dataclass
class _Running:
    node: Node
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class Runner:
    """The nodes of one topology, running; what :func:`run_nodes` yields."""

    nodes: dict[str, Node] = field(default_factory=dict)
    """Started nodes by name, in start order."""
    _running: list[_Running] = field(default_factory=list)

    def state(self) -> dict[str, dict[str, Any]]:
        """Every node's own ``state()``, by name."""
        return {name: node.state() for name, node in self.nodes.items()}

    async def _stop_all(self) -> None:
        while self._running:
            running = self._running.pop()
            running.stop.set()
            await asyncio.wait([running.task])


async def _serve(node: Node, started: asyncio.Future[None], stop: asyncio.Event) -> None:
    """One node's lifetime: start, ready, wait for the word to stop, stop."""
    try:
        await node.start()
        await node.ready()
    except BaseException as exc:
        if not started.done():
            started.set_exception(exc)
        with suppress(Exception):  # close whatever the failed start had opened
            await node.stop()
        raise
    started.set_result(None)
    try:
        await stop.wait()
    finally:
        await node.stop()


@asynccontextmanager
async def run_nodes(plans: Iterable[NodePlan], build: Builder) -> AsyncIterator[Runner]:
    """Start ``plans`` in dependency order; yield once all are ready; stop them in reverse."""
    order = start_order(plans)
    runner = Runner()
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as group:
        try:
            for plan in order:
                node = build(plan)
                started: asyncio.Future[None] = loop.create_future()
                stop = asyncio.Event()
                task = group.create_task(_serve(node, started, stop), name=plan.name)
                runner._running.append(_Running(node, stop, task))
                await started
                runner.nodes[plan.name] = node
                logger.debug("%s ready", plan.name)
            yield runner
        finally:
            await runner._stop_all()

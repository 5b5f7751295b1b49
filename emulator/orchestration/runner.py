"""The runner: starts nodes from their plans and owns them until they stop.

Every node runs as one task of a single :class:`asyncio.TaskGroup`: the
task starts the node, reports it ready, waits to be told to stop, and
stops it.  The runner starts the plans in dependency order, waiting for
each node to be ready before the next starts, and stops them in reverse.

Errors (trio's rule: every task has an owner, and exceptions propagate):

* a node that cannot start raises its error to whoever runs the topology,
  after the nodes already started are stopped;
* a node that cannot stop is logged, and the others still stop in order;
* cancelling the start-up (Ctrl-C) stops what has started and cancels;
* an in-process role has nothing to fail between start and stop; a task
  that does (the next placements' supervised processes) fails the group,
  which cancels the body and raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Iterable
from contextlib import asynccontextmanager
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


async def _serve(name: str, node: Node, started: asyncio.Future[None],
                 stop: asyncio.Event) -> None:
    """One node's lifetime: start, ready, wait for the word to stop, stop.

    A failed start is handed to the starter through ``started``; the node is
    stopped in any case, to close what a partial start opened.
    """
    try:
        try:
            await node.start()
            await node.ready()
        except Exception as exc:
            if not started.done():
                started.set_exception(exc)
            return
        if not started.done():  # the starter may have been cancelled meanwhile
            started.set_result(None)
        await stop.wait()
    finally:
        try:
            await node.stop()
        except Exception:
            logger.exception("%s: stop failed", name)


@asynccontextmanager
async def run_nodes(plans: Iterable[NodePlan], build: Builder) -> AsyncIterator[Runner]:
    """Start ``plans`` in dependency order; yield once all are ready; stop them in reverse."""
    order = start_order(plans)
    runner = Runner()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.TaskGroup() as group:
            try:
                for plan in order:
                    node = build(plan)
                    started: asyncio.Future[None] = loop.create_future()
                    stop = asyncio.Event()
                    task = group.create_task(_serve(plan.name, node, started, stop),
                                             name=plan.name)
                    runner._running.append(_Running(node, stop, task))
                    await started
                    runner.nodes[plan.name] = node
                    logger.debug("%s ready", plan.name)
                yield runner
            finally:
                await runner._stop_all()
    except BaseExceptionGroup as group_error:
        # The TaskGroup wraps even the body's own error; one error is raised as itself.
        if len(group_error.exceptions) == 1:
            raise group_error.exceptions[0] from None
        raise

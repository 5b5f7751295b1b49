"""The runner: starts nodes from their plans and owns them until they stop.

Every node runs as one task of a single :class:`asyncio.TaskGroup`: the
task starts the node, reports it ready, waits to be told to stop, and
stops it.  The runner starts the plans in dependency order: a node starts
once every node it needs (``after``) is ready, together with the others
that are ready to start; it stops them in reverse.

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
    plan: NodePlan
    node: Node
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class Runner:
    """The nodes of one topology, running; what :func:`run_nodes` yields."""

    nodes: dict[str, Node] = field(default_factory=dict)
    """Started nodes by name, in start order."""
    _running: list[_Running] = field(default_factory=list)
    _group: asyncio.TaskGroup | None = None
    _build: Builder | None = None
    _down: dict[str, tuple[int, NodePlan]] = field(default_factory=dict)
    """Killed nodes, with their place in the start order, until started again."""

    def state(self) -> dict[str, dict[str, Any]]:
        """Every node's own ``state()``, by name."""
        return {name: node.state() for name, node in self.nodes.items()}

    async def _start(self, plan: NodePlan) -> _Running:
        assert self._group is not None and self._build is not None
        node = self._build(plan)
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        task = self._group.create_task(_serve(plan.name, node, started, stop), name=plan.name)
        running = _Running(plan, node, stop, task)
        self._running.append(running)
        await started
        self.nodes[plan.name] = node
        logger.debug("%s ready", plan.name)
        return running

    async def _start_all(self, order: list[NodePlan]) -> None:
        """Start every plan as soon as the nodes it needs are ready (so the start takes
        as long as the longest chain of ``after``, not the sum of the nodes); on the first
        failure, stop starting and raise it."""
        ready = {plan.name: asyncio.Event() for plan in order}

        async def start(plan: NodePlan) -> None:
            for name in plan.after:
                await ready[name].wait()
            await self._start(plan)
            ready[plan.name].set()

        starting = [asyncio.ensure_future(start(plan)) for plan in order]
        try:
            done, _ = await asyncio.wait(starting, return_when=asyncio.FIRST_EXCEPTION)
        finally:  # a failure, or our own cancellation: nothing more starts
            for task in starting:
                task.cancel()
            await asyncio.gather(*starting, return_exceptions=True)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def kill(self, name: str) -> None:
        """End node ``name`` as a crash does: a process gets SIGKILL (an in-process role,
        which cannot be killed alone, is stopped).  It stays down until :meth:`start`."""
        running = self._take(name)
        kill = getattr(running.node, "kill", None)
        if kill is not None:
            kill(expected=True)
        else:
            running.stop.set()
        await asyncio.wait([running.task])

    async def start(self, name: str) -> Node:
        """Start node ``name`` again from its plan, after :meth:`kill`; returns the new node."""
        index, plan = self._down.pop(name, (None, None))
        if index is None or plan is None:
            raise KeyError(f"no node {name!r} is down")
        restarted = await self._start(plan)
        # Keep the start order, so the stop stays its reverse.
        self._running.remove(restarted)
        self._running.insert(min(index, len(self._running)), restarted)
        return restarted.node

    async def restart(self, name: str) -> Node:
        """Stop node ``name`` cleanly and start it again from its plan; returns the new node."""
        running = self._take(name)
        running.stop.set()
        await asyncio.wait([running.task])
        return await self.start(name)

    def _take(self, name: str) -> _Running:
        index = next((i for i, r in enumerate(self._running) if r.plan.name == name), None)
        if index is None:
            raise KeyError(f"no running node {name!r}")
        running = self._running.pop(index)
        self._down[name] = (index, running.plan)
        self.nodes.pop(name, None)
        return running

    async def _stop_all(self) -> None:
        while self._running:
            running = self._running.pop()
            running.stop.set()
            await asyncio.wait([running.task])


async def _serve(name: str, node: Node, started: asyncio.Future[None],
                 stop: asyncio.Event) -> None:
    """One node's lifetime: start, ready, wait for the word to stop, stop.

    A failed start is handed to the starter through ``started``; the node is
    stopped in any case, to close what a partial start opened.  A node that
    can end on its own (a process: ``exited()``) and does, fails this task.
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
        await _until_stopped(node, stop)
    finally:
        try:
            await node.stop()
        except Exception:
            logger.exception("%s: stop failed", name)


async def _until_stopped(node: Node, stop: asyncio.Event) -> None:
    exited = getattr(node, "exited", None)
    if exited is None:
        await stop.wait()
        return
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(exited())}
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    for waiter in done:
        waiter.result()  # a death nobody asked for raises here


@asynccontextmanager
async def run_nodes(plans: Iterable[NodePlan], build: Builder) -> AsyncIterator[Runner]:
    """Start ``plans`` in dependency order; yield once all are ready; stop them in reverse."""
    order = start_order(plans)
    try:
        async with asyncio.TaskGroup() as group:
            runner = Runner(_group=group, _build=build)
            try:
                await runner._start_all(order)
                yield runner
            finally:
                await runner._stop_all()
    except BaseExceptionGroup as group_error:
        # The TaskGroup wraps even the body's own error; one error is raised as itself.
        if len(group_error.exceptions) == 1:
            raise group_error.exceptions[0] from None
        raise

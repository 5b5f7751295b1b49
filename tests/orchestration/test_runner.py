"""The runner owns what it starts: dependency order, readiness, reverse stop, errors.

Driven with fake nodes, so the order of events is exact and nothing listens.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from emulator.orchestration import StepLog
from emulator.orchestration import run_nodes
from emulator.orchestration import start_order
from nodes import Listener
from nodes import NodePlan
from nodes import SipCoreOptions


def plan(name: str, after: tuple[str, ...] = ()) -> NodePlan:
    return NodePlan(name, "sip-core", "test", "127.0.0.1",
                    (Listener("udp", "127.0.0.1", 0),), SipCoreOptions("x"), after=after)


class FakeNode:
    """Records its life in ``log``; may fail to start or stop, or wait for a go to be ready."""

    def __init__(self, plan: NodePlan, log: list[str], *, fail: bool = False,
                 fail_stop: bool = False, go: asyncio.Event | None = None) -> None:
        self.plan = plan
        self.log = log
        self.fail = fail
        self.fail_stop = fail_stop
        self.go = go
        self.ready_event = asyncio.Event()

    async def start(self) -> None:
        self.log.append(f"start {self.plan.name}")
        if self.fail:
            raise OSError(f"{self.plan.name}: address in use")
        if self.go is not None:
            await self.go.wait()
        asyncio.get_running_loop().call_soon(self.ready_event.set)  # ready a little later

    async def ready(self) -> None:
        await self.ready_event.wait()
        self.log.append(f"ready {self.plan.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.plan.name}")
        if self.fail_stop:
            raise RuntimeError(f"{self.plan.name}: cannot stop")

    def state(self) -> dict[str, Any]:
        return {"name": self.plan.name}


def test_start_order_respects_after_and_keeps_the_given_order() -> None:
    plans = [plan("ue", after=("gw",)), plan("core"), plan("gw", after=("core",)), plan("idms")]
    assert [p.name for p in start_order(plans)] == ["core", "gw", "ue", "idms"]
    with pytest.raises(ValueError, match="cycle"):
        start_order([plan("a", after=("b",)), plan("b", after=("a",))])
    with pytest.raises(ValueError, match="not planned"):
        start_order([plan("a", after=("ghost",))])


async def test_each_node_is_ready_before_the_next_starts_and_stops_in_reverse() -> None:
    log: list[str] = []
    plans = [plan("core"), plan("gw", after=("core",)), plan("ue", after=("gw",))]
    async with run_nodes(plans, lambda p: FakeNode(p, log)) as runner:
        assert list(runner.nodes) == ["core", "gw", "ue"]
        assert runner.state() == {n: {"name": n} for n in ("core", "gw", "ue")}
        log.append("running")
    assert log == ["start core", "ready core", "start gw", "ready gw", "start ue", "ready ue",
                   "running", "stop ue", "stop gw", "stop core"]


async def test_nodes_that_need_nothing_of_each_other_start_together() -> None:
    log: list[str] = []
    plans = [plan("idms"), plan("core"), plan("gw", after=("core",))]
    async with run_nodes(plans, lambda p: FakeNode(p, log)):
        pass
    assert log[:4] == ["start idms", "start core", "ready idms", "ready core"]
    assert log.index("start gw") > log.index("ready core")


async def test_a_node_that_cannot_start_raises_its_error_after_stopping_the_others() -> None:
    log: list[str] = []
    plans = [plan("core"), plan("gw", after=("core",)), plan("ue", after=("gw",))]
    with pytest.raises(OSError, match="gw: address in use"):  # itself, not a group
        async with run_nodes(plans, lambda p: FakeNode(p, log, fail=p.name == "gw")):
            log.append("body ran")  # never: the topology did not come up
    assert "body ran" not in log and "start ue" not in log
    assert log[-2:] == ["stop gw", "stop core"]  # the half-started one too, then in reverse


async def test_a_failure_in_the_body_still_stops_every_node() -> None:
    log: list[str] = []
    with pytest.raises(KeyError, match="scenario bug"):
        async with run_nodes([plan("a"), plan("b")], lambda p: FakeNode(p, log)):
            raise KeyError("scenario bug")
    assert log[-2:] == ["stop b", "stop a"]


async def test_a_node_that_cannot_stop_does_not_stop_the_others_stopping_in_order(
        caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    plans = [plan("a"), plan("b"), plan("c")]
    async with run_nodes(plans, lambda p: FakeNode(p, log, fail_stop=p.name == "b")):
        pass
    assert log[-3:] == ["stop c", "stop b", "stop a"]
    assert "b: stop failed" in caplog.text


async def test_cancelling_the_start_up_stops_what_started_and_cancels() -> None:
    """Ctrl-C while a node is starting: that node and those before it are stopped, and the
    cancellation (not some other error) reaches the caller."""
    log: list[str] = []
    go = asyncio.Event()

    async def start_up() -> None:
        plans = [plan("a"), plan("b", after=("a",)), plan("c", after=("b",))]
        async with run_nodes(plans, lambda p: FakeNode(p, log, go=go if p.name == "b"
                                                       else None)):
            log.append("body ran")

    task = asyncio.create_task(start_up())
    while "start b" not in log:
        await asyncio.sleep(0)
    task.cancel()
    go.set()  # b finishes starting after its starter was cancelled
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "body ran" not in log and "start c" not in log
    assert log[-2:] == ["stop b", "stop a"]


def test_step_log_labels_by_time_and_measures_spans() -> None:
    steps = StepLog()
    steps.begin("attach: A", "clause 1", at=10.0)
    steps.begin("partner-register: R", "clause 2", at=10.5)
    steps.begin("private-call: C", at=10.75)
    assert steps.label(9.0) == ("", "")
    assert steps.label(10.2) == ("attach: A", "clause 1")
    assert steps.label(10.6) == ("partner-register: R", "clause 2")
    assert steps.span("attach:", "partner-register:") == pytest.approx(0.75)
    assert steps.span("attach:", "never:") is None

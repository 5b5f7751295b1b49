"""The node process's heap housekeeping (``emulator.process``): settling start-up out of the
collector's reach, and giving it back."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
import weakref

from emulator.process import SERVING_GEN0
from emulator.process import cpu_seconds
from emulator.process import cpu_seconds_tree
from emulator.process import memory
from emulator.process import settle
from emulator.process import settled


class _Node:
    """Stands for start-up state: a cycle, which only the collector can free."""

    def __init__(self) -> None:
        self.me = self


def test_settled_freezes_what_exists_and_gives_it_back_at_the_end() -> None:
    start_up = _Node()
    gone = weakref.ref(start_up)
    try:
        with settled():
            assert gc.get_freeze_count() > 0
            # Frozen: a full collection neither walks it nor frees it.
            assert not any(o is start_up for o in gc.get_objects())
            made_after = _Node()
            assert gc.is_tracked(made_after) and any(o is made_after for o in gc.get_objects())
            del start_up
            gc.collect()
            assert gone() is not None  # held in the permanent generation meanwhile
        # Given back: the cycle dropped while frozen is garbage the collector now frees.
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


def test_settled_nested_freezes_more_and_only_the_outermost_gives_it_back() -> None:
    """A load's stages settle inside the session's block: ending a stage must not hand
    the session's frozen start-up back to the collector."""
    try:
        with settled():
            outer = gc.get_freeze_count()
            made_between = _Node()
            with settled():
                assert not any(o is made_between for o in gc.get_objects())  # frozen too
                assert gc.get_freeze_count() >= outer
            assert gc.get_freeze_count() >= outer > 0  # still frozen after the inner block
            assert not any(o is made_between for o in gc.get_objects())
        assert gc.get_freeze_count() == 0
        assert any(o is made_between for o in gc.get_objects())
    finally:
        gc.unfreeze()


def test_a_serving_process_collects_its_young_generation_less_often_a_load_does_not() -> None:
    """``settle`` (a node process once ready, ``up`` inproc) freezes start-up and collects
    the youngest generation every SERVING_GEN0 allocations; a ``settled`` block (the load
    generator, a test) freezes only, leaving the thresholds as they were."""
    thresholds = gc.get_threshold()
    try:
        with settled():
            assert gc.get_threshold() == thresholds
        settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (SERVING_GEN0, *thresholds[1:])
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def test_memory_reports_what_a_full_collection_walks_and_its_pause() -> None:
    with settled():
        frozen = memory()
    thawed = memory()
    assert 0 <= frozen["tracked"] < thawed["tracked"]
    assert frozen["gc_ms"] >= 0 and thawed["gc_ms"] >= 0
    assert thawed["blocks"] > 0


_BUSY = """
import sys, time
open("/proc/self/comm", "w").write("mcx) busy (1")  # a name that /proc/<pid>/stat wraps
while time.process_time() < 0.2:
    pass
print(time.process_time(), flush=True)
sys.stdin.read()
"""


def test_cpu_seconds_reads_what_a_process_has_used_and_none_once_it_is_gone() -> None:
    """What ``load`` divides among the migrations (its CPU line), per process."""
    mine = cpu_seconds()
    assert mine is not None
    while time.process_time() < mine + 0.05:
        pass
    later = cpu_seconds()
    assert later is not None and later >= mine + 0.05
    child = subprocess.Popen([sys.executable, "-c", _BUSY], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        used = float(child.stdout.readline())  # by its own count, busy and now waiting
        seen = cpu_seconds(child.pid)
        # /proc counts in clock ticks (10 ms): at most one short of the child's own count.
        assert seen is not None and used - 0.011 <= seen <= used + 0.5
    finally:
        child.communicate("")
    assert cpu_seconds(child.pid) is None  # reaped: gone


_PARENT = f"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {_BUSY!r}], stdin=subprocess.PIPE)
print(child.pid, flush=True)
sys.stdin.read()
child.communicate(b"")
"""


def test_cpu_seconds_tree_counts_a_process_and_those_it_started() -> None:
    """What migration_path.py reads of Kamailio, which forks its workers."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        # Until /proc shows the child's busy part (it then waits on its input).
        while (seen := cpu_seconds(child)) is None or seen < 0.19:
            assert seen is not None, "the child ended early"
        own, mine = cpu_seconds(parent.pid), cpu_seconds(child)
        tree = cpu_seconds_tree(parent.pid)
        assert own is not None and mine is not None and tree is not None
        assert tree >= own + mine  # read after both, and CPU time only grows
        assert cpu_seconds_tree(child) == cpu_seconds(child)  # no children of its own
    finally:
        parent.communicate("")
    assert cpu_seconds_tree(parent.pid) is None

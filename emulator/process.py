"""Child-process hygiene shared by everything the supervisor starts."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import signal
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Coroutine
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from typing import TypeVar

import setproctitle

_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (prctl(2)).

    Called in a child (or a ``preexec_fn``): a supervisor that dies, even by
    SIGKILL, leaves no orphan behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


_PR_SET_NAME = 15


def set_title(title: str) -> None:
    """Name this process ``title`` in ``ps`` and ``pgrep -f`` (its command line) and, cut to
    15 bytes, in ``pgrep`` and ``top`` (its comm): a run's processes carry its prefix."""
    setproctitle.setproctitle(title)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(title.encode()[:15]), 0, 0, 0)


_CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move the calling thread (a freshly forked node process: the process, before it
    opens any socket) into the named network namespace (``ip netns add`` made it)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        setns(fd, name)
    finally:
        os.close(fd)


def setns(fd: int, name: str) -> None:
    """setns(2): the calling thread into the network namespace open as ``fd``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns into {name}: {os.strerror(error)}")


EVENT_LOOP_ENV = "MCX_EVENT_LOOP"
"""``uvloop`` runs the event loops of this process and of the node processes it starts
(inherited) on uvloop; unset or anything else, on asyncio's own loop.  Opt-in: uvloop
carried the migration path from 750 to 1,000 REGISTER/s (``benchmarks/migration_path.py``)
but stops accepting TCP connections under a descriptor flood where asyncio's loop keeps
serving (``tests/orchestration/test_isolation.py``), so it is not the default yet."""


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on the loop :data:`EVENT_LOOP_ENV` chooses."""
    if os.environ.get(EVENT_LOOP_ENV) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def trim() -> None:
    """Hand the C allocator's free pages back to the kernel (malloc_trim(3)); nothing where
    the C library is not glibc.  ctypes lets go of the GIL meanwhile: on a thread of its own
    it stalls no event loop (a few ms idle, ~30 ms after freeing 300 MB)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


SERVING_GEN0 = 10_000
"""Allocations (net of frees) between two collections of the youngest generation in a
process that serves traffic, where CPython's default is 700.  A REGISTER through the
migration path makes several hundred tracked objects in each node, nearly all freed
with the message, so at 700 a node collected every one or two REGISTERs, each time
walking what the last ones left live (~0.6 µs an object: a large heap, cold caches):
5-7 % of a node's CPU at 2,500 REGISTER/s.  At 10,000 a collection walks more, about
14 times as rarely: 3-4 % (``benchmarks/migration_path.py``, ``gc.callbacks``).  The
garbage in cycles waits that much longer, and a pause is longer: ~15-25 ms of wall time at
3,500 REGISTER/s, which overload control's interval (200 ms) rides out.  Project-defined."""


def settle() -> None:
    """Start-up is over and the process serves from now on (a node process; ``up`` in
    ``inproc``): :func:`_freeze` what start-up built, and collect the youngest generation
    every :data:`SERVING_GEN0` allocations."""
    _freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(SERVING_GEN0, middle, oldest)


def _freeze() -> None:
    """Start-up's garbage is collected once, and what it built (the plan, keys,
    provisioned users, listeners, the code's caches) moves to the permanent generation
    (gc.freeze).  Held for the node's life, it is never scanned again: a full collection
    walks only what the traffic made, and is that much shorter a pause."""
    gc.collect()
    gc.freeze()


_settled_depth = 0
"""How many :func:`settled` blocks are open: the collector's frozen set is one per process."""


@contextmanager
def settled() -> Iterator[None]:
    """:func:`_freeze` for a while, thresholds untouched: what was frozen goes back to the
    collector at the end, so a process that goes on (a test run, the load generator) does
    not keep it past its use.  Nested, an inner block freezes what was made since the
    outer one began, and only the outermost gives it all back (``gc.unfreeze`` knows no
    nesting)."""
    global _settled_depth
    _freeze()
    _settled_depth += 1
    try:
        yield
    finally:
        _settled_depth -= 1
        if _settled_depth == 0:
            gc.unfreeze()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (proc(5): field 3 first),
    which may hold spaces and parentheses; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # fields 14 and 15


def cpu_seconds(pid: int | None = None) -> float | None:
    """User and system CPU seconds process ``pid`` (None: this one) has used, every thread
    counted; None once it is gone."""
    if pid is None:
        return time.process_time()
    fields = _stat(pid)
    return None if fields is None else _cpu(fields)


def cpu_seconds_tree(pid: int) -> float | None:
    """:func:`cpu_seconds` of ``pid`` and of every live process under it: a server that
    forks its workers (Kamailio) counted whole.  None once ``pid`` is gone."""
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields is not None:  # else not a process, or gone meanwhile
            children.setdefault(int(fields[1]), []).append(int(entry))  # field 4, PPID
            used[int(entry)] = _cpu(fields)
    if pid not in used:
        return None
    total, waiting = used[pid], list(children.get(pid, ()))
    while waiting:
        child = waiting.pop()
        total += used[child]
        waiting.extend(children.get(child, ()))
    return total


def memory(*, census: int = 0) -> dict[str, Any]:
    """This process's memory, after a full garbage collection and after handing the C
    allocator's free pages back to the kernel (malloc_trim(3)): what it holds for live
    objects, not what a past burst left in its free lists.

    ``rss_kib`` and ``pss_kib`` from /proc (PSS shares pages with the zygote a node was
    forked from fairly); ``blocks``, Python's allocated blocks; ``tracked``, the objects a
    full collection walks, and ``gc_ms``, how long this one took; with ``census`` > 0, the
    ``census`` most numerous object types the collector tracks and, when tracemalloc
    traces (``PYTHONTRACEMALLOC``), the ``census`` source lines holding the most bytes
    (at the first census) or grown the most since it (at later ones).
    """
    started = time.perf_counter()
    gc.collect()
    pause = time.perf_counter() - started
    tracked = len(gc.get_objects())  # what a full collection walks (not the frozen)
    trim()
    report: dict[str, Any] = {"blocks": sys.getallocatedblocks(), "tracked": tracked,
                              "gc_ms": round(pause * 1000, 1)}
    try:
        with open("/proc/self/smaps_rollup") as rollup:
            for line in rollup:
                key, _, value = line.partition(":")
                if key in ("Rss", "Pss"):
                    report[f"{key.lower()}_kib"] = int(value.split()[0])
    except OSError:
        pass
    if census > 0:
        counts = Counter(type(o).__qualname__ for o in gc.get_objects())
        report["census"] = dict(counts.most_common(census))
        if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC=n: where the live bytes were made
            global _mark
            snapshot = tracemalloc.take_snapshot()
            top: list[Any]
            if _mark is None:  # the first report: what is held, and the mark for the next
                top = snapshot.statistics("lineno")
                _mark = snapshot
            else:  # later ones: what grew since the first
                top = snapshot.compare_to(_mark, "lineno")
            report["allocated"] = {
                f"{s.traceback[0].filename.rsplit('/', 2)[-1]}:{s.traceback[0].lineno}":
                getattr(s, "size_diff", s.size) for s in top[:census]}
    return report


_mark: Any = None
"""The tracemalloc snapshot of this process's first census (see :func:`memory`)."""

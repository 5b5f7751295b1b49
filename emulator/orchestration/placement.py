"""Where a node runs: in this process, or in its own OS process started from its plan.

``inproc``
    every role is an object in the caller's event loop (the fast path for tests).
``proc``
    every node, UEs included, is its own OS process, forked by the run's zygote
    (:mod:`.zygote`) and serving its plan.

:class:`ProcessNode` is a node process's handle, a :class:`~nodes.Node` like
any role: ``start`` asks the zygote to fork, ``ready`` waits for the node to
say it serves (on its control link), ``stop`` sends SIGTERM (then SIGKILL),
``exited`` turns an unexpected death into :class:`NodeDied` for the runner,
and ``call`` runs one of the node's remote calls (:mod:`.remote`).
:class:`RemoteUe` is a UE driven that way, with the in-process UE's methods.
:class:`Zygote` owns the zygote process and the control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from emulator.transport.base import Tap
from nodes import ExecOptions
from nodes import Node
from nodes import NodePlan
from nodes import UserEquipment
from nodes import build

from .execnode import ExecNode
from .remote import RemoteError
from .remote import decode_answer
from .remote import encode_args
from .supervision import READY_TIMEOUT
from .supervision import STOP_TIMEOUT
from .supervision import NodeDied
from .zygote import fork as fork_zygote

logger = logging.getLogger(__name__)

PLACEMENTS = ("inproc", "proc", "netns")
LINK_LIMIT = 4 * 2**20
"""Longest line on a node's control link (a call's answer, with the node's state)."""


@dataclass
class _Child:
    """What the supervisor hears of one node process, and its control link."""

    pid: asyncio.Future[int]
    ready: asyncio.Future[dict[str, Any]]
    exited: asyncio.Future[int]
    writer: asyncio.StreamWriter | None = None
    answers: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    calls: int = 0


class Zygote:
    """The run's zygote process and the control socket its node processes report on.

    :meth:`spawn` starts it as an interpreter of its own, which imports the roles (the
    Python API: its event loop, and maybe other threads, run already); :meth:`fork`
    forks it from the calling process before any loop or thread exists (the command
    line: ready at once).  Either way :meth:`start` then hears it in the loop that
    runs the nodes, and :meth:`stop` ends it.
    """

    def __init__(self, pid: int, requests: int, replies: int,
                 socket_dir: tempfile.TemporaryDirectory[str], prefix: str) -> None:
        self.pid = pid
        self.prefix = prefix
        """The run's prefix, which every node process's name starts with."""
        self._requests = requests
        self._replies = replies
        self._socket_dir = socket_dir
        self._children: dict[str, _Child] = {}
        self._writer: asyncio.WriteTransport | None = None
        self._server: asyncio.base_events.Server | None = None
        self._reader: asyncio.Task[None] | None = None
        self._exited: asyncio.Future[int] | None = None

    @property
    def control(self) -> str:
        return os.path.join(self._socket_dir.name, "control")

    @staticmethod
    def _socket_directory(prefix: str) -> tempfile.TemporaryDirectory[str]:
        # In the temporary directory: AF_UNIX paths are limited to 108 bytes, run
        # directories are not.  Named with the run's prefix, so that `clean` can remove it
        # once the run is gone, should the run have been killed (SIGKILL) before it could.
        return tempfile.TemporaryDirectory(prefix=f"{prefix}zygote-")

    @classmethod
    def spawn(cls, prefix: str) -> Zygote:
        socket_dir = cls._socket_directory(prefix)
        control = os.path.join(socket_dir.name, "control")
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        try:
            # posix_spawn, not fork + exec: safe in a process whose other threads run. The
            # zygote asks to die with us itself, first thing.
            pid = os.posix_spawn(
                sys.executable, [sys.executable, "-m", "emulator.orchestration.zygote",
                                 control, f"{prefix}zygote"], os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, requests_r, 0),
                              (os.POSIX_SPAWN_DUP2, replies_w, 1)], setsid=True)
        except BaseException:
            for fd in (requests_w, replies_r):
                os.close(fd)
            socket_dir.cleanup()
            raise
        finally:
            os.close(requests_r)
            os.close(replies_w)
        return cls(pid, requests_w, replies_r, socket_dir, prefix)

    @classmethod
    def fork(cls, prefix: str) -> Zygote:
        socket_dir = cls._socket_directory(prefix)
        try:
            pid, requests, replies = fork_zygote(os.path.join(socket_dir.name, "control"),
                                                 f"{prefix}zygote")
        except BaseException:
            socket_dir.cleanup()
            raise
        return cls(pid, requests, replies, socket_dir, prefix)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._watch()
        self._server = await asyncio.start_unix_server(self._on_link, self.control,
                                                       limit=LINK_LIMIT)
        self._writer, _ = await loop.connect_write_pipe(
            asyncio.Protocol, open(self._requests, "wb", buffering=0))
        replies = asyncio.StreamReader(limit=LINK_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(replies),
                                     open(self._replies, "rb", buffering=0))
        self._reader = asyncio.create_task(self._read(replies), name="zygote reader")

    def _watch(self) -> asyncio.Future[int]:
        """A future of the zygote's exit code, from a pidfd (no thread waits for it)."""
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = exited = loop.create_future()
            pidfd = os.pidfd_open(self.pid)

            def reap() -> None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
                try:
                    _, status = os.waitpid(self.pid, 0)
                    exited.set_result(os.waitstatus_to_exitcode(status))
                except ChildProcessError:  # reaped by someone else: the code is lost
                    exited.set_result(-1)

            loop.add_reader(pidfd, reap)
        return self._exited

    def fork_node(self, plan: NodePlan, log: Path, netns: str | None = None) -> _Child:
        """Ask for a node process serving ``plan``; returns what to wait on."""
        writer = self._writer
        assert writer is not None, "start() first"
        loop = asyncio.get_running_loop()
        child = _Child(loop.create_future(), loop.create_future(), loop.create_future())
        self._children[plan.name] = child
        request = {"fork": plan.name, "plan": plan.to_dict(), "log": str(log), "netns": netns,
                   "title": f"{self.prefix}{plan.name}"}
        writer.write((json.dumps(request) + "\n").encode())
        return child

    async def stop(self) -> None:
        """Close the zygote (it ends its remaining children) and the control socket."""
        exited = self._watch()
        if self._writer is not None:
            self._writer.close()  # the end of its requests: it ends its children, then itself
        elif self._requests >= 0:
            os.close(self._requests)
            os.close(self._replies)
        self._requests = -1
        try:
            await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await exited
        if self._reader is not None:
            await self._reader
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._socket_dir.cleanup()

    async def _read(self, replies: asyncio.StreamReader) -> None:
        """Dispatch the zygote's replies to the children they concern."""
        async for line in replies:
            message = json.loads(line)
            child = self._children.get(message.get("started") or message.get("exited") or "")
            if "started" in message and child is not None:
                child.pid.set_result(message["pid"])
            elif "exited" in message and child is not None and not child.exited.done():
                child.exited.set_result(message["code"])
        for child in self._children.values():  # the zygote is gone, and its children with it
            for future in (child.pid, child.exited):
                if not future.done():
                    future.set_exception(NodeDied("the zygote ended"))

    async def _on_link(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        """A node process says it serves, then holds the link open for its life."""
        child = None
        try:
            line = await reader.readline()
            if line:
                message = json.loads(line)
                child = self._children.get(message.get("ready", ""))
                if child is not None and not child.ready.done():
                    child.writer = writer
                    child.ready.set_result(message.get("state", {}))
            async for line in reader:  # answers to calls, until the process is gone
                answer = json.loads(line)
                waiting = child.answers.pop(answer.get("id"), None) if child else None
                if waiting is not None and not waiting.done():
                    waiting.set_result(answer)
        finally:
            if child is not None:
                child.writer = None
                for waiting in child.answers.values():
                    if not waiting.done():
                        waiting.set_exception(NodeDied("the node's control link ended"))
                child.answers.clear()
            writer.close()


class ProcessNode:
    """A node in its own OS process, forked by the zygote to serve its plan."""

    def __init__(self, plan: NodePlan, zygote: Zygote, run_dir: Path,
                 netns: str | None = None) -> None:
        self.plan = plan
        self.zygote = zygote
        self.netns = netns
        """The network namespace the node runs in (netns placement)."""
        self.log_file = run_dir / "logs" / f"{plan.name}.log"
        self.pid: int | None = None
        self._child: _Child | None = None
        self._state: dict[str, Any] = {}
        self._stopping = False

    def __repr__(self) -> str:
        return f"<ProcessNode {self.plan.name} pid={self.pid}>"

    async def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self._child = self.zygote.fork_node(self.plan, self.log_file, self.netns)
        self.pid = await self._child.pid

    async def ready(self) -> None:
        child = self._child
        assert child is not None
        waits = {asyncio.ensure_future(asyncio.shield(child.ready)),
                 asyncio.ensure_future(asyncio.shield(child.exited))}
        try:
            done, _ = await asyncio.wait(waits, timeout=READY_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if not done:
            raise NodeDied(f"{self.plan.name} did not serve in {READY_TIMEOUT:.0f} s "
                           f"(log: {self.log_file})")
        if not child.ready.done():
            raise NodeDied(f"{self.plan.name} failed to start (exit {child.exited.result()}): "
                           f"{self._last_log_line()}  (log: {self.log_file})")
        self._state = {**child.ready.result(), "pid": self.pid, "namespace": self.netns}

    async def exited(self) -> None:
        """Returns only if the process ends without :meth:`stop`: then raises NodeDied."""
        assert self._child is not None
        code = await asyncio.shield(self._child.exited)
        if not self._stopping:
            raise NodeDied(f"{self.plan.name} (pid {self.pid}) exited with {code} "
                           f"(log: {self.log_file})")

    async def stop(self) -> None:
        child = self._child
        if child is None or self.pid is None or child.exited.done():
            return
        self._stopping = True
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(child.exited), STOP_TIMEOUT)
        except TimeoutError:
            logger.warning("%s did not stop in %.0f s: killed", self.plan.name, STOP_TIMEOUT)
            self._signal(signal.SIGKILL)
            await asyncio.shield(child.exited)

    def kill(self, *, expected: bool = False) -> None:
        """SIGKILL, as a fault.  Unless ``expected`` (the runner's kill), the runner sees an
        unexpected death and fails the run."""
        self._stopping = expected
        self._signal(signal.SIGKILL)

    async def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send one call on the node's control link; returns its answer (see .remote)."""
        child = self._child
        if child is None or child.writer is None:
            raise NodeDied(f"{self.plan.name} has no control link (not serving)")
        child.calls += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        child.answers[child.calls] = future
        child.writer.write((json.dumps({"id": child.calls, "call": name, "args": args}) +
                            "\n").encode())
        await child.writer.drain()
        answer = await future
        self._state = {**answer.get("state", self._state), "pid": self.pid,
                       "namespace": self.netns}
        if "error" in answer:
            raise RemoteError(f"{self.plan.name}: {answer['error']}")
        return answer

    def _signal(self, sig: int) -> None:
        # The zygote has not reaped it until it reports its exit, so the pid is still ours.
        if self.pid is not None and self._child is not None and not self._child.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def state(self) -> dict[str, Any]:
        return dict(self._state)

    def _last_log_line(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""


def builder(placement: str, tap: Tap | None, zygote: Zygote | None, run_dir: Path,
            namespaces: Callable[[str], str] | None = None, prefix: str = ""
            ) -> Callable[[NodePlan], Node]:
    """How the runner makes each node for ``placement`` (``proc`` and ``netns`` need the
    zygote; ``netns`` the namespace of each node, by name).  An outside program
    (``kind: exec``) is its own process in every placement."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}")
    def make(plan: NodePlan) -> Node:
        netns = namespaces(plan.name) if namespaces is not None else None
        if isinstance(plan.options, ExecOptions):
            return ExecNode(plan, run_dir, netns, f"{prefix}{plan.name}" if prefix else None)
        if placement == "inproc":
            return build(plan, tap=tap)
        assert zygote is not None
        kind = RemoteUe if plan.role == "ue" else ProcessNode
        return kind(plan, zygote, run_dir, netns)

    return make


class RemoteUe(ProcessNode):
    """A UE in its own process, with the in-process UE's procedures (same names, same
    arguments, same results), each one a call on its control link."""

    def __getattr__(self, name: str) -> Any:
        if name not in UserEquipment.REMOTE_CALLS:
            raise AttributeError(name)
        method = getattr(UserEquipment, name)

        async def remote(*args: Any, **kwargs: Any) -> Any:
            answer = await self.call(name, encode_args(method, args, kwargs))
            return decode_answer(method, answer)

        return remote

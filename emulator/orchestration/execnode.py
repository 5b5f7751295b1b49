"""Outside programs as nodes (the topology's ``kind: exec``): Kamailio, sipp, anything.

:class:`ExecNode` is a :class:`~nodes.Node` like the others, in every placement: ``start``
runs the plan's command on the node's address (in netns placement, inside the node's
namespace), in a process group of its own that dies with the supervisor; ``ready``
probes the node's port until it answers (containerlab's and Docker's health checks do
the same: the emulator cannot know when someone else's program serves); ``stop`` sends
SIGTERM to the group, then SIGKILL; ``kill`` is the SIGKILL fault.  Its output goes to
``logs/<node>.log`` in the run directory.

The probe, per the plan: ``tcp``, a connection is accepted; ``udp``, a SIP OPTIONS is
answered (RFC 3261 §11: any response shows a SIP server is there).  In netns placement
the probe runs on a thread of its own that has entered the node's namespace (setns(2)
moves only the calling thread), so it sees the node as its neighbours do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from emulator.process import die_with_parent
from emulator.process import enter_netns
from nodes import ExecOptions
from nodes import NodePlan

from .supervision import READY_TIMEOUT
from .supervision import STOP_TIMEOUT
from .supervision import NodeDied

logger = logging.getLogger(__name__)

PROBE_INTERVAL = (0.02, 0.5)
"""The first and the longest wait between probes: quick for a fast program, patient for a
slow one, never busy."""


class ExecNode:
    """An outside program, run from its plan."""

    def __init__(self, plan: NodePlan, run_dir: Path, netns: str | None = None,
                 title: str | None = None) -> None:
        assert isinstance(plan.options, ExecOptions)
        self.plan = plan
        self.title = title
        """argv[0] of the program (its name in ``ps``, with the run's prefix); the
        executable is still the command's."""
        self.options = plan.options
        self.netns = netns
        self.log_file = run_dir / "logs" / f"{plan.name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self._expected = False

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"<ExecNode {self.plan.name} pid={pid} {self.options.command[0]}>"

    async def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        netns = self.netns

        def child() -> None:
            die_with_parent()
            if netns is not None:
                enter_netns(netns)

        with self.log_file.open("ab") as log:
            try:
                executable, *args = self.options.command
                self.process = await asyncio.create_subprocess_exec(
                    self.title or executable, *args, executable=shutil.which(executable)
                    or executable, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                    preexec_fn=child)
            except OSError as exc:
                raise NodeDied(f"{self.plan.name}: cannot run {self.options.command[0]!r}: "
                               f"{exc.strerror}") from None
        self._expected = False

    async def ready(self) -> None:
        process = self.process
        assert process is not None
        given_up = threading.Event()
        probe = asyncio.ensure_future(asyncio.to_thread(
            _probe_until, self.plan.host, self.options.probe_port, self.options.probe,
            self.netns, time.monotonic() + READY_TIMEOUT, given_up))
        exited = asyncio.ensure_future(process.wait())
        try:
            await asyncio.wait({probe, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            given_up.set()  # the probing thread ends at its next wait
        if process.returncode is not None:
            raise NodeDied(f"{self.plan.name} ({self.options.command[0]}) exited with "
                           f"{process.returncode} before it served: {self._last_log_line()} "
                           f"(log: {self.log_file})")
        if not probe.result():
            raise NodeDied(f"{self.plan.name} did not answer on {self.options.probe}/"
                           f"{self.options.probe_port} in {READY_TIMEOUT:.0f} s "
                           f"(log: {self.log_file})")

    async def exited(self) -> None:
        """Returns only if the program ends without :meth:`stop`: then raises NodeDied."""
        assert self.process is not None
        code = await self.process.wait()
        if not self._expected:
            raise NodeDied(f"{self.plan.name} ({self.options.command[0]}, pid "
                           f"{self.process.pid}) exited with {code} (log: {self.log_file})")

    async def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            self._expected = True
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                logger.warning("%s did not stop in %.0f s: killed", self.plan.name,
                               STOP_TIMEOUT)
                self._signal(signal.SIGKILL)
                await process.wait()
        # Whatever the program forked and left behind goes with it: the group is ours (a
        # group id is not handed out again while a member lives).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def kill(self, *, expected: bool = False) -> None:
        """SIGKILL to the program and everything it started, as a fault."""
        self._expected = expected
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        # Its own process group (start_new_session): the program's children go with it.
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def state(self) -> dict[str, Any]:
        return {"name": self.plan.name, "role": self.plan.role, "system": self.plan.system,
                "listeners": [{"protocol": item.protocol, "host": item.host,
                               "port": item.port} for item in self.plan.listeners],
                "pid": self.process.pid if self.process else None, "namespace": self.netns,
                "command": list(self.options.command)}

    def _last_log_line(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""


def _probe_until(host: str, port: int, transport: str, netns: str | None,
                 deadline: float, given_up: threading.Event) -> bool:
    """Probe until the port answers (True), the deadline passes or ``given_up`` is set
    (False); on a thread."""
    if netns is not None:
        result: list[bool] = []

        def inside() -> None:
            enter_netns(netns)
            result.append(_probe_until(host, port, transport, None, deadline, given_up))

        # A thread of its own: setns(2) would otherwise leave a pool thread in the namespace.
        thread = threading.Thread(target=inside, daemon=True)
        thread.start()
        thread.join()
        return bool(result and result[0])
    wait = PROBE_INTERVAL[0]
    while time.monotonic() < deadline and not given_up.is_set():
        if _answers(host, port, transport, timeout=wait):
            return True
        given_up.wait(wait)
        wait = min(wait * 2, PROBE_INTERVAL[1])
    return False


def _answers(host: str, port: int, transport: str, *, timeout: float) -> bool:
    if transport == "tcp":
        try:
            with socket.create_connection((host, port), timeout=max(timeout, 0.2)):
                return True
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect((host, port))
            probe.send(_options(host, port, probe.getsockname()))
            return probe.recv(65535).startswith(b"SIP/2.0 ")
        except OSError:  # refused (nothing bound yet) or no answer in time
            return False


def _options(host: str, port: int, local: tuple[str, int]) -> bytes:
    branch = f"z9hG4bK-probe-{uuid.uuid4().hex[:16]}"
    return (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@{local[0]}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@{local[0]}\r\n"
            f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


__all__ = ["ExecNode"]

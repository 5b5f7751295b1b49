"""Kernel capture with tcpdump on the loopback interface (root only).

In-process scapy sniffing costs 30-40x in throughput and duplicates packets on
``lo`` (tools notes §4); tcpdump captures everything at full speed.  The
filter names every address of the run, so other loopback traffic on the
machine stays out.  The writer is stopped with SIGINT, so the file is
finalised (a killed writer leaves a truncated packet that makes tshark exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Iterable
from pathlib import Path

from emulator.process import die_with_parent


async def settle(path: Path, *, quiet: float = 0.15, limit: float = 3.0) -> None:
    """Wait until tcpdump has stopped writing (the file unchanged for ``quiet`` seconds).

    Packets reach tcpdump a little after they cross ``lo``; a loaded machine
    makes "a little" longer, and SIGINT drops whatever was not yet written.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last, since = -1, loop.time()
    while loop.time() < deadline:
        size = path.stat().st_size if path.exists() else 0
        if size != last:
            last, since = size, loop.time()
        elif loop.time() - since >= quiet:
            return
        await asyncio.sleep(0.02)


def kernel_capture_available() -> bool:
    return os.geteuid() == 0 and shutil.which("tcpdump") is not None


def bpf_filter(hosts: Iterable[str], networks: Iterable[str] = ()) -> str:
    """Packets of the run's own addresses; 127.0.0.1, which no node uses, stays out."""
    terms = [f"host {h}" for h in sorted(set(hosts))] + [f"net {n}" for n in networks]
    return f"({' or '.join(terms)}) and not host 127.0.0.1"


class KernelCapture:
    """tcpdump writing every packet of the run's addresses to ``path``."""

    def __init__(self, path: Path, hosts: Iterable[str], networks: Iterable[str] = (),
                 interface: str = "lo", namespace: str | None = None,
                 buffer_kib: int = 65536) -> None:
        self.path = path
        # On a bridge, ARP is the switch's business (and proxy ARP looks like an address
        # conflict to Wireshark): IP only.
        self.filter = bpf_filter(hosts, networks) if namespace is None else \
            f"ip and {bpf_filter(hosts, networks)}"
        self.interface = interface
        self.namespace = namespace
        """Capture in this network namespace (a netns run's switch, on one bridge)."""
        self.buffer_kib = buffer_kib
        self._process: asyncio.subprocess.Process | None = None
        self.summary = ""
        """tcpdump's closing statistics (packets captured, dropped by kernel)."""

    async def start(self) -> None:
        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            raise RuntimeError("tcpdump not found (Debian package tcpdump)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        inside = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        self._process = await asyncio.create_subprocess_exec(
            *inside,
            # Snap length = lo's MTU, not tcpdump's 256 kB default: each ring slot is
            # sized by it, and a 2 MB ring of 256 kB slots drops bursts on lo.
            # -Z root: dropping to user tcpdump would clear the parent-death signal.
            tcpdump, "-i", self.interface, "-U", "--immediate-mode", "-s", "65535", "-Z", "root",
            "-B", str(self.buffer_kib), "-n", "-w", str(self.path),
            self.filter, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent)  # a killed supervisor leaves no tcpdump running
        assert self._process.stderr is not None
        # tcpdump says "listening on lo" once the socket is open: nothing is missed after.
        try:
            line = await asyncio.wait_for(self._process.stderr.readline(), 10)
        except TimeoutError:
            await self.stop()
            raise RuntimeError("tcpdump did not start listening") from None
        if b"listening" not in line:
            rest = await self._process.stderr.read()
            await self.stop()
            raise RuntimeError(f"tcpdump failed: {(line + rest).decode(errors='replace')}")

    @property
    def pid(self) -> int | None:
        """tcpdump's process id while it runs (``ip netns exec`` execs it: the same)."""
        return self._process.pid if self._process is not None else None

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        await settle(self.path)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        if process.stderr is not None:
            self.summary = " ".join((await process.stderr.read()).decode(errors="replace").split())

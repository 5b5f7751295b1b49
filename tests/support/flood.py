"""Idle TCP connections by the thousand: the file-descriptor exhaustion of issue 9.

Connections are opened non-blocking and all at once, then kept open and silent, by helper
processes (each holds at most :data:`PER_HELPER`, well under a process's descriptor limit,
which this machine does not let even root raise).  The kernel completes a handshake while
the listener's backlog has room, whether or not the node can accept (a node out of
descriptors cannot), so the count says how many reached the node's port, not how many the
node took.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PER_HELPER = 15_000

_HELPER = r"""
import errno, select, socket, sys, time
host, port, count, settle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sources = sys.argv[5].split(",")
opened, connected = [], 0
# In waves: a burst larger than the listen backlog would be half-dropped by the kernel.
for wave in range(0, count, 500):
    pending = {}
    for n in range(wave, min(wave + 500, count)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((sources[n % len(sources)], 0))
        opened.append(sock)
        if sock.connect_ex((host, port)) in (errno.EINPROGRESS, 0):
            pending[sock.fileno()] = sock
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLOUT)
    deadline = time.monotonic() + settle
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(200):
            sock = pending.pop(fd)
            poller.unregister(fd)
            connected += sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
print(connected, flush=True)
sys.stdin.read()  # hold them until told (stdin closes)
"""


@contextmanager
def idle_connections(host: str, port: int, count: int, *, sources: list[str],
                     settle: float = 5.0) -> Iterator[int]:
    """Open ``count`` TCP connections to ``host:port`` from ``sources`` (round robin) and
    keep them open for the block; yields how many completed within ``settle`` seconds."""
    helpers = []
    try:
        for start in range(0, count, PER_HELPER):
            part = min(PER_HELPER, count - start)
            helpers.append(subprocess.Popen(
                [sys.executable, "-c", _HELPER, host, str(port), str(part), str(settle),
                 ",".join(sources)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True))
        connected = 0
        for helper in helpers:
            assert helper.stdout is not None
            line = helper.stdout.readline()
            if not line:
                raise RuntimeError(f"a flood helper failed (exit {helper.wait()})")
            connected += int(line)
        yield connected
    finally:
        for helper in helpers:
            assert helper.stdin is not None and helper.stdout is not None
            helper.stdin.close()
            helper.wait(timeout=60)
            helper.stdout.close()


def open_descriptors(pid: int) -> int:
    """How many file descriptors process ``pid`` holds (/proc)."""
    return len(os.listdir(f"/proc/{pid}/fd"))

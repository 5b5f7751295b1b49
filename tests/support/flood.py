"""Idle TCP connections by the thousand: the file-descriptor exhaustion of issue 9.

Connections are opened non-blocking and all at once, then kept open and silent.  The
kernel completes a handshake while the listener's backlog has room, whether or not the
node can accept (a node out of descriptors cannot), so the count says how many reached
the node's port, not how many the node took.
"""

from __future__ import annotations

import errno
import resource
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager


def raise_descriptor_limit(count: int) -> None:
    """Let this process hold ``count`` sockets more (root may raise its hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))


@contextmanager
def idle_connections(host: str, port: int, count: int, *, sources: list[str],
                     settle: float = 5.0) -> Iterator[int]:
    """Open ``count`` TCP connections to ``host:port`` from ``sources`` (round robin) and
    keep them open for the block; yields how many completed within ``settle`` seconds."""
    raise_descriptor_limit(count)
    pending: dict[int, socket.socket] = {}
    opened: list[socket.socket] = []
    try:
        for n in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind((sources[n % len(sources)], 0))
            opened.append(sock)
            code = sock.connect_ex((host, port))
            if code in (errno.EINPROGRESS, 0):
                pending[sock.fileno()] = sock
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLOUT)
        connected = 0
        deadline = time.monotonic() + settle
        while pending and time.monotonic() < deadline:
            ready = poller.poll(200)
            if not ready:
                continue
            for fd, _ in ready:
                sock = pending.pop(fd)
                poller.unregister(fd)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected += 1
        yield connected
    finally:
        for sock in opened:
            sock.close()


def open_descriptors(pid: int) -> int:
    """How many file descriptors process ``pid`` holds (/proc)."""
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))

"""Child-process hygiene shared by everything the supervisor starts."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (prctl(2)).

    Called in a child (or a ``preexec_fn``): a supervisor that dies, even by
    SIGKILL, leaves no orphan behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

"""What the supervisor tells every node process it starts: how long it waits, and how it
says that one died."""

from __future__ import annotations

READY_TIMEOUT = 60.0
"""Seconds a node may take to serve (the first fork waits for the zygote's imports)."""
STOP_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL."""


class NodeDied(RuntimeError):
    """A node process ended without being asked to, or before it served."""


__all__ = ["READY_TIMEOUT", "STOP_TIMEOUT", "NodeDied"]

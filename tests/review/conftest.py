"""Simulated time for the review tests: their nodes talk over in-memory links only, so the
event loop's clock can jump to the next timer whenever nothing is ready.  Every settle()
and every SIP timer is then exact and instant: a timing window holds on a loaded machine,
and a test can say "before 64·T1" and mean it."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.simtime import SimulatedTimeLoop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> dict[str, type[asyncio.AbstractEventLoop]]:
    """pytest-asyncio (>= 1.5): these tests' loops keep simulated time."""
    return {"simulated-time": SimulatedTimeLoop}

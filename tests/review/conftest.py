"""Simulated time for the review tests: their nodes talk over in-memory links only, so the
event loop's clock can jump to the next timer whenever nothing is ready.  Every settle()
and every SIP timer is then exact and instant: a timing window holds on a loaded machine,
and a test can say "before 64·T1" and mean it."""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

import pytest


class _Clock:
    now = 0.0


class _Selector(selectors.DefaultSelector):
    """Never waits: what the loop would have waited for a timer, the clock jumps."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if not events:
            if timeout is None:  # nothing ready, no timer: nothing can ever happen
                raise RuntimeError("simulated time: every task waits and no timer is set")
            self.clock.now += timeout
        return events


class SimulatedTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._clock = _Clock()
        super().__init__(_Selector(self._clock))

    def time(self) -> float:
        return self._clock.now


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> dict[str, type[asyncio.AbstractEventLoop]]:
    """pytest-asyncio (>= 1.5): these tests' loops keep simulated time."""
    return {"simulated-time": SimulatedTimeLoop}

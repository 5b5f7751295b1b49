"""An event loop in simulated time, for nodes that talk over in-memory links only: when
nothing is ready, its clock jumps to the next timer instead of waiting for it.  Every
sleep and every SIP timer is then exact and instant."""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


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

"""The step log: when each scenario step began, written by whoever drives the scenario.

It is the only record of a run's story besides the capture.  Afterwards it
labels every captured packet with the step that was running when it was
sent (``capture.publish``), and times the migration for the report.  Times
are wall-clock seconds, the clock capture timestamps use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from dataclasses import field

MAX_STEPS = 10_000
"""A bound on the log: a scenario has a dozen steps; a driver in a loop must not grow it."""


@dataclass(frozen=True)
class Step:
    at: float
    """Wall-clock start."""
    name: str
    clause: str = ""


@dataclass
class StepLog:
    steps: list[Step] = field(default_factory=list)

    def begin(self, name: str, clause: str = "", *, at: float | None = None) -> None:
        """Label what follows with ``name`` and the spec ``clause`` it implements."""
        if len(self.steps) >= MAX_STEPS:
            raise OverflowError(f"more than {MAX_STEPS} steps")
        self.steps.append(Step(time.time() if at is None else at, name, clause))

    def label(self, timestamp: float) -> tuple[str, str]:
        """The step (and clause) that was running at wall-clock ``timestamp``."""
        current = ("", "")
        for step in self.steps:
            if step.at > timestamp:
                break
            current = (step.name, step.clause)
        return current

    def span(self, first: str, last: str) -> float | None:
        """Seconds from the start of step ``first`` to the end of step ``last`` (its
        successor's start), both named by prefix; None when either never began."""
        starts = [s for s in self.steps if s.name.startswith(first)]
        ends = [i for i, s in enumerate(self.steps) if s.name.startswith(last)]
        if not starts or not ends:
            return None
        index = ends[0]
        end = self.steps[index + 1].at if index + 1 < len(self.steps) else time.time()
        return end - starts[0].at

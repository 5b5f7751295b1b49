"""Golden-trace comparison: do two runs exchange the same messages in the same order?

Each message is reduced to ``source -> destination: label``, with node
names instead of addresses and labels made of methods, statuses, paths and
grant types only.  Tags, branches, Call-IDs, timestamps, token contents
(jti, iat, exp) and transport-assigned ports never reach a label, so they
cannot make two runs differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .ladder import LadderMessage


def signature(message: LadderMessage) -> str:
    return f"{message.source} -> {message.destination}: {message.label}"


@dataclass(frozen=True)
class Difference:
    index: int
    """Position of the first differing message (0-based)."""
    expected: str | None
    actual: str | None
    step: str

    def __str__(self) -> str:
        return (f"first difference at message {self.index + 1} (step {self.step or '?'}):\n"
                f"  A: {self.expected or '(no more messages)'}\n"
                f"  B: {self.actual or '(no more messages)'}")


def first_difference(a: Sequence[LadderMessage],
                     b: Sequence[LadderMessage]) -> Difference | None:
    for index in range(max(len(a), len(b))):
        left = signature(a[index]) if index < len(a) else None
        right = signature(b[index]) if index < len(b) else None
        if left != right:
            step = (a[index] if index < len(a) else b[index]).step
            return Difference(index, left, right, step)
    return None

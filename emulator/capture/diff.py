"""Golden-trace comparison: does every node send the same messages, in the same order?

Each message is reduced to ``source -> destination: label``, with node
names instead of addresses and labels made of methods, statuses, paths and
grant types only.  Tags, branches, Call-IDs, timestamps, token contents
(jti, iat, exp) and transport-assigned ports never reach a label, so they
cannot make two runs differ.

The requests one node sends to another for one method must match one for one, in
order, and so must its final responses to them, and its provisional responses of each
status.  Provisional and final responses are not ordered against each other: two
transactions at once (the MC server inviting two group members) may see 100, 200, 100,
200 or 100, 100, 200, 200.  Nodes run at once, so
messages of different exchanges may interleave differently from run to run
(a UE's SUBSCRIBE and the MC server's 200 reach the SIP core in either order
in another placement, and its answers follow that order); and a relayed
answer may be sent just after the driver began its next step, so the step a
message is labelled with is reported, not compared.
The order *across* exchanges is what protocol verdicts judge from the
capture (e.g. "the SIP core answers 200 before its third-party REGISTER",
``driver.registration_verdict``), not the golden trace.
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
    """Position, in its own run, of the first differing message (0-based)."""
    expected: str | None
    actual: str | None
    step: str

    def __str__(self) -> str:
        return (f"first difference at message {self.index + 1} (step {self.step or '?'}):\n"
                f"  A: {self.expected or '(no more messages)'}\n"
                f"  B: {self.actual or '(no more messages)'}")


def _exchange(label: str) -> tuple[str, str]:
    """The method a label belongs to and what it is: a request's own method and
    ``request``; a response's method in parentheses (``200 (REGISTER)``) and ``final``,
    or for a provisional one its status; an HTTP response is ``final``."""
    if "(" in label and label[0].isdigit():
        status = label.split(" ", 1)[0]
        kind = status if status.startswith("1") else "final"
        return label[label.index("(") + 1:].split(")")[0], kind
    return label.split(" ", 1)[0], "request"


Thread = tuple[str, str, str, str]


def _threads(messages: Sequence[LadderMessage]) -> dict[Thread, list[int]]:
    """(sender, receiver, method, request / final / provisional status) -> positions of
    those messages, in order."""
    threads: dict[Thread, list[int]] = {}
    for index, m in enumerate(messages):
        threads.setdefault((m.source, m.destination, *_exchange(m.label)), []).append(index)
    return threads


def first_difference(a: Sequence[LadderMessage],
                     b: Sequence[LadderMessage]) -> Difference | None:
    """The earliest message (by its position in ``a``, else in ``b``) where some thread
    (sender, receiver, method, kind) differs; None when all are the same."""
    left, right = _threads(a), _threads(b)
    found: list[Difference] = []
    for key in [*left, *(k for k in right if k not in left)]:
        mine, theirs = left.get(key, []), right.get(key, [])
        for n in range(max(len(mine), len(theirs))):
            expected = signature(a[mine[n]]) if n < len(mine) else None
            actual = signature(b[theirs[n]]) if n < len(theirs) else None
            if expected != actual:
                index = mine[n] if n < len(mine) else theirs[n]
                step = (a[index] if n < len(mine) else b[index]).step
                found.append(Difference(index, expected, actual, step))
                break
    if not found:
        return None
    # The first in a's order; a thread only b has counts from where it appears in b.
    return min(found, key=lambda d: (d.expected is None, d.index))

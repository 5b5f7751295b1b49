"""Password guessing at the IdMS: failures slow down, then lock out (time comes in).

Tracked per user and per source address, so a guesser is stopped whether it tries
many passwords for one user or one password for many users.  Project-defined (no
3GPP figure): after each failure but the first, the answer waits ``slowdown``
doubling up to :data:`MAX_DELAY`; ``max_failures`` within ``window`` lock the user
(or source) out for ``lockout`` seconds, during which even the right password is
refused.  A success clears the user's and the source's count.  Both tables are
bounded (``max_tracked``, least recently failed first out).
"""

from __future__ import annotations

from collections import OrderedDict
from collections import deque
from dataclasses import dataclass

from emulator.topology.model import LoginLimit

MAX_DELAY = 4.0


@dataclass(frozen=True)
class Lockout:
    """Who is locked out (``user:<name>`` or ``source:<address>``) and for how long."""

    key: str
    remaining: float


class _Record:
    __slots__ = ("failures", "locked_until")

    def __init__(self, size: int) -> None:
        self.failures: deque[float] = deque(maxlen=size)
        self.locked_until = 0.0


class LoginThrottle:
    def __init__(self, limit: LoginLimit) -> None:
        self.limit = limit
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self.lockouts = 0

    def __len__(self) -> int:
        return len(self._records)

    @staticmethod
    def _keys(user: str, source: str) -> tuple[str, str]:
        return f"user:{user}", f"source:{source}"

    def locked(self, user: str, source: str, now: float) -> Lockout | None:
        """The lockout in force for this user or this source, if any."""
        for key in self._keys(user, source):
            record = self._records.get(key)
            if record is not None and record.locked_until > now:
                return Lockout(key, record.locked_until - now)
        return None

    def failed(self, user: str, source: str, now: float) -> tuple[float, list[Lockout]]:
        """Count a failure; returns the delay before answering it, and the lockouts it
        started (the user's, the source's, both or none)."""
        limit = self.limit
        started = []
        worst = 0
        for key in self._keys(user, source):
            record = self._records.get(key)
            if record is None:
                record = self._records[key] = _Record(limit.max_failures)
                if len(self._records) > limit.max_tracked:
                    self._records.popitem(last=False)
            else:
                self._records.move_to_end(key)
            failures = record.failures
            while failures and now - failures[0] > limit.window:
                failures.popleft()
            failures.append(now)
            worst = max(worst, len(failures))
            if len(failures) >= limit.max_failures and record.locked_until <= now:
                record.locked_until = now + limit.lockout
                failures.clear()
                self.lockouts += 1
                started.append(Lockout(key, limit.lockout))
        delay = 0.0 if worst <= 1 else min(MAX_DELAY, limit.slowdown * 2 ** (worst - 2))
        return delay, started

    def succeeded(self, user: str, source: str) -> None:
        for key in self._keys(user, source):
            self._records.pop(key, None)

"""Flood control at the gateway: one token bucket per source address (time comes in).

A source within its rate is never touched, whatever the others send: buckets are
per address, and what an over-the-limit source costs is bounded.  Over its bucket,
a source's messages are refused with 503 and Retry-After (RFC 3261 §21.5.4), but
only as many per second as the rate itself; the rest are dropped before parsing.
Kamailio's pike module makes the same choice (drop) for the same reason: answering
a flood is amplifying it.

Figures are the topology's ``limits.flood`` (project-defined defaults).
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum

from emulator.topology.model import FloodLimit


class Verdict(Enum):
    PASS = "pass"
    REFUSE = "refuse"
    """Answer 503 with Retry-After."""
    DROP = "drop"
    """Silently: the source is past even its refusals' rate."""


class _Bucket:
    __slots__ = ("at", "refusals", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.refusals = tokens
        self.at = at


class SourcePolicer:
    """Token buckets by source host, at most ``limit.max_sources`` (least recent out)."""

    def __init__(self, limit: FloodLimit) -> None:
        self.limit = limit
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.refused = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, host: str, now: float) -> Verdict:
        limit = self.limit
        buckets = self._buckets
        # A bucket idle long enough to have refilled is the same as none: it goes, so the
        # table holds the sources of the last few seconds, not every UE it ever saw.
        while buckets:
            oldest = next(iter(buckets.values()))
            if (now - oldest.at) * limit.rate < limit.burst:
                break
            buckets.popitem(last=False)
        bucket = buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = _Bucket(float(limit.burst), now)
            if len(self._buckets) > limit.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(host)
            elapsed = max(0.0, now - bucket.at)
            bucket.at = now
            bucket.tokens = min(float(limit.burst), bucket.tokens + elapsed * limit.rate)
            bucket.refusals = min(float(limit.burst), bucket.refusals + elapsed * limit.rate)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Verdict.PASS
        if bucket.refusals >= 1.0:
            bucket.refusals -= 1.0
            self.refused += 1
            return Verdict.REFUSE
        self.dropped += 1
        return Verdict.DROP

"""A bounded table whose entries expire: the one shape of every per-user table.

Registrar bindings, MC server authorisations, IdMS codes, refresh tokens and seen
security tokens each live until a deadline, and a node under load must neither keep
entries nobody will ask for again nor scan the whole table to find them.  Deadlines sit
in a heap beside the dict, so :meth:`ExpiringTable.purge` costs O(log n) per entry it
removes, whatever the table's size; an overwritten entry leaves a stale heap item,
skipped when popped, and the heap is rebuilt once stale items outnumber live ones.
The dict and the heap share one tuple per entry, ``(deadline, seq, key, value)``: one
entry costs one tuple of four, not two of three (56 bytes less an entry).

Sans-IO, like the cores that use it: time comes in as ``now``.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from collections.abc import Iterator
from typing import Generic
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TableFull(Exception):
    """A new key did not fit: the table holds ``capacity`` live entries."""


class ExpiringTable(Generic[K, V]):
    """At most ``capacity`` entries, each with its own deadline."""

    __slots__ = ("_entries", "_heap", "_seq", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._entries: dict[K, tuple[float, int, K, V]] = {}
        self._heap: list[tuple[float, int, K, V]] = []
        """A heap item is live while its key's entry is that very tuple; ``seq`` orders
        equal deadlines, so keys and values are never compared."""
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def items(self) -> Iterator[tuple[K, V]]:
        return ((key, entry[3]) for key, entry in self._entries.items())

    def get(self, key: K, now: float) -> V | None:
        """The live value of ``key``: None once expired (:meth:`purge` removes it, so
        its owner hears of every entry that goes)."""
        entry = self._entries.get(key)
        return None if entry is None or entry[0] <= now else entry[3]

    def deadline(self, key: K) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, expires_at: float, *, now: float) -> None:
        """Set ``key`` until ``expires_at``.  A new key in a full table first purges what
        expired by ``now``, then raises :class:`TableFull` if still no room."""
        if key not in self._entries and len(self._entries) >= self.capacity:
            self.purge(now)
            if len(self._entries) >= self.capacity:
                raise TableFull(f"{self.capacity} entries")
        self._seq += 1
        entry = (expires_at, self._seq, key, value)
        self._entries[key] = entry
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._compact()

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[3]

    def purge(self, now: float) -> list[tuple[K, V]]:
        """Remove and return every entry whose deadline is at or before ``now``."""
        heap, entries = self._heap, self._entries
        gone: list[tuple[K, V]] = []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            key = entry[2]
            if entries.get(key) is entry:
                del entries[key]
                gone.append((key, entry[3]))
        return gone

    def _compact(self) -> None:
        self._heap = list(self._entries.values())
        heapq.heapify(self._heap)

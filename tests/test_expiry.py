"""The bounded, expiring table every per-user table is built on (emulator/expiry.py)."""

from __future__ import annotations

import pytest

from emulator.expiry import ExpiringTable
from emulator.expiry import TableFull


def test_entries_live_until_their_deadline_and_purge_returns_them_in_order() -> None:
    table: ExpiringTable[str, int] = ExpiringTable(10)
    table.put("b", 2, 20.0, now=0.0)
    table.put("a", 1, 10.0, now=0.0)
    assert table.get("a", 9.9) == 1 and table.get("a", 10.0) is None
    assert "a" in table  # expired, but kept until purged: its owner hears of it there
    assert table.purge(15.0) == [("a", 1)]
    assert table.purge(15.0) == [] and len(table) == 1
    assert table.purge(25.0) == [("b", 2)] and len(table) == 0


def test_a_renewed_entry_is_not_purged_at_its_old_deadline() -> None:
    table: ExpiringTable[str, str] = ExpiringTable(10)
    table.put("alice", "first", 10.0, now=0.0)
    table.put("alice", "renewed", 30.0, now=5.0)
    assert table.purge(20.0) == []
    assert table.get("alice", 20.0) == "renewed"
    assert table.deadline("alice") == 30.0
    assert table.pop("alice") == "renewed" and table.purge(40.0) == []


def test_a_key_put_again_at_the_same_deadline_goes_once() -> None:
    table: ExpiringTable[str, dict[str, int]] = ExpiringTable(10)
    # Values that cannot be ordered, at equal deadlines: the heap never compares them.
    table.put("alice", {"n": 1}, 10.0, now=0.0)
    table.put("bob", {"n": 2}, 10.0, now=0.0)
    table.put("alice", {"n": 3}, 10.0, now=1.0)
    assert table.purge(10.0) == [("bob", {"n": 2}), ("alice", {"n": 3})]
    assert len(table) == 0 and table.purge(20.0) == []


def test_a_full_table_takes_a_new_key_only_once_something_expired() -> None:
    table: ExpiringTable[int, None] = ExpiringTable(3)
    for key in range(3):
        table.put(key, None, 10.0 + key, now=0.0)
    table.put(1, None, 50.0, now=0.0)  # an existing key always fits
    with pytest.raises(TableFull):
        table.put(99, None, 60.0, now=5.0)
    table.put(99, None, 60.0, now=10.5)  # key 0 expired at 10.0: purged to make room
    assert sorted(table) == [1, 2, 99]


def test_renewals_do_not_grow_the_heap_without_bound() -> None:
    table: ExpiringTable[str, int] = ExpiringTable(10)
    for n in range(10_000):
        table.put("alice", n, 100.0 + n, now=float(n))
    assert len(table) == 1
    assert len(table._heap) <= 2 * len(table) + 65  # stale items compacted away


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ExpiringTable(0)

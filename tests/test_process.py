"""The node process's heap housekeeping (``emulator.process``): settling start-up out of the
collector's reach, and giving it back."""

from __future__ import annotations

import gc
import weakref

from emulator.process import memory
from emulator.process import settled


class _Node:
    """Stands for start-up state: a cycle, which only the collector can free."""

    def __init__(self) -> None:
        self.me = self


def test_settled_freezes_what_exists_and_gives_it_back_at_the_end() -> None:
    start_up = _Node()
    gone = weakref.ref(start_up)
    try:
        with settled():
            assert gc.get_freeze_count() > 0
            # Frozen: a full collection neither walks it nor frees it.
            assert not any(o is start_up for o in gc.get_objects())
            made_after = _Node()
            assert gc.is_tracked(made_after) and any(o is made_after for o in gc.get_objects())
            del start_up
            gc.collect()
            assert gone() is not None  # held in the permanent generation meanwhile
        # Given back: the cycle dropped while frozen is garbage the collector now frees.
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


def test_memory_reports_what_a_full_collection_walks_and_its_pause() -> None:
    with settled():
        frozen = memory()
    thawed = memory()
    assert 0 <= frozen["tracked"] < thawed["tracked"]
    assert frozen["gc_ms"] >= 0 and thawed["gc_ms"] >= 0
    assert thawed["blocks"] > 0

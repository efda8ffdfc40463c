"""Packing entries into PutEvents calls: limits, order, greediness, linger, removal."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.batching.packer import Packer, pack

EXAMPLES = settings(max_examples=200, deadline=None)


@dataclass(frozen=True)
class Item:
    """A sized item; ``ident`` makes every item distinct so duplicates would show."""

    ident: int
    size: int


@st.composite
def limits_and_items(draw: st.DrawFn) -> tuple[int, int, list[Item]]:
    max_entries = draw(st.integers(1, 12))
    max_bytes = draw(st.integers(1, 300))
    sizes = draw(st.lists(st.integers(1, max_bytes), max_size=60))
    return max_entries, max_bytes, [Item(i, s) for i, s in enumerate(sizes)]


def check_batches(
    batches: list[list[Item]], items: list[Item], max_entries: int, max_bytes: int
) -> None:
    assert [i for b in batches for i in b] == items  # order kept, nothing dropped or duplicated
    for batch in batches:
        assert batch, "empty batch"
        assert len(batch) <= max_entries
        assert sum(i.size for i in batch) <= max_bytes
    for batch, following in itertools.pairwise(batches):
        nxt = following[0]
        could_take = len(batch) < max_entries and sum(i.size for i in batch) + nxt.size <= max_bytes
        assert not could_take, f"batch {batch} closed although {nxt} fit"


@EXAMPLES
@given(limits_and_items())
def test_pack_respects_limits_order_and_is_greedy(case: tuple[int, int, list[Item]]) -> None:
    max_entries, max_bytes, items = case
    check_batches(pack(items, max_entries, max_bytes), items, max_entries, max_bytes)


@EXAMPLES
@given(limits_and_items())
def test_packer_add_and_flush_emit_the_same_batches(case: tuple[int, int, list[Item]]) -> None:
    max_entries, max_bytes, items = case
    packer: Packer[Item] = Packer(max_entries, max_bytes)
    batches: list[list[Item]] = []
    for item in items:
        full = packer.add(item)
        if full is not None:
            batches.append(full)
        # the open batch stays within the limits, and its byte count is right
        assert len(packer) < max_entries
        assert packer.pending_bytes <= max_bytes
    last = packer.flush()
    if last:
        batches.append(last)
    assert len(packer) == 0 and packer.pending_bytes == 0
    check_batches(batches, items, max_entries, max_bytes)
    assert batches == pack(items, max_entries, max_bytes)


def test_pack_known_example() -> None:
    items = [Item(i, s) for i, s in enumerate([4, 4, 3, 10, 1, 1, 1])]
    batches = pack(items, max_entries=3, max_bytes=10)
    assert [[i.size for i in b] for b in batches] == [[4, 4], [3], [10], [1, 1, 1]]


def test_batch_reaching_max_entries_is_returned_at_once() -> None:
    packer: Packer[Item] = Packer(max_entries=2, max_bytes=100)
    assert packer.add(Item(0, 1)) is None
    assert packer.add(Item(1, 1)) == [Item(0, 1), Item(1, 1)]
    assert len(packer) == 0


def test_item_over_max_bytes_is_refused() -> None:
    packer: Packer[Item] = Packer(max_entries=10, max_bytes=100)
    packer.add(Item(0, 50))
    with pytest.raises(ValueError, match="101 bytes exceeds the batch limit of 100"):
        packer.add(Item(1, 101))
    # the open batch is untouched
    assert len(packer) == 1 and packer.pending_bytes == 50
    with pytest.raises(ValueError):
        pack([Item(0, 101)], 10, 100)


def test_item_of_exactly_max_bytes_is_accepted() -> None:
    assert pack([Item(0, 100), Item(1, 100)], 10, 100) == [[Item(0, 100)], [Item(1, 100)]]


@pytest.mark.parametrize(("max_entries", "max_bytes"), [(0, 10), (1, 0), (-1, 5)])
def test_non_positive_limits_are_refused(max_entries: int, max_bytes: int) -> None:
    with pytest.raises(ValueError):
        Packer(max_entries, max_bytes)


def test_due_after_linger_from_first_item() -> None:
    packer: Packer[Item] = Packer(max_entries=10, max_bytes=100)
    assert not packer.due(now=1000.0, linger_s=0.0)  # nothing open, never due
    packer.add(Item(0, 1), now=10.0)
    packer.add(Item(1, 1), now=10.25)  # a later item does not restart the clock
    assert not packer.due(now=10.375, linger_s=0.5)
    assert packer.due(now=10.5, linger_s=0.5)
    assert packer.due(now=11.0, linger_s=0.5)
    packer.flush()
    assert not packer.due(now=99.0, linger_s=0.5)


def test_due_clock_restarts_with_the_next_batch() -> None:
    packer: Packer[Item] = Packer(max_entries=10, max_bytes=10)
    packer.add(Item(0, 6), now=1.0)
    full = packer.add(Item(1, 6), now=5.0)  # does not fit: the first batch closes
    assert full == [Item(0, 6)]
    assert not packer.due(now=5.5, linger_s=1.0)
    assert packer.due(now=6.0, linger_s=1.0)


def test_linger_zero_is_due_immediately() -> None:
    packer: Packer[Item] = Packer(max_entries=10, max_bytes=100)
    packer.add(Item(0, 1), now=3.0)
    assert packer.due(now=3.0, linger_s=0.0)


@EXAMPLES
@given(
    limits_and_items(),
    st.sets(st.integers(0, 59)),
    st.lists(st.integers(1, 300), max_size=20),
)
def test_remove_if_keeps_byte_accounting(
    case: tuple[int, int, list[Item]], drop: set[int], more_sizes: list[int]
) -> None:
    max_entries, max_bytes, items = case
    packer: Packer[Item] = Packer(max_entries, max_bytes)
    for item in items:
        packer.add(item)
    open_before = packer.flush()
    # rebuild the open batch without closing it, then remove some of it
    packer = Packer(max_entries, max_bytes)
    for item in open_before:
        assert packer.add(item) is None
    removed = packer.remove_if(lambda i: i.ident in drop)
    kept = [i for i in open_before if i.ident not in drop]
    assert removed == [i for i in open_before if i.ident in drop]
    assert len(packer) == len(kept)
    assert packer.pending_bytes == sum(i.size for i in kept)
    # later adds still respect the limits, with the kept items first
    extra = [Item(1000 + n, min(s, max_bytes)) for n, s in enumerate(more_sizes)]
    batches: list[list[Item]] = []
    for item in extra:
        full = packer.add(item)
        if full is not None:
            batches.append(full)
    last = packer.flush()
    if last:
        batches.append(last)
    check_batches(batches, kept + extra, max_entries, max_bytes)


def test_remove_everything_closes_the_batch() -> None:
    packer: Packer[Item] = Packer(max_entries=10, max_bytes=100)
    packer.add(Item(0, 30), now=1.0)
    packer.add(Item(1, 30), now=2.0)
    assert packer.remove_if(lambda i: True) == [Item(0, 30), Item(1, 30)]
    assert len(packer) == 0 and packer.pending_bytes == 0
    assert not packer.due(now=100.0, linger_s=0.0)
    # room for a full 100 bytes again
    assert packer.add(Item(2, 100), now=3.0) is None
    assert packer.pending_bytes == 100


def test_remove_frees_room_for_bigger_item() -> None:
    packer: Packer[Item] = Packer(max_entries=10, max_bytes=100)
    packer.add(Item(0, 60))
    packer.add(Item(1, 30))
    packer.remove_if(lambda i: i.ident == 0)
    assert packer.add(Item(2, 70)) is None  # 30 + 70 fits now
    assert packer.flush() == [Item(1, 30), Item(2, 70)]

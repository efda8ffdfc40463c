"""The ordering rule per event group (bridge.pipeline.ordering): pure, property-tested."""

from __future__ import annotations

from collections import defaultdict

import pytest
from confluent_kafka import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.codes import GROUP_HELD
from bridge.pipeline.ordering import Ordering, Turn, group_of
from bridge.pipeline.work import Work


def work(partition: int, offset: int, group: str | None) -> Work:
    msg = Message(topic="t", partition=partition, offset=offset, key=None, value=b"{}")
    item = Work(msg, ("t", partition), 0)
    item.entry = {"Source": "s"}
    if group is not None:
        item.entry["SystemMetadata"] = {"EventGroupId": group, "DeduplicationId": "x"}
    return item


def test_one_entry_of_a_group_at_a_time_groups_apart() -> None:
    order = Ordering()
    a0, a1, b0, a2 = work(0, 0, "a"), work(0, 1, "a"), work(0, 2, "b"), work(0, 3, "a")
    assert [order.admit(w) for w in (a0, a1, b0, a2)] == [Turn.GO, Turn.WAIT, Turn.GO, Turn.WAIT]
    assert order.waiting == 2
    assert order.admit(a0) is Turn.GO  # the first of its line, due again
    assert order.finish(a0) == (a1, Turn.GO)
    assert order.admit(a1) is Turn.GO
    assert order.finish(b0) is None
    assert order.finish(a1) == (a2, Turn.GO)
    assert order.finish(a2) is None
    assert order.waiting == 0 and len(order) == 0


def test_same_group_of_other_partitions_does_not_wait() -> None:
    order = Ordering()
    assert order.admit(work(0, 0, "a")) is Turn.GO
    assert order.admit(work(1, 0, "a")) is Turn.GO


def test_entries_without_a_group_are_never_held_back() -> None:
    order = Ordering()
    items = [work(0, o, None) for o in range(3)]
    assert [order.admit(w) for w in items] == [Turn.GO] * 3
    assert group_of(items[0]) is None and order.finish(items[0]) is None and len(order) == 0


def test_hold_dead_letters_the_rest_of_the_group() -> None:
    order = Ordering("hold")
    a0, a1, a2, b0 = work(0, 0, "a"), work(0, 1, "a"), work(0, 2, "a"), work(0, 3, "b")
    for w in (a0, a1, b0):
        order.admit(w)
    order.dead_lettered(a0)
    assert order.finish(a0) == (a1, Turn.HOLD)
    reason = order.held_reason(a1)
    assert reason.code == GROUP_HELD and "offset 0 was dead-lettered" in reason.message
    assert order.finish(a1) is None
    assert order.admit(a2) is Turn.HOLD  # a later record of the held group
    assert order.finish(b0) is None  # other groups go on


def test_continue_sends_the_rest_of_the_group() -> None:
    order = Ordering("continue")
    a0, a1 = work(0, 0, "a"), work(0, 1, "a")
    order.admit(a0)
    order.admit(a1)
    order.dead_lettered(a0)
    assert order.finish(a0) == (a1, Turn.GO)


def test_drop_forgets_the_partitions_lines() -> None:
    order = Ordering("hold")
    a0, a1, c0 = work(0, 0, "a"), work(0, 1, "a"), work(1, 0, "a")
    for w in (a0, a1, c0):
        order.admit(w)
    order.dead_lettered(a0)
    order.drop({("t", 0)})
    assert order.waiting == 0 and len(order) == 1
    assert order.finish(a0) is None  # an answer for the old lines changes nothing
    assert order.admit(work(0, 0, "a")) is Turn.GO  # read again: a fresh line, not held
    with pytest.raises(ValueError, match="continue"):
        Ordering("stop")


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(["a", "b", "c", None])),
        min_size=1,
        max_size=60,
    ),
    choices=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000)), max_size=400),
    hold=st.booleans(),
)
def test_per_line_finish_order_is_offset_order_and_nothing_is_lost(
    records: list[tuple[int, str | None]], choices: list[tuple[int, int]], hold: bool
) -> None:
    """Records arrive (offset order per partition); at every point the entries allowed to go
    hold at most one per line; whatever the order calls end in (delivered or dead-lettered),
    each line finishes in offset order, and every record finishes."""
    order = Ordering("hold" if hold else "continue")
    offsets: dict[int, int] = defaultdict(int)
    items = []
    for partition, group in records:
        items.append(work(partition, offsets[partition], group))
        offsets[partition] += 1
    pending = list(items)
    going: list[Work] = []  # GO: in flight (or retrying): any of them may end next
    held_out: list[Work] = []  # HOLD: being dead-lettered as GroupHeld
    finished: list[Work] = []
    dead: set[int] = set()

    def start(w: Work, turn: Turn) -> None:
        if turn is Turn.GO:
            going.append(w)
        elif turn is Turn.HOLD:
            held_out.append(w)

    def check() -> None:
        lines = [(w.tp, group_of(w)) for w in going + held_out if group_of(w) is not None]
        assert len(lines) == len(set(lines)), "two entries of one line under way"

    def end_one(pick: int) -> None:
        pool = going + held_out
        w = pool[pick % len(pool)]
        was_held = w in held_out
        (held_out if was_held else going).remove(w)
        if pick % 4 == 0 or was_held:  # dead-lettered (or held: dead-lettered anyway)
            order.dead_lettered(w)
            dead.add(id(w))
        finished.append(w)
        released = order.finish(w)
        if released is not None:
            start(*released)

    for action, pick in choices:
        if action < 2 and pending:
            w = pending.pop(0)
            start(w, order.admit(w))
        elif going or held_out:
            end_one(pick)
        check()
    while pending:
        w = pending.pop(0)
        start(w, order.admit(w))
        check()
    step = 0
    while going or held_out:
        end_one(step)
        step += 1
        check()
    assert len(finished) == len(items) and order.waiting == 0 and len(order) == 0
    per_line: dict[tuple[object, str], list[int]] = defaultdict(list)
    for w in finished:
        group = group_of(w)
        if group is not None:
            per_line[(w.tp, group)].append(w.offset)
    for offsets_finished in per_line.values():
        assert offsets_finished == sorted(offsets_finished)

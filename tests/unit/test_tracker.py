"""Which offsets may be committed: never past an unfinished offset, never backwards."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.offsets.tracker import OffsetOrderError, OffsetTracker, PartitionTracker

EXAMPLES = settings(max_examples=200, deadline=None)

TPS = [("orders", 0), ("orders", 1), ("payments", 0)]


@st.composite
def offset_sequences(draw: st.DrawFn) -> list[int]:
    """Strictly increasing offsets with gaps (compacted topics, transaction markers)."""
    start = draw(st.integers(0, 1_000_000))
    gaps = draw(st.lists(st.integers(1, 5), min_size=1, max_size=30))
    offsets = [start]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    return offsets


class Model:
    """What one partition should report, computed the slow obvious way."""

    def __init__(self) -> None:
        self.added: list[int] = []
        self.finished: set[int] = set()
        self.committed: int | None = None

    def position(self) -> int | None:
        last = None
        for offset in self.added:
            if offset not in self.finished:
                break
            last = offset
        return None if last is None else last + 1

    def expected_committable(self) -> int | None:
        pos = self.position()
        if pos is None or (self.committed is not None and pos <= self.committed):
            return None
        return pos

    def buffered(self) -> int:
        if self.committed is None:
            return len(self.added)
        return sum(1 for o in self.added if o >= self.committed)


@EXAMPLES
@given(st.data())
def test_committable_never_passes_an_unfinished_offset(data: st.DataObject) -> None:
    tracker = OffsetTracker()
    sequences = {tp: data.draw(offset_sequences(), label=f"offsets {tp}") for tp in TPS}
    models = {tp: Model() for tp in TPS}
    to_add = {tp: list(seq) for tp, seq in sequences.items()}
    last_position: dict[tuple[str, int], int] = {}

    while any(to_add.values()) or any(set(m.added) - m.finished for m in models.values()):
        choices = [("add", tp) for tp in TPS if to_add[tp]]
        choices += [("finish", tp) for tp in TPS if set(models[tp].added) - models[tp].finished]
        choices += [("commit", None)]
        action, tp = data.draw(st.sampled_from(choices))
        if action == "add":
            assert tp is not None
            offset = to_add[tp].pop(0)
            tracker.add(tp, offset)
            models[tp].added.append(offset)
        elif action == "finish":
            assert tp is not None
            unfinished = sorted(set(models[tp].added) - models[tp].finished)
            offset = data.draw(st.sampled_from(unfinished))
            tracker.finish(tp, offset)
            models[tp].finished.add(offset)
        else:
            positions = tracker.committable()
            for ctp, model in models.items():
                expected = model.expected_committable()
                assert positions.get(ctp) == expected
            for ctp, pos in positions.items():
                model = models[ctp]
                # every consumed offset below the position is finished
                assert all(o in model.finished for o in model.added if o < pos)
                # and the position is one past a consumed offset
                assert pos - 1 in model.added
                assert pos >= last_position.get(ctp, -1), "committable went backwards"
                last_position[ctp] = pos
            if positions and data.draw(st.booleans(), label="broker accepts"):
                tracker.mark_committed(positions)
                for ctp, pos in positions.items():
                    models[ctp].committed = pos
                assert tracker.committable() == {}  # nothing new
        # counters after every step
        for ctp, model in models.items():
            part = tracker.partition(ctp)
            unfinished = len(set(model.added) - model.finished)
            assert part.open_count == unfinished
            assert part.buffered == model.buffered()
        assert tracker.buffered == sum(m.buffered() for m in models.values())
        assert (tracker.open_count == 0) == all(set(m.added) <= m.finished for m in models.values())

    # everything finished: the position is last + 1 on every partition
    for tp, seq in sequences.items():
        part = tracker.partition(tp)
        if models[tp].committed is None or models[tp].committed < seq[-1] + 1:
            assert part.committable() == seq[-1] + 1
        else:
            assert part.committable() is None
        part.mark_committed(seq[-1] + 1)
        assert part.committable() is None
        assert part.buffered == 0


@EXAMPLES
@given(offset_sequences(), st.randoms(use_true_random=False))
def test_all_finished_in_any_order_commits_last_plus_one(offsets: list[int], rnd) -> None:
    part = PartitionTracker()
    for offset in offsets:
        part.add(offset)
    order = list(offsets)
    rnd.shuffle(order)
    for offset in order:
        before = part.committable()
        part.finish(offset)
        after = part.committable()
        if before is not None:
            assert after is not None and after >= before
    assert part.committable() == offsets[-1] + 1
    assert part.open_count == 0
    assert part.buffered == len(offsets)


def test_committable_is_none_before_anything_is_finished() -> None:
    part = PartitionTracker()
    assert part.committable() is None
    part.add(7)
    part.add(9)
    assert part.committable() is None
    part.finish(9)
    assert part.committable() is None  # 7 still open
    part.finish(7)
    assert part.committable() == 10


def test_mark_committed_then_nothing_new_then_progress() -> None:
    part = PartitionTracker()
    for offset in (0, 1, 2):
        part.add(offset)
    part.finish(0)
    assert part.committable() == 1
    part.mark_committed(1)
    assert part.committable() is None
    assert part.buffered == 2
    part.finish(2)
    assert part.committable() is None
    part.finish(1)
    assert part.committable() == 3
    part.mark_committed(3)
    assert part.buffered == 0


def test_offsets_must_increase() -> None:
    part = PartitionTracker()
    part.add(5)
    with pytest.raises(OffsetOrderError, match="offset 5 after 5"):
        part.add(5)
    with pytest.raises(OffsetOrderError, match="offset 4 after 5"):
        part.add(4)
    part.finish(5)
    # still refused once the newest is finished and popped
    with pytest.raises(OffsetOrderError):
        part.add(5)
    part.add(6)


def test_offset_order_error_is_a_value_error() -> None:
    assert issubclass(OffsetOrderError, ValueError)


def test_finishing_on_an_empty_partition_raises() -> None:
    with pytest.raises(OffsetOrderError, match="offset 3 is not open"):
        PartitionTracker().finish(3)


def test_finishing_twice_raises_while_still_open() -> None:
    part = PartitionTracker()
    part.add(0)
    part.add(1)
    part.finish(1)  # done but behind 0, still in the open window
    with pytest.raises(OffsetOrderError):
        part.finish(1)


def test_finishing_twice_raises_after_it_was_popped() -> None:
    part = PartitionTracker()
    part.add(0)
    part.add(1)
    part.finish(0)
    with pytest.raises(OffsetOrderError):
        part.finish(0)
    part.finish(1)
    with pytest.raises(OffsetOrderError):
        part.finish(1)


def test_finishing_an_offset_below_the_window_raises() -> None:
    part = PartitionTracker()
    part.add(10)
    with pytest.raises(OffsetOrderError):
        part.finish(9)


def test_finishing_an_unknown_offset_in_a_gap_raises() -> None:
    part = PartitionTracker()
    part.add(0)
    part.add(5)
    with pytest.raises(OffsetOrderError):
        part.finish(3)  # 3 was never consumed


def test_an_offset_finished_before_it_was_added_is_not_committed() -> None:
    part = PartitionTracker()
    part.add(0)
    with contextlib.suppress(OffsetOrderError):
        part.finish(1)  # unknown: should raise; if it does not, it must not count
    part.add(1)
    part.finish(0)
    # offset 1 was consumed and never delivered: only 0 may be committed
    assert part.committable() == 1
    assert part.open_count == 1


def test_forget_drops_the_partition() -> None:
    tracker = OffsetTracker()
    tracker.add(("t", 0), 0)
    tracker.add(("t", 1), 0)
    tracker.finish(("t", 0), 0)
    tracker.finish(("t", 1), 0)
    assert tracker.committable() == {("t", 0): 1, ("t", 1): 1}
    tracker.forget([("t", 0), ("never", 9)])
    assert not tracker.knows(("t", 0))
    assert tracker.knows(("t", 1))
    assert tracker.partitions() == [("t", 1)]
    assert tracker.committable() == {("t", 1): 1}
    assert tracker.buffered == 1
    # marking a forgotten partition committed does not bring it back
    tracker.mark_committed({("t", 0): 1})
    assert not tracker.knows(("t", 0))
    # a re-assigned partition starts fresh, from any offset
    tracker.add(("t", 0), 0)
    assert tracker.committable([("t", 0)]) == {}


def test_committable_for_selected_partitions() -> None:
    tracker = OffsetTracker()
    for tp in TPS:
        tracker.add(tp, 3)
        tracker.finish(tp, 3)
    assert tracker.committable([TPS[0], ("unknown", 0)]) == {TPS[0]: 4}


def test_open_count_counts_only_unfinished_records() -> None:
    part = PartitionTracker()
    part.add(0)
    part.add(1)
    part.finish(1)
    assert part.open_count == 1  # only offset 0 is unfinished


def test_buffered_after_committing_an_older_position() -> None:
    part = PartitionTracker()
    for offset in range(4):
        part.add(offset)
    part.finish(0)
    position = part.committable()
    assert position == 1
    part.finish(1)
    part.finish(2)  # finished while the commit of position 1 was on its way
    part.mark_committed(position)
    # offsets 1, 2, 3 are consumed and not committed
    assert part.buffered == 3
    assert part.committable() == 3


# ---------------------------------------------------------------- finished offsets restored


@st.composite
def restored_cases(draw: st.DrawFn) -> tuple[list[int], int, set[int]]:
    """A log (increasing offsets with gaps), a committed offset in it, and offsets recorded
    finished above it: some in the log, some in its gaps or past its end (never consumed)."""
    log = draw(offset_sequences())
    committed = draw(st.sampled_from(log))
    above = [o for o in range(committed + 1, log[-1] + 4)]
    finished_before = set(draw(st.lists(st.sampled_from(above), max_size=20))) if above else set()
    return log, committed, finished_before


@EXAMPLES
@given(restored_cases(), st.data())
def test_restored_position_never_passes_an_offset_not_finished_before_or_now(
    case: tuple[list[int], int, set[int]], data: st.DataObject
) -> None:
    log, committed, before = case
    part = PartitionTracker()
    part.restore(committed, before | {committed - 1, committed})  # not above: ignored
    # Reading starts at the committed offset, or later (a reset past deleted records).
    start = data.draw(st.sampled_from([o for o in log if o >= committed]), label="start")
    to_add = [o for o in log if o >= start]
    added: list[int] = []
    finished_now: set[int] = set()
    skipped: set[int] = set()
    last_position = committed
    while to_add or set(added) - finished_now - skipped:
        choices = ["add"] if to_add else []
        if set(added) - finished_now - skipped:
            choices.append("finish")
        choices.append("commit")
        action = data.draw(st.sampled_from(choices))
        if action == "add":
            offset = to_add.pop(0)
            was_finished = part.add(offset)
            assert was_finished == (offset in before)
            added.append(offset)
            if was_finished:
                skipped.add(offset)
        elif action == "finish":
            offset = data.draw(st.sampled_from(sorted(set(added) - finished_now - skipped)))
            part.finish(offset)
            finished_now.add(offset)
        else:
            point = part.commit_point()
            if point is None:
                continue
            pos = point.position
            assert pos >= last_position, "the position went backwards"
            # every offset of the log below the position, from the committed one on, is
            # finished now or was finished before: nothing unfinished is ever passed
            for offset in log:
                if start <= offset < pos:
                    assert offset in finished_now or offset in before, (offset, pos)
            # what is recorded above: finished now or before, never anything else
            assert list(point.finished_above) == sorted(point.finished_above)
            assert all(o > pos for o in point.finished_above)
            assert set(point.finished_above) <= finished_now | before
            # and nothing finished above the position is left out
            newest = added[-1] if added else None
            for offset in finished_now | skipped:
                if offset > pos:
                    assert offset in point.finished_above
            for offset in before:
                if offset > pos and (newest is None or offset > newest):
                    # restored, not consumed again yet: still recorded
                    assert offset in point.finished_above
            if data.draw(st.booleans(), label="broker accepts"):
                part.mark_committed(pos, point.changes)
                last_position = pos
                assert part.commit_point() is None  # nothing new
    assert part.open_count == 0
    assert part.commit_point() is None or part.commit_point().position == log[-1] + 1  # type: ignore[union-attr]


@EXAMPLES
@given(offset_sequences(), st.data())
def test_a_crash_resends_only_what_was_unfinished_at_the_last_commit(
    log: list[int], data: st.DataObject
) -> None:
    """Run, commit with metadata now and then, crash, restart from the commit: the restarted
    tracker skips exactly the finished offsets recorded, and nothing that was not finished."""
    from bridge.offsets.metadata import decode, encode

    part = PartitionTracker()
    to_add = list(log)
    added: list[int] = []
    finished: set[int] = set()
    commit: tuple[int, str] | None = None  # (position, metadata) the broker holds
    recorded: frozenset[int] = frozenset()
    for _ in range(data.draw(st.integers(0, 3 * len(log)), label="steps before the crash")):
        choices = ["add"] if to_add else []
        if set(added) - finished:
            choices.append("finish")
        choices.append("commit")
        action = data.draw(st.sampled_from(choices))
        if action == "add":
            offset = to_add.pop(0)
            assert not part.add(offset)
            added.append(offset)
        elif action == "finish":
            offset = data.draw(st.sampled_from(sorted(set(added) - finished)))
            part.finish(offset)
            finished.add(offset)
        else:
            point = part.commit_point()
            if point is not None:
                text = encode(point.position, point.finished_above, 4096)
                assert text is not None  # at most 31 offsets: always fits
                commit = (point.position, text)
                recorded = frozenset(point.finished_above)
                part.mark_committed(point.position, point.changes)

    # the crash: a new tracker from what the broker holds
    restarted = PartitionTracker()
    if commit is None:
        start = log[0]  # never committed: auto.offset.reset=earliest
    else:
        start, text = commit
        decoded = decode(start, text)
        assert decoded.problem is None and decoded.offsets == recorded
        restarted.restore(start, decoded.offsets)
    skipped = {o for o in log if o >= start and restarted.add(o)}
    assert skipped <= finished, "an offset skipped that was never finished"
    assert skipped == {o for o in recorded if o in log}
    # what is sent again: what was unfinished at the last commit, or consumed after it
    resent = {o for o in log if o >= start} - skipped
    assert not resent & recorded


def test_restore_after_consuming_is_refused() -> None:
    part = PartitionTracker()
    part.add(0)
    with pytest.raises(OffsetOrderError, match="restore"):
        part.restore(0, [1])


def test_restored_offsets_skip_and_move_the_position() -> None:
    tracker = OffsetTracker()
    tp = ("orders", 0)
    tracker.restore(tp, 10, {12, 13, 15})
    assert tracker.partition(tp).committed == 10
    assert tracker.commit_points() == {}  # the broker holds this already
    assert tracker.add(tp, 10) is False
    assert tracker.add(tp, 11) is False
    assert tracker.add(tp, 12) is True  # finished before the restart: do not send
    assert tracker.commit_points() == {}  # 12 moved from restored to done: no change
    tracker.finish(tp, 11)
    point = tracker.commit_points()[tp]
    assert (point.position, point.finished_above) == (10, (11, 12, 13, 15))
    tracker.mark_points_committed({tp: point})
    assert tracker.commit_points() == {}
    tracker.finish(tp, 10)
    assert tracker.committable() == {tp: 13}
    assert tracker.add(tp, 13) is True
    # 14 is a gap (never comes): 15 is still skipped, position passes it
    assert tracker.add(tp, 15) is True
    assert tracker.committable() == {tp: 16}
    point = tracker.commit_points()[tp]
    assert (point.position, point.finished_above) == (16, ())


def test_a_restored_offset_passed_without_being_consumed_is_dropped() -> None:
    part = PartitionTracker()
    part.restore(0, {3, 5, 9})
    assert part.add(4) is False  # 3 never came (compacted)
    assert part.finished_above == [5, 9]
    assert part.add(7) is False  # 5 passed
    assert part.finished_above == [9]
    assert part.add(9) is True
    assert part.finished_above == [9]  # finished, behind the unfinished 4 and 7


def test_a_never_committed_partition_records_what_waits_behind_its_first_record() -> None:
    part = PartitionTracker()
    assert part.commit_point() is None
    part.add(100)
    part.add(101)
    assert part.commit_point() is None  # nothing finished: nothing to say
    part.finish(101)
    point = part.commit_point()
    assert point is not None
    assert (point.position, point.finished_above) == (100, (101,))


def test_a_plain_commit_leaves_the_metadata_to_write_again() -> None:
    part = PartitionTracker()
    for offset in range(3):
        part.add(offset)
    part.finish(0)
    part.finish(2)
    point = part.commit_point()
    assert point is not None and point.finished_above == (2,)
    part.mark_committed(point.position)  # plain: the broker holds no metadata now
    again = part.commit_point()
    assert again is not None and (again.position, again.finished_above) == (1, (2,))
    part.mark_committed(again.position, again.changes)
    assert part.commit_point() is None


def test_a_point_taken_before_more_finished_is_committed_again() -> None:
    part = PartitionTracker()
    for offset in range(4):
        part.add(offset)
    part.finish(2)
    point = part.commit_point()
    assert point is not None
    part.finish(3)  # while the commit was on its way
    part.mark_committed(point.position, point.changes)
    later = part.commit_point()
    assert later is not None and later.finished_above == (2, 3)


def test_a_restored_offset_at_the_position_is_not_recorded_above_it() -> None:
    part = PartitionTracker()
    part.restore(0, {1, 3})
    part.add(0)
    part.finish(0)  # position 1: offset 1 is restored but not consumed again yet
    point = part.commit_point()
    assert point is not None
    assert (point.position, point.finished_above) == (1, (3,))


def test_news_follows_what_a_commit_would_say() -> None:
    t = PartitionTracker()
    for o in range(4):
        t.add(o)
    assert not t.news(recorded=True)
    t.finish(2)  # behind an unfinished one: only the metadata would change
    assert t.news(recorded=True) and not t.news(recorded=False)
    t.finish(0)  # the position moves
    assert t.news(recorded=False)
    point = t.commit_point()
    assert point is not None
    t.mark_committed(point.position, point.changes)
    assert not t.news(recorded=True) and not t.news(recorded=False)
    tracker = OffsetTracker()
    tracker.add(TPS[0], 5)
    assert not tracker.news(recorded=True)
    tracker.finish(TPS[0], 5)
    assert tracker.news(recorded=True) and tracker.news(recorded=False)


@EXAMPLES
@given(offset_sequences(), st.data())
def test_news_is_whether_a_commit_has_something_to_send(
    offsets: list[int], data: st.DataObject
) -> None:
    """At every step, news(recorded=True) says whether commit_point() has a point, and
    news(recorded=False) whether committable() has a position: the cadence commits exactly
    when the committer would send something."""
    recorded = data.draw(st.booleans())
    t = PartitionTracker()
    open_: list[int] = []
    pending = list(offsets)
    for _ in range(3 * len(offsets)):
        action = data.draw(st.sampled_from(["add", "finish", "commit"]))
        if action == "add" and pending:
            t.add(pending[0])
            open_.append(pending.pop(0))
        elif action == "finish" and open_:
            t.finish(open_.pop(data.draw(st.integers(0, len(open_) - 1))))
        elif action == "commit":
            if recorded:
                point = t.commit_point()
                if point is not None:
                    t.mark_committed(point.position, point.changes)
            else:
                position = t.committable()
                if position is not None:
                    t.mark_committed(position)
        if recorded:
            assert t.news(recorded=True) == (t.commit_point() is not None)
        else:
            assert t.news(recorded=False) == (t.committable() is not None)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.sampled_from(["add", "finish", "commit", "plain"]), st.integers(0, 99))),
)
def test_buffered_is_what_a_crash_now_would_send_again(ops: list[tuple[str, int]]) -> None:
    """After any run of consumes, finishes and accepted commits (with their metadata, or
    plain), the buffer counts the consumed offsets the broker's last commit does not cover
    (at or above its offset and not recorded finished), and never less than a quarter of the
    offsets still tracked."""
    t = PartitionTracker()
    consumed: list[int] = []
    unfinished: list[int] = []
    position: int | None = None
    recorded: frozenset[int] = frozenset()
    for op, n in ops:
        if op == "add":
            consumed.append(len(consumed) * 2)  # gaps, as compaction leaves
            t.add(consumed[-1])
            unfinished.append(consumed[-1])
        elif op == "finish" and unfinished:
            t.finish(unfinished.pop(n % len(unfinished)))
        elif op == "commit":
            point = t.commit_point()
            if point is not None:
                t.mark_committed(point.position, point.changes, point.finished_above)
                position, recorded = point.position, frozenset(point.finished_above)
        elif op == "plain":
            at = t.committable()
            if at is not None:
                t.mark_committed(at)
                position, recorded = at, frozenset()
    tracked = [o for o in consumed if position is None or o >= position]
    again = [o for o in tracked if o not in recorded]
    assert t.buffered == max(len(again), len(tracked) // 4)


def test_a_stuck_record_leaves_the_finished_ones_above_it_out_of_the_buffer() -> None:
    t = PartitionTracker()
    for offset in range(101):
        t.add(offset)
    for offset in range(1, 101):
        t.finish(offset)  # offset 0 waits for its retry
    assert t.buffered == 101  # not committed yet: all of it would come again
    point = t.commit_point()
    assert point is not None
    t.mark_committed(point.position, point.changes, point.finished_above)
    assert t.buffered == 25  # offset 0 alone would come again; a quarter of the 101 held


def test_offsets_restored_from_the_metadata_are_out_of_the_buffer_when_consumed() -> None:
    t = PartitionTracker()
    t.restore(10, {12, 13})
    for offset in range(10, 14):
        t.add(offset)
    assert t.buffered == 2  # 10 and 11: the broker holds 12 and 13 finished
    t.mark_committed(10)  # a plain commit (metadata too large): the broker forgets them
    assert t.buffered == 4

"""The retry schedule: work items due in time order, ties in push order (pure)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from work_support import TPS, make_work

from bridge.dlq.writer import Reason
from bridge.pipeline.schedule import RetrySchedule
from bridge.pipeline.work import Work

REASON = Reason("send", "InvalidArgument", "bad", 1)


def test_pop_due_takes_what_is_due_earliest_first() -> None:
    schedule = RetrySchedule()
    late, early, middle = make_work(offset=0), make_work(offset=1), make_work(offset=2)
    schedule.push(3.0, late)
    schedule.push(1.0, early)
    schedule.push(2.0, middle, REASON)
    assert len(schedule) == 3
    assert schedule.pop_due(0.5) == []
    assert schedule.pop_due(2.0) == [(early, None), (middle, REASON)]  # due at `now` counts
    assert len(schedule) == 1
    assert schedule.pop_due(10.0) == [(late, None)]
    assert len(schedule) == 0


def test_ties_come_out_in_push_order() -> None:
    schedule = RetrySchedule()
    works = [make_work(offset=i) for i in range(20)]
    for work in works:
        schedule.push(5.0, work)
    assert [w for w, _ in schedule.pop_due(5.0)] == works


def test_next_due_is_the_earliest_and_none_when_empty() -> None:
    schedule = RetrySchedule()
    assert schedule.next_due() is None
    schedule.push(4.0, make_work(offset=0))
    schedule.push(2.5, make_work(offset=1))
    assert schedule.next_due() == 2.5
    schedule.pop_due(3.0)
    assert schedule.next_due() == 4.0
    schedule.pop_due(4.0)
    assert schedule.next_due() is None


def test_drop_forgets_the_partitions_given_and_keeps_the_order_of_the_rest() -> None:
    schedule = RetrySchedule()
    gone, kept = TPS[0], TPS[1]
    a, b, c, d = (make_work(tp, i) for i, tp in enumerate([gone, kept, gone, kept]))
    schedule.push(4.0, a)
    schedule.push(3.0, b)
    schedule.push(1.0, c, REASON)  # dead-letter writes of the partition go too
    schedule.push(2.0, d)
    assert schedule.drop({gone}) == 2
    assert len(schedule) == 2
    assert schedule.next_due() == 2.0
    assert schedule.drop({TPS[2]}) == 0
    assert schedule.pop_due(10.0) == [(d, None), (b, None)]


def test_drop_keeps_a_valid_heap() -> None:
    # Pushed in this order the heap is [1, 2, 10, 3, 4, 11, 12]; taking out the 2 without
    # re-heapifying would leave 10 above 3 and 4, and pop them out of order.
    schedule = RetrySchedule()
    gone, kept = TPS[0], TPS[1]
    for i, due in enumerate([1, 2, 10, 3, 4, 11, 12]):
        schedule.push(float(due), make_work(gone if due == 2 else kept, i))
    assert schedule.drop({gone}) == 1
    assert [w.offset for w, _ in schedule.pop_due(100.0)] == [0, 3, 4, 2, 5, 6]


def test_clear_forgets_everything() -> None:
    schedule = RetrySchedule()
    for i in range(5):
        schedule.push(float(i), make_work(offset=i))
    schedule.clear()
    assert len(schedule) == 0
    assert schedule.next_due() is None
    assert schedule.pop_due(100.0) == []
    schedule.push(1.0, w := make_work())  # still usable after a clear
    assert schedule.pop_due(1.0) == [(w, None)]


class ScheduleAgainstASortedList(RuleBasedStateMachine):
    """The heap against the obvious model: a list kept sorted by (due, push number)."""

    def __init__(self) -> None:
        super().__init__()
        self.schedule = RetrySchedule()
        self.model: list[tuple[float, int, Work, Reason | None]] = []
        self.pushed = 0

    @rule(
        due=st.integers(0, 20).map(float),  # few values: many ties
        tp=st.sampled_from(TPS),
        dead_letter=st.booleans(),
    )
    def push(self, due: float, tp: tuple[str, int], dead_letter: bool) -> None:
        work = make_work(tp, self.pushed)
        reason = REASON if dead_letter else None
        self.schedule.push(due, work, reason)
        self.model.append((due, self.pushed, work, reason))
        self.model.sort(key=lambda item: (item[0], item[1]))
        self.pushed += 1

    @rule(now=st.integers(-1, 22).map(float))
    def pop_due(self, now: float) -> None:
        expected = [(w, r) for due, _, w, r in self.model if due <= now]
        self.model = [item for item in self.model if item[0] > now]
        assert self.schedule.pop_due(now) == expected

    @rule(tps=st.sets(st.sampled_from(TPS)))
    def drop(self, tps: set[tuple[str, int]]) -> None:
        kept = [item for item in self.model if item[2].tp not in tps]
        assert self.schedule.drop(tps) == len(self.model) - len(kept)
        self.model = kept

    @rule()
    def clear(self) -> None:
        self.schedule.clear()
        self.model = []

    @invariant()
    def same_size_and_next_due(self) -> None:
        assert len(self.schedule) == len(self.model)
        assert self.schedule.next_due() == (self.model[0][0] if self.model else None)


ScheduleAgainstASortedList.TestCase.settings = settings(
    max_examples=50, stateful_step_count=25, deadline=None
)
test_schedule_against_a_sorted_list = ScheduleAgainstASortedList.TestCase

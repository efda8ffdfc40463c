"""Flow control: take, hold, pause and resume, driven by an injected clock (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.pipeline.flow import BATCH_TAKE, FIRST_TAKE, Change, FlowControl, Mode

EXAMPLES = settings(max_examples=150, deadline=None)
MAX = 100
FULL = MAX - 3
"""A buffer of ``MAX`` counts as full from ``MAX - 3`` records: the takes leave 3 (one per 30,
POLL_RESERVE_PER) for the polls of a full buffer awaiting a commit's answer."""


def test_takes_while_there_is_room() -> None:
    flow = FlowControl(MAX, pause_after_s=1.0)
    assert flow.update(0, now=0.0) is Change.NONE
    assert flow.mode is Mode.TAKE
    assert flow.update(FULL - 1, now=1.0) is Change.NONE
    assert flow.mode is Mode.TAKE
    assert flow.full_since is None


def test_full_holds_first_and_pauses_only_after_pause_after_s() -> None:
    flow = FlowControl(MAX, pause_after_s=1.0)
    assert flow.update(FULL, now=10.0) is Change.NONE
    assert flow.mode is Mode.HOLD
    assert flow.full_since == 10.0
    assert flow.update(MAX, now=10.5) is Change.NONE
    assert flow.update(MAX, now=10.999) is Change.NONE
    assert flow.mode is Mode.HOLD and not flow.paused
    assert flow.update(MAX, now=11.0) is Change.PAUSE
    assert flow.mode is Mode.PAUSED and flow.paused
    # Said once: the next turns change nothing.
    assert flow.update(MAX, now=12.0) is Change.NONE
    assert flow.mode is Mode.PAUSED


def test_room_freed_before_pause_after_s_resets_the_clock() -> None:
    flow = FlowControl(MAX, pause_after_s=1.0)
    flow.update(FULL, now=0.0)
    flow.update(FULL - 1, now=0.9)  # a call finished: taking again
    assert flow.mode is Mode.TAKE and flow.full_since is None
    assert flow.update(FULL, now=1.5) is Change.NONE
    assert flow.update(FULL, now=2.4) is Change.NONE  # full again only since 1.5
    assert flow.mode is Mode.HOLD
    assert flow.update(FULL, now=2.5) is Change.PAUSE


def test_resumes_only_below_half_the_buffer() -> None:
    flow = FlowControl(MAX, pause_after_s=0.5)
    flow.update(MAX, now=0.0)
    assert flow.update(MAX, now=0.5) is Change.PAUSE
    assert flow.update(FULL - 1, now=1.0) is Change.NONE  # not full, but not half empty
    assert flow.mode is Mode.PAUSED
    assert flow.update(MAX // 2, now=2.0) is Change.NONE  # exactly half: still paused
    assert flow.mode is Mode.PAUSED
    assert flow.update(MAX // 2 - 1, now=3.0) is Change.RESUME
    assert flow.mode is Mode.TAKE and not flow.paused
    assert flow.update(MAX // 2 - 1, now=4.0) is Change.NONE


def test_full_again_after_a_resume_waits_the_whole_pause_after_s_again() -> None:
    flow = FlowControl(MAX, pause_after_s=1.0)
    flow.update(MAX, now=0.0)
    assert flow.update(MAX, now=1.0) is Change.PAUSE
    assert flow.update(0, now=2.0) is Change.RESUME
    assert flow.update(MAX, now=3.0) is Change.NONE
    assert flow.mode is Mode.HOLD
    assert flow.update(MAX, now=3.9) is Change.NONE
    assert flow.update(MAX, now=4.0) is Change.PAUSE


def test_pause_after_zero_pauses_as_soon_as_full() -> None:
    flow = FlowControl(MAX, pause_after_s=0.0)
    assert flow.update(FULL, now=5.0) is Change.PAUSE


@pytest.mark.parametrize(
    ("max_buffered", "buffered", "room"),
    [
        (100, 0, 97),  # 3 left for the polls of a full buffer (POLL_RESERVE_PER)
        (100, 40, 57),
        (100, 96, 1),
        (100, 100, 1),  # at least 1 while taking
        (100, 150, 1),  # over the bound (a rebalance): still never 0 or negative
        (10_000, 0, BATCH_TAKE),  # at most one take per turn
        (10_000, 9_700, 200),  # 100 left for the polls
    ],
)
def test_room_bounds(max_buffered: int, buffered: int, room: int) -> None:
    assert FlowControl(max_buffered).room(buffered) == room


@EXAMPLES
@given(
    st.integers(2, 50).flatmap(
        lambda m: st.tuples(
            st.just(m),
            st.floats(0.0, 3.0),
            st.lists(st.tuples(st.integers(0, m + 2), st.floats(0.0, 1.5)), max_size=40),
        )
    )
)
def test_never_paused_unless_full_for_pause_after_s(
    case: tuple[int, float, list[tuple[int, float]]],
) -> None:
    max_buffered, pause_after_s, steps = case
    flow = FlowControl(max_buffered, pause_after_s)
    now = 0.0
    full_since: float | None = None  # the model's own account of how long it has been full
    paused = False
    for buffered, dt in steps:
        now += dt
        full = buffered >= max_buffered - flow.reserve
        if not full:
            full_since = None
        elif full_since is None:
            full_since = now
        change = flow.update(buffered, now)
        if change is Change.PAUSE:
            assert not paused
            assert full_since is not None and now - full_since >= pause_after_s
            paused = True
        elif change is Change.RESUME:
            assert paused
            assert buffered < max_buffered // 2
            paused = False
        else:
            # Nothing said although the model would pause: the state machine missed it.
            assert paused or full_since is None or now - full_since < pause_after_s
        assert flow.paused is paused
        expected_mode = Mode.PAUSED if paused else Mode.HOLD if full else Mode.TAKE
        assert flow.mode is expected_mode
        assert 1 <= flow.room(buffered) <= BATCH_TAKE
        if flow.mode is Mode.TAKE:
            assert buffered + flow.room(buffered) <= max_buffered - flow.reserve
        # Polls while full: only until the reserve is used up (each may take a record).
        assert not flow.polls(True, max_buffered) or flow.paused


def test_the_first_take_under_a_byte_budget_is_small_until_sizes_are_known() -> None:
    """The loop cannot see a record's size before taking it: with bytes bounding the buffer,
    the first take is :data:`FIRST_TAKE`, then what fits at the measured mean cost."""
    budget = 16 * 2**20
    flow = FlowControl(10_000, max_bytes=budget)
    flow.update(0, now=0.0, held_bytes=0, unfinished=0)
    assert flow.room(0, 0) == FIRST_TAKE
    # 8 records of 900 KB (about 1.8 MB each once mapped): one more fits.
    big = 1_843_968
    flow.update(8, now=0.1, held_bytes=8 * big, unfinished=8)
    assert flow.room(8, 8 * big) == 1
    # Small records: a full take at once.
    small = FlowControl(10_000, max_bytes=budget)
    small.update(0, now=0.0)
    assert small.room(0) == FIRST_TAKE
    small.update(8, now=0.1, held_bytes=8 * 2_000, unfinished=8)
    assert small.room(8, 8 * 2_000) == BATCH_TAKE
    # All finished: the measured size is kept.
    small.update(8, now=0.2, held_bytes=0, unfinished=0)
    assert small.room(8, 0) == BATCH_TAKE
    # No byte budget: no first-take limit.
    assert FlowControl(10_000).room(0) == BATCH_TAKE


def test_a_full_buffer_polls_for_a_commit_answer_only_within_its_reserve() -> None:
    flow = FlowControl(300)
    assert flow.reserve == 10
    flow.update(290, 0.0)  # full: the takes stop 10 short of the bound
    assert flow.mode is Mode.HOLD
    assert flow.polls(True, 290) and flow.polls(True, 299)
    assert not flow.polls(True, 300)  # a poll could take a record over the bound
    assert not flow.polls(False, 290)  # no answer awaited: nothing to poll for
    flow.update(300, 1.5)
    assert flow.paused and flow.polls(False, 300)  # paused: polls for membership, takes none

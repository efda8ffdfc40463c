"""The dispatcher: ready queue, calls in flight and the rate limit (pure)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from work_support import TPS, make_work

from bridge.pipeline.dispatch import Dispatcher
from bridge.pipeline.work import Work
from bridge.sink.concurrency import ConcurrencyController
from bridge.sink.concurrency import Outcome as Load
from bridge.sink.outcome import Kind, Outcome
from bridge.sink.ratelimit import RateController

A, B, C = TPS

ANSWERED = [Outcome(Kind.DELIVERED, event_id="e")]
"""An answered call, as the controllers are told of it."""


def unlimited() -> RateController:
    return RateController(None, adaptive=False)


def batch_of(n: int, tp: tuple[str, int] = A, start: int = 0) -> list[Work]:
    return [make_work(tp, start + i) for i in range(n)]


def everything(_: Work) -> bool:
    return True


def test_starts_at_most_max_in_flight_calls() -> None:
    d = Dispatcher(2, unlimited())
    batches = [batch_of(3, start=10 * i) for i in range(4)]
    for batch in batches:
        d.submit(batch)
    started = d.startable(0.0, everything)
    assert [b for _, b in started] == batches[:2]  # in submit order
    assert len(d.in_flight) == 2 and len(d.ready) == 2
    assert d.startable(0.1, everything) == []  # no slot free
    call_id, batch = started[0]
    assert d.complete(call_id, ANSWERED, 0.0) == (batch, 0.0)  # its batch and when it started
    (again,) = d.startable(0.2, everything)
    assert again[1] == batches[2] and again[0] not in {cid for cid, _ in started}
    assert len(d.in_flight) == 2


def test_call_ids_are_unique() -> None:
    d = Dispatcher(1, unlimited())
    ids = []
    for i in range(5):
        d.submit(batch_of(1, start=i))
        ((call_id, _),) = d.startable(float(i), everything)
        ids.append(call_id)
        d.complete(call_id, ANSWERED, 0.0)
    assert len(set(ids)) == 5


def test_attempts_are_counted_when_the_call_starts() -> None:
    d = Dispatcher(1, unlimited())
    first, second = batch_of(2), batch_of(2, start=2)
    d.submit(first)
    d.submit(second)
    assert all(w.attempts == 0 for w in first + second)  # queued is not sent
    d.startable(0.0, everything)
    assert [w.attempts for w in first + second] == [1, 1, 0, 0]


def test_a_retry_adds_to_the_attempts_it_had() -> None:
    d = Dispatcher(1, unlimited())
    retried = [make_work(A, 0, attempts=2, held=4)]
    d.submit(retried)
    d.startable(0.0, everything)
    assert (retried[0].attempts, retried[0].held) == (3, 4)


def test_entries_no_longer_sendable_are_left_out_and_empty_batches_dropped() -> None:
    d = Dispatcher(4, unlimited())
    mixed = [make_work(A, 0), make_work(B, 0), make_work(A, 1)]
    revoked_only = batch_of(2, B, start=5)
    d.submit(mixed)
    d.submit(revoked_only)
    d.submit(last := batch_of(1, C))
    started = d.startable(0.0, lambda w: w.tp != B)
    assert [b for _, b in started] == [[mixed[0], mixed[2]], last]
    assert mixed[1].attempts == 0 and all(w.attempts == 0 for w in revoked_only)
    assert len(d.in_flight) == 2  # the emptied batch took no call slot
    assert not d.ready


def test_rate_limit_holds_back_a_batch_until_its_tokens_are_there() -> None:
    d = Dispatcher(10, RateController(100.0, adaptive=False))  # 100 entries/s, 10 at once
    d.submit(first := batch_of(10))
    d.submit(second := batch_of(10, start=10))
    assert [b for _, b in d.startable(0.0, everything)] == [first]
    assert d.wait_until(0.0) == 0.1  # 10 entries at 100/s
    assert d.rate_wait_until == 0.1
    assert d.startable(0.05, everything) == []
    assert [b for _, b in d.startable(0.1, everything)] == [second]
    assert d.wait_until(0.0) is None  # nothing waits any more


def test_wait_until_is_none_without_a_ready_batch_or_a_rate_wait() -> None:
    d = Dispatcher(1, unlimited())
    assert d.wait_until(0.0) is None
    d.submit(batch_of(1))
    d.submit(batch_of(1, start=1))
    d.startable(0.0, everything)
    assert d.ready and d.wait_until(0.0) is None  # held back by the call slot, not the rate


def test_rate_counts_only_the_entries_sent() -> None:
    rate = RateController(None, adaptive=True, decrease_factor=0.5, floor=1.0)
    d = Dispatcher(4, rate)
    d.submit(batch_of(40, A) + batch_of(60, B))
    d.startable(0.0, lambda w: w.tp == A)
    d.rate.throttled(0.1)
    d.rate.throttled(5.1)  # an interval of judgement ends (at low rates after 5 s at most)
    # Throttling is judged against the 40 entries sent, not the 100 queued: 2 of 40 throttled,
    # and the limit becomes half of what got through over the interval.
    assert rate.limit == 0.5 * (40 - 2) / 5.0


def test_submit_of_an_empty_batch_is_ignored() -> None:
    d = Dispatcher(1, unlimited())
    d.submit([])
    assert d.idle and not d.ready


def test_take_back_removes_queued_entries_of_the_partitions_only() -> None:
    d = Dispatcher(1, unlimited())
    d.submit(running := batch_of(1, A))
    d.startable(0.0, everything)
    d.submit([make_work(A, 1), make_work(B, 1)])
    d.submit([make_work(A, 2)])
    d.submit(kept := [make_work(C, 0)])
    d.take_back({A})
    assert [[w.tp for w in b] for b in d.ready] == [[B], [C]]
    assert d.ready[1] == kept
    # A call under way is not taken back: its answer is judged (and dropped if not owned).
    assert next(iter(d.in_flight.values()))[0] == running


def test_complete_of_an_unknown_or_abandoned_call_is_none() -> None:
    d = Dispatcher(2, unlimited())
    assert d.complete(12345, ANSWERED, 0.0) is None
    d.submit(batch_of(2))
    ((call_id, _),) = d.startable(0.0, everything)
    assert d.complete(call_id, ANSWERED, 0.0) is not None
    assert d.complete(call_id, ANSWERED, 0.0) is None  # answered once only


def test_abandon_forgets_queued_and_running_calls() -> None:
    d = Dispatcher(1, unlimited())
    d.submit(batch_of(1))
    d.submit(batch_of(1, start=1))
    ((call_id, _),) = d.startable(0.0, everything)
    assert not d.idle
    d.abandon(0.0)
    assert d.idle
    assert d.complete(call_id, ANSWERED, 0.0) is None  # its late answer is ignored


def test_throttled_lowers_the_adaptive_rate_only() -> None:
    for adaptive in (True, False):
        d = Dispatcher(1, RateController(None, adaptive=adaptive))
        for k in range(40):  # a call of 10 every 20 ms, each with a throttled entry
            d.submit(batch_of(10, start=10 * k))
            ((call_id, _),) = d.startable(k * 0.02, everything)
            d.complete(call_id, ANSWERED, 0.0)
            d.rate.throttled(k * 0.02 + 0.01)
        assert (d.rate.limit < math.inf) is adaptive


# -- properties ----------------------------------------------------------------------------------

STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 5)),
        st.tuples(st.just("start"), st.just(0)),
        st.tuples(st.just("complete"), st.integers(0, 10)),
        st.tuples(st.just("take_back"), st.integers(0, len(TPS) - 1)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4), STEPS, st.sets(st.sampled_from(TPS)))
def test_in_flight_never_exceeds_the_limit_and_each_entry_starts_once(
    max_in_flight: int, steps: list[tuple[str, int]], revoked: set[tuple[str, int]]
) -> None:
    d = Dispatcher(max_in_flight, unlimited())
    submitted: list[Work] = []
    taken_back: set[int] = set()
    started: list[Work] = []
    offsets = iter(range(10**6))

    def sendable(w: Work) -> bool:
        return w.tp not in revoked

    def start(now: float) -> None:
        for _, batch in d.startable(now, sendable):
            assert batch and all(sendable(w) for w in batch)
            started.extend(batch)
        assert len(d.in_flight) <= max_in_flight

    for i, (op, arg) in enumerate(steps):
        if op == "submit":
            batch = [make_work(TPS[(i + k) % len(TPS)], next(offsets)) for k in range(arg)]
            submitted.extend(batch)
            d.submit(batch)
        elif op == "start":
            start(float(i))
        elif op == "complete" and d.in_flight:
            ids = sorted(d.in_flight)
            assert d.complete(ids[arg % len(ids)], ANSWERED, 0.0) is not None
        elif op == "take_back":
            tp = TPS[arg]
            taken_back.update(id(w) for b in d.ready for w in b if w.tp == tp)
            d.take_back({tp})
    # Drain: answer every call, start what is left.
    now = float(len(steps))
    while not d.idle:
        for call_id in list(d.in_flight):
            d.complete(call_id, ANSWERED, 0.0)
        start(now)
        now += 1.0

    expected = [w for w in submitted if sendable(w) and id(w) not in taken_back]
    assert sorted(map(id, started)) == sorted(map(id, expected))  # each exactly once
    for w in submitted:
        assert w.attempts == (1 if id(w) in {id(s) for s in started} else 0)


def test_the_round_trip_leaves_out_half_the_time_answers_waited_for_the_loop() -> None:
    """Answers wait while the loop maps records; counted in the round trip, the loop's own work
    would look like the service slowing down and shrink the concurrency as throughput grows."""
    told: list[tuple[float, float]] = []

    class Recorder(ConcurrencyController):
        def finished(
            self,
            rtt_s: float,
            outcome: Load,
            now: float,
            sent_at: float | None = None,
            unseen_s: float = 0.0,
        ) -> None:
            told.append((rtt_s, unseen_s))
            super().finished(rtt_s, outcome, now, sent_at, unseen_s)

    d = Dispatcher(2, unlimited(), concurrency=Recorder(2, adaptive=False))
    d.submit([make_work(TPS[0], 0)])
    d.submit([make_work(TPS[0], 1)])
    first, second = (call_id for call_id, _ in d.startable(0.0, lambda _: True))
    d.complete(first, ANSWERED, 0.040)  # seen at once
    d.complete(second, ANSWERED, 0.040, unseen_s=0.030)  # the loop had not looked for 30 ms
    # the round trip as seen, and how long the loop was away: the controller weighs them
    assert [x for pair in told for x in pair] == pytest.approx([0.040, 0.0, 0.040, 0.030])


def test_a_retry_goes_ahead_of_fresh_batches_behind_earlier_retries() -> None:
    """Under a rate limit the queue holds seconds of fresh entries: a retry behind them would
    hold its partition's committed offset (and fill the buffer) all that time."""
    d = Dispatcher(1, RateController(10.0, adaptive=False))
    fresh = [batch_of(2, start=10 * i) for i in range(3)]
    for batch in fresh:
        d.submit(batch)
    first = [make_work(B, 0, attempts=1)]
    second = [make_work(C, 0, attempts=3), make_work(C, 1)]
    d.submit(first)
    d.submit(second)
    assert list(d.ready) == [first, second, *fresh]


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=0, max_value=3), max_size=30))
def test_retries_keep_their_order_and_fresh_batches_theirs(attempts: list[int]) -> None:
    d = Dispatcher(1, unlimited())
    batches = [[make_work(A, i, attempts=a)] for i, a in enumerate(attempts)]
    for batch in batches:
        d.submit(batch)
    queued = [b[0].offset for b in d.ready]
    retries = [i for i, a in enumerate(attempts) if a]
    fresh = [i for i, a in enumerate(attempts) if not a]
    assert queued == retries + fresh

"""Adaptive concurrency: the pure controller driven by simulated servers (Vector's way of testing).

A client with endless work starts calls while fewer than ``limit`` are in flight; a simulated
server decides each call's latency and outcome from how many calls it has in flight. Time is
simulated (a heap of completion times), so each run of many simulated seconds takes milliseconds.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sink import outcome as sink
from bridge.sink.concurrency import INITIAL_LIMIT, ConcurrencyController, Outcome, call_outcome

# (calls in flight at the server when this one arrived, rng) -> (latency s, outcome)
Server = Callable[[int, random.Random], tuple[float, Outcome]]


@dataclass
class Run:
    """What a simulation saw: the limit over time (sampled at every event) and the calls."""

    limits: list[tuple[float, int]] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    end: float = 0.0

    def mean_limit(self, since: float) -> float:
        """The time-weighted mean of the limit from ``since`` to the end."""
        total = weight = 0.0
        for (t0, limit), (t1, _) in zip(self.limits, self.limits[1:], strict=False):
            if t0 >= since:
                total += limit * (t1 - t0)
                weight += t1 - t0
        return total / weight

    def limits_since(self, since: float) -> list[int]:
        return [limit for t, limit in self.limits if t >= since]


def simulate(
    controller: ConcurrencyController,
    server: Server,
    seconds: float,
    seed: int = 1,
    start: float = 0.0,
) -> Run:
    """Run a saturating client against ``server`` from ``start`` for ``seconds`` (simulated).

    Calls still in flight at the end are finished (at their time) before returning.
    """
    rng = random.Random(seed)
    run = Run()
    now = start
    seconds += start
    pending: list[tuple[float, int, float, Outcome]] = []  # (done at, seq, rtt, outcome)
    seq = 0
    while now < seconds:
        while controller.in_flight < controller.limit:
            latency, outcome = server(controller.in_flight + 1, rng)
            controller.started(now)
            heapq.heappush(pending, (now + latency, seq, latency, outcome))
            seq += 1
        now, _, rtt, outcome = heapq.heappop(pending)
        controller.finished(rtt, outcome, now)
        if outcome is Outcome.OK:
            run.ok += 1
        else:
            run.failed += 1
        run.limits.append((now, controller.limit))
        assert 1 <= controller.limit <= controller.ceiling
    while pending:
        now, _, rtt, outcome = heapq.heappop(pending)
        controller.finished(rtt, outcome, now)
    run.end = now
    return run


def flat(latency: float) -> Server:
    return lambda in_flight, rng: (latency, Outcome.OK)


def knee(latency: float, at: int) -> Server:
    """Flat up to ``at`` calls in flight, then queueing: latency grows with the excess."""
    return lambda in_flight, rng: (latency * max(1.0, in_flight / at), Outcome.OK)


def fails_above(latency: float, most: int) -> Server:
    """Answers 429 (fast) to a call arriving when more than ``most`` are in flight."""

    def server(in_flight: int, rng: random.Random) -> tuple[float, Outcome]:
        if in_flight > most:
            return latency / 5, Outcome.BACKPRESSURE
        return latency, Outcome.OK

    return server


def noisy(latency: float, sd: float) -> Server:
    return lambda in_flight, rng: (max(0.001, rng.gauss(latency, sd)), Outcome.OK)


def test_flat_latency_grows_to_the_ceiling_fast_and_stays() -> None:
    controller = ConcurrencyController(64)
    run = simulate(controller, flat(0.025), 5.0)
    reached = next(t for t, limit in run.limits if limit == 64)
    assert reached < 0.5  # slow start: doubling per RTT, not +1 per RTT (1.6 s)
    assert run.limits_since(reached) == [64] * len(run.limits_since(reached))


@pytest.mark.parametrize("latency", [0.005, 0.025, 0.1])
def test_flat_latency_at_any_speed_reaches_the_ceiling(latency: float) -> None:
    controller = ConcurrencyController(128)
    simulate(controller, flat(latency), 3.0 + 20 * latency)
    assert controller.limit == 128


@pytest.mark.parametrize("at", [5, 20, 48])
@pytest.mark.parametrize("tolerance", [0.25, 1.0])
def test_latency_rising_above_a_knee_holds_the_limit_within_the_tolerance(
    at: int, tolerance: float
) -> None:
    # Above the knee calls only queue: the limit settles where the latency is between the
    # no-load one and (1 + tolerance) times it, i.e. between the knee and (1 + tolerance) x it.
    controller = ConcurrencyController(400, rtt_tolerance=tolerance)
    run = simulate(controller, knee(0.025, at), 20.0)
    mean = run.mean_limit(since=5.0)
    assert at * 0.9 <= mean <= at * (1 + tolerance) * 1.1, mean
    # and the throughput is there: at least 90% of the server's best (at/latency)
    assert run.ok / 20.0 >= 0.9 * at / 0.025 * (15 / 20)


@pytest.mark.parametrize("most", [3, 16, 40])
def test_a_server_failing_above_n_in_flight_keeps_the_limit_around_n(most: int) -> None:
    controller = ConcurrencyController(128)
    run = simulate(controller, fails_above(0.025, most), 20.0)
    mean = run.mean_limit(since=5.0)
    assert most * 0.75 <= mean <= most * 1.15 + 1, mean
    # It keeps probing one above (+1 per interval, as Vector does), so some calls fail; the
    # calls that succeed still carry most of what the server can take.
    assert run.ok / 20.0 >= 0.7 * most / 0.025


def test_latency_noise_does_not_hold_the_limit_down() -> None:
    controller = ConcurrencyController(64)
    run = simulate(controller, noisy(0.025, 0.005), 10.0, seed=7)
    assert run.mean_limit(since=3.0) >= 0.8 * 64


def test_a_service_that_became_slower_on_its_own_is_relearned() -> None:
    controller = ConcurrencyController(64)
    before = simulate(controller, flat(0.01), 2.0)
    assert controller.limit == 64
    # 10 ms -> 80 ms for every call, however many are in flight: not our load
    run = simulate(controller, flat(0.08), 10.0, start=before.end)
    assert min(run.limits_since(0.0)) < 64  # it did back off at first (RTT x8)...
    assert run.mean_limit(since=before.end + 2.0) >= 0.95 * 64  # ...and learned the new RTT


def test_errors_that_say_nothing_about_load_do_not_shrink_the_limit() -> None:
    controller = ConcurrencyController(32)
    run = simulate(controller, lambda n, rng: (0.02, Outcome.OTHER), 2.0)
    # no RTT sample: no evidence to grow either
    assert set(run.limits_since(0.0)) == {INITIAL_LIMIT}
    controller = ConcurrencyController(32)
    simulate(controller, flat(0.02), 1.0)
    assert controller.limit == 32
    simulate(controller, lambda n, rng: (0.02, Outcome.OTHER), 2.0)
    assert controller.limit == 32


def test_backpressure_shrinks_by_the_ratio_once_per_interval() -> None:
    controller = ConcurrencyController(100, initial=100)
    controller.started(0.0)
    controller.finished(0.02, Outcome.OK, 0.02)  # first interval: learns the RTT
    assert controller.limit == 100
    for _ in range(5):  # a burst of failures inside one interval counts once
        controller.started(0.02)
    for k in range(5):
        controller.finished(0.001, Outcome.BACKPRESSURE, 0.0201 + k * 0.001)
    assert controller.limit == 100  # the interval is not over yet
    controller.started(0.03)
    controller.finished(0.001, Outcome.BACKPRESSURE, 0.05)
    assert controller.limit == 90


def test_answers_to_calls_sent_before_a_cut_do_not_cut_again() -> None:
    # Seen in benchmarks/adaptive.py on a busy 2-core machine: a stall of a few tens of ms made
    # the calls in flight come back slow over several intervals (one interval is one no-load
    # RTT), and each interval cut again on the same calls: 16 -> 1 within ~100 ms, then a climb
    # back, over and over; the bridge could not keep up with 5,000 events/s at 25 ms. As in TCP
    # (one reduction per window) and in RateController (``sent_at``), the answers to calls sent
    # before a cut tell how the old limit fared: the cut already answered them.
    controller = ConcurrencyController(64)
    before = simulate(controller, flat(0.025), 1.0)
    assert controller.limit == 64
    stall = before.end + 0.01
    for _ in range(64):
        controller.started(stall)
    for k in range(64):  # all sent at once, answered slow over 100 ms: four intervals
        done = stall + 0.05 + k * 0.1 / 64
        controller.finished(done - stall, Outcome.OK, done)
    cut = controller.limit
    assert 32 <= cut < 64  # one cut (by at most half), not 64 -> 32 -> 16 -> 8
    # calls sent after the cut count again: still slow, so the limit is cut once more
    now = stall + 0.2
    for _ in range(cut):
        controller.started(now)
    for k in range(cut):
        controller.finished(0.06, Outcome.OK, now + 0.06 + k * 0.001)
    assert cut // 2 <= controller.limit < cut


def test_no_growth_without_using_the_limit() -> None:
    controller = ConcurrencyController(64, initial=8)
    now = 0.0
    for _ in range(200):  # only 3 calls at a time although 8 are allowed
        for _ in range(3):
            controller.started(now)
        now += 0.02
        for _ in range(3):
            controller.finished(0.02, Outcome.OK, now)
    assert controller.limit == 8


def test_fixed_mode_never_moves() -> None:
    controller = ConcurrencyController(48, adaptive=False)
    assert controller.limit == 48
    run = simulate(controller, fails_above(0.025, 4), 2.0)
    assert set(run.limits_since(0.0)) == {48}


def test_what_a_call_says_about_load() -> None:
    throttled_entry = sink.classify_entry({"ErrorCode": "ThrottlingException", "ErrorMessage": ""})
    delivered = sink.classify_entry({"EventId": "1"})
    assert call_outcome([delivered, throttled_entry]) is Outcome.OK  # answered: a valid RTT
    assert call_outcome([]) is Outcome.OK
    for code, status in [("ThrottlingException", 400), ("InternalException", 500), ("Oops", 503)]:
        failed = sink.classify_call_error(code, status, "")
        assert call_outcome([failed, failed]) is Outcome.BACKPRESSURE, code
    assert call_outcome([sink.transport_error("ReadTimeoutError", "")]) is Outcome.BACKPRESSURE
    for code in ["ValidationException", "AccessDeniedException", "ExpiredTokenException"]:
        assert call_outcome([sink.classify_call_error(code, 400, "")]) is Outcome.OTHER, code


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="ceiling"):
        ConcurrencyController(0)
    with pytest.raises(ValueError, match="decrease_ratio"):
        ConcurrencyController(4, decrease_ratio=1.0)


events = st.lists(
    st.tuples(
        st.booleans(),  # start (True) or finish (False)
        st.floats(min_value=0, max_value=0.5),  # time step
        st.floats(min_value=0, max_value=2.0),  # rtt
        st.sampled_from(list(Outcome)),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=256), st.integers(min_value=-5, max_value=300), events)
def test_limit_always_within_one_and_the_ceiling(
    ceiling: int, initial: int, steps: list[tuple[bool, float, float, Outcome]]
) -> None:
    controller = ConcurrencyController(ceiling, initial=initial)
    now = 0.0
    for start, step, rtt, outcome in steps:
        now += step
        if start:
            controller.started(now)
        else:
            controller.finished(rtt, outcome, now)
        assert 1 <= controller.limit <= ceiling
        assert controller.in_flight >= 0


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=2, max_value=256), events)
def test_an_interval_with_backpressure_never_grows_the_limit(
    ceiling: int, steps: list[tuple[bool, float, float, Outcome]]
) -> None:
    controller = ConcurrencyController(ceiling, initial=ceiling // 2)
    now = 0.0
    for start, step, rtt, _ in steps:
        now += step
        before = controller.limit
        if start:
            controller.started(now)
        else:
            controller.finished(rtt, Outcome.BACKPRESSURE, now)
        assert controller.limit <= before


def test_half_the_time_the_caller_was_away_is_taken_off_but_not_off_the_baseline() -> None:
    controller = ConcurrencyController(64, initial=4)
    for _ in range(4):
        controller.started(0.0)
    controller.finished(0.025, Outcome.OK, 0.025)  # first interval: the no-load RTT
    assert controller.baseline_rtt == pytest.approx(0.025)
    # seen 40 ms after the start, the loop away for the last 20 (< one RTT): 30 ms decides,
    # the baseline stays the lowest round trip as seen
    for k in range(3):
        controller.finished(0.040, Outcome.OK, 0.065 + k * 0.001, unseen_s=0.020)
    assert controller.baseline_rtt == pytest.approx(0.025)
    assert controller.limit == 8  # 30 ms is within the band: slow start goes on


def test_answers_left_waiting_longer_than_a_round_trip_are_no_sample() -> None:
    # Seen in benchmarks/adaptive.py: each stall of the loop of 100-200 ms (answers waiting
    # while it mapped a large fetch) halved the limit, 256 -> 128 -> 75 in one run.
    controller = ConcurrencyController(256, initial=256)
    before = simulate(controller, flat(0.025), 1.0)
    assert controller.limit == 256
    now = before.end + 0.01
    for _ in range(256):
        controller.started(now)
    for k in range(256):  # answers seen over 100 ms (four intervals), the caller away 150 ms
        controller.finished(0.175, Outcome.OK, now + 0.175 + k * 0.1 / 256, unseen_s=0.150)
    assert controller.limit == 256
    # the same round trips, seen promptly: the service is slow, the limit is cut
    now += 0.3
    for _ in range(256):
        controller.started(now)
    for k in range(256):
        controller.finished(0.175, Outcome.OK, now + 0.175 + k * 0.1 / 256)
    assert controller.limit < 256


def test_one_slow_interval_is_no_queue_but_two_in_a_row_are() -> None:
    """A single interval of slow answers is as often a stall of the machine as a queue: one cut
    the limit from 182 to 101 at 25 ms, and it took 3 s at +1 per interval to come back."""

    def interval(c: ConcurrencyController, now: float, rtt: float) -> float:
        """A full interval: the limit's worth of calls started, all answered after ``rtt``."""
        for _ in range(c.limit):
            c.started(now)
        for _ in range(c.limit):
            c.finished(rtt, Outcome.OK, now + rtt)
        return now + rtt

    c = ConcurrencyController(64)
    now = 0.0
    while c.limit < 64:
        now = interval(c, now, 0.025)
    for rtt in (0.025, 0.1, 0.025, 0.025):  # one stall: 4x the no-load round trip
        now = interval(c, now, rtt)  # (an interval is judged when the next answer comes)
    assert c.limit == 64
    for rtt in (0.1, 0.1, 0.1):  # in a row: a queue
        now = interval(c, now, rtt)
    assert c.limit < 64

"""The rate controller: a ceiling that holds, and an adaptive limit that finds the quota.

The adaptive part is proved against a deterministic discrete-time simulation: an account quota as
a token bucket shared by every sender, random throttling from a seeded rng, bridges that can send
at most ``demand`` entries/s (their own CPU), answers arriving one latency later.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sink.ratelimit import RateController

STEP = 0.005  # simulated seconds per step
CALL = 10  # entries per call


def simulate(rc: RateController, seconds: float, batch: int = 10, step: float = 0.001) -> int:
    """Send batches as fast as the controller allows; entries sent in ``seconds``."""
    now, sent = 0.0, 0
    while now < seconds:
        wait = rc.delay(batch, now)
        if wait == 0:
            rc.sent(batch, now)
            sent += batch
        else:
            now += max(wait, step)
    return sent


@dataclass
class Quota:
    """The account's quota: a token bucket of ``rate`` entries/s holding at most ``burst``."""

    rate: float
    burst: float
    tokens: float = -1.0  # full at first
    at: float = 0.0

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, wanted: int, now: float) -> int:
        """How many of ``wanted`` entries the quota lets through at ``now``."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted


@dataclass
class Bridge:
    """A bridge that could send ``demand`` entries/s, paced by its controller."""

    controller: RateController
    demand: float = 12_500.0
    latency: float = 0.025
    legacy: bool = False  # tells throttled(now) per throttled call, as bridge/pipeline.py does
    start: float = 0.0  # sends nothing before this (a bridge joining the group later)
    budget: float = 0.0
    answers: deque[tuple[float, int, int, float]] = field(default_factory=deque)
    sent: int = 0
    throttled: int = 0
    delivered_per_s: dict[int, int] = field(default_factory=dict)
    sent_per_s: dict[int, int] = field(default_factory=dict)
    throttled_per_s: dict[int, int] = field(default_factory=dict)

    def delivered(self, start: float, end: float) -> float:
        """Entries/s that got through from second ``start`` to second ``end``."""
        seconds = range(int(start), int(end))
        return sum(self.delivered_per_s.get(s, 0) for s in seconds) / len(seconds)

    def throttled_share(self, start: float, end: float) -> float:
        seconds = range(int(start), int(end))
        sent = sum(self.sent_per_s.get(s, 0) for s in seconds)
        return sum(self.throttled_per_s.get(s, 0) for s in seconds) / max(1, sent)


def run(
    bridges: list[Bridge],
    seconds: float,
    quota: Quota | None = None,
    random_throttling: float = 0.0,
    competitor: tuple[float, float] = (0.0, 0.0),  # (entries/s, until) of a fixed-rate sender
    seed: int = 3,
) -> None:
    """Step every bridge (in a rotating order) and the competitor through ``seconds``."""
    rng = random.Random(seed)
    competitor_budget = 0.0
    steps = round(seconds / STEP)
    for i in range(steps):
        now = i * STEP
        second = int(now)
        if quota is not None and now < competitor[1]:
            competitor_budget += competitor[0] * STEP
            competitor_budget -= quota.take(int(competitor_budget), now)
            competitor_budget = min(competitor_budget, competitor[0])  # it drops what it can't
        for k in range(len(bridges)):
            bridge = bridges[(i + k) % len(bridges)]
            rc = bridge.controller
            while bridge.answers and bridge.answers[0][0] <= now:
                _, entries, throttled, sent_at = bridge.answers.popleft()
                if not bridge.legacy:
                    rc.answered(entries, throttled, now, sent_at)
                elif throttled:
                    rc.throttled(now)
            if now < bridge.start:
                continue
            per_step = bridge.demand * STEP
            bridge.budget = min(bridge.budget + per_step, 2 * (per_step + CALL))
            while bridge.budget >= CALL and rc.delay(CALL, now) == 0:
                rc.sent(CALL, now)
                bridge.budget -= CALL
                through = sum(rng.random() >= random_throttling for _ in range(CALL))
                if quota is not None:
                    through = quota.take(through, now)
                throttled = CALL - through
                bridge.answers.append((now + bridge.latency, CALL, throttled, now))
                bridge.sent += CALL
                bridge.throttled += throttled
                bridge.sent_per_s[second] = bridge.sent_per_s.get(second, 0) + CALL
                bridge.throttled_per_s[second] = bridge.throttled_per_s.get(second, 0) + throttled
                bridge.delivered_per_s[second] = bridge.delivered_per_s.get(second, 0) + through
            assert rc.limit >= rc.floor


def adaptive() -> RateController:
    return RateController(None, adaptive=True)


# -- the ceiling -------------------------------------------------------------------------------


def test_no_limit_means_no_wait() -> None:
    rc = RateController(None, adaptive=True)
    assert rc.limit == math.inf
    assert rc.delay(10, 0.0) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=50, max_value=20_000), st.integers(min_value=1, max_value=20))
def test_ceiling_holds_over_any_window(ceiling: float, batch: int) -> None:
    rc = RateController(ceiling, adaptive=False)
    sent = simulate(rc, 10.0, batch)
    # over 10 s: at most 10 s of the rate plus the 100 ms burst allowance and one batch
    assert sent <= ceiling * 10 + max(batch, ceiling * 0.1) + batch
    assert sent >= ceiling * 10 * 0.9 - batch  # and it is not needlessly slow


def test_off_when_not_adaptive() -> None:
    rc = RateController(None, adaptive=False)
    bridge = Bridge(rc)
    run([bridge], 5.0, quota=Quota(1000, 100))
    assert rc.limit == math.inf


# -- the adaptive limit, in simulation -----------------------------------------------------------


def test_unthrottled_the_limit_stays_off() -> None:
    bridge = Bridge(adaptive())
    run([bridge], 10.0)
    assert bridge.controller.limit == math.inf
    assert bridge.delivered(1, 10) >= 0.99 * bridge.demand


@pytest.mark.parametrize("latency", [0.005, 0.025, 0.3, 1.0])
def test_random_throttling_does_not_drive_the_rate_to_its_floor(latency: float) -> None:
    """10% of entries throttled whatever the rate: >= 80% of the unthrottled throughput."""
    unthrottled = Bridge(adaptive(), latency=latency)
    run([unthrottled], 30.0)
    bridge = Bridge(adaptive(), latency=latency)
    run([bridge], 30.0, random_throttling=0.1)
    assert bridge.delivered(5, 30) >= 0.8 * unthrottled.delivered(5, 30)
    # it learned what it cannot change (and lets it decay a little between re-checks)
    assert 0.05 <= bridge.controller.background <= 0.13


@pytest.mark.parametrize("latency", [0.005, 0.025, 0.3, 1.0])
def test_a_quota_holds_the_rate_just_under_it_with_few_throttled(latency: float) -> None:
    """A quota of 2,400 entries/s: sustained >= 90% of it, <= 5% of entries throttled."""
    bridge = Bridge(adaptive(), latency=latency)
    run([bridge], 60.0, quota=Quota(2400, 240))
    assert bridge.delivered(10, 60) >= 0.9 * 2400
    assert bridge.throttled_share(10, 60) <= 0.05
    assert bridge.delivered(2 + latency, 3 + latency) >= 0.8 * 2400  # found within 2 s or so


def test_a_quota_on_top_of_random_throttling_is_still_found() -> None:
    bridge = Bridge(adaptive())
    run([bridge], 60.0, quota=Quota(2400, 240), random_throttling=0.1)
    assert bridge.delivered(10, 60) >= 0.85 * 2400
    assert bridge.throttled_share(10, 60) <= 0.1 + 0.05


def test_three_bridges_share_a_quota_fairly_enough() -> None:
    """>= 90% of the quota in total, none below 20% of the fair share."""
    # different latencies, so that they do not see and answer the quota in lockstep
    bridges = [Bridge(adaptive(), latency=latency) for latency in (0.02, 0.03, 0.05)]
    run(bridges, 60.0, quota=Quota(2400, 240))
    shares = [b.delivered(20, 60) for b in bridges]
    assert sum(shares) >= 0.9 * 2400, shares
    assert min(shares) >= 0.2 * 2400 / 3, shares
    assert sum(b.throttled_share(20, 60) for b in bridges) / 3 <= 0.05


def test_bridges_joining_one_that_holds_the_quota_get_a_share_and_throttling_ends() -> None:
    """As in benchmarks/adaptive.py: one bridge has the quota to itself for 6 s, then two more
    join at full speed (they have no limit yet) and the group's partitions are shared.

    The first run of this test failed: the bridge that held the quota cut, then saw the
    newcomers' burst (81% throttled) and took it for throttling that its rate does not cause; it
    held 2,200/s, throttled 15-20% for seconds, the newcomers squeezed under it.
    """
    bridges = [Bridge(adaptive(), start=start) for start in (0.0, 6.0, 6.0)]
    bridges[1].latency, bridges[2].latency = 0.03, 0.05
    run(bridges, 40.0, quota=Quota(2400, 240))
    for begin, end in ((9, 16), (16, 40)):
        shares = [b.delivered(begin, end) for b in bridges]
        assert sum(shares) >= 0.9 * 2400, (begin, shares)
        assert min(shares) >= 0.2 * 2400 / 3, (begin, shares)
        assert sum(b.throttled_share(begin, end) for b in bridges) / 3 <= 0.05, (
            begin,
            [b.throttled_share(begin, end) for b in bridges],
        )


def test_after_a_competitor_stops_the_rate_is_back_within_15_s() -> None:
    """A sender taking half the quota stops at 30 s: >= 90% of the quota again by 45 s."""
    bridge = Bridge(adaptive())
    run([bridge], 60.0, quota=Quota(2400, 240), competitor=(1200.0, 30.0))
    assert bridge.delivered(15, 30) >= 0.8 * 1200  # held near what was left while it ran
    assert bridge.delivered(44, 60) >= 0.9 * 2400


def test_callers_that_only_say_throttled_still_find_the_quota() -> None:
    bridge = Bridge(adaptive(), legacy=True)
    run([bridge], 30.0, quota=Quota(2400, 240))
    assert bridge.delivered(10, 30) >= 0.8 * 2400
    bridge = Bridge(adaptive(), legacy=True)
    run([bridge], 30.0, random_throttling=0.1)
    assert bridge.delivered(5, 30) >= 0.5 * 12_500


def test_a_bridge_slower_than_the_quota_is_not_held_back() -> None:
    bridge = Bridge(adaptive(), demand=2000.0)
    run([bridge], 20.0, quota=Quota(2400, 240))
    assert bridge.throttled == 0
    assert bridge.delivered(1, 20) >= 0.98 * 2000


def test_the_ceiling_still_binds_the_adaptive_limit() -> None:
    bridge = Bridge(RateController(1000, adaptive=True))
    run([bridge], 20.0, quota=Quota(2400, 240), random_throttling=0.05)
    assert bridge.controller.limit <= 1000
    assert bridge.sent / 20.0 <= 1000 * 1.02


def test_a_whole_call_throttled_counts_all_its_entries() -> None:
    rc = adaptive()
    for k in range(100):  # 2,000 entries/s over a second, every call throttled as a whole
        rc.sent(10, k * 0.005)
        rc.answered(10, 10, k * 0.005 + 0.001)
    rc.answered(10, 10, 0.6)
    assert rc.limit <= rc.floor * 1.01


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=0.3),
            st.integers(min_value=0, max_value=10),
            st.integers(min_value=0, max_value=10),
            st.one_of(st.none(), st.floats(min_value=0, max_value=2.0)),  # answered how late
        ),
        max_size=300,
    ),
    st.one_of(st.none(), st.floats(min_value=20, max_value=50_000)),
)
def test_limit_always_between_floor_and_ceiling(
    steps: list[tuple[float, int, int, float | None]], ceiling: float | None
) -> None:
    rc = RateController(ceiling, adaptive=True, floor=10.0)
    now = 0.0
    for step, entries, throttled, late in steps:
        now += step
        if rc.delay(entries, now) == 0:
            rc.sent(entries, now)
        rc.answered(entries, throttled, now, None if late is None else now - late)
        assert rc.limit >= 10.0 or (ceiling is not None and rc.limit == ceiling)
        assert ceiling is None or rc.limit <= ceiling
        assert 0.0 <= rc.background <= 0.99
        assert rc.delay(entries, now) >= 0.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.001, max_value=0.2), st.integers(min_value=1, max_value=10)
        ),
        min_size=1,
        max_size=300,
    )
)
def test_never_throttled_never_limited(steps: list[tuple[float, int]]) -> None:
    rc = RateController(None, adaptive=True)
    now = 0.0
    for step, entries in steps:
        now += step
        assert rc.delay(entries, now) == 0.0
        rc.sent(entries, now)
        rc.answered(entries, 0, now + 0.01, now)
    assert rc.limit == math.inf


def test_a_cut_that_changed_nothing_is_undone_even_when_no_longer_congested() -> None:
    # Seen in benchmarks/adaptive.py, 10% of entries throttled at random: with the background
    # decayed to 0.078, an interval at 10.9% looked congested and was cut to the rate of the
    # moment; the next one (9.5%, sent at the cut rate) was no longer congested against the
    # background decayed further, so the cut was neither confirmed nor undone, and it stayed:
    # the bridge was held there (76% of its unthrottled rate), growth from a cut being slow.
    rc = adaptive()
    now = 0.0

    def send_for(seconds: float, entries: int, throttled: int) -> None:
        nonlocal now
        end = now + seconds
        while now < end - 1e-9:  # a call every 50 ms, answered 10 ms later
            rc.sent(entries, now)
            rc.answered(entries, throttled, now + 0.01, sent_at=now)
            now += 0.05

    send_for(3.0, 700, 70)  # 14,000/s, 10% throttled: learnt as background, no limit
    assert rc.limit == math.inf and 0.05 < rc.background <= 0.1
    rc.background = 0.078  # decayed, as in the run
    send_for(0.55, 700, 77)  # 11%: looks congested, cut
    assert rc.limit < 14_000
    send_for(1.1, 650, 55)  # 8.5% at the cut rate: not much lower, and not congested any more
    assert rc.limit == math.inf  # the cut is undone, not left in place


def _sender(rc: RateController) -> Callable[[int, int, int], None]:
    """``send(intervals, entries, throttled)``: calls of ``entries`` every 1/16 s, answered 1/128 s
    later with ``throttled`` of them throttled, for whole intervals of the controller (9 calls:
    exact binary times, so the intervals fall where the test says)."""
    calls = [0]

    def send(intervals: int, entries: int, throttled: int) -> None:
        for _ in range(9 * intervals):
            at = calls[0] / 16
            rc.sent(entries, at)
            rc.answered(entries, throttled, at + 1 / 128, sent_at=at)
            calls[0] += 1

    return send


def test_a_background_not_seen_before_is_learnt_after_a_second_interval_at_the_cut_rate() -> None:
    rc = adaptive()
    send = _sender(rc)
    send(2, 100, 0)  # 1,600/s, nothing throttled: no limit
    send(1, 100, 30)  # 30% throttled: cut
    cut = rc.limit
    assert cut < 1_600
    send(1, 100, 30)  # the same at the cut rate: held, not learnt yet
    assert rc.limit == cut and rc.background == 0.0
    send(1, 100, 30)  # and again: not this bridge's rate; learnt and undone
    assert rc.limit == math.inf
    assert 0.25 <= rc.background <= 0.3


def test_throttling_that_rises_after_a_cut_is_cut_again_not_learnt() -> None:
    rc = adaptive()
    send = _sender(rc)
    send(2, 100, 0)
    send(1, 100, 15)  # 15%: cut
    first = rc.limit
    send(1, 100, 60)  # 60% after the cut: others joined; cut again
    assert rc.limit < first
    assert rc.background == 0.0

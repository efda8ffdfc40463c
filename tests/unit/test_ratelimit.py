"""The rate controller: a ceiling that holds, and AIMD on throttling. Pure, simulated time."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sink.ratelimit import RateController


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


def test_throttling_halves_from_the_rate_actually_sent_then_grows_back() -> None:
    rc = RateController(None, adaptive=True, increase_per_s=100, decrease_factor=0.5)
    for i in range(100):  # 1000 entries in the last second
        rc.sent(10, i / 100)
    rc.throttled(1.0)
    assert rc.limit == 500
    rc.throttled(1.5)  # same burst: counted once
    assert rc.limit == 500
    rc.throttled(2.1)
    assert rc.limit == 250
    rc.delay(10, 7.1)  # five quiet seconds
    assert rc.limit == 750


def test_adaptive_limit_stays_within_floor_and_ceiling() -> None:
    rc = RateController(400, adaptive=True, increase_per_s=1000, floor=20)
    for k in range(20):
        rc.throttled(float(k * 2))
    assert rc.limit == 20
    rc.delay(10, 100.0)
    assert rc.limit == 400


def test_off_when_not_adaptive() -> None:
    rc = RateController(None, adaptive=False)
    rc.sent(10, 0.0)
    rc.throttled(0.5)
    assert rc.limit == math.inf

"""Exponential backoff with equal jitter between retries."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sink.retry import Backoff

EXAMPLES = settings(max_examples=200, deadline=None)


class Extreme(random.Random):
    """An rng whose ``uniform`` always returns the low or the high end."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def reference_ceiling(initial_s: float, max_s: float, attempt: int) -> float:
    """min(max, initial * 2**(attempt-1)), without overflowing for huge attempts."""
    if attempt - 1 >= 1000:  # initial * 2**1000 is far beyond any max
        return max_s
    return min(max_s, initial_s * 2.0 ** (attempt - 1))


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    """Backoffs within the configuration's ranges (retry.*_backoff_ms, converted to seconds)."""
    initial_ms = draw(st.integers(1, 600_000))
    max_ms = draw(st.integers(initial_ms, 3_600_000))
    attempts = draw(st.integers(1, 1000))
    return Backoff(initial_ms / 1000, max_ms / 1000, attempts)


attempts = st.one_of(st.integers(1, 80), st.integers(1, 10**30))


@EXAMPLES
@given(backoffs(), attempts, st.randoms(use_true_random=False))
def test_delay_is_between_half_and_all_of_the_ceiling(
    backoff: Backoff, attempt: int, rng: random.Random
) -> None:
    ceiling = reference_ceiling(backoff.initial_s, backoff.max_s, attempt)
    delay = backoff.delay(attempt, rng)
    assert ceiling / 2 <= delay <= ceiling
    assert delay <= backoff.max_s


@EXAMPLES
@given(backoffs(), attempts)
def test_extremes_of_the_jitter_hit_the_bounds(backoff: Backoff, attempt: int) -> None:
    ceiling = reference_ceiling(backoff.initial_s, backoff.max_s, attempt)
    assert backoff.delay(attempt, Extreme(high=True)) == pytest.approx(ceiling, rel=1e-12)
    assert backoff.delay(attempt, Extreme(high=False)) == pytest.approx(ceiling / 2, rel=1e-12)


@EXAMPLES
@given(backoffs(), st.integers(1, 200))
def test_ceiling_never_decreases_with_attempts(backoff: Backoff, attempt: int) -> None:
    high = Extreme(high=True)
    assert backoff.delay(attempt, high) <= backoff.delay(attempt + 1, high)


def test_grows_then_caps() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0, max_attempts=10)
    high = Extreme(high=True)
    ceilings = [backoff.delay(n, high) for n in range(1, 8)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    low = Extreme(high=False)
    assert [backoff.delay(n, low) for n in range(1, 6)] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5])


def test_huge_attempt_does_not_overflow() -> None:
    backoff = Backoff(initial_s=0.1, max_s=20.0, max_attempts=10)
    for attempt in (63, 64, 1024, 10**6, 10**100):
        delay = backoff.delay(attempt, random.Random(attempt))
        assert 10.0 <= delay <= 20.0


def test_default_rng_is_jittered_within_bounds() -> None:
    backoff = Backoff(initial_s=1.0, max_s=1.0, max_attempts=3)
    delays = {backoff.delay(5) for _ in range(50)}
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert len(delays) > 1  # jitter: not all equal


def test_exhausted() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0, max_attempts=3)
    assert not backoff.exhausted(0)
    assert not backoff.exhausted(1)
    assert not backoff.exhausted(2)
    assert backoff.exhausted(3)
    assert backoff.exhausted(4)


def test_single_attempt_is_exhausted_after_the_first_send() -> None:
    assert Backoff(0.1, 1.0, max_attempts=1).exhausted(1)

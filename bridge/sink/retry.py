"""Backoff between attempts. Pure: randomness is passed in."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.config import RetryConfig


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with equal jitter.

    The n-th retry waits between half and all of ``min(max_s, initial_s * 2**(n-1))``: spread out so
    throttled bridges do not retry in lockstep, never so short that a retry hammers the quota.
    """

    initial_s: float
    max_s: float
    max_attempts: int
    paced: bool = False
    """Whether an adaptive rate limit paces every send (``pipeline.adaptive_rate``): then an
    entry throttled inside a 200 answer waits only the first retry's delay, however often it was
    throttled (:meth:`throttled_delay`)."""

    @classmethod
    def from_config(cls, retry: RetryConfig, paced: bool = False) -> Backoff:
        """The policy of the ``retry`` section; ``paced``: see :attr:`paced`."""
        initial, most = retry.initial_backoff_ms / 1000, retry.max_backoff_ms / 1000
        return cls(initial, most, retry.max_attempts, paced)

    def throttled_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempt``-th send of an entry was throttled.

        Growing waits protect a service from retries piling up; when the adaptive rate limit
        paces every send, it already does that for throttling: a quota lowers the limit, and
        the retries wait for it in line like every other entry. Throttling the limit does not
        change (a share of entries whatever the rate) is then best retried soon: an entry left
        waiting 0.8-1.6 s after its fourth throttling held its partition's committed offset, and
        the records finished behind it filled ``pipeline.max_buffered_records`` (64-94% of the
        unthrottled rate with 10% of entries throttled at random, benchmarks/adaptive.py).
        """
        return self.delay(1 if self.paced else attempt, rng)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempt``-th send failed (``attempt`` >= 1)."""
        ceiling = min(self.max_s, self.initial_s * float(2 ** min(attempt - 1, 62)))
        jitter: float = (rng or random).uniform(0, ceiling / 2)
        return ceiling / 2 + jitter

    def exhausted(self, attempts: int) -> bool:
        """Whether an entry sent ``attempts`` times gets no further try."""
        return attempts >= self.max_attempts

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

    @classmethod
    def from_config(cls, retry: RetryConfig) -> Backoff:
        """The policy of the ``retry`` section."""
        return cls(retry.initial_backoff_ms / 1000, retry.max_backoff_ms / 1000, retry.max_attempts)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempt``-th send failed (``attempt`` >= 1)."""
        ceiling = min(self.max_s, self.initial_s * float(2 ** min(attempt - 1, 62)))
        jitter: float = (rng or random).uniform(0, ceiling / 2)
        return ceiling / 2 + jitter

    def exhausted(self, attempts: int) -> bool:
        """Whether an entry sent ``attempts`` times gets no further try."""
        return attempts >= self.max_attempts

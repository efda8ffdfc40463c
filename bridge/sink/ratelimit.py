"""How many entries per second the bridge may send. Pure: the clock is passed in.

Two parts, both optional:

- a ceiling, ``pipeline.max_entries_per_second``: a token bucket, so a bridge never takes more
  than its share of an account's PutEvents quota (10,000 entries/s in the largest regions, for
  all senders of the account and region together);
- an adaptive limit (additive increase, multiplicative decrease, as TCP does): every throttling
  answer cuts the limit by ``rate_decrease_factor`` (at most once per ``cooldown_s``, so one
  burst of throttled entries counts once), and every second without throttling adds
  ``rate_increase_per_second``, up to the ceiling. Before the first throttling the adaptive
  limit is off; it starts from the rate actually sent when AWS first says "too much".
"""

from __future__ import annotations

import math
from collections import deque


class RateController:
    """Decides when the next call of ``n`` entries may start.

    Args:
        ceiling: Entries/s never to exceed (None: no ceiling).
        adaptive: Whether throttling lowers the limit (AIMD).
        increase_per_s: Additive increase, entries/s per second without throttling.
        decrease_factor: Multiplicative decrease on throttling (0 < f < 1).
        floor: The adaptive limit never goes below this.
        cooldown_s: Throttling answers closer together than this count once.
    """

    def __init__(
        self,
        ceiling: float | None,
        adaptive: bool,
        increase_per_s: float = 100.0,
        decrease_factor: float = 0.5,
        floor: float = 10.0,
        cooldown_s: float = 1.0,
    ) -> None:
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.increase_per_s = increase_per_s
        self.decrease_factor = decrease_factor
        self.floor = floor
        self.cooldown_s = cooldown_s
        self._adaptive_limit: float | None = None
        self._tokens = 0.0
        self._refilled_at: float | None = None
        self._last_decrease = -math.inf
        self._last_increase: float | None = None
        self._sent: deque[tuple[float, int]] = deque()  # (time, entries) over the last second

    @property
    def limit(self) -> float:
        """The limit in force, entries/s (``inf`` when there is none)."""
        ceiling, adaptive = self.ceiling, self._adaptive_limit
        if adaptive is None:
            return math.inf if ceiling is None else ceiling
        return adaptive if ceiling is None else min(ceiling, adaptive)

    def delay(self, entries: int, now: float) -> float:
        """Seconds to wait before a call of ``entries`` may start (0: now)."""
        self._grow(now)
        limit = self.limit
        if math.isinf(limit):
            return 0.0
        self._refill(now, limit)
        burst = max(float(entries), limit * 0.1)  # up to 100 ms worth at once
        self._tokens = min(self._tokens, burst)
        if self._tokens >= entries:
            return 0.0
        return (entries - self._tokens) / limit

    def sent(self, entries: int, now: float) -> None:
        """A call of ``entries`` started (after :meth:`delay` said 0)."""
        if not math.isinf(self.limit):
            self._refill(now, self.limit)
            self._tokens -= entries
        self._sent.append((now, entries))
        while self._sent and self._sent[0][0] < now - 1.0:
            self._sent.popleft()

    def throttled(self, now: float) -> None:
        """AWS answered ThrottlingException (for an entry or a whole call)."""
        if not self.adaptive or now - self._last_decrease < self.cooldown_s:
            return
        self._last_decrease = now
        base = self._adaptive_limit
        if base is None:
            recent = sum(n for t, n in self._sent if t >= now - 1.0)
            base = float(recent) if recent else self.floor / self.decrease_factor
            if self.ceiling is not None:
                base = min(base, self.ceiling)
        self._adaptive_limit = max(self.floor, base * self.decrease_factor)
        self._last_increase = now

    def _grow(self, now: float) -> None:
        if self._adaptive_limit is None or self._last_increase is None:
            return
        elapsed = now - self._last_increase
        if elapsed >= 1.0:
            self._adaptive_limit += self.increase_per_s * elapsed
            self._last_increase = now
            if self.ceiling is not None:
                self._adaptive_limit = min(self._adaptive_limit, self.ceiling)

    def _refill(self, now: float, limit: float) -> None:
        if self._refilled_at is None:
            self._refilled_at = now
            self._tokens = max(1.0, limit * 0.1)
            return
        self._tokens += (now - self._refilled_at) * limit
        self._refilled_at = now

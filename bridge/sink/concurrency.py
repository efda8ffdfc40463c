"""How many calls may be in flight at once: adaptive concurrency. Pure: the clock is passed in.

The right number of concurrent PutEvents calls depends on the world: at 25 ms a call, 4 calls in
flight carry ~1,500 events/s and 48 carry ~16,900 on this kind of machine; at 100 ms it takes four
times as many. No fixed default is right, so the limit is found at run time, between 1 and a
ceiling (``pipeline.max_in_flight_calls``), the way Vector's Adaptive Request Concurrency and
Netflix's concurrency-limits (Vegas, Gradient2) do it, from two signals:

- **Round-trip time.** While calls come back as fast as they did with fewer in flight, more
  concurrency is more throughput: grow. When the RTT rises above the no-load RTT by more than a
  tolerance, the extra calls only queue (at the service, in the network, or in this process's
  own CPU): shrink, in proportion to how far above it is (Gradient2), so that one step lands near
  the knee instead of creeping down 10% per interval; but only when the RTT stays above the band
  for :data:`SLOW_INTERVALS` intervals in a row. One slow interval is as often a stall of the
  machine as a queue: a single 94 ms interval at 25 ms cut the limit from 182 to 101, and at +1
  per interval it took 3 s to come back (76-88% of the best fixed value in three 5 s runs).
- **Backpressure.** A whole call that fails with throttling, a 5xx or a timeout says "too much"
  whatever the RTT says: shrink by ``decrease_ratio`` (Vector: 0.9). Per-entry failures inside a
  200 answer are not backpressure for concurrency (the call itself went through; entry throttling
  is the rate controller's business), and neither are errors that more or fewer calls would not
  change (a bad request, denied credentials): :attr:`Outcome.OTHER` is ignored.

Decisions are taken once per interval of about one no-load RTT (as Vector does), from the mean RTT
of the calls that finished in it, so a burst of answers counts once. After a decrease, the RTTs of
calls sent before it are left out (as TCP reduces once per window, and as the rate controller
leaves out answers sent before its cut): they tell how the old limit fared, and the decrease
already answered that. Counting them cut again at every interval while slow calls sent under the
old limit kept coming back: from 64 to 8 on one stall of the process, and on a busy 2-core
machine from 16 to 1 within 0.1 s, over and over, so that the bridge fell behind 5,000 events/s
at 25 ms. (Backpressure still counts once per interval, as in Vector.) Growth only happens if the
limit was actually reached during the interval: a pipeline that keeps 3 calls in flight gives no
evidence that 40 would be fine. Until the first decrease the limit doubles per interval (slow
start from ``INITIAL_LIMIT``, 16: to 256 in four RTTs), then grows by one per interval (additive
increase). The no-load RTT (the baseline) is the lowest interval mean of the round trips as seen
(never shorter than the real ones), and is reset when even a single call in flight is slow, so a
service that became slower for reasons of its own (not our load) is not mistaken forever for one
we overload.

Why the tolerance is 1.0 (the RTT may double) and not Vector's tighter band. What a wider band
costs is a queue: at most twice the no-load latency, for calls whose entries are already bounded
in bytes by the buffer. What a tight band costs is throughput, and the bridge's users run the
defaults. EventBridge throttles instead of queueing (entry throttling goes to the rate
controller, whole-call 429s and 5xx are backpressure here), so the round trip that rises with
the calls in flight is mostly this process's own: answers waiting while the single loop maps
records, and on a small machine the CPU shared with the broker. That rise comes long before
throughput stops growing: with ``rtt_tolerance`` 0.25 the limit settled at 29-45 calls at 25 ms
on the 2-core test machine, 43-56% of the best fixed value (``benchmarks/adaptive.py``); with
1.0 it settles where more calls no longer help. For the same reason the baseline no longer
drifts up towards the RTT under load (it did, over 30 s): with a wide band, a drifting baseline
lets the limit climb without end in front of a service that does queue. The caller may take off
time an answer waited for the loop (``rtt_s``), but that estimate can undershoot after a long
stall (19.9 ms seen against a service answering in 25 ms): only the round trip as seen sets
the baseline, or every later interval would look slow; and an answer that waited for the loop
longer than a no-load RTT is not a sample at all (:meth:`ConcurrencyController.finished`).

With ``adaptive=False`` the limit is the ceiling, always: fixed concurrency as before.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

from bridge.codes import ALIBABA_HOLD_CODES, CREDENTIAL_CODES, HOLD_CALL_CODES
from bridge.sink import outcome as sink_outcome

MIN_INTERVAL_S = 0.005  # the shortest decision interval, whatever the RTT (sub-ms local answers)
MAX_DECREASE = 0.5  # one RTT-driven step never cuts the limit by more than half
INITIAL_LIMIT = 16  # where slow start begins: 4 doublings to 256 instead of 8
SLOW_INTERVALS = 2  # intervals in a row above the RTT band before the limit is cut for it


class Outcome(enum.Enum):
    """What a finished call says about load."""

    OK = "ok"
    """The service answered (even if some entries failed): the RTT is a valid sample."""
    BACKPRESSURE = "backpressure"
    """The whole call was throttled, failed with a 5xx, timed out or lost its connection."""
    OTHER = "other"
    """A failure that says nothing about load (a bad request, denied credentials, a bug)."""


NOT_LOAD_CODES = CREDENTIAL_CODES | HOLD_CALL_CODES | ALIBABA_HOLD_CODES
"""Whole-call failures that are held and retried but say nothing about load."""


def call_outcome(outcomes: Sequence[sink_outcome.Outcome]) -> Outcome:
    """What a finished call's per-entry outcomes say about load.

    A call answered (even with every entry failed, throttled included) is :attr:`Outcome.OK`:
    its RTT is a sample, and entry throttling is the rate controller's business. A call failed as
    a whole and retried for the service's sake (throttling, 5xx, a timeout, a lost connection)
    is :attr:`Outcome.BACKPRESSURE`; one failed for a reason of its own (a bad request, denied or
    missing credentials, a bus that does not exist) is :attr:`Outcome.OTHER`.
    """
    if not outcomes or not outcomes[0].whole_call:
        return Outcome.OK
    first = outcomes[0]
    if first.kind is sink_outcome.Kind.RETRY and first.code not in NOT_LOAD_CODES:
        return Outcome.BACKPRESSURE
    return Outcome.OTHER


class ConcurrencyController:
    """The limit on calls in flight, from the RTTs and outcomes of finished calls.

    Call :meth:`started` when a call starts and :meth:`finished` when its answer (or failure) is
    in; start a new call only while the number in flight is below :attr:`limit`. When the limit
    shrinks below the number in flight, calls already running are left to finish.

    Args:
        ceiling: The most calls in flight ever (and the limit when not adaptive).
        adaptive: Whether the limit adapts; False: it is always ``ceiling``.
        initial: The limit to start from (clamped to [1, ceiling]).
        rtt_tolerance: How far above the no-load RTT (as a fraction of it) the interval's mean
            RTT may rise before the limit shrinks; growth needs it within half of that.
        decrease_ratio: The factor applied to the limit on backpressure (0 < f < 1).

    Raises:
        ValueError: A ceiling below 1 or a factor out of range.
    """

    def __init__(
        self,
        ceiling: int,
        *,
        adaptive: bool = True,
        initial: int = INITIAL_LIMIT,
        rtt_tolerance: float = 1.0,
        decrease_ratio: float = 0.9,
    ) -> None:
        if ceiling < 1:
            raise ValueError(f"ceiling must be >= 1, got {ceiling}")
        if not 0 < decrease_ratio < 1:
            raise ValueError(f"decrease_ratio must be in (0, 1), got {decrease_ratio}")
        if rtt_tolerance <= 0:
            raise ValueError(f"rtt_tolerance must be > 0, got {rtt_tolerance}")
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.rtt_tolerance = rtt_tolerance
        self.decrease_ratio = decrease_ratio
        self._limit = max(1, min(ceiling, initial)) if adaptive else ceiling
        self.in_flight = 0
        self._slow_start = True
        self._baseline: float | None = None  # no-load RTT, seconds
        self._next_update: float | None = None
        self._last_update: float | None = None
        self._decreased_at: float | None = None  # when the limit was last cut
        # the current interval
        self._rtt_sum = 0.0
        self._seen_sum = 0.0
        self._rtt_count = 0
        self._reached_limit = False
        self._backpressure = False
        self._max_in_flight = 0
        self._slow_intervals = 0  # intervals in a row whose RTT was above the band
        self.last_change: dict[str, float | str] = {}
        """Why the limit last changed (for the debug log): cause, mean and no-load RTT in ms."""

    @property
    def limit(self) -> int:
        """The most calls that may be in flight now (1 to ``ceiling``)."""
        return self._limit

    @property
    def baseline_rtt(self) -> float | None:
        """The no-load RTT in seconds (None before the first answer)."""
        return self._baseline

    def started(self, now: float) -> None:
        """A call started at ``now`` (seconds, any monotonic clock)."""
        self.in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self.in_flight)
        if self.in_flight >= self._limit:
            self._reached_limit = True
        if self._next_update is None:
            self._next_update = now  # the first answer closes the first interval

    def finished(
        self,
        rtt_s: float,
        outcome: Outcome,
        now: float,
        sent_at: float | None = None,
        unseen_s: float = 0.0,
    ) -> None:
        """A call that took ``rtt_s`` seconds (from its start to when its answer was seen) ended
        at ``now`` with ``outcome``.

        Args:
            rtt_s: The round trip as seen: never shorter than the real one, so it alone sets
                the no-load RTT.
            outcome: What the call says about load.
            now: When the answer was seen.
            sent_at: When the call started (default ``now - rtt_s``), to leave out calls sent
                before the last cut.
            unseen_s: How long the caller had not looked for answers before it saw this one
                (a single-threaded loop maps records meanwhile). Half of it (the mean wait of an
                answer arriving at a random moment) is taken off the round trip that decides;
                not off the baseline: after a long stall that estimate undershoots (19.9 ms
                seen against a service answering in 25 ms), and a baseline below anything the
                service answers in makes every later interval look slow. An answer the caller
                left waiting for longer than the no-load RTT says how long the caller was away,
                not how the service fares: it is no sample at all (each stall of 100-200 ms of
                the loop otherwise halved the limit, 256 -> 128 -> 75 in one benchmark run).
        """
        self.in_flight = max(0, self.in_flight - 1)
        cut = self._decreased_at
        started = now - rtt_s if sent_at is None else sent_at
        stale = cut is not None and started < cut  # sent before the last cut
        away = self._baseline is not None and unseen_s > self._baseline
        if outcome is Outcome.BACKPRESSURE:
            self._backpressure = True
        elif outcome is Outcome.OK and math.isfinite(rtt_s) and rtt_s >= 0 and not (stale or away):
            self._rtt_sum += max(0.0, rtt_s - unseen_s / 2)
            self._seen_sum += rtt_s
            self._rtt_count += 1
        if not self.adaptive:
            return
        if self._next_update is None or now >= self._next_update:
            self._adjust(now)

    def _adjust(self, now: float) -> None:
        """End the interval: grow, shrink or hold, then start the next interval."""
        current = self._rtt_sum / self._rtt_count if self._rtt_count else None
        seen = self._seen_sum / self._rtt_count if self._rtt_count else None
        baseline = self._baseline
        if seen is not None and (baseline is None or seen < baseline):
            baseline = seen
        elif seen is not None and self._max_in_flight <= 1:
            # One call alone is slow: the service changed, not our load. Start afresh.
            baseline = seen
            self._slow_start = True
        limit = self._limit
        cause = ""
        if self._backpressure:
            limit = math.floor(limit * self.decrease_ratio)
            self._slow_start = False
            cause = "backpressure"
        elif current is not None and baseline is not None:
            ceiling_rtt = baseline * (1 + self.rtt_tolerance)
            self._slow_intervals = self._slow_intervals + 1 if current > ceiling_rtt else 0
            if self._slow_intervals >= SLOW_INTERVALS:
                # Gradient2-style: cut in proportion to the excess, aiming inside the band
                target = baseline * (1 + self.rtt_tolerance / 2)
                ratio = max(MAX_DECREASE, min(self.decrease_ratio, target / current))
                limit = math.floor(limit * ratio)
                self._slow_start = False
                self._slow_intervals = 0
                cause = "latency rose"
            elif self._reached_limit and current <= baseline * (1 + self.rtt_tolerance / 2):
                limit = limit * 2 if self._slow_start else limit + 1
                cause = "latency flat at the limit"
        limit = max(1, min(self.ceiling, limit))
        if limit < self._limit:
            self._decreased_at = now
        if limit != self._limit:
            self.last_change = {
                "cause": cause,
                "rtt_ms": round((current or 0.0) * 1000, 2),
                "baseline_ms": round((baseline or 0.0) * 1000, 2),
            }
        self._limit = limit
        self._baseline = baseline
        self._last_update = now
        interval = baseline if baseline is not None else MIN_INTERVAL_S
        self._next_update = now + max(MIN_INTERVAL_S, interval)
        self._rtt_sum = 0.0
        self._seen_sum = 0.0
        self._rtt_count = 0
        self._backpressure = False
        self._reached_limit = self.in_flight >= self._limit
        self._max_in_flight = self.in_flight

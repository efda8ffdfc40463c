"""Dispatch: closed batches waiting for a call, the calls in flight, and what paces them. Pure.

Batches wait in a ready queue until three controllers let them go: the adaptive concurrency
limit (:mod:`bridge.sink.concurrency`), the rate limit (:mod:`bridge.sink.ratelimit`) and the
circuit breaker (:mod:`bridge.sink.breaker`: during an outage, one probe at a time). A batch not
yet started can still be taken back (revocation, shutdown). Starting the calls is the loop's
I/O: :meth:`Dispatcher.startable` only says which batches go now, under which call ids, and
:meth:`Dispatcher.complete` feeds each answer back to the three controllers.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING

from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.work import Work
from bridge.sink.breaker import CircuitBreaker, Permit, verdict
from bridge.sink.concurrency import ConcurrencyController, call_outcome
from bridge.sink.concurrency import Outcome as Load
from bridge.sink.outcome import Outcome
from bridge.sink.ratelimit import RateController

if TYPE_CHECKING:
    from bridge.config import PipelineConfig


class Dispatcher:
    """The ready queue and the calls in flight.

    Args:
        max_in_flight: Calls in flight at most (``pipeline.max_in_flight_calls``): the ceiling
            of the adaptive limit.
        rate: The entries-per-second limit (ceiling and adaptive).
        concurrency: The calls-in-flight limit (default: fixed at ``max_in_flight``).
        breaker: Holds calls during an outage (default: a fresh one).
    """

    def __init__(
        self,
        max_in_flight: int,
        rate: RateController,
        concurrency: ConcurrencyController | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.rate = rate
        self.concurrency = concurrency or ConcurrencyController(max_in_flight, adaptive=False)
        self.breaker = breaker or CircuitBreaker()
        self.ready: deque[list[Work]] = deque()
        self.in_flight: dict[int, tuple[list[Work], float]] = {}
        """call id -> (its batch, when it started)."""
        self._permits: dict[int, Permit] = {}
        self.rate_wait_until = 0.0
        """When the rate limit lets the first ready batch go (meaningful while it waits)."""
        self._ids = itertools.count()

    @classmethod
    def from_config(cls, pipeline: PipelineConfig) -> Dispatcher:
        """The dispatcher of the ``pipeline`` section (calls in flight, rate limits)."""
        rate = RateController(
            pipeline.max_entries_per_second,
            pipeline.adaptive_rate,
            pipeline.rate_increase_per_second,
            pipeline.rate_decrease_factor,
            pipeline.min_entries_per_second,
        )
        concurrency = ConcurrencyController(
            pipeline.max_in_flight_calls,
            adaptive=pipeline.adaptive_concurrency,
            rtt_tolerance=pipeline.concurrency_rtt_tolerance,
        )
        return cls(pipeline.max_in_flight_calls, rate, concurrency)

    def submit(self, batch: list[Work]) -> None:
        """Queue a closed batch: last in line, or, when it carries an entry sent before (a
        retry), behind the other such batches only. Under a rate limit the queue holds seconds
        of fresh entries; a retry behind them would hold its partition's committed offset that
        long (what a crash sends again with plain offsets, and what the buffer counts until a
        commit records the finished ones above it)."""
        if not batch:
            return
        if not any(w.attempts for w in batch):
            self.ready.append(batch)
            return
        ahead = 0
        for queued in self.ready:
            if not any(w.attempts for w in queued):
                break
            ahead += 1
        self.ready.insert(ahead, batch)

    def startable(
        self, now: float, sendable: Callable[[Work], bool]
    ) -> list[tuple[int, list[Work]]]:
        """Take the batches that start now, each with its call id, counting their sends.

        Entries no longer ``sendable`` (revoked) are left out; a batch left empty is dropped.
        """
        started: list[tuple[int, list[Work]]] = []
        ready, in_flight, rate = self.ready, self.in_flight, self.rate
        while ready and len(in_flight) < min(self.concurrency.limit, self.max_in_flight):
            batch = [w for w in ready.popleft() if sendable(w)]
            if not batch:
                continue
            wait = rate.delay(len(batch), now)  # only what is still sendable takes tokens
            permit = self.breaker.allow(now) if wait <= 0 else Permit.DENIED
            if not permit:
                ready.appendleft(batch)
                if wait > 0:
                    self.rate_wait_until = now + wait
                break
            rate.sent(len(batch), now)
            self.concurrency.started(now)
            for work in batch:
                work.attempts += 1
            call_id = next(self._ids)
            in_flight[call_id] = (batch, now)
            self._permits[call_id] = permit
            started.append((call_id, batch))
        return started

    def complete(
        self, call_id: int, outcomes: Sequence[Outcome], now: float, unseen_s: float = 0.0
    ) -> tuple[list[Work], float] | None:
        """A call ended with ``outcomes``, seen at ``now``: its batch and start time (None if it
        was abandoned). The answer is fed to the controllers: its round trip and load to the
        concurrency limit, its throttled entries to the rate limit (a call failed as a whole
        for another reason says nothing of the quota), what it says of the service to the
        breaker.

        ``unseen_s``: how long answers may have waited before the loop looked (the time since
        it last did). The loop is busy mapping while answers arrive; counted in the round trip,
        its own work would pass for the service slowing down and shrink the concurrency as
        throughput grows: see :meth:`ConcurrencyController.finished`.
        """
        sent = self.in_flight.pop(call_id, None)
        if sent is None:
            return None
        batch, started = sent
        load = call_outcome(outcomes)
        self.concurrency.finished(now - started, load, now, sent_at=started, unseen_s=unseen_s)
        throttled = sum(1 for o in outcomes if o.throttled)
        if outcomes and (throttled or not outcomes[0].whole_call):
            self.rate.answered(len(batch), throttled, now, sent_at=started)
        self.breaker.on_result(verdict(outcomes), now, self._permits.pop(call_id, Permit.CALL))
        return sent

    def requeue(self, batch: list[Work]) -> None:
        """A batch held for the service's sake goes back first in line (the breaker paces it)."""
        if batch:
            self.ready.appendleft(batch)

    def take_back(self, tps: Container[TP]) -> None:
        """Remove the not-yet-started entries of partitions ``tps``."""
        kept = ([w for w in batch if w.tp not in tps] for batch in self.ready)
        self.ready = deque(batch for batch in kept if batch)

    def abandon(self, now: float) -> None:
        """Forget queued batches and calls under way (closing after the drain deadline)."""
        for call_id in self.in_flight:
            self.concurrency.finished(0.0, Load.OTHER, now)
            self.breaker.abandon(self._permits.pop(call_id, Permit.CALL), now)
        self.ready.clear()
        self.in_flight.clear()

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing in flight."""
        return not self.ready and not self.in_flight

    def wait_until(self, now: float) -> float | None:
        """When the rate limit or the breaker lets the first ready batch go, if one holds it."""
        if not self.ready:
            return None
        times = [self.rate_wait_until] if self.rate_wait_until > 0 else []
        probe = self.breaker.next_probe_at(now)
        if probe is not None and probe > now:
            times.append(probe)
        return max(times) if times else None

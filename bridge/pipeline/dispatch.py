"""Dispatch: closed batches waiting for a call, the calls in flight, and the rate limit. Pure.

Batches wait in a ready queue until a call slot is free and the rate limit allows; a batch not
yet started can still be taken back (revocation, shutdown). Starting the calls is the loop's
I/O: :meth:`Dispatcher.startable` only says which batches go now, under which call ids.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Container
from typing import TYPE_CHECKING

from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.work import Work
from bridge.sink.ratelimit import RateController

if TYPE_CHECKING:
    from bridge.config import PipelineConfig


class Dispatcher:
    """The ready queue and the calls in flight.

    Args:
        max_in_flight: Calls in flight at most (``pipeline.max_in_flight_calls``).
        rate: The entries-per-second limit (ceiling and adaptive).
    """

    def __init__(self, max_in_flight: int, rate: RateController) -> None:
        self.max_in_flight = max_in_flight
        self.rate = rate
        self.ready: deque[list[Work]] = deque()
        self.in_flight: dict[int, tuple[list[Work], float]] = {}
        """call id -> (its batch, when it started)."""
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
        return cls(pipeline.max_in_flight_calls, rate)

    def submit(self, batch: list[Work]) -> None:
        """Queue a closed batch."""
        if batch:
            self.ready.append(batch)

    def startable(
        self, now: float, sendable: Callable[[Work], bool]
    ) -> list[tuple[int, list[Work]]]:
        """Take the batches that start now, each with its call id, counting their sends.

        Entries no longer ``sendable`` (revoked) are left out; a batch left empty is dropped.
        """
        started: list[tuple[int, list[Work]]] = []
        ready, in_flight, rate = self.ready, self.in_flight, self.rate
        while ready and len(in_flight) < self.max_in_flight:
            batch = [w for w in ready.popleft() if sendable(w)]
            if not batch:
                continue
            wait = rate.delay(len(batch), now)  # only what is still sendable takes tokens
            if wait > 0:
                ready.appendleft(batch)
                self.rate_wait_until = now + wait
                break
            rate.sent(len(batch), now)
            for work in batch:
                work.attempts += 1
            call_id = next(self._ids)
            in_flight[call_id] = (batch, now)
            started.append((call_id, batch))
        return started

    def complete(self, call_id: int) -> tuple[list[Work], float] | None:
        """A call ended: its batch and start time (None if it was abandoned)."""
        return self.in_flight.pop(call_id, None)

    def throttled(self, now: float) -> None:
        """The bus throttled a call or an entry."""
        self.rate.throttled(now)

    def take_back(self, tps: Container[TP]) -> None:
        """Remove the not-yet-started entries of partitions ``tps``."""
        kept = ([w for w in batch if w.tp not in tps] for batch in self.ready)
        self.ready = deque(batch for batch in kept if batch)

    def abandon(self) -> None:
        """Forget queued batches and calls under way (closing after the drain deadline)."""
        self.ready.clear()
        self.in_flight.clear()

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing in flight."""
        return not self.ready and not self.in_flight

    def wait_until(self) -> float | None:
        """When the rate limit lets the first ready batch go, if it holds one back."""
        return self.rate_wait_until if self.ready and self.rate_wait_until > 0 else None

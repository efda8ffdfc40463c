"""Simulated time for the functional tier: the real Pipeline driven one step at a time.

* :class:`SimClock` - the pipeline's clock and sleep: time moves only when the test (or a wait
  inside the pipeline) moves it, so every run gives the same result.
* :class:`SimCalls` - the pipeline's calls: each call is sent through the real sink at once
  (the fake client answers), and its outcomes come back ``latency`` simulated seconds later,
  or not at all while ``held``.
* :class:`World` - a pipeline over the fakes of :mod:`fakes`, with :meth:`World.until` to step
  until a condition holds.

No threads, no sleeps, no wall clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from fakes import FakeConsumer, FakeEventsClient, FakeProducer

from bridge.config import BridgeConfig
from bridge.offsets.committer import CommitAnswers
from bridge.pipeline import Pipeline
from bridge.pipeline.work import Runtime
from bridge.sink.base import Sink
from bridge.sink.eventbridge import EventBridgeSink
from bridge.sink.outcome import Outcome

Callback = Callable[[Any, list[Any]], None]


class SimClock:
    """Seconds that pass only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class SimCalls:
    """Calls in flight for ``latency`` simulated seconds each (see the module docstring)."""

    def __init__(self, sink: Sink, clock: SimClock, latency: float = 0.0) -> None:
        self._sink = sink
        self._clock = clock
        self.latency = latency
        self.held = False
        """While True no call ends: they stay in flight until released."""
        self._pending: dict[int, tuple[float, list[Outcome]]] = {}
        self.started = 0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def start(self, call_id: int, entries: Sequence[dict[str, Any]]) -> None:
        self.started += 1
        self._pending[call_id] = (self._clock.now + self.latency, self._sink.send(entries))

    def flush(self) -> None:
        """Calls start at once here."""

    def finished(self) -> list[tuple[int, list[Outcome]]]:
        if self.held:
            return []
        now = self._clock.now
        done = [(cid, out) for cid, (due, out) in self._pending.items() if due <= now]
        for cid, _ in done:
            del self._pending[cid]
        return done

    def wait(self, timeout: float) -> None:
        """Time passes until the next call ends, ``timeout`` at most."""
        if self._pending and not self.held:
            next_due = min(due for due, _ in self._pending.values())
            self._clock.now = max(self._clock.now, min(self._clock.now + timeout, next_due))
        else:
            self._clock.sleep(timeout)

    def close(self) -> None:
        self._pending.clear()


class World:
    """A pipeline over in-memory fakes, on simulated time."""

    def __init__(
        self,
        config: BridgeConfig,
        consumer: FakeConsumer,
        client: FakeEventsClient | None = None,
        producer: FakeProducer | None = None,
        latency: float = 0.0,
        sink: Sink | None = None,
        wrap_revoke: Callable[[World, Callback], Callback] | None = None,
        adapt: Callable[[Any], Any] | None = None,
        async_commits: bool = True,
    ) -> None:
        self.clock = SimClock()
        self.consumer = consumer
        self.client = client if client is not None else FakeEventsClient()
        self.producer = producer if producer is not None else FakeProducer()
        self.sink: Sink = sink if sink is not None else EventBridgeSink(self.client)
        self.calls = SimCalls(self.sink, self.clock, latency)
        answers = None
        if async_commits:  # the bridge's (a redrive's are not): answered in a consume or poll
            answers = consumer.on_commit = CommitAnswers()
        self.pipeline = Pipeline(
            config,
            consumer,
            self.producer,
            self.sink,
            runtime=Runtime(self.clock, self.clock.sleep, random.Random(7)),
            calls=self.calls,
            adapt=adapt,
            commit_answers=answers,
        )
        on_revoke: Callback = self.pipeline.on_revoke
        if wrap_revoke is not None:
            on_revoke = wrap_revoke(self, on_revoke)
        consumer.subscribe(
            [consumer.topic],
            on_assign=self.pipeline.on_assign,
            on_revoke=on_revoke,
            on_lost=self.pipeline.on_lost,
        )

    @property
    def stats(self) -> Any:
        return self.pipeline.stats

    def step(self, dt: float = 0.001) -> None:
        """One turn of the loop, then ``dt`` simulated seconds."""
        self.pipeline.step(0)
        self.clock.sleep(dt)

    def run_for(self, seconds: float, dt: float = 0.001) -> None:
        """Step for ``seconds`` of simulated time."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.step(dt)

    def until(
        self, predicate: Callable[[], Any], what: str, within: float = 30.0, dt: float = 0.001
    ) -> None:
        """Step until ``predicate()`` holds; fail naming ``what`` after ``within`` simulated s."""
        end = self.clock.now + within
        while not predicate():
            if self.clock.now > end:
                raise AssertionError(f"not reached within {within} simulated s: {what}")
            self.step(dt)

    def stop(self) -> float:
        """Stop and close as ``run()`` would; returns the simulated seconds the close took."""
        began = self.clock.now
        self.pipeline.stop()
        self.pipeline.close()
        return self.clock.now - began

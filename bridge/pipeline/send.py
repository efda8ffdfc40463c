"""The send side of the loop: pack, start calls, judge their answers, retry.

Wires the packer, :class:`~bridge.pipeline.dispatch.Dispatcher`, the calls (I/O),
:func:`~bridge.pipeline.judge.judge` and the :class:`~bridge.pipeline.schedule.RetrySchedule`;
finished offsets go to the tracker, dead letters to :class:`~bridge.pipeline.deadletters.
DeadLetters`. Runs on the loop's thread; nothing here blocks but :meth:`Sender.wait`.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

from bridge.batching.packer import Packer
from bridge.config import BridgeConfig
from bridge.offsets.tracker import OffsetTracker
from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.deadletters import DeadLetters
from bridge.pipeline.dispatch import Dispatcher
from bridge.pipeline.judge import Action, judge
from bridge.pipeline.ordering import Ordering, Turn
from bridge.pipeline.ownership import Ownership
from bridge.pipeline.report import Report
from bridge.pipeline.schedule import RetrySchedule
from bridge.pipeline.work import Runtime, Work
from bridge.sink.base import SinkLimits
from bridge.sink.breaker import State
from bridge.sink.calls import Calls
from bridge.sink.retry import Backoff


class Sender:
    """Entries from mapped to answered.

    Args:
        config: The configuration (``batch``, ``retry``, ``pipeline`` sections).
        limits: The sink's packing limits.
        calls: How calls run.
        tracker, ownership, schedule, dead_letters, report: The loop's shared parts.
        runtime: Time, waiting and chance.
    """

    def __init__(
        self,
        config: BridgeConfig,
        limits: SinkLimits,
        calls: Calls,
        tracker: OffsetTracker,
        ownership: Ownership,
        schedule: RetrySchedule,
        dead_letters: DeadLetters,
        report: Report,
        runtime: Runtime,
    ) -> None:
        self.packer: Packer[Work] = Packer(limits.max_entries, limits.max_request_bytes)
        self.dispatch = Dispatcher.from_config(config.pipeline)
        self.schedule = schedule
        self._linger_s = config.batch.linger_ms / 1000
        self._backoff = Backoff.from_config(config.retry, paced=config.pipeline.adaptive_rate)
        self._rng = runtime.rng
        self._calls = calls
        self._tracker = tracker
        self._own = ownership
        self._dlq = dead_letters
        self._report = report
        self._clock = runtime.clock
        self._sleep = runtime.sleep
        self._looked = runtime.clock()  # when answers were last collected
        self.order = Ordering(config.pipeline.group_on_dead_letter)
        dead_letters.on_finished = self._finished

    def enqueue(self, work: Work) -> None:
        """A mapped entry (or one due again) joins the open batch, unless an earlier entry of its
        event group waits (:mod:`~bridge.pipeline.ordering`)."""
        turn = self.order.admit(work)
        if turn is not Turn.GO:
            if turn is Turn.HOLD:
                self._dlq.send(work, self.order.held_reason(work))
            return
        batch = self.packer.add(work, self._clock())
        if batch:
            self.dispatch.submit(batch)
            self.start_calls()

    def turn(self, flush: bool = False) -> None:
        """Answers judged, due retries re-packed, the open batch closed when it lingered long
        enough (or at once with ``flush``), calls started."""
        self.collect()
        now = self._clock()
        for work, reason in self.schedule.pop_due(now):
            if not self._own.sendable(work):
                continue
            if reason is None:
                self.enqueue(work)
            else:
                self._dlq.write(work, reason)
        if flush or self.packer.due(now, self._linger_s):
            self.dispatch.submit(self.packer.flush())
        self.start_calls()

    def start_calls(self) -> None:
        """Start what the dispatcher lets go now."""
        started = self.dispatch.startable(self._clock(), self._own.sendable)
        for call_id, batch in started:
            self._report.started(batch)
            self._calls.start(call_id, [w.entry for w in batch])
        if started:
            self._calls.flush()

    def collect(self) -> None:
        """Judge the answers of the calls that ended, and apply the verdicts."""
        finished = self._calls.finished()
        looked, self._looked = self._looked, self._clock()
        seen = self._looked  # every answer of this look was seen now, not after judging others
        for call_id, outcomes in finished:
            now = self._clock()
            sent = self.dispatch.complete(call_id, outcomes, seen, unseen_s=seen - looked)
            if sent is None:
                continue  # abandoned
            batch, started = sent
            own = self._own
            judged = judge(
                batch,
                outcomes,
                owns=own.owns,
                revoking=own.revoking,
                backoff=self._backoff,
                rng=self._rng,
                now=now,
            )
            held: list[Work] = []
            for v in judged.verdicts:
                if v.action is Action.DELIVERED:
                    self._tracker.finish(v.work.tp, v.work.offset)
                    self._finished(v.work)
                elif v.action is Action.RETRY:
                    v.work.retry_later(v.outcome.hold)
                    self.schedule.push(v.due, v.work)
                elif v.action is Action.HELD:
                    v.work.retry_later(held=True)
                    held.append(v.work)
                elif v.action is Action.ALONE:
                    self.dispatch.submit([v.work])
                elif v.action is Action.DEAD_LETTER and v.reason is not None:
                    self.order.dead_lettered(v.work)
                    self._dlq.send(v.work, v.reason)
            self.dispatch.requeue(held)
            quiet = self.dispatch.breaker.state is not State.CLOSED  # the outage line says it
            self._report.judged(judged, batch, now - started, quiet)
        for transition in self.dispatch.breaker.take_transitions():
            self._report.outage(transition, self._tracker.open_count, self._tracker.held_bytes)
        if finished:
            self.report_limits()
            self.start_calls()

    def report_limits(self) -> None:
        """Publish the limits in force (rate, concurrency, the breaker's state)."""
        d = self.dispatch
        self._report.limits(
            d.rate.limit,
            d.concurrency.limit,
            d.breaker.state,
            lambda: {
                "in_flight_calls": len(d.in_flight),
                **d.concurrency.last_change,
                **d.rate.last_judged,
            },
        )

    def _finished(self, work: Work) -> None:
        """``work`` is delivered or dead-lettered: the next entry of its group goes."""
        released = self.order.finish(work)
        if released is None:
            return
        following, turn = released
        if turn is Turn.HOLD:
            self._dlq.send(following, self.order.held_reason(following))
        else:
            self.enqueue(following)

    def wait(self, timeout: float) -> None:
        """Wait until a call may have ended, or ``timeout`` passes."""
        if self.dispatch.in_flight:
            self._calls.wait(timeout)
        else:
            self._sleep(min(timeout, 0.01))

    def await_calls(self, deadline: float, beat: Callable[[], None]) -> None:
        """Wait for the calls in flight and judge them, until ``deadline`` at most."""
        while self.dispatch.in_flight and self._clock() < deadline:
            beat()
            self.wait(0.05)
            self.collect()

    def drain(self, deadline: float, beat: Callable[[], None]) -> None:
        """Send everything open, queued or scheduled, and wait for it and for the dead-letter
        writes, until ``deadline`` at most (the rate limit still holds)."""
        while self._clock() < deadline:
            beat()
            self.turn(flush=True)
            self._dlq.writer.poll()
            if self.idle and self._dlq.writer.in_flight == 0:
                return
            self.wait(0.05)

    def take_back(self, tps: Container[TP]) -> None:
        """Remove the not-yet-started work of ``tps``: open batch, ready queue, retries."""
        self.packer.remove_if(lambda w: w.tp in tps)
        self.dispatch.take_back(tps)
        self.schedule.drop(tps)
        self.order.drop(tps)

    @property
    def unfinished_sent(self) -> int:
        """Entries sent and not finished: in calls under way, waiting for a retry (scheduled,
        or back in the queue or the open batch after a failed send), or in dead-letter writes
        not yet acknowledged. What a crash can make the next owner send again of what was
        consumed before the last commit (``bridge_unfinished_at_commit``); entries never sent
        yet (the rate limiter's backlog) are not counted."""
        d = self.dispatch
        calls = sum(len(batch) for batch, _ in d.in_flight.values())
        again = sum(1 for batch in d.ready for w in batch if w.attempts or w.held)
        again += sum(1 for w in self.packer if w.attempts or w.held)
        return calls + again + len(self.schedule) + self._dlq.writer.in_flight

    @property
    def idle(self) -> bool:
        """Nothing open, queued, in flight or scheduled."""
        idle = self.dispatch.idle and not self.schedule and not len(self.packer)
        return idle and not self.order.waiting

    def next_due(self, now: float) -> float | None:
        """Seconds until something is due (a retry, the linger, the rate limit), if anything."""
        due = [self.schedule.next_due(), self.dispatch.wait_until(now)]
        if self.packer.opened_at is not None:
            due.append(self.packer.opened_at + self._linger_s)
        times = [d for d in due if d is not None]
        return max(0.0, min(times) - now) if times else None

    def progress(self) -> dict[str, Any]:
        """What the progress line says of the send side now."""
        d = self.dispatch
        return {
            "in_flight_calls": len(d.in_flight),
            "queued_calls": len(d.ready),
            "concurrency_limit": d.concurrency.limit,
            "rate_limit": d.rate.limit,
            "breaker": d.breaker.state.value,
        }

    def fetch_wait(self, poll_s: float) -> float:
        """How long the next fetch may wait: ``consume`` cannot be woken by a finished call,
        so with calls in flight it looks often; otherwise until the next due time."""
        if self.dispatch.in_flight:
            return min(poll_s, 0.005)
        due = None if self.idle else self.next_due(self._clock())
        return poll_s if due is None else min(poll_s, 0.005 + due)

    def abandon(self) -> None:
        """Give up queued batches, retries and calls under way (closing)."""
        self.dispatch.abandon(self._clock())
        self._report.metrics.in_flight_entries.set(0)
        self.schedule.clear()
        self.order.clear()
        self._calls.close()

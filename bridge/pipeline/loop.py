"""The loop: Kafka -> map -> pack -> send -> (retry | dead-letter) -> offset commit.

One thread owns the consumer and every part, and wires decisions made elsewhere: flow (take,
hold, pause), ownership (epochs, revocation), the send side (dispatch, judging, retries) and the
offset tracker. :meth:`Pipeline.step` is one turn: tests drive it with their own clock and calls.
"""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import TopicPartition

from bridge.config import BridgeConfig
from bridge.dlq.writer import Reason
from bridge.errors import FilteredOut, MappingError
from bridge.mapping.mapper import Mapper
from bridge.observability.http import Health
from bridge.observability.logging import get_logger
from bridge.observability.metrics import Metrics
from bridge.offsets.committer import CommitAnswers, Committer
from bridge.offsets.tracker import OffsetOrderError, OffsetTracker
from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.cadence import CommitCadence
from bridge.pipeline.deadletters import DeadLetters
from bridge.pipeline.flow import Change, FlowControl, Mode
from bridge.pipeline.ownership import Ownership
from bridge.pipeline.report import Report
from bridge.pipeline.schedule import RetrySchedule
from bridge.pipeline.send import Sender
from bridge.pipeline.work import Adapt, Runtime, Stats, Work
from bridge.sink.base import Sink
from bridge.sink.calls import Calls, make_calls
from bridge.source.budget import MemoryBudget, estimated_cost, memory_budget
from bridge.source.consumer import is_error, resume

log = get_logger("pipeline")


class Pipeline:
    """Runs the bridge until :meth:`stop`.

    Args:
        config: The loaded configuration.
        consumer: A ``confluent_kafka.Consumer`` (subscribed with this pipeline's callbacks).
        producer: A ``confluent_kafka.Producer`` for the dead-letter topic.
        sink: The bus: wire form, size, limits, and the calls.
        runtime: Time, waiting and chance. calls: How calls run (default: the sink's own).
        commit_answers: The consumer's ``on_commit``: commits asynchronous (None: not).
        mapper, budget: The mapper with its clients, the memory budget (default: derived).
        metrics, health: Where counters and probes go. adapt: What a message is mapped as
            (``bridge redrive``: the record a dead letter carries; FilteredOut to skip it).
    """

    def __init__(
        self,
        config: BridgeConfig,
        consumer: Any,
        producer: Any,
        sink: Sink,
        runtime: Runtime | None = None,
        calls: Calls | None = None,
        mapper: Mapper | None = None,
        budget: MemoryBudget | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
        adapt: Adapt | None = None,
        commit_answers: CommitAnswers | None = None,
    ) -> None:
        runtime = runtime or Runtime()
        self.config, self._consumer, self._clock = config, consumer, runtime.clock
        self.health = health or Health(config.observability.stuck_after_s)
        self.report = Report(metrics or Metrics(), self.health)
        self.stats, self.metrics = self.report.stats, self.report.metrics
        counted = self.metrics.count_invalid_traceparent
        self._mapper = mapper or Mapper(config, sink, on_invalid_traceparent=counted)
        self._tracker, metrics_, answers = OffsetTracker(), self.metrics, commit_answers
        self._committer = Committer.from_config(consumer, self._tracker, config, metrics_, answers)
        budget = budget or memory_budget(config, sink.limits.max_request_bytes)
        self._flow = FlowControl(config.pipeline.max_buffered_records, max_bytes=budget.records)
        self._own = Ownership()
        parts = (self._tracker, self._own, RetrySchedule())
        self._dlq = DeadLetters(producer, config.dlq, *parts, self.report, runtime.clock)
        calls = calls or make_calls(sink, config.pipeline.max_in_flight_calls)
        self._send = Sender(config, sink.limits, calls, *parts, self._dlq, self.report, runtime)
        self._closing, self._adapt, self._stop = False, adapt, threading.Event()
        self._cadence = CommitCadence.from_config(config.pipeline, runtime.clock())
        self._last_progress = runtime.clock()
        self._send.report_limits()

    def stop(self) -> None:
        """Ask the loop to stop fetching and drain (safe from a signal handler or thread)."""
        self.health.stopping = True
        self._stop.set()

    def run(self) -> Stats:
        """Turn until :meth:`stop`, then :meth:`close`; returns the counters of the run."""
        poll_s = self.config.pipeline.poll_timeout_ms / 1000
        while not self._stop.is_set():
            self.step(self._send.fetch_wait(poll_s))
        self.close()
        return self.stats

    def step(self, wait: float = 0.0) -> None:
        """One turn: flow control, fetch (waiting up to ``wait`` s), ingest, then the rest."""
        t, awaited = self._tracker, self._committer.awaiting
        buffered, held_bytes = t.buffered, t.held_bytes
        change = self._flow.update(buffered, self._clock(), held_bytes, t.open_count)
        self.report.buffer(buffered, held_bytes)
        if change is not Change.NONE:
            pause = change is Change.PAUSE
            (self._consumer.pause if pause else self._consumer.resume)(self._consumer.assignment())
            self.report.fetching(paused=pause, buffered=buffered)
        if self._flow.mode is Mode.TAKE:
            messages = self._consumer.consume(self._flow.room(buffered, held_bytes), wait)
        else:  # full or paused: a poll keeps the membership, serves rebalances and commit answers
            msg = self._consumer.poll(0) if self._flow.polls(awaited, buffered) else None
            messages = [msg] if msg is not None else []  # taken before the pause: not dropped
            self._send.wait(wait)
        self.health.brokers_down = self.health.brokers_down and not messages
        for msg in messages:
            self._ingest(msg)
        self.health.beat()
        self.report.turn()
        self._send.turn()
        self._dlq.writer.poll()
        now, news = self._clock(), self._committer.news()
        if self._cadence.due(now, news, self._tracker.finished_uncommitted):
            self._commit(news=news)
        if now - self._last_progress >= 10:
            self._progress()

    def _ingest(self, msg: Any) -> None:
        if is_error(msg):
            return
        tp = (msg.topic(), msg.partition())
        if not self._own.accepts(tp):
            return  # fetched before a revocation; the new owner reads it again
        self.report.consumed(tp[0])
        try:
            done = self._tracker.add(tp, msg.offset(), estimated_cost(msg))
        except OffsetOrderError as exc:
            self._restart_partition(tp, str(exc))
            done = self._tracker.add(tp, msg.offset(), estimated_cost(msg))
        if done:  # finished before a restart or a rebalance (the commit's metadata says so)
            return self.report.already_finished(tp[0])
        work = Work(msg, tp, self._own.epoch(tp))
        try:  # a redrive maps the record a dead letter carries; the work keeps its offset
            work.msg = msg = self._adapt(msg) if self._adapt else msg
            mapped = self._mapper.map(msg)
        except FilteredOut as out:
            self.report.filtered(work, out.reason)
            self._tracker.finish(tp, work.offset)  # committed with its neighbours
            return
        except MappingError as exc:
            self.stats.mapping_failures += 1
            self._dlq.send(work, Reason(exc.stage, exc.code, exc.message, 0))
            return
        work.entry, work.size = mapped.entry, mapped.size
        self._send.enqueue(work)

    def _commit(self, partitions: list[TP] | None = None, news: bool | None = None) -> None:
        self._dlq.writer.poll()  # step 1 of Committer.commit: delivery reports served first
        # The cadence's (news given) asynchronous; revocations' and the close's synchronous
        committed = self._committer.commit(partitions, wait=news is None)
        self.report.committed(committed, self._send.unfinished_sent)
        self.report.lag(self._consumer, self._tracker)
        self._cadence.committed(self._clock(), news is not False)

    def _progress(self) -> None:
        self._last_progress, t = self._clock(), self._tracker
        self.report.progress(**self._send.progress(), buffered=t.buffered, bytes=t.held_bytes)

    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """New partitions: start tracking them (and keep them paused if we are)."""
        self._own.assign((p.topic, p.partition) for p in partitions)
        self._committer.restore(consumer, partitions)  # offsets finished before: not sent again
        self.health.joined, self.health.brokers_down = True, False
        self.report.rebalanced("assign", partitions)
        # librdkafka keeps a partition's pause flag across revoke and re-assign (librdkafka#1849):
        # set it explicitly either way, or a partition that comes back stays paused forever.
        if partitions and self._flow.paused:
            consumer.pause(partitions)
        else:
            resume(consumer, partitions)

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions leaving: finish what is in flight, commit what is finished, send no more.

        1. Mark them revoking: queued calls skip their entries, retries of them are dropped.
        2. Take their entries out of the open batch, the ready queue and the retry schedule.
        3. Wait (up to the shutdown deadline) for calls in flight, then their dead-letter writes.
        4. Commit their finished offsets, then forget them.
        5. Clear their pause flag, which librdkafka would keep for a later re-assign.
        """
        self._give_up(partitions, commit=True)
        resume(consumer, partitions)

    def on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions lost without a clean revoke (session timeout): no commit is possible."""
        self._give_up(partitions, commit=False)
        resume(consumer, partitions)

    def _give_up(self, partitions: list[TopicPartition], commit: bool) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self.report.rebalanced("revoke" if commit else "lost", partitions)
        if not tps:
            return
        self._own.start_revoking(tps)
        self._send.take_back(tps)
        # Calls under way finish (bounded by aws.read_timeout_s); when closing after the drain
        # deadline they were given up already and nothing is awaited here.
        deadline = self._clock() + self.config.pipeline.shutdown_timeout_s
        if not self._closing:
            self._send.await_calls(deadline, self.health.beat)
        self._dlq.writer.flush(max(0.0, deadline - self._clock()))
        if commit:
            self._commit(sorted(tps))
        self._own.release(tps)
        self._tracker.forget(tps)
        self.report.forget(tps)

    def _restart_partition(self, tp: TP, why: str) -> None:
        """The consumer went back on ``tp`` (an offset reset): start the partition over. Unsent
        work is dropped, answers of the old epoch ignored; the records come again, none lost."""
        where = {"topic": tp[0], "partition": tp[1]}
        log.warning("consumer went back on a partition: starting it over", **where, reason=why)
        self._send.take_back({tp})
        self._tracker.forget([tp])
        self._own.restart(tp)

    def close(self) -> None:
        """Stop fetching; finish or give up in-flight work by the deadline; commit; close.

        What did not finish by ``pipeline.shutdown_timeout_s`` is given up: queued batches are
        dropped, calls under way abandoned (answers ignored); none of it is committed, so it is
        read again by the next owner.
        """
        deadline = self._clock() + (timeout := self.config.pipeline.shutdown_timeout_s)
        log.info("stopping: draining in-flight work", deadline_s=timeout)
        self._send.drain(deadline, self.health.beat)
        self._dlq.writer.flush(max(0.1, deadline - self._clock()))
        self._commit()
        unfinished, self._closing = self._tracker.open_count, True
        self._own.revoke_all()
        self._send.abandon()
        self._consumer.close()
        self._progress()
        log.info("stopped", unfinished_records=unfinished)

"""The loop: Kafka -> map -> pack -> send -> (retry | dead-letter) -> offset commit.

One thread owns the consumer, the tracker, the packer, the retry schedule and the dead-letter
writer. Closed batches wait in a ready queue; at most ``pipeline.max_in_flight_calls`` PutEvents
calls run at once (:mod:`bridge.sink.calls`: driven from this thread through libcurl's multi
interface, or on a thread pool for sinks that block) and their outcomes are collected between
turns, so the owner thread never blocks on AWS, and a batch not yet started can still be taken
back (revocation, shutdown).
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from bridge.batching.packer import Packer
from bridge.config import BridgeConfig
from bridge.dlq.writer import DeadLetterWriter, Reason, failure_hint, write_size
from bridge.errors import FilteredOut, MappingError
from bridge.mapping.mapper import Mapper
from bridge.observability.http import Health
from bridge.observability.logging import get_logger
from bridge.observability.metrics import Metrics, code_label
from bridge.offsets.committer import Committer
from bridge.offsets.tracker import OffsetOrderError, OffsetTracker
from bridge.offsets.tracker import TopicPartition as TP
from bridge.sink.base import Sink
from bridge.sink.calls import make_calls
from bridge.sink.outcome import Kind, Outcome
from bridge.sink.ratelimit import RateController
from bridge.sink.retry import Backoff

log = get_logger("pipeline")

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    }
)


class Work:
    """One record on its way: the message, its entry, and how often it was sent."""

    __slots__ = ("attempts", "entry", "epoch", "held", "msg", "offset", "size", "tp")

    def __init__(self, msg: Any, tp: TP, epoch: int) -> None:
        self.msg = msg
        self.tp = tp
        self.offset: int = msg.offset()
        self.epoch = epoch
        self.entry: dict[str, Any] = {}
        self.size = 0
        self.attempts = 0  # sends that count toward retry.max_attempts
        self.held = 0  # sends failed as a whole for a reason not the entry's (not counted)


@dataclass
class Stats:
    """Counters of the run, read by tests, the demo and the progress log."""

    consumed: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    mapping_failures: int = 0
    filtered: int = 0
    send_failures: int = 0
    retries: int = 0
    calls: int = 0
    call_failures: int = 0
    dlq_write_failures: int = 0
    committed: dict[TP, int] = field(default_factory=dict)


class Pipeline:
    """Runs the bridge until :meth:`stop`.

    Attributes:
        PAUSE_AFTER_S: How long the buffer stays full before its partitions are paused.

    Args:
        config: The loaded configuration.
        consumer: A ``confluent_kafka.Consumer`` built from :func:`consumer_config`.
        producer: A ``confluent_kafka.Producer`` for the dead-letter topic.
        sink: The bus: wire form, size, limits, and the calls.
        clock: Monotonic seconds (tests may pass their own).
        metrics: Where counters go (a private registry when None).
        health: What the probes read (a fresh one when None).
        mapper: Maps records for ``sink`` (:func:`bridge.app.build_mapper`); None: a mapper
            without a Schema Registry client or an object store.
    """

    PAUSE_AFTER_S = 1.0

    def __init__(
        self,
        config: BridgeConfig,
        consumer: Any,
        producer: Any,
        sink: Sink,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        health: Health | None = None,
        mapper: Mapper | None = None,
    ) -> None:
        self.config = config
        self.stats = Stats()
        self.metrics = metrics or Metrics()
        self.health = health or Health(config.observability.stuck_after_s)
        self._consumer = consumer
        self._sink = sink
        self._clock = clock
        self._mapper = mapper if mapper is not None else Mapper(config, sink)
        self._tracker = OffsetTracker()
        self._committer = Committer(consumer, self._tracker)
        self._dlq = DeadLetterWriter(producer, config.dlq.topic, self._on_dlq_result)
        self._packer: Packer[Work] = Packer(sink.limits.max_entries, sink.limits.max_request_bytes)
        self._backoff = Backoff(
            config.retry.initial_backoff_ms / 1000,
            config.retry.max_backoff_ms / 1000,
            config.retry.max_attempts,
        )
        self._rng = random.Random()
        self._linger_s = config.batch.linger_ms / 1000
        self._commit_interval_s = config.pipeline.commit_interval_ms / 1000
        self._max_buffered = config.pipeline.max_buffered_records
        self._calls = make_calls(sink, config.pipeline.max_in_flight_calls)
        self._max_in_flight = config.pipeline.max_in_flight_calls
        pc = config.pipeline
        self._rate = RateController(
            pc.max_entries_per_second,
            pc.adaptive_rate,
            pc.rate_increase_per_second,
            pc.rate_decrease_factor,
            pc.min_entries_per_second,
        )
        self._rate_wait_until = 0.0
        self.metrics.rate_limit.set(self._rate.limit)
        self._ready: deque[list[Work]] = deque()  # closed batches waiting for a call slot
        self._in_flight: dict[int, tuple[list[Work], float]] = {}  # call -> (batch, started)
        self._call_ids = itertools.count()
        # (due, seq, work, is_dead_letter_rewrite): retries of sends and of dead-letter writes.
        self._scheduled: list[tuple[float, int, Work, Reason | None]] = []
        self._seq = itertools.count()
        self._epochs: dict[TP, int] = {}
        self._revoking: set[TP] = set()
        self._closing = False
        # Records consumed per topic since the last turn: the counters (a lock each) are
        # incremented once per turn, not once per record.
        self._consumed_unreported: dict[str, int] = {}
        self._consumed_counters: dict[str, Any] = {}  # labels() lookups cost more than inc()
        self._delivered_counter = self.metrics.entries.labels("delivered", "")
        self._paused = False
        self._full_since: float | None = None  # when the buffer last became full
        self._stop = threading.Event()
        self._last_commit = clock()
        self._last_progress = clock()

    # ------------------------------------------------------------------ public
    def stop(self) -> None:
        """Ask the loop to stop fetching and drain (safe from a signal handler or thread)."""
        self.health.stopping = True
        self._stop.set()

    def run(self) -> Stats:
        """Consume until :meth:`stop`, then drain within ``pipeline.shutdown_timeout_s``.

        Returns:
            The counters of the run.
        """
        poll_s = self.config.pipeline.poll_timeout_ms / 1000
        while not self._stop.is_set():
            self._apply_backpressure()
            # consume() cannot be woken by a finished call: with calls in flight, look often.
            if self._idle():
                wait = poll_s
            elif self._in_flight:
                wait = min(poll_s, 0.005)
            else:
                wait = min(poll_s, 0.005 + self._until_next_due())
            room = min(500, self._max_buffered - self._tracker.buffered)
            messages = []
            if self._paused:
                # Keeps group membership and serves rebalance callbacks; a message still
                # queued from before the pause is ingested like any other, never dropped.
                msg = self._consumer.poll(0)
                if msg is not None:
                    messages = [msg]
                self._wait_for_completion(wait)
            elif self._full_since is not None:
                self._wait_for_completion(wait)  # full: take nothing for now (see below)
            else:
                messages = self._consumer.consume(max(1, room), wait)
            if messages:
                self.health.brokers_down = False
            for msg in messages:
                self._ingest(msg)
            self._turn()
        self._drain()
        return self.stats

    # ------------------------------------------------------------------ the turn
    def _turn(self) -> None:
        """One round of everything that is not fetching."""
        self.health.beat()
        if self._consumed_unreported:
            self._report_consumed()
        self._collect_completions()
        now = self._clock()
        self._release_scheduled(now)
        if self._packer.due(now, self._linger_s):
            self._submit(self._packer.flush())
        if self._ready:
            self._dispatch()
        self._dlq.poll()
        since = now - self._last_commit
        # Commit on the interval, or early (at most every 50 ms, a commit is a broker round
        # trip) when finished records hold a quarter of the buffer: they free room when committed.
        if since >= self._commit_interval_s or (
            since >= 0.05 and self._tracker.finished_uncommitted >= self._max_buffered // 4
        ):
            self._commit()
        if now - self._last_progress >= 10:
            self._log_progress()

    def _report_consumed(self) -> None:
        for topic, count in self._consumed_unreported.items():
            counter = self._consumed_counters.get(topic)
            if counter is None:
                counter = self._consumed_counters[topic] = self.metrics.records_consumed.labels(
                    topic
                )
            counter.inc(count)
        self._consumed_unreported.clear()

    def _ingest(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", error=err.str(), code=err.name())
            return
        tp = (msg.topic(), msg.partition())
        if tp in self._revoking or tp not in self._epochs:
            return  # fetched before a revocation; the new owner reads it again
        self.stats.consumed += 1
        unreported = self._consumed_unreported
        unreported[tp[0]] = unreported.get(tp[0], 0) + 1
        try:
            self._tracker.add(tp, msg.offset())
        except OffsetOrderError as exc:
            self._restart_partition(tp, str(exc))
            self._tracker.add(tp, msg.offset())
        work = Work(msg, tp, self._epochs[tp])
        try:
            mapped = self._mapper.map(msg)
        except FilteredOut as out:
            # Dropped on purpose (filter, tombstones/null_keys: skip): nothing to send, the
            # offset is finished now and committed with its neighbours.
            self.stats.filtered += 1
            self.metrics.filtered.labels(tp[0], out.reason).inc()
            log.debug(
                "record filtered out",
                topic=tp[0],
                partition=tp[1],
                offset=work.offset,
                reason=out.reason,
            )
            self._tracker.finish(tp, work.offset)
            return
        except MappingError as exc:
            self.stats.mapping_failures += 1
            self._dead_letter(work, Reason(exc.stage, exc.code, exc.message, 0))
            return
        work.entry = mapped.entry
        work.size = mapped.size
        self._enqueue(work)

    def _enqueue(self, work: Work) -> None:
        batch = self._packer.add(work, self._clock())
        if batch:
            self._submit(batch)

    # ------------------------------------------------------------------ sending
    def _submit(self, batch: list[Work]) -> None:
        """Queue a closed batch; it starts as soon as a call slot is free."""
        if batch:
            self._ready.append(batch)
            self._dispatch()

    def _dispatch(self) -> None:
        """Start queued batches while fewer than ``max_in_flight_calls`` calls run and the rate
        limit allows."""
        while self._ready and len(self._in_flight) < self._max_in_flight:
            now = self._clock()
            wait = self._rate.delay(len(self._ready[0]), now)
            if wait > 0:
                self._rate_wait_until = now + wait
                return
            batch = self._ready.popleft()
            revoking, epochs = self._revoking, self._epochs
            batch = [w for w in batch if w.tp not in revoking and epochs.get(w.tp) == w.epoch]
            if not batch:
                continue
            self._rate.sent(len(batch), now)
            call_id = next(self._call_ids)
            for work in batch:
                work.attempts += 1
            self.stats.calls += 1
            self.metrics.batch_entries.observe(len(batch))
            self.metrics.batch_bytes.observe(sum(w.size for w in batch))
            self.metrics.in_flight_entries.inc(len(batch))
            self._in_flight[call_id] = (batch, time.perf_counter())
            self._calls.start(call_id, [w.entry for w in batch])

    def _collect_completions(self) -> None:
        finished = self._calls.finished()
        if not finished:
            return
        now = time.perf_counter()
        for call_id, outcomes in finished:
            sent = self._in_flight.pop(call_id, None)
            if sent is None:
                continue  # abandoned
            batch, started = sent
            self.metrics.in_flight_entries.dec(len(batch))
            self.metrics.put_events_duration.observe(now - started)
            self._judge(batch, outcomes)
        self._dispatch()

    def _wait_for_completion(self, timeout: float) -> None:
        """Sleep until a call completes or ``timeout`` passes (used while not fetching)."""
        if not self._in_flight:
            time.sleep(min(timeout, 0.01))
            return
        self._calls.wait(timeout)

    def _judge(self, batch: list[Work], outcomes: list[Outcome]) -> None:
        """Each index on its own: delivered, retried later, or dead-lettered."""
        now = self._clock()
        whole_call_failed = bool(outcomes) and outcomes[0].whole_call
        m = self.metrics
        if whole_call_failed:
            self.stats.call_failures += 1
            m.call_failures.labels(code_label(outcomes[0].code)).inc()
            if outcomes[0].code in THROTTLING_CODES:
                m.throttled.inc()
        delivered = 0
        if any(o.code in THROTTLING_CODES for o in outcomes):
            self._rate.throttled(now)
            self.metrics.rate_limit.set(self._rate.limit)
        epochs = self._epochs
        for work, outcome in zip(batch, outcomes, strict=True):
            if epochs.get(work.tp) != work.epoch:  # not owned any more
                continue
            if outcome.kind is Kind.DELIVERED:
                delivered += 1
                self._tracker.finish(work.tp, work.offset)
            elif outcome.kind is Kind.PERMANENT and outcome.whole_call and len(batch) > 1:
                # A request rejected as a whole: send each entry alone to find the culprit.
                self._submit([work])
            elif outcome.kind is Kind.RETRY and (
                outcome.hold or not self._backoff.exhausted(work.attempts)
            ):
                if work.tp in self._revoking:
                    continue  # revoked: the new owner sends it
                self.stats.retries += 1
                m.retries.inc()
                m.entries.labels("retried", code_label(outcome.code)).inc()
                if outcome.code in THROTTLING_CODES and not outcome.whole_call:
                    m.throttled.inc()
                if outcome.hold:
                    work.attempts -= 1
                    work.held += 1
                due = now + self._backoff.delay(work.attempts + work.held, self._rng)
                heapq.heappush(self._scheduled, (due, next(self._seq), work, None))
            else:
                self.stats.send_failures += 1
                m.entries.labels("dead_lettered", code_label(outcome.code)).inc()
                suffix = f" (after {work.attempts} attempts)" if outcome.kind is Kind.RETRY else ""
                message = (outcome.message or outcome.code) + suffix
                self._dead_letter(work, Reason("send", outcome.code, message, work.attempts))
        if delivered:
            self.stats.delivered += delivered
            self._delivered_counter.inc(delivered)
        if whole_call_failed:
            log.warning(
                "PutEvents call failed",
                code=outcomes[0].code,
                error=outcomes[0].message[:300],
                entries=len(batch),
            )

    def _release_scheduled(self, now: float) -> None:
        while self._scheduled and self._scheduled[0][0] <= now:
            _, _, work, reason = heapq.heappop(self._scheduled)
            if not self._owned(work) or work.tp in self._revoking:
                continue
            if reason is None:
                self._enqueue(work)
            else:
                self._write_dead_letter(work, reason)

    # ------------------------------------------------------------------ dead letters
    def _dead_letter(self, work: Work, reason: Reason) -> None:
        log.warning(
            "dead-lettering record",
            topic=work.tp[0],
            partition=work.tp[1],
            offset=work.offset,
            stage=reason.stage,
            code=reason.code,
            reason=reason.message[:500],
            attempts=reason.attempts,
        )
        self._write_dead_letter(work, reason)

    def _write_dead_letter(self, work: Work, reason: Reason) -> None:
        self._dlq.write(work.msg, reason, (work, reason))

    def _on_dlq_result(self, token: tuple[Work, Reason], err: Any) -> None:
        work, reason = token
        if not self._owned(work):
            return
        if err is None:
            self.stats.dead_lettered += 1
            self.metrics.dead_lettered.labels(reason.stage, code_label(reason.code)).inc()
            self._tracker.finish(work.tp, work.offset)
            return
        self.stats.dlq_write_failures += 1
        self.metrics.dlq_write_failures.inc()
        backoff = self.config.dlq.retry_backoff_ms / 1000
        log.error(
            "DEAD-LETTER WRITE FAILED: offset not committed, will write again",
            dlq_topic=self._dlq.topic,
            topic=work.tp[0],
            partition=work.tp[1],
            offset=work.offset,
            error=str(err),
            hint=failure_hint(err, self._dlq.topic, write_size(work.msg, reason)),
            retry_in_s=backoff,
        )
        due = self._clock() + backoff
        heapq.heappush(self._scheduled, (due, next(self._seq), work, reason))

    # ------------------------------------------------------------------ offsets
    def _commit(self, partitions: list[TP] | None = None) -> None:
        self._dlq.poll()
        committed = self._committer.commit(partitions)
        self.stats.committed.update(committed)
        for (topic, partition), position in committed.items():
            self.metrics.committed_offset.labels(topic, str(partition)).set(position)
        self._update_lag()
        self.metrics.rate_limit.set(self._rate.limit)
        self._last_commit = self._clock()

    def _update_lag(self) -> None:
        """Consumer lag per partition from the consumer's cached high watermarks (no I/O)."""
        for topic, partition in self._tracker.partitions():
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except Exception:
                continue
            if high is None or high < 0:
                continue
            committed = self._tracker.partition((topic, partition)).committed
            if committed is not None:
                self.metrics.consumer_lag.labels(topic, str(partition)).set(
                    max(0, high - committed)
                )

    def _owned(self, work: Work) -> bool:
        return self._epochs.get(work.tp) == work.epoch

    # ------------------------------------------------------------------ rebalances
    def on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """New partitions: start tracking them (and keep them paused if we are)."""
        for p in partitions:
            tp = (p.topic, p.partition)
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
            self._tracker.partition(tp)
        self.health.joined = True
        self.health.brokers_down = False
        self.metrics.rebalances.labels("assign").inc()
        log.info("partitions assigned", partitions=_names(partitions))
        if not partitions:
            return
        # librdkafka keeps a partition's pause flag across revoke and re-assign (librdkafka#1849):
        # set it explicitly either way, or a partition that comes back stays paused forever.
        if self._paused:
            consumer.pause(partitions)
        else:
            _resume(consumer, partitions)

    def on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions leaving: finish what is in flight, commit what is finished, send no more.

        1. Mark them revoking: queued calls skip their entries, retries of them are dropped.
        2. Take their entries out of the open batch and the retry schedule.
        3. Wait (up to the shutdown deadline) for calls in flight and judge their outcomes.
        4. Wait for their dead-letter writes to be acknowledged.
        5. Commit their finished offsets, then forget them.
        6. Clear their pause flag, which librdkafka would keep for a later re-assign.
        """
        self._give_up(partitions, commit=True)
        _resume(consumer, partitions)

    def on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions lost without a clean revoke (session timeout): no commit is possible."""
        self._give_up(partitions, commit=False)
        _resume(consumer, partitions)

    def _take_back(self, tps: set[TP]) -> None:
        """Remove the not-yet-started work of ``tps``: open batch, ready queue, retry schedule."""
        self._packer.remove_if(lambda w: w.tp in tps)
        kept = ([w for w in batch if w.tp not in tps] for batch in self._ready)
        self._ready = deque(batch for batch in kept if batch)
        self._scheduled = [s for s in self._scheduled if s[2].tp not in tps]
        heapq.heapify(self._scheduled)

    def _restart_partition(self, tp: TP, why: str) -> None:
        """The consumer went back on ``tp`` (an offset reset): start the partition over.

        Its unsent work is dropped and its in-flight answers ignored (a new epoch); the records
        come again from the consumer, so nothing is lost, and what was sent is sent again.
        """
        log.warning(
            "consumer went back on a partition: starting it over",
            topic=tp[0],
            partition=tp[1],
            reason=why,
        )
        self._take_back({tp})
        self._tracker.forget([tp])
        self._epochs[tp] += 1

    def _give_up(self, partitions: list[TopicPartition], commit: bool) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.metrics.rebalances.labels("revoke" if commit else "lost").inc()
        if not tps:
            return
        revoked = set(tps)
        self._revoking |= revoked
        self._take_back(revoked)
        # Calls under way finish (bounded by aws.read_timeout_s); when closing after the drain
        # deadline they were given up already and nothing is awaited here.
        deadline = self._clock() + self.config.pipeline.shutdown_timeout_s
        while self._in_flight and not self._closing and self._clock() < deadline:
            self.health.beat()
            self._wait_for_completion(0.05)
            self._collect_completions()
        self._dlq.flush(max(0.0, deadline - self._clock()))
        if commit:
            self._commit(tps)
        for tp in tps:
            self._epochs.pop(tp, None)
            self.metrics.forget_partition(*tp)
        self._tracker.forget(tps)
        self._revoking -= revoked
        log.info(
            "partitions revoked" if commit else "partitions lost", partitions=_names(partitions)
        )

    # ------------------------------------------------------------------ flow control
    def _apply_backpressure(self) -> None:
        """Bound what is consumed and not committed to ``pipeline.max_buffered_records``.

        When the buffer is full, the loop stops taking records and waits for calls to finish;
        librdkafka keeps what it fetched meanwhile (within ``queued.max.messages.kbytes``). Only
        if it stays full for :attr:`PAUSE_AFTER_S` (an outage, a dead-letter topic refusing
        writes) are the partitions paused, so that the loop can go on polling (group membership,
        rebalance callbacks) without taking records; they resume once half the buffer is free.
        Pausing at once, every time, made a backlog drain 5 to 10 times slower through a small
        buffer: librdkafka drops a paused partition's fetched records (librdkafka#1447, #5343),
        and fetches them again after the resume.
        """
        buffered = self._tracker.buffered
        self.metrics.buffered_records.set(buffered)
        if buffered < self._max_buffered - 1:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = self._clock()
        if (
            not self._paused
            and self._full_since is not None
            and self._clock() - self._full_since >= self.PAUSE_AFTER_S
        ):
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
            self.metrics.paused.set(1)
            log.debug("paused fetching", buffered=buffered)
        elif self._paused and buffered < self._max_buffered // 2:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False
            self.metrics.paused.set(0)
            log.debug("resumed fetching", buffered=buffered)

    def _idle(self) -> bool:
        return (
            not self._in_flight
            and not self._ready
            and not self._scheduled
            and not len(self._packer)
        )

    def _until_next_due(self) -> float:
        now = self._clock()
        candidates = [self.config.pipeline.poll_timeout_ms / 1000]
        if self._packer.opened_at is not None:
            candidates.append(self._packer.opened_at + self._linger_s - now)
        if self._scheduled:
            candidates.append(self._scheduled[0][0] - now)
        if self._ready and self._rate_wait_until > now:
            candidates.append(self._rate_wait_until - now)
        return max(0.0, min(candidates))

    # ------------------------------------------------------------------ stopping
    def _drain(self) -> None:
        """Stop fetching; finish or give up in-flight work by the deadline; commit; close."""
        deadline = self._clock() + self.config.pipeline.shutdown_timeout_s
        log.info(
            "stopping: draining in-flight work", deadline_s=self.config.pipeline.shutdown_timeout_s
        )
        while self._clock() < deadline:
            self.health.beat()
            self._collect_completions()
            self._release_scheduled(self._clock())
            self._submit(self._packer.flush())
            self._dispatch()  # batches held back by the rate limit
            self._dlq.poll()
            if self._idle() and self._dlq.in_flight == 0:
                break
            self._wait_for_completion(0.05)
        self._dlq.flush(max(0.1, deadline - self._clock()))
        self._commit()
        unfinished = self._tracker.open_count
        # Give up what did not finish: queued batches are dropped, calls still under way are
        # abandoned (their answers ignored); none of it is committed, so it is read again.
        self._closing = True
        self._revoking |= set(self._epochs)
        self._ready.clear()
        self._scheduled.clear()
        self._in_flight.clear()
        self.metrics.in_flight_entries.set(0)
        self._calls.close()
        self._consumer.close()
        self._log_progress()
        log.info("stopped", unfinished_records=unfinished)

    def _log_progress(self) -> None:
        self._last_progress = self._clock()
        s = self.stats
        log.info(
            "progress",
            consumed=s.consumed,
            delivered=s.delivered,
            dead_lettered=s.dead_lettered,
            filtered=s.filtered,
            retries=s.retries,
            calls=s.calls,
            call_failures=s.call_failures,
            dlq_write_failures=s.dlq_write_failures,
            in_flight_calls=len(self._in_flight),
            queued_calls=len(self._ready),
            buffered=self._tracker.buffered,
        )


def _resume(consumer: Any, partitions: list[TopicPartition]) -> None:
    """Clear the pause flag of ``partitions``; harmless on partitions not paused."""
    if not partitions:
        return
    try:
        consumer.resume(partitions)
    except KafkaException as exc:
        log.debug("resume of revoked/assigned partitions refused", error=str(exc))


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}/{p.partition}" for p in partitions]

"""What the loop tells the operator: counters, metrics and log lines. No decisions here."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import TopicPartition

from bridge.dlq.writer import Reason
from bridge.observability.http import Health
from bridge.observability.logging import get_logger
from bridge.observability.metrics import Metrics, code_label
from bridge.offsets.tracker import OffsetTracker
from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.judge import Action, Judgement
from bridge.pipeline.work import Stats, Work
from bridge.sink.breaker import State, Transition

log = get_logger("pipeline")

_BREAKER_CODES = {State.CLOSED: 0, State.OPEN: 1, State.HALF_OPEN: 2}


class Report:
    """The run's counters (:class:`Stats`) and metrics, kept together.

    Records consumed are counted per turn, not per record: a labelled counter costs a lock.
    """

    def __init__(self, metrics: Metrics, health: Health) -> None:
        self.stats = Stats()
        self.metrics = metrics
        self.health = health
        self._consumed: dict[str, int] = {}
        self._consumed_counters: dict[str, Any] = {}  # labels() lookups cost more than inc()
        self._delivered = metrics.entries.labels("delivered", "")
        self.outage_since: float | None = None
        """Unix time the current outage began (None: no outage)."""
        self._limits: tuple[float, int] | None = None  # as last published

    def consumed(self, topic: str) -> None:
        """One record taken from ``topic``."""
        self.stats.consumed += 1
        self._consumed[topic] = self._consumed.get(topic, 0) + 1

    def turn(self) -> None:
        """Publish what was counted per turn."""
        if not self._consumed:
            return
        for topic, count in self._consumed.items():
            counter = self._consumed_counters.get(topic)
            if counter is None:
                counter = self.metrics.records_consumed.labels(topic)
                self._consumed_counters[topic] = counter
            counter.inc(count)
        self._consumed.clear()

    def already_finished(self, topic: str) -> None:
        """A record finished before a restart or a rebalance, skipped (the commit's metadata)."""
        self.metrics.already_finished.labels(topic).inc()

    def fetching(self, paused: bool, buffered: int) -> None:
        """Fetching paused (the buffer stayed full) or resumed."""
        self.metrics.paused.set(int(paused))
        log.debug("paused fetching" if paused else "resumed fetching", buffered=buffered)

    def buffer(self, records: int, held_bytes: int) -> None:
        """The buffer now: records consumed and not committed, bytes not yet finished."""
        self.metrics.buffered_records.set(records)
        self.metrics.buffered_bytes.set(held_bytes)

    def filtered(self, work: Work, reason: str) -> None:
        """A record dropped on purpose (filter, tombstones/null keys: skip)."""
        self.stats.filtered += 1
        self.metrics.filtered.labels(work.tp[0], reason).inc()
        log.debug("record filtered out", **_where(work), reason=reason)

    def started(self, batch: list[Work]) -> None:
        """A call started."""
        self.stats.calls += 1
        m = self.metrics
        m.batch_entries.observe(len(batch))
        m.batch_bytes.observe(sum(w.size for w in batch))
        m.in_flight_entries.inc(len(batch))

    def judged(self, judgement: Judgement, batch: list[Work], seconds: float, quiet: bool) -> None:
        """A call's answer, once its verdicts are applied (``quiet``: during an outage, whose
        start and end are logged once, a failed call is not logged)."""
        s, m = self.stats, self.metrics
        m.in_flight_entries.dec(len(batch))
        m.put_events_duration.observe(seconds)
        failure = judgement.call_failure
        if failure is not None:
            s.call_failures += 1
            m.call_failures.labels(code_label(failure.code)).inc()
            if failure.throttled:
                m.throttled.inc()
        delivered = deduplicated = 0
        for v in judgement.verdicts:
            if v.action is Action.DELIVERED:
                delivered += 1
                deduplicated += v.outcome.deduplicated
            elif v.action is Action.RETRY:
                s.retries += 1
                m.retries.inc()
                m.entries.labels("retried", code_label(v.outcome.code)).inc()
                if v.outcome.throttled and not v.outcome.whole_call:
                    m.throttled.inc()
            elif v.action is Action.DEAD_LETTER:
                s.send_failures += 1
                m.entries.labels("dead_lettered", code_label(v.outcome.code)).inc()
        if delivered:
            s.delivered += delivered
            self._delivered.inc(delivered)
        if deduplicated:
            s.deduplicated += deduplicated
            m.deduplicated.inc(deduplicated)
        if failure is not None and not quiet:
            log.warning(
                "PutEvents call failed",
                code=failure.code,
                error=failure.message[:300],
                entries=len(batch),
            )

    def limits(
        self,
        rate: float,
        concurrency: int,
        breaker: State,
        why: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """The limits in force: entries/s, calls in flight, the breaker's state; a debug line
        when the rate or concurrency limit changed, with ``why`` (the controllers' reasons)."""
        if (rate, concurrency) != self._limits:
            if self._limits is not None:
                log.debug(
                    "limits changed",
                    rate_limit=rate,
                    concurrency_limit=concurrency,
                    **(why() if why else {}),
                )
            self._limits = (rate, concurrency)
        m = self.metrics
        m.rate_limit.set(rate)
        m.concurrency_limit.set(concurrency)
        m.breaker_state.set(_BREAKER_CODES[breaker])

    def outage(self, change: Transition, held_records: int, held_bytes: int) -> None:
        """The breaker opened or closed: one line when an outage starts, one when it ends."""
        held = {"held_records": held_records, "held_bytes": held_bytes}
        if change.starts_outage:
            self.outage_since = time.time() - (change.at - change.outage_began)
            self.metrics.outage_started.set(self.outage_since)
            self.health.outage = "EventBridge out of reach: records held, probing"
            log.error(
                "EVENTBRIDGE OUTAGE: calls fail as a whole; holding records, probing with one"
                " call at a time",
                **held,
            )
        elif change.ends_outage:
            self.outage_since = None
            self.metrics.outage_started.set(0)
            self.health.outage = None
            log.warning(
                "EventBridge outage over: sending at full speed again",
                outage_s=round(change.outage_s, 1),
                probes=change.probes,
                **held,
            )

    def dead_lettering(self, work: Work, reason: Reason) -> None:
        """A record about to be written to the dead-letter topic."""
        log.warning(
            "dead-lettering record",
            **_where(work),
            stage=reason.stage,
            code=reason.code,
            reason=reason.message[:500],
            attempts=reason.attempts,
        )

    def dead_lettered(self, reason: Reason) -> None:
        """A dead-letter write acknowledged."""
        self.stats.dead_lettered += 1
        self.metrics.dead_lettered.labels(reason.stage, code_label(reason.code)).inc()

    def dead_letter_failed(
        self, work: Work, err: Any, topic: str, hint: str | None, retry_in_s: float
    ) -> None:
        """A dead-letter write refused: the offset stays uncommitted and it is written again."""
        self.stats.dlq_write_failures += 1
        self.metrics.dlq_write_failures.inc()
        log.error(
            "DEAD-LETTER WRITE FAILED: offset not committed, will write again",
            dlq_topic=topic,
            **_where(work),
            error=str(err),
            hint=hint,
            retry_in_s=retry_in_s,
        )

    def committed(self, positions: dict[TP, int], unfinished_sent: int) -> None:
        """Offsets committed; ``unfinished_sent`` entries were in flight or waiting for a retry
        then (:attr:`~bridge.pipeline.send.Sender.unfinished_sent`)."""
        if positions:
            self.stats.commits += 1
            self.metrics.unfinished_at_commit.set(unfinished_sent)
        self.stats.committed.update(positions)
        for (topic, partition), position in positions.items():
            self.metrics.committed_offset.labels(topic, str(partition)).set(position)

    def rebalanced(self, kind: str, partitions: list[TopicPartition]) -> None:
        """Partitions assigned, revoked or lost."""
        self.metrics.rebalances.labels(kind).inc()
        if kind == "assign":
            log.info("partitions assigned", partitions=_names(partitions))
        elif partitions:
            what = "partitions revoked" if kind == "revoke" else "partitions lost"
            log.info(what, partitions=_names(partitions))

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions no longer ours: their labelled metrics go."""
        for tp in tps:
            self.metrics.forget_partition(*tp)

    def lag(self, consumer: Any, tracker: OffsetTracker) -> None:
        """Consumer lag per partition from the consumer's cached high watermarks (no I/O)."""
        for topic, partition in tracker.partitions():
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except Exception:
                continue
            if high is None or high < 0:
                continue
            committed = tracker.partition((topic, partition)).committed
            if committed is not None:
                lag = max(0, high - committed)
                self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)

    def progress(self, **now: Any) -> None:
        """The periodic progress line: the run's counters, then ``now`` (calls, limits, the
        buffer, the breaker)."""
        s = self.stats
        log.info(
            "progress",
            consumed=s.consumed,
            delivered=s.delivered,
            deduplicated=s.deduplicated,
            dead_lettered=s.dead_lettered,
            filtered=s.filtered,
            retries=s.retries,
            calls=s.calls,
            call_failures=s.call_failures,
            dlq_write_failures=s.dlq_write_failures,
            commits=s.commits,
            **now,
        )


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}/{p.partition}" for p in partitions]


def _where(work: Work) -> dict[str, Any]:
    return {"topic": work.tp[0], "partition": work.tp[1], "offset": work.offset}

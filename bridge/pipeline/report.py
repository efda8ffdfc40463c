"""What the loop tells the operator: counters, metrics and log lines. No decisions here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import TopicPartition

from bridge.dlq.writer import Reason
from bridge.observability.logging import get_logger
from bridge.observability.metrics import Metrics, code_label
from bridge.offsets.tracker import OffsetTracker
from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.judge import Action, Judgement
from bridge.pipeline.work import Stats, Work

log = get_logger("pipeline")


class Report:
    """The run's counters (:class:`Stats`) and metrics, kept together.

    Records consumed are counted per turn, not per record: a labelled counter costs a lock.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.stats = Stats()
        self.metrics = metrics
        self._consumed: dict[str, int] = {}
        self._consumed_counters: dict[str, Any] = {}  # labels() lookups cost more than inc()
        self._delivered = metrics.entries.labels("delivered", "")

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

    def judged(
        self, judgement: Judgement, batch: list[Work], seconds: float, rate_limit: float
    ) -> None:
        """A call's answer, once its verdicts are applied (``rate_limit``: the limit now)."""
        s, m = self.stats, self.metrics
        if judgement.throttled:
            m.rate_limit.set(rate_limit)
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
        if failure is not None:
            log.warning(
                "PutEvents call failed",
                code=failure.code,
                error=failure.message[:300],
                entries=len(batch),
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

    def committed(self, positions: dict[TP, int], rate_limit: float) -> None:
        """Offsets committed."""
        self.stats.committed.update(positions)
        for (topic, partition), position in positions.items():
            self.metrics.committed_offset.labels(topic, str(partition)).set(position)
        self.metrics.rate_limit.set(rate_limit)

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

    def progress(self, in_flight_calls: int, queued_calls: int, buffered: int) -> None:
        """The periodic progress line: the run's counters, the calls and the buffer now."""
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
            in_flight_calls=in_flight_calls,
            queued_calls=queued_calls,
            buffered=buffered,
        )


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}/{p.partition}" for p in partitions]


def _where(work: Work) -> dict[str, Any]:
    return {"topic": work.tp[0], "partition": work.tp[1], "offset": work.offset}

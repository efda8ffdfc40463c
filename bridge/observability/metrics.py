"""Prometheus metrics of one bridge, in a registry of its own.

Labels hold only bounded values: topic and partition (bounded by the subscription), outcome,
stage, and error codes, clamped to the codes AWS documents plus the bridge's own; anything else
is counted as ``other``. No label ever holds a record's content or a secret.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bridge.codes import KNOWN_CODES
from bridge.mapping.record import RecordLike


def code_label(code: str) -> str:
    """``code`` if it is a known one (:data:`bridge.codes.KNOWN_CODES`), else ``other`` (keeps
    label values bounded)."""
    return code if code in KNOWN_CODES else "other"


class Metrics:
    """Every metric the bridge exports; one instance per bridge."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_consumed = Counter(
            "bridge_records_consumed", "Records read from Kafka.", ["topic"], registry=r
        )
        self.entries = Counter(
            "bridge_entries",
            "PutEvents entry outcomes: delivered, retried (sent again later) or dead_lettered.",
            ["outcome", "error_code"],
            registry=r,
        )
        self.deduplicated = Counter(
            "bridge_deduplicated",
            "Entries the bus answered DEDUPLICATED (published by an earlier send of the same"
            " record); counted as delivered too.",
            registry=r,
        )
        self.dead_lettered = Counter(
            "bridge_dead_lettered",
            "Records written to the dead-letter topic (acknowledged), by stage and reason.",
            ["stage", "reason"],
            registry=r,
        )
        self.filtered = Counter(
            "bridge_records_filtered",
            "Records a mapping dropped on purpose (not sent, offsets committed), by reason:"
            " filter, tombstone, null_key.",
            ["topic", "reason"],
            registry=r,
        )
        self.traceparent_invalid = Counter(
            "bridge_traceparent_invalid",
            "Records whose traceparent header trace_header: auto could not convert (sent"
            " without it), by topic.",
            ["topic"],
            registry=r,
        )
        self.put_events_duration = Histogram(
            "bridge_put_events_duration_seconds",
            "Duration of PutEvents calls.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch_entries = Histogram(
            "bridge_batch_entries",
            "Entries per PutEvents call.",
            buckets=(1, 2, 3, 5, 8, 10, 15, 20),
            registry=r,
        )
        self.batch_bytes = Histogram(
            "bridge_batch_bytes",
            "Bytes per PutEvents call by AWS's entry size formula.",
            buckets=(1024, 4096, 16384, 65536, 131072, 262144, 524288, 1048576),
            registry=r,
        )
        self.in_flight_entries = Gauge(
            "bridge_in_flight_entries", "Entries in PutEvents calls under way.", registry=r
        )
        self.buffered_records = Gauge(
            "bridge_buffered_records",
            "Records consumed and not yet committed (bounded by max_buffered_records).",
            registry=r,
        )
        self.committed_offset = Gauge(
            "bridge_committed_offset",
            "Last offset committed (next to read) per partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "bridge_consumer_lag",
            "High watermark minus committed offset per assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.retries = Counter("bridge_retries", "Entries scheduled to be sent again.", registry=r)
        self.throttled = Counter(
            "bridge_throttled",
            "Throttling answers: throttled entries and throttled whole calls.",
            registry=r,
        )
        self.call_failures = Counter(
            "bridge_put_events_call_failures",
            "PutEvents calls that failed as a whole.",
            ["error_code"],
            registry=r,
        )
        self.rebalances = Counter(
            "bridge_rebalances", "Rebalance callbacks, by kind.", ["kind"], registry=r
        )
        self.dlq_write_failures = Counter(
            "bridge_dlq_write_failures",
            "Dead-letter writes the broker did not acknowledge (written again later).",
            registry=r,
        )
        self.rate_limit = Gauge(
            "bridge_rate_limit_entries_per_second",
            "Send rate limit in force (+Inf: none), from the ceiling and the adaptive limit.",
            registry=r,
        )
        self.offset_metadata_unfit = Counter(
            "bridge_offset_metadata_unfit",
            "Commits whose finished offsets above the committed one did not fit in the"
            " metadata (offset.metadata.max.bytes): the plain offset was committed, and those"
            " offsets would be sent again after a crash.",
            ["topic", "partition"],
            registry=r,
        )
        self.already_finished = Counter(
            "bridge_records_already_finished",
            "Records consumed again after a restart or a rebalance and not sent: the commit"
            " recorded them finished.",
            ["topic"],
            registry=r,
        )
        self.unfinished_at_commit = Gauge(
            "bridge_unfinished_at_commit",
            "Entries sent and unfinished at the last commit: in calls under way, waiting for a"
            " retry, or in dead-letter writes not yet acknowledged (not the backlog never sent)."
            " With what is first sent after it, what a crash then sends again at most.",
            registry=r,
        )
        self.paused = Gauge(
            "bridge_fetch_paused", "1 while fetching is paused by backpressure.", registry=r
        )
        self.buffered_bytes = Gauge(
            "bridge_buffered_bytes",
            "Estimated bytes of records consumed and not yet finished (bounded by the memory"
            " budget, pipeline.max_buffered_bytes).",
            registry=r,
        )
        self.concurrency_limit = Gauge(
            "bridge_concurrency_limit",
            "Calls in flight allowed now by the adaptive concurrency (at most"
            " pipeline.max_in_flight_calls).",
            registry=r,
        )
        self.breaker_state = Gauge(
            "bridge_circuit_breaker_state",
            "0 closed (sending), 1 open (an outage: held, probing), 2 half-open (a probe out).",
            registry=r,
        )
        self.outage_started = Gauge(
            "bridge_outage_started_seconds",
            "Unix time the current EventBridge outage began (0: none).",
            registry=r,
        )

    def count_invalid_traceparent(self, record: RecordLike) -> None:
        """The mapper's ``on_invalid_traceparent``: one more for the record's topic."""
        self.traceparent_invalid.labels(record.topic() or "").inc()

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the per-partition series of a partition no longer assigned."""
        for metric in (self.committed_offset, self.consumer_lag, self.offset_metadata_unfit):
            with contextlib.suppress(KeyError):
                metric.remove(topic, str(partition))

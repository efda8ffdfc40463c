"""The producer of dead-letter writes: its librdkafka settings.

Built from ``kafka.properties`` (shared with the consumer, minus its consumer-only settings) and
``dlq.producer``; used by :mod:`bridge.app` to create it and by
:func:`bridge.source.checks.check_kafka_settings` to check them without connecting.
"""

from __future__ import annotations

from typing import Any

from bridge.config import BridgeConfig, reveal
from bridge.observability.logging import kafka_logger

# librdkafka's consumer-only ("C") settings, global and topic-level (CONFIGURATION.md, 2.x).
CONSUMER_ONLY = frozenset(
    {
        "group.id",
        "group.instance.id",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "group.protocol.type",
        "group.protocol",
        "group.remote.assignor",
        "coordinator.query.interval.ms",
        "max.poll.interval.ms",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "enable.auto.offset.store",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "fetch.wait.max.ms",
        "fetch.queue.backoff.ms",
        "fetch.message.max.bytes",
        "max.partition.fetch.bytes",
        "fetch.max.bytes",
        "fetch.min.bytes",
        "fetch.error.backoff.ms",
        "offset.store.method",
        "isolation.level",
        "enable.partition.eof",
        "check.crcs",
        "auto.commit.enable",
        "auto.offset.reset",
        "offset.store.path",
        "offset.store.sync.interval.ms",
        "offset.method",
        "consume.callback.max.messages",
    }
)
DLQ_MESSAGE_MAX_BYTES = 64 * 1024 * 1024


def dlq_producer_config(config: BridgeConfig) -> dict[str, Any]:
    """Producer settings for dead-letter writes: acknowledged by all in-sync replicas.

    ``kafka.properties`` is shared with the consumer: its consumer-only settings are left out
    (librdkafka would warn that it ignores them). ``message.max.bytes`` defaults to 64 MiB, not
    librdkafka's 1 MB, so that any record the consumer could read can be dead-lettered whole
    if the dead-letter topic's ``max.message.bytes`` allows it; the broker is the judge.
    """
    conf = {k: v for k, v in config.kafka.client_config().items() if k not in CONSUMER_ONLY}
    conf.setdefault("message.max.bytes", DLQ_MESSAGE_MAX_BYTES)
    conf.update({"acks": "all", "enable.idempotence": True, "linger.ms": 5})
    conf["logger"] = kafka_logger("dlq-producer")
    conf.update(reveal(config.dlq.producer))
    return conf

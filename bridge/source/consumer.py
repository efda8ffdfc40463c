"""The Kafka consumer: group membership, subscription, and the callbacks of a rebalance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from bridge.config import BridgeConfig
from bridge.errors import KafkaFatalError
from bridge.observability.logging import get_logger, kafka_logger
from bridge.source.budget import MemoryBudget, memory_budget, prefetch_settings

log = get_logger("consumer")

Partitions = list[TopicPartition]

CONSUMER_DEFAULTS: dict[str, Any] = {
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "session.timeout.ms": 45000,
    "max.poll.interval.ms": 300000,
}
"""Defaults a config's ``kafka.properties`` may override."""

CLASSIC_ONLY_DEFAULTS = ("partition.assignment.strategy", "session.timeout.ms")
"""Defaults librdkafka refuses with ``group.protocol: consumer`` (KIP-848): the broker assigns
partitions (``group.remote.assignor``) and sets the session timeout
(``group.consumer.session.timeout.ms``)."""


def consumer_config(
    config: BridgeConfig,
    on_error: Callable[[KafkaError], None] | None = None,
    budget: MemoryBudget | None = None,
    on_commit: Callable[[KafkaError | None, Partitions], None] | None = None,
) -> dict[str, Any]:
    """librdkafka consumer settings: defaults, the prefetch bound of the memory budget, the
    user's pass-through keys, then what we own.

    The prefetch settings (``queued.max.messages.kbytes``, ``fetch.max.bytes``,
    ``max.partition.fetch.bytes``) keep what librdkafka fetches ahead within the budget's
    prefetch share (:func:`~bridge.source.budget.prefetch_settings`); any of them set in
    ``kafka.properties`` wins.

    Args:
        config: The bridge configuration.
        on_error: Also told of every error librdkafka reports (e.g. all brokers down).
        budget: The memory budget; None reads this container's
            (:func:`~bridge.source.budget.memory_budget`).
        on_commit: Told the answer of each asynchronous commit (served in consume and poll).
    """

    def error_cb(err: KafkaError) -> None:
        _on_error(err)
        if on_error is not None:
            on_error(err)
        failure = fatal_error(err)
        if failure is not None:
            # Raised out of the consume() or poll() that served this callback: the loop stops.
            raise failure

    if budget is None:
        budget = memory_budget(config, config.packing()[1])
    conf = dict(CONSUMER_DEFAULTS)
    if str(config.kafka.properties.get("group.protocol", "classic")).lower() == "consumer":
        for key in CLASSIC_ONLY_DEFAULTS:
            del conf[key]
    conf.update(prefetch_settings(budget.prefetch, config.kafka.properties))
    conf.update(config.kafka.client_config())
    if config.kafka.group_instance_id is not None:
        conf["group.instance.id"] = config.kafka.group_instance_id
    conf.update(
        {
            "group.id": config.kafka.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "error_cb": error_cb,
            **({"on_commit": on_commit} if on_commit is not None else {}),
            "logger": kafka_logger("consumer"),
        }
    )
    return conf


UNRELEASED_HINT = (
    "another member of the group still holds this group.instance.id: with group.protocol"
    " consumer (KIP-848) a static member that crashed keeps it until its session expires"
    " (the broker's group.consumer.session.timeout.ms, 45 s by default); exiting so that the"
    " process is started again"
)


def fatal_error(err: KafkaError) -> KafkaFatalError | None:
    """The error to end the process with when ``err`` is fatal, else None.

    librdkafka marks a fatal error either on the error itself (``fatal()``) or, once the
    client is in its fatal state, with the code ``_FATAL`` (whose ``fatal()`` is False): it
    comes through ``error_cb`` or as the error of a consumed message. A fatal consumer never
    consumes again; without ending the process the bridge would stay alive and never ready.
    """
    if not (err.fatal() or err.code() == KafkaError._FATAL):
        return None
    reason = err.str()
    held = err.code() == KafkaError.UNRELEASED_INSTANCE_ID
    unreleased = held or "instance ID is still used" in reason  # _FATAL names it in words
    hint = UNRELEASED_HINT if unreleased else "exiting so that the process is started again"
    return KafkaFatalError(err.name(), reason, hint)


def _on_error(err: KafkaError) -> None:
    # librdkafka reports transient broker trouble here and recovers by itself; only fatal matters.
    if fatal_error(err) is not None:
        log.error("kafka fatal error", error=err.str(), code=err.name())
    else:
        log.warning("kafka error", error=err.str(), code=err.name())


def subscribe(
    consumer: Consumer,
    topics: list[str],
    on_assign: Callable[[Consumer, Partitions], None],
    on_revoke: Callable[[Consumer, Partitions], None],
    on_lost: Callable[[Consumer, Partitions], None],
) -> None:
    """Subscribe to names and ``^regex`` patterns with the pipeline's rebalance callbacks."""
    consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)


def resume(consumer: Any, partitions: list[TopicPartition]) -> None:
    """Clear the pause flag of ``partitions``; harmless on partitions not paused.

    librdkafka keeps a partition's pause flag across revoke and re-assign (librdkafka#1849), so
    the rebalance callbacks clear it explicitly.
    """
    if not partitions:
        return
    try:
        consumer.resume(partitions)
    except KafkaException as exc:
        log.debug("resume of revoked/assigned partitions refused", error=str(exc))


def is_error(msg: Any) -> bool:
    """Whether ``msg`` is an event rather than a record (logged unless a partition's end).

    Raises:
        KafkaFatalError: The event is the consumer's fatal error (see :func:`fatal_error`).
    """
    err = msg.error()
    if err is None:
        return False
    failure = fatal_error(err)
    if failure is not None:
        log.error("kafka fatal error", error=err.str(), code=err.name())
        raise failure
    if err.code() != KafkaError._PARTITION_EOF:
        log.warning("consume error", error=err.str(), code=err.name())
    return True

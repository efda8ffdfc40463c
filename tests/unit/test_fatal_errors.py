"""A fatal Kafka consumer error ends the process (exit 1) instead of leaving it alive and idle."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, Message

from bridge.config.load import config_from_dict
from bridge.errors import BridgeError, KafkaFatalError
from bridge.source.budget import MemoryBudget
from bridge.source.consumer import consumer_config, fatal_error, is_error

# What librdkafka 2.16 reports to a KIP-848 static member whose id is still held (seen on
# the local Kafka 4.1 broker, as the error of a consumed message).
UNRELEASED = (
    "Fatal error: Broker: The instance ID is still used by another member in the consumer"
    " group: ConsumerGroupHeartbeat fatal error: Broker: The instance ID is still used by"
    " another member in the consumer group"
)


def test_fatal_state_and_fatal_errors_are_fatal() -> None:
    state = KafkaError(KafkaError._FATAL, UNRELEASED)
    assert not state.fatal()  # librdkafka's _FATAL code does not say fatal() itself
    failure = fatal_error(state)
    assert isinstance(failure, KafkaFatalError) and isinstance(failure, BridgeError)
    assert failure.code == "_FATAL"
    assert "group.instance.id" in str(failure) and "session" in str(failure)
    flagged = fatal_error(KafkaError(KafkaError.INVALID_PRODUCER_EPOCH, "fenced", fatal=True))
    assert flagged is not None and flagged.code == "INVALID_PRODUCER_EPOCH"
    assert "started again" in str(flagged) and "group.instance.id" not in str(flagged)


@pytest.mark.parametrize(
    "code", [KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._PARTITION_EOF]
)
def test_transient_errors_are_not_fatal(code: int) -> None:
    assert fatal_error(KafkaError(code, "transient")) is None


def test_a_consumed_fatal_error_raises() -> None:
    state = KafkaError(KafkaError._FATAL, UNRELEASED)
    with pytest.raises(KafkaFatalError):
        is_error(Message(topic=None, partition=-1, offset=-1001, error=state))
    transient = KafkaError(KafkaError._TRANSPORT)
    assert is_error(Message(topic="t", partition=0, offset=1, error=transient))
    assert not is_error(Message(topic="t", partition=0, offset=1))


def test_the_error_callback_raises_on_a_fatal_error_after_telling_the_health() -> None:
    config = config_from_dict(
        {
            "kafka": {"group_id": "g"},
            "aws": {"check_event_bus": False},
            "mappings": [{"topic": "t", "source": "s", "detail_type": "d"}],
        }
    )
    told: list[KafkaError] = []
    budget = MemoryBudget(records=1 << 24, prefetch=1 << 24, limit=None, source="setting")
    error_cb = consumer_config(config, told.append, budget)["error_cb"]
    error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "down"))
    with pytest.raises(
        KafkaFatalError, match=r"UNRELEASED_INSTANCE_ID: held\).*group\.instance\.id"
    ):
        error_cb(KafkaError(KafkaError.UNRELEASED_INSTANCE_ID, "held", fatal=True))
    assert [e.code() for e in told] == [
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.UNRELEASED_INSTANCE_ID,
    ]

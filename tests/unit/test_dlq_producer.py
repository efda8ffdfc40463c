"""The dead-letter producer's settings and what a failed write tells the operator."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from bridge.config.load import config_from_dict
from bridge.dlq.producer import CONSUMER_ONLY, DLQ_MESSAGE_MAX_BYTES, dlq_producer_config
from bridge.dlq.writer import Reason, failure_hint, reason_headers, write_size

CONSUMER_SETTINGS = {
    "session.timeout.ms": 10000,
    "max.poll.interval.ms": 600000,
    "fetch.max.bytes": 10485760,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
}


def config(**sections: Any) -> Any:
    mappings = [{"topic": "orders", "source": "com.example.orders", "detail_type": "Order"}]
    data = {"kafka": {"bootstrap_servers": "127.0.0.1:1"}, "mappings": mappings}
    return config_from_dict(data | sections)


class CapturingLogger:
    """A ``logging.Logger`` stand-in for librdkafka's ``logger`` setting."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def log(self, _level: int, fmt: str, *args: Any) -> None:
        with self.lock:
            self.lines.append(fmt % args if args else fmt)


def test_consumer_only_settings_stay_with_the_consumer() -> None:
    conf = dlq_producer_config(
        config(kafka={"bootstrap_servers": "127.0.0.1:1", "properties": CONSUMER_SETTINGS})
    )
    assert not set(conf) & CONSUMER_ONLY, conf.keys()
    assert conf["bootstrap.servers"] == "127.0.0.1:1"
    # librdkafka takes it without a word: no "is a consumer property and will be ignored".
    logger = CapturingLogger()
    conf["logger"] = logger
    Producer(conf).flush(0)
    assert not [line for line in logger.lines if "consumer property" in line], logger.lines


def test_shared_settings_reach_the_producer() -> None:
    conf = dlq_producer_config(
        config(
            kafka={
                "bootstrap_servers": "127.0.0.1:1",
                "properties": {"client.id": "bridge-7", "socket.timeout.ms": 20000},
            }
        )
    )
    assert conf["client.id"] == "bridge-7"
    assert conf["socket.timeout.ms"] == 20000


def test_message_max_bytes_leaves_the_judgement_to_the_broker() -> None:
    assert dlq_producer_config(config())["message.max.bytes"] == DLQ_MESSAGE_MAX_BYTES
    # The user's choice wins, from kafka.properties or, last, dlq.producer.
    shared = config(
        kafka={"bootstrap_servers": "127.0.0.1:1", "properties": {"message.max.bytes": 2000000}}
    )
    assert dlq_producer_config(shared)["message.max.bytes"] == 2000000
    own = config(dlq={"producer": {"message.max.bytes": 3000000}})
    assert dlq_producer_config(own)["message.max.bytes"] == 3000000
    # And a 5 MB record is queued, not refused by produce() before it reaches the broker.
    producer = Producer(dlq_producer_config(config()) | {"logger": CapturingLogger()})
    producer.produce("dlq", value=b"x" * (5 * 1024 * 1024))
    assert len(producer) >= 1  # queued (len also counts librdkafka's own requests)
    producer.purge()


class Msg:
    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self._key, self._value = key, value

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]]:
        return [("trace", b"abc")]

    def topic(self) -> str:
        return "orders"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 42


def test_write_size_counts_key_value_and_every_header() -> None:
    msg = Msg(b"k" * 10, b"v" * 1000)
    reason = Reason("decode", "ValueNotJson", "not JSON")
    headers = reason_headers(msg, reason)
    expected = 1010 + sum(len(n) + len(v or b"") for n, v in headers)
    assert write_size(msg, reason) == expected
    assert write_size(Msg(None, None), reason) == expected - 1010


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, "raise that topic's max.message.bytes"),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, "does not exist: create it (dlq.topic)"),
        (KafkaError._UNKNOWN_TOPIC, "does not exist: create it (dlq.topic)"),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "grant it WRITE"),
    ],
)
def test_failure_hint_says_what_to_change(code: int, says: str) -> None:
    hint = failure_hint(KafkaError(code), "orders-dlq", 3_000_000)
    assert hint is not None and says in hint and "'orders-dlq'" in hint


def test_failure_hint_from_a_refused_produce_call() -> None:
    # produce() raises KafkaException(KafkaError); the writer passes on the KafkaError.
    producer = Producer({"message.max.bytes": 1000, "logger": CapturingLogger()})
    with pytest.raises(KafkaException) as raised:
        producer.produce("dlq", value=b"x" * 5000)
    hint = failure_hint(raised.value.args[0], "dlq", 5000)
    assert hint is not None and "5000 bytes" in hint


def test_no_hint_for_what_passes() -> None:
    assert failure_hint(KafkaError(KafkaError._MSG_TIMED_OUT), "dlq", 10) is None
    assert failure_hint(RuntimeError("x"), "dlq", 10) is None

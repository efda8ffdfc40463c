"""What the pipeline tests share: the test configuration, consumers holding records, and the
checks a user would make of the commits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from fakes import FakeConsumer

from bridge.config import BridgeConfig
from bridge.config.load import config_from_dict

TOPIC = "orders"
P0 = (TOPIC, 0)
P1 = (TOPIC, 1)


def make_config(**sections: dict[str, Any]) -> BridgeConfig:
    """A test configuration: fast retries, 10 ms commit interval, 1 ms linger."""
    data: dict[str, Any] = {
        "kafka": {"group_id": "functional"},
        "aws": {"region": "us-east-1", "check_event_bus": False},
        "batch": {"linger_ms": 1},
        "retry": {"max_attempts": 10, "initial_backoff_ms": 1, "max_backoff_ms": 5},
        "dlq": {"topic": "orders-dlq", "retry_backoff_ms": 20},
        "pipeline": {"commit_interval_ms": 10, "shutdown_timeout_s": 5},
        "logging": {"format": "json", "level": "warning"},
        "mappings": [{"topic": TOPIC, "source": "test.bridge", "detail_type": "Order"}],
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config_from_dict(data)


def consumer_with(*counts: int) -> FakeConsumer:
    """A consumer of TOPIC with a partition per count, holding that many records."""
    consumer = FakeConsumer(TOPIC, partitions=len(counts))
    for partition, count in enumerate(counts):
        consumer.add_many(partition, count)
    return consumer


def committed_to(
    consumer: FakeConsumer, positions: dict[tuple[str, int], int]
) -> Callable[[], bool]:
    return lambda: all(consumer.committed_offsets.get(tp) == o for tp, o in positions.items())


def check_commit_history(consumer: FakeConsumer) -> None:
    """Never backwards, never for a partition not assigned at the time."""
    last: dict[tuple[str, int], int] = {}
    for attempt in consumer.commits():
        if not attempt.ok:
            continue
        for tp, offset in attempt.offsets.items():
            assert tp in attempt.assigned, f"commit of unassigned {tp}: {attempt}"
            assert offset >= last.get(tp, 0), f"commit went backwards on {tp}: {attempt}"
            last[tp] = offset


def call_error(code: str, status: int, message: str = "bad") -> ClientError:
    """A whole PutEvents call failing as botocore raises it."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutEvents",
    )


def validation_error() -> ClientError:
    return call_error("ValidationException", 400)

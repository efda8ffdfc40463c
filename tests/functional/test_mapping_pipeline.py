"""Mapping inside the real Pipeline (in-memory fakes): bad records are dead-lettered with their
reason while the good ones around them are delivered; filtered records are not sent and their
offsets are committed."""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka import Message
from fakes import FakeConsumer, FakeEventsClient
from sim import World

from bridge.config import BridgeConfig
from bridge.config.load import config_from_dict
from bridge.pipeline import Stats
from bridge.sink.factory import make_sink

TOPIC = "orders"


def make_config(mapping: dict[str, Any]) -> BridgeConfig:
    return config_from_dict(
        {
            "kafka": {"group_id": "functional"},
            "aws": {"check_event_bus": False},
            "batch": {"linger_ms": 1, "max_bytes": 4096},
            "dlq": {"topic": "orders-dlq", "retry_backoff_ms": 20},
            "pipeline": {"commit_interval_ms": 10, "shutdown_timeout_s": 5},
            "logging": {"format": "json", "level": "error"},
            "mappings": [{"topic": TOPIC, "source": "test.bridge", **mapping}],
        }
    )


def append(consumer: FakeConsumer, value: bytes | None, key: bytes | None = b"k") -> int:
    """A record of any value, a tombstone included (FakeConsumer.add fills a null value)."""
    log = consumer._logs[(TOPIC, 0)]
    offset = len(log)
    log.append(
        Message(
            topic=TOPIC,
            partition=0,
            offset=offset,
            key=key,
            value=value,
            headers=[],
            timestamp=(1, 1_700_000_000_000 + offset),
        )
    )
    return offset


def run(config: BridgeConfig, consumer: FakeConsumer, end: int) -> tuple[Stats, Any, Any]:
    """Step the pipeline until partition 0 is committed to ``end``, then stop it."""
    client = FakeEventsClient()
    world = World(config, consumer, client, sink=make_sink(config, client))
    world.until(lambda: consumer.committed_offsets.get((TOPIC, 0)) == end, f"commit of {end}")
    world.stop()
    return world.stats, world.producer, client


def test_every_bad_record_is_dead_lettered_with_its_reason_and_the_rest_delivered() -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    good = json.dumps({"type": "Placed", "arns": ["arn:a"], "when": 1_700_000_000}).encode()
    cases: list[tuple[bytes | None, str | None]] = [
        (good, None),
        (b"{oops", "ValueNotJson"),
        (b'{"type": "\xff"}', "ValueNotUtf8"),
        (b"[" * 1001 + b"]" * 1001, "NestingTooDeep"),
        (b'{"arns": [], "when": 1}', "MissingField"),
        (b'{"type": {"a": 1}, "arns": [], "when": 1}', "WrongType"),
        (json.dumps({"type": "x" * 129, "arns": [], "when": 1}).encode(), "DetailTypeTooLong"),
        (
            json.dumps({"type": "T", "arns": [f"arn:{i}" for i in range(11)], "when": 1}).encode(),
            "TooManyResources",
        ),
        (b'{"type": "T", "arns": [], "when": "soon"}', "BadTime"),
        (b'{"type": "T", "arns": 5, "when": 1}', "WrongType"),
        (
            json.dumps({"type": "T", "arns": [], "when": 1, "b": "x" * 5000}).encode(),
            "EntryTooLarge",
        ),
        (b'{"type": "T", "arns": [], "when": 1, "n": 3}', "ExpressionFailed"),
        (None, "Tombstone"),
        (good, None),
    ]
    for value, _ in cases:
        append(consumer, value)
    config = make_config(
        {
            "detail_type": "${value.type}",
            "resources": ["${value.arns}"],
            "time": "${value.when}",
            "detail": "${ {v: value, n: length(value.n || 'x')} }",
        }
    )
    stats, producer, client = run(config, consumer, len(cases))

    codes = [(p.header("offset"), p.header("code")) for p in producer.written]
    expected = [
        (str(offset).encode(), code.encode())
        for offset, (_, code) in enumerate(cases)
        if code is not None
    ]
    assert sorted(codes) == sorted(expected)
    assert stats.delivered == 2
    assert stats.dead_lettered == len(expected)
    for written in producer.written:
        message = (written.header("message") or b"").decode()
        stage = (written.header("stage") or b"").decode()
        assert stage in ("decode", "map", "validate")
        assert message, "a dead letter without a reason"
    assert [e["DetailType"] for call in client.snapshot() for e in call] == ["Placed", "Placed"]


def test_filtered_records_are_not_sent_and_their_offsets_are_committed() -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    values = [
        b'{"status": "paid"}',
        b'{"status": "new"}',
        None,
        b'{"status": "paid"}',
        b'{"status": "new"}',
    ]
    for value in values:
        append(consumer, value)
    append(consumer, b'{"status": "paid"}', key=None)
    config = make_config(
        {
            "detail_type": "Paid",
            "filter": "${value.status == 'paid'}",
            "tombstones": "skip",
            "null_keys": "skip",
        }
    )
    stats, producer, client = run(config, consumer, 6)
    assert stats.delivered == 2
    assert stats.filtered == 4
    assert stats.dead_lettered == 0 and producer.produced == 0
    assert len([e for call in client.snapshot() for e in call]) == 2


def test_a_partition_of_only_filtered_records_is_committed_to_its_end() -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    for _ in range(50):
        append(consumer, b'{"status": "new"}')
    config = make_config({"detail_type": "Paid", "filter": "${value.status == 'paid'}"})
    stats, _, client = run(config, consumer, 50)
    assert stats.filtered == 50
    assert client.snapshot() == []


def test_records_missing_optional_fields_are_delivered_with_their_trace_headers() -> None:
    # Issue 16: 19,958 of 20,057 records without the trace header were dead-lettered.
    consumer = FakeConsumer(TOPIC, partitions=1)
    xray = b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    # OpenTelemetry's AWS X-Ray propagator test vectors (tests/unit/test_trace.py)
    traceparent = b"00-8a3c60f7d188f8fa79d48a391a778fa6-53995c3f42cd8ad8-00"
    converted = "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=0"
    log = consumer._logs[(TOPIC, 0)]
    expected: dict[int, str | None] = {}
    for offset in range(200):
        headers: list[tuple[str, bytes | None]] = []
        value: dict[str, Any] = {"n": offset}
        if offset % 50 == 1:
            headers = [("X-Amzn-Trace-Id", xray)]
            expected[offset] = xray.decode()
        elif offset % 50 == 2:
            headers = [("traceparent", traceparent)]
            expected[offset] = converted
        elif offset % 50 == 3:
            headers = [("traceparent", b"00-garbage-01")]  # invalid: left out, not a dead letter
            expected[offset] = None
        else:
            expected[offset] = None
        if offset % 10 == 0:
            value |= {"at": 1_700_000_000, "arn": f"arn:aws:s3:::b{offset}"}
        log.append(
            Message(
                topic=TOPIC,
                partition=0,
                offset=offset,
                key=b"k",
                value=json.dumps(value).encode(),
                headers=headers,
                timestamp=(1, 1_700_000_000_000 + offset),
            )
        )
    config = make_config(
        {
            "detail_type": "Event",
            "detail": "${ {n: value.n} }",
            "time": "${value.at}",
            "resources": ["${value.arn}"],
            "trace_header": "auto",
            "trace_detail_key": "trace",
        }
    )
    stats, producer, client = run(config, consumer, 200)

    assert stats.dead_lettered == 0 and producer.produced == 0
    entries = {json.loads(e["Detail"])["n"]: e for call in client.snapshot() for e in call}
    assert sorted(entries) == list(range(200))
    for offset, entry in entries.items():
        assert entry.get("TraceHeader") == expected[offset], offset
        assert json.loads(entry["Detail"]).get("trace") == expected[offset]
        assert ("Time" in entry, "Resources" in entry) == (offset % 10 == 0,) * 2

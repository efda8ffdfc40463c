"""Delivery on the real broker and a real HTTP endpoint: every record accounted for."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
from kafkatest import (
    DETAIL,
    Topics,
    bridge_config,
    committed,
    coordinates,
    dlq_headers,
    end_offsets,
    produce,
    read_all,
    run_to_end,
    wait_until,
)

from bridge.batching.size import entry_size as bridge_entry_size
from testbed.endpoint import Faults, LocalEventBridge, entry_size

pytestmark = pytest.mark.integration

PREFIX = "e2e"
MAPPING = {
    "topic_pattern": f"{PREFIX}-(orders|payments|returns)-.*",
    "source": "com.example.${topic}",
    "detail_type": "Order ${value.status}",
    "detail": DETAIL,
    "resources": ["arn:aws:example:us-east-1:123456789012:order/${value.id}"],
    "trace_header": "Root=${key}",
}


def test_10000_records_with_partial_failures_all_delivered_or_dead_lettered(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, run_bridge: Any
) -> None:
    names = [
        topics.create(f"{PREFIX}-{kind}", partitions=2)
        for kind in ("orders", "payments", "returns")
    ]
    dlq = topics.create("e2e-dlq")
    rng = random.Random(1)
    produced: dict[tuple[str, int, int], tuple[bytes | None, bytes]] = {}
    sent: dict[str, list[tuple[bytes | None, bytes | None, int | None]]] = {n: [] for n in names}
    for i in range(10_000):
        topic = names[i % 3]
        value = {
            "id": i,
            "status": rng.choice(["created", "paid", "shipped"]),
            "amount": i * 1.5,
            "note": "é" * rng.randint(0, 40),
        }
        sent[topic].append((f"k{i}".encode(), json.dumps(value).encode(), i % 2))
    for i in range(50):  # not JSON: must be dead-lettered at decode
        sent[names[i % 3]].append((f"bad{i}".encode(), b"not json {" + str(i).encode(), i % 2))
    for topic, records in sent.items():
        produce(kafka_bootstrap, topic, records)
    ends: dict[tuple[str, int], int] = {}
    for topic in names:
        ends |= end_offsets(kafka_bootstrap, topic)
    assert sum(ends.values()) == 10_050

    endpoint.set_faults(
        Faults(
            per_entry_failures={
                "ThrottlingException": 0.15,
                "InternalFailure": 0.05,
                "InvalidArgument": 0.01,
            }
        )
    )
    config = bridge_config(kafka_bootstrap, endpoint.url, [MAPPING], dlq)
    bridge = run_bridge(config)
    group = config["kafka"]["group_id"]

    def all_committed() -> bool:
        done = {}
        for topic in names:
            done |= committed(kafka_bootstrap, group, topic)
        return done == ends

    wait_until(all_committed, 240, "committed offsets to reach the end offsets", interval=1)
    bridge.stop()

    # Every record of the topics, read back from the broker, with its original bytes.
    for topic in names:
        for msg in read_all(kafka_bootstrap, topic):
            produced[(msg.topic(), msg.partition(), msg.offset())] = (msg.key(), msg.value())
    assert len(produced) == 10_050

    received = endpoint.received()
    by_record = Counter(coordinates(r.entry) for r in received)
    assert not [k for k, n in by_record.items() if n > 1], "a record was delivered twice"
    for r in received:
        key, raw = produced[coordinates(r.entry)]
        value = json.loads(raw)
        topic, partition, offset = coordinates(r.entry)
        assert r.entry["Source"] == f"com.example.{topic}"
        assert r.entry["DetailType"] == f"Order {value['status']}"
        assert json.loads(r.entry["Detail"]) == {
            "order": value,
            "kafka": {"topic": topic, "partition": partition, "offset": offset},
        }
        assert r.entry["Resources"] == [
            f"arn:aws:example:us-east-1:123456789012:order/{value['id']}"
        ]
        assert r.entry["TraceHeader"] == f"Root={key.decode()}"
        assert r.entry["EventBusName"] == "default"
        assert isinstance(r.entry["Time"], int | float)

    dead = read_all(kafka_bootstrap, dlq)
    dead_by_record = {}
    for msg in dead:
        h = dlq_headers(msg)
        where = (h["topic"], int(h["partition"]), int(h["offset"]))
        assert where not in dead_by_record, f"dead-lettered twice: {where}"
        dead_by_record[where] = (msg, h)
        assert (msg.key(), msg.value()) == produced[where], (
            "dead letter must keep the original bytes"
        )
        original_headers = [(k, v) for k, v in msg.headers() if not k.startswith("__bridge.")]
        assert original_headers == []

    assert set(by_record).isdisjoint(dead_by_record), "a record both delivered and dead-lettered"
    lost = set(produced) - set(by_record) - set(dead_by_record)
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:5]}"

    reasons = Counter((h["stage"], h["code"]) for _, h in dead_by_record.values())
    assert reasons[("decode", "ValueNotJson")] == 50
    assert reasons[("send", "InvalidArgument")] > 50  # 1% per attempt of ~12,500 sends
    assert set(reasons) <= {
        ("decode", "ValueNotJson"),
        ("send", "InvalidArgument"),
        ("send", "InternalFailure"),
    }, "a throttled entry is held (the quota), never dead-lettered"
    not_json = [m for m, h in dead_by_record.values() if h["code"] == "ValueNotJson"]
    assert all(m.value().startswith(b"not json {") for m in not_json)

    failed = endpoint.stats()["entries_failed"]
    print(
        f"\n10,050 records: {len(by_record)} delivered, {len(dead_by_record)} dead-lettered"
        f" {dict(reasons)}, 0 lost, 0 duplicated; injected per entry {failed};"
        f" {bridge.stats.retries} retries in {bridge.stats.calls} calls"
    )
    assert failed.get("ThrottlingException", 0) > 1000, "retryable failures were injected"
    assert (
        bridge.stats.retries
        >= failed.get("ThrottlingException", 0)
        + failed.get("InternalFailure", 0)
        - reasons[("send", "InternalFailure")]
    )
    assert endpoint.violations == []
    assert all(c.entries <= 10 for c in endpoint.calls())


def test_no_call_exceeds_limits_with_records_near_them(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, run_bridge: Any
) -> None:
    topic = topics.create("big", partitions=1)
    dlq = topics.create("big-dlq")
    rng = random.Random(5)
    records = []
    for i in range(120):
        # 1 KB .. 120 KB of multi-byte text: batches are cut by bytes, not only by count
        pad = "ü" * rng.randint(500, 60_000)
        records.append((str(i).encode(), json.dumps({"id": i, "pad": pad}).encode(), None))
    records.append((b"huge", json.dumps({"id": "huge", "pad": "x" * 300_000}).encode(), None))
    produce(kafka_bootstrap, topic, records)
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [{"topic": topic, "source": "com.example.big", "detail_type": "Big"}],
        dlq,
    )
    run_to_end(run_bridge, config, topic)

    assert endpoint.violations == []
    calls = [c for c in endpoint.calls() if c.operation == "PutEvents"]
    assert max(c.size for c in calls) <= 262_144
    assert max(c.entries for c in calls) <= 10
    assert any(c.size > 200_000 for c in calls), "batches should fill up towards the byte limit"
    received = endpoint.received()
    assert len(received) == 120
    for r in received:
        assert bridge_entry_size(r.entry) == entry_size(r.entry)
    dead = read_all(kafka_bootstrap, dlq)
    assert len(dead) == 1
    headers = dlq_headers(dead[0])
    assert headers["code"] == "EntryTooLarge"
    assert "262144" in headers["message"]
    assert dead[0].key() == b"huge"

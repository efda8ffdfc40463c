"""The new bus on the real broker and a real HTTP endpoint speaking smithy-rpc-v2-cbor.

Records over 6 partitions and 200 keys (event group = key), 20% of entries failing retryably and
1% permanently, 48 calls in flight: per group, the publish order the endpoint recorded equals
the Kafka order minus the dead-lettered records; none lost, none published twice; the committed
offsets reach the end offsets. The bridge is built as ``bridge run`` builds it (``build_bridge``:
the lean CBOR client by default, boto3's own eventbridgev2 client with ``aws.client: boto3``;
the start-up DescribeEventBus check).
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafkatest import (
    Topics,
    bridge_config,
    dead_letter_codes,
    end_offsets,
    produce,
    read_all,
    wait_committed,
)

from bridge.config import SchemaRegistryConfig
from bridge.errors import BridgeError
from bridge.mapping.registry import registry_client
from bridge.sink.calls import ThreadedCalls
from bridge.sink.lean_cbor import LeanV2Calls
from testbed.base import Faults
from testbed.eventbus_v2 import BUS_ARN, LocalEventBusV2

pytestmark = pytest.mark.integration

RECORDS = int(os.environ.get("BUSV2_RECORDS", "4000"))  # the run: 20000 and 1000 keys
PARTITIONS = 6
KEYS = int(os.environ.get("BUSV2_KEYS", "200"))


@pytest.fixture
def bus() -> Iterator[LocalEventBusV2]:
    with LocalEventBusV2(seed=11) as server:
        yield server


def config_for(
    bootstrap: str, bus: LocalEventBusV2, topic: str, dlq: str, client: str = "lean", **extra: Any
) -> Any:
    mapping = {
        "topic": topic,
        "source": "com.example.orders",
        "detail_type": "Order",
        "event_group_id": "${key}",
    }
    return bridge_config(
        bootstrap,
        bus.url,
        [mapping],
        dlq,
        sink="event_bus_v2",
        aws={"event_bus_arn": BUS_ARN, "client": client},
        pipeline={"max_in_flight_calls": 48, "max_buffered_records": 5000},
        **extra,
    )


@pytest.mark.parametrize("client", ["lean", "boto3"])
def test_each_group_published_in_kafka_order_under_failures(
    kafka_bootstrap: str, topics: Topics, bus: LocalEventBusV2, run_bridge: Any, client: str
) -> None:
    topic = topics.create("v2-orders", partitions=PARTITIONS)
    dlq = topics.create("v2-dlq")
    rng = random.Random(5)
    records = [
        (b"key-%d" % rng.randrange(KEYS), json.dumps({"n": i}).encode(), None)
        for i in range(RECORDS)
    ]
    produce(kafka_bootstrap, topic, records)
    bus.set_faults(Faults(per_entry_failures={"InternalException": 0.20, "ValidationError": 0.01}))
    config = config_for(kafka_bootstrap, bus, topic, dlq, client)
    bridge = run_bridge(config)
    calls = bridge.bridge.pipeline._send._calls
    assert isinstance(calls, LeanV2Calls if client == "lean" else ThreadedCalls)
    ends = wait_committed(config, topic, timeout=300)
    bridge.stop()

    assert ends == end_offsets(kafka_bootstrap, topic) and sum(ends.values()) == RECORDS
    kafka = read_all(kafka_bootstrap, topic)
    dead = dead_letter_codes(read_all(kafka_bootstrap, dlq))
    assert set(dead.values()) == {"ValidationError"}
    expected: dict[str, list[str]] = defaultdict(list)
    for msg in sorted(kafka, key=lambda m: (m.partition(), m.offset())):
        if (msg.partition(), msg.offset()) not in dead:
            expected[msg.key().decode()].append(f"{topic}-{msg.partition()}-{msg.offset()}")
    published = bus.group_order()
    # Produced by key, a group lives in one partition; split by partition all the same: the
    # bridge orders per (partition, group).
    assert per_partition(published) == per_partition(dict(expected))
    ids = [r.deduplication_id for r in bus.received()]
    assert len(ids) == len(set(ids)), "a record was published twice"
    assert len(ids) + len(dead) == RECORDS, "a record was lost"
    stats = bus.stats()
    assert stats["entries_failed"]["InternalException"] > 500  # the faults really happened
    assert max(c.entries for c in bus.calls()) > 1
    assert not bus.violations
    assert bridge.stats.delivered == len(ids) and bridge.stats.dead_lettered == len(dead)
    calls = bus.calls()
    print(  # the run in numbers (pytest -s)
        f"\n{RECORDS} records, {KEYS} keys: {len(ids)} published, {len(dead)} dead-lettered,"
        f" {stats['entries_failed']} failed sends, {len(calls)} calls,"
        f" {sum(c.entries for c in calls) / len(calls):.1f} entries per call"
    )


def per_partition(groups: dict[str, list[str]]) -> dict[tuple[str, str], list[int]]:
    """group -> record ids, split by partition: (group, partition) -> offsets in that order."""
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    for group, ids in groups.items():
        for record in ids:
            _, partition, offset = record.rsplit("-", 2)
            out[(group, partition)].append(int(offset))
    return dict(out)


def test_records_sent_again_are_answered_deduplicated_and_published_once(
    kafka_bootstrap: str, topics: Topics, bus: LocalEventBusV2, run_bridge: Any
) -> None:
    """A second bridge of another group reads the same records: every one is answered
    DEDUPLICATED (the record id is the DeduplicationId), counted apart, published once."""
    topic = topics.create("v2-dedup", partitions=2)
    dlq = topics.create("v2-dedup-dlq")
    produce(kafka_bootstrap, topic, [(b"k%d" % (i % 7), b"{}", i % 2) for i in range(300)])
    one, two = (config_for(kafka_bootstrap, bus, topic, dlq) for _ in range(2))
    first = run_bridge(one)
    wait_committed(one, topic)
    first.stop()
    second = run_bridge(two)
    wait_committed(two, topic)
    second.stop()
    assert bus.stats()["entries_received"] == 300
    assert bus.stats()["entries_deduplicated"] == 300
    assert second.stats.deduplicated == 300 and second.stats.delivered == 300
    assert Counter(len(v) for v in bus.group_order().values()) == Counter(
        len([i for i in range(300) if i % 7 == k]) for k in range(7)
    )


def test_start_up_check_refuses_a_missing_bus(
    kafka_bootstrap: str, topics: Topics, bus: LocalEventBusV2, run_bridge: Any
) -> None:
    topic = topics.create("v2-missing")
    config = config_for(kafka_bootstrap, bus, topic, "v2-missing-dlq")
    config["aws"]["event_bus_arn"] = BUS_ARN.replace("/local/", "/gone/")
    with pytest.raises(BridgeError, match="does not exist"):
        run_bridge(config)


AVRO_SCHEMA = (
    '{"type": "record", "name": "Order", "fields": [{"name": "id", "type": "int"},'
    ' {"name": "status", "type": "string"}]}'
)
CONFLUENT = "https://psrc-abc12.us-east-2.aws.confluent.cloud"
CONNECTION = "arn:aws:events:us-east-1:123456789012:connection/confluent-sr/0a1b2c3d"


def test_avro_records_published_byte_for_byte_with_put_raw_events(
    kafka_bootstrap: str, topics: Topics, bus: LocalEventBusV2, run_bridge: Any
) -> None:
    """Avro records of a schema-registered topic go out undecoded, the registry on every
    request; a record without the framing under content_type: auto is dead-lettered saying so."""
    registry = f"mock://busv2-{uuid.uuid4().hex[:8]}"
    serializer = AvroSerializer(registry_client(SchemaRegistryConfig(url=registry)), AVRO_SCHEMA)
    topic = topics.create("v2-avro", partitions=2)
    dlq = topics.create("v2-avro-dlq")
    framed = [
        bytes(
            serializer({"id": i, "status": "paid"}, SerializationContext(topic, MessageField.VALUE))
        )
        for i in range(200)
    ]
    records: list[tuple[bytes | None, bytes | None, int | None]] = [
        (b"o-%d" % (i % 10), value, None) for i, value in enumerate(framed)
    ]
    records.append((b"o-x", b'{"not": "framed"}', None))
    produce(kafka_bootstrap, topic, records)
    mapping = {
        "topic": topic,
        "publish": "put_raw_events",
        "event_group_id": "${key}",
        "metadata": {"kafka-topic": "${topic}"},
    }
    config = bridge_config(
        kafka_bootstrap,
        bus.url,
        [mapping],
        dlq,
        sink="event_bus_v2",
        aws={
            "event_bus_arn": BUS_ARN,
            "schema_registry_uri": CONFLUENT,
            "schema_registry_connection_arn": CONNECTION,
        },
        schema_registry={"url": registry},
    )
    bridge = run_bridge(config)
    wait_committed(config, topic)
    bridge.stop()
    received = bus.received()
    assert sorted(r.entry["Data"] for r in received) == sorted(framed)
    for r in received:
        assert r.operation == "PutRawEvents"
        assert r.entry["SystemMetadata"]["ContentType"] == "application/avro"
        assert r.entry["Metadata"] == {"kafka-topic": topic}
        assert r.schema_registry == {
            "RegistryUri": CONFLUENT,
            "ConfluentPublicRegistryConfiguration": {"ConnectionArn": CONNECTION},
        }
    [letter] = read_all(kafka_bootstrap, dlq)
    headers = {k: v.decode() for k, v in letter.headers() if k.startswith("__bridge.errors.")}
    assert headers["__bridge.errors.code"] == "NoSchemaId"
    assert "content_type: auto" in headers["__bridge.errors.message"]
    assert letter.value() == b'{"not": "framed"}'

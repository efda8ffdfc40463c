"""Mapping end to end on the real broker: Schema Registry decoding, filters and skip policies,
and S3 offloading against moto's S3 (the claim check read back and verified)."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import boto3
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafkatest import Topics, bridge_config, dlq_headers, produce, read_all, run_to_end

from bridge.config import SchemaRegistryConfig
from bridge.mapping.registry import registry_client
from testbed.endpoint import LocalEventBridge

pytestmark = pytest.mark.integration

ORDER_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "fields": [
            {"name": "id", "type": "int"},
            {"name": "status", "type": "string"},
            {"name": "total", "type": "double"},
        ],
    }
)


def test_avro_records_filtered_and_tombstones_skipped_offsets_committed(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, run_bridge: Any
) -> None:
    topic = topics.create("sr-orders", partitions=2)
    dlq = topics.create("sr-dlq")
    url = f"mock://it-{uuid.uuid4().hex[:8]}"
    serializer = AvroSerializer(registry_client(SchemaRegistryConfig(url=url)), ORDER_SCHEMA)
    ctx = SerializationContext(topic, MessageField.VALUE)
    records: list[tuple[bytes | None, bytes | None, int | None]] = []
    for i in range(60):
        status = "paid" if i % 3 == 0 else "created"
        value = serializer({"id": i, "status": status, "total": i * 1.5}, ctx)
        records.append((f"o{i}".encode(), value, i % 2))
    records += [(b"gone", None, 0), (b"gone", None, 1)]  # tombstones: skipped
    records.append((b"bad", b'{"id": 1}', 0))  # JSON where Avro is expected: dead-lettered
    produce(kafka_bootstrap, topic, records)
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [
            {
                "topic": topic,
                "decode": {"value": "avro"},
                "filter": "${value.status == 'paid'}",
                "tombstones": "skip",
                "source": "com.example.orders",
                "detail_type": "OrderPaid",
                "detail": "${ {order: value, id: id} }",
            }
        ],
        dlq,
        schema_registry={"url": url},
    )
    bridge = run_to_end(run_bridge, config, topic, timeout=60)

    details = [json.loads(r.entry["Detail"]) for r in endpoint.received()]
    assert sorted(d["order"]["id"] for d in details) == list(range(0, 60, 3))
    for detail in details:
        assert detail["order"]["status"] == "paid"
        assert detail["id"].startswith(f"{topic}-")
    assert bridge.stats.filtered == 40 + 2
    assert bridge.stats.delivered == 20
    dead = read_all(kafka_bootstrap, dlq)
    assert len(dead) == 1
    assert dlq_headers(dead[0])["code"] == "NoSchemaId"
    assert dead[0].value() == b'{"id": 1}'


def test_large_entries_go_through_s3_and_the_reference_reads_back(
    kafka_bootstrap: str,
    topics: Topics,
    endpoint: LocalEventBridge,
    moto_url: str,
    run_bridge: Any,
) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    s3.create_bucket(Bucket="claim-checks")
    topic = topics.create("big-docs")
    dlq = topics.create("big-dlq")
    bodies = ["é" * 150_000 + str(i) for i in range(3)]  # 300 KB of UTF-8 each: over 256 KiB
    values = [
        json.dumps({"name": "small", "body": "short"}),
        *(json.dumps({"name": f"doc-{i}", "body": body}) for i, body in enumerate(bodies)),
    ]
    produce(kafka_bootstrap, topic, [(None, v.encode(), None) for v in values])
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [
            {
                "topic": topic,
                "source": "com.example.docs",
                "detail_type": "Document",
                "detail": "${ {name: value.name, body: value.body} }",
                "oversize": "offload",
                "offload_path": "body",
            }
        ],
        dlq,
        offload={"bucket": "claim-checks", "prefix": "bridge/", "endpoint_url": moto_url},
    )
    bridge = run_to_end(run_bridge, config, topic, timeout=60)
    assert bridge.stats.dead_lettered == 0

    details = sorted(
        (json.loads(r.entry["Detail"]) for r in endpoint.received()), key=lambda d: d["name"]
    )
    assert [d["name"] for d in details] == ["doc-0", "doc-1", "doc-2", "small"]
    assert details[3]["body"] == "short"
    for i, detail in enumerate(details[:3]):
        reference = detail["body"]["s3_offload"]
        assert reference["bucket"] == "claim-checks"
        assert reference["key"] == f"bridge/{topic}/0/{i + 1}.json"
        stored = s3.get_object(Bucket="claim-checks", Key=reference["key"])["Body"].read()
        assert len(stored) == reference["size"]
        assert hashlib.sha256(stored).hexdigest() == reference["sha256"]
        assert json.loads(stored) == bodies[i]


def test_an_offload_that_fails_is_dead_lettered_with_the_s3_error(
    kafka_bootstrap: str,
    topics: Topics,
    endpoint: LocalEventBridge,
    moto_url: str,
    run_bridge: Any,
) -> None:
    topic = topics.create("big-nobucket")
    dlq = topics.create("big-nobucket-dlq")
    big = json.dumps({"body": "x" * 300_000}).encode()
    produce(kafka_bootstrap, topic, [(b"k", big, None), (b"k", b'{"body": "ok"}', None)])
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [{"topic": topic, "source": "s.docs", "detail_type": "Doc", "oversize": "offload"}],
        dlq,
        offload={"bucket": "no-such-bucket", "endpoint_url": moto_url, "max_attempts": 1},
    )
    run_to_end(run_bridge, config, topic, timeout=60)
    dead = read_all(kafka_bootstrap, dlq)
    assert len(dead) == 1
    headers = dlq_headers(dead[0])
    assert (headers["stage"], headers["code"]) == ("offload", "OffloadFailed")
    assert "s3://no-such-bucket/eventbridge-bridge/" in headers["message"]
    assert "NoSuchBucket" in headers["message"]
    assert dead[0].value() == big
    assert [json.loads(r.entry["Detail"]) for r in endpoint.received()] == [{"body": "ok"}]


def test_missing_optional_fields_cost_no_event_and_trace_headers_arrive(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, run_bridge: Any
) -> None:
    """Issue 16 at small scale: 2,000 records, 1% with X-Amzn-Trace-Id, 1% with only a W3C
    traceparent, a few with an invalid one; most without time or resource ARN."""
    topic = topics.create("traced", partitions=2)
    dlq = topics.create("traced-dlq")
    xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1"  # noqa: E501
    # OpenTelemetry's AWS X-Ray propagator test vectors (tests/unit/test_trace.py)
    traceparent = "00-8a3c60f7d188f8fa79d48a391a778fa6-53995c3f42cd8ad8-01"
    converted = "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=1"
    expected: dict[int, str | None] = {}
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    for n in range(2000):
        value: dict[str, Any] = {"n": n}
        headers: list[tuple[str, bytes]] = [("content-type", b"application/json")]
        expected[n] = None
        if n % 100 == 7:
            headers.append(("X-Amzn-Trace-Id", xray.encode()))
            expected[n] = xray
        elif n % 100 == 8:
            headers.append(("traceparent", traceparent.encode()))
            expected[n] = converted
        elif n % 500 == 9:
            headers.append(("traceparent", b"00-not-a-trace-context-01"))
        if n % 3 == 0:
            value |= {"created_at": "2024-05-06T07:08:09Z", "customer_arn": f"arn:c:{n}"}
        producer.produce(topic, json.dumps(value).encode(), key=str(n).encode(), headers=headers)
        producer.poll(0)
    assert producer.flush(60) == 0
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [
            {
                "topic": topic,
                "source": "com.example.orders",
                "detail_type": "Order",
                "resources": ["${value.customer_arn}"],
                "time": "${value.created_at}",
                "trace_header": "auto",
                "trace_detail_key": "trace",
            }
        ],
        dlq,
    )
    bridge = run_to_end(run_bridge, config, topic, timeout=120)

    assert bridge.stats.dead_lettered == 0
    assert read_all(kafka_bootstrap, dlq) == []
    received = {json.loads(r.entry["Detail"])["n"]: r.entry for r in endpoint.received()}
    assert sorted(received) == list(range(2000))
    traced = {n for n, entry in received.items() if "TraceHeader" in entry}
    assert len(traced) == 40
    for n, entry in received.items():
        assert entry.get("TraceHeader") == expected[n], n
        assert json.loads(entry["Detail"]).get("trace") == expected[n], n
        assert ("Time" in entry) == ("Resources" in entry) == (n % 3 == 0), n

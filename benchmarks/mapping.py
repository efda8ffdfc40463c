"""Mapping cost: microseconds per record, record -> PutEvents entry (the owner thread's work).

    .venv/bin/python benchmarks/mapping.py            # about 20 s
    .venv/bin/python benchmarks/mapping.py --quick    # fewer rounds

Each case maps the same ~1 KB record many times through ``Mapper.map`` (decode, filter,
templates, checks, wire form and AWS size), and reports the median of several rounds. Schema
Registry decoders use confluent-kafka's mock:// registry, schemas cached after the first record
(as in production after warm-up), so the figures are decoding cost, not network.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from confluent_kafka import Message

from bridge.config import SchemaRegistryConfig
from bridge.config.load import config_from_dict
from bridge.app import build_mapper
from bridge.errors import FilteredOut
from bridge.mapping.mapper import Mapper
from bridge.mapping.registry import registry_client
from bridge.sink.factory import make_sink

REGISTRY = "mock://benchmark"

ORDER: dict[str, Any] = {
    "id": "o-12345",
    "status": "paid",
    "created_at": "2024-05-06T07:08:09.250Z",
    "customer": {"id": "c-987", "arn": "arn:aws:example:us-east-1:123456789012:customer/c-987"},
    "total": 1234.5,
    "currency": "EUR",
    "lines": [
        {"sku": f"SKU-{i:04d}", "qty": i + 1, "price": 10.5 * (i + 1), "name": f"Item n°{i}"}
        for i in range(8)
    ],
    "shipping": {"street": "1 rue de la Paix", "city": "Paris", "zip": "75002", "country": "FR"},
    "tags": ["web", "promo", "priority"],
}

TYPICAL = {
    "source": "com.example.${topic}",
    "detail_type": "Order ${value.status}",
    "detail": "${ {order: value, kafka: {topic: topic, partition: partition, offset: offset},"
    " id: id} }",
    "resources": ["${value.customer.arn}"],
    "time": "${value.created_at}",
    "trace_header": '${headers."X-Amzn-Trace-Id"}',
}

AVRO_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "status", "type": "string"},
            {"name": "created_at", "type": "string"},
            {
                "name": "customer",
                "type": {
                    "type": "record",
                    "name": "Customer",
                    "fields": [
                        {"name": "id", "type": "string"},
                        {"name": "arn", "type": "string"},
                    ],
                },
            },
            {"name": "total", "type": "double"},
            {"name": "currency", "type": "string"},
            {
                "name": "lines",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "Line",
                        "fields": [
                            {"name": "sku", "type": "string"},
                            {"name": "qty", "type": "int"},
                            {"name": "price", "type": "double"},
                            {"name": "name", "type": "string"},
                        ],
                    },
                },
            },
            {"name": "shipping", "type": {"type": "map", "values": "string"}},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
        ],
    }
)


def record(value: bytes, topic: str = "orders") -> Message:
    return Message(
        topic=topic,
        partition=3,
        offset=123_456,
        key=b"o-12345",
        value=value,
        headers=[("X-Amzn-Trace-Id", b"Root=1-5759e988-bd862e3fe1be46a994272793")],
        timestamp=(1, 1_700_000_000_000),
    )


def mapper(mapping: dict[str, Any]) -> Mapper:
    base = {"topic": "orders", "source": "com.example.orders", "detail_type": "Order"}
    config = config_from_dict(
        {"schema_registry": {"url": REGISTRY}, "mappings": [{**base, **mapping}]}
    )
    return build_mapper(config, make_sink(config, None))


def protobuf_order() -> bytes:
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from google.protobuf import descriptor_pb2, descriptor_pool
    from google.protobuf.message_factory import GetMessageClass

    f = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="bench.proto", package="bench", syntax="proto3")
    line = fd.message_type.add(name="Line")
    for number, (name, kind) in enumerate(
        [("sku", f.TYPE_STRING), ("qty", f.TYPE_INT32), ("price", f.TYPE_DOUBLE)], 1
    ):
        line.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL)
    line.field.add(name="name", number=4, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    order = fd.message_type.add(name="Order")
    for number, name in enumerate(["id", "status", "created_at", "currency"], 1):
        order.field.add(name=name, number=number, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    order.field.add(name="total", number=5, type=f.TYPE_DOUBLE, label=f.LABEL_OPTIONAL)
    order.field.add(
        name="lines",
        number=6,
        type=f.TYPE_MESSAGE,
        type_name=".bench.Line",
        label=f.LABEL_REPEATED,
    )
    order.field.add(name="tags", number=7, type=f.TYPE_STRING, label=f.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    order_cls = GetMessageClass(pool.FindMessageTypeByName("bench.Order"))
    line_cls = GetMessageClass(pool.FindMessageTypeByName("bench.Line"))
    message = order_cls(
        id=ORDER["id"],
        status=ORDER["status"],
        created_at=ORDER["created_at"],
        currency=ORDER["currency"],
        total=ORDER["total"],
        tags=ORDER["tags"],
    )
    for item in ORDER["lines"]:
        message.lines.append(line_cls(**item))
    serializer = ProtobufSerializer(
        order_cls,
        registry_client(SchemaRegistryConfig(url=REGISTRY)),
        {"use.deprecated.format": False},
    )
    return bytes(serializer(message, SerializationContext("orders", MessageField.VALUE)))


def cases() -> list[tuple[str, Mapper, Message]]:
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.schema_registry.json_schema import JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = registry_client(SchemaRegistryConfig(url=REGISTRY))
    ctx = SerializationContext("orders", MessageField.VALUE)
    as_json = json.dumps(ORDER).encode()
    avro = bytes(AvroSerializer(client, AVRO_SCHEMA)(ORDER, ctx))
    schema = json.dumps({"type": "object", "required": ["id", "status"]})
    json_schema = bytes(JSONSerializer(schema, client)(ORDER, ctx))
    proto = protobuf_order()
    rows = [{"id": i, "name": f"row {i} with some text", "tags": ["a", "b"]} for i in range(3000)]
    large = json.dumps({"rows": rows}).encode()
    passthrough = {"detail": "${value}"}
    return [
        ("typical template, json value (README example)", mapper(TYPICAL), record(as_json)),
        ("detail: ${value} (passthrough), json", mapper(passthrough), record(as_json)),
        (
            "literal fields only, value not read",
            mapper({"detail": "${ {k: key} }"}),
            record(as_json),
        ),
        (
            "typical + filter (record kept)",
            mapper({**TYPICAL, "filter": "${value.status == 'paid' && value.total > `100`}"}),
            record(as_json),
        ),
        (
            "filter drops the record",
            mapper({**TYPICAL, "filter": "${value.status == 'refunded'}"}),
            record(as_json),
        ),
        (
            "decoder text",
            mapper({"decode": {"value": "text"}, "detail": "${ {line: value} }"}),
            record(as_json),
        ),
        (
            "decoder bytes (base64)",
            mapper({"decode": {"value": "bytes"}, "detail": "${ {b64: value} }"}),
            record(as_json),
        ),
        ("decoder json", mapper(passthrough), record(as_json)),
        ("decoder json, 180 KB value (3000 rows)", mapper(passthrough), record(large)),
        (
            "decoder avro (Schema Registry)",
            mapper({**passthrough, "decode": {"value": "avro"}}),
            record(avro),
        ),
        (
            "decoder protobuf (Schema Registry)",
            mapper({**passthrough, "decode": {"value": "protobuf"}}),
            record(proto),
        ),
        (
            "decoder json_schema (Schema Registry, validated)",
            mapper({**passthrough, "decode": {"value": "json_schema"}}),
            record(json_schema),
        ),
    ]


def measure(m: Mapper, rec: Message, rounds: int, per_round: int) -> list[float]:
    def once() -> None:
        with contextlib.suppress(FilteredOut):
            m.map(rec)

    for _ in range(200):  # warm-up: schema fetch, caches
        once()
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            once()
        timings.append((time.perf_counter() - started) / per_round * 1e6)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 500 records")
    args = parser.parse_args()
    rounds, per_round = (3, 500) if args.quick else (7, 2000)
    print(
        f"python {platform.python_version()} on {platform.machine()}, {rounds} rounds x"
        f" {per_round} records, median (min-max) microseconds per record"
    )
    print(f"record value: {len(json.dumps(ORDER))} bytes of JSON (an order with 8 lines)")
    print()
    width = 50
    print(f"{'case':<{width}} {'us/record':>10}  {'range':>15}  {'records/s':>10}")
    for name, m, rec in cases():
        timings = measure(m, rec, rounds, per_round)
        median = statistics.median(timings)
        spread = f"{min(timings):.1f}-{max(timings):.1f}"
        print(f"{name:<{width}} {median:>10.1f}  {spread:>15}  {1e6 / median:>10,.0f}")


if __name__ == "__main__":
    main()

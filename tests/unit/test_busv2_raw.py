"""PutRawEvents (publish: put_raw_events): the value bytes as they are, content types, metadata,
the request's schema registry, and bad input as check-config errors or dead-letter reasons."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import sr_support
from botocore.config import Config
from confluent_kafka import Message

from bridge.config.load import config_from_dict
from bridge.errors import ConfigError, MappingError
from bridge.mapping.mapper import Mapper
from bridge.mapping.registry import registry_client
from bridge.sink.busv2 import EventBusV2Sink, v2_entry_size
from bridge.sink.factory import make_sink
from bridge.sink.outcome import Kind
from testbed.eventbus_v2 import BUS_ARN, LocalEventBusV2, v2_request_size

GLUE = "arn:aws:glue:us-east-1:123456789012:registry/orders"
CONFLUENT = "https://psrc-abc12.us-east-2.aws.confluent.cloud"
CONNECTION = "arn:aws:events:us-east-1:123456789012:connection/confluent-sr/0a1b2c3d"
SCHEMA = (
    '{"type": "record", "name": "Order", "fields": [{"name": "id", "type": "int"},'
    ' {"name": "status", "type": "string"}]}'
)


def raw_config(mapping: dict[str, Any] | None = None, **top: Any) -> Any:
    data: dict[str, Any] = {
        "sink": "event_bus_v2",
        "aws": {"event_bus_arn": BUS_ARN, "schema_registry_uri": GLUE},
        "mappings": [
            {"topic": "orders", "publish": "put_raw_events", **(mapping or {})},
        ],
        **top,
    }
    return config_from_dict(data)


def record(value: bytes, key: bytes = b"order-1", offset: int = 3) -> Message:
    return Message(
        topic="orders",
        partition=1,
        offset=offset,
        key=key,
        value=value,
        headers=[("tenant", b"acme")],
        timestamp=(1, 1_700_000_000_000),
    )


def mapper(config: Any, registry: Any = None) -> Mapper:
    return Mapper(config, make_sink(config, None), registry=registry)


@pytest.fixture
def registry_url() -> str:
    return f"mock://raw-{uuid.uuid4().hex[:8]}"


def test_octet_stream_sends_the_bytes_as_they_are_with_metadata() -> None:
    config = raw_config(
        {
            "content_type": "octet-stream",
            "event_group_id": "${key}",
            "metadata": {"tenant": '${headers."tenant"}', "absent": "${headers.nope}"},
        }
    )
    value = bytes(range(256))
    wire = mapper(config).map(record(value)).entry
    assert wire == {
        "Data": value,
        "Metadata": {"tenant": "acme"},
        "SystemMetadata": {
            "ContentType": "application/octet-stream",
            "EventGroupId": "order-1",
            "DeduplicationId": "orders-1-3",
        },
    }
    assert v2_entry_size(wire) == 256 + len("tenant") + len("acme") + len(
        "application/octet-stream"
    ) + len("order-1") + len("orders-1-3")
    assert v2_entry_size(wire) == v2_request_size("PutRawEvents", [wire])


def test_auto_reads_avro_from_the_framing_and_sends_it_undecoded(registry_url: str) -> None:
    framed = sr_support.avro(registry_url, "orders", SCHEMA, {"id": 7, "status": "paid"})
    aws = {
        "event_bus_arn": BUS_ARN,
        "schema_registry_uri": CONFLUENT,
        "schema_registry_connection_arn": CONNECTION,
    }
    config = raw_config(schema_registry={"url": registry_url}, aws=aws)
    registry = registry_client(config.schema_registry)
    wire = mapper(config, registry).map(record(framed)).entry
    assert wire["Data"] == framed
    assert wire["SystemMetadata"]["ContentType"] == "application/avro"


@pytest.mark.parametrize(
    ("mapping", "value", "code", "text"),
    [
        ({}, b'{"id": 1}', "NoSchemaId", "content_type: auto"),
        (
            {"content_type": "json"},
            b"\x00\x00\x00\x00\x01binary",
            "ContentTypeMismatch",
            "not JSON",
        ),
        ({"content_type": "avro"}, b'{"id": 1}', "ContentTypeMismatch", "Glue Schema Registry"),
        (
            {"content_type": "octet-stream", "event_group_id": "${value.x}"},
            b'{"id": 1}',
            "MissingField",
            "event_group_id",
        ),
    ],
)
def test_bytes_that_contradict_the_content_type_are_dead_letter_reasons(
    registry_url: str, mapping: dict[str, Any], value: bytes, code: str, text: str
) -> None:
    config = raw_config(mapping, schema_registry={"url": registry_url})
    registry = registry_client(config.schema_registry)
    with pytest.raises(MappingError) as info:
        mapper(config, registry).map(record(value))
    assert info.value.code == code, info.value.message
    assert text in info.value.message


def test_data_template_renders_text() -> None:
    config = raw_config({"content_type": "json", "data": "${value.order}"})
    wire = mapper(config).map(record(b'{"order": {"id": 1}}')).entry
    assert wire["Data"] == b'{"id":1}'
    assert wire["SystemMetadata"]["ContentType"] == "application/json"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            {"mappings": [{"topic": "t", "publish": "put_raw_events", "metadata": {"a/b": "x"}}]},
            "mappings[0].metadata: key 'a/b': 1 to 128 characters, no '/'",
        ),
        (
            {"mappings": [{"topic": "t", "publish": "put_raw_events", "detail": "${value}"}]},
            "mappings[0].detail: not used with publish: put_raw_events",
        ),
        (
            {
                "mappings": [
                    {"topic": "t", "source": "s", "detail_type": "d", "metadata": {"a": "b"}}
                ]
            },
            "mappings[0].metadata: only used with publish: put_raw_events",
        ),
        (
            {"mappings": [{"topic": "t", "publish": "put_raw_events", "content_type": "avro"}]},
            "set aws.schema_registry_uri",
        ),
        (
            {
                "aws": {"event_bus_arn": BUS_ARN, "schema_registry_uri": CONFLUENT},
                "mappings": [{"topic": "t", "publish": "put_raw_events", "content_type": "avro"}],
            },
            "aws.schema_registry_connection_arn: required with a Confluent registry URL",
        ),
        (
            {
                "aws": {"event_bus_arn": BUS_ARN, "schema_registry_uri": GLUE},
                "mappings": [{"topic": "t", "publish": "put_raw_events"}],
            },
            "content_type: auto reads each record's schema type",
        ),
        (
            {"mappings": [{"topic": "t", "source": "s"}]},
            "mappings[0].detail_type: required (publish: put_events)",
        ),
    ],
)
def test_bad_raw_configuration_is_a_clear_error(data: dict[str, Any], problem: str) -> None:
    full = {"sink": "event_bus_v2", "aws": {"event_bus_arn": BUS_ARN}, **data}
    with pytest.raises(ConfigError) as info:
        config_from_dict(full)
    assert problem in str(info.value)


def test_put_raw_events_needs_the_new_bus() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {"mappings": [{"topic": "t", "publish": "put_raw_events", "content_type": "json"}]}
        )
    assert "publish: put_raw_events needs sink: event_bus_v2" in str(info.value)


@pytest.fixture
def endpoint() -> Iterator[LocalEventBusV2]:
    with LocalEventBusV2() as ep:
        yield ep


def test_a_batch_of_both_forms_goes_as_two_requests_with_the_registry(
    endpoint: LocalEventBusV2,
) -> None:
    client = boto3.client(
        "eventbridgev2",
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )
    config = config_from_dict(
        {
            "sink": "event_bus_v2",
            "aws": {
                "event_bus_arn": BUS_ARN,
                "schema_registry_uri": CONFLUENT,
                "schema_registry_connection_arn": CONNECTION,
            },
            "mappings": [
                {"topic": "orders", "publish": "put_raw_events", "content_type": "octet-stream"},
                {"topic": "events", "source": "s", "detail_type": "d"},
            ],
        }
    )
    sink = make_sink(config, client)
    assert isinstance(sink, EventBusV2Sink)
    shaper = Mapper(config, sink)
    raw = shaper.map(record(b"\x01\x02", offset=1)).entry
    plain = shaper.map(
        Message(topic="events", partition=0, offset=9, key=b"k", value=b'{"a": 1}')
    ).entry
    outcomes = sink.send(
        [
            raw,
            plain,
            raw | {"SystemMetadata": {**raw["SystemMetadata"], "DeduplicationId": "other"}},
        ]
    )
    assert [o.kind for o in outcomes] == [Kind.DELIVERED] * 3
    assert sorted(c.operation for c in endpoint.calls()) == ["PutEvents", "PutRawEvents"]
    got = {r.deduplication_id: r for r in endpoint.received()}
    assert got["orders-1-1"].entry["Data"] == b"\x01\x02"
    assert got["orders-1-1"].schema_registry == {
        "RegistryUri": CONFLUENT,
        "ConfluentPublicRegistryConfiguration": {"ConnectionArn": CONNECTION},
    }
    assert got["events-0-9"].schema_registry is None


def test_cli_render_and_check_config_of_a_raw_mapping(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import base64
    import io
    import json

    from bridge.cli import main

    path = tmp_path / "raw.yaml"
    path.write_text(
        json.dumps(
            {
                "sink": "event_bus_v2",
                "aws": {"event_bus_arn": BUS_ARN},
                "mappings": [
                    {
                        "topic": "orders",
                        "publish": "put_raw_events",
                        "content_type": "octet-stream",
                        "event_group_id": "${key}",
                    }
                ],
            }
        )
    )
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\x00\x01raw")))
    assert main(["render", "-c", str(path), "-t", "orders", "--key", "k1"]) == 0
    out, err = capsys.readouterr()
    entry = json.loads(out)
    assert base64.b64decode(entry["Data"]["base64"]) == b"\x00\x01raw"
    assert entry["SystemMetadata"]["EventGroupId"] == "k1"
    assert "event_bus_v2 size formula" in err
    assert main(["check-config", "-c", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out.split(": OK\n", 1)[1])
    assert summary["aws"]["event_bus_arn"] == BUS_ARN
    assert summary["mappings"][0]["publish"] == "put_raw_events"
    assert summary["mappings"][0]["data"] == "the record's value bytes as they are"

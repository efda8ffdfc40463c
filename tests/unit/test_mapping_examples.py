"""Every mapping example in config/ renders sample records to the entries its comments promise.

Records go through ``bridge.app.render_record`` (what ``bridge render`` prints), Schema
Registry examples against confluent-kafka's mock:// registry (``BRIDGE_SCHEMA_REGISTRY__URL``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sr_support
from confluent_kafka import Message

from bridge.app import render_record
from bridge.cli import main
from bridge.config import BridgeConfig
from bridge.config.load import load_config
from bridge.mapping.render import Rendered

CONFIG = Path(__file__).resolve().parents[2] / "config"
TS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
TS_TIME = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def record(
    topic: str,
    value: bytes | None,
    key: bytes | None = b"k",
    headers: list[tuple[str, bytes | None]] | None = None,
    partition: int = 0,
    offset: int = 5,
) -> Message:
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=headers or [],
        timestamp=(1, TS),
    )


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def load(name: str, monkeypatch: pytest.MonkeyPatch, registry: str | None = None) -> BridgeConfig:
    if registry is not None:
        monkeypatch.setenv("BRIDGE_SCHEMA_REGISTRY__URL", registry)
    return load_config(CONFIG / name)


def sent(result: Rendered) -> dict[str, Any]:
    assert result.outcome == "send", result.summary()
    assert result.entry is not None
    return result.entry


def fresh_registry() -> str:
    return f"mock://examples-{uuid.uuid4().hex[:8]}"


# --- mapping-json.yaml -----------------------------------------------------------------------


def test_mapping_json(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load("mapping-json.yaml", monkeypatch)
    value = {
        "id": "o-1",
        "status": "paid",
        "paid_at_ms": 1_714_979_289_250,
        "customer_arn": "arn:aws:example:::customer/c-9",
        "item_arns": ["arn:aws:example:::item/1", "arn:aws:example:::item/2"],
    }
    result = render_record(
        config,
        record(
            "orders",
            js(value),
            key=js({"tenant": "acme", "order": "o-1"}),
            headers=[("X-Amzn-Trace-Id", b"Root=1-abc-def")],
        ),
    )
    assert sent(result) == {
        "Source": "com.example.acme",
        "DetailType": "Order paid",
        "Detail": json.dumps(value, separators=(",", ":")),
        "Time": datetime(2024, 5, 6, 7, 8, 9, 250000, tzinfo=UTC),
        "Resources": [
            "arn:aws:example:::customer/c-9",
            "arn:aws:example:::item/1",
            "arn:aws:example:::item/2",
        ],
        "EventBusName": "orders",
        "TraceHeader": "Root=1-abc-def",
    }
    assert result.mapping == "mappings[0], topic 'orders'"
    # a key that is not JSON, with decode.key: json
    bad = render_record(config, record("orders", js(value), key=b"o-1"))
    assert bad.outcome == "dead_letter"
    assert bad.reason is not None and bad.reason[:2] == ("decode", "KeyNotJson")


# --- decode-text-bytes.yaml ------------------------------------------------------------------


def test_decode_text_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load("decode-text-bytes.yaml", monkeypatch)
    line = "2024-05-06 07:08:09 ERROR payment failed: carte refusée"
    entry = sent(
        render_record(config, record("app-logs", line.encode(), headers=[("host", b"web-1")]))
    )
    assert json.loads(entry["Detail"]) == {"line": line, "host": "web-1", "at": TS}
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == (
        "com.example.logs",
        "LogLine",
        "ops",
    )
    frame = bytes(range(256))
    entry = sent(render_record(config, record("sensor-frames", frame, key=b"s-17", offset=9)))
    assert json.loads(entry["Detail"]) == {
        "sensor": "s-17",
        "frame_base64": base64.b64encode(frame).decode(),
        "kafka": {"partition": 0, "offset": 9},
    }
    # text is UTF-8 or nothing
    bad = render_record(config, record("app-logs", b"caf\xe9"))
    assert bad.reason is not None and bad.reason[1] == "ValueNotUtf8"


# --- decode-avro.yaml ------------------------------------------------------------------------

PAYMENT_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Payment",
        "namespace": "com.example",
        "fields": [
            {"name": "payment_id", "type": "string"},
            {"name": "state", "type": {"type": "enum", "name": "State", "symbols": ["OK", "KO"]}},
            {
                "name": "amount",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
            },
            {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "card_hash", "type": "bytes"},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
)


def test_decode_avro(monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_registry()
    config = load("decode-avro.yaml", monkeypatch, registry=url)
    payment = {
        "payment_id": "p-1",
        "state": "OK",
        "amount": Decimal("1234.50"),
        "created_at": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        "card_hash": b"\x01\x02",
        "note": None,
    }
    data = sr_support.avro(url, "payments", PAYMENT_SCHEMA, payment)
    entry = sent(render_record(config, record("payments", data, offset=77)))
    assert entry == {
        "Source": "com.example.payments",
        "DetailType": "Payment OK",
        "Detail": json.dumps(
            {
                "payment": {
                    "payment_id": "p-1",
                    "state": "OK",
                    "amount": 1234.5,
                    "created_at": "2024-05-06T07:08:09+00:00",
                    "card_hash": "AQI=",
                    "note": None,
                },
                "id": "payments-0-77",
            },
            separators=(",", ":"),
        ),
        "Time": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        "EventBusName": "payments",
    }
    # JSON where Avro is expected: no Schema Registry framing
    bad = render_record(config, record("payments", b'{"payment_id": "p-1"}'))
    assert bad.reason is not None and bad.reason[:2] == ("decode", "NoSchemaId")
    # an id the registry does not have
    bad = render_record(config, record("payments", b"\x00\x00\x00\x03\xe7" + data[5:]))
    assert bad.reason is not None and bad.reason[1] == "SchemaNotFound"
    assert "schema id 999" in bad.reason[2]
    # truncated Avro
    bad = render_record(config, record("payments", data[:9]))
    assert bad.reason is not None and bad.reason[1] == "ValueNotAvro"


# --- decode-protobuf.yaml --------------------------------------------------------------------


def test_decode_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_registry()
    config = load("decode-protobuf.yaml", monkeypatch, registry=url)
    shipment_cls, parcel_cls = sr_support.shipment_classes()
    shipment = shipment_cls(shipment_id="s-1", status=2, weight_grams=2**40)
    shipment.updated_at.FromDatetime(datetime(2024, 5, 6, 7, 8, 9))
    shipment.parcels.append(parcel_cls(sku="A-1"))
    data = sr_support.protobuf(url, "shipments", shipment)
    entry = sent(render_record(config, record("shipments", data)))
    assert entry == {
        "Source": "com.example.shipping",
        "DetailType": "ShipmentUpdated",
        "Detail": json.dumps(
            {
                "shipment_id": "s-1",
                "status": "SHIPPED",
                "weight_grams": 2**40,
                "updated_at": "2024-05-06T07:08:09Z",
                "parcels": [{"sku": "A-1"}],
            },
            separators=(",", ":"),
        ),
        "Time": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        "EventBusName": "default",
    }
    # defaults are present (proto3 does not write them): status UNKNOWN, weight 0, no parcels
    empty = shipment_cls(shipment_id="s-2")
    empty.updated_at.FromDatetime(datetime(2024, 5, 6))
    detail = json.loads(
        sent(
            render_record(config, record("shipments", sr_support.protobuf(url, "shipments", empty)))
        )["Detail"]
    )
    assert detail["status"] == "UNKNOWN" and detail["weight_grams"] == 0 and detail["parcels"] == []
    # a nested message type (message index [0, 0]) is found by its index
    nested = sr_support.protobuf(url, "shipments", parcel_cls(sku="B-2"))
    # It decodes and has no updated_at: time is optional, so it is sent without a Time.
    parcel = sent(render_record(config, record("shipments", nested)))
    assert json.loads(parcel["Detail"]) == {"sku": "B-2"} and "Time" not in parcel
    # corrupt bytes after a valid prefix
    bad = render_record(config, record("shipments", data[:6] + b"\xff\xff\xff"))
    assert bad.reason is not None and bad.reason[1] == "ValueNotProtobuf"


# --- decode-json-schema.yaml -----------------------------------------------------------------

SIGNUP_SCHEMA = json.dumps(
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"email": {"type": "string"}, "plan": {"enum": ["free", "pro"]}},
        "required": ["email", "plan"],
    }
)


def test_decode_json_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_registry()
    config = load("decode-json-schema.yaml", monkeypatch, registry=url)
    data = sr_support.json_schema(url, "signups", SIGNUP_SCHEMA, {"email": "a@b.c", "plan": "pro"})
    entry = sent(render_record(config, record("signups", data)))
    assert entry["Detail"] == '{"email":"a@b.c","plan":"pro"}'
    assert entry["DetailType"] == "SignedUp"
    # same schema id, a value that does not conform
    bad = render_record(config, record("signups", data[:5] + b'{"email": "a@b.c", "plan": "gold"}'))
    assert bad.reason is not None and bad.reason[:2] == ("decode", "ValueNotJsonSchema")
    assert "'gold' is not one of ['free', 'pro']" in bad.reason[2]


# --- detail-forms.yaml -----------------------------------------------------------------------

ORDER = {"order": {"id": "o-7", "total": 12.5, "lines": [{"sku": "A", "qty": 2}]}}


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        ("whole-value", ORDER),
        ("object-template", {"order_id": "o-7", "total": 12.5, "dedup_id": "object-template-2-41"}),
        (
            "envelope",
            {
                "topic": "envelope",
                "partition": 2,
                "offset": 41,
                "timestamp": TS,
                "key": "o-7",
                "headers": {"tenant": "acme"},
                "value": ORDER,
                "id": "envelope-2-41",
            },
        ),
        (
            "text-template",
            {"order": ORDER["order"], "seen_at_offset": 41, "dedup_id": "text-template-2-41"},
        ),
    ],
)
def test_detail_forms(monkeypatch: pytest.MonkeyPatch, topic: str, detail: dict[str, Any]) -> None:
    config = load("detail-forms.yaml", monkeypatch)
    rec = record(
        topic, js(ORDER), key=b"o-7", headers=[("tenant", b"acme")], partition=2, offset=41
    )
    entry = sent(render_record(config, rec))
    assert json.loads(entry["Detail"]) == detail
    assert entry["Time"] == TS_TIME


# --- routing-filters.yaml --------------------------------------------------------------------


def test_routing_and_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load("routing-filters.yaml", monkeypatch)
    paid = js({"status": "paid", "total": 250})
    entry = sent(render_record(config, record("orders", paid)))
    assert entry["EventBusName"] == "arn:aws:events:us-east-1:123456789012:event-bus/orders"
    assert entry["DetailType"] == "OrderPaid"
    for value in ({"status": "paid", "total": 50}, {"status": "created", "total": 500}, {}):
        result = render_record(config, record("orders", js(value)))
        assert result.outcome == "filtered" and result.reason is not None
        assert result.reason[1] == "filter"
    keyless = render_record(config, record("orders", paid, key=None))
    assert keyless.outcome == "dead_letter" and keyless.reason is not None
    assert keyless.reason[1] == "NullKey"

    stock = sent(
        render_record(config, record("inventory.eu", js({"kind": "Restocked", "stock": 4})))
    )
    assert (stock["Source"], stock["DetailType"], stock["EventBusName"]) == (
        "com.example.inventory.eu",
        "Restocked",
        "inventory",
    )
    assert json.loads(stock["Detail"]) == {"sku": "k", "stock": 4, "deleted": False}
    deleted = sent(render_record(config, record("inventory.eu", None, key=b"A-1")))
    assert deleted["DetailType"] == "Deleted"
    assert json.loads(deleted["Detail"]) == {"sku": "A-1", "stock": None, "deleted": True}

    audit = render_record(config, record("audit-logins", js({"user": "u1"})))
    assert json.loads(sent(audit)["Detail"]) == {
        "topic": "audit-logins",
        "value": {"user": "u1"},
        "id": "audit-logins-0-5",
    }
    assert audit.mapping == "mappings[2], every other subscribed topic (default)"
    skipped = render_record(config, record("audit-logins", None))
    assert skipped.outcome == "filtered" and skipped.reason is not None
    assert skipped.reason[1] == "tombstone"
    # the default serves every topic, even one kafka.topics would not subscribe to
    assert (
        sent(render_record(config, record("inventory", js({}))))["DetailType"] == "Audit inventory"
    )


# --- large-payloads.yaml ---------------------------------------------------------------------


def test_large_payloads_offload(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load("large-payloads.yaml", monkeypatch)
    body = "x" * 300_000
    result = render_record(
        config, record("documents", js({"meta": {"name": "a.txt"}, "body": body}))
    )
    entry = sent(result)
    stored = json.dumps(body).encode()
    assert json.loads(entry["Detail"]) == {
        "meta": {"name": "a.txt"},
        "body": {
            "s3_offload": {
                "bucket": "example-eventbridge-payloads",
                "key": "kafka/documents/0/5.json",
                "uri": "s3://example-eventbridge-payloads/kafka/documents/0/5.json",
                "size": len(stored),
                "sha256": hashlib.sha256(stored).hexdigest(),
                "content_type": "application/json",
            }
        },
    }
    assert result.offloaded == [
        ("example-eventbridge-payloads", "kafka/documents/0/5.json", len(stored))
    ]
    assert "offload: 300002 bytes would be written to s3://" in result.summary()
    # small entries are sent as they are
    small = sent(render_record(config, record("documents", js({"meta": {}, "body": "short"}))))
    assert json.loads(small["Detail"]) == {"meta": {}, "body": "short"}
    # the whole Detail
    report = {"rows": ["r" * 100] * 3000}
    whole = json.loads(sent(render_record(config, record("reports", js(report))))["Detail"])
    assert set(whole) == {"s3_offload"}
    assert whole["s3_offload"]["key"] == "kafka/reports/0/5.json"
    assert whole["s3_offload"]["size"] == len(json.dumps(report, separators=(",", ":")))


# --- the CLI ---------------------------------------------------------------------------------


def run_render(
    args: list[str],
    stdin: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(["render", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_render_prints_the_entry_and_its_size(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    value = js({"status": "paid", "customer_arn": "arn:c", "created_at": 1_700_000_000})
    code, out, err = run_render(
        [
            "-c",
            str(CONFIG / "example.yaml"),
            "-t",
            "orders",
            "--key",
            "o-1",
            "-H",
            "X-Amzn-Trace-Id=Root=1-abc",
            "--timestamp",
            str(TS),
        ],
        value,
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert json.loads(out) == {
        "Source": "com.example.orders",
        "DetailType": "Order paid",
        "Detail": '{"status":"paid","customer_arn":"arn:c","created_at":1700000000}',
        "Resources": ["arn:c"],
        "Time": "2023-11-14T22:13:20+00:00",
        "EventBusName": "orders",
        "TraceHeader": "Root=1-abc",
    }
    size = 14 + len("com.example.orders") + len("Order paid") + 64 + len("arn:c")
    assert f"send: {size} bytes by the put_events size formula (limit 262144" in err
    assert "mapping: mappings[0], topic 'orders'" in err


def test_cli_render_dead_letter_and_filtered_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = str(CONFIG / "example.yaml")
    code, out, err = run_render(["-c", example, "-t", "orders"], b"{oops", monkeypatch, capsys)
    assert (code, out) == (4, "")
    assert "dead-letter: stage=decode code=ValueNotJson: value is not JSON" in err
    code, out, err = run_render(["-c", example, "-t", "nowhere"], b"{}", monkeypatch, capsys)
    assert code == 4
    assert "code=NoMapping: no mapping matches topic 'nowhere'" in err
    code, out, err = run_render(
        ["-c", example, "-t", "orders", "--tombstone"], b"", monkeypatch, capsys
    )
    assert code == 4 and "code=Tombstone" in err
    routing = str(CONFIG / "routing-filters.yaml")
    code, out, err = run_render(
        ["-c", routing, "-t", "orders", "-k", "o-1"], js({"status": "new"}), monkeypatch, capsys
    )
    assert (code, out) == (3, "")
    assert "filtered out (filter): not sent; its offset is committed" in err


def test_cli_render_bad_header_and_bad_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_render(
        ["-c", str(CONFIG / "example.yaml"), "-t", "orders", "-H", "novalue"],
        b"{}",
        monkeypatch,
        capsys,
    )
    assert code == 2 and "'novalue' is not NAME=VALUE" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("mappings:\n  - topic: t\n    source: s\n    detail_type: '${vaule}'\n")
    code, _, err = run_render(["-c", str(bad), "-t", "t"], b"{}", monkeypatch, capsys)
    assert code == 2 and "mappings[0].detail_type:" in err


def test_example_yaml_sends_records_without_optional_fields_and_converts_traceparent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load("example.yaml", monkeypatch)
    # OpenTelemetry's AWS X-Ray propagator test vectors (tests/unit/test_trace.py)
    traceparent = b"00-8a3c60f7d188f8fa79d48a391a778fa6-53995c3f42cd8ad8-01"
    entry = sent(
        render_record(
            config, record("orders", js({"status": "new"}), headers=[("traceparent", traceparent)])
        )
    )
    assert entry["TraceHeader"] == (
        "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=1"
    )
    assert "Resources" not in entry and "Time" not in entry
    plain = sent(render_record(config, record("orders", js({"status": "new"}))))
    assert not {"TraceHeader", "Resources", "Time"} & set(plain)
    json_example = load("mapping-json.yaml", monkeypatch)
    value = js({"status": "paid"})
    untraced = sent(
        render_record(json_example, record("orders", value, key=js({"tenant": "acme"})))
    )
    assert not {"TraceHeader", "Resources", "Time"} & set(untraced)

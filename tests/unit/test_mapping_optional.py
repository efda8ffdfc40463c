"""Optional fields, ``required:``, ``||`` defaults, and the trace header (template or ``auto``,
copied into Detail with ``trace_detail_key``), through the real Mapper and real
``confluent_kafka.Message`` records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message

from bridge.app import render_record
from bridge.cli import main
from bridge.config.load import config_from_dict
from bridge.errors import ConfigError, MappingError
from bridge.mapping.mapper import Mapper
from bridge.mapping.record import RecordLike
from bridge.observability.metrics import Metrics
from bridge.sink.factory import make_sink

# OpenTelemetry's AWS X-Ray propagator test vectors (see tests/unit/test_trace.py).
TRACEPARENT = b"00-8a3c60f7d188f8fa79d48a391a778fa6-53995c3f42cd8ad8-01"
CONVERTED = "Root=1-8a3c60f7-d188f8fa79d48a391a778fa6;Parent=53995c3f42cd8ad8;Sampled=1"
XRAY = (
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1"
)

EVERY_OPTIONAL = {
    "resources": ["arn:aws:s3:::fixed", "${value.arn}", "arn:aws:s3:::${value.bucket}"],
    "time": "${value.at}",
    "trace_header": '${headers."X-Amzn-Trace-Id"}',
}
"""Every optional field of PutEvents; ``subject`` (sink alibaba only) is tested on its own."""


ALIBABA = {
    "endpoint": "https://1.eventbridge.cn-hangzhou.aliyuncs.com",
    "access_key_id": "id",
    "access_key_secret": "secret",
}


def config(mapping: dict[str, Any] | None = None) -> Any:
    """The configuration of one mapping; with ``subject`` for sink alibaba, the only sink that
    sends it (the others refuse it at load)."""
    base = {"topic": "orders", "source": "com.example", "detail_type": "Order"}
    mapping = {**base, **(mapping or {})}
    sink = {"sink": "alibaba", "alibaba": ALIBABA} if "subject" in mapping else {}
    return config_from_dict({"mappings": [mapping], **sink})


def message(
    value: dict[str, Any] | None = None,
    headers: list[tuple[str, bytes | None]] | None = None,
    topic: str = "orders",
) -> Message:
    return Message(
        topic=topic,
        partition=3,
        offset=42,
        key=b"k1",
        value=json.dumps({"id": 1} if value is None else value).encode(),
        headers=headers or [],
        timestamp=(1, 1_700_000_000_000),
    )


def mapper_of(config: Any, **clients: Any) -> Mapper:
    """The real Mapper for the configured sink (no client needed to map)."""
    return Mapper(config, make_sink(config, None), **clients)


def entry(record: Message, mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    return mapper_of(config(mapping)).map(record).entry


def failure(record: Message, mapping: dict[str, Any]) -> MappingError:
    with pytest.raises(MappingError) as info:
        mapper_of(config(mapping)).map(record)
    return info.value


# --- optional fields ---------------------------------------------------------------------------


def test_optional_fields_that_select_nothing_are_left_out_and_the_entry_is_sent() -> None:
    sent = entry(message({"id": 1}), EVERY_OPTIONAL)
    assert sent["Resources"] == ["arn:aws:s3:::fixed"]  # the items that selected nothing: out
    assert "Time" not in sent  # not the record timestamp either: the template said where
    assert "TraceHeader" not in sent
    assert json.loads(sent["Detail"]) == {"id": 1}
    nothing = entry(message({}), {**EVERY_OPTIONAL, "resources": ["${value.arn}"]})
    assert not {"Resources", "Time", "TraceHeader"} & set(nothing)
    # sink alibaba: a CloudEvent without a subject
    assert "subject" not in entry(message({"id": 1}), {"subject": "orders/${value.sku}"})


def test_optional_fields_that_select_something_are_sent() -> None:
    value = {"id": 7, "sku": 7, "arn": "arn:a", "bucket": "b", "at": "2024-05-06T07:08:09Z"}
    sent = entry(message(value, [("X-Amzn-Trace-Id", XRAY.encode())]), EVERY_OPTIONAL)
    assert sent["Resources"] == ["arn:aws:s3:::fixed", "arn:a", "arn:aws:s3:::b"]
    assert sent["Time"].isoformat() == "2024-05-06T07:08:09+00:00"
    assert sent["TraceHeader"] == XRAY
    assert entry(message(value), {"subject": "orders/${value.sku}"})["subject"] == "orders/7"


def test_nulls_in_a_selected_resource_list_are_left_out() -> None:
    sent = entry(
        message({"a": "arn:1", "c": "arn:3"}), {"resources": ["${[value.a, value.b, value.c]}"]}
    )
    assert sent["Resources"] == ["arn:1", "arn:3"]


def test_required_fields_still_dead_letter_with_missing_field() -> None:
    for field in ("source", "detail_type", "event_bus_name"):
        error = failure(message({}), {field: "${value.nope}"})
        assert (error.code, error.message.split(":")[0]) == ("MissingField", field)
    error = failure(message({}), {"detail": "${value.nope}"})
    assert (error.code, error.message.split(":")[0]) == ("MissingField", "detail")


@pytest.mark.parametrize(
    ("field", "named"),
    [
        ("time", "time"),
        ("trace_header", "trace_header"),
        ("resources", "resources[1]"),
    ],
)
def test_required_makes_an_optional_field_required(field: str, named: str) -> None:
    error = failure(message({"id": 1}), {**EVERY_OPTIONAL, "required": [field]})
    assert error.code == "MissingField"
    assert error.message.startswith(f"{named}: ")
    # the others stay optional
    value = {"id": 1, "sku": "s", "arn": "a", "bucket": "b", "at": 1_700_000_000}
    headers = [("X-Amzn-Trace-Id", b"Root=1-x")]
    assert entry(message(value, headers), {**EVERY_OPTIONAL, "required": [field]})


def test_required_makes_the_subject_required() -> None:
    subject = {"subject": "orders/${value.sku}", "required": ["subject"]}
    error = failure(message({"id": 1}), subject)
    assert (error.code, error.message.split(":")[0]) == ("MissingField", "subject")
    assert entry(message({"sku": "s"}), subject)["subject"] == "orders/s"


def test_the_or_operator_gives_a_default() -> None:
    mapping = {
        "time": "${value.at || timestamp}",
        "resources": ["${value.arn || 'arn:aws:events:::none'}"],
    }
    sent = entry(message({"id": 1}), mapping)
    assert sent["Time"].isoformat() == "2023-11-14T22:13:20+00:00"
    assert sent["Resources"] == ["arn:aws:events:::none"]
    assert entry(message({"id": 1}), {"subject": "${value.sku || 'unknown'}"})["subject"] == (
        "unknown"
    )
    assert entry(message({"at": 1_714_979_289}), mapping)["Time"].year == 2024


def test_a_selected_value_of_the_wrong_kind_is_still_a_dead_letter() -> None:
    assert failure(message({"at": "soon"}), {"time": "${value.at}"}).code == "BadTime"
    assert failure(message({"s": {"a": 1}}), {"subject": "${value.s}"}).code == "WrongType"
    assert failure(message({"r": ""}), {"resources": ["${value.r}"]}).code == "WrongType"


def test_required_must_name_a_field_the_mapping_sets() -> None:
    with pytest.raises(ConfigError) as info:
        config({"required": ["time"]})
    assert "required: time not set in this mapping" in str(info.value)
    with pytest.raises(ConfigError) as info:
        config({"time": "${value.at}", "required": ["detail"]})
    assert "required" in str(info.value)


def test_required_and_optional_fields_of_a_mapping() -> None:
    mapping = config({**EVERY_OPTIONAL, "required": ["time"]}).mappings[0]
    assert mapping.required_fields() == ["source", "detail_type", "detail", "time"]
    assert mapping.optional_fields() == ["resources", "trace_header"]
    subject = config({"subject": "orders/${value.sku}"}).mappings[0]
    assert subject.optional_fields() == ["subject"]
    bus = config({"event_bus_name": "${value.bus}"}).mappings[0]
    assert bus.required_fields() == ["source", "detail_type", "detail", "event_bus_name"]
    assert bus.optional_fields() == []


def test_check_config_says_which_fields_are_optional(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "mappings:\n"
        "  - topic: orders\n"
        "    source: s\n"
        "    detail_type: D\n"
        "    time: ${value.at}\n"
        "    resources: ['${value.arn}']\n"
        "    trace_header: auto\n"
        "    trace_detail_key: trace\n"
        "    required: [resources]\n"
    )
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])["mappings"][0]
    assert summary["required_fields"] == ["source", "detail_type", "detail", "resources"]
    assert summary["optional_fields"] == ["time", "trace_header"]
    assert summary["trace_header"].startswith("auto: X-Amzn-Trace-Id as it is, else traceparent")
    assert "Detail.trace" in summary["trace_detail_key"]


# --- the trace header ----------------------------------------------------------------------------


def test_auto_takes_the_xray_header_as_it_is() -> None:
    headers = [("X-Amzn-Trace-Id", XRAY.encode()), ("traceparent", TRACEPARENT)]
    assert entry(message(headers=headers), {"trace_header": "auto"})["TraceHeader"] == XRAY


def test_auto_converts_a_traceparent_alone() -> None:
    sent = entry(message(headers=[("traceparent", TRACEPARENT)]), {"trace_header": "auto"})
    assert sent["TraceHeader"] == CONVERTED


def test_auto_without_trace_headers_sends_no_trace_header() -> None:
    assert "TraceHeader" not in entry(message(), {"trace_header": "auto"})


def test_an_invalid_traceparent_is_left_out_and_reported_never_dead_lettered() -> None:
    reported: list[RecordLike] = []
    mapper = mapper_of(config({"trace_header": "auto"}), on_invalid_traceparent=reported.append)
    record = message(headers=[("traceparent", b"00-not-a-trace-01")])
    sent = mapper.map(record).entry
    assert "TraceHeader" not in sent
    assert [(r.topic(), r.partition(), r.offset()) for r in reported] == [("orders", 3, 42)]
    mapper.map(message(headers=[("traceparent", TRACEPARENT)]))
    assert len(reported) == 1  # a valid one is not reported


def test_the_metrics_count_invalid_traceparents_by_topic() -> None:
    metrics = Metrics()
    mapper = mapper_of(
        config({"topic_pattern": "orders|payments", "topic": None, "trace_header": "auto"}),
        on_invalid_traceparent=metrics.count_invalid_traceparent,
    )
    bad = [("traceparent", b"ff-8a3c60f7d188f8fa79d48a391a778fa6-53995c3f42cd8ad8-01")]
    for topic in ("orders", "orders", "payments"):
        assert "TraceHeader" not in mapper.map(message(headers=bad, topic=topic)).entry
    mapper.map(message(headers=[("traceparent", TRACEPARENT)]))

    def count(topic: str) -> float | None:
        return metrics.registry.get_sample_value(
            "bridge_traceparent_invalid_total", {"topic": topic}
        )

    assert (count("orders"), count("payments")) == (2.0, 1.0)


def test_auto_with_required_trace_header_dead_letters_a_record_without_one() -> None:
    mapping = {"trace_header": "auto", "required": ["trace_header"]}
    error = failure(message(headers=[("traceparent", b"bad")]), mapping)
    assert error.code == "MissingField" and error.message.startswith("trace_header: auto")
    assert entry(message(headers=[("traceparent", TRACEPARENT)]), mapping)["TraceHeader"]


def test_a_trace_header_putevents_would_refuse_is_left_out() -> None:
    mapping = {"trace_header": '${headers."X-Amzn-Trace-Id"}'}
    for bad in (b"", b"   ", b"R" * 501):
        assert "TraceHeader" not in entry(message(headers=[("X-Amzn-Trace-Id", bad)]), mapping)
    long = entry(message(headers=[("X-Amzn-Trace-Id", b"R" * 500)]), mapping)
    assert long["TraceHeader"] == "R" * 500


def test_trace_detail_key_copies_the_trace_into_detail() -> None:
    mapping = {"trace_header": "auto", "trace_detail_key": "_trace"}
    sent = entry(message({"id": 1}, [("traceparent", TRACEPARENT)]), mapping)
    assert json.loads(sent["Detail"]) == {"id": 1, "_trace": CONVERTED}
    assert sent["TraceHeader"] == CONVERTED
    untraced = entry(message({"id": 1}), mapping)
    assert json.loads(untraced["Detail"]) == {"id": 1}  # no trace: no key


def test_trace_detail_key_does_not_leak_between_records_of_a_literal_detail() -> None:
    mapper = mapper_of(
        config(
            {
                "detail": "${ {kind: 'fixed'} }",
                "trace_header": "auto",
                "trace_detail_key": "trace",
            }
        )
    )
    first = mapper.map(message(headers=[("traceparent", TRACEPARENT)])).entry
    second = mapper.map(message()).entry
    assert json.loads(first["Detail"]) == {"kind": "fixed", "trace": CONVERTED}
    assert json.loads(second["Detail"]) == {"kind": "fixed"}


def test_trace_detail_key_needs_a_trace_header() -> None:
    with pytest.raises(ConfigError) as info:
        config({"trace_detail_key": "trace"})
    assert "trace_detail_key: only used with 'trace_header'" in str(info.value)


def test_render_says_an_invalid_traceparent_was_left_out() -> None:
    result = render_record(
        config({"trace_header": "auto"}), message(headers=[("traceparent", b"x")])
    )
    assert result.outcome == "send" and result.entry is not None
    assert "TraceHeader" not in result.entry
    assert "trace: the traceparent header is not a valid W3C traceparent" in result.summary()


def test_trace_detail_key_stays_readable_when_the_whole_detail_goes_to_s3() -> None:
    from bridge.mapping.offload import DryRunStore

    store = DryRunStore()
    big = config_from_dict(
        {
            "mappings": [
                {
                    "topic": "orders",
                    "source": "s",
                    "detail_type": "D",
                    "oversize": "offload",
                    "trace_header": "auto",
                    "trace_detail_key": "trace",
                }
            ],
            "offload": {"bucket": "payloads", "prefix": ""},
            "batch": {"max_bytes": 1024},
        }
    )
    record = message({"blob": "x" * 2000}, [("traceparent", TRACEPARENT)])
    detail = json.loads(mapper_of(big, store=store).map(record).entry["Detail"])
    assert detail["trace"] == CONVERTED and detail["s3_offload"]["key"] == "orders/3/42.json"
    assert store.puts and store.puts[0][2] > 2000  # the stored Detail has the trace too

"""Templates and the record -> PutEvents entry mapper, on real confluent_kafka Messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from confluent_kafka import Message
from mapping_support import mapper_for

from bridge.batching.size import entry_size
from bridge.config.load import config_from_dict
from bridge.errors import MappingError, TemplateError
from bridge.mapping.mapper import parse_time
from bridge.mapping.template import compile_template

DOC: dict[str, Any] = {
    "value": {"x": 1, "a}b": "braced", "o": {"k": [1, 2]}, "s": "text", "é": "accent"},
    "key": "k1",
    "headers": {"h": "v"},
    "topic": "orders",
    "partition": 3,
    "offset": 42,
    "timestamp": 1_700_000_000_000,
}


# --- templates -------------------------------------------------------------------------------


def test_literal_template() -> None:
    template = compile_template("com.example.orders")
    assert template.is_literal and not template.is_single
    assert template.render_value(DOC, "source") == "com.example.orders"


def test_single_placeholder_keeps_the_type() -> None:
    assert compile_template("${value.o}").render_value(DOC, "detail") == {"k": [1, 2]}
    assert compile_template("${value.x}").render_value(DOC, "detail") == 1
    assert compile_template("${value.o.k}").render_value(DOC, "detail") == [1, 2]
    assert compile_template("${ value.x }").render_value(DOC, "detail") == 1  # spaces allowed


def test_text_interpolation_renders_compact_json() -> None:
    template = compile_template("obj=${value.o} n=${value.x} s=${value.s} p=${partition}")
    assert template.render_value(DOC, "f") == 'obj={"k":[1,2]} n=1 s=text p=3'


def test_text_interpolation_keeps_non_ascii() -> None:
    assert (
        compile_template('v=${value."é"} ${value.o}').render_text(DOC, "f")
        == 'v=accent {"k":[1,2]}'
    )
    doc = {**DOC, "value": {"o": {"name": "café"}}}
    assert compile_template("x ${value.o}").render_text(doc, "f") == 'x {"name":"café"}'


def test_dollar_dollar_brace_is_a_literal() -> None:
    template = compile_template("cost $${value.x} is ${value.x}")
    assert template.render_value(DOC, "f") == "cost ${value.x} is 1"
    assert compile_template("$${value.x}").is_literal
    assert compile_template("$${value.x}").render_value(DOC, "f") == "${value.x}"


def test_lone_dollar_and_braces_are_literal() -> None:
    assert (
        compile_template("$5 {not a placeholder}").render_value(DOC, "f")
        == "$5 {not a placeholder}"
    )


def test_nested_braces_in_multiselect() -> None:
    template = compile_template("${ {a: value.x, t: topic} }")
    assert template.is_single
    assert template.render_value(DOC, "detail") == {"a": 1, "t": "orders"}
    nested = compile_template("${ {outer: {inner: value.o}} }-end")
    assert nested.render_text(DOC, "f") == '{"outer":{"inner":{"k":[1,2]}}}-end'


def test_quoted_identifier_containing_braces() -> None:
    assert compile_template('${value."a}b"}').render_value(DOC, "f") == "braced"
    assert compile_template('pre ${value."a}b"} post').render_value(DOC, "f") == "pre braced post"


def test_json_literal_containing_braces() -> None:
    template = compile_template('${`{"a": "}"}`}')
    assert template.render_value(DOC, "f") == {"a": "}"}


def test_raw_string_literal_with_escaped_quote() -> None:
    assert compile_template("${'it\\'s }'}").render_value(DOC, "f") == "it's }"


def test_quoted_identifier_ending_in_an_escaped_backslash() -> None:
    template = compile_template('${value."a\\\\"}')  # JMESPath: the key  a\
    assert template.render_value({"value": {"a\\": 7}}, "f") == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${value.x", "unclosed placeholder"),
        ("pre ${ {a: value.x} post", "unclosed placeholder"),
        ('${value."a}', "unclosed placeholder"),
        ("${}", "empty placeholder"),
        ("a ${  } b", "empty placeholder"),
        ("${value.[}", "is not a valid JMESPath expression"),
        ("${value..x}", "is not a valid JMESPath expression"),
        ("${vaule.x}", "'vaule', which no record has"),
        ("ok ${value.x} then ${topc}", "'topc', which no record has"),
        ("${value.x || vaule.y}", "'vaule'"),
        ("${ {a: vaule} }", "'vaule'"),
        ("${length(vaule)}", "'vaule'"),
    ],
)
def test_template_errors_are_explained(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("[", r"\[").replace("|", r"\|")):
        compile_template(text)


def test_unknown_root_error_lists_the_names_allowed() -> None:
    with pytest.raises(TemplateError) as info:
        compile_template("${vaule.x}")
    text = str(info.value)
    assert "${vaule.x}" in text
    for name in ("value", "key", "headers", "topic", "partition", "offset", "timestamp"):
        assert name in text


def test_names_inside_filters_are_relative_not_roots() -> None:
    template = compile_template("${value.items[?kind == 'a'].n}")
    doc = {"value": {"items": [{"kind": "a", "n": 1}, {"kind": "b", "n": 2}]}}
    assert template.render_value(doc, "f") == [1]


def test_placeholder_selecting_nothing_is_missing_field() -> None:
    with pytest.raises(MappingError) as info:
        compile_template("id-${value.nope}").render_value(DOC, "detail_type")
    assert info.value.code == "MissingField"
    assert info.value.message.startswith("detail_type:")
    assert "${value.nope}" in info.value.message


# --- mapper ----------------------------------------------------------------------------------


def make_config(mapping: dict[str, Any] | None = None, **top: Any) -> Any:
    data: dict[str, Any] = {
        "mappings": [
            {
                "topic": "orders",
                "source": "com.example.orders",
                "detail_type": "OrderPlaced",
                **(mapping or {}),
            }
        ],
        **top,
    }
    return config_from_dict(data)


def message(
    value: bytes | None = b'{"id": 1}',
    topic: str = "orders",
    key: bytes | None = b"k1",
    headers: list[tuple[str, bytes | None]] | None = None,
    timestamp: tuple[int, int] = (1, 1_700_000_000_123),
    offset: int = 42,
) -> Message:
    return Message(
        topic=topic,
        partition=3,
        offset=offset,
        key=key,
        value=value,
        headers=headers or [],
        timestamp=timestamp,
    )


def map_one(record: Message, mapping: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    mapped = mapper_for(make_config(mapping, **top)).map(record)
    assert mapped.size == entry_size(mapped.entry)
    return mapped.entry


def mapping_error(
    record: Message, mapping: dict[str, Any] | None = None, **top: Any
) -> MappingError:
    with pytest.raises(MappingError) as info:
        mapper_for(make_config(mapping, **top)).map(record)
    return info.value


def test_full_entry() -> None:
    record = message(
        value=json.dumps(
            {
                "order": {"id": "o-1", "total": 12.5, "item": "café"},
                "arn": "arn:aws:x:1",
                "type": "Placed",
            }
        ).encode(),
        headers=[("X-Amzn-Trace-Id", b"Root=1-abc"), ("tenant", b"acme")],
    )
    mapped = mapper_for(
        make_config(
            {
                "source": "com.example.${topic}",
                "detail_type": "Order${value.type}",
                "detail": "${ {order: value.order, key: key, offset: offset} }",
                "resources": ["${value.arn}", "urn:tenant:${headers.tenant}"],
                "trace_header": '${headers."X-Amzn-Trace-Id"}',
            }
        )
    ).map(record)
    assert mapped.entry == {
        "Source": "com.example.orders",
        "DetailType": "OrderPlaced",
        "Detail": '{"order":{"id":"o-1","total":12.5,"item":"café"},"key":"k1","offset":42}',
        "Resources": ["arn:aws:x:1", "urn:tenant:acme"],
        "Time": datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
        "EventBusName": "default",
        "TraceHeader": "Root=1-abc",
    }
    detail = mapped.entry["Detail"]
    assert mapped.size == 14 + len("com.example.orders") + len("OrderPlaced") + len(
        detail.encode("utf-8")
    ) + len("arn:aws:x:1") + len("urn:tenant:acme")


def test_default_detail_is_the_value_as_compact_json() -> None:
    entry = map_one(message(value=b'{ "id" : 1,\n "name": "\\u00e9" }'))
    assert entry["Detail"] == '{"id":1,"name":"é"}'
    assert "Resources" not in entry
    assert "TraceHeader" not in entry


def test_time_from_record_timestamp() -> None:
    entry = map_one(message(timestamp=(1, 1_700_000_000_123)))
    assert entry["Time"] == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    entry = map_one(message(timestamp=(2, 0)))  # LOG_APPEND_TIME, epoch itself
    assert entry["Time"] == datetime(1970, 1, 1, tzinfo=UTC)


def test_no_time_when_the_record_has_no_timestamp() -> None:
    entry = map_one(message(timestamp=(0, 0)))
    assert "Time" not in entry


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2024-05-06T07:08:09Z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        (
            "2024-05-06T07:08:09.250+02:00",
            datetime(2024, 5, 6, 7, 8, 9, 250000, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2024-05-06T07:08:09", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),  # naive: UTC
        (1_700_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),  # epoch seconds
        (1_700_000_000_500, datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)),  # millis
        ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
)
def test_time_from_a_field(when: Any, expected: datetime) -> None:
    record = message(value=json.dumps({"when": when}).encode(), timestamp=(1, 5))
    entry = map_one(record, {"time": "${value.when}"})
    assert entry["Time"] == expected
    assert entry["Time"].tzinfo is not None


@pytest.mark.parametrize("when", ["yesterday", True, {"t": 1}, [1], "2024-13-45T00:00:00Z", 1e300])
def test_bad_time(when: Any) -> None:
    record = message(value=json.dumps({"when": when}).encode())
    error = mapping_error(record, {"time": "${value.when}"})
    assert error.code == "BadTime"
    assert error.message.startswith("time:")


def test_parse_time_directly() -> None:
    assert parse_time(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_time(99_999_999_999) == datetime.fromtimestamp(99_999_999_999, tz=UTC)
    assert parse_time(100_000_000_000) == datetime.fromtimestamp(100_000_000, tz=UTC)


def test_event_bus_name_default_and_per_mapping() -> None:
    assert map_one(message())["EventBusName"] == "default"
    assert map_one(message(), aws={"event_bus_name": "main-bus"})["EventBusName"] == "main-bus"
    entry = map_one(message(), {"event_bus_name": "orders-bus"}, aws={"event_bus_name": "main-bus"})
    assert entry["EventBusName"] == "orders-bus"
    record = message(headers=[("bus", b"tenant-bus")])
    assert map_one(record, {"event_bus_name": "${headers.bus}"})["EventBusName"] == "tenant-bus"


def test_event_bus_name_and_trace_header_do_not_count_in_size() -> None:
    record = message(headers=[("trace", b"Root=" + b"1" * 200)])
    plain = mapper_for(make_config()).map(record)
    extras = mapper_for(
        make_config({"event_bus_name": "b" * 300, "trace_header": "${headers.trace}"})
    ).map(record)
    assert extras.size == plain.size


def test_trace_header_from_a_header() -> None:
    record = message(headers=[("X-Amzn-Trace-Id", b"Root=1-5759e988-bd862e3fe1be46a994272793")])
    entry = map_one(record, {"trace_header": '${headers."X-Amzn-Trace-Id"}'})
    assert entry["TraceHeader"] == "Root=1-5759e988-bd862e3fe1be46a994272793"


def test_non_utf8_header_is_given_as_base64() -> None:
    record = message(headers=[("bin", b"\x80\x81")])
    entry = map_one(record, {"detail": "${ {h: headers.bin} }"})
    assert json.loads(entry["Detail"]) == {"h": "base64:gIE="}


def test_non_utf8_key_is_refused_by_the_text_decoder_and_read_by_bytes() -> None:
    record = message(key=b"\xff\x00\xfe")
    error = mapping_error(record, {"detail": "${ {k: key} }"})
    assert (error.code, error.stage) == ("KeyNotUtf8", "decode")
    assert "decode.key: bytes" in error.message
    entry = map_one(record, {"detail": "${ {k: key} }", "decode": {"key": "bytes"}})
    assert json.loads(entry["Detail"]) == {"k": "/wD+"}
    # a mapping that does not read the key does not decode it
    assert map_one(record)["Detail"] == '{"id":1}'


def test_utf8_key_is_text() -> None:
    entry = map_one(message(key="clé".encode()), {"detail": "${ {k: key} }"})
    assert json.loads(entry["Detail"]) == {"k": "clé"}


def test_first_matching_mapping_wins() -> None:
    pattern = {"topic_pattern": r"orders\..*", "source": "from.pattern", "detail_type": "P"}
    exact = {"topic": "orders.eu", "source": "from.exact", "detail_type": "E"}
    record = message(topic="orders.eu")
    pattern_first = mapper_for(config_from_dict({"mappings": [pattern, exact]}))
    assert pattern_first.map(record).entry["Source"] == "from.pattern"
    exact_first = mapper_for(config_from_dict({"mappings": [exact, pattern]}))
    assert exact_first.map(record).entry["Source"] == "from.exact"
    # the pattern still serves the other topics
    assert exact_first.map(message(topic="orders.us")).entry["Source"] == "from.pattern"


def test_topic_pattern_is_matched_in_full() -> None:
    mapper = mapper_for(
        config_from_dict(
            {"mappings": [{"topic_pattern": "orders", "source": "s", "detail_type": "d"}]}
        )
    )
    with pytest.raises(MappingError) as info:
        mapper.map(message(topic="orders-archive"))
    assert info.value.code == "NoMapping"


# --- mapping errors --------------------------------------------------------------------------


def test_no_mapping() -> None:
    error = mapping_error(message(topic="payments"))
    assert error.code == "NoMapping"
    assert "'payments'" in error.message
    assert error.stage == "map"


def test_tombstone() -> None:
    error = mapping_error(message(value=None))
    assert error.code == "Tombstone"
    assert "null" in error.message
    assert error.stage == "decode"


@pytest.mark.parametrize("value", [b"not json", b"{", b"", b'{"a":1} trailing'])
def test_value_not_json(value: bytes) -> None:
    error = mapping_error(message(value=value))
    assert error.code == "ValueNotJson"
    assert error.message.startswith("value is not JSON")


def test_value_not_utf8() -> None:
    error = mapping_error(message(value=b'{"a": "\xff\xfe\xfd"}'))
    assert error.code == "ValueNotUtf8"
    assert error.message.startswith("value is not UTF-8")


@pytest.mark.parametrize(
    "value",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000],
)
def test_deeply_nested_value_is_a_mapping_error(value: bytes) -> None:
    error = mapping_error(message(value=value))
    assert error.code == "NestingTooDeep"
    assert "1000 levels" in error.message


def test_missing_field() -> None:
    error = mapping_error(message(), {"detail_type": "${value.type}"})
    assert error.code == "MissingField"
    assert error.message.startswith("detail_type:")
    assert "${value.type}" in error.message


def test_missing_field_in_required_resources_names_the_index() -> None:
    mapping = {"resources": ["arn:a", "${value.arn}"], "required": ["resources"]}
    error = mapping_error(message(), mapping)
    assert error.code == "MissingField"
    assert error.message.startswith("resources[1]:")
    # not required: the item that selects nothing is left out, the entry is sent
    entry = mapper_for(make_config({"resources": ["arn:a", "${value.arn}"]})).map(message()).entry
    assert entry["Resources"] == ["arn:a"]


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"source": "${value.n}"}, "source"),
        ({"detail_type": "${value.o}"}, "detail_type"),
        ({"trace_header": "${value.n}"}, "trace_header"),
        ({"event_bus_name": "${value.o}"}, "event_bus_name"),
        ({"resources": ["${value.n}"]}, "resources[0]"),
        ({"resources": ["${value.empty}"]}, "resources[0]"),
    ],
)
def test_wrong_type(mapping: dict[str, Any], field: str) -> None:
    record = message(value=b'{"n": 5, "o": {"a": 1}, "empty": ""}')
    error = mapping_error(record, mapping)
    assert error.code == "WrongType"
    assert error.message.startswith(f"{field}:")


@pytest.mark.parametrize(
    ("value", "detail", "got"),
    [
        (b"[1, 2]", "${value}", "array"),
        (b'"text"', "${value}", None),
        (b"5", "${value}", "number"),
        (b'{"a": 1}', "${value.a}", "number"),
        (b'{"a": 1}', "n=${value.a}", None),
    ],
)
def test_detail_not_object(value: bytes, detail: str, got: str | None) -> None:
    error = mapping_error(message(value=value), {"detail": detail})
    assert error.code == "DetailNotObject"
    assert error.message.startswith("detail:")
    if got is not None:
        assert f"got {got}" in error.message


def test_detail_text_template_that_renders_an_object_is_accepted() -> None:
    entry = map_one(message(value=b'{"a": 1}'), {"detail": '{"wrapped": ${value.a}}'})
    assert entry["Detail"] == '{"wrapped":1}'


def test_ten_resources_are_fine_eleven_are_too_many() -> None:
    arns = [f"arn:aws:s3:::b{i}" for i in range(11)]
    ok = message(value=json.dumps({"arns": arns[:10]}).encode())
    assert map_one(ok, {"resources": ["${value.arns}"]})["Resources"] == arns[:10]
    error = mapping_error(
        message(value=json.dumps({"arns": arns}).encode()), {"resources": ["${value.arns}"]}
    )
    assert error.code == "TooManyResources"
    assert error.message.startswith("resources: 11 items")


def test_detail_type_of_128_is_fine_129_is_too_long() -> None:
    ok = message(value=json.dumps({"t": "x" * 128}).encode())
    assert map_one(ok, {"detail_type": "${value.t}"})["DetailType"] == "x" * 128
    error = mapping_error(
        message(value=json.dumps({"t": "x" * 129}).encode()), {"detail_type": "${value.t}"}
    )
    assert error.code == "DetailTypeTooLong"
    assert error.message == "detail_type: 129 characters; at most 128"
    assert error.stage == "validate"


def test_source_reserved() -> None:
    error = mapping_error(message(value=b'{"src": "aws.x"}'), {"source": "${value.src}"})
    assert error.code == "SourceReserved"
    assert error.message.startswith("source:")
    assert "aws.x" in error.message


def test_literal_reserved_source_is_refused_at_load() -> None:
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"mappings\[0\]\.source: must not start with 'aws\.'"):
        make_config({"source": "aws.s3"})


def test_empty_source_and_detail_type() -> None:
    record = message(value=b'{"e": ""}')
    assert mapping_error(record, {"source": "${value.e}"}).code == "EmptySource"
    assert mapping_error(record, {"detail_type": "${value.e}"}).code == "EmptyDetailType"


def test_entry_too_large() -> None:
    record = message(value=json.dumps({"blob": "x" * 2000}).encode())
    error = mapping_error(record, batch={"max_bytes": 1024})
    assert error.code == "EntryTooLarge"
    assert "1024" in error.message and "batch.max_bytes" in error.message
    assert error.stage == "validate"


def test_entry_of_exactly_max_bytes_is_accepted() -> None:
    # Time 14 + Source 18 + DetailType 11 + Detail: {"b":"..."} = 8 + n
    n = 1024 - 14 - 18 - 11 - 8
    entry = map_one(message(value=json.dumps({"b": "x" * n}).encode()), batch={"max_bytes": 1024})
    assert entry_size(entry) == 1024
    error = mapping_error(
        message(value=json.dumps({"b": "x" * (n + 1)}).encode()), batch={"max_bytes": 1024}
    )
    assert error.code == "EntryTooLarge"

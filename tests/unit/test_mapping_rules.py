"""Decoders, filters, tombstone and null-key policies, the record id, S3 offloading, and every
kind of bad mapping (at load, with its key path) or bad record (at map time, with its code and
the field it names)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from mapping_support import mapper_for

from bridge.cli import main
from bridge.codes import MAPPING_CODES
from bridge.config.load import config_from_dict, load_config
from bridge.errors import ConfigError, FilteredOut, MappingError
from bridge.mapping.offload import DryRunStore, OffloadWriteError
from bridge.mapping.template import compile_template


def config(mapping: dict[str, Any] | None = None, **top: Any) -> Any:
    base = {"topic": "orders", "source": "com.example", "detail_type": "Order"}
    return config_from_dict({"mappings": [{**base, **(mapping or {})}], **top})


def message(
    value: bytes | None = b'{"id": 1}',
    key: bytes | None = b"k1",
    topic: str = "orders",
    headers: list[tuple[str, bytes | None]] | None = None,
    offset: int = 42,
) -> Message:
    return Message(
        topic=topic,
        partition=3,
        offset=offset,
        key=key,
        value=value,
        headers=headers or [],
        timestamp=(1, 1_700_000_000_000),
    )


def entry(record: Message, mapping: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    return mapper_for(config(mapping, **top)).map(record).entry


def failure(record: Message, mapping: dict[str, Any] | None = None, **top: Any) -> MappingError:
    with pytest.raises(MappingError) as info:
        mapper_for(config(mapping, **top)).map(record)
    assert info.value.code in MAPPING_CODES
    return info.value


def dropped(record: Message, mapping: dict[str, Any] | None = None) -> str:
    with pytest.raises(FilteredOut) as info:
        mapper_for(config(mapping)).map(record)
    return info.value.reason


def load_problems(mapping: dict[str, Any] | None = None, **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(mapping, **top)
    return info.value.problems


# --- the record id ---------------------------------------------------------------------------


def test_id_is_topic_partition_offset_and_stable() -> None:
    mapping = {"detail": "${ {id: id, v: value} }"}
    first = entry(message(offset=7), mapping)
    again = entry(message(offset=7), mapping)
    assert json.loads(first["Detail"]) == {"id": "orders-3-7", "v": {"id": 1}}
    assert first == again


# --- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ({"status": "paid", "total": 5}, True),
        ({"status": "paid", "total": 0}, False),
        ({"status": "new", "total": 5}, False),
        ({}, False),
        ([1, 2], False),  # value.status of an array: null
    ],
)
def test_filter_keeps_records_for_which_it_is_true(value: Any, kept: bool) -> None:
    mapping = {
        "filter": "${value.status == 'paid' && value.total > `0`}",
        "detail": "${ {v: value} }",
    }
    record = message(json.dumps(value).encode())
    if kept:
        assert entry(record, mapping)["Source"] == "com.example"
    else:
        assert dropped(record, mapping) == "filter"


@pytest.mark.parametrize(
    ("expression", "kept"),
    [
        ("${value.flag}", False),  # missing: null
        ("${value.zero}", True),  # JMESPath: 0 is true
        ("${value.empty}", False),
        ("${value.items}", False),  # []
        ("${headers.tenant == 'acme'}", True),
        ("${key == 'k1'}", True),
        ("${topic == 'orders' && partition == `3`}", True),
        ("${contains(['a', 'b'], value.kind)}", True),
        ("${!(value.flag)}", True),
    ],
)
def test_filter_truth_is_jmespath_truth(expression: str, kept: bool) -> None:
    record = message(
        b'{"zero": 0, "empty": "", "items": [], "kind": "b"}', headers=[("tenant", b"acme")]
    )
    if kept:
        entry(record, {"filter": expression})
    else:
        assert dropped(record, {"filter": expression}) == "filter"


def test_filter_reads_the_decoded_key() -> None:
    mapping = {"filter": "${key.region == 'eu'}", "decode": {"key": "json"}}
    entry(message(key=b'{"region": "eu"}'), mapping)
    assert dropped(message(key=b'{"region": "us"}'), mapping) == "filter"


def test_filter_runs_after_decoding_so_bad_records_are_still_dead_lettered() -> None:
    error = failure(message(b"not json"), {"filter": "${value.keep}"})
    assert error.code == "ValueNotJson"


# --- tombstones and null keys ----------------------------------------------------------------


def test_tombstone_policies() -> None:
    assert failure(message(None)).code == "Tombstone"
    assert dropped(message(None), {"tombstones": "skip"}) == "tombstone"
    sent = entry(
        message(None), {"tombstones": "send", "detail": "${ {key: key, gone: value == `null`} }"}
    )
    assert json.loads(sent["Detail"]) == {"key": "k1", "gone": True}


def test_null_key_policies() -> None:
    detail = {"detail": "${ {key: key, v: value} }"}
    assert json.loads(entry(message(key=None), detail)["Detail"]) == {"key": None, "v": {"id": 1}}
    assert dropped(message(key=None), {"null_keys": "skip"}) == "null_key"
    error = failure(message(key=None), {"null_keys": "dead_letter"})
    assert (error.code, error.stage) == ("NullKey", "decode")


def test_empty_key_is_not_a_null_key() -> None:
    sent = entry(message(key=b""), {"null_keys": "dead_letter", "detail": "${ {k: key} }"})
    assert json.loads(sent["Detail"]) == {"k": ""}


def test_tombstone_send_with_the_value_as_detail_is_refused_at_load() -> None:
    problems = load_problems({"tombstones": "send"})
    assert len(problems) == 1
    assert problems[0].startswith("mappings[0].tombstones: send maps null values, but detail is")


# --- decoders --------------------------------------------------------------------------------


def test_value_decoders() -> None:
    detail = {"detail": "${ {v: value} }"}
    raw = "ligne été".encode()
    assert json.loads(entry(message(raw), {**detail, "decode": {"value": "text"}})["Detail"]) == {
        "v": "ligne été"
    }
    assert json.loads(entry(message(raw), {**detail, "decode": {"value": "bytes"}})["Detail"]) == {
        "v": "bGlnbmUgw6l0w6k="
    }
    assert json.loads(entry(message(b"[1, 2]"), detail)["Detail"]) == {"v": [1, 2]}


def test_a_value_the_mapping_does_not_read_is_not_decoded() -> None:
    sent = entry(message(b"\xff not json"), {"detail": "${ {k: key} }"})
    assert json.loads(sent["Detail"]) == {"k": "k1"}


def test_exactly_1000_levels_pass_1001_do_not() -> None:
    # value nested 999 deep inside the Detail's own object: 1000 levels in all
    ok = b'{"a":' * 999 + b"1" + b"}" * 999
    sent = entry(message(ok))
    assert sent["Detail"].count("{") == 999
    wrapped = entry(message(ok), {"detail": "${ {v: value} }"})
    assert wrapped["Detail"].count("{") == 1000
    # 1000 levels in the value, then wrapped: 1001
    error = failure(message(b'{"a":' * 1000 + b"1" + b"}" * 1000), {"detail": "${ {v: value} }"})
    assert (error.code, error.stage) == ("NestingTooDeep", "validate")
    assert error.message == "detail nests 1001 levels deep; PutEvents accepts at most 1000 levels"
    error = failure(message(b"[" * 1001 + b"]" * 1001))
    assert (error.code, error.stage) == ("NestingTooDeep", "decode")
    assert error.message.startswith("value nests 1001 levels deep")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    value = json.dumps({"text": "[" * 2000 + "{" * 2000}).encode()
    assert entry(message(value))["Detail"] == value.decode().replace(": ", ":")


# --- templates: what can exist is checked at load --------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "where", "phrase"),
    [
        ({"source": "${topic.name}"}, "source", "reads 'name' of topic, which is the topic name"),
        ({"detail_type": "${partition.x}"}, "detail_type", "of partition, which is a number"),
        ({"detail": "${ {a: key.id} }"}, "detail", "of key, which is text (decode.key: text)"),
        ({"detail": "${ {a: headers.h.x} }"}, "detail", "headers values are text"),
        ({"filter": "${id.x}"}, "filter", "of id, which is text"),
        (
            {"decode": {"value": "bytes"}, "detail": "${ {a: value.x} }"},
            "detail",
            "of value, which is base64 text (decode.value: bytes)",
        ),
    ],
)
def test_reading_a_field_of_a_leaf_input_is_an_error_at_load(
    mapping: dict[str, Any], where: str, phrase: str
) -> None:
    problems = load_problems(mapping)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"mappings[0].{where}: ")
    assert phrase in problems[0]


def test_reading_fields_where_they_can_exist_is_fine() -> None:
    for text in (
        "${value.a.b.c}",
        "${headers.h}",
        "${headers.*}",
        "${value.items[0].sku}",
        "${length(topic)}",
        "${ {t: topic, k: key} }",
    ):
        compile_template(text)
    config({"decode": {"key": "json"}, "detail": "${ {a: key.id.x} }"})


def test_jmespath_failing_on_a_record_is_a_mapping_error_not_a_crash() -> None:
    error = failure(message(b'{"n": 5}'), {"detail_type": "${to_string(length(value.n))}"})
    assert error.code == "ExpressionFailed"
    assert error.message.startswith("detail_type: ${to_string(length(value.n))} failed on this")


# --- offloading ------------------------------------------------------------------------------


class BrokenStore:
    def put(self, bucket: str, key: str, body: bytes, sha256: bytes) -> None:
        raise OffloadWriteError("AccessDenied: Access Denied")


def offload_config(**mapping: Any) -> Any:
    return config(
        {"oversize": "offload", **mapping},
        offload={"bucket": "payloads", "prefix": ""},
        batch={"max_bytes": 1024},
    )


def test_offload_the_whole_detail() -> None:
    store = DryRunStore()
    value = json.dumps({"blob": "x" * 2000}).encode()
    mapped = mapper_for(offload_config(), store=store).map(message(value))
    reference = json.loads(mapped.entry["Detail"])["s3_offload"]
    assert reference["key"] == "orders/3/42.json"
    assert store.puts == [("payloads", "orders/3/42.json", len(value) - 1)]  # compact: no space
    assert mapped.size <= 1024


def test_offload_a_member() -> None:
    value = json.dumps({"meta": {"n": 1}, "doc": {"blob": "x" * 2000}}).encode()
    mapped = mapper_for(offload_config(offload_path="doc.blob"), store=DryRunStore()).map(
        message(value)
    )
    detail = json.loads(mapped.entry["Detail"])
    assert detail["meta"] == {"n": 1}
    assert set(detail["doc"]["blob"]) == {"s3_offload"}


def test_offload_failures_are_dead_letters_naming_the_object() -> None:
    value = json.dumps({"blob": "x" * 2000}).encode()
    with pytest.raises(MappingError) as info:
        mapper_for(offload_config(), store=BrokenStore()).map(message(value))
    assert (info.value.code, info.value.stage) == ("OffloadFailed", "offload")
    assert "s3://payloads/orders/3/42.json failed: AccessDenied" in info.value.message
    with pytest.raises(MappingError) as info:
        mapper_for(offload_config(offload_path="nope"), store=DryRunStore()).map(message(value))
    assert info.value.code == "OffloadPathMissing"
    # what stays is still too large: Resources are not offloaded
    arns = ["arn:" + "r" * 200] * 5
    big = json.dumps({"blob": "x" * 2000, "arns": arns}).encode()
    with pytest.raises(MappingError) as info:
        mapper_for(offload_config(resources=["${value.arns}"]), store=DryRunStore()).map(
            message(big)
        )
    assert info.value.code == "EntryTooLarge"
    assert "after its Detail went to S3" in info.value.message


# --- every kind of bad mapping, at load, with its key path -----------------------------------

BAD_MAPPINGS: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
    ({"resources": "arn:x"}, {}, "mappings[0].resources", "valid tuple"),
    ({"source": None}, {}, "mappings[0].source", "required (publish: put_events)"),
    (
        {"topic": None, "topic_pattern": "orders(["},
        {},
        "mappings[0].topic_pattern",
        "invalid regex",
    ),
    ({"detail": "${value.[}"}, {}, "mappings[0].detail", "not a valid JMESPath expression"),
    ({"detail_type": "${vaule.type}"}, {}, "mappings[0].detail_type", "'vaule', which no record"),
    ({"source": "${topic.x}"}, {}, "mappings[0].source", "has no fields"),
    ({"filter": "value.ok"}, {}, "mappings[0].filter", "must be exactly one ${...} expression"),
    ({"filter": "${value.ok =}"}, {}, "mappings[0].filter", "not a valid JMESPath"),
    ({"time": "${value.when"}, {}, "mappings[0].time", "unclosed placeholder"),
    ({"resources": [f"arn:{i}" for i in range(11)]}, {}, "mappings[0].resources", "at most 10"),
    ({"detail_type": "x" * 129}, {}, "mappings[0].detail_type", "129 characters; at most 128"),
    ({"decode": {"value": "xml"}}, {}, "mappings[0].decode.value", "'json', 'text', 'bytes'"),
    ({"decode": {"value": "avro"}}, {}, "mappings[0].decode.value", "set schema_registry.url"),
    ({"oversize": "offload"}, {}, "mappings[0].oversize", "set offload.bucket"),
    ({"offload_path": "body"}, {}, "mappings[0].offload_path", "only used with"),
    (
        {"oversize": "offload", "offload_path": "a..b"},
        {"offload": {"bucket": "bkt"}},
        "mappings[0].offload_path",
        "not a dotted path",
    ),
    ({"tombstones": "ignore"}, {}, "mappings[0].tombstones", "'dead_letter', 'skip' or 'send'"),
    ({"topic": None}, {}, "mappings[0]", "set exactly one of 'topic', 'topic_pattern'"),
    ({"topic": None, "default": True}, {}, "mappings[0].default", "subscribe to them with"),
    ({"detial": "${value}"}, {}, "mappings[0].detial", "unknown key"),
    ({"source": "aws.orders"}, {}, "mappings[0].source", "must not start with 'aws.'"),
    (
        {"decode": {"value": "protobuf"}},
        {"schema_registry": {"url": "schema-registry:8081"}},
        "schema_registry.url",
        "must start with http://, https:// or mock://",
    ),
    (
        {"decode": {"value": "avro"}},
        {"schema_registry": {"url": "http://sr:8081", "properties": {"bogus.key": 1}}},
        "schema_registry.properties",
        "Unrecognized properties: bogus.key",
    ),
]


@pytest.mark.parametrize(
    ("mapping", "top", "where", "phrase"),
    BAD_MAPPINGS,
    ids=[f"{case[2]}-{i}" for i, case in enumerate(BAD_MAPPINGS)],
)
def test_bad_mapping_is_named_at_load(
    mapping: dict[str, Any], top: dict[str, Any], where: str, phrase: str
) -> None:
    problems = load_problems(mapping, **top)
    matching = [p for p in problems if p.startswith(f"{where}:")]
    assert matching, problems
    assert any(phrase in p for p in matching), matching


def test_two_defaults_are_refused() -> None:
    base = {"source": "s", "detail_type": "d", "default": True}
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kafka": {"topics": ["^.*"]}, "mappings": [base, base]})
    assert "mappings[1].default: only one mapping can be the default (mappings[0] is)" in (
        info.value.problems
    )


def test_check_config_reports_template_errors_with_the_other_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        """\
batch:
  max_entries: 11
mappings:
  - topic: orders
    source: "${topc}"
    detail_type: "${value.type"
    filter: "value.ok"
  - topic_pattern: "pay(["
    source: s
    detail_type: d
  - topic: refunds
    source: s
    detail_type: "${key.kind}"
    decode: {value: yaml}
""",
        encoding="utf-8",
    )
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    lines = [line.strip()[2:] for line in err.splitlines() if line.strip().startswith("- ")]
    keys = sorted(line.split(":", 1)[0] for line in lines)
    assert keys == sorted(
        [
            "batch.max_entries",
            "mappings[0].source",
            "mappings[0].detail_type",
            "mappings[0].filter",
            "mappings[1].topic_pattern",
            "mappings[2].decode.value",
        ]
    ), lines


# --- every kind of bad record, at map time, with its code and where --------------------------

BAD_RECORDS: list[tuple[Message, dict[str, Any], dict[str, Any], str, str, str]] = [
    (message(b"{oops"), {}, {}, "ValueNotJson", "decode", "value is not JSON"),
    (message(b'{"a": "\xff"}'), {}, {}, "ValueNotUtf8", "decode", "value is not UTF-8"),
    (
        message(key=b"{"),
        {"decode": {"key": "json"}, "source": "${key.s}"},
        {},
        "KeyNotJson",
        "decode",
        "key is not JSON",
    ),
    (message(key=b"\xfe"), {"source": "s.${key}"}, {}, "KeyNotUtf8", "decode", "key is not UTF-8"),
    (message(b"[" * 1500 + b"]" * 1500), {}, {}, "NestingTooDeep", "decode", "value nests 1500"),
    (message(), {"detail_type": "${value.type}"}, {}, "MissingField", "map", "detail_type:"),
    (message(b'{"t": 5}'), {"detail_type": "${value.t}"}, {}, "WrongType", "map", "detail_type:"),
    (message(b"[1]"), {}, {}, "DetailNotObject", "map", "detail: must be a JSON object, got array"),
    (
        message(json.dumps({"r": [f"arn:{i}" for i in range(11)]}).encode()),
        {"resources": ["${value.r}"]},
        {},
        "TooManyResources",
        "map",
        "resources: 11 items",
    ),
    (
        message(json.dumps({"t": "x" * 129}).encode()),
        {"detail_type": "${value.t}"},
        {},
        "DetailTypeTooLong",
        "validate",
        "detail_type: 129 characters",
    ),
    (message(b'{"w": "soon"}'), {"time": "${value.w}"}, {}, "BadTime", "map", "time:"),
    (
        message(json.dumps({"b": "x" * 5000}).encode()),
        {},
        {"batch": {"max_bytes": 1024}},
        "EntryTooLarge",
        "validate",
        "batch.max_bytes",
    ),
    (message(None), {}, {}, "Tombstone", "decode", "tombstone"),
    (message(key=None), {"null_keys": "dead_letter"}, {}, "NullKey", "decode", "key is null"),
    (message(topic="other"), {}, {}, "NoMapping", "map", "'other'"),
    (
        message(b'{"s": "aws.x"}'),
        {"source": "${value.s}"},
        {},
        "SourceReserved",
        "validate",
        "source:",
    ),
    (message(b'{"s": ""}'), {"source": "${value.s}"}, {}, "EmptySource", "validate", "source:"),
    (
        message(b'{"n": 1}'),
        {"source": "${abs(value.n.x)}"},
        {},
        "ExpressionFailed",
        "map",
        "source:",
    ),
    (
        message(b"{}"),
        {"decode": {"value": "avro"}},
        {"schema_registry": {"url": "mock://bad-records"}},
        "NoSchemaId",
        "decode",
        "Schema Registry framing",
    ),
    (
        message(b"\x00\x00\x00\x00\x09\x02"),
        {"decode": {"value": "avro"}},
        {"schema_registry": {"url": "mock://bad-records"}},
        "SchemaNotFound",
        "decode",
        "schema id 9",
    ),
    (
        message(b"\x00\x00\x00\x00\x09\x00"),
        {"decode": {"value": "protobuf"}},
        {"schema_registry": {"url": "mock://bad-records"}},
        "SchemaNotFound",
        "decode",
        "schema id 9",
    ),
]


@pytest.mark.parametrize(
    ("record", "mapping", "top", "code", "stage", "phrase"),
    BAD_RECORDS,
    ids=[f"{case[3]}-{i}" for i, case in enumerate(BAD_RECORDS)],
)
def test_bad_record_is_a_mapping_error_naming_the_place(
    record: Message,
    mapping: dict[str, Any],
    top: dict[str, Any],
    code: str,
    stage: str,
    phrase: str,
) -> None:
    error = failure(record, mapping, **top)
    assert (error.code, error.stage) == (code, stage), error
    assert phrase in error.message


def test_an_unexpected_exception_is_a_dead_letter_not_a_crash() -> None:
    class ExplodingSink:
        name = "put_events"

        from bridge.sink.base import SinkLimits

        limits = SinkLimits(10, 262_144, 262_144)

        def prepare(self, entry: dict[str, Any], record: Any) -> dict[str, Any]:
            raise KeyError("surprise")

        def entry_size(self, wire: dict[str, Any]) -> int:
            return 0

    with pytest.raises(MappingError) as info:
        mapper_for(config(), ExplodingSink()).map(message())
    assert info.value.code == "MappingFailed"
    assert "KeyError" in info.value.message


def test_secrets_of_the_registry_stay_out_of_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sr.yaml"
    path.write_text(
        "schema_registry:\n  url: http://sr:8081\n  username: bridge\n"
        "mappings:\n  - topic: t\n    source: s\n    detail_type: d\n    decode: {value: avro}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("BRIDGE_SCHEMA_REGISTRY__PASSWORD", "sr-pw-Qx81")
    assert main(["check-config", "-c", str(path)]) == 0
    loaded = load_config(path)
    assert "sr-pw-Qx81" not in repr(loaded)
    assert loaded.schema_registry.client_config()["basic.auth.user.info"] == "bridge:sr-pw-Qx81"
    assert "sr-pw-Qx81" not in capsys.readouterr().out


def test_an_unreachable_registry_is_asked_once_per_cooldown_not_once_per_record() -> None:
    import socket

    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mapper = mapper_for(
        config(
            {"decode": {"value": "avro"}},
            schema_registry={"url": f"http://127.0.0.1:{port}", "properties": {"max.retries": 0}},
        )
    )
    framed = b"\x00\x00\x00\x00\x07\x02"
    with pytest.raises(MappingError) as info:
        mapper.map(message(framed))
    assert info.value.code == "SchemaRegistryUnavailable"
    assert "schema id 7" in info.value.message
    route = mapper._route_for("orders")
    decoder: Any = route.value
    client = decoder._deserializer._registry
    calls: list[int] = []
    original = client.get_schema
    client.get_schema = lambda *a, **k: calls.append(1) or original(*a, **k)
    for _ in range(20):
        with pytest.raises(MappingError) as info:
            mapper.map(message(framed))
        assert info.value.code == "SchemaRegistryUnavailable"
    assert calls == [], "the registry was asked again within the cooldown"
    assert "could not be fetched" in info.value.message


def test_check_config_says_what_each_mapping_does(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path as P

    routing = P(__file__).resolve().parents[2] / "config" / "routing-filters.yaml"
    assert main(["check-config", "-c", str(routing)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.split("\n", 1)[1])
    first, second, third = summary["mappings"]
    assert first["selects"] == "topic 'orders'"
    assert first["filter"].startswith("sends only records for which ${value.status == 'paid'")
    assert first["event_bus_name"].startswith("arn:aws:events:")
    assert second["selects"] == "topics matching 'inventory\\\\..*'"
    assert (second["tombstones"], third["tombstones"]) == ("send", "skip")
    assert third["selects"] == "every other subscribed topic (default)"

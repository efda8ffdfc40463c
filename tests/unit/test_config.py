"""Loading the configuration: YAML, env overrides, every problem named, secrets kept secret.

Also the dead-letter headers (``reason_headers``), which carry the original record's headers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Message
from pydantic import ValidationError

from bridge.cli import main
from bridge.config.load import config_from_dict, load_config
from bridge.dlq.writer import HEADER_PREFIX, Reason, reason_headers
from bridge.errors import ConfigError

FILE_PW = "file-pw-Zq81x"
PROP_PW = "prop-pw-Kx93y"
ENV_PW = "env-pw-Wm27v"
SECRETS = (FILE_PW, PROP_PW, ENV_PW)

MAPPINGS = """\
mappings:
  - topic: orders
    source: com.example.orders
    detail_type: OrderPlaced
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    yield


def write(tmp_path: Path, text: str, name: str = "bridge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> tuple[ConfigError, str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value, str(info.value)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# --- loading ---------------------------------------------------------------------------------


def test_valid_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
kafka:
  bootstrap_servers: "broker-1:9092,broker-2:9092"
  group_id: my-bridge
aws:
  region: eu-west-1
  event_bus_name: orders-bus
batch:
  max_entries: 5
  max_bytes: 1048576
  linger_ms: 50
dlq:
  topic: orders-dlq
mappings:
  - topic: orders
    source: com.example.orders
    detail_type: "Order${value.type}"
    resources: ["arn:aws:x:${value.id}"]
  - topic_pattern: "payments\\\\..*"
    source: com.example.payments
    detail_type: Payment
""",
    )
    config = load_config(path)
    assert config.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert config.kafka.group_id == "my-bridge"
    assert config.aws.region == "eu-west-1"
    assert config.aws.event_bus_name == "orders-bus"
    assert (config.batch.max_entries, config.batch.max_bytes, config.batch.linger_ms) == (
        5,
        1048576,
        50,
    )
    assert config.dlq.topic == "orders-dlq"
    assert len(config.mappings) == 2
    assert config.mappings[1].topic_pattern == "payments\\..*"
    assert config.mapping_for("payments.eu") is config.mappings[1]
    assert config.subscription() == ["orders", "^payments\\..*"]
    # defaults for what the file leaves out
    assert config.retry.max_attempts == 10
    assert config.pipeline.max_in_flight_calls == 256
    assert config.pipeline.adaptive_concurrency is True


def test_env_overrides_win_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "kafka:\n  bootstrap_servers: from-file:9092\n  group_id: g\nbatch:\n  max_entries: 10\n"
        "  linger_ms: 7\n" + MAPPINGS,
    )
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "from-env:9092")
    monkeypatch.setenv("BRIDGE_BATCH__MAX_ENTRIES", "3")
    config = load_config(path)
    assert config.kafka.bootstrap_servers == "from-env:9092"
    assert config.batch.max_entries == 3
    # the rest of the file's sections is kept
    assert config.kafka.group_id == "g"
    assert config.batch.linger_ms == 7


def test_env_override_is_validated_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_BATCH__MAX_ENTRIES", "11")
    error, text = problems_of(write(tmp_path, MAPPINGS))
    assert any(p.startswith("batch.max_entries:") for p in error.problems)
    assert "less than or equal to 10" in text


@pytest.mark.parametrize(
    ("yaml_text", "key", "phrase"),
    [
        ("batch:\n  max_entries: 11\n", "batch.max_entries", "less than or equal to 10"),
        ("batch:\n  max_entries: 0\n", "batch.max_entries", "greater than or equal to 1"),
        ("batch:\n  max_bytes: 1048577\n", "batch.max_bytes", "less than or equal to 1048576"),
        ("batch:\n  max_bytes: 100\n", "batch.max_bytes", "greater than or equal to 1024"),
        ("batch:\n  max_entires: 5\n", "batch.max_entires", "unknown key"),
        ("kafak:\n  group_id: x\n", "kafak", "unknown key"),
        ("batch:\n  linger_ms: soon\n", "batch.linger_ms", "valid integer"),
        ("kafka:\n  bootstrap_servers: [a, b]\n", "kafka.bootstrap_servers", "valid string"),
        (
            "retry:\n  initial_backoff_ms: 500\n  max_backoff_ms: 100\n",
            "retry",
            "max_backoff_ms (100) must be >= initial_backoff_ms (500)",
        ),
        (
            "kafka:\n  properties:\n    enable.auto.commit: true\n",
            "kafka.properties",
            "'enable.auto.commit' is managed by the bridge",
        ),
        (
            "kafka:\n  properties:\n    enable.auto.offset.store: true\n",
            "kafka.properties",
            "'enable.auto.offset.store' is managed by the bridge",
        ),
        ("kafka:\n  topics: [payments]\n", "<top level>", "topic 'payments' has no mapping"),
    ],
)
def test_each_problem_is_named_with_its_key(
    tmp_path: Path, yaml_text: str, key: str, phrase: str
) -> None:
    error, text = problems_of(write(tmp_path, yaml_text + MAPPINGS))
    assert len(error.problems) == 1, error.problems
    problem = error.problems[0]
    assert problem.startswith(f"{key}:"), problem
    assert phrase in problem
    assert str(tmp_path / "bridge.yaml") in text


def test_the_bad_value_is_shown(tmp_path: Path) -> None:
    error, _ = problems_of(write(tmp_path, "batch:\n  max_entries: 11\n" + MAPPINGS))
    assert error.problems == [
        "batch.max_entries: Input should be less than or equal to 10 (got 11)"
    ]


def test_missing_mappings(tmp_path: Path) -> None:
    error, _ = problems_of(write(tmp_path, "kafka:\n  group_id: g\n"))
    assert error.problems == ["mappings: Field required"]


def test_empty_mappings(tmp_path: Path) -> None:
    error, _ = problems_of(write(tmp_path, "mappings: []\n"))
    assert len(error.problems) == 1
    assert error.problems[0].startswith("mappings:")
    assert "at least 1 item" in error.problems[0]


def test_missing_file(tmp_path: Path) -> None:
    _, text = problems_of(tmp_path / "nope.yaml")
    assert "file not found" in text
    assert "nope.yaml" in text


def test_invalid_yaml(tmp_path: Path) -> None:
    error, _ = problems_of(write(tmp_path, "kafka: [unclosed\n"))
    assert len(error.problems) == 1
    assert error.problems[0].startswith("not valid YAML")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    _, text = problems_of(write(tmp_path, "- a\n- b\n"))
    assert "YAML mapping" in text


def test_invalid_regex(tmp_path: Path) -> None:
    path = write(
        tmp_path, "mappings:\n  - topic_pattern: 'orders(['\n    source: s\n    detail_type: d\n"
    )
    error, _ = problems_of(path)
    assert any(
        p.startswith("mappings[0]") and "invalid regex 'orders(['" in p for p in error.problems
    )


def test_invalid_topic_regex(tmp_path: Path) -> None:
    error, _ = problems_of(write(tmp_path, "kafka:\n  topics: ['^orders(']\n" + MAPPINGS))
    assert any(p.startswith("kafka.topics") and "invalid regex" in p for p in error.problems)


def test_mapping_needs_exactly_one_selector(tmp_path: Path) -> None:
    both = "mappings:\n  - topic: a\n    topic_pattern: b\n    source: s\n    detail_type: d\n"
    error, _ = problems_of(write(tmp_path, both))
    assert (
        "mappings[0]: set exactly one of 'topic', 'topic_pattern' or 'default: true'"
        " (got topic, topic_pattern)" in error.problems
    )


def test_an_invalid_only_mapping_is_reported_once(tmp_path: Path) -> None:
    both = "mappings:\n  - topic: a\n    topic_pattern: b\n    source: s\n    detail_type: d\n"
    error, _ = problems_of(write(tmp_path, both))
    assert error.problems == [
        "mappings[0]: set exactly one of 'topic', 'topic_pattern' or 'default: true'"
        " (got topic, topic_pattern)"
    ]


def test_template_errors_are_reported_with_their_mapping_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
mappings:
  - topic: ok
    source: s
    detail_type: d
  - topic: orders
    source: "aws.orders"
    detail_type: "${vaule.type}"
    resources: ["${value.[}"]
    time: "${value.when"
""",
    )
    error, _ = problems_of(path)
    problems = error.problems
    assert any(p.startswith("mappings[1].detail_type: ") and "'vaule'" in p for p in problems)
    assert any(
        p.startswith("mappings[1].resources[0]: ") and "not a valid JMESPath" in p for p in problems
    )
    assert any(p.startswith("mappings[1].time: ") and "unclosed placeholder" in p for p in problems)
    assert any(p.startswith("mappings[1].source: ") and "'aws.'" in p for p in problems)
    assert len(problems) == 4


def test_template_error_of_first_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path, "mappings:\n  - topic: orders\n    source: s\n    detail_type: '${vaule.x}'\n"
    )
    error, _ = problems_of(path)
    assert len(error.problems) == 1
    assert error.problems[0].startswith("mappings[0].detail_type: '${vaule.x}' reads 'vaule'")


def test_detail_type_literal_too_long_is_refused_at_load(tmp_path: Path) -> None:
    path = write(
        tmp_path, f"mappings:\n  - topic: orders\n    source: s\n    detail_type: {'x' * 129}\n"
    )
    error, _ = problems_of(path)
    assert error.problems == ["mappings[0].detail_type: 129 characters; at most 128"]


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
kafka:
  bogus: 1
batch:
  max_entries: 11
  max_bytes: 2000000
pipeline:
  max_in_flight_calls: 0
"""
        + MAPPINGS,
    )
    error, text = problems_of(path)
    keys = [p.split(":", 1)[0] for p in error.problems]
    assert sorted(keys) == sorted(
        ["kafka.bogus", "batch.max_entries", "batch.max_bytes", "pipeline.max_in_flight_calls"]
    )
    for key in keys:
        assert f"  - {key}:" in text


def test_config_from_dict_reports_like_load_config() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"batch": {"max_entries": 11}, "mappings": []}, source="inline")
    assert "inline" in str(info.value)
    assert any(p.startswith("batch.max_entries:") for p in info.value.problems)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MAPPINGS))
    with pytest.raises(ValidationError, match="frozen"):
        config.batch.max_entries = 3  # type: ignore[misc]


# --- secrets ---------------------------------------------------------------------------------

SECRET_FILE = (
    f"""\
kafka:
  bootstrap_servers: broker:9093
  sasl_username: bridge
  sasl_password: "{FILE_PW}"
  properties:
    security.protocol: SASL_SSL
    sasl.mechanism: SCRAM-SHA-512
    sasl.password: "{PROP_PW}"
"""
    + MAPPINGS
)


def test_secrets_are_not_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, SECRET_FILE))
    assert_no_secret(repr(config))
    assert_no_secret(str(config))
    assert_no_secret(repr(config.kafka))
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", ENV_PW)
    config = load_config(write(tmp_path, MAPPINGS))
    assert_no_secret(repr(config))


def test_sasl_password_from_the_file_reaches_librdkafka(tmp_path: Path) -> None:
    conf = load_config(write(tmp_path, SECRET_FILE)).kafka.client_config()
    assert conf["sasl.username"] == "bridge"
    assert conf["security.protocol"] == "SASL_SSL"


def test_sasl_password_field_reaches_librdkafka(tmp_path: Path) -> None:
    text = f"kafka:\n  sasl_username: u\n  sasl_password: '{FILE_PW}'\n" + MAPPINGS
    conf = load_config(write(tmp_path, text)).kafka.client_config()
    assert conf["sasl.password"] == FILE_PW


def test_sasl_password_from_env_reaches_librdkafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", ENV_PW)
    config = load_config(write(tmp_path, f"kafka:\n  sasl_password: '{FILE_PW}'\n" + MAPPINGS))
    assert config.kafka.client_config()["sasl.password"] == ENV_PW  # env wins


def test_property_password_reaches_librdkafka_via_config_from_dict() -> None:
    config = config_from_dict(
        {
            "kafka": {"properties": {"sasl.password": PROP_PW, "ssl.key.password": "k-pw"}},
            "mappings": [{"topic": "orders", "source": "s", "detail_type": "d"}],
        }
    )
    conf = config.kafka.client_config()
    assert conf["sasl.password"] == PROP_PW
    assert conf["ssl.key.password"] == "k-pw"
    assert_no_secret(repr(config))
    assert "k-pw" not in repr(config)


def test_property_password_from_the_file_reaches_librdkafka(tmp_path: Path) -> None:
    conf = load_config(write(tmp_path, SECRET_FILE)).kafka.client_config()
    assert conf["sasl.password"] == PROP_PW


@pytest.mark.parametrize(
    "text",
    [
        # a problem elsewhere in a file holding secrets
        SECRET_FILE.replace("mappings:", "batch:\n  max_entries: 11\nmappings:"),
        # the secret itself has the wrong type
        f"kafka:\n  sasl_password: ['{FILE_PW}']\n" + MAPPINGS,
        f"kafka:\n  sasl_password: {{nested: '{FILE_PW}'}}\n" + MAPPINGS,
        f"kafka:\n  properties:\n    sasl.password: ['{PROP_PW}']\n" + MAPPINGS,
        # the secret under a misspelt key
        f"kafka:\n  sasl_pasword: '{FILE_PW}'\n" + MAPPINGS,
        f"sasl_password: '{FILE_PW}'\n" + MAPPINGS,
        # a refused property next to a secret one
        f"kafka:\n  properties:\n    sasl.password: '{PROP_PW}'\n    enable.auto.commit: true\n"
        + MAPPINGS,
    ],
)
def test_secrets_are_not_in_config_errors(tmp_path: Path, text: str) -> None:
    _, message = problems_of(write(tmp_path, text))
    assert_no_secret(message)


def test_env_secret_is_not_in_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", ENV_PW)
    monkeypatch.setenv("BRIDGE_BATCH__MAX_ENTRIES", "99")
    _, message = problems_of(write(tmp_path, MAPPINGS))
    assert "batch.max_entries" in message
    assert_no_secret(message)


def test_secret_is_not_in_a_yaml_syntax_error(tmp_path: Path) -> None:
    text = f'kafka:\n  sasl_password: "{FILE_PW}\n' + MAPPINGS  # unclosed quote
    _, message = problems_of(write(tmp_path, text))
    assert "not valid YAML" in message
    assert_no_secret(message)


def test_check_config_output_has_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__SASL_PASSWORD", ENV_PW)
    path = write(tmp_path, SECRET_FILE)
    assert main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}: OK" in out
    assert "broker:9093" in out
    assert_no_secret(out + err)


def test_check_config_failure_exits_2_without_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, SECRET_FILE.replace("mappings:", "batch:\n  max_entries: 11\nmappings:"))
    assert main(["check-config", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "batch.max_entries" in err
    assert "less than or equal to 10" in err
    assert_no_secret(out + err)


# --- static membership and finished offsets ---------------------------------------------------


def test_group_instance_id_from_the_environment_reaches_librdkafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.source.consumer import consumer_config

    path = write(tmp_path, MAPPINGS)
    assert "group.instance.id" not in consumer_config(load_config(path))
    assert main(["check-config", "-c", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert summary["kafka"]["membership"]["group.instance.id"] is None
    assert "dynamic" in summary["kafka"]["membership"]["explanation"]
    assert summary["offsets"]["finished_offsets_in_commit"] is True

    monkeypatch.setenv("BRIDGE_KAFKA__GROUP_INSTANCE_ID", "bridge-2")  # e.g. from the pod name
    config = load_config(path)
    assert consumer_config(config)["group.instance.id"] == "bridge-2"
    assert main(["check-config", "-c", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    membership = summary["kafka"]["membership"]
    assert membership["group.instance.id"] == "bridge-2"
    assert "static membership" in membership["explanation"]
    assert "45000 ms" in membership["explanation"]


def test_the_consumer_protocol_drops_the_classic_only_defaults(tmp_path: Path) -> None:
    """librdkafka refuses partition.assignment.strategy and session.timeout.ms with
    group.protocol=consumer (KIP-848): the bridge's defaults of them are left out then."""
    from confluent_kafka import Consumer

    from bridge.source.consumer import consumer_config

    classic = consumer_config(load_config(write(tmp_path, MAPPINGS)))
    assert classic["session.timeout.ms"] == 45000
    text = "kafka:\n  properties:\n    group.protocol: consumer\n" + MAPPINGS
    conf = consumer_config(load_config(write(tmp_path, text)))
    assert "session.timeout.ms" not in conf and "partition.assignment.strategy" not in conf
    Consumer(conf).close()  # librdkafka takes it (no connection is made)


def test_group_instance_id_twice_is_refused(tmp_path: Path) -> None:
    text = "kafka:\n  group_instance_id: a\n  properties:\n    group.instance.id: b\n" + MAPPINGS
    _, message = problems_of(write(tmp_path, text))
    assert "group_instance_id and properties['group.instance.id']" in message


def test_plain_offsets_are_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "pipeline:\n  finished_offsets_in_commit: false\n" + MAPPINGS)
    assert main(["check-config", "-c", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert summary["offsets"]["finished_offsets_in_commit"] is False
    assert "sent again" in summary["offsets"]["explanation"]


# --- dead-letter headers ---------------------------------------------------------------------


def test_reason_headers_keep_the_original_headers_byte_for_byte() -> None:
    original = [
        ("content-type", b"application/json"),
        ("bin", b"\xff\x00\xfe\x80"),
        ("dup", b"first"),
        ("dup", b"second"),
        ("empty", b""),
        ("ünïcode", "välue".encode()),
    ]
    record = Message(
        topic="orders",
        partition=4,
        offset=1234,
        key=b"k",
        value=b"not json",
        headers=original,
        timestamp=(1, 1_700_000_000_000),
    )
    reason = Reason("decode", "ValueNotJson", "value is not JSON: Expecting value", attempts=0)
    before = int(time.time() * 1000)
    headers = reason_headers(record, reason)
    after = int(time.time() * 1000)
    assert headers[: len(original)] == original
    added = dict(headers[len(original) :])
    assert len(headers) - len(original) == len(added)  # no duplicate bridge header
    assert all(name.startswith(HEADER_PREFIX) for name in added)
    assert added[HEADER_PREFIX + "topic"] == b"orders"
    assert added[HEADER_PREFIX + "partition"] == b"4"
    assert added[HEADER_PREFIX + "offset"] == b"1234"
    assert added[HEADER_PREFIX + "stage"] == b"decode"
    assert added[HEADER_PREFIX + "code"] == b"ValueNotJson"
    assert added[HEADER_PREFIX + "message"] == b"value is not JSON: Expecting value"
    assert added[HEADER_PREFIX + "attempts"] == b"0"
    assert before <= int(added[HEADER_PREFIX + "timestamp"]) <= after


def test_reason_headers_without_original_headers() -> None:
    record = Message(topic="t", partition=0, offset=1, value=b"{}")
    headers = reason_headers(record, Reason("send", "MalformedDetail", "bad", attempts=3))
    assert [name for name, _ in headers] == [
        HEADER_PREFIX + k
        for k in (
            "topic",
            "partition",
            "offset",
            "stage",
            "code",
            "message",
            "attempts",
            "timestamp",
        )
    ]
    assert dict(headers)[HEADER_PREFIX + "attempts"] == b"3"


def test_reason_message_is_utf8_and_bounded() -> None:
    record = Message(topic="t", partition=0, offset=1, value=b"{}")
    headers = dict(reason_headers(record, Reason("map", "X", "é" * 10_000)))
    message = headers[HEADER_PREFIX + "message"].decode("utf-8")
    assert message == "é" * 4000


def test_reason_headers_keep_null_header_values() -> None:
    record = Message(topic="t", partition=0, offset=1, value=b"{}", headers=[("n", None)])
    headers = reason_headers(record, Reason("map", "X", "m"))
    assert headers[0] == ("n", None)


ALIBABA = {
    "endpoint": "https://1.eventbridge.cn-hangzhou.aliyuncs.com",
    "access_key_id": "id",
    "access_key_secret": "secret",
}


def test_alibaba_max_events_sets_the_entries_per_call() -> None:
    base = {
        "sink": "alibaba",
        "kafka": {"bootstrap_servers": "b:9092", "group_id": "g"},
        "alibaba": ALIBABA,
        "mappings": [{"topic": "t", "source": "s", "detail_type": "d"}],
    }
    assert config_from_dict(base).packing()[0] == 16
    assert config_from_dict({**base, "alibaba": {**ALIBABA, "max_events": 4}}).packing()[0] == 4
    # batch.max_entries, when set, still wins (within the API's 16)
    both = {**base, "alibaba": {**ALIBABA, "max_events": 4}, "batch": {"max_entries": 8}}
    assert config_from_dict(both).packing()[0] == 8


def test_subject_is_refused_where_the_sink_has_no_such_field() -> None:
    cfg = {
        "kafka": {"bootstrap_servers": "b:9092", "group_id": "g"},
        "mappings": [{"topic": "t", "source": "s", "detail_type": "d", "subject": "{{ key }}"}],
    }
    with pytest.raises(ConfigError) as caught:
        config_from_dict(cfg)
    assert "mappings[0].subject: the CloudEvents subject is only sent by sink: alibaba" in str(
        caught.value
    )
    alibaba = {**cfg, "sink": "alibaba", "alibaba": ALIBABA}
    assert config_from_dict(alibaba).mappings[0].subject == "{{ key }}"

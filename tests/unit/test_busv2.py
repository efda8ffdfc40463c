"""The new bus (sink: event_bus_v2): configuration, wire form, outcomes, the start-up check, and
boto3's own eventbridgev2 client against the local CBOR endpoint."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st

from bridge.config.load import config_from_dict
from bridge.errors import ConfigError, MappingError
from bridge.limits import MIB
from bridge.mapping.mapper import Mapper
from bridge.offsets.tracker import TopicPartition
from bridge.pipeline.judge import Action, judge
from bridge.pipeline.work import Work
from bridge.sink.busv2 import (
    EventBusV2Sink,
    check_event_bus_v2,
    classify_v2_call_error,
    classify_v2_entry,
    classify_v2_response,
    v2_entry_size,
)
from bridge.sink.factory import make_sink
from bridge.sink.outcome import Kind
from bridge.sink.retry import Backoff
from testbed.base import Faults
from testbed.eventbus_v2 import BUS_ARN, LocalEventBusV2, v2_request_size

OTHER_ARN = "arn:aws:events:eu-west-1:123456789012:event-busv2/orders.v2/0123456789abcdefghijklmno"


def v2_config(mapping: dict[str, Any] | None = None, **top: Any) -> Any:
    data: dict[str, Any] = {
        "sink": "event_bus_v2",
        "aws": {"event_bus_arn": BUS_ARN},
        "mappings": [
            {"topic": "orders", "source": "com.example", "detail_type": "Order", **(mapping or {})}
        ],
        **top,
    }
    return config_from_dict(data)


def mapper(config: Any) -> Mapper:
    return Mapper(config, make_sink(config, None))


def message(
    offset: int = 7, key: bytes | None = b"k1", value: bytes = b'{"id": 1, "c": "x"}'
) -> Message:
    return Message(
        topic="orders",
        partition=2,
        offset=offset,
        key=key,
        value=value,
        headers=[],
        timestamp=(1, 1_700_000_000_000),
    )


@pytest.fixture
def endpoint() -> Iterator[LocalEventBusV2]:
    with LocalEventBusV2(buses={OTHER_ARN: "CREATING"}) as ep:
        yield ep


def client_for(url: str) -> Any:
    return boto3.client(
        "eventbridgev2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        config=Config(retries={"total_max_attempts": 1}),
    )


# -- configuration ----------------------------------------------------------------------


def test_config_needs_the_arn_and_checks_its_pattern() -> None:
    with pytest.raises(ConfigError) as missing:
        config_from_dict(
            {
                "sink": "event_bus_v2",
                "mappings": [{"topic": "t", "source": "s", "detail_type": "d"}],
            }
        )
    assert "aws.event_bus_arn: required when sink is event_bus_v2" in str(missing.value)
    for wrong in (
        "arn:aws:events:us-east-1:123456789012:event-bus/orders",  # the classic bus
        "arn:aws:events:us-east-1:12345:event-busv2/orders/0123456789abcdefghijklmno",
        "arn:aws:events:us-east-1:123456789012:event-busv2/orders/short",
    ):
        with pytest.raises(ConfigError) as bad:
            v2_config(aws={"event_bus_arn": wrong})
        assert "aws.event_bus_arn" in str(bad.value), wrong
    assert v2_config(aws={"event_bus_arn": OTHER_ARN}).aws.event_bus_arn == OTHER_ARN


def test_config_limits_of_the_new_bus() -> None:
    config = v2_config()
    assert config.packing() == (100, 1024 * 1024, 1024 * 1024)
    assert v2_config(batch={"max_entries": 100}).packing()[0] == 100
    with pytest.raises(ConfigError) as over:
        config_from_dict(
            {
                "batch": {"max_entries": 11},
                "mappings": [{"topic": "t", "source": "s", "detail_type": "d"}],
            }
        )
    assert "batch.max_entries" in str(over.value)
    with pytest.raises(ConfigError) as v2_keys:
        config_from_dict(
            {"mappings": [{"topic": "t", "source": "s", "detail_type": "d", "event_group_id": "g"}]}
        )
    assert "mappings[0].event_group_id: only used with sink: event_bus_v2" in str(v2_keys.value)


# -- wire form ---------------------------------------------------------------------------


def test_wire_form_carries_group_and_record_id_as_deduplication_id() -> None:
    config = v2_config({"event_group_id": "${key}"})
    mapped = mapper(config).map(message())
    assert set(mapped.entry) == {"Source", "DetailType", "Detail", "Time", "SystemMetadata"}
    assert mapped.entry["SystemMetadata"] == {
        "EventGroupId": "k1",
        "DeduplicationId": "orders-2-7",
    }
    assert mapped.size == v2_entry_size(mapped.entry)
    assert mapped.size == v2_request_size("PutEvents", [mapped.entry])


def test_deduplication_id_template_and_content_based() -> None:
    entry = mapper(v2_config({"deduplication_id": "${value.id}"})).map(message()).entry
    assert entry["SystemMetadata"] == {"DeduplicationId": "1"}
    content = v2_config(aws={"event_bus_arn": BUS_ARN, "content_based_deduplication": True})
    assert "SystemMetadata" not in mapper(content).map(message()).entry


@pytest.mark.parametrize(
    ("mapping", "record", "code", "text"),
    [
        ({"event_group_id": "${value.missing}"}, message(), "MissingField", "event_group_id"),
        ({"event_group_id": "${key}"}, message(key=b"x" * 129), "IdTooLong", "at most 128"),
        ({"deduplication_id": "${key}"}, message(key=b"   "), "BlankId", "whitespace"),
        ({"event_group_id": "${value}"}, message(), "WrongType", "got object"),
        ({"source": "aws.orders"}, message(), "SourceReserved", "aws."),
    ],
)
def test_bad_ids_are_clear_dead_letter_reasons(
    mapping: dict[str, Any], record: Message, code: str, text: str
) -> None:
    with pytest.raises(MappingError) as info:
        mapper(v2_config(mapping)).map(record)
    assert info.value.code == code
    assert text in info.value.message


# -- outcomes ----------------------------------------------------------------------------


def test_entry_outcomes() -> None:
    published = classify_v2_entry(
        {"EventId": "e", "SequenceNumber": "1", "SuccessCode": "PUBLISHED"}
    )
    assert published.kind is Kind.DELIVERED and not published.deduplicated
    dup = classify_v2_entry({"EventId": "e", "SuccessCode": "DEDUPLICATED"})
    assert dup.kind is Kind.DELIVERED and dup.deduplicated
    throttled = classify_v2_entry({"ErrorCode": "ThrottlingException", "ErrorMessage": "slow"})
    assert (throttled.kind, throttled.hold, throttled.throttled) == (Kind.RETRY, True, True)
    assert classify_v2_entry({"ErrorCode": "InternalException"}).kind is Kind.RETRY
    assert classify_v2_entry({"ErrorCode": "InvalidInputException"}).kind is Kind.PERMANENT
    assert classify_v2_entry({"SuccessCode": "MAYBE"}).kind is Kind.RETRY
    mismatch = classify_v2_response({"Entries": [{"SuccessCode": "PUBLISHED"}]}, 2)
    assert [o.whole_call for o in mismatch] == [True, True]


@pytest.mark.parametrize(
    ("code", "status", "kind", "hold", "throttled"),
    [
        ("ThrottlingException", 429, Kind.RETRY, True, True),
        ("InternalException", 500, Kind.RETRY, True, False),
        ("AccessDeniedException", 403, Kind.RETRY, True, False),
        ("ResourceNotFoundException", 404, Kind.RETRY, True, False),
        ("InvalidStateException", 409, Kind.RETRY, True, False),
        ("SchemaRegistryUnavailableException", 400, Kind.RETRY, True, False),
        ("InvalidInputException", 400, Kind.PERMANENT, False, False),
    ],
)
def test_whole_call_outcomes(
    code: str, status: int, kind: Kind, hold: bool, throttled: bool
) -> None:
    outcome = classify_v2_call_error(code, status, "m")
    assert (outcome.kind, outcome.hold, outcome.throttled, outcome.whole_call) == (
        kind,
        hold,
        throttled,
        True,
    )


def test_invalid_input_splits_a_request_to_find_the_culprit() -> None:
    batch = [Work(message(offset=i), ("orders", 2), 0) for i in range(3)]
    outcome = classify_v2_call_error("InvalidInputException", 400, "too big")
    judged = judge(
        batch,
        [outcome] * 3,
        owns=lambda w: True,
        revoking=set[TopicPartition](),
        backoff=Backoff(0.1, 1.0, 10),
        rng=random.Random(1),
        now=0.0,
    )
    assert [v.action for v in judged.verdicts] == [Action.ALONE] * 3
    alone = judge(
        batch[:1],
        [outcome],
        owns=lambda w: True,
        revoking=set[TopicPartition](),
        backoff=Backoff(0.1, 1.0, 10),
        rng=random.Random(1),
        now=0.0,
    )
    assert alone.verdicts[0].action is Action.DEAD_LETTER


# -- through boto3's own client, over CBOR ---------------------------------------------------


def test_send_through_boto3_over_cbor(endpoint: LocalEventBusV2) -> None:
    config = v2_config({"event_group_id": "${key}"})
    sink = make_sink(config, client_for(endpoint.url))
    assert isinstance(sink, EventBusV2Sink)
    shaper = Mapper(config, sink)
    wires = [shaper.map(message(offset=o, key=b"g%d" % (o % 2))).entry for o in range(4)]
    first = sink.send(wires)
    assert [(o.kind, o.deduplicated) for o in first] == [(Kind.DELIVERED, False)] * 4
    again = sink.send(wires[:2])
    assert [(o.kind, o.deduplicated) for o in again] == [(Kind.DELIVERED, True)] * 2
    assert endpoint.group_order() == {
        "g0": ["orders-2-0", "orders-2-2"],
        "g1": ["orders-2-1", "orders-2-3"],
    }
    sequences = [r.sequence_number for r in endpoint.received()]
    assert sequences == ["1", "1", "2", "2"]
    assert endpoint.stats()["entries_deduplicated"] == 2


def test_failures_through_boto3(endpoint: LocalEventBusV2) -> None:
    config = v2_config()
    sink = make_sink(config, client_for(endpoint.url))
    wire = Mapper(config, sink).map(message()).entry
    endpoint.set_faults(call_error_rate=1.0, call_error_code="ThrottlingException")
    [throttled] = sink.send([wire])
    assert (throttled.kind, throttled.code, throttled.throttled) == (
        Kind.RETRY,
        "ThrottlingException",
        True,
    )
    endpoint.set_faults(per_entry_failures={"InternalException": 1.0})
    assert [o.code for o in sink.send([wire])] == ["InternalException"]
    endpoint.set_faults(Faults())
    too_many = sink.send([wire] * 101)
    assert {(o.kind, o.code) for o in too_many} == {(Kind.PERMANENT, "InvalidInputException")}
    assert endpoint.violations and "101 entries" in endpoint.violations[-1]
    gone = EventBusV2Sink(client_for(endpoint.url), BUS_ARN.replace("local", "gone"))
    [missing] = gone.send([wire])
    assert (missing.kind, missing.code, missing.hold) == (
        Kind.RETRY,
        "ResourceNotFoundException",
        True,
    )
    unreachable = EventBusV2Sink(client_for("http://127.0.0.1:9"), BUS_ARN)
    [down] = unreachable.send([wire])
    assert down.kind is Kind.RETRY and down.hold and down.code == "EndpointConnectionError"


def test_request_of_1_mib_is_taken_and_one_byte_more_refused(endpoint: LocalEventBusV2) -> None:
    sink = EventBusV2Sink(client_for(endpoint.url), BUS_ARN)
    base = {"Source": "s", "DetailType": "d", "SystemMetadata": {"DeduplicationId": "x"}}
    fixed = v2_entry_size({**base, "Detail": '{"a":""}'})
    filler = MIB - fixed
    entry = {**base, "Detail": '{"a":"' + "x" * filler + '"}'}
    assert v2_entry_size(entry) == MIB
    assert sink.send([entry])[0].kind is Kind.DELIVERED
    bigger = {**entry, "Detail": entry["Detail"].replace('"}', 'x"}')}
    assert sink.send([bigger])[0].code == "InvalidInputException"


def test_start_up_check(endpoint: LocalEventBusV2) -> None:
    client = client_for(endpoint.url)
    assert check_event_bus_v2(client, BUS_ARN) is None
    missing = check_event_bus_v2(client, BUS_ARN.replace("local", "gone"))
    assert missing is not None and "does not exist" in missing[0] and not missing[1]
    creating = check_event_bus_v2(client, OTHER_ARN)
    assert creating == (f"event bus {OTHER_ARN} is CREATING, not ACTIVE", True)
    endpoint.buses[OTHER_ARN] = "DELETE_FAILED"
    assert check_event_bus_v2(client, OTHER_ARN) == (
        f"event bus {OTHER_ARN} is DELETE_FAILED, not ACTIVE",
        False,
    )

    class Refusing:
        def describe_event_bus(self, *, EventBusArn: str) -> dict[str, Any]:
            error = {"Error": {"Code": "AccessDeniedException", "Message": "no"}}
            raise ClientError(error, "DescribeEventBus")  # type: ignore[arg-type]

    refused = check_event_bus_v2(Refusing(), BUS_ARN)
    assert refused is not None and "events:DescribeEventBus" in refused[0] and not refused[1]

    class Down:
        def describe_event_bus(self, *, EventBusArn: str) -> dict[str, Any]:
            raise EndpointConnectionError(endpoint_url="http://x")

    down = check_event_bus_v2(Down(), BUS_ARN)
    assert down is not None and down[1]


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "Source": st.text(min_size=1, max_size=20),
                "DetailType": st.text(min_size=1, max_size=20),
                "Detail": st.text(max_size=50),
                "Resources": st.lists(st.text(max_size=10), max_size=3),
                "SystemMetadata": st.fixed_dictionaries(
                    {"EventGroupId": st.text(min_size=1, max_size=9)},
                    optional={"DeduplicationId": st.text(min_size=1, max_size=9)},
                ),
            },
            optional={"Time": st.just("2026-01-01T00:00:00Z")},
        ),
        max_size=5,
    )
)
def test_the_endpoint_counts_sizes_as_the_bridge_does(entries: list[dict[str, Any]]) -> None:
    assert v2_request_size("PutEvents", entries) == sum(v2_entry_size(e) for e in entries)


def test_a_literal_id_over_128_characters_is_refused_at_load() -> None:
    with pytest.raises(ConfigError) as info:
        v2_config({"event_group_id": "g" * 129})
    assert "mappings[0].event_group_id: 129 characters; 1 to 128" in str(info.value)

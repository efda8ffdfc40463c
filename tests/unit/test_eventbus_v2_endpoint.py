"""The local Custom Event Bus (testbed/eventbus_v2.py): smithy-rpc-v2-cbor, its checks, the
deduplication window, sequence numbers and the admin API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import cbor2
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from testbed.eventbus_v2 import BUS_ARN, LocalEventBusV2

CREATING = "arn:aws:events:us-east-1:000000000000:event-busv2/new/zzzzzzzzzzzzzzzzzzzzzzzzz"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bus(clock: Clock) -> Iterator[LocalEventBusV2]:
    with LocalEventBusV2(buses={CREATING: "CREATING"}, dedup_window_s=300, clock=clock) as ep:
        yield ep


def client(bus: LocalEventBusV2) -> Any:
    return boto3.client(
        "eventbridgev2",
        endpoint_url=bus.url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )


def entry(dedup: str, group: str = "g") -> dict[str, Any]:
    return {
        "Source": "s",
        "DetailType": "d",
        "Detail": "{}",
        "SystemMetadata": {"EventGroupId": group, "DeduplicationId": dedup},
    }


def error_of(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_the_bus_checks_arn_state_and_limits(bus: LocalEventBusV2) -> None:
    c = client(bus)
    bad_arn = "arn:aws:events:us-east-1:000000000000:event-bus/default"
    assert error_of(lambda: c.put_events(EventBusArn=bad_arn, Entries=[entry("a")])) == (
        "InvalidInputException",
        400,
    )
    assert error_of(lambda: c.put_events(EventBusArn=CREATING, Entries=[entry("a")])) == (
        "InvalidStateException",
        409,
    )
    many = [entry(str(i)) for i in range(101)]
    assert error_of(lambda: c.put_events(EventBusArn=BUS_ARN, Entries=many))[0] == (
        "InvalidInputException"
    )
    big = [{**entry(str(i)), "Detail": json.dumps({"x": "y" * 200_000})} for i in range(6)]
    assert error_of(lambda: c.put_events(EventBusArn=BUS_ARN, Entries=big))[0] == (
        "InvalidInputException"
    )
    assert len(bus.violations) == 2 and not bus.received()
    answer = c.put_events(
        EventBusArn=BUS_ARN,
        Entries=[entry("ok"), {**entry("x"), "Source": "aws.s3"}, {**entry("y"), "Detail": "[]"}],
    )
    assert [e.get("ErrorCode") for e in answer["Entries"]] == [
        None,
        "InvalidInputException",
        "MalformedDetail",
    ]


def test_raw_events_content_types_registry_and_metadata(bus: LocalEventBusV2) -> None:
    c = client(bus)

    def raw(content_type: str, **extra: Any) -> dict[str, Any]:
        data = {"Data": b"\x00\x00\x00\x00\x01x", "SystemMetadata": {"ContentType": content_type}}
        return data | extra

    answer = c.put_raw_events(
        EventBusArn=BUS_ARN,
        Entries=[
            raw("application/octet-stream"),
            raw("application/avro"),  # no SchemaRegistryConfiguration on the request
            raw("application/octet-stream", Metadata={"a/b": "c"}),
        ],
    )
    assert [e.get("ErrorCode") for e in answer["Entries"]] == [
        None,
        "InvalidInputException",
        "InvalidInputException",
    ]
    registry = {"RegistryUri": "arn:aws:glue:us-east-1:123456789012:registry/r"}
    answer = c.put_raw_events(
        EventBusArn=BUS_ARN, Entries=[raw("application/avro")], SchemaRegistryConfiguration=registry
    )
    assert answer["Entries"][0]["SuccessCode"] == "PUBLISHED"
    assert bus.received()[-1].schema_registry == registry


def test_deduplication_window_and_sequences_per_group(bus: LocalEventBusV2, clock: Clock) -> None:
    c = client(bus)
    first = c.put_events(EventBusArn=BUS_ARN, Entries=[entry("a"), entry("b"), entry("c", "h")])
    assert [e["SequenceNumber"] for e in first["Entries"]] == ["1", "2", "1"]
    clock.now = 299.0
    again = c.put_events(EventBusArn=BUS_ARN, Entries=[entry("a")])["Entries"][0]
    assert again == {
        "EventId": first["Entries"][0]["EventId"],
        "SequenceNumber": "1",
        "SuccessCode": "DEDUPLICATED",
    }
    clock.now = 301.0  # past the window: published again
    later = c.put_events(EventBusArn=BUS_ARN, Entries=[entry("a")])["Entries"][0]
    assert later["SuccessCode"] == "PUBLISHED" and later["SequenceNumber"] == "3"
    assert bus.group_order() == {"g": ["a", "b", "a"], "h": ["c"]}
    content = c.put_events(
        EventBusArn=BUS_ARN,
        Entries=[{"Source": "s", "DetailType": "d", "Detail": '{"k": 1}'}] * 2,
        DeduplicationConfiguration={"DeduplicationType": "CONTENT_BASED"},
    )
    assert [e["SuccessCode"] for e in content["Entries"]] == ["PUBLISHED", "DEDUPLICATED"]


def test_protocol_headers_and_admin_api(bus: LocalEventBusV2) -> None:
    url = f"{bus.url}/service/AWSEventsV2/operation/PutEvents"
    body = cbor2.dumps({"EventBusArn": BUS_ARN, "Entries": [entry("z")]})
    plain = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/cbor"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(plain, timeout=5)
    assert info.value.code == 400
    assert info.value.headers["Content-Type"] == "application/cbor"
    assert cbor2.loads(info.value.read())["__type"] == "InvalidInputException"
    good = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"},
        method="POST",
    )
    with urllib.request.urlopen(good, timeout=5) as answer:
        assert answer.headers["smithy-protocol"] == "rpc-v2-cbor"
        assert cbor2.loads(answer.read())["Entries"][0]["SuccessCode"] == "PUBLISHED"
    with urllib.request.urlopen(f"{bus.url}/_admin/groups", timeout=5) as groups:
        assert json.loads(groups.read()) == {"g": ["z"]}
    with urllib.request.urlopen(f"{bus.url}/_admin/stats", timeout=5) as stats:
        assert json.loads(stats.read())["entries_received"] == 1
    bus.set_faults(outage=True)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(good, timeout=5)

"""The lean client sends what boto3 sends, signed as boto3 signs, and fails as boto3 fails."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.local.endpoint import Faults, LocalEventBridge
from bridge.sink.eventbridge import EventBridgeSink
from bridge.sink.lean import LeanEventsClient, serialize
from bridge.sink.outcome import Kind


def boto_client(url: str = "http://127.0.0.1:9") -> Any:
    return boto3.client(
        "events",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
    )


def lean(url: str = "http://127.0.0.1:9") -> LeanEventsClient:
    client = boto_client(url)
    return LeanEventsClient(client, client._request_signer._credentials, 4, 2.0, 2.0)


def botocore_body(entries: list[dict[str, Any]]) -> bytes:
    client = boto_client()
    model = client.meta.service_model.operation_model("PutEvents")
    body: bytes = client._serializer.serialize_to_request({"Entries": entries}, model)["body"]
    return body


texts = st.text(min_size=1, max_size=40)
entries = st.lists(
    st.fixed_dictionaries(
        {
            "Source": texts,
            "DetailType": texts,
            "Detail": st.dictionaries(texts, st.integers() | texts, max_size=3).map(json.dumps),
        },
        optional={
            "Resources": st.lists(texts, max_size=3),
            "EventBusName": texts,
            "TraceHeader": texts,
            "Time": st.datetimes(
                min_value=datetime(1971, 1, 1),
                max_value=datetime(2100, 1, 1),
                timezones=st.just(UTC),
            ),
        },
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=150, deadline=None)
@given(entries)
def test_body_is_byte_for_byte_what_botocore_serializes(batch: list[dict[str, Any]]) -> None:
    assert serialize(batch) == botocore_body(batch)


def test_signature_is_botocores_for_the_same_request() -> None:
    client = lean()
    body = serialize([{"Source": "s", "DetailType": "d", "Detail": "{}"}])
    fixed = datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)
    with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
        ours = client.signed_headers("PutEvents", body)
        expected = AWSRequest(
            method="POST",
            url="http://127.0.0.1:9/",
            data=body,
            headers={
                "X-Amz-Target": "AWSEvents.PutEvents",
                "Content-Type": "application/x-amz-json-1.1",
            },
        )
        creds = boto_client()._request_signer._credentials.get_frozen_credentials()
        SigV4Auth(creds, "events", "us-east-1").add_auth(expected)
    assert ours["Authorization"] == expected.headers["Authorization"]
    assert ours["X-Amz-Date"] == "20261124T030405Z"
    assert ours["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261124/us-east-1/events/aws4_request"
    )


def test_answers_and_failures_match_boto3_against_a_real_endpoint() -> None:
    with LocalEventBridge(seed=1) as endpoint:
        ours, theirs = lean(endpoint.url), boto_client(endpoint.url)
        batch = [
            {
                "Source": "s",
                "DetailType": "d",
                "Detail": '{"a": 1}',
                "Time": datetime(2026, 1, 1, tzinfo=UTC),
            }
        ] * 3
        assert len(ours.put_events(Entries=batch)["Entries"]) == 3
        assert [r.entry for r in endpoint.received()][:3] == [{**batch[0], "Time": 1767225600}] * 3
        endpoint.set_faults(Faults(per_entry_failures={"ThrottlingException": 1.0}))
        got = ours.put_events(Entries=batch)
        assert got["FailedEntryCount"] == 3
        assert {e["ErrorCode"] for e in got["Entries"]} == {"ThrottlingException"}
        for code, status in (("InternalException", 500), ("ThrottlingException", 400)):
            endpoint.set_faults(Faults(call_error_rate=1.0, call_error_code=code))
            errors = []
            for client in (ours, theirs):
                with pytest.raises(ClientError) as caught:
                    client.put_events(Entries=batch)
                errors.append(caught.value.response)
            assert {e["Error"]["Code"] for e in errors} == {code}
            assert {e["ResponseMetadata"]["HTTPStatusCode"] for e in errors} == {status}
        endpoint.set_faults(Faults(outage=True))
        with pytest.raises(ConnectionClosedError):
            ours.put_events(Entries=batch)
        endpoint.set_faults(Faults())
        assert ours.describe_event_bus(Name="default")["Name"] == "default"
    with pytest.raises(EndpointConnectionError):
        ours.put_events(Entries=batch)


def test_partner_events_and_the_sink_on_top() -> None:
    with LocalEventBridge() as endpoint:
        client = lean(endpoint.url)
        entry = {"Source": "aws.partner/x.com/1/t", "DetailType": "d", "Detail": "{}"}
        sink = EventBridgeSink(client, "put_partner_events")
        assert [o.kind for o in sink.send([entry] * 12)] == [Kind.DELIVERED] * 12
        assert [c.operation for c in endpoint.calls()] == ["PutPartnerEvents"]

"""The lean client sends what boto3 sends, signed as boto3 signs, and fails as boto3 fails."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lean_support import Started

from bridge.sink.calls import ThreadedCalls
from bridge.sink.eventbridge import EventBridgeSink
from bridge.sink.lean import (
    CONTENT_TYPE,
    FreshCredentials,
    LeanCalls,
    LeanEventsClient,
    serialize,
)
from bridge.sink.outcome import Kind
from bridge.sink.sigv4 import JsonPostSigner
from testbed.endpoint import Faults, LocalEventBridge


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
# ASCII with DEL and control characters (the fast escaper's path) as often as any text.
ascii_texts = st.text(st.characters(max_codepoint=127), min_size=1, max_size=40)
any_texts = texts | ascii_texts
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
times = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.none() | st.just(UTC) | st.builds(timezone, offsets),
)
entries = st.lists(
    st.fixed_dictionaries(
        {
            "Source": any_texts,
            "DetailType": any_texts,
            "Detail": st.dictionaries(any_texts, st.integers() | any_texts, max_size=3).map(
                lambda d: json.dumps(d, ensure_ascii=False)
            ),
        },
        optional={
            "Resources": st.lists(any_texts, max_size=3),
            "EventBusName": any_texts,
            "TraceHeader": any_texts,
            "Time": times,
        },
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=300, deadline=None)
@given(entries)
@example([{"Source": "s\x7f", "DetailType": "\x00\x1f\u2028é", "Detail": '{"a":"😀"}'}])
@example(
    [{"Source": "s", "DetailType": "d", "Detail": "{}", "Time": datetime(2024, 5, 6, 7, 8, 9)}]
)
@example(
    [
        {
            "Source": "s",
            "DetailType": "d",
            "Detail": "{}",
            "Time": datetime(2024, 5, 6, 7, 8, 9, 3691, tzinfo=timezone(timedelta(hours=2))),
        }
    ]
)
def test_body_is_byte_for_byte_what_botocore_serializes(batch: list[dict[str, Any]]) -> None:
    assert serialize(batch) == botocore_body(batch)


def test_event_time_with_an_offset_is_sent_as_the_same_instant() -> None:
    # Was sent two hours off: the offset was ignored (timegm of the local fields).
    paris = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    body = json.loads(
        serialize([{"Source": "s", "DetailType": "d", "Detail": "{}", "Time": paris}])
    )
    assert body["Entries"][0]["Time"] == paris.timestamp() == 1714972089


def test_signature_is_botocores_for_the_same_request() -> None:
    client = lean()
    body = serialize([{"Source": "s", "DetailType": "d", "Detail": "{}"}])
    fixed = datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)
    ours = client.signed_headers("PutEvents", body, fixed)
    expected = botocore_signed(
        boto_client()._request_signer._credentials.get_frozen_credentials(),
        "http://127.0.0.1:9/",
        "us-east-1",
        "PutEvents",
        body,
        fixed,
    )
    assert ours == expected
    assert ours["X-Amz-Date"] == "20261124T030405Z"
    assert ours["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261124/us-east-1/events/aws4_request"
    )


def botocore_signed(
    credentials: Any, url: str, region: str, operation: str, body: bytes, when: datetime
) -> dict[str, str]:
    """The headers botocore's SigV4Auth leaves on the request the lean client sends."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"X-Amz-Target": f"AWSEvents.{operation}", "Content-Type": CONTENT_TYPE},
    )
    naive_utc = when.astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive_utc):
        SigV4Auth(credentials, "events", region).add_auth(request)
    return dict(request.headers.items())


hosts = st.sampled_from(
    ["events.us-east-1.amazonaws.com", "Events.EU-West-1.amazonaws.com", "127.0.0.1", "[::1]"]
)
urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https"]),
    hosts,
    st.sampled_from(["", ":80", ":443", ":4010"]),
    st.sampled_from(["/", "/a/b/", "/a b/./c/../d/", "/%7Euser/"]),
)
secrets = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    access_key=st.text(st.characters(min_codepoint=48, max_codepoint=90), min_size=1, max_size=20),
    secret=secrets,
    token=st.none() | st.just("") | st.text(min_size=1, max_size=30) | st.just(" a  b "),
    region=st.sampled_from(["us-east-1", "eu-west-1", "cn-north-1", "local"]),
    url=urls,
    operation=st.sampled_from(["PutEvents", "PutPartnerEvents"]),
    body=st.binary(max_size=300),
    when=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_signed_headers_are_botocores_for_any_request(
    access_key: str,
    secret: str,
    token: str | None,
    region: str,
    url: str,
    operation: str,
    body: bytes,
    when: datetime,
) -> None:
    credentials = ReadOnlyCredentials(access_key, secret, token)
    signer = JsonPostSigner(url, region, "events", CONTENT_TYPE)
    ours = signer.headers(credentials, f"AWSEvents.{operation}", body, when)
    assert ours == botocore_signed(credentials, url, region, operation, body, when)
    # the same signer again, its signing key cached, and for a second day
    again = signer.headers(credentials, f"AWSEvents.{operation}", body, when)
    assert again == ours
    later = when + timedelta(days=1)
    assert signer.headers(credentials, f"AWSEvents.{operation}", body, later) == (
        botocore_signed(credentials, url, region, operation, body, later)
    )


def test_the_host_sent_is_the_host_signed() -> None:
    assert JsonPostSigner(
        "https://Events.us-east-1.amazonaws.com:443/", "r", "events", "x"
    ).host == ("events.us-east-1.amazonaws.com")
    assert JsonPostSigner("http://127.0.0.1:4010/", "r", "events", "x").host == "127.0.0.1:4010"


@pytest.mark.parametrize("how", ["blocking", "started"])
def test_answers_and_failures_match_boto3_against_a_real_endpoint(how: str) -> None:
    with LocalEventBridge(seed=1) as endpoint:
        ours = lean(endpoint.url) if how == "blocking" else Started(lean(endpoint.url))
        theirs = boto_client(endpoint.url)
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


def test_the_sinks_calls_run_at_once_from_one_thread_with_an_outcome_per_entry() -> None:
    entry = {"Source": "s", "DetailType": "d", "Detail": "{}"}
    with LocalEventBridge(faults=Faults(latency_ms=300)) as endpoint:
        client = lean(endpoint.url)
        calls = EventBridgeSink(client).calls(8)
        assert isinstance(calls, LeanCalls)
        started = time.monotonic()
        for n in range(8):
            calls.start(n, [entry] * (n + 1))
        done: dict[int, list[Any]] = {}
        while len(done) < 8 and time.monotonic() - started < 10:
            calls.wait(1.0)
            done.update(calls.finished())
        took = time.monotonic() - started
        assert {n: [o.kind for o in done[n]] for n in done} == {
            n: [Kind.DELIVERED] * (n + 1) for n in range(8)
        }
        assert took < 0.3 * 3, f"8 calls of 0.3 s each took {took:.2f} s: not at once"
        assert len(endpoint.received()) == sum(range(1, 9))
        endpoint.set_faults(Faults(outage=True))
        calls.start(9, [entry] * 2)
        while not (failed := calls.finished()):
            calls.wait(1.0)
        [(call, outcomes)] = failed
        assert call == 9 and len(outcomes) == 2
        assert all(o.kind is Kind.RETRY and o.hold and o.whole_call for o in outcomes), outcomes
        calls.close()
    # the boto3 client (or a global endpoint) keeps a pool of threads around send()
    assert isinstance(EventBridgeSink(boto_client()).calls(2), ThreadedCalls)


class Expiring:
    """botocore-like refreshable credentials whose refresh can take long or fail."""

    def __init__(self) -> None:
        self.frozen = ReadOnlyCredentials("AKID1", "secret", None)
        self.refresh_takes = 0.0
        self.error: Exception | None = None
        self.reads = 0

    def refresh_needed(self) -> bool:
        return self.refresh_takes > 0

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        self.reads += 1
        time.sleep(self.refresh_takes)
        if self.error is not None:
            raise self.error
        return self.frozen


def test_credentials_are_refreshed_off_the_calling_thread_and_their_failure_is_raised() -> None:
    credentials = Expiring()
    fresh = FreshCredentials(credentials, every_s=0.05)
    try:
        assert fresh.get().access_key == "AKID1"
        credentials.refresh_takes = 1.0  # STS slow to answer
        credentials.frozen = ReadOnlyCredentials("AKID2", "secret", None)
        time.sleep(0.1)
        before = time.monotonic()
        assert fresh.get().access_key == "AKID1"  # the last reading, at once
        assert time.monotonic() - before < 0.05
        deadline = time.monotonic() + 5
        while fresh.get().access_key != "AKID2" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fresh.get().access_key == "AKID2"
        credentials.refresh_takes = 0.0
        credentials.error = NoCredentialsError()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                fresh.get()
            except NoCredentialsError:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the failed refresh was never raised")
        credentials.error = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                assert fresh.get().access_key == "AKID2"
                break
            except NoCredentialsError:
                time.sleep(0.02)
    finally:
        fresh.close()
    reads = credentials.reads
    time.sleep(0.2)
    assert credentials.reads == reads, "the refreshing thread went on after close()"


def test_credentials_failing_when_a_call_starts_hold_its_entries() -> None:
    credentials = Expiring()
    client = LeanEventsClient(boto_client(), credentials, 2, 1.0, 1.0)
    calls = EventBridgeSink(client).calls(2)
    credentials.error = NoCredentialsError()  # e.g. the role's refresh failed for good
    calls.start(1, [{"Source": "s", "DetailType": "d", "Detail": "{}"}] * 3)
    [(call, outcomes)] = calls.finished()
    assert call == 1 and len(outcomes) == 3
    assert {(o.kind, o.code, o.hold) for o in outcomes} == {
        (Kind.RETRY, "NoCredentialsError", True)
    }
    calls.close()

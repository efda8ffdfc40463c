"""The new bus's lean client sends what boto3's ``eventbridgev2`` client sends (same URL, same
CBOR bytes, same signed headers), and answers and fails as it does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import boto3
import cbor2
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.config.load import config_from_dict
from bridge.sink.busv2 import EventBusV2Sink, make_eventsv2_client
from bridge.sink.calls import ThreadedCalls
from bridge.sink.lean_cbor import (
    LeanEventsV2Client,
    LeanV2Calls,
    operation_url,
    parse,
    serialize,
)
from bridge.sink.outcome import Kind
from bridge.sink.sigv4 import CBOR_CONTENT_TYPE, CborPostSigner
from bridge.sink.transport import Response
from testbed.base import Faults
from testbed.eventbus_v2 import BUS_ARN, LocalEventBusV2

ARN = "arn:aws:events:eu-west-1:123456789012:event-busv2/orders/abcdefghijklmnopqrstuvwxy"
NOT_SIGNED = {"user-agent", "amz-sdk-invocation-id", "amz-sdk-request", "content-length", "host"}
"""Headers boto3 sends that the lean client does not (none of them signed) or sends apart."""


def boto_client(url: str | None = "http://127.0.0.1:9", token: str | None = None) -> Any:
    return boto3.client(
        "eventbridgev2",
        region_name="us-east-1" if url else "eu-west-1",
        endpoint_url=url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1}),
    )


def lean(url: str | None = "http://127.0.0.1:9", arn: str = BUS_ARN, **kw: Any) -> Any:
    client = boto_client(url, **kw)
    return LeanEventsV2Client(client, client._request_signer._credentials, arn, 4, 2.0, 2.0)


# -- requests as botocore makes them --------------------------------------------------------


class _Raw:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


class Captured:
    """boto3's client, its request caught just before sending (signed), answered locally."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.request: Any = None
        client.meta.events.register("before-send", self._capture)

    def _capture(self, request: Any, **_: Any) -> AWSResponse:
        self.request = request
        answer = cbor2.dumps({"FailedEntryCount": 0, "Entries": []})
        return AWSResponse(request.url, 200, {"Content-Type": CBOR_CONTENT_TYPE}, _Raw(answer))

    def send(
        self, operation: str, params: dict[str, Any], when: datetime
    ) -> tuple[str, dict[str, str], bytes]:
        method = "put_raw_events" if operation == "PutRawEvents" else "put_events"
        aware = when.astimezone(UTC)

        def now(remove_tzinfo: bool = True) -> datetime:
            return aware.replace(tzinfo=None) if remove_tzinfo else aware

        # botocore signs with awscrt's SigV4 when awscrt is installed (the dev extra), else
        # with its own SigV4Auth: the clock of both is fixed.
        with (
            mock.patch("botocore.auth.get_current_datetime", now),
            mock.patch("botocore.crt.auth.get_current_datetime", now),
        ):
            getattr(self.client, method)(**params)
        request = self.request
        headers = {
            name: value.decode() if isinstance(value, bytes) else value
            for name, value in request.headers.items()
        }
        return request.url, headers, request.body


def botocore_body(operation: str, params: dict[str, Any]) -> bytes:
    """botocore's RpcV2CBORSerializer itself, without the parameter validation in front of it
    (which refuses ``None`` members; the serializer leaves them out)."""
    client = boto_client()
    model = client.meta.service_model.operation_model(operation)
    body: bytes = client._serializer._serializer.serialize_to_request(params, model)["body"]
    return body


def without_none(value: Any) -> Any:
    """A request boto3's validation takes: no ``None`` members (nor structures left empty)."""
    if isinstance(value, dict):
        kept = {k: without_none(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in kept.items() if v != {} or k == "Metadata"}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


texts = st.text(min_size=1, max_size=30)
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23))
datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.none() | st.just(UTC) | st.builds(timezone, offsets),
)
# What botocore also takes for a timestamp: epoch seconds and ISO 8601 text (the slow path).
times = (
    datetimes
    | st.integers(min_value=0, max_value=4_102_444_800)
    | st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.isoformat() + "Z"
    )
)
system = st.fixed_dictionaries(
    {}, optional={"EventGroupId": texts, "DeduplicationId": st.none() | texts}
)
put_events_entry = st.fixed_dictionaries(
    {"Source": texts, "DetailType": texts},
    optional={
        "Detail": st.text(max_size=200),
        "Resources": st.lists(texts, max_size=3),
        "Time": times | st.none(),
        "SystemMetadata": system,
    },
)
raw_entry = st.fixed_dictionaries(
    {
        "Data": st.binary(max_size=300) | st.text(max_size=50) | st.binary().map(bytearray),
        "SystemMetadata": st.fixed_dictionaries(
            {
                "ContentType": st.sampled_from(
                    ["application/json", "application/avro", "application/octet-stream"]
                )
            },
            optional={"EventGroupId": texts, "DeduplicationId": texts},
        ),
    },
    optional={
        "Metadata": st.dictionaries(
            st.text(st.characters(blacklist_characters="/"), min_size=1, max_size=10),
            texts,
            max_size=4,
        )
    },
)
dedup = st.just({"DeduplicationType": "CONTENT_BASED"})
registry = st.fixed_dictionaries(
    {"RegistryUri": st.just("https://registry.example.com")},
    optional={
        "ConfluentPublicRegistryConfiguration": st.fixed_dictionaries(
            {"ConnectionArn": st.none() | st.just("arn:c")}
        )
    },
)


def _request(operation: str) -> Any:
    entry = put_events_entry if operation == "PutEvents" else raw_entry
    optional: dict[str, Any] = {"DeduplicationConfiguration": dedup}
    if operation == "PutRawEvents":
        optional["SchemaRegistryConfiguration"] = registry
    return st.fixed_dictionaries(
        {"Entries": st.lists(entry, min_size=1, max_size=12), "EventBusArn": st.just(BUS_ARN)},
        optional=optional,
    )


requests = st.sampled_from(["PutEvents", "PutRawEvents"]).flatmap(
    lambda op: st.tuples(st.just(op), _request(op))
)


@settings(max_examples=400, deadline=None)
@given(requests)
@example(
    (
        "PutEvents",
        {
            "Entries": [
                {
                    "Source": "s\x7f",
                    "DetailType": "\x00é😀",
                    "Detail": "{}",
                    "Time": datetime(
                        2024, 5, 6, 7, 8, 9, 3691, tzinfo=timezone(timedelta(hours=2))
                    ),
                    "SystemMetadata": {"EventGroupId": "g", "DeduplicationId": "x" * 300},
                }
            ]
            * 30,
            "EventBusArn": BUS_ARN,
        },
    )
)
def test_body_is_byte_for_byte_what_botocore_serializes(request_: tuple[str, Any]) -> None:
    operation, params = request_
    try:
        expected = botocore_body(operation, params)
    except UnicodeEncodeError:  # a lone surrogate: text CBOR cannot carry; botocore fails too
        with pytest.raises(UnicodeEncodeError):
            serialize(params)
        return
    assert serialize(params) == expected


def test_the_mappers_entries_take_the_fast_path_and_others_are_rewritten() -> None:
    fast = {"Source": "s", "DetailType": "d", "Detail": "{}", "Time": datetime(2026, 1, 1)}
    params = {"Entries": [fast], "EventBusArn": BUS_ARN}
    with mock.patch("bridge.sink.lean_cbor._structure") as rewrite:
        rewrite.side_effect = AssertionError("rewritten")
        assert cbor2.loads(serialize(params))["Entries"][0]["Time"] == datetime(
            2026, 1, 1, tzinfo=UTC
        )
    slow = {"Entries": [{**fast, "Time": 1767225600, "Resources": None}], "EventBusArn": BUS_ARN}
    assert cbor2.loads(serialize(slow))["Entries"][0] == {
        "Source": "s",
        "DetailType": "d",
        "Detail": "{}",
        "Time": datetime(2026, 1, 1, tzinfo=UTC),
    }


# -- the signature ---------------------------------------------------------------------------


def botocore_signed(
    credentials: Any, url: str, region: str, body: bytes, when: datetime
) -> dict[str, str]:
    """What SigV4Auth leaves on a request with RpcV2CBORSerializer's headers."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "smithy-protocol": "rpc-v2-cbor",
            "Accept": CBOR_CONTENT_TYPE,
            "Content-Type": CBOR_CONTENT_TYPE,
        },
    )
    naive_utc = when.astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=naive_utc):
        SigV4Auth(credentials, "events", region).add_auth(request)
    return dict(request.headers.items())


bases = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(
        [
            "eventsv2.us-east-1.amazonaws.com",
            "123456789012.Eventsv2.EU-west-1.amazonaws.com",
            "127.0.0.1",
            "[::1]",
        ]
    ),
    st.sampled_from(["", ":80", ":443", ":4011"]),
    st.sampled_from(["", "/", "/a/b", "/a b/./c/../d/", "/%7Euser/"]),
)
secrets = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    access_key=st.text(st.characters(min_codepoint=48, max_codepoint=90), min_size=1, max_size=20),
    secret=secrets,
    token=st.none() | st.just("") | st.text(min_size=1, max_size=30) | st.just(" a  b "),
    region=st.sampled_from(["us-east-1", "eu-west-1", "cn-north-1", "local"]),
    base=bases,
    operation=st.sampled_from(["PutEvents", "PutRawEvents"]),
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
    base: str,
    operation: str,
    body: bytes,
    when: datetime,
) -> None:
    credentials = ReadOnlyCredentials(access_key, secret, token)
    url = operation_url(base, "AWSEventsV2", operation)
    signer = CborPostSigner(url, region, "events")
    ours = signer.headers(credentials, body, when)
    assert ours == botocore_signed(credentials, url, region, body, when)
    later = when + timedelta(days=1)  # the cached signing key, then another day's
    assert signer.headers(credentials, body, when) == ours
    assert signer.headers(credentials, body, later) == botocore_signed(
        credentials, url, region, body, later
    )


def test_operation_url_joins_as_botocore() -> None:
    assert operation_url("https://h", "P", "Op") == "https://h/service/P/operation/Op"
    assert operation_url("https://h/", "P", "Op") == "https://h/service/P/operation/Op"
    assert (
        operation_url("http://h:1/x/?q=1", "P", "Op") == "http://h:1/x/service/P/operation/Op?q=1"
    )


# -- the whole request, against boto3's own client -------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    request_=requests,
    token=st.none() | st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
    when=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    endpoint=st.sampled_from(["http://127.0.0.1:4011", None]),
)
def test_url_body_and_signed_headers_are_boto3s_for_the_same_call(
    request_: tuple[str, Any], token: str | None, when: datetime, endpoint: str | None
) -> None:
    operation, params = request_
    params = without_none({**params, "EventBusArn": ARN})
    ours = lean(endpoint, ARN, token=token)
    url, headers, body = Captured(boto_client(endpoint, token=token)).send(operation, params, when)
    assert body == serialize(params)
    assert url == ours._pool._origin + ours.path(operation)
    signed = ours.signed_headers(operation, body, when)
    assert signed == {k: v for k, v in headers.items() if k.lower() not in NOT_SIGNED}
    assert headers.get("host", url.split("/")[2]) == ours._ops[operation][1].host


def test_without_an_endpoint_url_the_bus_arns_account_is_the_host() -> None:
    ours = lean(None, ARN)
    assert ours._pool.url == (
        "https://123456789012.eventsv2.eu-west-1.amazonaws.com/service/AWSEventsV2/operation/"
        "PutRawEvents"
    )
    assert ours.path("PutEvents") == "/service/AWSEventsV2/operation/PutEvents"
    with pytest.raises(ValueError, match="sends to"):
        ours.put_events(Entries=[], EventBusArn=BUS_ARN)


# -- answers -------------------------------------------------------------------------------


def test_error_answers_parse_as_botocores() -> None:
    def answer(status: int, body: Any, raw: bytes | None = None) -> Response:
        return Response(
            status, {"x-amzn-requestid": "r1"}, raw if raw is not None else cbor2.dumps(body)
        )

    with pytest.raises(ClientError) as caught:
        parse(
            "PutEvents",
            answer(429, {"__type": "com.amazon#ThrottlingException:x", "message": "slow"}),
        )
    assert caught.value.response["Error"] == {"Code": "ThrottlingException", "Message": "slow"}
    meta = caught.value.response["ResponseMetadata"]
    assert (meta["HTTPStatusCode"], meta["RequestId"]) == (429, "r1")
    with pytest.raises(ClientError) as caught:
        parse("PutEvents", answer(503, None, b"<html>Service Unavailable</html>"))
    assert caught.value.response["Error"] == {"Code": "503", "Message": "Service Unavailable"}
    with pytest.raises(ClientError) as caught:
        parse("PutEvents", answer(400, {"Message": "no type"}))
    assert caught.value.response["Error"] == {"Code": "400", "Message": "no type"}
    with pytest.raises(ConnectionClosedError):
        parse("PutEvents", answer(200, None, b"\xff\xff"))
    with pytest.raises(ConnectionClosedError):
        parse("PutEvents", answer(200, [1, 2]))
    ok = parse("PutEvents", answer(200, {"FailedEntryCount": 0, "Entries": [{"EventId": "e"}]}))
    assert ok["Entries"] == [{"EventId": "e"}] and ok["ResponseMetadata"]["RequestId"] == "r1"


class Started:
    """put_events / put_raw_events through start() and finished(), as the pipeline makes them."""

    def __init__(self, client: LeanEventsV2Client) -> None:
        self.client = client

    def put_events(self, **params: Any) -> dict[str, Any]:
        return self._call("PutEvents", params)

    def put_raw_events(self, **params: Any) -> dict[str, Any]:
        return self._call("PutRawEvents", params)

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        self.client.start("call", operation, params)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = self.client.finished()
            if done:
                [(token, result)] = done
                assert token == "call"
                if isinstance(result, Exception):
                    raise result
                return result
            self.client.wait(0.5)
        raise AssertionError("no answer in 30 s")


ENTRY = {
    "Source": "s",
    "DetailType": "d",
    "Detail": '{"a": 1}',
    "Time": datetime(2026, 1, 1, tzinfo=UTC),
    "SystemMetadata": {"EventGroupId": "g", "DeduplicationId": "d1"},
}


@pytest.mark.parametrize("how", ["blocking", "started"])
def test_answers_and_failures_match_boto3_against_the_cbor_endpoint(how: str) -> None:
    with LocalEventBusV2(seed=1) as bus:
        client = lean(bus.url)
        ours: Any = client if how == "blocking" else Started(client)
        theirs = boto_client(bus.url)
        params = {"Entries": [ENTRY] * 3, "EventBusArn": BUS_ARN}
        got = ours.put_events(**params)
        assert [e["SuccessCode"] for e in got["Entries"]] == ["PUBLISHED"] + ["DEDUPLICATED"] * 2
        assert bus.received()[0].entry == {**ENTRY, "Time": ENTRY["Time"]}
        raw = {"Data": b"\x00\x01", "SystemMetadata": {"ContentType": "application/octet-stream"}}
        got = ours.put_raw_events(Entries=[raw], EventBusArn=BUS_ARN)
        assert got["Entries"][0]["SuccessCode"] == "PUBLISHED"
        assert bus.received()[-1].entry["Data"] == b"\x00\x01"
        bus.set_faults(Faults(per_entry_failures={"ThrottlingException": 1.0}))
        got = ours.put_events(**params)
        assert {e["ErrorCode"] for e in got["Entries"]} == {"ThrottlingException"}
        for code in ("ThrottlingException", "InternalException", "AccessDeniedException"):
            bus.set_faults(Faults(call_error_rate=1.0, call_error_code=code))
            errors = []
            for each in (ours, theirs):
                with pytest.raises(ClientError) as caught:
                    each.put_events(**params)
                errors.append(caught.value.response)
            assert [e["Error"] for e in errors] == [errors[1]["Error"]] * 2
            assert errors[0]["Error"]["Code"] == code
            statuses = {e["ResponseMetadata"]["HTTPStatusCode"] for e in errors}
            assert len(statuses) == 1
        bus.set_faults(Faults())
        bus.buses[BUS_ARN] = "CREATING"
        with pytest.raises(ClientError) as caught:
            ours.put_events(**params)
        assert caught.value.response["Error"]["Code"] == "InvalidStateException"
        bus.buses[BUS_ARN] = "ACTIVE"
        bus.set_faults(Faults(outage=True))
        with pytest.raises(ConnectionClosedError):
            ours.put_events(**params)
        bus.set_faults(Faults())
        assert client.describe_event_bus(EventBusArn=BUS_ARN)["State"] == "ACTIVE"
    with pytest.raises(EndpointConnectionError):
        ours.put_events(**params)
    client.close()


def test_the_sinks_calls_run_from_one_thread_a_mixed_batch_as_two_requests() -> None:
    raw = {"Data": b"x", "SystemMetadata": {"ContentType": "application/octet-stream"}}
    with LocalEventBusV2(faults=Faults(latency_ms=300)) as bus:
        sink = EventBusV2Sink(lean(bus.url), BUS_ARN)
        calls = sink.calls(8)
        assert isinstance(calls, LeanV2Calls)
        began = time.monotonic()
        for n in range(6):
            entry = {**ENTRY, "SystemMetadata": {"DeduplicationId": f"d{n}"}}
            calls.start(
                n,
                [
                    entry,
                    {
                        **raw,
                        "SystemMetadata": {**raw["SystemMetadata"], "DeduplicationId": f"r{n}"},
                    },
                ],
            )
        done: dict[int, Any] = {}
        while len(done) < 6 and time.monotonic() - began < 10:
            calls.wait(1.0)
            done.update(calls.finished())
        took = time.monotonic() - began
        assert {n: [o.kind for o in done[n]] for n in done} == {
            n: [Kind.DELIVERED] * 2 for n in range(6)
        }
        assert took < 0.3 * 3, f"12 requests of 0.3 s took {took:.2f} s: not at once"
        assert sorted(c.operation for c in bus.calls()) == ["PutEvents"] * 6 + ["PutRawEvents"] * 6
        bus.set_faults(Faults(per_entry_failures={"InternalException": 1.0}))
        calls.start(7, [{**ENTRY, "SystemMetadata": {"DeduplicationId": "x"}}, raw])
        while not (failed := calls.finished()):
            calls.wait(1.0)
        [(call, outcomes)] = failed
        assert call == 7 and [o.code for o in outcomes] == ["InternalException"] * 2
        bus.set_faults(Faults(outage=True))
        calls.start(8, [ENTRY])
        while not (failed := calls.finished()):
            calls.wait(1.0)
        [(call, [down])] = failed
        assert call == 8 and down.kind is Kind.RETRY and down.hold and down.whole_call
        calls.close()
    assert isinstance(EventBusV2Sink(boto_client(), BUS_ARN).calls(2), ThreadedCalls)


class NoMore:
    """Credentials whose refresh failed for good."""

    def refresh_needed(self) -> bool:
        return True

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        raise NoCredentialsError()


def test_credentials_failing_when_a_call_starts_hold_its_entries() -> None:
    client = LeanEventsV2Client(boto_client(), NoMore(), BUS_ARN, 2, 1.0, 1.0)
    calls = EventBusV2Sink(client, BUS_ARN).calls(2)
    calls.start(1, [ENTRY] * 3)
    [(call, outcomes)] = calls.finished()
    assert call == 1 and {(o.kind, o.code, o.hold) for o in outcomes} == {
        (Kind.RETRY, "NoCredentialsError", True)
    }
    calls.close()


@pytest.mark.parametrize(("setting", "lean_client"), [({}, True), ({"client": "boto3"}, False)])
def test_lean_is_the_default_and_boto3_the_fallback(
    setting: dict[str, Any], lean_client: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    config = config_from_dict(
        {
            "sink": "event_bus_v2",
            "kafka": {"bootstrap_servers": "127.0.0.1:9", "group_id": "g"},
            "aws": {
                "region": "us-east-1",
                "endpoint_url": "http://127.0.0.1:9",
                "event_bus_arn": BUS_ARN,
                **setting,
            },
            "mappings": [{"topic": "t", "source": "s", "detail_type": "d"}],
        }
    )
    client = make_eventsv2_client(config.aws, 4)
    assert isinstance(client, LeanEventsV2Client) is lean_client


def test_an_entry_utf8_cannot_carry_is_dead_lettered_and_its_neighbours_sent_again() -> None:
    """A JSON record's "\\ud800" decodes to a lone surrogate; CBOR text (and botocore) cannot
    encode it. Raised from the pipeline's thread it stopped the bridge, and the record stopped
    it again after every restart."""
    bad = {**ENTRY, "Detail": '{"x": "\ud800"}', "SystemMetadata": {"DeduplicationId": "b"}}
    good = {**ENTRY, "SystemMetadata": {"DeduplicationId": "g"}}
    with LocalEventBusV2() as bus:
        calls = EventBusV2Sink(lean(bus.url), BUS_ARN).calls(2)
        calls.start(1, [good, bad])
        [(call, [kept, dropped])] = calls.finished()
        assert call == 1
        assert (kept.kind, kept.code) == (Kind.RETRY, "NotSent")
        assert (dropped.kind, dropped.code) == (Kind.PERMANENT, "NotEncodable")
        assert "surrogate" in dropped.message and "\\ud800" in dropped.message
        assert bus.calls() == []  # nothing went out
        calls.close()

"""Alibaba Cloud EventBridge: signing, CloudEvents, and the client + sink against the local
endpoint over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import urllib3
from confluent_kafka import Message

from bridge.codes import alibaba_throttling
from bridge.config.load import config_from_dict
from bridge.errors import MappingError
from bridge.mapping.mapper import Mapper
from bridge.sink.alibaba import (
    AlibabaEventBridgeClient,
    AlibabaServiceError,
    AlibabaSink,
    AlibabaTransportError,
    classify_call_error,
    classify_entry,
    classify_response,
)
from bridge.sink.alibaba_wire import (
    PUT_EVENTS_PATH,
    authorization,
    cloud_event,
    encode_batch,
    event_size,
    format_time,
    signature,
    string_to_sign,
)
from bridge.sink.factory import make_client as make_sink_client
from bridge.sink.factory import make_sink
from bridge.sink.outcome import Kind
from testbed.alibaba_endpoint import LocalAlibabaEventBridge
from testbed.endpoint import Faults

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_ID = "testKeyId"
SECRET = "testSecret-Do-Not-Leak-42"

# -- signing: vectors from the official SDK ----------------------------------------------------


def test_signature_matches_the_sdk_unit_test_vector() -> None:
    # aliyun/alibabacloud-eventbridge-sdk util/python/tests/test_client.py, test_get_signature:
    # the string to sign of an empty GET is "GET\n\n\n\n"; keyed with "secret" it signs to this.
    assert string_to_sign("GET", "", {}) == "GET\n\n\n\n"
    assert signature("secret", "GET\n\n\n\n") == "Mzu+31oD5IDdv3WFBNIi4Y7JZto="


def test_string_to_sign_matches_the_sdk_unit_test_case() -> None:
    # Same file, test_get_string_to_sign: Accept is not signed, only x-acs* headers are, and the
    # query is sorted by name. (The SDK takes the query as a dict; here it is in the path.)
    headers = {
        "x-acs-meta": "user",
        "accept": "application/json",
        "content-md5": "md5",
        "content-type": "application/json",
        "date": "date",
    }
    expected = (
        "GET\nmd5\napplication/json\ndate\nx-acs-meta:user\nPathname?ccp=ok&test=tests&test1="
    )
    assert string_to_sign("GET", "Pathname?test=tests&test1=&ccp=ok", headers) == expected


PUT_HEADERS = {
    "date": "Sat, 18 Apr 2020 05:30:41 GMT",
    "host": "123456789098.eventbridge.cn-hangzhou.aliyuncs.com",
    "accept": "application/json",
    "content-type": "application/cloudevents-batch+json;charset=UTF-8",
    "x-eventbridge-version": "2020-04-01",
    "x-acs-signature-method": "HMAC-SHA1",
    "x-acs-signature-version": "1.0",
    "x-acs-signature-nonce": "3f9a1c1e-5b7d-4e0f-9c2a-6d8e7f1a2b3c",
    "user-agent": "kafka-eventbridge-bridge",
}
# Computed with alibabacloud-eventbridge-util 0.0.3 (the SDK's own get_string_to_sign and
# get_signature, util/python/alibabacloud_eventbridge_util/client.py) for POST /openapi/putEvents
# with PUT_HEADERS and the secret "testSecret".
SDK_PUT_STRING = (
    "POST\n\napplication/cloudevents-batch+json;charset=UTF-8\nSat, 18 Apr 2020 05:30:41 GMT\n"
    "x-acs-signature-method:HMAC-SHA1\nx-acs-signature-nonce:3f9a1c1e-5b7d-4e0f-9c2a-6d8e7f1a2b3c\n"
    "x-acs-signature-version:1.0\n/openapi/putEvents"
)
SDK_PUT_SIGNATURE = "od2EoQbVD5aRpaec9PyAqRSSudg="


def test_put_events_request_signs_like_the_sdk() -> None:
    assert string_to_sign("POST", PUT_EVENTS_PATH, PUT_HEADERS) == SDK_PUT_STRING
    assert signature("testSecret", SDK_PUT_STRING) == SDK_PUT_SIGNATURE
    assert (
        authorization("myKey", "testSecret", "POST", PUT_EVENTS_PATH, PUT_HEADERS)
        == f"acs:myKey:{SDK_PUT_SIGNATURE}"
    )


def test_string_to_sign_ignores_header_order_and_case_and_trims_values() -> None:
    shuffled = {
        ("X-ACS-Signature-Nonce" if k == "x-acs-signature-nonce" else k.title()): f" {v} "
        for k, v in reversed(list(PUT_HEADERS.items()))
    }
    assert string_to_sign("post", PUT_EVENTS_PATH, shuffled) == SDK_PUT_STRING


def test_unsigned_headers_do_not_change_the_string_but_signed_ones_do() -> None:
    extra = {**PUT_HEADERS, "x-eventbridge-regionid": "cn-hangzhou", "user-agent": "other"}
    assert string_to_sign("POST", PUT_EVENTS_PATH, extra) == SDK_PUT_STRING
    changed = {**PUT_HEADERS, "x-acs-security-token": "tok"}
    assert "x-acs-security-token:tok\n" in string_to_sign("POST", PUT_EVENTS_PATH, changed)
    with pytest.raises(ValueError, match="twice"):
        string_to_sign("POST", PUT_EVENTS_PATH, {"Date": "a", "date": "b"})


# -- CloudEvents ----------------------------------------------------------------------------------


def neutral(**extra: Any) -> dict[str, Any]:
    return {
        "Source": "kafka.orders",
        "DetailType": "OrderPlaced",
        "Detail": json.dumps({"order": 7, "name": "café"}),
        "EventBusName": "orders-bus",
        **extra,
    }


def test_cloud_event_conversion() -> None:
    when = datetime(2024, 5, 1, 14, 34, 56, 789123, tzinfo=timezone(timedelta(hours=2)))
    event = cloud_event(neutral(Time=when, Subject="order/7"), id="rec-1")
    assert event == {
        "specversion": "1.0",
        "id": "rec-1",
        "source": "kafka.orders",
        "type": "OrderPlaced",
        "subject": "order/7",
        "time": "2024-05-01T12:34:56.789Z",
        "datacontenttype": "application/json",
        "aliyuneventbusname": "orders-bus",
        "data": {"order": 7, "name": "café"},
    }


def test_cloud_event_subject_is_optional_and_time_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    event = cloud_event(neutral(Subject=""), id="x")
    assert "subject" not in event
    parsed = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    assert before <= parsed <= datetime.now(UTC)
    assert format_time(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05.000Z"  # naive = UTC


def test_cloud_event_rejects_a_detail_that_is_not_an_object() -> None:
    with pytest.raises(ValueError):
        cloud_event(neutral(Detail="[1, 2]"), id="x")


def test_event_size_counts_compact_utf8_bytes_as_sent() -> None:
    event = cloud_event(neutral(Time=datetime(2024, 1, 1, tzinfo=UTC)), id="1")
    compact = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert event_size(event) == len(compact)
    assert event_size({"data": "é"}) == len('{"data":"é"}') + 1  # é is two UTF-8 bytes
    body = encode_batch([event, event])
    assert len(body) == 2 * event_size(event) + 3 and json.loads(body) == [event, event]


# -- client + sink against the local endpoint ----------------------------------------------------


@pytest.fixture
def endpoint() -> Iterator[LocalAlibabaEventBridge]:
    with LocalAlibabaEventBridge(access_key_id=KEY_ID, access_key_secret=SECRET) as ep:
        yield ep


def make_client(ep: LocalAlibabaEventBridge, secret: str = SECRET, **kw: Any) -> Any:
    kw.setdefault("timeout_s", 2.0)
    return AlibabaEventBridgeClient(ep.url, KEY_ID, secret, max_connections=4, **kw)


def events(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        cloud_event(neutral(Detail=json.dumps({"i": i}), **extra), id=f"e{i}") for i in range(n)
    ]


def test_delivered_events_are_received_as_sent(endpoint: LocalAlibabaEventBridge) -> None:
    batch = events(3, Time=datetime(2024, 1, 1, tzinfo=UTC))
    with make_client(endpoint) as client:
        outcomes = AlibabaSink(client).send(batch)
        again = AlibabaSink(client).send(events(1))  # same keep-alive pool
    assert [o.kind for o in outcomes] == [Kind.DELIVERED] * 3
    received = endpoint.received()
    assert [r.event for r in received[:3]] == batch
    assert [o.event_id for o in outcomes] == [r.event_id for r in received[:3]]
    assert again[0].kind is Kind.DELIVERED
    call = endpoint.calls()[0]
    assert (call.status, call.entries, call.size) == (200, 3, sum(map(event_size, batch)))


def test_per_entry_retryable_and_permanent_failures(endpoint: LocalAlibabaEventBridge) -> None:
    endpoint.set_faults(
        fail_if_detail_contains={'"i":1': "InternalError", '"i":2': "Throttling.User"}
    )
    batch = events(4)
    del batch[3]["type"]  # a required attribute missing: the endpoint's InvalidArgument
    outcomes = AlibabaSink(make_client(endpoint)).send(batch)
    assert [(o.kind, o.code, o.whole_call, o.hold) for o in outcomes] == [
        (Kind.DELIVERED, "", False, False),
        (Kind.RETRY, "InternalError", False, False),
        (Kind.RETRY, "Throttling.User", False, True),  # the quota: not counted
        (Kind.PERMANENT, "InvalidArgument", False, False),
    ]
    assert "type" in outcomes[3].message
    assert [r.event["id"] for r in endpoint.received()] == ["e0"]


def test_injected_per_entry_failure_codes(endpoint: LocalAlibabaEventBridge) -> None:
    endpoint.set_faults(per_entry_failures={"EventBusNotExist": 1.0})
    outcomes = AlibabaSink(make_client(endpoint)).send(events(2))
    assert {(o.kind, o.code) for o in outcomes} == {(Kind.PERMANENT, "EventBusNotExist")}
    assert endpoint.stats()["events_failed"] == {"EventBusNotExist": 2}


def test_wrong_secret_holds_the_records_and_no_secret_leaks(
    endpoint: LocalAlibabaEventBridge,
) -> None:
    wrong = "WrongSecret-Also-Secret-99"
    client = make_client(endpoint, secret=wrong)
    outcomes = AlibabaSink(client).send(events(2))
    # retried (held), like the AWS sink's credential errors: not every record dead-lettered
    assert {(o.kind, o.code, o.whole_call, o.hold) for o in outcomes} == {
        (Kind.RETRY, "SignatureDoesNotMatch", True, True)
    }
    with pytest.raises(AlibabaServiceError) as caught:
        client.put_events(events(1))
    assert caught.value.status == 403 and caught.value.request_id
    for text in (outcomes[0].message, str(caught.value), repr(caught.value), repr(client)):
        assert wrong not in text and SECRET not in text
    assert [c.error_code for c in endpoint.calls()] == ["SignatureDoesNotMatch"] * 2
    assert endpoint.received() == [] and endpoint.stats()["auth_failures"] == 2


def test_unknown_access_key_id_is_rejected(endpoint: LocalAlibabaEventBridge) -> None:
    client = AlibabaEventBridgeClient(endpoint.url, "someoneElse", SECRET, 2.0, 1)
    outcome = AlibabaSink(client).send(events(1))[0]
    assert (outcome.kind, outcome.code) == (Kind.RETRY, "InvalidAccessKeyId")


def test_over_limit_batches_are_recorded_as_violations() -> None:
    with LocalAlibabaEventBridge(
        access_key_id=KEY_ID, access_key_secret=SECRET, max_event_bytes=400, max_request_bytes=900
    ) as ep:
        sink = AlibabaSink(make_client(ep))
        too_many = sink.send(events(17))
        too_big = sink.send([cloud_event(neutral(Detail=json.dumps({"x": "y" * 400})), id="big")])
        too_much = sink.send(events(6))
        violations = ep.violations
        assert [c.error_code for c in ep.calls()] == [
            "TooManyEvents",
            "EventTooLarge",
            "RequestTooLarge",
        ]
        assert ep.received() == []
    assert len(violations) == 3 and "17 events" in violations[0]
    for outcomes in (too_many, too_big, too_much):
        assert {(o.kind, o.whole_call) for o in outcomes} == {(Kind.PERMANENT, True)}


@pytest.mark.parametrize(
    ("faults", "code"),
    [
        ({"outage": True}, "ProtocolError"),  # connection dropped unanswered
        ({"outage": True, "outage_mode": "503"}, "ServiceUnavailable"),
        ({"call_error_rate": 1.0, "call_error_code": "InternalError"}, "InternalError"),
        ({"call_error_rate": 1.0, "call_error_code": "TooManyRequests"}, "TooManyRequests"),
        ({"call_error_rate": 1.0, "call_error_code": "Throttling"}, "Throttling"),  # HTTP 400
    ],
)
def test_outages_and_server_errors_are_retried_whole_call(
    endpoint: LocalAlibabaEventBridge, faults: dict[str, Any], code: str
) -> None:
    endpoint.set_faults(Faults.from_dict(faults))
    outcomes = AlibabaSink(make_client(endpoint)).send(events(2))
    assert {(o.kind, o.code, o.whole_call) for o in outcomes} == {(Kind.RETRY, code, True)}


def test_refused_connection_and_timeout_are_retried(endpoint: LocalAlibabaEventBridge) -> None:
    endpoint.set_faults(latency_ms=400)
    slow = AlibabaSink(make_client(endpoint, timeout_s=0.1)).send(events(1))[0]
    assert (slow.kind, slow.whole_call) == (Kind.RETRY, True)
    with pytest.raises(AlibabaTransportError):
        make_client(endpoint, timeout_s=0.1).put_events(events(1))
    url = endpoint.url
    endpoint.stop()
    refused = AlibabaSink(AlibabaEventBridgeClient(url, KEY_ID, SECRET, 1.0, 1)).send(events(1))
    assert (refused[0].kind, refused[0].whole_call) == (Kind.RETRY, True)


def test_response_classification() -> None:
    mismatch = classify_response({"EntryList": [{"EventId": "a"}]}, 2)
    assert {(o.kind, o.code, o.whole_call) for o in mismatch} == {
        (Kind.RETRY, "ResponseMismatch", True)
    }
    success_code = classify_response({"EntryList": [{"EventId": "a", "ErrorCode": "Success"}]}, 1)
    assert (success_code[0].kind, success_code[0].event_id) == (Kind.DELIVERED, "a")
    assert classify_response({"EntryList": [{}]}, 1)[0].kind is Kind.RETRY
    kinds = {
        code: classify_call_error(AlibabaServiceError(status, code, "m")).kind
        for status, code in [
            (200, "InvalidResponse"),
            (409, "EventBusNotExist"),
            (400, "Throttling.User"),
        ]
    }
    assert kinds == {
        "InvalidResponse": Kind.RETRY,
        "EventBusNotExist": Kind.PERMANENT,
        "Throttling.User": Kind.RETRY,
    }
    holds = {
        code: classify_call_error(AlibabaServiceError(status, code, "m")).hold
        for status, code in [
            (403, "Forbidden"),
            (401, "Unauthorized"),
            (400, "InvalidAccessKeyId"),
            (400, "Throttling.User"),
            (503, "ServiceUnavailable"),
            (200, "InvalidResponse"),
            (409, "EventBusNotExist"),
        ]
    }
    # Not the entries' fault, the same for every record: held beyond retry.max_attempts.
    assert holds == {
        "Forbidden": True,
        "Unauthorized": True,
        "InvalidAccessKeyId": True,
        "Throttling.User": True,
        "ServiceUnavailable": True,
        "InvalidResponse": False,
        "EventBusNotExist": False,
    }


def raw_post(ep: LocalAlibabaEventBridge, body: bytes, **overrides: str) -> tuple[int, Any]:
    client = make_client(ep)
    headers = {**client.signed_headers(body), **overrides}
    if overrides and "authorization" not in overrides:  # re-sign: only the checked header is off
        unsigned = {k: v for k, v in headers.items() if k != "authorization"}
        headers["authorization"] = authorization(KEY_ID, SECRET, "POST", PUT_EVENTS_PATH, unsigned)
    response = urllib3.PoolManager().request(
        "POST", ep.url + PUT_EVENTS_PATH, body=body, headers=headers, retries=False
    )
    return response.status, json.loads(response.data)


def test_endpoint_checks_content_type_version_digest_and_body(
    endpoint: LocalAlibabaEventBridge,
) -> None:
    body = encode_batch(events(1))
    assert raw_post(endpoint, body)[0] == 200
    assert raw_post(endpoint, body, **{"content-type": "application/json"})[1]["code"] == (
        "UnsupportedMediaType"
    )
    assert raw_post(endpoint, body, **{"x-eventbridge-version": "1999-01-01"})[1]["code"] == (
        "NoSuchVersion"
    )
    assert raw_post(endpoint, body, **{"content-md5": "AAAA"})[1]["code"] == "InvalidDigest"
    assert raw_post(endpoint, b'{"not": "a list"}')[1]["code"] == "MalformedJSON"
    status, payload = raw_post(endpoint, body, authorization="Bearer x")
    assert (status, payload["code"]) == (401, "MissingAuthorization")


def test_admin_api_and_main(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.alibaba_endpoint", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        faults = json.dumps({"per_entry_failures": {"InternalError": 1.0}}).encode()
        with urllib.request.urlopen(urllib.request.Request(url + "/_admin/faults", data=faults)):
            pass
        client = AlibabaEventBridgeClient(url, "local", "local-secret", 2.0, 1)
        assert AlibabaSink(client).send(events(1))[0].code == "InternalError"
        with urllib.request.urlopen(url + "/_admin/stats") as response:
            assert json.load(response)["events_failed"] == {"InternalError": 1}
    finally:
        proc.terminate()
        code = proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0


def test_configured_alibaba_sink_maps_records_and_sends(endpoint: LocalAlibabaEventBridge) -> None:
    config = config_from_dict(
        {
            "sink": "alibaba",
            "alibaba": {
                "endpoint": endpoint.url,
                "access_key_id": KEY_ID,
                "access_key_secret": SECRET,
                "timeout_s": 2,
            },
            "aws": {"event_bus_name": "orders-bus"},
            "mappings": [
                {
                    "topic": "orders",
                    "source": "shop",
                    "detail_type": "Placed",
                    "subject": "o/${key}",
                }
            ],
        }
    )
    sink = make_sink(config, make_sink_client(config))
    assert isinstance(sink, AlibabaSink) and sink.limits.max_entries == 16
    assert SECRET not in repr(sink._client)
    record = Message(
        topic="orders", partition=3, offset=42, key=b"k1", value=b'{"id": 1}',
        headers=[], timestamp=(1, 1_700_000_000_123),
    )  # fmt: skip
    mapped = Mapper(config, sink).map(record)
    wire = mapped.entry
    assert (wire["id"], wire["subject"], wire["aliyuneventbusname"]) == (
        "orders-3-42",
        "o/k1",
        "orders-bus",
    )
    assert wire["time"] == "2023-11-14T22:13:20.123Z" and mapped.size == event_size(wire)
    assert [o.kind for o in sink.send([wire])] == [Kind.DELIVERED]
    assert endpoint.received()[0].event == wire
    with pytest.raises(MappingError) as info:
        sink.prepare(
            {"Source": "s", "DetailType": "d", "Detail": "[]", "EventBusName": "b"}, record
        )
    assert info.value.code == "InvalidCloudEvent"


# -- throttled: Alibaba's spellings of "too much" lower the rate like AWS's ----------------------


@pytest.mark.parametrize(
    ("code", "throttled"),
    [
        ("Throttling", True),
        ("Throttling.User", True),
        ("Throttling.Api", True),
        ("TooManyRequests", True),
        ("InternalError", False),
        ("ServiceUnavailable", False),
        ("EventBusNotExist", False),
        ("ThrottlingException", True),  # AWS's spelling starts with Throttling too
        ("throttling", False),  # codes are case-sensitive
    ],
)
def test_is_throttling_code(code: str, throttled: bool) -> None:
    assert alibaba_throttling(code) is throttled


@pytest.mark.parametrize(
    ("code", "throttled"),
    [
        ("Throttling.User", True),
        ("Throttling", True),
        ("TooManyRequests", True),
        ("InternalError", False),
        ("ServiceUnavailable", False),
        ("InvalidArgument", False),
    ],
)
def test_entry_throttled(code: str, throttled: bool) -> None:
    outcome = classify_entry({"ErrorCode": code, "ErrorMessage": "m"})
    assert outcome.throttled is throttled
    if throttled:  # the quota, not the entry: held
        assert (outcome.kind, outcome.hold) == (Kind.RETRY, True)


def test_delivered_entry_is_not_throttled() -> None:
    assert not classify_entry({"EventId": "a", "ErrorCode": "Success"}).throttled


@pytest.mark.parametrize(
    ("status", "code", "throttled"),
    [
        (429, "TooManyRequests", True),
        (400, "Throttling.User", True),  # throttling is HTTP 400 on some Alibaba services
        (400, "Throttling", True),
        (429, "HTTP429", True),  # a 429 without a readable code
        (500, "InternalError", False),
        (503, "ServiceUnavailable", False),
        (502, "HTTP502", False),
        (403, "Forbidden", False),
        (409, "EventBusNotExist", False),
    ],
)
def test_call_error_throttled(status: int, code: str, throttled: bool) -> None:
    outcome = classify_call_error(AlibabaServiceError(status, code, "m"))
    assert outcome.throttled is throttled
    assert outcome.whole_call


def test_transport_error_is_not_throttled() -> None:
    error = AlibabaTransportError(None, "ConnectTimeoutError", "timed out")
    assert not classify_call_error(error).throttled


def test_throttled_answers_from_the_endpoint(endpoint: LocalAlibabaEventBridge) -> None:
    endpoint.set_faults(fail_if_detail_contains={'"i":1': "Throttling.User"})
    per_entry = AlibabaSink(make_client(endpoint)).send(events(3))
    assert [o.throttled for o in per_entry] == [False, True, False]
    endpoint.set_faults(
        Faults.from_dict({"call_error_rate": 1.0, "call_error_code": "TooManyRequests"})
    )
    whole = AlibabaSink(make_client(endpoint)).send(events(2))
    assert [(o.code, o.throttled) for o in whole] == [("TooManyRequests", True)] * 2
    assert endpoint.calls()[-1].status == 429
    endpoint.set_faults(
        Faults.from_dict({"call_error_rate": 1.0, "call_error_code": "InternalError"})
    )
    internal = AlibabaSink(make_client(endpoint)).send(events(2))
    assert not any(o.throttled for o in internal)

"""The fate of each PutEvents entry: delivered, retry or permanent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from bridge.sink.eventbridge import EventBridgeSink
from bridge.sink.outcome import (
    Kind,
    Outcome,
    classify_call_error,
    classify_entry,
    classify_response,
    transport_error,
)

SEED_RESPONSE = {
    "FailedEntryCount": 1,
    "Entries": [
        {"EventId": "11710aed-b79e-4468-a20b-bb3c0c3b4860"},
        {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal Service Failure"},
        {"EventId": "d804d26a-88db-4b66-9eaf-9a11c708ae82"},
    ],
}

PERMANENT_CODES = [
    "InvalidArgument",
    "MalformedDetail",
    "AccessDeniedException",
    "InvalidAccountIdException",
    "RedactionFailure",
    "NotAuthorizedForSourceException",
    "NotAuthorizedForDetailTypeException",
]


def test_seed_example_is_delivered_retry_delivered() -> None:
    outcomes = classify_response(SEED_RESPONSE, sent=3)
    assert [o.kind for o in outcomes] == [Kind.DELIVERED, Kind.RETRY, Kind.DELIVERED]
    assert outcomes[0].event_id == "11710aed-b79e-4468-a20b-bb3c0c3b4860"
    assert outcomes[2].event_id == "d804d26a-88db-4b66-9eaf-9a11c708ae82"
    assert outcomes[1].code == "InternalFailure"
    assert outcomes[1].message == "Internal Service Failure"
    assert not any(o.whole_call for o in outcomes)


@pytest.mark.parametrize("code", PERMANENT_CODES)
def test_permanent_entry_codes(code: str) -> None:
    response = {
        "FailedEntryCount": 1,
        "Entries": [{"EventId": "a"}, {"ErrorCode": code, "ErrorMessage": f"{code} happened"}],
    }
    outcomes = classify_response(response, sent=2)
    assert outcomes[0].kind is Kind.DELIVERED
    assert outcomes[1] == Outcome(Kind.PERMANENT, code, f"{code} happened")


@pytest.mark.parametrize(
    ("code", "hold", "throttled"),
    [("ThrottlingException", True, True), ("InternalFailure", False, False)],
)
def test_retryable_entry_codes(code: str, hold: bool, throttled: bool) -> None:
    # A throttled entry is the account's quota, not the entry: it does not use up attempts, and
    # it tells the rate control to slow down (an internal failure does not).
    outcome = classify_entry({"ErrorCode": code, "ErrorMessage": "try later"})
    assert outcome == Outcome(Kind.RETRY, code, "try later", hold=hold, throttled=throttled)


def test_entry_without_event_id_or_error_code_is_retried() -> None:
    outcome = classify_entry({})
    assert outcome.kind is Kind.RETRY
    assert outcome.code == "NoEventId"


def test_all_delivered() -> None:
    response = {"FailedEntryCount": 0, "Entries": [{"EventId": str(i)} for i in range(10)]}
    outcomes = classify_response(response, sent=10)
    assert [o.kind for o in outcomes] == [Kind.DELIVERED] * 10
    assert [o.event_id for o in outcomes] == [str(i) for i in range(10)]


@pytest.mark.parametrize(
    ("entries", "sent"),
    [
        ([{"EventId": "a"}, {"EventId": "b"}], 3),
        ([{"EventId": "a"}, {"EventId": "b"}, {"EventId": "c"}, {"EventId": "d"}], 3),
        ([], 2),
        (None, 2),
    ],
)
def test_length_mismatch_retries_every_entry_as_a_whole_call(
    entries: list[dict[str, Any]] | None, sent: int
) -> None:
    response: dict[str, Any] = {"FailedEntryCount": 0}
    if entries is not None:
        response["Entries"] = entries
    outcomes = classify_response(response, sent=sent)
    assert len(outcomes) == sent
    for outcome in outcomes:
        assert outcome.kind is Kind.RETRY
        assert outcome.whole_call
        assert outcome.code == "ResponseMismatch"
        assert f"for {sent} sent" in outcome.message


@pytest.mark.parametrize(
    ("code", "status", "kind", "hold", "throttled"),
    [
        # Not the entries' fault, the same for every record: held beyond retry.max_attempts.
        ("InternalException", 500, Kind.RETRY, True, False),
        ("SomethingNew", 500, Kind.RETRY, True, False),  # any 5xx
        ("ServiceUnavailable", 503, Kind.RETRY, True, False),
        ("ThrottlingException", 400, Kind.RETRY, True, True),
        ("ThrottlingException", None, Kind.RETRY, True, True),
        ("ValidationException", 400, Kind.PERMANENT, False, False),
        ("AccessDeniedException", 400, Kind.RETRY, True, False),
        ("ResourceNotFoundException", 400, Kind.RETRY, True, False),
        ("UnrecognizedClientException", 400, Kind.RETRY, True, False),
        ("ExpiredTokenException", 400, Kind.RETRY, True, False),
        ("InvalidSignatureException", 400, Kind.RETRY, True, False),
    ],
)
def test_classify_call_error(
    code: str, status: int | None, kind: Kind, hold: bool, throttled: bool
) -> None:
    outcome = classify_call_error(code, status, "the message")
    assert outcome == Outcome(
        kind, code, "the message", whole_call=True, hold=hold, throttled=throttled
    )


def test_transport_error_is_held() -> None:
    outcome = transport_error("EndpointConnectionError", "refused")
    assert outcome == Outcome(
        Kind.RETRY, "EndpointConnectionError", "refused", whole_call=True, hold=True
    )


class FakeClient:
    """A boto3 ``events`` client stand-in: returns ``response`` or raises ``error``."""

    def __init__(self, response: dict[str, Any] | None = None, error: Exception | None = None):
        self.response = response
        self.error = error
        self.calls: list[Sequence[dict[str, Any]]] = []

    def put_events(self, *, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(list(Entries))
        if self.error is not None:
            raise self.error
        assert self.response is not None
        return self.response


ENTRIES = [
    {"Source": "s", "DetailType": "d", "Detail": "{}", "EventBusName": "default"} for _ in range(3)
]


def client_error(code: str, status: int, message: str = "boom") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutEvents",
    )


def test_sink_passes_entries_and_classifies_response() -> None:
    client = FakeClient(response=SEED_RESPONSE)
    outcomes = EventBridgeSink(client).send(ENTRIES)
    assert client.calls == [ENTRIES]
    assert [o.kind for o in outcomes] == [Kind.DELIVERED, Kind.RETRY, Kind.DELIVERED]


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (
            client_error("ThrottlingException", 400, "Rate exceeded"),
            Kind.RETRY,
            "ThrottlingException",
        ),
        (client_error("InternalException", 500), Kind.RETRY, "InternalException"),
        (client_error("Whatever", 502), Kind.RETRY, "Whatever"),
        (client_error("ValidationException", 400), Kind.PERMANENT, "ValidationException"),
        (client_error("AccessDeniedException", 400), Kind.RETRY, "AccessDeniedException"),
        (EndpointConnectionError(endpoint_url="x"), Kind.RETRY, "EndpointConnectionError"),
        (ReadTimeoutError(endpoint_url="x"), Kind.RETRY, "ReadTimeoutError"),
    ],
)
def test_sink_turns_call_failures_into_one_outcome_per_entry(
    error: Exception, kind: Kind, code: str
) -> None:
    outcomes = EventBridgeSink(FakeClient(error=error)).send(ENTRIES)
    assert len(outcomes) == len(ENTRIES)
    for outcome in outcomes:
        assert outcome.kind is kind
        assert outcome.code == code
        assert outcome.whole_call
        assert outcome.message


def test_sink_keeps_the_client_error_message() -> None:
    error = client_error("ThrottlingException", 400, "Rate exceeded")
    outcomes = EventBridgeSink(FakeClient(error=error)).send(ENTRIES[:1])
    assert outcomes == [
        Outcome(
            Kind.RETRY,
            "ThrottlingException",
            "Rate exceeded",
            whole_call=True,
            hold=True,
            throttled=True,
        )
    ]


def test_sink_transport_error_message_names_the_endpoint() -> None:
    outcomes = EventBridgeSink(FakeClient(error=EndpointConnectionError(endpoint_url="x"))).send(
        ENTRIES[:1]
    )
    assert '"x"' in outcomes[0].message


def test_sink_response_shorter_than_request_is_retried() -> None:
    client = FakeClient(response={"FailedEntryCount": 0, "Entries": [{"EventId": "a"}]})
    outcomes = EventBridgeSink(client).send(ENTRIES)
    assert [o.kind for o in outcomes] == [Kind.RETRY] * 3
    assert all(o.whole_call for o in outcomes)


def test_global_endpoint_without_awscrt_says_how_to_get_it(monkeypatch: Any) -> None:
    import builtins

    from bridge.errors import BridgeError
    from bridge.sink.eventbridge import require_sigv4a

    real_import = builtins.__import__

    def no_awscrt(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "awscrt":
            raise ImportError("No module named 'awscrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_awscrt)
    with pytest.raises(BridgeError, match=r"SigV4a.*awscrt.*pip install"):
        require_sigv4a()


# -- throttled: the bus said "too much", whatever the code's spelling ----------------------------


def test_throttled_entry_in_a_response_and_only_it() -> None:
    response = {
        "FailedEntryCount": 3,
        "Entries": [
            {"EventId": "a"},
            {"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"},
            {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal Service Failure"},
            {"ErrorCode": "InvalidArgument", "ErrorMessage": "bad"},
        ],
    }
    outcomes = classify_response(response, sent=4)
    assert [o.throttled for o in outcomes] == [False, True, False, False]


@pytest.mark.parametrize(
    "code",
    [
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    ],
)
def test_whole_call_throttling_codes_are_throttled(code: str) -> None:
    outcome = classify_call_error(code, 400, "slow down")
    assert outcome.throttled and outcome.hold and outcome.whole_call
    assert outcome.kind is Kind.RETRY


def test_http_429_is_throttled_whatever_the_code() -> None:
    outcome = classify_call_error("SlowDown", 429, "slow down")
    assert outcome.throttled and outcome.hold and outcome.kind is Kind.RETRY


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("InternalFailure", 500),
        ("InternalException", 500),
        ("ServiceUnavailable", 503),
        ("SomethingNew", 502),
        ("InternalFailure", None),
        ("ValidationException", 400),
        ("ExpiredTokenException", 400),
    ],
)
def test_failures_that_are_not_the_quota_are_not_throttled(code: str, status: int | None) -> None:
    assert not classify_call_error(code, status, "m").throttled


def test_transport_and_mismatch_are_not_throttled() -> None:
    assert not transport_error("ReadTimeoutError", "timed out").throttled
    assert not any(o.throttled for o in classify_response({"Entries": []}, sent=2))


def test_sink_passes_a_throttled_call_on() -> None:
    error = client_error("TooManyRequestsException", 429, "slow down")
    outcomes = EventBridgeSink(FakeClient(error=error)).send(ENTRIES)
    assert [o.throttled for o in outcomes] == [True] * len(ENTRIES)
    internal = EventBridgeSink(FakeClient(error=client_error("InternalFailure", 500))).send(ENTRIES)
    assert not any(o.throttled for o in internal)

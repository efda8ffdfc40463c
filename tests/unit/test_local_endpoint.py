"""Tests of the local EventBridge endpoint, driven by the real boto3 ``events`` client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError

from testbed.endpoint import AccountQuota, Faults, LocalEventBridge, entry_size

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 262144


@pytest.fixture(scope="module")
def session() -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )


@pytest.fixture
def endpoint() -> Iterator[LocalEventBridge]:
    with LocalEventBridge(buses=("orders",)) as ep:
        yield ep


@pytest.fixture
def client(session: boto3.session.Session, endpoint: LocalEventBridge) -> Any:
    return session.client(
        "events", endpoint_url=endpoint.url, config=Config(retries={"total_max_attempts": 1})
    )


def entry(detail: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "Source": "test.src",
        "DetailType": "thing",
        "Detail": json.dumps(detail or {}),
        **extra,
    }


def admin(ep: LocalEventBridge, route: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{ep.url}/_admin/{route}", data=data, method="GET")
    if data is not None:
        req.method = "POST"
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response: Any = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_entry_size_formula() -> None:
    assert entry_size({"Source": "ab", "DetailType": "c", "Detail": "{}"}) == 5
    assert entry_size({"Source": "a", "DetailType": "b", "Time": 1.5}) == 16
    assert entry_size({"Source": "é", "DetailType": "€", "Resources": ["r1", "ü"]}) == 2 + 3 + 2 + 2
    ignored = {"Source": "a", "DetailType": "b", "EventBusName": "bus", "TraceHeader": "t"}
    assert entry_size(ignored) == 2


def test_put_events_records_entries(client: Any, endpoint: LocalEventBridge) -> None:
    when = datetime(2024, 1, 2, tzinfo=UTC)
    entries = [entry({"n": i}, Time=when, Resources=["arn:x"]) for i in range(3)]
    resp = client.put_events(Entries=entries)
    assert resp["FailedEntryCount"] == 0
    ids = [e["EventId"] for e in resp["Entries"]]
    assert len(set(ids)) == 3
    received = endpoint.received()
    assert [r.event_id for r in received] == ids
    assert [json.loads(r.entry["Detail"]) for r in received] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert received[0].call == 1
    assert received[0].entry["Time"] == when.timestamp()  # JSON 1.1: epoch seconds
    (call,) = endpoint.calls()
    assert (call.operation, call.entries, call.status) == ("PutEvents", 3, 200)
    assert call.size == 3 * (14 + len("test.src") + len("thing") + len('{"n": 0}') + 5)


def test_per_entry_throttling(client: Any, endpoint: LocalEventBridge) -> None:
    endpoint.set_faults(Faults(per_entry_failures={"ThrottlingException": 1.0}))
    resp = client.put_events(Entries=[entry() for _ in range(3)])
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["FailedEntryCount"] == 3
    assert [e["ErrorCode"] for e in resp["Entries"]] == ["ThrottlingException"] * 3
    assert all(e["ErrorMessage"] for e in resp["Entries"])
    assert endpoint.received() == []
    assert endpoint.stats()["entries_failed"] == {"ThrottlingException": 3}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_account_quota_bucket() -> None:
    quota = AccountQuota(100, burst=20)
    assert sum(quota.take(0.0) for _ in range(50)) == 20  # full at first, then empty
    assert sum(quota.take(0.1) for _ in range(50)) == 10  # 0.1 s refills 10
    assert sum(quota.take(10.0) for _ in range(50)) == 20  # never more than the burst
    assert AccountQuota(2400).burst == 240
    assert AccountQuota(5).burst == 10  # at least one call's worth
    with pytest.raises(ValueError, match="quota"):
        AccountQuota(0)


def test_quota_throttles_entries_above_it_across_clients(
    session: boto3.session.Session,
) -> None:
    clock = FakeClock()
    with LocalEventBridge(quota_entries_per_second=100, quota_burst=25, clock=clock) as ep:
        clients = [
            session.client(
                "events",
                endpoint_url=ep.url,
                config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
            )
            for _ in range(2)
        ]
        codes = []
        for k in range(3):  # two connections, one bucket: 30 entries against 25 tokens
            for e in clients[k % 2].put_events(Entries=[entry() for _ in range(10)])["Entries"]:
                codes.append(e.get("ErrorCode"))
        assert codes.count(None) == 25
        assert codes[25:] == ["ThrottlingException"] * 5  # a 200 with per-entry throttling
        clock.now += 0.2  # refills 20 entries (0.1 s would be 9.99999... in floating point)
        resp = clients[1].put_events(Entries=[entry() for _ in range(10)])
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert resp["FailedEntryCount"] == 0
        assert len(ep.received()) == 35
        assert ep.stats()["quota_throttled"] == 5
        assert ep.stats()["entries_failed"] == {"ThrottlingException": 5}


def test_quota_holds_a_rate_in_real_time(client: Any, endpoint: LocalEventBridge) -> None:
    endpoint.set_quota(200, burst=10)
    start = time.monotonic()
    delivered = 0
    while time.monotonic() - start < 1.0:
        resp = client.put_events(Entries=[entry() for _ in range(10)])
        delivered += 10 - resp["FailedEntryCount"]
    elapsed = time.monotonic() - start
    assert delivered <= 10 + 200 * elapsed + 10
    assert delivered >= 100  # not starved either
    endpoint.set_quota(None)
    assert client.put_events(Entries=[entry() for _ in range(10)])["FailedEntryCount"] == 0


def test_random_throttling_does_not_use_the_quota(session: boto3.session.Session) -> None:
    clock = FakeClock()
    faults = Faults(per_entry_failures={"ThrottlingException": 1.0})
    with LocalEventBridge(quota_entries_per_second=10, faults=faults, clock=clock) as ep:
        client = session.client("events", endpoint_url=ep.url)
        assert client.put_events(Entries=[entry() for _ in range(10)])["FailedEntryCount"] == 10
        assert ep.stats()["quota_throttled"] == 0  # all throttled at random, bucket untouched
        ep.set_faults(Faults())
        assert client.put_events(Entries=[entry() for _ in range(10)])["FailedEntryCount"] == 0


def test_quota_admin_api(endpoint: LocalEventBridge) -> None:
    assert admin(endpoint, "quota") == (200, {"entries_per_second": None})
    status, quota = admin(endpoint, "quota", {"entries_per_second": 2400})
    assert (status, quota) == (200, {"entries_per_second": 2400.0, "burst": 240.0})
    assert endpoint.quota is not None and endpoint.quota.entries_per_second == 2400
    assert admin(endpoint, "quota", {"entries_per_second": 50, "burst": 5})[0] == 200
    assert admin(endpoint, "quota")[1] == {"entries_per_second": 50.0, "burst": 5.0}
    assert admin(endpoint, "quota", {"entries_per_second": -1})[0] == 400
    assert admin(endpoint, "quota", {"entries_per_second": "fast"})[0] == 400
    assert admin(endpoint, "quota", {"rate": 1})[0] == 400
    assert admin(endpoint, "quota", {"entries_per_second": None}) == (
        200,
        {"entries_per_second": None},
    )
    assert endpoint.quota is None


def test_per_entry_failures_are_seeded(session: boto3.session.Session) -> None:
    outcomes = []
    for _ in range(2):
        faults = Faults(per_entry_failures={"ThrottlingException": 0.3, "InternalFailure": 0.3})
        with LocalEventBridge(seed=7, faults=faults) as ep:
            c = session.client("events", endpoint_url=ep.url)
            resp = c.put_events(Entries=[entry() for _ in range(10)])
            outcomes.append([e.get("ErrorCode") for e in resp["Entries"]])
    assert outcomes[0] == outcomes[1]
    assert {"ThrottlingException", "InternalFailure", None} == set(outcomes[0])


def test_first_attempt_failures_fail_an_entry_only_the_first_time_it_is_seen(
    client: Any, endpoint: LocalEventBridge
) -> None:
    endpoint.set_faults(Faults(first_attempt_failures={"InternalFailure": 1.0}))
    entries = [entry({"n": i}) for i in range(3)]
    first = client.put_events(Entries=entries)
    assert [e.get("ErrorCode") for e in first["Entries"]] == ["InternalFailure"] * 3
    again = client.put_events(Entries=[entries[1], entry({"n": 9}), entries[1]])
    assert [e.get("ErrorCode") for e in again["Entries"]] == [None, "InternalFailure", None]
    assert [json.loads(r.entry["Detail"])["n"] for r in endpoint.received()] == [1, 1]
    endpoint.reset()  # forgets what it saw
    assert client.put_events(Entries=entries[:1])["FailedEntryCount"] == 1


def test_repeated_failures_fail_an_entry_its_first_attempts_then_let_it_through(
    client: Any, endpoint: LocalEventBridge
) -> None:
    endpoint.set_faults(Faults(repeated_failures={"InternalFailure": 1.0}, repeated_attempts=3))
    one = [entry({"n": 1})]
    codes = [client.put_events(Entries=one)["Entries"][0].get("ErrorCode") for _ in range(4)]
    assert codes == ["InternalFailure"] * 3 + [None]
    assert len(endpoint.received()) == 1


def test_first_attempt_failures_are_checked() -> None:
    with pytest.raises(ValueError, match="sum to at most 1"):
        Faults(first_attempt_failures={"InternalFailure": 0.6, "ThrottlingException": 0.6})
    with pytest.raises(ValueError, match="sum to at most 1"):
        Faults(first_attempt_failures={"InternalFailure": 0.6}, repeated_failures={"X": 0.6})


def test_fail_if_detail_contains(client: Any, endpoint: LocalEventBridge) -> None:
    endpoint.set_faults(fail_if_detail_contains={"poison": "InvalidArgument"})
    resp = client.put_events(Entries=[entry({"a": 1}), entry({"a": "poison"}), entry({"a": 3})])
    assert resp["FailedEntryCount"] == 1
    assert "EventId" in resp["Entries"][0] and "EventId" in resp["Entries"][2]
    assert resp["Entries"][1]["ErrorCode"] == "InvalidArgument"
    assert [json.loads(r.entry["Detail"])["a"] for r in endpoint.received()] == [1, 3]


def test_entry_validation(client: Any, endpoint: LocalEventBridge) -> None:
    no_detail = {"Source": "s", "DetailType": "d"}
    entries = [no_detail, entry(), {**entry(), "Detail": "[1]"}, {**entry(), "Detail": "{x"}]
    resp = client.put_events(Entries=entries)
    codes = [e.get("ErrorCode") for e in resp["Entries"]]
    assert codes == ["InvalidArgument", None, "MalformedDetail", "MalformedDetail"]
    assert len(endpoint.received()) == 1
    assert endpoint.violations == []


def test_too_many_entries_is_a_violation(client: Any, endpoint: LocalEventBridge) -> None:
    with pytest.raises(ClientError) as exc:
        client.put_events(Entries=[entry() for _ in range(11)])
    assert error_of(exc) == ("ValidationException", 400)
    assert len(endpoint.violations) == 1 and "11 entries" in endpoint.violations[0]
    assert endpoint.received() == []


def test_zero_entries_is_a_violation(endpoint: LocalEventBridge) -> None:
    # boto3 refuses an empty list client-side, so send the raw JSON 1.1 request.
    req = urllib.request.Request(
        endpoint.url + "/",
        data=b'{"Entries": []}',
        headers={"X-Amz-Target": "AWSEvents.PutEvents"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 400
    assert exc.value.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert json.loads(exc.value.read())["__type"] == "ValidationException"
    assert "0 entries" in endpoint.violations[0]


def sized_entry(size: int, with_time: bool) -> dict[str, Any]:
    """An entry whose formula size is exactly ``size``."""
    base = entry({"p": ""}, **({"Time": datetime.now(UTC)} if with_time else {}))
    pad = size - entry_size(base)
    result = {**base, "Detail": json.dumps({"p": "x" * pad})}
    assert entry_size(result) == size
    return result


@pytest.mark.parametrize("with_time", [True, False])
def test_request_size_boundary(client: Any, endpoint: LocalEventBridge, with_time: bool) -> None:
    small = entry({"a": 1})
    first = sized_entry(MAX_BYTES - entry_size(small), with_time)
    client.put_events(Entries=[first, small])  # exactly the limit: accepted
    assert endpoint.violations == []
    over = sized_entry(MAX_BYTES - entry_size(small) + 1, with_time)
    with pytest.raises(ClientError) as exc:
        client.put_events(Entries=[over, small])
    assert error_of(exc) == ("ValidationException", 400)
    assert f"request size {MAX_BYTES + 1}" in endpoint.violations[0]
    assert len(endpoint.received()) == 2


def test_time_counts_14_bytes(client: Any, endpoint: LocalEventBridge) -> None:
    exact = sized_entry(MAX_BYTES, with_time=False)
    client.put_events(Entries=[exact])
    with pytest.raises(ClientError):
        client.put_events(Entries=[{**exact, "Time": datetime.now(UTC)}])
    assert f"request size {MAX_BYTES + 14}" in endpoint.violations[0]


def test_call_error_internal(client: Any, endpoint: LocalEventBridge) -> None:
    endpoint.set_faults(call_error_rate=1.0)
    with pytest.raises(ClientError) as exc:
        client.put_events(Entries=[entry()])
    assert error_of(exc) == ("InternalException", 500)
    assert endpoint.received() == []
    assert endpoint.calls()[0].status == 500


def test_call_error_throttling(client: Any, endpoint: LocalEventBridge) -> None:
    endpoint.set_faults(call_error_rate=1.0, call_error_code="ThrottlingException")
    with pytest.raises(ClientError) as exc:
        client.put_events(Entries=[entry()])
    assert error_of(exc) == ("ThrottlingException", 400)


def test_latency(client: Any, endpoint: LocalEventBridge) -> None:
    endpoint.set_faults(latency_ms=150, latency_jitter_ms=20)
    start = time.monotonic()
    client.put_events(Entries=[entry()])
    assert time.monotonic() - start >= 0.15


def test_outage_closes_connection_then_recovers(client: Any, endpoint: LocalEventBridge) -> None:
    client.put_events(Entries=[entry()])  # open a keep-alive connection first
    endpoint.set_faults(outage=True)
    with pytest.raises(BotoCoreError) as exc:
        client.put_events(Entries=[entry()])
    assert isinstance(exc.value, ConnectionClosedError)
    assert endpoint.calls()[-1].status == 0
    endpoint.set_faults(outage=True, outage_mode="503")
    with pytest.raises(ClientError) as err:
        client.put_events(Entries=[entry()])
    assert error_of(err) == ("ServiceUnavailable", 503)
    endpoint.set_faults(Faults())
    assert client.put_events(Entries=[entry()])["FailedEntryCount"] == 0
    assert len(endpoint.received()) == 2


def test_admin_api(client: Any, endpoint: LocalEventBridge) -> None:
    status, faults = admin(endpoint, "faults", {"fail_if_detail_contains": {"bad": "X"}})
    assert status == 200 and faults["fail_if_detail_contains"] == {"bad": "X"}
    assert admin(endpoint, "faults", {"nope": 1})[0] == 400
    assert admin(endpoint, "faults", {"call_error_rate": 2})[0] == 400
    client.put_events(Entries=[entry({"v": "ok"}), entry({"v": "bad"})])
    status, received = admin(endpoint, "received")
    assert status == 200 and len(received) == 1
    assert set(received[0]) == {"event_id", "call", "entry"}
    assert received[0]["entry"]["Detail"] == '{"v": "ok"}'
    calls = admin(endpoint, "calls")[1]
    assert calls[0]["entries"] == 2 and calls[0]["status"] == 200
    stats = admin(endpoint, "stats")[1]
    assert stats["calls"] == 1 and stats["entries_received"] == 1
    assert stats["entries_failed"] == {"X": 1} and stats["violations"] == 0
    assert admin(endpoint, "reset", {})[1] == {"ok": True}
    assert admin(endpoint, "received")[1] == [] and admin(endpoint, "calls")[1] == []
    assert admin(endpoint, "nothing")[0] == 404


def test_describe_event_bus(client: Any) -> None:
    resp = client.describe_event_bus(Name="orders")
    assert resp["Arn"] == "arn:aws:events:us-east-1:000000000000:event-bus/orders"
    assert client.describe_event_bus(Name="default")["Name"] == "default"
    with pytest.raises(ClientError) as exc:
        client.describe_event_bus(Name="missing")
    assert error_of(exc) == ("ResourceNotFoundException", 400)


def test_unknown_operation(client: Any) -> None:
    with pytest.raises(ClientError) as exc:
        client.list_rules()
    assert error_of(exc)[0] == "UnknownOperationException"


def test_concurrent_clients_and_no_thread_leak(session: boto3.session.Session) -> None:
    before = threading.active_count()
    ep = LocalEventBridge().start()
    clients = [session.client("events", endpoint_url=ep.url) for _ in range(6)]
    errors: list[BaseException] = []

    def send(c: Any) -> None:
        try:
            for _ in range(5):
                assert c.put_events(Entries=[entry() for _ in range(10)])["FailedEntryCount"] == 0
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert len({r.event_id for r in ep.received()}) == 6 * 5 * 10
    assert len(ep.calls()) == 30
    start = time.monotonic()
    ep.stop()  # keep-alive connections of the clients are still open
    assert time.monotonic() - start < 2
    assert threading.active_count() == before


def test_main_runs_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "testbed.endpoint", "--port", "0", "--throttle-rate", "0.5"]
    cmd += ["--quota-entries-per-second", "2400"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/_admin/faults", timeout=5) as resp:
            faults = json.loads(resp.read())
        assert faults["per_entry_failures"] == {"ThrottlingException": 0.5}
        with urllib.request.urlopen(url + "/_admin/quota", timeout=5) as resp:
            assert json.loads(resp.read())["entries_per_second"] == 2400
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

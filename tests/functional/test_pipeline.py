"""The functional tier: the real Pipeline against in-memory fakes of Kafka, the DLQ and AWS.

Each test runs ``pipeline.run()`` in a thread, drives the fakes, and stops it with
``pipeline.stop()``. Timing only matters through short waits; nothing touches the network.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from fakes import (
    FakeConsumer,
    FakeEventsClient,
    FakeProducer,
    accept_all,
    ident,
    per_entry,
    response,
    wait_until,
)

from bridge.config import BridgeConfig
from bridge.config.load import config_from_dict
from bridge.pipeline import Pipeline, Stats
from bridge.sink.eventbridge import EventBridgeSink

TOPIC = "orders"
P0 = (TOPIC, 0)
P1 = (TOPIC, 1)
WAIT = 5.0


def make_config(**sections: dict[str, Any]) -> BridgeConfig:
    """A test configuration: fast retries, 10 ms commit interval, 1 ms linger."""
    data: dict[str, Any] = {
        "kafka": {"group_id": "functional"},
        "aws": {"region": "us-east-1", "check_event_bus": False},
        "batch": {"linger_ms": 1},
        "retry": {"max_attempts": 10, "initial_backoff_ms": 1, "max_backoff_ms": 5},
        "dlq": {"topic": "orders-dlq", "retry_backoff_ms": 20},
        "pipeline": {"commit_interval_ms": 10, "shutdown_timeout_s": 5},
        "logging": {"format": "json", "level": "warning"},
        "mappings": [{"topic": TOPIC, "source": "test.bridge", "detail_type": "Order"}],
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config_from_dict(data)


Callback = Callable[[Any, list[Any]], None]


class Running:
    """A pipeline running in a thread over the fakes."""

    def __init__(
        self,
        config: BridgeConfig,
        consumer: FakeConsumer,
        producer: FakeProducer,
        client: FakeEventsClient,
        wrap_revoke: Callable[[Pipeline, Callback], Callback] | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.client = client
        self.pipeline = Pipeline(config, consumer, producer, EventBridgeSink(client))
        on_revoke: Callback = self.pipeline.on_revoke
        if wrap_revoke is not None:
            on_revoke = wrap_revoke(self.pipeline, on_revoke)
        consumer.subscribe(
            [TOPIC],
            on_assign=self.pipeline.on_assign,
            on_revoke=on_revoke,
            on_lost=self.pipeline.on_lost,
        )
        self.error: BaseException | None = None
        self.result: Stats | None = None
        self.thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.pipeline.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    @property
    def stats(self) -> Stats:
        return self.pipeline.stats

    def stop(self, timeout: float = 10.0) -> float:
        """Stop, join, assert it ended cleanly; returns the seconds the stop took."""
        started = time.monotonic()
        self.pipeline.stop()
        self.thread.join(timeout)
        took = time.monotonic() - started
        assert not self.thread.is_alive(), f"run() did not return within {timeout}s of stop()"
        if self.error is not None:
            raise self.error
        assert self.result is self.pipeline.stats
        return took


@pytest.fixture
def start() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def _start(
        config: BridgeConfig,
        consumer: FakeConsumer,
        client: FakeEventsClient | None = None,
        producer: FakeProducer | None = None,
        **kwargs: Any,
    ) -> Running:
        running = Running(
            config,
            consumer,
            producer if producer is not None else FakeProducer(),
            client if client is not None else FakeEventsClient(),
            **kwargs,
        )
        started.append(running)
        return running

    yield _start
    for running in started:  # a failed test must not leave threads blocked behind a gate
        if running.client.gate is not None:
            running.client.gate.set()
        running.producer.hold = False
        running.producer.broken = False
        running.pipeline.stop()
        running.thread.join(10)


def consumer_with(*counts: int) -> FakeConsumer:
    """A consumer of TOPIC with a partition per count, holding that many records."""
    consumer = FakeConsumer(TOPIC, partitions=len(counts))
    for partition, count in enumerate(counts):
        consumer.add_many(partition, count)
    return consumer


def revoke_recorder(
    client: FakeEventsClient,
    consumer: FakeConsumer,
    gate: threading.Event,
    seen: dict[str, Any],
) -> Callable[[Pipeline, Callback], Callback]:
    """A ``wrap_revoke`` that opens ``gate`` 0.1 s into the revoke, from another thread.

    It notes in ``seen``: ``call_index`` (calls made) and ``commits_before`` when the revoke
    starts, ``thread`` (the thread it runs in), ``took`` (seconds) and ``commits_after``.
    """

    def wrap(pipeline: Pipeline, on_revoke: Callback) -> Callback:
        def revoke(c: Any, partitions: list[Any]) -> None:
            seen["call_index"] = len(client.calls)
            seen["commits_before"] = len(consumer.commit_attempts)
            seen["thread"] = threading.current_thread().name
            threading.Timer(0.1, gate.set).start()  # another thread answers the call later
            began = time.monotonic()
            on_revoke(c, partitions)
            seen["took"] = time.monotonic() - began
            seen["commits_after"] = len(consumer.commit_attempts)

        return revoke

    return wrap


def committed_to(
    consumer: FakeConsumer, positions: dict[tuple[str, int], int]
) -> Callable[[], bool]:
    return lambda: all(consumer.committed.get(tp) == o for tp, o in positions.items())


def check_commit_history(consumer: FakeConsumer) -> None:
    """Never backwards, never for a partition not assigned at the time."""
    last: dict[tuple[str, int], int] = {}
    for attempt in consumer.commits():
        if not attempt.ok:
            continue
        for tp, offset in attempt.offsets.items():
            assert tp in attempt.assigned, f"commit of unassigned {tp}: {attempt}"
            assert offset >= last.get(tp, 0), f"commit went backwards on {tp}: {attempt}"
            last[tp] = offset


def call_error(code: str, status: int, message: str = "bad") -> ClientError:
    """A whole PutEvents call failing as botocore raises it."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutEvents",
    )


def validation_error() -> ClientError:
    return call_error("ValidationException", 400)


# ---------------------------------------------------------------------------------------- tests
def test_happy_path_batches_delivers_each_record_once_and_commits_the_end(
    start: Callable[..., Running],
) -> None:
    consumer = consumer_with(48, 47)
    run = start(make_config(), consumer)

    wait_until(committed_to(consumer, {P0: 48, P1: 47}), WAIT, "commits of 48 and 47")
    run.stop()

    calls = run.client.ids()
    assert len(calls) == 10, [len(c) for c in calls]
    assert all(1 <= len(c) <= 10 for c in calls)
    sent = Counter(i for call in calls for i in call)
    expected = {(0, o) for o in range(48)} | {(1, o) for o in range(47)}
    assert set(sent) == expected
    assert max(sent.values()) == 1, "a record was sent twice"
    assert consumer.committed == {P0: 48, P1: 47}
    assert run.stats.delivered == 95
    assert run.stats.consumed == 95
    assert run.stats.dead_lettered == 0
    assert run.producer.produced == 0
    assert run.stats.committed == {P0: 48, P1: 47}
    assert consumer.closed
    check_commit_history(consumer)


def test_each_index_is_judged_on_its_own(start: Callable[..., Running]) -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    originals = consumer.add_many(0, 3)
    originals.append(consumer.add(0, headers=[("trace", b"t-3"), ("bin", b"\xff\x00")]))
    originals.append(consumer.add(0))

    def respond(entries: list[dict[str, Any]], call_no: int) -> dict[str, Any]:
        if call_no == 0:
            return response(entries, {1: "ThrottlingException", 3: "MalformedDetail"}, call_no)
        return response(entries, {}, call_no)

    run = start(make_config(), consumer, FakeEventsClient(respond))
    wait_until(committed_to(consumer, {P0: 5}), WAIT, "commit of 5")
    run.stop()

    calls = run.client.ids()
    assert calls[0] == [(0, o) for o in range(5)]
    resent = [i for call in calls[1:] for i in call]
    assert resent == [(0, 1)], "only the throttled index may be sent again"

    assert len(run.producer.written) == 1
    dead = run.producer.written[0]
    assert dead.topic == "orders-dlq"
    assert dead.key == originals[3].key()
    assert dead.value == originals[3].value()
    assert dead.headers[:2] == [("trace", b"t-3"), ("bin", b"\xff\x00")]
    assert dead.header("code") == b"MalformedDetail"
    assert dead.header("stage") == b"send"
    assert dead.header("offset") == b"3"
    assert dead.header("partition") == b"0"
    assert dead.header("topic") == TOPIC.encode()
    assert dead.timestamp == originals[3].timestamp()[1]
    assert run.stats.delivered == 4
    assert run.stats.dead_lettered == 1
    assert run.stats.retries == 1
    assert consumer.committed == {P0: 5}
    check_commit_history(consumer)


def test_retryable_entry_is_dead_lettered_after_max_attempts_and_committed_after_the_ack(
    start: Callable[..., Running],
) -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    originals = consumer.add_many(0, 4)
    client = FakeEventsClient(per_entry(lambda i, _n: "InternalFailure" if i == (0, 2) else None))
    producer = FakeProducer()
    producer.hold = True  # delivery reports of the DLQ are not served until released
    run = start(make_config(retry={"max_attempts": 3}), consumer, client, producer)

    wait_until(lambda: len(producer) == 1, WAIT, "the dead-letter write")
    time.sleep(0.15)  # many commit rounds pass while the write is not acknowledged
    before_ack = consumer.commits()
    assert consumer.committed == {P0: 2}, "offsets 0 and 1 are finished, 2 is not"
    assert all(a.offsets.get(P0, 0) <= 2 for a in before_ack), before_ack
    producer.hold = False
    wait_until(committed_to(consumer, {P0: 4}), WAIT, "commit of 4 after the DLQ ack")
    run.stop()

    sent = Counter(i for call in client.ids() for i in call)
    assert sent[(0, 2)] == 3
    assert all(sent[(0, o)] == 1 for o in (0, 1, 3))
    assert len(producer.written) == 1
    dead = producer.written[0]
    assert dead.value == originals[2].value()
    assert dead.key == originals[2].key()
    assert dead.header("attempts") == b"3"
    assert dead.header("code") == b"InternalFailure"
    assert dead.header("stage") == b"send"
    message = (dead.header("message") or b"").decode()
    assert "3 attempts" in message, message
    assert run.stats.retries == 2
    assert run.stats.dead_lettered == 1
    check_commit_history(consumer)


def test_lost_credentials_hold_records_beyond_max_attempts(
    start: Callable[..., Running],
) -> None:
    """No credentials, a refresh STS refuses, an expired token, a denied PutEvents: held until
    they work again."""
    consumer = FakeConsumer(TOPIC, partitions=1)
    consumer.add_many(0, 3)
    sts_refused = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "AssumeRole"
    )
    expired = call_error("ExpiredTokenException", 400, "expired")
    denied = call_error("AccessDeniedException", 400, "not authorized: PutEvents")
    failures: list[BaseException] = (
        [NoCredentialsError()] * 4 + [sts_refused] * 4 + [expired] * 4 + [denied] * 4
    )

    def respond(entries: list[dict[str, Any]], call_no: int) -> Any:
        return failures[call_no] if call_no < len(failures) else response(entries, {}, call_no)

    run = start(make_config(retry={"max_attempts": 3}), consumer, FakeEventsClient(respond))
    wait_until(committed_to(consumer, {P0: 3}), WAIT, "commit of 3 once credentials work")
    run.stop()

    assert len(run.client.ids()) == len(failures) + 1  # 17 sends of the one batch
    assert run.stats.delivered == 3
    assert run.stats.dead_lettered == 0 and not run.producer.written
    check_commit_history(consumer)


def test_an_outage_holds_records_and_only_the_entries_failures_count(
    start: Callable[..., Running],
) -> None:
    """Whole calls failing for 10 sends (no connection, 5xx, throttled) with max_attempts 3:
    nothing dead-lettered for it; then one entry failing on its own is dead-lettered after
    exactly 3 counted attempts, its header saying 3, not the 13 calls that carried it."""
    consumer = FakeConsumer(TOPIC, partitions=1)
    consumer.add_many(0, 3)
    unavailable = call_error("ServiceUnavailable", 503, "down")
    throttled = call_error("ThrottlingException", 400, "Rate exceeded")
    outage: list[BaseException] = (
        [EndpointConnectionError(endpoint_url="http://x")] * 4 + [unavailable] * 4 + [throttled] * 2
    )

    def respond(entries: list[dict[str, Any]], call_no: int) -> Any:
        if call_no < len(outage):
            return outage[call_no]
        return response(
            entries,
            {i: "InternalFailure" for i, e in enumerate(entries) if ident(e) == (0, 1)},
            call_no,
        )

    producer = FakeProducer()
    run = start(
        make_config(retry={"max_attempts": 3}), consumer, FakeEventsClient(respond), producer
    )
    wait_until(committed_to(consumer, {P0: 3}), WAIT, "commit of 3 after the outage")
    run.stop()

    sent = Counter(i for call in run.client.ids() for i in call)
    assert sent[(0, 1)] == len(outage) + 3
    assert run.stats.delivered == 2
    assert len(producer.written) == 1
    dead = producer.written[0]
    assert dead.header("offset") == b"1"
    assert dead.header("code") == b"InternalFailure"
    assert dead.header("attempts") == b"3"
    check_commit_history(consumer)


def test_whole_call_validation_error_sends_each_entry_alone(
    start: Callable[..., Running],
) -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    originals = consumer.add_many(0, 3)

    def respond(entries: list[dict[str, Any]], call_no: int) -> Any:
        ids = [ident(e) for e in entries]
        if len(ids) > 1 or ids == [(0, 1)]:
            return validation_error()
        return response(entries, {}, call_no)

    run = start(make_config(), consumer, FakeEventsClient(respond))
    wait_until(committed_to(consumer, {P0: 3}), WAIT, "commit of 3")
    run.stop()

    calls = run.client.ids()
    assert calls[0] == [(0, 0), (0, 1), (0, 2)]
    assert sorted(calls[1:]) == [[(0, 0)], [(0, 1)], [(0, 2)]]
    assert len(run.producer.written) == 1
    dead = run.producer.written[0]
    assert dead.value == originals[1].value()
    assert dead.header("code") == b"ValidationException"
    assert dead.header("stage") == b"send"
    assert run.stats.delivered == 2
    assert run.stats.dead_lettered == 1
    assert consumer.committed == {P0: 3}
    check_commit_history(consumer)


def test_split_culprit_attempts_header_counts_every_call_that_carried_it(
    start: Callable[..., Running],
) -> None:
    consumer = consumer_with(3)

    def respond(entries: list[dict[str, Any]], call_no: int) -> Any:
        if len(entries) > 1 or ident(entries[0]) == (0, 1):
            return validation_error()
        return response(entries, {}, call_no)

    run = start(make_config(), consumer, FakeEventsClient(respond))
    wait_until(committed_to(consumer, {P0: 3}), WAIT, "commit of 3")
    run.stop()

    carried = sum(1 for call in run.client.ids() for i in call if i == (0, 1))
    assert carried == 2
    assert run.producer.written[0].header("attempts") == str(carried).encode()


def test_unwritable_dead_letter_topic_holds_the_commit_until_it_is_written(
    start: Callable[..., Running],
) -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    for offset in range(10):
        consumer.add(0, value=b"not json {" if offset == 5 else None)
    producer = FakeProducer()
    producer.broken = True
    run = start(make_config(), consumer, producer=producer)

    wait_until(lambda: run.stats.dlq_write_failures >= 3, WAIT, "repeated DLQ write failures")
    wait_until(committed_to(consumer, {P0: 5}), WAIT, "commit of the prefix before offset 5")
    time.sleep(0.1)
    while_broken = consumer.commits()
    assert all(a.offsets.get(P0, 0) <= 5 for a in while_broken), while_broken
    assert producer.written_snapshot() == []
    assert run.stats.dlq_write_failures > 0

    producer.broken = False
    wait_until(committed_to(consumer, {P0: 10}), WAIT, "commit of 10 once the DLQ works")
    run.stop()

    dead = [r for r in producer.written if r.value == b"not json {"]
    assert len(dead) == 1, producer.written
    assert len(producer.written) == 1
    assert dead[0].header("code") == b"ValueNotJson"
    assert dead[0].header("stage") == b"decode"
    assert dead[0].header("offset") == b"5"
    assert run.stats.dead_lettered == 1
    assert run.stats.delivered == 9
    assert consumer.committed == {P0: 10}
    check_commit_history(consumer)


def test_revoke_waits_for_the_call_in_flight_commits_it_and_sends_no_more(
    start: Callable[..., Running],
) -> None:
    consumer = consumer_with(10, 20)
    gate = threading.Event()
    client = FakeEventsClient(gate=gate)
    seen: dict[str, Any] = {}
    wrap = revoke_recorder(client, consumer, gate, seen)
    run = start(make_config(), consumer, client, wrap_revoke=wrap)
    # 30 records, round-robin: two batches carry partition 0, a third only partition 1.
    wait_until(lambda: client.waiting == 3, WAIT, "three calls blocked in flight")
    in_flight = client.ids()
    assert {o for call in in_flight for (p, o) in call if p == 0} == set(range(10))
    consumer.schedule_revoke([0])
    wait_until(lambda: "commits_after" in seen, WAIT, "the revoke to finish")
    assert seen["thread"] == "pipeline", "rebalance callbacks run inside consume"
    assert seen["took"] >= 0.08, "the revoke must wait for the call in flight"

    consumer.add_many(1, 20)  # partition 1 keeps flowing
    wait_until(committed_to(consumer, {P1: 40}), WAIT, "partition 1 committed to its end")
    run.stop()

    calls = client.ids()
    assert seen["call_index"] == 3
    after = [i for call in calls[seen["call_index"] :] for i in call]
    assert all(p == 1 for p, _ in after), "an entry of the revoked partition was sent after"
    during = consumer.commit_attempts[seen["commits_before"] : seen["commits_after"]]
    assert any(a.ok and a.offsets.get(P0) == 10 for a in during), during
    later = consumer.commit_attempts[seen["commits_after"] :]
    assert all(P0 not in a.offsets for a in later), "commit of a partition no longer owned"
    assert consumer.committed == {P0: 10, P1: 40}
    sent_p1 = Counter(o for call in calls for (p, o) in call if p == 1)
    assert sorted(sent_p1) == list(range(40))
    assert max(sent_p1.values()) == 1
    assert consumer.revocations == [[P0]]
    assert client.gate_timeouts == 0
    check_commit_history(consumer)


def test_revoke_drops_a_retry_of_the_revoked_partition_and_commits_before_it(
    start: Callable[..., Running],
) -> None:
    consumer = consumer_with(5, 5)
    gate = threading.Event()
    throttle = {(0, 2), (1, 2)}
    client = FakeEventsClient(
        per_entry(lambda i, n: "ThrottlingException" if n == 0 and i in throttle else None),
        gate=gate,
    )
    seen: dict[str, Any] = {}
    wrap = revoke_recorder(client, consumer, gate, seen)
    run = start(make_config(), consumer, client, wrap_revoke=wrap)
    wait_until(lambda: client.waiting == 1, WAIT, "one call of 10 entries blocked in flight")
    consumer.schedule_revoke([0])
    wait_until(lambda: "commits_after" in seen, WAIT, "the revoke to finish")
    wait_until(committed_to(consumer, {P1: 5}), WAIT, "partition 1 committed to its end")
    run.stop()

    calls = client.ids()
    assert seen["call_index"] == 1
    assert all(p == 1 for call in calls[1:] for p, _ in call), calls
    assert Counter(i for call in calls for i in call)[(1, 2)] == 2, "partition 1 still retries"
    during = consumer.commit_attempts[seen["commits_before"] : seen["commits_after"]]
    assert any(a.ok and a.offsets.get(P0) == 2 for a in during), during
    assert consumer.committed == {P0: 2, P1: 5}
    assert run.producer.produced == 0, "a revoked entry is the new owner's, not a dead letter"
    check_commit_history(consumer)


def test_lost_partition_is_never_committed_and_never_sent_again(
    start: Callable[..., Running],
) -> None:
    consumer = consumer_with(5, 5)
    gate = threading.Event()
    client = FakeEventsClient(gate=gate)
    run = start(make_config(), consumer, client)

    wait_until(lambda: client.waiting == 1, WAIT, "one call blocked in flight")
    commits_before = len(consumer.commits())
    threading.Timer(0.1, gate.set).start()  # on_lost, too, awaits the call in flight
    consumer.schedule_revoke([0], lost=True)
    wait_until(lambda: consumer.revocations, WAIT, "the partition to be lost")
    consumer.add_many(1, 5)
    wait_until(committed_to(consumer, {P1: 10}), WAIT, "partition 1 committed to its end")
    run.stop()

    assert commits_before == 0
    assert all(P0 not in a.offsets for a in consumer.commits()), consumer.commits()
    assert P0 not in consumer.committed
    calls = client.ids()
    assert all(p == 1 for call in calls[1:] for p, _ in call), calls
    check_commit_history(consumer)


def test_backpressure_pauses_fetching_at_max_buffered_records(
    start: Callable[..., Running],
) -> None:
    consumer = consumer_with(50, 50)
    gate = threading.Event()
    client = FakeEventsClient(gate=gate)
    run = start(make_config(pipeline={"max_buffered_records": 20}), consumer, client)

    wait_until(lambda: consumer.ever_paused, WAIT, "the consumer to be paused")
    wait_until(lambda: client.waiting == 2, WAIT, "two calls blocked")
    time.sleep(0.2)
    assert len(consumer.handed_out) == 20
    assert consumer.paused == {P0, P1}
    assert all(h <= 20 + c for h, c in consumer.handout_log), consumer.handout_log

    gate.set()
    wait_until(committed_to(consumer, {P0: 50, P1: 50}), WAIT, "everything committed")
    run.stop()

    assert all(h <= 20 + c for h, c in consumer.handout_log), consumer.handout_log
    sent = Counter(i for call in client.ids() for i in call)
    assert len(sent) == 100
    assert max(sent.values()) == 1
    assert run.stats.delivered == 100
    check_commit_history(consumer)


def test_a_buffer_full_for_a_moment_holds_fetching_without_pausing(
    start: Callable[..., Running],
) -> None:
    """Calls that answer within a second: the loop takes no records while the buffer is full
    but does not pause the partitions (librdkafka would drop what it fetched for them)."""
    consumer = consumer_with(300, 300)

    def slow(entries: list[dict[str, Any]], call_no: int) -> dict[str, Any]:
        time.sleep(0.05)
        return accept_all(entries, call_no)

    client = FakeEventsClient(slow)
    run = start(make_config(pipeline={"max_buffered_records": 20}), consumer, client)
    wait_until(committed_to(consumer, {P0: 300, P1: 300}), 20, "everything committed")
    run.stop()

    assert not consumer.ever_paused
    assert all(h <= 20 + c for h, c in consumer.handout_log), consumer.handout_log
    assert run.stats.delivered == 600
    check_commit_history(consumer)


def test_partition_revoked_while_paused_and_assigned_back_is_fetched_again(
    start: Callable[..., Running],
) -> None:
    """librdkafka keeps a partition's pause flag across revoke and re-assign (librdkafka#1849;
    the fake does too). A partition taken away while fetching was paused (backpressure) and
    given back after the pipeline resumed what it held then must be fetched again: the
    pipeline clears the flag on revoke and sets it explicitly on assign (500e2a6)."""
    consumer = FakeConsumer(TOPIC, partitions=2)
    consumer.add_many(0, 30)
    consumer.add_many(1, 30)
    gate = threading.Event()
    client = FakeEventsClient(gate=gate)
    seen: dict[str, Any] = {}

    def wrap(pipeline: Pipeline, on_revoke: Callback) -> Callback:
        def revoke(c: Any, partitions: list[Any]) -> None:
            seen["paused"] = consumer.paused
            threading.Timer(0.05, gate.set).start()  # the revoke waits for the calls in flight
            on_revoke(c, partitions)

        return revoke

    config = make_config(pipeline={"max_buffered_records": 20})
    run = start(config, consumer, client, wrap_revoke=wrap)
    # 1. Calls that do not answer fill the buffer: fetching paused on both partitions.
    wait_until(lambda: consumer.paused == {P0, P1}, WAIT, "fetching paused (buffer full)")
    # 2. Partition 0 is taken away while paused. The calls answer, the buffer empties, and the
    # pipeline resumes fetching what it holds now: partition 1.
    consumer.schedule_revoke([0])
    wait_until(committed_to(consumer, {P1: 30}), WAIT, "partition 1 fetched to its end")
    assert seen["paused"] == {P0, P1}, "the revoke came while fetching was paused"
    revoked_at = consumer.committed[P0]
    # 3. Partition 0 comes back, with new records.
    consumer.add_many(0, 5)
    consumer.schedule_assign([0])
    wait_until(committed_to(consumer, {P0: 35}), WAIT, "partition 0 fetched again once back")
    run.stop()

    assert revoked_at == 10, "the revoke committed what partition 0 had finished"
    assert consumer.revocations == [[P0]]
    sent = Counter(i for call in client.ids() for i in call)
    assert sorted(sent) == [(p, o) for p in (0, 1) for o in range(30 + 5 * (p == 0))]
    assert max(sent.values()) == 1
    check_commit_history(consumer)


def test_failed_commit_is_retried(start: Callable[..., Running]) -> None:
    consumer = consumer_with(25)
    consumer.fail_commits = 1
    run = start(make_config(), consumer)

    wait_until(committed_to(consumer, {P0: 25}), WAIT, "commit of 25")
    run.stop()

    attempts = consumer.commits()
    assert not attempts[0].ok
    assert any(a.ok for a in attempts[1:])
    assert consumer.committed == {P0: 25}
    assert run.stats.committed == {P0: 25}
    assert run.stats.delivered == 25
    check_commit_history(consumer)


def test_stop_sends_the_open_batch(start: Callable[..., Running]) -> None:
    consumer = consumer_with(15)
    config = make_config(batch={"linger_ms": 10_000}, pipeline={"shutdown_timeout_s": 3})
    run = start(config, consumer)

    # Records 0-9 fill a batch and go at once; 10-14 wait in the open batch for 10 s of linger.
    wait_until(committed_to(consumer, {P0: 10}), WAIT, "the full batch delivered")
    assert len(run.client.calls) == 1
    took = run.stop()

    assert took < 3.0
    assert consumer.closed
    assert run.client.ids()[1:] == [[(0, o) for o in range(10, 15)]]
    assert run.stats.delivered == 15
    assert consumer.committed == {P0: 15}
    check_commit_history(consumer)


def test_stop_drains_scheduled_retries_and_the_open_batch(start: Callable[..., Running]) -> None:
    consumer = consumer_with(15)

    def respond(entries: list[dict[str, Any]], call_no: int) -> dict[str, Any]:
        return response(entries, {2: "ThrottlingException"} if call_no == 0 else {}, call_no)

    client = FakeEventsClient(respond)
    config = make_config(
        batch={"linger_ms": 10_000},  # the last 5 records stay in the open batch
        retry={"initial_backoff_ms": 300, "max_backoff_ms": 300},
        pipeline={"shutdown_timeout_s": 3},
    )
    run = start(config, consumer, client)

    # First call: records 0-9 (a full batch); 10-14 wait in the open batch; 2 is throttled.
    wait_until(lambda: run.stats.retries == 1, WAIT, "the throttled entry scheduled for retry")
    assert len(client.calls) == 1
    assert consumer.committed.get(P0, 0) <= 2
    took = run.stop()

    assert took < 3.0 + 1.0
    assert consumer.closed
    sent = Counter(i for call in client.ids() for i in call)
    assert sent[(0, 2)] == 2
    assert all(sent[(0, o)] == 1 for o in range(15) if o != 2)
    assert run.stats.delivered == 15
    assert consumer.committed == {P0: 15}
    check_commit_history(consumer)


def test_consumer_going_back_restarts_the_partition_without_loss(
    start: Callable[..., Running],
) -> None:
    consumer = consumer_with(30)
    gate = threading.Event()
    run = start(make_config(), consumer, client=FakeEventsClient(gate=gate))
    wait_until(lambda: len(consumer.handed_out) == 30, WAIT, "30 records handed out")
    consumer.rewind(0, 0)  # an offset reset: offset 0 comes again after 29
    wait_until(lambda: len(consumer.handed_out) == 60, WAIT, "the records handed out again")
    gate.set()
    wait_until(committed_to(consumer, {P0: 30}), WAIT, "commit of 30")
    run.stop()
    assert run.thread is not None and not run.thread.is_alive()
    assert set(run.client.delivered()) == {(0, o) for o in range(30)}
    assert run.stats.dead_lettered == 0
    check_commit_history(consumer)


def test_ceiling_on_entries_per_second_holds(start: Callable[..., Running]) -> None:
    consumer = consumer_with(400)
    run = start(make_config(pipeline={"max_entries_per_second": 400}), consumer)
    began = time.monotonic()
    wait_until(committed_to(consumer, {P0: 400}), 10, "commit of 400")
    elapsed = time.monotonic() - began
    run.stop()
    # 400 entries at 400/s with a 40-entry burst allowance cannot take less than 0.9 s
    assert elapsed >= 0.85, f"sent 400 entries in {elapsed:.2f}s, faster than 400/s"
    assert run.stats.delivered == 400


def test_throttling_lowers_the_send_rate_which_recovers(start: Callable[..., Running]) -> None:
    consumer = consumer_with(300)
    storm = threading.Event()
    storm.set()

    def respond(entries: Sequence[dict[str, Any]], call_no: int) -> dict[str, Any]:
        throttle = storm.is_set() and call_no > 5
        errors = dict.fromkeys(range(len(entries)), "ThrottlingException") if throttle else {}
        return response(entries, errors, call_no)

    run = start(
        make_config(pipeline={"rate_increase_per_second": 50, "min_entries_per_second": 20}),
        consumer,
        client=FakeEventsClient(respond),
    )
    wait_until(
        lambda: run.pipeline.metrics.rate_limit._value.get() < float("inf"),
        WAIT,
        "the adaptive limit to engage",
    )
    throttled_limit = run.pipeline.metrics.rate_limit._value.get()
    storm.clear()
    wait_until(committed_to(consumer, {P0: 300}), 30, "everything delivered after the storm")
    run.stop()
    assert throttled_limit >= 20
    assert run.stats.delivered == 300 and run.stats.dead_lettered == 0
    check_commit_history(consumer)

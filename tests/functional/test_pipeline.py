"""The functional tier: the real Pipeline against in-memory fakes of Kafka, the DLQ and AWS.

Each test drives the pipeline one step at a time on simulated time (:mod:`sim`): no threads, no
sleeps, the same result on every run. Nothing touches the network.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from fakes import (
    FakeConsumer,
    FakeEventsClient,
    FakeProducer,
    ident,
    per_entry,
    response,
)
from scenario import (
    P0,
    P1,
    TOPIC,
    call_error,
    check_commit_history,
    committed_to,
    consumer_with,
    make_config,
    validation_error,
)
from sim import Callback, World

FIXED_4 = {"adaptive_concurrency": False, "max_in_flight_calls": 4}
"""Four calls in flight from the start (the adaptive limit starts at one and grows with answers:
tests that hold calls unanswered need several in flight at once)."""


def revoke_recorder(seen: dict[str, Any]) -> Callable[[World, Callback], Callback]:
    """A ``wrap_revoke`` noting in ``seen``: ``call_index`` (calls made) and ``commits_before``
    when the revoke starts, ``took`` (simulated seconds) and ``commits_after``."""

    def wrap(world: World, on_revoke: Callback) -> Callback:
        def revoke(c: Any, partitions: list[Any]) -> None:
            seen["call_index"] = len(world.client.calls)
            seen["commits_before"] = len(world.consumer.commit_attempts)
            began = world.clock.now
            on_revoke(c, partitions)
            seen["took"] = world.clock.now - began
            seen["commits_after"] = len(world.consumer.commit_attempts)

        return revoke

    return wrap


# ---------------------------------------------------------------------------------------- tests
def test_happy_path_batches_delivers_each_record_once_and_commits_the_end() -> None:
    consumer = consumer_with(48, 47)
    world = World(make_config(), consumer)

    world.until(committed_to(consumer, {P0: 48, P1: 47}), "commits of 48 and 47")
    world.stop()

    calls = world.client.ids()
    assert len(calls) == 10, [len(c) for c in calls]
    assert all(1 <= len(c) <= 10 for c in calls)
    sent = Counter(i for call in calls for i in call)
    expected = {(0, o) for o in range(48)} | {(1, o) for o in range(47)}
    assert set(sent) == expected
    assert max(sent.values()) == 1, "a record was sent twice"
    assert consumer.committed_offsets == {P0: 48, P1: 47}
    assert world.stats.delivered == 95
    assert world.stats.consumed == 95
    assert world.stats.dead_lettered == 0
    assert world.producer.produced == 0
    assert world.stats.committed == {P0: 48, P1: 47}
    assert consumer.closed
    check_commit_history(consumer)


def test_each_index_is_judged_on_its_own() -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    originals = consumer.add_many(0, 3)
    originals.append(consumer.add(0, headers=[("trace", b"t-3"), ("bin", b"\xff\x00")]))
    originals.append(consumer.add(0))

    def respond(entries: list[dict[str, Any]], call_no: int) -> dict[str, Any]:
        if call_no == 0:
            return response(entries, {1: "ThrottlingException", 3: "MalformedDetail"}, call_no)
        return response(entries, {}, call_no)

    world = World(make_config(), consumer, FakeEventsClient(respond))
    world.until(committed_to(consumer, {P0: 5}), "commit of 5")
    world.stop()

    calls = world.client.ids()
    assert calls[0] == [(0, o) for o in range(5)]
    resent = [i for call in calls[1:] for i in call]
    assert resent == [(0, 1)], "only the throttled index may be sent again"

    assert len(world.producer.written) == 1
    dead = world.producer.written[0]
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
    assert world.stats.delivered == 4
    assert world.stats.dead_lettered == 1
    assert world.stats.retries == 1
    assert consumer.committed_offsets == {P0: 5}
    check_commit_history(consumer)


def test_retryable_entry_is_dead_lettered_after_max_attempts_and_committed_after_the_ack() -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    originals = consumer.add_many(0, 4)
    client = FakeEventsClient(per_entry(lambda i, _n: "InternalFailure" if i == (0, 2) else None))
    producer = FakeProducer()
    producer.hold = True  # delivery reports of the DLQ are not served until released
    world = World(make_config(retry={"max_attempts": 3}), consumer, client, producer)

    world.until(lambda: len(producer) == 1, "the dead-letter write")
    world.run_for(0.15)  # many commit rounds pass while the write is not acknowledged
    before_ack = consumer.commits()
    assert consumer.committed_offsets == {P0: 2}, "offsets 0 and 1 are finished, 2 is not"
    assert all(a.offsets.get(P0, 0) <= 2 for a in before_ack), before_ack
    producer.hold = False
    world.until(committed_to(consumer, {P0: 4}), "commit of 4 after the DLQ ack")
    world.stop()

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
    assert world.stats.retries == 2
    assert world.stats.dead_lettered == 1
    check_commit_history(consumer)


def test_lost_credentials_hold_records_beyond_max_attempts() -> None:
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

    world = World(make_config(retry={"max_attempts": 3}), consumer, FakeEventsClient(respond))
    world.until(committed_to(consumer, {P0: 3}), "commit of 3 once credentials work", 120)
    world.stop()

    assert len(world.client.ids()) > len(failures), "every failure was answered to a call"
    assert sorted(world.client.delivered()) == [(0, 0), (0, 1), (0, 2)]
    assert world.stats.delivered == 3
    assert world.stats.dead_lettered == 0 and not world.producer.written
    check_commit_history(consumer)


def test_an_outage_holds_records_and_only_the_entries_failures_count() -> None:
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
    world = World(
        make_config(retry={"max_attempts": 3}), consumer, FakeEventsClient(respond), producer
    )
    world.until(committed_to(consumer, {P0: 3}), "commit of 3 after the outage")
    world.stop()

    ids = world.client.ids()
    sent = Counter(i for call in ids for i in call)
    held = sum(1 for n, call in enumerate(ids) if n < len(outage) and (0, 1) in call)
    assert held >= 5, "the entry was carried through the outage"
    assert sent[(0, 1)] == held + 3
    assert world.stats.delivered == 2
    assert len(producer.written) == 1
    dead = producer.written[0]
    assert dead.header("offset") == b"1"
    assert dead.header("code") == b"InternalFailure"
    assert dead.header("attempts") == b"3"
    check_commit_history(consumer)


def test_whole_call_validation_error_sends_each_entry_alone() -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    originals = consumer.add_many(0, 3)

    def respond(entries: list[dict[str, Any]], call_no: int) -> Any:
        ids = [ident(e) for e in entries]
        if len(ids) > 1 or ids == [(0, 1)]:
            return validation_error()
        return response(entries, {}, call_no)

    world = World(make_config(), consumer, FakeEventsClient(respond))
    world.until(committed_to(consumer, {P0: 3}), "commit of 3")
    world.stop()

    calls = world.client.ids()
    assert calls[0] == [(0, 0), (0, 1), (0, 2)]
    assert sorted(calls[1:]) == [[(0, 0)], [(0, 1)], [(0, 2)]]
    assert len(world.producer.written) == 1
    dead = world.producer.written[0]
    assert dead.value == originals[1].value()
    assert dead.header("code") == b"ValidationException"
    assert dead.header("stage") == b"send"
    assert world.stats.delivered == 2
    assert world.stats.dead_lettered == 1
    assert consumer.committed_offsets == {P0: 3}
    check_commit_history(consumer)


def test_split_culprit_attempts_header_counts_every_call_that_carried_it() -> None:
    consumer = consumer_with(3)

    def respond(entries: list[dict[str, Any]], call_no: int) -> Any:
        if len(entries) > 1 or ident(entries[0]) == (0, 1):
            return validation_error()
        return response(entries, {}, call_no)

    world = World(make_config(), consumer, FakeEventsClient(respond))
    world.until(committed_to(consumer, {P0: 3}), "commit of 3")
    world.stop()

    carried = sum(1 for call in world.client.ids() for i in call if i == (0, 1))
    assert carried == 2
    assert world.producer.written[0].header("attempts") == str(carried).encode()


def test_unwritable_dead_letter_topic_holds_the_commit_until_it_is_written() -> None:
    consumer = FakeConsumer(TOPIC, partitions=1)
    for offset in range(10):
        consumer.add(0, value=b"not json {" if offset == 5 else None)
    producer = FakeProducer()
    producer.broken = True
    world = World(make_config(), consumer, producer=producer)

    world.until(lambda: world.stats.dlq_write_failures >= 3, "repeated DLQ write failures")
    world.until(committed_to(consumer, {P0: 5}), "commit of the prefix before offset 5")
    world.run_for(0.1)
    while_broken = consumer.commits()
    assert all(a.offsets.get(P0, 0) <= 5 for a in while_broken), while_broken
    assert producer.written_snapshot() == []
    assert world.stats.dlq_write_failures > 0

    producer.broken = False
    world.until(committed_to(consumer, {P0: 10}), "commit of 10 once the DLQ works")
    world.stop()

    dead = [r for r in producer.written if r.value == b"not json {"]
    assert len(dead) == 1, producer.written
    assert len(producer.written) == 1
    assert dead[0].header("code") == b"ValueNotJson"
    assert dead[0].header("stage") == b"decode"
    assert dead[0].header("offset") == b"5"
    assert world.stats.dead_lettered == 1
    assert world.stats.delivered == 9
    assert consumer.committed_offsets == {P0: 10}
    check_commit_history(consumer)


def test_revoke_waits_for_the_call_in_flight_commits_it_and_sends_no_more() -> None:
    consumer = consumer_with(10, 20)
    seen: dict[str, Any] = {}
    config = make_config(pipeline=FIXED_4)
    world = World(config, consumer, latency=0.1, wrap_revoke=revoke_recorder(seen))
    # 30 records, round-robin: two batches carry partition 0, a third only partition 1.
    world.until(lambda: world.calls.in_flight == 3, "three calls in flight")
    in_flight = world.client.ids()
    assert {o for call in in_flight for (p, o) in call if p == 0} == set(range(10))
    consumer.schedule_revoke([0])
    world.until(lambda: "commits_after" in seen, "the revoke to finish")
    assert seen["took"] >= 0.09, "the revoke must wait for the calls in flight"

    consumer.add_many(1, 20)  # partition 1 keeps flowing
    world.until(committed_to(consumer, {P1: 40}), "partition 1 committed to its end")
    world.stop()

    calls = world.client.ids()
    assert seen["call_index"] == 3
    after = [i for call in calls[seen["call_index"] :] for i in call]
    assert all(p == 1 for p, _ in after), "an entry of the revoked partition was sent after"
    during = consumer.commit_attempts[seen["commits_before"] : seen["commits_after"]]
    assert any(a.ok and a.offsets.get(P0) == 10 for a in during), during
    later = consumer.commit_attempts[seen["commits_after"] :]
    assert all(P0 not in a.offsets for a in later), "commit of a partition no longer owned"
    assert consumer.committed_offsets == {P0: 10, P1: 40}
    sent_p1 = Counter(o for call in calls for (p, o) in call if p == 1)
    assert sorted(sent_p1) == list(range(40))
    assert max(sent_p1.values()) == 1
    assert consumer.revocations == [[P0]]
    check_commit_history(consumer)


def test_revoke_drops_a_retry_of_the_revoked_partition_and_commits_before_it() -> None:
    consumer = consumer_with(5, 5)
    throttle = {(0, 2), (1, 2)}
    client = FakeEventsClient(
        per_entry(lambda i, n: "ThrottlingException" if n == 0 and i in throttle else None)
    )
    seen: dict[str, Any] = {}
    world = World(make_config(), consumer, client, latency=0.1, wrap_revoke=revoke_recorder(seen))
    world.until(lambda: world.calls.in_flight == 1, "one call of 10 entries in flight")
    consumer.schedule_revoke([0])
    world.until(lambda: "commits_after" in seen, "the revoke to finish")
    world.until(committed_to(consumer, {P1: 5}), "partition 1 committed to its end")
    world.stop()

    calls = client.ids()
    assert seen["call_index"] == 1
    assert all(p == 1 for call in calls[1:] for p, _ in call), calls
    assert Counter(i for call in calls for i in call)[(1, 2)] == 2, "partition 1 still retries"
    during = consumer.commit_attempts[seen["commits_before"] : seen["commits_after"]]
    assert any(a.ok and a.offsets.get(P0) == 2 for a in during), during
    assert consumer.committed_offsets == {P0: 2, P1: 5}
    assert world.producer.produced == 0, "a revoked entry is the new owner's, not a dead letter"
    check_commit_history(consumer)


def test_lost_partition_is_never_committed_and_never_sent_again() -> None:
    consumer = consumer_with(5, 5)
    world = World(make_config(), consumer, latency=0.1)

    world.until(lambda: world.calls.in_flight == 1, "one call in flight")
    commits_before = len(consumer.commits())
    consumer.schedule_revoke([0], lost=True)  # on_lost, too, awaits the call in flight
    world.until(lambda: consumer.revocations, "the partition to be lost")
    consumer.add_many(1, 5)
    world.until(committed_to(consumer, {P1: 10}), "partition 1 committed to its end")
    world.stop()

    assert commits_before == 0
    assert all(P0 not in a.offsets for a in consumer.commits()), consumer.commits()
    assert P0 not in consumer.committed_offsets
    calls = world.client.ids()
    assert all(p == 1 for call in calls[1:] for p, _ in call), calls
    check_commit_history(consumer)


def test_backpressure_pauses_fetching_at_max_buffered_records() -> None:
    consumer = consumer_with(50, 50)
    config = make_config(pipeline={"max_buffered_records": 20, **FIXED_4})
    world = World(config, consumer)
    world.calls.held = True  # calls that do not answer

    world.until(lambda: consumer.ever_paused, "the consumer to be paused")
    world.until(lambda: world.calls.in_flight == 2, "two calls in flight")
    world.run_for(0.2)
    assert len(consumer.handed_out) == 19  # the takes leave 1 for the polls of a full buffer
    assert consumer.paused == {P0, P1}
    assert all(h <= 20 + c for h, c in consumer.handout_log), consumer.handout_log

    world.calls.held = False
    world.until(committed_to(consumer, {P0: 50, P1: 50}), "everything committed")
    world.stop()

    assert all(h <= 20 + c for h, c in consumer.handout_log), consumer.handout_log
    sent = Counter(i for call in world.client.ids() for i in call)
    assert len(sent) == 100
    assert max(sent.values()) == 1
    assert world.stats.delivered == 100
    check_commit_history(consumer)


@pytest.mark.parametrize("async_commits", [False, True], ids=["synchronous", "asynchronous"])
def test_a_buffer_full_for_a_moment_holds_fetching_without_pausing(async_commits: bool) -> None:
    """Calls that answer within a second: the loop takes no records while the buffer is full
    but does not pause the partitions (librdkafka would drop what it fetched for them). With
    asynchronous commits the answer that frees the buffer comes only in a poll: the loop polls
    while full and a commit is under way (and takes what that poll returns, a record at most
    per turn, within the reserve the takes leave: the bound holds)."""
    consumer = consumer_with(300, 300)
    config = make_config(pipeline={"max_buffered_records": 20})
    world = World(config, consumer, latency=0.05, async_commits=async_commits)
    world.until(committed_to(consumer, {P0: 300, P1: 300}), "everything committed", within=60)
    world.stop()

    assert not consumer.ever_paused
    assert all(h <= 20 + c for h, c in consumer.handout_log), consumer.handout_log
    assert world.stats.delivered == 600
    check_commit_history(consumer)


def test_partition_revoked_while_paused_and_assigned_back_is_fetched_again() -> None:
    """librdkafka keeps a partition's pause flag across revoke and re-assign (librdkafka#1849;
    the fake does too). A partition taken away while fetching was paused (backpressure) and
    given back after the pipeline resumed what it held then must be fetched again: the
    pipeline clears the flag on revoke and sets it explicitly on assign (500e2a6)."""
    consumer = FakeConsumer(TOPIC, partitions=2)
    consumer.add_many(0, 30)
    consumer.add_many(1, 30)
    seen: dict[str, Any] = {}

    def wrap(world: World, on_revoke: Callback) -> Callback:
        def revoke(c: Any, partitions: list[Any]) -> None:
            seen["paused"] = consumer.paused
            world.calls.held = False  # the revoke waits for the calls in flight
            on_revoke(c, partitions)

        return revoke

    config = make_config(pipeline={"max_buffered_records": 20, **FIXED_4})
    world = World(config, consumer, wrap_revoke=wrap)
    world.calls.held = True
    # 1. Calls that do not answer fill the buffer: fetching paused on both partitions.
    world.until(lambda: consumer.paused == {P0, P1}, "fetching paused (buffer full)")
    # 2. Partition 0 is taken away while paused. The calls answer, the buffer empties, and the
    # pipeline resumes fetching what it holds now: partition 1.
    consumer.schedule_revoke([0])
    world.until(committed_to(consumer, {P1: 30}), "partition 1 fetched to its end")
    assert seen["paused"] == {P0, P1}, "the revoke came while fetching was paused"
    revoked_at = consumer.committed_offsets[P0]
    # 3. Partition 0 comes back, with new records.
    consumer.add_many(0, 5)
    consumer.schedule_assign([0])
    world.until(committed_to(consumer, {P0: 35}), "partition 0 fetched again once back")
    world.stop()

    assert revoked_at == 10, "the revoke committed what partition 0 had finished"
    assert consumer.revocations == [[P0]]
    sent = Counter(i for call in world.client.ids() for i in call)
    assert sorted(sent) == [(p, o) for p in (0, 1) for o in range(30 + 5 * (p == 0))]
    assert max(sent.values()) == 1
    check_commit_history(consumer)


def test_failed_commit_is_retried() -> None:
    consumer = consumer_with(25)
    consumer.fail_commits = 1
    world = World(make_config(), consumer)

    world.until(committed_to(consumer, {P0: 25}), "commit of 25")
    world.stop()

    attempts = consumer.commits()
    assert not attempts[0].ok
    assert any(a.ok for a in attempts[1:])
    assert consumer.committed_offsets == {P0: 25}
    assert world.stats.committed == {P0: 25}
    assert world.stats.delivered == 25
    check_commit_history(consumer)


def test_stop_sends_the_open_batch() -> None:
    consumer = consumer_with(15)
    config = make_config(batch={"linger_ms": 10_000}, pipeline={"shutdown_timeout_s": 3})
    world = World(config, consumer)

    # Records 0-9 fill a batch and go at once; 10-14 wait in the open batch for 10 s of linger.
    world.until(committed_to(consumer, {P0: 10}), "the full batch delivered")
    assert len(world.client.calls) == 1
    took = world.stop()

    assert took < 3.0
    assert consumer.closed
    assert world.client.ids()[1:] == [[(0, o) for o in range(10, 15)]]
    assert world.stats.delivered == 15
    assert consumer.committed_offsets == {P0: 15}
    check_commit_history(consumer)


def test_stop_drains_scheduled_retries_and_the_open_batch() -> None:
    consumer = consumer_with(15)

    def respond(entries: list[dict[str, Any]], call_no: int) -> dict[str, Any]:
        return response(entries, {2: "ThrottlingException"} if call_no == 0 else {}, call_no)

    client = FakeEventsClient(respond)
    config = make_config(
        batch={"linger_ms": 10_000},  # the last 5 records stay in the open batch
        retry={"initial_backoff_ms": 300, "max_backoff_ms": 300},
        pipeline={"shutdown_timeout_s": 3},
    )
    world = World(config, consumer, client)

    # First call: records 0-9 (a full batch); 10-14 wait in the open batch; 2 is throttled.
    world.until(lambda: world.stats.retries == 1, "the throttled entry scheduled for retry")
    assert len(client.calls) == 1
    assert consumer.committed_offsets.get(P0, 0) <= 2
    took = world.stop()

    assert 0.15 <= took < 3.0, "the close waits for the retry's backoff, within the deadline"
    assert consumer.closed
    sent = Counter(i for call in client.ids() for i in call)
    assert sent[(0, 2)] == 2
    assert all(sent[(0, o)] == 1 for o in range(15) if o != 2)
    assert world.stats.delivered == 15
    assert consumer.committed_offsets == {P0: 15}
    check_commit_history(consumer)


def test_stop_gives_up_what_does_not_finish_by_the_deadline_and_commits_only_the_rest() -> None:
    consumer = consumer_with(10)
    config = make_config(pipeline={"shutdown_timeout_s": 2})
    world = World(config, consumer)
    world.until(committed_to(consumer, {P0: 10}), "the first batch delivered")
    world.calls.held = True  # the second call never answers
    consumer.add_many(0, 10)
    world.until(lambda: world.calls.in_flight == 1, "a call in flight")
    took = world.stop()

    assert 2.0 <= took < 2.5
    assert consumer.committed_offsets[P0] <= 20, "an unanswered entry was committed"
    assert consumer.closed
    check_commit_history(consumer)


def test_consumer_going_back_restarts_the_partition_without_loss() -> None:
    consumer = consumer_with(30)
    world = World(make_config(), consumer)
    world.calls.held = True
    world.until(lambda: len(consumer.handed_out) == 30, "30 records handed out")
    consumer.rewind(0, 0)  # an offset reset: offset 0 comes again after 29
    world.until(lambda: len(consumer.handed_out) == 60, "the records handed out again")
    world.calls.held = False
    world.until(committed_to(consumer, {P0: 30}), "commit of 30")
    world.stop()
    assert set(world.client.delivered()) == {(0, o) for o in range(30)}
    assert world.stats.dead_lettered == 0
    check_commit_history(consumer)


def test_ceiling_on_entries_per_second_holds() -> None:
    consumer = consumer_with(400)
    world = World(make_config(pipeline={"max_entries_per_second": 400}), consumer)
    world.until(committed_to(consumer, {P0: 400}), "commit of 400")
    elapsed = world.clock.now
    world.stop()
    # 400 entries at 400/s with a 40-entry burst allowance cannot take less than 0.9 s
    assert elapsed >= 0.9, f"sent 400 entries in {elapsed:.2f}s, faster than 400/s"
    assert elapsed < 1.2, f"400 entries at 400/s took {elapsed:.2f}s"
    assert world.stats.delivered == 400


def test_throttling_lowers_the_send_rate_which_recovers() -> None:
    consumer = consumer_with(300)
    storm = [True]

    def respond(entries: Sequence[dict[str, Any]], call_no: int) -> dict[str, Any]:
        throttle = storm[0] and call_no > 5
        errors = dict.fromkeys(range(len(entries)), "ThrottlingException") if throttle else {}
        return response(entries, errors, call_no)

    world = World(
        make_config(pipeline={"rate_increase_per_second": 50, "min_entries_per_second": 20}),
        consumer,
        client=FakeEventsClient(respond),
    )
    limit = world.pipeline.metrics.rate_limit
    world.until(lambda: limit._value.get() < float("inf"), "the adaptive limit to engage")
    throttled_limit = limit._value.get()
    storm[0] = False
    world.until(committed_to(consumer, {P0: 300}), "everything delivered after the storm", 60)
    world.stop()
    assert throttled_limit >= 20
    assert world.stats.delivered == 300 and world.stats.dead_lettered == 0
    check_commit_history(consumer)


def test_the_same_run_gives_the_same_calls_every_time() -> None:
    """Simulated time makes a run with retries, throttling and dead letters repeatable."""

    def one_run() -> list[list[tuple[int, int]]]:
        consumer = consumer_with(40, 40)

        def judge(i: tuple[int, int], n: int) -> str | None:
            if i[1] % 7 == 3 and n < 4:
                return "ThrottlingException"
            return "MalformedDetail" if i[1] % 13 == 5 else None

        world = World(make_config(), consumer, FakeEventsClient(per_entry(judge)), latency=0.02)
        world.until(committed_to(consumer, {P0: 40, P1: 40}), "everything committed")
        world.stop()
        return world.client.ids()

    first = one_run()
    assert len(first) > 8
    assert one_run() == first


def _handover(finished_in_commit: bool) -> tuple[list[tuple[int, int]], FakeConsumer]:
    """A member delivers 30 records but one (offset 3) stays throttled until it stops; a new
    member of the group then takes the partition over. Returns what the new member sent."""
    first = consumer_with(30)
    stuck = {(0, 3)}
    client = FakeEventsClient(
        per_entry(lambda i, _n: "ThrottlingException" if i in stuck else None)
    )
    config = make_config(
        pipeline={"finished_offsets_in_commit": finished_in_commit, "shutdown_timeout_s": 1}
    )
    world = World(config, first, client)
    world.until(lambda: world.stats.delivered == 29, "everything but offset 3 delivered")
    world.stop()  # offset 3 is given up at the deadline: the commit stops before it
    assert first.committed_offsets == {P0: 3}

    second = FakeConsumer(TOPIC, partitions=1)
    second._logs = first._logs  # the same partition, read by the next owner
    second.committed_offsets = dict(first.committed_offsets)
    second.committed_metadata = dict(first.committed_metadata)
    again = World(config, second)
    again.until(committed_to(second, {P0: 30}), "the new owner committed to the end")
    again.stop()
    return [i for call in again.client.ids() for i in call], second


def test_a_new_owner_sends_only_what_was_not_finished_before() -> None:
    """Finished offsets above the committed one go with the commit (its metadata): the next
    owner of the partition skips them and sends only the record that was still unfinished."""
    sent, second = _handover(finished_in_commit=True)
    assert sent == [(0, 3)]
    metric = second.committed_metadata  # the new owner's last commit records nothing above 30
    assert not metric.get(P0)


def test_with_plain_offsets_a_new_owner_sends_everything_after_the_committed_one_again() -> None:
    sent, _ = _handover(finished_in_commit=False)
    assert sent == [(0, o) for o in range(3, 30)]


def test_an_outage_is_probed_not_hammered_and_ends_with_the_first_answer() -> None:
    """Every call refused (503) for 120 s, 3,000 records waiting: the breaker opens after a few
    calls, then one probe at a time with backoff; the first probe after the return delivers
    and the rest follows at once. Nothing is dead-lettered for the outage."""
    consumer = consumer_with(1500, 1500)
    world = World(make_config(), consumer, latency=0.02)
    down_until = 120.0

    def respond(entries: list[dict[str, Any]], call_no: int) -> Any:
        if world.clock.now < down_until:
            return call_error("ServiceUnavailable", 503, "down")
        return response(entries, {}, call_no)

    world.client.respond = respond
    world.until(lambda: world.clock.now >= down_until, "the outage to pass", 130, dt=0.01)
    during = len(world.client.calls)
    assert world.pipeline.health.ready()[0] is False, "an outage shows in /readyz"
    world.until(lambda: world.stats.delivered > 0, "a first delivery after the return", 10)
    first_delivery_s = world.clock.now - down_until
    world.until(committed_to(consumer, {P0: 1500, P1: 1500}), "everything delivered", 120)
    world.stop()

    assert during <= 120, f"{during} calls during a 120 s outage: hammered"
    assert first_delivery_s <= 5.0, f"first delivery {first_delivery_s:.1f}s after the return"
    assert world.stats.dead_lettered == 0 and not world.producer.written
    assert world.stats.delivered == 3000
    assert world.pipeline.health.outage is None
    check_commit_history(consumer)

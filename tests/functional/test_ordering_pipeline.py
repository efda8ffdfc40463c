"""Per-group publish order through the real Pipeline on simulated time (sink: event_bus_v2).

Calls end after a random latency each, many at once, and the fake bus publishes a call's
successful entries at a random moment inside it: without the ordering rule, two entries of one
group in concurrent calls, or a retry after a later entry, would publish out of Kafka's order.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from fakes import FakeConsumer
from sim import World

from bridge.config.load import config_from_dict
from bridge.sink.busv2 import EventBusV2Sink

ARN = "arn:aws:events:us-east-1:123456789012:event-busv2/orders/abcdefghijklmnopqrstuvwxy"


class FakeBusV2:
    """``put_events`` of the new bus: an entry fails at random retryably, or always (the same
    entries, whenever sent) permanently; a repeat DeduplicationId is answered DEDUPLICATED; the
    rest are answered PUBLISHED and remembered, for the test to place in time."""

    def __init__(self, rng: random.Random, retryable: float, permanent: float) -> None:
        self.rng = rng
        self.seed = rng.random()
        self.retryable = retryable
        self.permanent = permanent
        self.last_published: list[dict[str, Any]] = []
        self.calls = 0
        self.seen: set[str] = set()
        self.deduplicated = 0

    def put_events(
        self, *, EventBusArn: str, Entries: Sequence[dict[str, Any]], **_: Any
    ) -> dict[str, Any]:
        assert EventBusArn == ARN and 1 <= len(Entries) <= 100
        self.calls += 1
        results: list[dict[str, Any]] = []
        self.last_published = []
        for entry in Entries:
            record = entry["SystemMetadata"]["DeduplicationId"]
            # A permanent failure is the entry's own: the same whenever it is sent again.
            if random.Random(f"{self.seed}-{record}").random() < self.permanent:
                results.append({"ErrorCode": "ValidationError", "ErrorMessage": "refused"})
            elif self.rng.random() < self.retryable:
                results.append({"ErrorCode": "InternalException", "ErrorMessage": "try again"})
            elif entry["SystemMetadata"]["DeduplicationId"] in self.seen:
                self.deduplicated += 1  # sent again after a rebalance: the bus has it
                results.append({"EventId": "earlier", "SuccessCode": "DEDUPLICATED"})
            else:
                self.seen.add(entry["SystemMetadata"]["DeduplicationId"])
                results.append({"EventId": f"e{self.calls}", "SuccessCode": "PUBLISHED"})
                self.last_published.append(entry)
        return {"FailedEntryCount": sum("ErrorCode" in r for r in results), "Entries": results}

    def describe_event_bus(self, *, EventBusArn: str) -> dict[str, Any]:
        return {"EventBusArn": EventBusArn, "State": "ACTIVE"}


Published = list[tuple[float, int, dict[str, Any]]]
"""(when, tie-break, entry) of each entry the fake bus published."""


def run(
    hold: bool, seed: int, rebalances: bool = False
) -> tuple[World, FakeConsumer, Published, int]:
    rng = random.Random(seed)
    consumer = FakeConsumer("orders", partitions=6)
    for _ in range(3000):
        consumer.add(rng.randrange(6), key=b"key-%d" % rng.randrange(200))
    if rebalances:  # partitions taken away mid-flight and given back: read again from commits
        consumer.schedule_revoke([0, 1, 2], after_consumed=700)
        consumer.schedule_assign([0, 1, 2], after_consumed=1200)
        consumer.schedule_revoke([3, 4], after_consumed=1800, lost=True)
        consumer.schedule_assign([3, 4], after_consumed=2200)
    config = config_from_dict(
        {
            "sink": "event_bus_v2",
            "aws": {"event_bus_arn": ARN},
            "batch": {"linger_ms": 2},
            "retry": {"initial_backoff_ms": 5, "max_backoff_ms": 50, "max_attempts": 10},
            "pipeline": {
                "max_in_flight_calls": 48,
                "max_buffered_records": 3000,
                "group_on_dead_letter": "hold" if hold else "continue",
            },
            "mappings": [
                {
                    "topic": "orders",
                    "source": "test",
                    "detail_type": "T",
                    "event_group_id": "${key}",
                }
            ],
        }
    )
    bus = FakeBusV2(rng, retryable=0.2, permanent=0.01)
    sink = EventBusV2Sink(bus, ARN)
    world = World(config, consumer, sink=sink)
    published: Published = []
    most = [0]
    calls, start = world.calls, world.calls.start
    sequence = iter(range(10**9))

    def start_with_random_latency(call_id: int, entries: Sequence[dict[str, Any]]) -> None:
        calls.latency = rng.uniform(0.001, 0.060)
        began = world.clock.now
        start(call_id, entries)
        most[0] = max(most[0], calls.in_flight)
        for entry in bus.last_published:  # each published somewhere inside its call
            published.append((began + rng.uniform(0, calls.latency), next(sequence), entry))

    calls.start = start_with_random_latency  # type: ignore[method-assign]
    world.until(lambda: consumer.committed_total == 3000, "everything committed", within=600)
    world.deduplicated = bus.deduplicated  # type: ignore[attr-defined]
    return world, consumer, published, most[0]


@pytest.mark.parametrize(("seed", "rebalances"), [(1, False), (2, False), (3, True)])
def test_each_group_is_published_in_kafka_order_minus_its_dead_letters(
    seed: int, rebalances: bool
) -> None:
    world, consumer, published, most_in_flight = run(False, seed, rebalances)
    dead = {(h(r, "partition"), h(r, "offset")) for r in dlq(world)}
    by_group: dict[tuple[int, str], list[int]] = defaultdict(list)
    for _, _, entry in sorted(published, key=lambda p: (p[0], p[1])):
        _, partition, offset = entry["SystemMetadata"]["DeduplicationId"].rsplit("-", 2)
        by_group[(int(partition), entry["SystemMetadata"]["EventGroupId"])].append(int(offset))
    expected: dict[tuple[int, str], list[int]] = defaultdict(list)
    first_reads = {(m.partition(), m.offset()): m for m in consumer.handed_out}
    for _, msg in sorted(first_reads.items()):
        if (str(msg.partition()), str(msg.offset())) not in dead:
            expected[(msg.partition(), msg.key().decode())].append(msg.offset())
    assert dict(by_group) == dict(expected)
    assert len(published) + len(dead) == 3000  # none lost, none published twice
    if rebalances:
        assert len(consumer.handed_out) > 3000 and world.deduplicated > 0  # type: ignore[attr-defined]
        assert world.stats.deduplicated == world.deduplicated  # type: ignore[attr-defined]
    # Dead letters are at least once: one acknowledged and not committed is written again.
    assert world.stats.dead_lettered >= len(dead) > 0
    assert rebalances or world.stats.dead_lettered == len(dead)
    assert world.stats.retries > 500
    assert most_in_flight >= 8  # calls overlapped: the groups did not wait for each other
    assert consumer.committed_offsets == {("orders", p): consumer.end(p) for p in range(6)}


def test_hold_dead_letters_the_rest_of_a_group_after_a_dead_letter() -> None:
    world, consumer, published, _ = run(hold=True, seed=3)
    letters = dlq(world)
    first_dead: dict[tuple[int, str], int] = {}
    for r in letters:
        key = (int(h(r, "partition")), bytes(r.key).decode())
        offset = int(h(r, "offset"))
        first_dead[key] = min(first_dead.get(key, offset), offset)
    held = [r for r in letters if h(r, "code") == "GroupHeld"]
    assert held, "some group had an entry after its dead letter"
    for r in held:
        key = (int(h(r, "partition")), bytes(r.key).decode())
        assert int(h(r, "offset")) > first_dead[key]
    for _, _, entry in published:
        _, partition, offset = entry["SystemMetadata"]["DeduplicationId"].rsplit("-", 2)
        key = (int(partition), entry["SystemMetadata"]["EventGroupId"])
        assert key not in first_dead or int(offset) < first_dead[key], "published past a gap"
    assert len(published) + len(letters) == 3000
    assert consumer.committed_offsets == {("orders", p): consumer.end(p) for p in range(6)}


def dlq(world: World) -> list[Any]:
    return world.producer.written_snapshot()


def h(record: Any, name: str) -> str:
    value = record.header(name)
    assert value is not None, name
    return str(value.decode())

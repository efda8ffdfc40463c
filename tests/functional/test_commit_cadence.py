"""Commits follow deliveries promptly (``pipeline.commit_min_gap_ms``), and the
``bridge_unfinished_at_commit`` gauge counts what was sent and unfinished at the commit."""

from __future__ import annotations

from fakes import FakeConsumer, FakeEventsClient, per_entry
from scenario import P0, TOPIC, make_config
from sim import World

GAP_S = 0.1


def slow_world(records: int, client: FakeEventsClient | None = None) -> World:
    """One partition of ``records`` records, sent 10 per call at 40 entries/s (a call every
    0.25 s, 20 ms each): deliveries spread over seconds, a backlog waiting for the rate."""
    consumer = FakeConsumer(TOPIC, partitions=1)
    consumer.add_many(0, records)
    config = make_config(
        pipeline={
            "commit_interval_ms": 1000,
            "commit_min_gap_ms": int(GAP_S * 1000),
            "max_entries_per_second": 40,
            "adaptive_rate": False,
            "adaptive_concurrency": False,
            "max_in_flight_calls": 1,
        },
        batch={"linger_ms": 1},
    )
    return World(config, consumer, client, latency=0.02)


def test_finished_records_are_committed_within_the_gap_not_the_interval() -> None:
    """Each call's deliveries are committed within 100 ms of being judged, though the
    interval is 1 s (on a 1 s grid they would wait 0.5 s on average); commits with news come
    at most every 100 ms."""
    world = slow_world(120)
    consumer = world.consumer
    finished_at: dict[int, float] = {}  # delivered count -> when the loop first saw it
    waits: list[float] = []
    attempts_seen = 0
    while world.stats.delivered < 120:
        assert world.clock.now < 30, "not delivered within 30 simulated s"
        world.step(0.001)
        delivered = world.stats.delivered
        finished_at.setdefault(delivered, world.clock.now)
        commits = consumer.commits()
        for attempt in commits[attempts_seen:]:
            position = attempt.offsets.get(P0)
            if position in finished_at:
                waits.append(world.clock.now - finished_at[position])
        attempts_seen = len(commits)
    world.run_for(0.2)
    world.stop()
    assert consumer.committed_offsets == {P0: 120}
    assert waits and max(waits) <= GAP_S + 0.002, waits
    times = [a for a in consumer.commits() if a.ok]
    # 12 calls over about 3 s: one commit each, not one per turn.
    assert 12 <= len(times) <= 3.5 / GAP_S, len(times)
    assert world.stats.commits == len(times)  # the progress line's count


def test_unfinished_at_commit_counts_entries_sent_not_the_backlog() -> None:
    """While 200 records wait for the rate limit, the gauge says what was in calls under way
    or waiting for a retry at the last commit: a call's worth, not the backlog."""
    first_attempt_fails = per_entry(
        lambda where, call: "ThrottlingException" if where[1] % 10 == 3 and call < 3 else None
    )
    world = slow_world(200, FakeEventsClient(first_attempt_fails))
    gauge = world.pipeline.metrics.unfinished_at_commit
    tracker = world.pipeline._tracker
    seen: list[tuple[float, int]] = []
    last = 0
    for _ in range(2000):  # 2 simulated s
        world.step(0.001)
        total = len([a for a in world.consumer.commits() if a.ok])
        if total != last:
            last = total
            seen.append((gauge._value.get(), tracker.open_count))
    world.stop()
    assert seen, "no commit in 2 s"
    for value, unfinished in seen:
        # One call in flight (10 entries) and the throttled entries waiting for their retry.
        assert value <= 10 + 3, seen
        assert unfinished >= 100, seen  # the backlog the old gauge counted
    assert any(value > 0 for value, _ in seen), seen

"""``bridge redrive`` over the fakes on simulated time: a run with a mapping bug dead-letters
some records, the mapping is fixed, and the real Pipeline reads the dead letters back through
the redrive's adapter and bound.

The dead letters are the very writes the first run made (headers by the real writer), put in a
fake dead-letter topic; the entries the fake client receives say which record they carry."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from confluent_kafka import Message
from fakes import FakeConsumer, FakeEventsClient, Produced, per_entry
from sim import World

from bridge.config import BridgeConfig
from bridge.config.load import config_from_dict
from bridge.redrive.select import NO_BRIDGE_HEADERS, OTHER_CODE, Selection, parse_dead_letter
from bridge.redrive.view import Adapter, BoundedConsumer, Bounds
from bridge.sink.factory import make_sink

TOPIC, DLQ = "orders", "orders-dlq"
RECORDS = 400  # per partition, 2 partitions
DETAIL = "${ {p: value.p, o: value.o, id: id} }"


def make_config(detail_type: str, max_buffered: int = 10_000) -> BridgeConfig:
    return config_from_dict(
        {
            "kafka": {"group_id": "functional"},
            "aws": {"check_event_bus": False},
            "batch": {"linger_ms": 1},
            "retry": {"max_attempts": 2, "initial_backoff_ms": 1, "max_backoff_ms": 5},
            "dlq": {"topic": DLQ, "retry_backoff_ms": 20},
            "pipeline": {
                "commit_interval_ms": 10,
                "shutdown_timeout_s": 5,
                "max_buffered_records": max_buffered,
            },
            "logging": {"format": "json", "level": "error"},
            "mappings": [
                {"topic": TOPIC, "source": "t.orders", "detail_type": detail_type, "detail": DETAIL}
            ],
        }
    )


BUGGY = make_config("${value.kind}")  # 1 record in 10 has no kind: MissingField
FIXED = make_config("${value.kind || 'Unknown'}")
REFUSED = {(0, 5), (1, 17), (1, 34)}  # PutEvents answers InvalidArgument for these


def refuse(ids: set[tuple[int, int]]) -> Any:
    return per_entry(lambda where, _call: "InvalidArgument" if where in ids else None)


def first_run() -> tuple[list[Produced], set[tuple[int, int]]]:
    """The run with the bug; returns its dead letters and the records that lacked ``kind``."""
    source = FakeConsumer(TOPIC, partitions=2)
    missing: set[tuple[int, int]] = set()
    for p in (0, 1):
        for o in range(RECORDS):
            value: dict[str, Any] = {"p": p, "o": o}
            if o % 10 != 3:
                value["kind"] = "Placed"
            else:
                missing.add((p, o))
            source.add(p, json.dumps(value).encode(), headers=[("trace", f"t{p}-{o}".encode())])
    client = FakeEventsClient(refuse(REFUSED))
    world = World(BUGGY, source, client, sink=make_sink(BUGGY, client))
    world.until(lambda: source.committed_total == 2 * RECORDS, "first run committed")
    world.stop()
    assert world.stats.dead_lettered == len(missing) + len(REFUSED)
    return world.producer.written_snapshot(), missing


def dlq_consumer(dead: list[Produced], extra: list[Message] = ()) -> FakeConsumer:  # type: ignore[assignment]
    consumer = FakeConsumer(DLQ, partitions=1)
    log = consumer._logs[(DLQ, 0)]
    for d in dead:
        log.append(
            Message(
                topic=DLQ,
                partition=0,
                offset=len(log),
                key=d.key,
                value=d.value,
                headers=list(d.headers),
                timestamp=(1, d.timestamp or 0),
            )
        )
    for m in extra:
        log.append(Message(topic=DLQ, partition=0, offset=len(log), key=m.key(), value=m.value()))
    return consumer


def redrive(
    config: BridgeConfig,
    consumer: FakeConsumer,
    selection: Selection,
    client: FakeEventsClient,
) -> tuple[World, Adapter, Bounds]:
    bounds = Bounds(dict(consumer.committed_offsets), {(DLQ, 0): consumer.end(0)})
    adapter = Adapter(selection)
    holder: list[World] = []
    bounded = BoundedConsumer(consumer, bounds, lambda: holder[0].pipeline.stop())
    world = World(
        config, bounded, client, sink=make_sink(config, client), adapt=adapter, async_commits=False
    )  # type: ignore[arg-type]
    holder.append(world)
    return world, adapter, bounds


def test_redrive_of_missing_field_delivers_each_once_and_leaves_the_others_alone() -> None:
    dead, missing = first_run()
    stray = Message(topic=DLQ, key=b"x", value=b"no headers at all")
    consumer = dlq_consumer(dead, [stray])
    end = consumer.end(0)
    client = FakeEventsClient()
    world, adapter, bounds = redrive(
        FIXED, consumer, Selection(codes=frozenset({"MissingField"})), client
    )
    consumer.add(0, b"written after the start")  # beyond the end read at start: not this run's
    world.until(lambda: world.pipeline.health.stopping, "the redrive stops by itself")
    world.stop()

    delivered = Counter(client.delivered())
    assert set(delivered) == missing
    assert set(delivered.values()) == {1}, "each record delivered exactly once"
    for call in client.snapshot():
        for entry in call:
            detail = json.loads(entry["Detail"])
            assert detail["id"] == f"{TOPIC}-{detail['p']}-{detail['o']}"  # the original's id
            assert entry["DetailType"] == "Unknown"
    assert adapter.selected == Counter({"MissingField": len(missing)})
    assert adapter.skipped == Counter({OTHER_CODE: len(REFUSED), NO_BRIDGE_HEADERS: 1})
    assert world.stats.dead_lettered == 0
    assert (
        consumer.committed_offsets[(DLQ, 0)] == end
    )  # progress: up to the end at start, not beyond
    assert bounds.read == bounds.total == end


def test_a_redrive_of_a_topic_whose_last_offsets_hold_no_record_ends_at_the_position() -> None:
    dead, missing = first_run()
    consumer = dlq_consumer(dead)
    client = FakeEventsClient()
    bounds = Bounds({}, {(DLQ, 0): consumer.end(0) + 2})  # two offsets without a record (markers)
    holder: list[World] = []
    bounded = BoundedConsumer(consumer, bounds, lambda: holder[0].pipeline.stop())
    adapter = Adapter(Selection(codes=frozenset({"MissingField"})))
    world = World(
        FIXED, bounded, client, sink=make_sink(FIXED, client), adapt=adapter, async_commits=False
    )  # type: ignore[arg-type]
    holder.append(world)
    consumer.rewind(0, 0)
    world.until(lambda: len(client.delivered()) == len(missing), "all delivered")
    assert not world.pipeline.health.stopping
    # The consumer hands out nothing more: its position says the end passed; here the fake
    # stands for librdkafka moving past two transaction markers.
    consumer._positions[(DLQ, 0)] = consumer.end(0) + 2
    world.until(lambda: world.pipeline.health.stopping, "the redrive stops at the position")
    world.stop()
    assert bounds.done


def test_what_fails_again_is_dead_lettered_with_its_origin_and_a_redrive_count() -> None:
    dead, _ = first_run()
    consumer = dlq_consumer(dead)
    client = FakeEventsClient(refuse({(1, 17)}))  # still refused; the other two now accepted
    selection = Selection(codes=frozenset({"InvalidArgument"}))
    world, _, _ = redrive(FIXED, consumer, selection, client)
    world.until(lambda: world.pipeline.health.stopping, "the redrive stops by itself")
    world.stop()

    assert sorted(client.delivered()) == [(0, 5), (1, 34)]
    again = world.producer.written_snapshot()
    assert len(again) == 1
    info = parse_dead_letter(again[0].headers)
    assert info is not None
    assert (info.topic, info.partition, info.offset) == (TOPIC, 1, 17)
    assert (info.stage, info.code, info.redrive_count) == ("send", "InvalidArgument", 1)
    assert info.original_headers == (("trace", b"t1-17"),)  # no stale bridge headers
    assert json.loads(again[0].value or b"") == {"p": 1, "o": 17, "kind": "Placed"}
    assert again[0].key == b"k1-17"
    assert consumer.committed_offsets[(DLQ, 0)] == consumer.end(0)

    # A second redrive of the same selection, in the same group, reads only what came since:
    # the dead letter just written, now with redrive_count 1 -> 2 when refused once more.
    consumer2 = dlq_consumer(dead + again)
    consumer2.committed_offsets[(DLQ, 0)] = consumer.end(0)
    world2, adapter2, _ = redrive(FIXED, consumer2, selection, FakeEventsClient(refuse({(1, 17)})))
    world2.until(lambda: world2.pipeline.health.stopping, "the second redrive stops")
    world2.stop()
    assert adapter2.selected == Counter({"InvalidArgument": 1})
    (third,) = world2.producer.written_snapshot()
    assert parse_dead_letter(third.headers).redrive_count == 2  # type: ignore[union-attr]


def test_an_interrupted_redrive_resumes_and_sends_again_only_what_was_not_committed() -> None:
    dead, missing = first_run()
    consumer = dlq_consumer(dead)
    selection = Selection(codes=frozenset({"MissingField"}))
    client = FakeEventsClient()
    config = make_config("${value.kind || 'Unknown'}", max_buffered=20)
    world, _, _ = redrive(config, consumer, selection, client)
    world.until(lambda: len(client.delivered()) >= len(missing) // 2, "half delivered")
    # The process dies: no drain, no commit. What it had committed is all the next one knows.
    at_crash = consumer.committed_offsets.get((DLQ, 0), 0)
    delivered_before = Counter(client.delivered())
    finished_uncommitted = {
        where
        for where in delivered_before
        if next(i for i, d in enumerate(dead) if _origin(d) == where) >= at_crash
    }
    assert at_crash > 0

    resumed = dlq_consumer(dead)
    resumed.committed_offsets[(DLQ, 0)] = at_crash
    client2 = FakeEventsClient()
    world2, _, bounds2 = redrive(config, resumed, selection, client2)
    world2.until(lambda: world2.pipeline.health.stopping, "the resumed redrive stops")
    world2.stop()

    both = Counter(client.delivered()) + Counter(client2.delivered())
    assert set(both) == missing, "none lost"
    twice = {where for where, n in both.items() if n > 1}
    assert twice <= finished_uncommitted, "only what was not committed at the crash came twice"
    assert len(twice) <= 20  # max_buffered_records
    assert bounds2.total == len(dead) - at_crash
    assert resumed.committed_offsets[(DLQ, 0)] == len(dead)


def _origin(d: Produced) -> tuple[int, int]:
    info = parse_dead_letter(d.headers)
    assert info is not None
    return info.partition, info.offset

"""Finished offsets in the commit's metadata, through a real broker (no pipeline).

A consumer commits through the Committer with some records unfinished; a second consumer of
the same group reads the commit back in its assign callback (``Committer.restore``) and skips
exactly the records recorded finished. Metadata written by another client is ignored with a
warning, and nothing is skipped.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from kafkatest import Topics, produce, wait_until
from structlog.testing import capture_logs

from bridge.offsets import metadata
from bridge.offsets.committer import Committer, Restored
from bridge.offsets.tracker import OffsetTracker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RECORDS_PER_PARTITION = 40
UNFINISHED = {0: {3, 10, 11, 25}, 1: {0}}  # per partition: in flight or waiting for a retry


def consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )


def consume(c: Consumer, want: int, timeout: float = 30) -> list[Any]:
    """``want`` records (errors and partition ends left out)."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for msg in c.consume(100, 0.5):
            if msg.error() is None:
                got.append(msg)
    assert len(got) == want, f"consumed {len(got)} of {want}"
    return got


def test_a_second_member_reads_back_exactly_the_finished_offsets(
    kafka_bootstrap: str, topics: Topics
) -> None:
    topic = topics.create("commit-metadata", partitions=2)
    produce(
        kafka_bootstrap,
        topic,
        [(None, b"v", p) for p in (0, 1) for _ in range(RECORDS_PER_PARTITION)],
    )
    group = "commit-metadata-" + uuid.uuid4().hex[:8]

    first = consumer(kafka_bootstrap, group)
    tracker = OffsetTracker()
    committer = Committer(first, tracker)
    first.subscribe([topic])
    for msg in consume(first, 2 * RECORDS_PER_PARTITION):
        assert tracker.add((msg.topic(), msg.partition()), msg.offset()) is False
    for p in (0, 1):
        for offset in range(RECORDS_PER_PARTITION):
            if offset not in UNFINISHED[p]:
                tracker.finish((topic, p), offset)
    committed_positions = committer.commit()
    assert committed_positions == {(topic, 0): 3, (topic, 1): 0}
    first.close()

    # What the broker holds: the position and a keb1 metadata string.
    expected = {
        p: frozenset(
            o
            for o in range(RECORDS_PER_PARTITION)
            if o > min(UNFINISHED[p]) and o not in UNFINISHED[p]
        )
        for p in (0, 1)
    }

    second = consumer(kafka_bootstrap, group)
    tracker2 = OffsetTracker()
    committer2 = Committer(second, tracker2)
    restored: dict[tuple[str, int], Restored] = {}

    def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
        restored.update(committer2.restore(c, partitions))

    second.subscribe([topic], on_assign=on_assign)
    # Reading starts at each committed offset: 37 records on partition 0, 40 on partition 1.
    again = consume(second, (RECORDS_PER_PARTITION - 3) + RECORDS_PER_PARTITION)
    assert restored == {(topic, p): Restored(min(UNFINISHED[p]), expected[p]) for p in (0, 1)}
    skipped: dict[int, set[int]] = {0: set(), 1: set()}
    for msg in again:
        if tracker2.add((msg.topic(), msg.partition()), msg.offset()):
            skipped[msg.partition()].add(msg.offset())
    assert skipped == {p: set(expected[p]) for p in (0, 1)}
    # only the unfinished are left to process; finishing them commits past everything
    assert tracker2.open_count == sum(len(u) for u in UNFINISHED.values())
    for p, offsets in UNFINISHED.items():
        for offset in offsets:
            tracker2.finish((topic, p), offset)
    assert committer2.commit() == {(topic, 0): 40, (topic, 1): 40}
    second.close()


def test_metadata_from_another_client_is_ignored_with_a_warning(
    kafka_bootstrap: str, topics: Topics
) -> None:
    topic = topics.create("commit-metadata-foreign")
    produce(kafka_bootstrap, topic, [(None, b"v", 0) for _ in range(10)])
    group = "commit-metadata-foreign-" + uuid.uuid4().hex[:8]
    other = consumer(kafka_bootstrap, group)
    foreign = "{'app': 'another-tool', 'done': [5, 6, 7]}"
    other.commit(offsets=[TopicPartition(topic, 0, 4, metadata=foreign)], asynchronous=False)
    other.close()

    reader = consumer(kafka_bootstrap, group)
    tracker = OffsetTracker()
    committer = Committer(reader, tracker)
    with capture_logs() as logs:
        got = committer.restore(reader, [TopicPartition(topic, 0)])
    assert got[(topic, 0)].committed == 4
    assert got[(topic, 0)].finished == frozenset()
    assert got[(topic, 0)].problem is not None and "another tool" in got[(topic, 0)].problem
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["topic"] == topic and warnings[0]["offset"] == 4
    reader.assign([TopicPartition(topic, 0, 4)])
    assert not any(tracker.add((topic, 0), m.offset()) for m in consume(reader, 6))

    # The bridge's own format, but committed next to another offset: nothing known either.
    stale = metadata.encode(2, {5, 6, 7})
    assert stale
    reader.commit(offsets=[TopicPartition(topic, 0, 4, metadata=stale)], asynchronous=False)
    wait_until(
        lambda: reader.committed([TopicPartition(topic, 0)], timeout=10)[0].metadata == stale,
        10,
        "the stale metadata committed",
    )
    with capture_logs() as logs:
        got = Committer(reader, OffsetTracker()).restore(reader, [TopicPartition(topic, 0)])
    assert got[(topic, 0)].finished == frozenset()
    assert "checksum" in (got[(topic, 0)].problem or "")
    assert len([e for e in logs if e["log_level"] == "warning"]) == 1
    reader.close()

"""The committer: positions with their finished offsets in the metadata, and reading them back."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from structlog.testing import capture_logs

from bridge.observability.metrics import Metrics
from bridge.offsets import metadata
from bridge.offsets.committer import ANSWER_TIMEOUT_S, CommitAnswers, Committer, Restored
from bridge.offsets.tracker import OffsetTracker

TP0 = ("orders", 0)
TP1 = ("orders", 1)


class FakeConsumer:
    """Records commits; answers committed() from what was committed; fails when told to."""

    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int, str | None]]] = []
        self.store: dict[tuple[str, int], tuple[int, str | None]] = {}
        self.fail_with: list[KafkaError] = []
        self.max_metadata: int | None = None

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        assert asynchronous is False
        if self.fail_with:
            raise KafkaException(self.fail_with.pop(0))
        if self.max_metadata is not None and any(
            len(p.metadata or "") >= self.max_metadata for p in offsets
        ):
            raise KafkaException(KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE))
        self.commits.append([(p.topic, p.partition, p.offset, p.metadata) for p in offsets])
        for p in offsets:
            self.store[(p.topic, p.partition)] = (p.offset, p.metadata)
        return offsets

    def committed(self, partitions: list[TopicPartition], timeout: float) -> Any:
        out = []
        for p in partitions:
            offset, text = self.store.get((p.topic, p.partition), (-1001, None))
            if text is None:
                out.append(TopicPartition(p.topic, p.partition, offset))
            else:
                out.append(TopicPartition(p.topic, p.partition, offset, metadata=text))
        return out


def consumed(
    tracker: OffsetTracker, tp: tuple[str, int], offsets: range, finished: set[int]
) -> None:
    for offset in offsets:
        tracker.add(tp, offset)
    for offset in sorted(finished):
        tracker.finish(tp, offset)


def test_a_commit_carries_the_finished_offsets_above_the_position() -> None:
    consumer, tracker = FakeConsumer(), OffsetTracker()
    committer = Committer(consumer, tracker)
    consumed(tracker, TP0, range(10), {0, 1, 3, 4, 7})  # 2 is stuck in a retry
    assert committer.commit() == {TP0: 2}
    [[(topic, partition, offset, text)]] = consumer.commits
    assert (topic, partition, offset) == ("orders", 0, 2)
    assert text is not None and text.startswith("keb1:")
    assert metadata.decode(2, text).offsets == {3, 4, 7}


def test_only_the_metadata_changed_is_committed_and_nothing_new_is_not() -> None:
    consumer, tracker = FakeConsumer(), OffsetTracker()
    committer = Committer(consumer, tracker)
    consumed(tracker, TP0, range(5), {0, 2})
    consumed(tracker, TP1, range(3), {0, 1, 2})
    assert committer.commit() == {TP0: 1, TP1: 3}
    assert committer.commit() == {}  # nothing changed: no broker round trip
    assert len(consumer.commits) == 1
    tracker.finish(TP0, 4)  # the head (1) is still stuck: only the metadata changes
    assert committer.commit() == {TP0: 1}
    [(_, _, offset, text)] = consumer.commits[-1]
    assert offset == 1 and metadata.decode(1, text).offsets == {2, 4}
    tracker.finish(TP0, 1)
    tracker.finish(TP0, 3)
    assert committer.commit() == {TP0: 5}
    assert consumer.commits[-1] == [("orders", 0, 5, None)]  # nothing above: plain


def test_too_many_to_fit_commits_the_plain_offset_says_so_once_and_counts() -> None:
    consumer, tracker, metrics = FakeConsumer(), OffsetTracker(), Metrics()
    committer = Committer(consumer, tracker, max_metadata_bytes=64, metrics=metrics)
    rnd = random.Random(3)
    consumed(tracker, TP0, range(2000), {o for o in range(2, 2000) if rnd.random() < 0.5})
    with capture_logs() as logs:
        assert committer.commit() == {TP0: 0}
        tracker.finish(TP0, 1)
        assert committer.commit() == {TP0: 0}  # changed, still too large
    assert consumer.commits[-1] == [("orders", 0, 0, None)]
    warnings = [e for e in logs if "do not fit" in e["event"]]
    assert len(warnings) == 1
    assert warnings[0]["topic"] == "orders" and warnings[0]["partition"] == 0
    assert warnings[0]["log_level"] == "warning"
    counted = metrics.registry.get_sample_value(
        "bridge_offset_metadata_unfit_total", {"topic": "orders", "partition": "0"}
    )
    assert counted == 2
    assert committer.commit() == {}  # a plain commit of the same point is not repeated


def test_a_failed_commit_is_retried_next_round() -> None:
    consumer, tracker = FakeConsumer(), OffsetTracker()
    committer = Committer(consumer, tracker)
    consumed(tracker, TP0, range(3), {0, 2})
    consumer.fail_with = [KafkaError(KafkaError.REBALANCE_IN_PROGRESS)]
    with capture_logs() as logs:
        assert committer.commit() == {}
    assert any("will retry" in e["event"] for e in logs)
    assert tracker.partition(TP0).committed is None
    assert committer.commit() == {TP0: 1}
    assert metadata.decode(1, consumer.store[TP0][1]).offsets == {2}


def test_a_broker_with_a_smaller_limit_gets_plain_offsets_from_then_on() -> None:
    consumer, tracker = FakeConsumer(), OffsetTracker()
    consumer.max_metadata = 10
    committer = Committer(consumer, tracker)
    consumed(tracker, TP0, range(3), {0, 2})
    with capture_logs() as logs:
        assert committer.commit() == {TP0: 1}
    assert consumer.store[TP0] == (1, None)
    assert any("offset.metadata.max.bytes" in e["event"] for e in logs)
    tracker.finish(TP0, 1)
    assert committer.commit() == {TP0: 3}
    assert consumer.store[TP0] == (3, None)


def test_plain_offsets_when_turned_off() -> None:
    consumer, tracker = FakeConsumer(), OffsetTracker()
    committer = Committer(consumer, tracker, finished_offsets=False)
    consumed(tracker, TP0, range(4), {0, 2, 3})
    assert committer.commit() == {TP0: 1}
    assert consumer.commits == [[("orders", 0, 1, None)]]
    assert committer.commit() == {}


def test_restore_reads_the_finished_offsets_and_the_tracker_skips_them() -> None:
    first, tracker = FakeConsumer(), OffsetTracker()
    Committer(first, tracker).commit()  # nothing yet
    consumed(tracker, TP0, range(6), {0, 2, 3, 5})
    Committer(first, tracker).commit()
    restarted = OffsetTracker()
    committer = Committer(first, restarted)
    got = committer.restore(first, [TopicPartition("orders", 0), TopicPartition("orders", 1)])
    assert got == {
        TP0: Restored(1, frozenset({2, 3, 5})),
        TP1: Restored(None, frozenset()),
    }
    assert [o for o in range(1, 7) if restarted.add(TP0, o)] == [2, 3, 5]
    assert restarted.add(TP1, 0) is False
    restarted.finish(TP0, 1)
    assert restarted.committable() == {TP0: 4}


def test_restore_with_plain_offsets_reads_the_position_only() -> None:
    consumer, tracker = FakeConsumer(), OffsetTracker()
    consumer.store[TP0] = (1, metadata.encode(1, {2, 3}))
    committer = Committer(consumer, tracker, finished_offsets=False)
    got = committer.restore(consumer, [TopicPartition("orders", 0)])
    assert got[TP0].finished == {2, 3}  # read, reported ...
    assert tracker.add(TP0, 2) is False  # ... and not used
    assert tracker.partition(TP0).committed == 1


@pytest.mark.parametrize(
    "foreign",
    ["some-other-tool:v3:abc", "keb9:rAAAA", metadata.encode(7, {9, 10})],  # the last: other base
)
def test_unreadable_metadata_is_ignored_with_one_warning(foreign: str | None) -> None:
    consumer, tracker = FakeConsumer(), OffsetTracker()
    consumer.store[TP0] = (5, foreign)
    with capture_logs() as logs:
        got = Committer(consumer, tracker).restore(consumer, [TopicPartition("orders", 0)])
    assert got[TP0].committed == 5 and got[TP0].finished == frozenset()
    assert got[TP0].problem
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["offset"] == 5 and warnings[0]["reason"] == got[TP0].problem
    assert not any(tracker.add(TP0, o) for o in range(5, 12))


def test_restore_when_the_coordinator_does_not_answer_knows_nothing() -> None:
    class Down(FakeConsumer):
        def committed(self, partitions: list[TopicPartition], timeout: float) -> Any:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    consumer, tracker = Down(), OffsetTracker()
    with capture_logs() as logs:
        assert Committer(consumer, tracker).restore(consumer, [TopicPartition("t", 0)]) == {}
    assert any("could not read" in e["event"] for e in logs)
    assert Committer(consumer, tracker).restore(consumer, []) == {}


def test_a_partition_error_in_the_answer_knows_nothing() -> None:
    class PartlyDown(FakeConsumer):
        def committed(self, partitions: list[TopicPartition], timeout: float) -> Any:
            # A real TopicPartition's error cannot be set from Python: a stand-in.
            error = KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE)
            text = metadata.encode(5, {6})
            return [SimpleNamespace(topic="t", partition=0, offset=5, metadata=text, error=error)]

    consumer, tracker = PartlyDown(), OffsetTracker()
    got = Committer(consumer, tracker).restore(consumer, [TopicPartition("t", 0)])
    assert got[("t", 0)].finished == frozenset() and got[("t", 0)].committed is None
    assert tracker.add(("t", 0), 6) is False


class AsyncConsumer(FakeConsumer):
    """Asynchronous commits wait for :meth:`answer`, as librdkafka's wait for the loop's next
    consume or poll, which calls ``on_commit`` (here the committer's relay)."""

    def __init__(self, answers: CommitAnswers) -> None:
        super().__init__()
        self.answers = answers
        self.pending: list[list[TopicPartition]] = []
        self.sent: list[int] = []  # first partition's position of every commit, as sent

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        self.sent.append(offsets[0].offset)
        if not asynchronous:
            return super().commit(offsets=offsets, asynchronous=False)
        self.pending.append(offsets)
        return None

    def answer(self) -> None:
        """The coordinator answers the oldest commit: the committer hears it in a poll."""
        offsets = self.pending.pop(0)
        try:
            super().commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self.answers(exc.args[0], offsets)
        else:
            self.answers(None, offsets)


def asynchronous() -> tuple[AsyncConsumer, OffsetTracker, Committer]:
    answers = CommitAnswers()
    consumer, tracker = AsyncConsumer(answers), OffsetTracker()
    return consumer, tracker, Committer(consumer, tracker, answers=answers)


def test_an_asynchronous_commit_is_recorded_only_once_the_broker_accepted_it() -> None:
    consumer, tracker, committer = asynchronous()
    consumed(tracker, TP0, range(5), {0, 1})
    assert committer.commit(wait=False) == {TP0: 2}  # sent; the loop goes on meanwhile
    assert tracker.partition(TP0).committed is None
    assert committer.news()  # not answered yet: still news
    tracker.finish(TP0, 2)
    assert committer.commit(wait=False) == {}  # one commit at a time
    consumer.answer()
    assert tracker.partition(TP0).committed == 2 and committer.commits == 1
    assert committer.news()  # offset 2 finished since
    assert committer.commit(wait=False) == {TP0: 3}
    consumer.answer()
    assert not committer.news()
    assert [c[0][2] for c in consumer.commits] == [2, 3]


def test_a_failed_asynchronous_commit_is_not_recorded_and_is_made_again() -> None:
    consumer, tracker, committer = asynchronous()
    consumer.fail_with = [KafkaError(KafkaError.REBALANCE_IN_PROGRESS)]
    consumed(tracker, TP0, range(3), {0, 2})
    with capture_logs() as logs:
        committer.commit(wait=False)
        consumer.answer()
    assert any("offset commit failed" in e["event"] for e in logs)
    assert tracker.partition(TP0).committed is None and committer.news()
    assert committer.commit(wait=False) == {TP0: 1}
    consumer.answer()
    assert consumer.store[TP0][0] == 1 and not committer.news()


def test_a_synchronous_commit_is_made_at_once_and_the_older_answer_ignored() -> None:
    """A revocation's commit does not wait for the cadence's asynchronous one (its answer can
    only come in a later poll): librdkafka sends it after, and the older answer, when it
    comes, does not take the tracker back."""
    consumer, tracker, committer = asynchronous()
    consumed(tracker, TP0, range(5), {0})
    committer.commit(wait=False)
    tracker.finish(TP0, 1)
    assert committer.commit([TP0], wait=True) == {TP0: 2}
    assert tracker.partition(TP0).committed == 2
    consumer.answer()  # the asynchronous one lands first at the broker, answered late here
    assert tracker.partition(TP0).committed == 2 and committer.commits == 1
    assert consumer.sent == [1, 2]


def test_a_partition_restored_while_its_commit_was_under_way_keeps_its_new_state() -> None:
    consumer, tracker, committer = asynchronous()
    consumed(tracker, TP0, range(5), {0, 1, 2})
    committer.commit(wait=False)
    tracker.restore(TP0, 7, {9})  # lost, then assigned again: the broker said 7
    consumer.answer()
    assert tracker.partition(TP0).committed == 7
    assert tracker.partition(TP0).finished_above == [9]


def test_metadata_too_large_in_an_asynchronous_answer_switches_to_plain_positions() -> None:
    consumer, tracker, committer = asynchronous()
    consumer.max_metadata = 5
    consumed(tracker, TP0, range(5), {0, 2, 4})
    with capture_logs() as logs:
        committer.commit(wait=False)
        consumer.answer()
    assert any("too large" in e["event"] for e in logs)
    assert committer.news()
    assert committer.commit(wait=False) == {TP0: 1}
    consumer.answer()
    assert consumer.commits[-1] == [("orders", 0, 1, None)]


def test_a_commit_unanswered_for_long_is_made_again() -> None:
    """librdkafka left commits made during a rebalance unanswered for good; the committer must
    not wait for such an answer forever (every later commit would wait behind it)."""
    consumer, tracker, committer = asynchronous()
    consumed(tracker, TP0, range(5), {0, 1})
    committer.commit(wait=False)
    stuck = committer._job
    assert stuck is not None
    assert committer.commit(wait=False) == {}  # waits while the answer may still come
    stuck.sent_at -= ANSWER_TIMEOUT_S + 1  # as if sent long ago
    with capture_logs() as logs:
        assert committer.news()  # the answer is given up: what it carried is news again
    assert any("unanswered" in e["event"] for e in logs)
    tracker.finish(TP0, 2)
    assert committer.commit(wait=False) == {TP0: 3}
    assert consumer.sent == [2, 3]
    consumer.answer()  # the stuck one's answer, late: ignored
    assert tracker.partition(TP0).committed is None
    consumer.answer()
    assert tracker.partition(TP0).committed == 3


def test_an_answer_refusing_one_partition_records_nothing() -> None:
    consumer, tracker, committer = asynchronous()
    consumed(tracker, TP0, range(2), {0, 1})
    consumed(tracker, TP1, range(2), {0})
    committer.commit(wait=False)
    offsets = consumer.pending.pop(0)
    error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
    # A real TopicPartition's error cannot be set from Python: stand-ins.
    answer = [
        SimpleNamespace(
            topic=p.topic,
            partition=p.partition,
            offset=p.offset,
            metadata=p.metadata,
            error=error if p.partition == 1 else None,
        )
        for p in offsets
    ]
    with capture_logs() as logs:
        consumer.answers(None, answer)  # type: ignore[arg-type]
    assert any("offset commit failed" in e["event"] for e in logs)
    assert tracker.partition(TP0).committed is None and committer.news()


def test_an_error_answered_without_partitions_is_the_commit_under_way_failing() -> None:
    consumer, tracker, committer = asynchronous()
    consumed(tracker, TP0, range(2), {0, 1})
    committer.commit(wait=False)
    consumer.pending.clear()
    with capture_logs() as logs:
        consumer.answers(KafkaError(KafkaError._TRANSPORT), [])
    assert any("offset commit failed" in e["event"] for e in logs)
    assert not committer.awaiting and committer.commit(wait=False) == {TP0: 2}

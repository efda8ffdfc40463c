"""Committing finished offsets to the group coordinator, and reading them back on assignment.

Over 400 lines: synchronous and asynchronous commits, their answers, and the read-back on
assignment share one job and tracker state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from bridge.observability.logging import get_logger
from bridge.offsets import metadata
from bridge.offsets.tracker import CommitPoint, OffsetTracker, PartitionTracker
from bridge.offsets.tracker import TopicPartition as TP

if TYPE_CHECKING:
    from bridge.config import BridgeConfig
    from bridge.observability.metrics import Metrics

log = get_logger("offsets")

ANSWER_TIMEOUT_S = 10.0
"""How long an asynchronous commit may stay unanswered before the next one is made anyway."""


class CommitterConsumer(Protocol):
    """The consumer method used to commit."""

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> Any: ...


class RestoringConsumer(Protocol):
    """The consumer method used to read the committed offsets back."""

    def committed(self, partitions: list[TopicPartition], timeout: float) -> Any: ...


class CommitAnswers:
    """The consumer's ``on_commit`` callback, relayed to the committer made after the consumer.

    librdkafka answers an asynchronous commit through this callback, from inside the loop's
    next ``consume`` or ``poll`` (never from another thread); a synchronous commit is not
    answered here.
    """

    def __init__(self) -> None:
        self._to: Callable[[Any, list[TopicPartition]], None] | None = None

    def listen(self, to: Callable[[Any, list[TopicPartition]], None]) -> None:
        self._to = to

    def __call__(self, err: Any, partitions: list[TopicPartition]) -> None:
        if self._to is not None:
            self._to(err, partitions)


@dataclass(frozen=True)
class Restored:
    """What the group coordinator holds for one partition, as read on assignment.

    Attributes:
        committed: The committed offset (next to read); None when never committed.
        finished: Offsets above it recorded finished in the commit's metadata (empty when
            nothing is known: no metadata, or metadata that could not be read).
        problem: Why the metadata could not be read; None when it was read or was empty.
    """

    committed: int | None
    finished: frozenset[int]
    problem: str | None = None


@dataclass
class _Job:
    """One commit: what it sends, and what the broker answered."""

    offsets: dict[TP, tuple[int, str]]
    """Position and metadata per partition."""
    points: dict[TP, CommitPoint] | None
    """The commit points sent (None: plain positions)."""
    owners: dict[TP, PartitionTracker | None]
    """Each partition's tracker when the commit was made (a new one after a restore)."""
    sent_at: float = field(default_factory=time.monotonic)
    error: object = None
    """The KafkaError (or exception) of a failed commit."""
    too_large: bool = False

    @property
    def positions(self) -> dict[TP, int]:
        return {tp: o for tp, (o, _) in self.offsets.items()}


class Committer:
    """Commits, for each partition, the end of its finished prefix and nothing past it, with the
    finished offsets above it in the commit's metadata.

    Args:
        consumer: The consumer (its ``commit``).
        tracker: The offsets consumed and finished.
        finished_offsets: Record the finished offsets above each position in the commit's
            metadata (``pipeline.finished_offsets_in_commit``); False: plain offsets only.
        max_metadata_bytes: The brokers' ``offset.metadata.max.bytes``
            (``kafka.offset_metadata_max_bytes``).
        metrics: Where the commits whose metadata did not fit are counted.
        answers: The consumer's ``on_commit`` relay: commits made with ``wait=False`` are
            asynchronous, one at a time, so that the loop does not wait for the group
            coordinator; None (a consumer without it, tests driving the loop step by step):
            every commit is synchronous.
    """

    def __init__(
        self,
        consumer: CommitterConsumer,
        tracker: OffsetTracker,
        *,
        finished_offsets: bool = True,
        max_metadata_bytes: int = metadata.BROKER_DEFAULT_MAX_BYTES,
        metrics: Metrics | None = None,
        answers: CommitAnswers | None = None,
    ) -> None:
        self._consumer = consumer
        self._asynchronous = answers is not None
        if answers is not None:
            answers.listen(self._answered)
        self._job: _Job | None = None  # the asynchronous commit not answered yet
        self._tracker = tracker
        self._finished_offsets = finished_offsets
        # Measured on Kafka 4.1: the broker refuses metadata of exactly its limit.
        self._max_chars = max_metadata_bytes - 1
        self._metrics = metrics
        self._unfit: set[TP] = set()  # partitions whose last metadata did not fit (logged)
        self.commits = 0

    @classmethod
    def from_config(
        cls,
        consumer: CommitterConsumer,
        tracker: OffsetTracker,
        config: BridgeConfig,
        metrics: Metrics | None = None,
        answers: CommitAnswers | None = None,
    ) -> Committer:
        """A committer with the settings of ``config``."""
        return cls(
            consumer,
            tracker,
            finished_offsets=config.pipeline.finished_offsets_in_commit,
            max_metadata_bytes=config.kafka.offset_metadata_max_bytes,
            metrics=metrics,
            answers=answers,
        )

    def commit(self, partitions: Iterable[TP] | None = None, wait: bool = True) -> dict[TP, int]:
        """Commit what is finished. The order never varies:

        1. The caller has served dead-letter delivery reports first, so every acknowledged
           dead-letter write has finished its offset (and no unacknowledged one has).
        2. An asynchronous commit not answered yet: when ``wait``, it is given up (its answer
           will be ignored; librdkafka sends commits in order, so this one lands after it);
           else send nothing now, unless it has gone unanswered for
           :data:`ANSWER_TIMEOUT_S` (then it is given up, said in the log).
        3. Ask the tracker, for each partition, for its commit point: the position (one past
           the last offset of the prefix in which every record is delivered, filtered or
           dead-lettered) and the finished offsets above it (finished behind an unfinished
           one, or restored on assignment and not consumed again yet). Plain offsets only
           (``finished_offsets`` off): the positions alone.
        4. Leave out partitions where neither the position nor the finished offsets above it
           changed since the last accepted commit.
        5. Encode each partition's finished offsets above its position into the commit's
           metadata (:mod:`bridge.offsets.metadata`, the shortest encoding). When that would
           not fit in ``offset.metadata.max.bytes``, commit the plain position with empty
           metadata: say so once per partition in the log and count it
           (``bridge_offset_metadata_unfit``); after a crash those offsets are sent again.
        6. Commit the positions with their metadata to the group coordinator: synchronously
           when ``wait`` (or without ``answers``), else asynchronously, so that the loop never
           waits for the coordinator.
        7. Only once the broker accepted them (for an asynchronous commit: when its answer is
           served by the loop's next consume or poll), record them as committed in the
           tracker, with which finished offsets went with them; not for a partition revoked or
           restored since. If the broker refuses the metadata as too large (its limit is below
           the configured one), log it and commit plain positions from now on (at once when
           ``wait``).

        A failed commit (rebalance in progress, coordinator moved) is logged and left for the
        next round: the positions are still committable then.

        Args:
            partitions: Only these partitions (a revocation); None: every tracked one.
            wait: Commit synchronously; False: asynchronously, when answers can come.

        Returns:
            The positions committed (``wait``) or sent (asynchronously) now.
        """
        self._give_up(now=wait)
        if self._job is not None:
            return {}  # the commit under way is not answered yet: the next round
        job = self._prepare(partitions)
        if job is None:
            return {}
        if wait or not self._asynchronous:
            self._run(job)
            accepted = self._apply(job)
            if job.too_large:  # the plain positions at once
                job = _Job({tp: (o, "") for tp, (o, _) in job.offsets.items()}, None, job.owners)
                self._run(job)
                accepted = self._apply(job)
            return accepted
        try:
            self._consumer.commit(offsets=_topic_partitions(job.offsets), asynchronous=True)
        except KafkaException as exc:
            job.error = exc.args[0]
            return self._apply(job)
        self._job = job
        return job.positions

    @property
    def awaiting(self) -> bool:
        """An asynchronous commit is under way: its answer comes in the next consume or poll."""
        return self._job is not None

    def news(self) -> bool:
        """Whether :meth:`commit` would send something: records finished since the last
        accepted commit (below its position or, with the finished offsets recorded, above)."""
        self._give_up(now=False)
        return self._tracker.news(self._finished_offsets)

    def _prepare(self, partitions: Iterable[TP] | None) -> _Job | None:
        """Steps 3-5: what to commit, or None when nothing changed."""
        if not self._finished_offsets:
            positions = self._tracker.committable(partitions)
            offsets = {tp: (o, "") for tp, o in positions.items()}
            return _Job(offsets, None, self._owners(offsets)) if offsets else None
        points = self._tracker.commit_points(partitions)
        if not points:
            return None
        offsets = {tp: (point.position, self._metadata(tp, point)) for tp, point in points.items()}
        return _Job(offsets, points, self._owners(offsets))

    def _owners(self, offsets: dict[TP, tuple[int, str]]) -> dict[TP, PartitionTracker | None]:
        return {tp: self._tracker.get(tp) for tp in offsets}

    def _run(self, job: _Job) -> None:
        """Step 6, synchronously."""
        try:
            self._consumer.commit(offsets=_topic_partitions(job.offsets), asynchronous=False)
        except KafkaException as exc:
            job.error = exc.args[0]

    def _give_up(self, now: bool) -> None:
        """Step 2: give up the asynchronous commit under way ``now``, or when unanswered long."""
        job = self._job
        if job is None:
            return
        if not now and time.monotonic() - job.sent_at <= ANSWER_TIMEOUT_S:
            return
        if not now:
            log.warning("offset commit unanswered; committing again", waited_s=ANSWER_TIMEOUT_S)
        self._job = None

    def _answered(self, err: Any, partitions: list[TopicPartition]) -> None:
        """Step 7 for an asynchronous commit: librdkafka's answer (``on_commit``)."""
        job = self._job
        answered = {(p.topic, p.partition): (p.offset, p.metadata or "") for p in partitions}
        if job is None or (answered != job.offsets and (partitions or err is None)):
            return  # the answer to a commit given up: a later one carries as much
        # (an error without partitions is taken as the one under way's: made again, no harm)
        self._job = None
        refused = [p.error for p in partitions if p.error is not None]
        job.error = err if err is not None else (refused[0] if refused else None)
        self._apply(job)

    def _apply(self, job: _Job) -> dict[TP, int]:
        """Step 7: the broker's answer to ``job``; returns the positions it accepted."""
        error = job.error
        if error is not None:
            too_large = (
                isinstance(error, KafkaError)
                and error.code() == KafkaError.OFFSET_METADATA_TOO_LARGE
                and job.points is not None
            )
            if not too_large:
                log.warning("offset commit failed; will retry", error=str(error))
                return {}
            log.error(
                "the broker refused the finished offsets in the commit as too large: its"
                " offset.metadata.max.bytes is below kafka.offset_metadata_max_bytes"
                f" ({self._max_chars + 1}); committing plain offsets from now on",
                error=str(error),
            )
            self._finished_offsets = False
            job.too_large = True
            return {}
        # A partition revoked or restored since the commit was made keeps its new state.
        same = {tp for tp, owner in job.owners.items() if self._tracker.get(tp) is owner}
        if job.points is None:
            self._tracker.mark_committed(
                {tp: o for tp, (o, _) in job.offsets.items() if tp in same}
            )
        else:
            self._tracker.mark_points_committed(
                {tp: point for tp, point in job.points.items() if tp in same}
            )
        self.commits += 1
        log.debug(
            "offsets committed",
            positions={f"{t}/{p}": o for (t, p), o in job.positions.items()},
            recorded={
                f"{t}/{p}": len(pt.finished_above) for (t, p), pt in (job.points or {}).items()
            },
        )
        return job.positions

    def _metadata(self, tp: TP, point: CommitPoint) -> str:
        """The metadata of ``point``: its finished offsets, or "" when they do not fit."""
        text = metadata.encode(point.position, point.finished_above, self._max_chars)
        if text is not None:
            self._unfit.discard(tp)
            return text
        if self._metrics is not None:
            self._metrics.offset_metadata_unfit.labels(tp[0], str(tp[1])).inc()
        if tp not in self._unfit:
            self._unfit.add(tp)
            log.warning(
                "finished offsets do not fit in the commit's metadata: committing the plain"
                " offset; after a crash they are sent again (said once until they fit again)",
                topic=tp[0],
                partition=tp[1],
                offset=point.position,
                finished_above=len(point.finished_above),
                lowest=point.finished_above[0],
                highest=point.finished_above[-1],
                max_bytes=self._max_chars + 1,
            )
        return ""

    def restore(
        self,
        consumer: RestoringConsumer,
        partitions: Iterable[TopicPartition],
        timeout: float = 10.0,
    ) -> dict[TP, Restored]:
        """Read the committed offsets of newly assigned partitions and start the tracker there.

        Call it on assignment, before any record of these partitions is consumed: the tracker
        then counts the restored offsets as finished when they come again
        (:meth:`OffsetTracker.add` returns True for them). Metadata that cannot be read
        (another tool's, a newer format, corrupt, written for another offset) is ignored with
        one warning per partition: nothing is skipped then. With ``finished_offsets`` off the
        committed offsets are read all the same, the finished ones are not used.

        Args:
            consumer: The consumer (its ``committed``), e.g. the one in the assign callback.
            partitions: The partitions assigned.
            timeout: Seconds to wait for the group coordinator.

        Returns:
            What was read, per partition; empty when the coordinator did not answer (then the
            partitions start with nothing known, as without metadata).
        """
        wanted = [TopicPartition(p.topic, p.partition) for p in partitions]
        if not wanted:
            return {}
        # An asynchronous commit under way is not waited for (its answer comes in a later
        # poll): librdkafka sends this read to the group coordinator after it.
        try:
            answered = consumer.committed(wanted, timeout=timeout)
        except KafkaException as exc:
            log.warning(
                "could not read the committed offsets: finished offsets above them are not"
                " known, records after them are sent again",
                error=str(exc.args[0]),
                partitions=[f"{p.topic}[{p.partition}]" for p in wanted],
            )
            return {}
        out: dict[TP, Restored] = {}
        for p in answered:
            tp = (p.topic, p.partition)
            restored = self._read(p)
            out[tp] = restored
            self._unfit.discard(tp)
            if restored.committed is None:
                self._tracker.forget([tp])
                self._tracker.partition(tp)
                continue
            finished = restored.finished if self._finished_offsets else frozenset()
            self._tracker.restore(tp, restored.committed, finished)
            if finished:
                log.info(
                    "finished offsets restored from the commit: not sent again",
                    topic=tp[0],
                    partition=tp[1],
                    offset=restored.committed,
                    finished=len(finished),
                    highest=max(finished),
                )
        return out

    def _read(self, p: TopicPartition) -> Restored:
        if p.error is not None:
            log.warning(
                "could not read the committed offset of a partition",
                topic=p.topic,
                partition=p.partition,
                error=str(p.error),
            )
            return Restored(None, frozenset(), str(p.error))
        if p.offset < 0:  # OFFSET_INVALID: never committed
            return Restored(None, frozenset())
        decoded = metadata.decode(p.offset, p.metadata)
        if decoded.problem is not None:
            log.warning(
                "commit metadata not readable: ignored, nothing skipped",
                topic=p.topic,
                partition=p.partition,
                offset=p.offset,
                reason=decoded.problem,
                metadata_chars=len(p.metadata or ""),
            )
        return Restored(p.offset, decoded.offsets, decoded.problem)


def _topic_partitions(offsets: dict[TP, tuple[int, str]]) -> list[TopicPartition]:
    return [
        TopicPartition(topic, partition, offset, metadata=text)
        if text
        else TopicPartition(topic, partition, offset)
        for (topic, partition), (offset, text) in offsets.items()
    ]

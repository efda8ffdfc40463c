"""Which offsets may be committed. Pure: no Kafka, no clock.

An offset becomes committable only when it and every earlier offset received on its partition is
finished (delivered, dead-lettered with the write acknowledged, or filtered). The committable
position is one past the last offset of that finished prefix, as Kafka expects.

Offsets finished after an unfinished one wait above the committable position; the committer
records them in the commit's metadata (:mod:`bridge.offsets.metadata`). On assignment, offsets
read back from there are *restored*: when one is consumed again it counts as finished at once
(the caller does not send it again) and the position moves past it like any finished offset.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

TopicPartition = tuple[str, int]


TRACKED_PER_BUFFERED = 4
"""Offsets tracked at most per record counted as buffered (see PartitionTracker.buffered):
``pipeline.max_buffered_records`` of 10,000 tracks up to 40,000 offsets behind stuck records
(a few MB; sorted and encoded at each commit)."""


class OffsetOrderError(ValueError):
    """An offset arrived out of order, or an unknown offset was finished."""


@dataclass(frozen=True)
class CommitPoint:
    """What a commit of one partition says: the position and the finished offsets above it.

    Attributes:
        position: The offset to commit (next to read); every consumed offset below it is
            finished.
        finished_above: Offsets above ``position`` known finished, ascending: finished behind an
            unfinished one, or restored and not consumed again yet.
        changes: The tracker's count of changes to ``finished_above`` when this was taken.
    """

    position: int
    finished_above: tuple[int, ...]
    changes: int


class PartitionTracker:
    """The offsets of one partition, from consumed to committable."""

    __slots__ = (
        "_changes",
        "_committed_changes",
        "_costs",
        "_done",
        "_finished",
        "_open",
        "_pending",
        "_recorded",
        "_restored",
        "_restored_held",
        "committed",
        "held_bytes",
        "last_finished",
    )

    def __init__(self) -> None:
        self._open: deque[int] = deque()  # consumed and not yet part of the finished prefix
        self._pending: set[int] = set()  # consumed and not finished
        self._done: set[int] = set()  # finished, waiting behind an unfinished offset
        self._finished: deque[int] = deque()  # finished prefix, not yet committed
        # Finished before (commit metadata), not consumed again yet; ascending, all above the
        # newest consumed offset (add() drops the ones it passes).
        self._restored: deque[int] = deque()
        self._restored_held = False  # the broker's metadata still holds the restored offsets
        # Consumed offsets above the committed one that the broker holds finished in the last
        # accepted commit's metadata: a crash does not send them again (see buffered).
        self._recorded = 0
        self._changes = 0  # changes to the finished-above set (see CommitPoint.changes)
        self._committed_changes = 0  # ... as of the last commit the broker accepted
        self.last_finished: int | None = None
        self.committed: int | None = None
        self._costs: dict[int, int] = {}  # the estimated bytes of consumed, unfinished offsets
        self.held_bytes = 0

    def restore(self, committed: int, finished: Iterable[int]) -> None:
        """Start from the broker's committed offset and the offsets known finished above it.

        Only on a fresh tracker (just assigned, nothing consumed). Offsets not above
        ``committed`` are ignored: the committed offset itself is, by definition, unfinished.

        Raises:
            OffsetOrderError: Offsets were consumed on this partition already.
        """
        if self._open or self.last_finished is not None:
            raise OffsetOrderError("restore() after offsets were consumed")
        self.committed = committed
        self._restored = deque(sorted({o for o in finished if o > committed}))
        self._restored_held, self._recorded = True, 0
        # The metadata already holds them: a commit is due only when something changes.
        self._changes = self._committed_changes = 0

    def add(self, offset: int, cost: int = 0) -> bool:
        """Record that ``offset`` was consumed; offsets must increase.

        Args:
            offset: The offset.
            cost: What the record holds in memory until it is finished (estimated bytes).

        Returns:
            True when ``offset`` was restored as finished (:meth:`restore`): it is finished now
            and must not be processed again. False for an offset to process and finish.
        """
        newest = self._open[-1] if self._open else self.last_finished
        if newest is not None and offset <= newest:
            raise OffsetOrderError(f"offset {offset} after {newest}: offsets must increase")
        self._open.append(offset)
        self._pending.add(offset)
        if cost:
            self._costs[offset] = cost
            self.held_bytes += cost
        restored = self._restored
        if not restored:
            return False
        # Passed without being consumed (compaction, transaction markers, a reset): they will
        # not come, and no later commit needs them.
        while restored and restored[0] < offset:
            restored.popleft()
        if not restored or restored[0] != offset:
            return False
        restored.popleft()
        changes = self._changes
        self.finish(offset)
        self._changes = changes  # it was in the finished-above set already, as restored
        self._recorded += self._restored_held
        return True

    def finish(self, offset: int) -> None:
        """Record that ``offset`` is delivered or dead-lettered.

        Raises:
            OffsetOrderError: ``offset`` was not consumed, or is finished already.
        """
        if offset not in self._pending:
            raise OffsetOrderError(f"offset {offset} is not open")
        self._pending.discard(offset)
        self.held_bytes -= self._costs.pop(offset, 0)
        self._done.add(offset)
        if self._open[0] != offset:
            self._changes += 1  # waits behind an unfinished offset: the metadata changes
            return
        while self._open and self._open[0] in self._done:
            head = self._open.popleft()
            self._done.discard(head)
            self._finished.append(head)
            self.last_finished = head

    def committable(self) -> int | None:
        """The offset to commit (next to read), if it moved past the last commit."""
        if self.last_finished is None:
            return None
        position = self.last_finished + 1
        return position if self.committed is None or position > self.committed else None

    def commit_point(self) -> CommitPoint | None:
        """The position and finished offsets above it, if either changed since the last commit.

        The position is one past the finished prefix; before anything is finished, the
        committed offset (or, on a partition never committed, the first consumed offset: where
        reading started) when offsets wait behind it, so that they are recorded too. Never a
        position below the last committed one.
        """
        if self.last_finished is not None:
            position = self.last_finished + 1
        elif self.committed is not None:
            position = self.committed
        elif self._done:
            position = self._open[0]  # unfinished, where reading started
        else:
            return None
        if self.committed is not None:
            if position < self.committed:
                return None
            if position == self.committed and self._changes == self._committed_changes:
                return None
        above = self.finished_above
        if above and above[0] <= position:
            # A restored offset right at the position, not consumed again yet: the position
            # cannot say it is finished, so it is read (and sent) again after a restart.
            above = [o for o in above if o > position]
        return CommitPoint(position, tuple(above), self._changes)

    def mark_committed(
        self, position: int, changes: int | None = None, recorded: tuple[int, ...] = ()
    ) -> None:
        """The broker accepted ``position`` (with the finished-above set of ``changes``).

        Args:
            position: The committed offset.
            changes: :attr:`CommitPoint.changes` of the point committed with its metadata;
                None for a plain commit (the metadata of an earlier commit is replaced by none).
            recorded: The finished offsets above ``position`` in its metadata.
        """
        self.committed = position
        while self._finished and self._finished[0] < position:
            self._finished.popleft()
        # Those consumed since restored are counted when they come (add()).
        unconsumed = len(set(recorded).intersection(self._restored)) if self._restored else 0
        self._recorded = len(recorded) - unconsumed
        self._restored_held = changes is not None
        # A plain commit leaves no metadata: whatever waits above must be committed again.
        self._committed_changes = self._changes if changes is None else changes
        if changes is None and (self._done or self._restored):
            self._committed_changes = -1

    def news(self, recorded: bool) -> bool:
        """Whether a commit would say something new: the finished prefix moved past the last
        accepted commit or, with ``recorded`` (finished offsets in the metadata), the
        finished offsets above it changed."""
        return bool(self._finished) or (recorded and self._changes != self._committed_changes)

    @property
    def finished_above(self) -> list[int]:
        """Finished offsets above the committable position, ascending (see CommitPoint)."""
        # Every restored offset is above every consumed one: the concatenation is ascending.
        return [*sorted(self._done), *self._restored]

    @property
    def open_count(self) -> int:
        """Consumed and not yet finished."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Consumed and not in the last accepted commit (neither below its offset nor recorded
        finished in its metadata): what a crash now would send again. Never less than a
        quarter of the offsets tracked (:data:`TRACKED_PER_BUFFERED`): behind a stuck record
        the finished ones above it are recorded, but each is held in memory and written in
        every commit's metadata until the stuck one finishes."""
        tracked = len(self._open) + len(self._finished)
        return max(tracked - self._recorded, tracked // TRACKED_PER_BUFFERED)


class OffsetTracker:
    """One :class:`PartitionTracker` per assigned partition."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionTracker] = {}

    def partition(self, tp: TopicPartition) -> PartitionTracker:
        """The tracker of ``tp``, created on first use."""
        tracker = self._partitions.get(tp)
        if tracker is None:
            tracker = self._partitions[tp] = PartitionTracker()
        return tracker

    def get(self, tp: TopicPartition) -> PartitionTracker | None:
        """The tracker of ``tp``, None when it is not tracked."""
        return self._partitions.get(tp)

    def restore(self, tp: TopicPartition, committed: int, finished: Iterable[int]) -> None:
        """Start ``tp`` from its committed offset and the offsets known finished above it.

        See :meth:`PartitionTracker.restore`; a tracker already holding ``tp`` starts it over.
        """
        self._partitions[tp] = tracker = PartitionTracker()
        tracker.restore(committed, finished)

    def add(self, tp: TopicPartition, offset: int, cost: int = 0) -> bool:
        """``offset`` of ``tp`` was consumed, holding ``cost`` bytes until it is finished.

        Returns:
            True when it was restored as finished: skip it, it counts as finished already.
        """
        return self.partition(tp).add(offset, cost)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        """``offset`` of ``tp`` is finished."""
        self.partition(tp).finish(offset)

    def committable(self, tps: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Positions to commit, for the partitions that advanced."""
        keys = self._partitions.keys() if tps is None else tps
        out: dict[TopicPartition, int] = {}
        for tp in keys:
            tracker = self._partitions.get(tp)
            position = tracker.committable() if tracker else None
            if position is not None:
                out[tp] = position
        return out

    def commit_points(
        self, tps: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, CommitPoint]:
        """Position and finished offsets above it, for the partitions where either changed."""
        keys = self._partitions.keys() if tps is None else tps
        out: dict[TopicPartition, CommitPoint] = {}
        for tp in keys:
            tracker = self._partitions.get(tp)
            point = tracker.commit_point() if tracker else None
            if point is not None:
                out[tp] = point
        return out

    def mark_committed(self, positions: dict[TopicPartition, int]) -> None:
        """The broker accepted these positions (plain commits, no metadata)."""
        for tp, position in positions.items():
            if tp in self._partitions:
                self._partitions[tp].mark_committed(position)

    def mark_points_committed(self, points: dict[TopicPartition, CommitPoint]) -> None:
        """The broker accepted these points, each with its finished offsets in the metadata."""
        for tp, point in points.items():
            if tp in self._partitions:
                self._partitions[tp].mark_committed(
                    point.position, point.changes, point.finished_above
                )

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop partitions no longer assigned."""
        for tp in tps:
            self._partitions.pop(tp, None)

    def knows(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` is tracked (assigned and not forgotten)."""
        return tp in self._partitions

    @property
    def buffered(self) -> int:
        """Records consumed and not in the last accepted commit, over all partitions (see
        :attr:`PartitionTracker.buffered`)."""
        return sum(t.buffered for t in self._partitions.values())

    @property
    def held_bytes(self) -> int:
        """Estimated bytes of records consumed and not finished, over all partitions."""
        return sum(t.held_bytes for t in self._partitions.values())

    @property
    def finished_uncommitted(self) -> int:
        """Records finished and waiting for the next commit, over all partitions."""
        return sum(len(t._finished) for t in self._partitions.values())

    def news(self, recorded: bool) -> bool:
        """Whether a commit would say something new for any partition (see
        :meth:`PartitionTracker.news`)."""
        return any(t.news(recorded) for t in self._partitions.values())

    @property
    def open_count(self) -> int:
        """Records consumed and not yet finished, over all partitions."""
        return sum(t.open_count for t in self._partitions.values())

    def partitions(self) -> list[TopicPartition]:
        """Tracked partitions."""
        return list(self._partitions)

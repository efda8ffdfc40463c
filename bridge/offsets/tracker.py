"""Which offsets may be committed. Pure: no Kafka, no clock.

An offset becomes committable only when it and every earlier offset received on its partition is
finished (delivered, dead-lettered with the write acknowledged, or filtered). The committable
position is one past the last offset of that finished prefix, as Kafka expects.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

TopicPartition = tuple[str, int]


class OffsetOrderError(ValueError):
    """An offset arrived out of order, or an unknown offset was finished."""


class PartitionTracker:
    """The offsets of one partition, from consumed to committable."""

    __slots__ = ("_done", "_finished", "_open", "_pending", "committed", "last_finished")

    def __init__(self) -> None:
        self._open: deque[int] = deque()  # consumed and not yet part of the finished prefix
        self._pending: set[int] = set()  # consumed and not finished
        self._done: set[int] = set()  # finished, waiting behind an unfinished offset
        self._finished: deque[int] = deque()  # finished prefix, not yet committed
        self.last_finished: int | None = None
        self.committed: int | None = None

    def add(self, offset: int) -> None:
        """Record that ``offset`` was consumed; offsets must increase."""
        newest = self._open[-1] if self._open else self.last_finished
        if newest is not None and offset <= newest:
            raise OffsetOrderError(f"offset {offset} after {newest}: offsets must increase")
        self._open.append(offset)
        self._pending.add(offset)

    def finish(self, offset: int) -> None:
        """Record that ``offset`` is delivered or dead-lettered.

        Raises:
            OffsetOrderError: ``offset`` was not consumed, or is finished already.
        """
        if offset not in self._pending:
            raise OffsetOrderError(f"offset {offset} is not open")
        self._pending.discard(offset)
        self._done.add(offset)
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

    def mark_committed(self, position: int) -> None:
        """The broker accepted ``position``."""
        self.committed = position
        while self._finished and self._finished[0] < position:
            self._finished.popleft()

    @property
    def open_count(self) -> int:
        """Consumed and not yet finished."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Consumed and not yet committed: what a crash now could send twice, at most."""
        return len(self._open) + len(self._finished)


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

    def add(self, tp: TopicPartition, offset: int) -> None:
        """``offset`` of ``tp`` was consumed."""
        self.partition(tp).add(offset)

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

    def mark_committed(self, positions: dict[TopicPartition, int]) -> None:
        """The broker accepted these positions."""
        for tp, position in positions.items():
            if tp in self._partitions:
                self._partitions[tp].mark_committed(position)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop partitions no longer assigned."""
        for tp in tps:
            self._partitions.pop(tp, None)

    def knows(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` is tracked (assigned and not forgotten)."""
        return tp in self._partitions

    @property
    def buffered(self) -> int:
        """Records consumed and not yet committed, over all partitions."""
        return sum(t.buffered for t in self._partitions.values())

    @property
    def finished_uncommitted(self) -> int:
        """Records finished and waiting for the next commit, over all partitions."""
        return sum(len(t._finished) for t in self._partitions.values())

    @property
    def open_count(self) -> int:
        """Records consumed and not yet finished, over all partitions."""
        return sum(t.open_count for t in self._partitions.values())

    def partitions(self) -> list[TopicPartition]:
        """Tracked partitions."""
        return list(self._partitions)

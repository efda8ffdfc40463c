"""The retry schedule: sends and dead-letter writes waiting for their time. Pure."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Container

from bridge.dlq.writer import Reason
from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.work import Work

Due = tuple[Work, Reason | None]
"""A work item due again: sent again when the reason is None, else its dead letter rewritten."""


class RetrySchedule:
    """Work items ordered by when they are due; ties keep the order they were pushed in."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Work, Reason | None]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, work: Work, dead_letter: Reason | None = None) -> None:
        """Schedule ``work`` at ``due``: a send, or a dead-letter write when ``dead_letter``."""
        heapq.heappush(self._heap, (due, next(self._seq), work, dead_letter))

    def pop_due(self, now: float) -> list[Due]:
        """Take out everything due at or before ``now``, earliest first."""
        out: list[Due] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, work, reason = heapq.heappop(heap)
            out.append((work, reason))
        return out

    def next_due(self) -> float | None:
        """When the earliest item is due (None when empty)."""
        return self._heap[0][0] if self._heap else None

    def drop(self, tps: Container[TP]) -> int:
        """Forget the items of partitions ``tps`` (revoked, restarted); returns how many."""
        kept = [item for item in self._heap if item[2].tp not in tps]
        dropped = len(self._heap) - len(kept)
        if dropped:
            heapq.heapify(kept)
            self._heap = kept
        return dropped

    def clear(self) -> None:
        """Forget everything (the bridge is closing)."""
        self._heap.clear()

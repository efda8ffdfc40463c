"""Committing finished offsets to the group coordinator."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from confluent_kafka import KafkaException, TopicPartition

from bridge.observability.logging import get_logger
from bridge.offsets.tracker import OffsetTracker
from bridge.offsets.tracker import TopicPartition as TP

log = get_logger("offsets")


class CommitterConsumer(Protocol):
    """The consumer method used to commit."""

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> Any: ...


class Committer:
    """Commits, for each partition, the end of its finished prefix and nothing past it."""

    def __init__(self, consumer: CommitterConsumer, tracker: OffsetTracker) -> None:
        self._consumer = consumer
        self._tracker = tracker
        self.commits = 0

    def commit(self, partitions: Iterable[TP] | None = None) -> dict[TP, int]:
        """Commit what is finished. The order never varies:

        1. The caller has served dead-letter delivery reports first, so every acknowledged
           dead-letter write has finished its offset (and no unacknowledged one has).
        2. Ask the tracker for each partition's committable position: one past the last offset
           of the prefix in which every record is delivered or dead-lettered.
        3. Leave out partitions whose position did not move since the last commit.
        4. Commit those positions synchronously to the group coordinator.
        5. Only if the broker accepted them, record them as committed in the tracker.

        A failed commit (rebalance in progress, coordinator moved) is logged and left for the
        next round: the positions are still committable then.

        Returns:
            The positions committed.
        """
        positions = self._tracker.committable(partitions)
        if not positions:
            return {}
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed; will retry", error=str(exc.args[0]))
            return {}
        self._tracker.mark_committed(positions)
        self.commits += 1
        return positions

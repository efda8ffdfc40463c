"""Ownership of partitions: assignment epochs, revocation, and what may still be sent. Pure.

Every assignment of a partition (and every restart of it after the consumer went back) opens a
new epoch; a work item carries the epoch it was consumed in. An answer, a retry or a dead-letter
report of an older epoch is ignored: the records come again from the consumer of the new one.
Epochs are never reused, so a stale answer can never pass for a new one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.work import Work


class Ownership:
    """Which partitions are ours, in which epoch, and which are being revoked."""

    def __init__(self) -> None:
        self._epochs: dict[TP, int] = {}
        self._next = itertools.count(1)
        self.revoking: set[TP] = set()

    def assign(self, tps: Iterable[TP]) -> None:
        """Partitions given to us: each starts a new epoch."""
        for tp in tps:
            self._epochs[tp] = next(self._next)

    def restart(self, tp: TP) -> None:
        """The consumer went back on ``tp``: what was consumed before belongs to the past."""
        self._epochs[tp] = next(self._next)

    def epoch(self, tp: TP) -> int:
        """The current epoch of an owned partition."""
        return self._epochs[tp]

    def accepts(self, tp: TP) -> bool:
        """Whether a record of ``tp`` just consumed is ours to process."""
        return tp in self._epochs and tp not in self.revoking

    def owns(self, work: Work) -> bool:
        """Whether ``work`` belongs to the current epoch of its partition."""
        return self._epochs.get(work.tp) == work.epoch

    def sendable(self, work: Work) -> bool:
        """Whether ``work`` may still be sent (owned and not being revoked)."""
        return work.tp not in self.revoking and self._epochs.get(work.tp) == work.epoch

    def start_revoking(self, tps: Iterable[TP]) -> None:
        """Partitions leaving: nothing more of them is sent from now on."""
        self.revoking.update(tps)

    def release(self, tps: Iterable[TP]) -> None:
        """Partitions gone: forget them."""
        for tp in tps:
            self._epochs.pop(tp, None)
            self.revoking.discard(tp)

    def revoke_all(self) -> None:
        """The bridge is closing: nothing more is sent."""
        self.revoking.update(self._epochs)

    @property
    def partitions(self) -> list[TP]:
        """The partitions owned now."""
        return list(self._epochs)

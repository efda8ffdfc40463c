"""Dead letters on their way: written, acknowledged, or written again.

A record counts as finished only when the broker acknowledged its dead-letter write (KIP-610).
A refused write keeps the offset uncommitted and is scheduled again after
``dlq.retry_backoff_ms``; a report for a partition no longer owned is ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge.dlq.writer import DeadLetterWriter, Reason, failure_hint, write_size
from bridge.offsets.tracker import OffsetTracker
from bridge.pipeline.ownership import Ownership
from bridge.pipeline.report import Report
from bridge.pipeline.schedule import RetrySchedule
from bridge.pipeline.work import Work

if TYPE_CHECKING:
    from bridge.config import DlqConfig


class DeadLetters:
    """The dead-letter side of the loop.

    Args:
        producer: The dead-letter producer.
        dlq: The ``dlq`` section (topic, wait before writing a refused dead letter again).
        tracker, ownership, schedule, report: The loop's parts it finishes, checks,
            schedules on and counts with.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        producer: Any,
        dlq: DlqConfig,
        tracker: OffsetTracker,
        ownership: Ownership,
        schedule: RetrySchedule,
        report: Report,
        clock: Callable[[], float],
    ) -> None:
        self.writer = DeadLetterWriter(producer, dlq.topic, self._on_result)
        self._retry_backoff_s = dlq.retry_backoff_ms / 1000
        self._tracker = tracker
        self._own = ownership
        self._schedule = schedule
        self._report = report
        self._clock = clock
        self.on_finished: Callable[[Work], None] | None = None
        """Told of each record finished by an acknowledged dead letter (the ordering rule)."""

    def send(self, work: Work, reason: Reason) -> None:
        """Dead-letter ``work`` (logged once; rewrites after a failure are not)."""
        self._report.dead_lettering(work, reason)
        self.write(work, reason)

    def write(self, work: Work, reason: Reason) -> None:
        """Write (or write again) the dead letter of ``work``."""
        self.writer.write(work.msg, reason, (work, reason))

    def _on_result(self, token: tuple[Work, Reason], err: Any) -> None:
        work, reason = token
        if not self._own.owns(work):
            return
        if err is None:
            self._report.dead_lettered(reason)
            self._tracker.finish(work.tp, work.offset)
            if self.on_finished is not None:
                self.on_finished(work)
            return
        topic = self.writer.topic
        hint = failure_hint(err, topic, write_size(work.msg, reason))
        self._report.dead_letter_failed(work, err, topic, hint, self._retry_backoff_s)
        self._schedule.push(self._clock() + self._retry_backoff_s, work, reason)

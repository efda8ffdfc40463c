"""Flow control: when to stop taking records, and when to pause and resume fetching. Pure.

What is consumed and not committed is bounded by ``pipeline.max_buffered_records``. When the
buffer is full the loop stops taking records and waits for calls to finish; librdkafka keeps
what it fetched meanwhile (within ``queued.max.messages.kbytes``). Only if it stays full for
``pause_after_s`` (an outage, a dead-letter topic refusing writes) are the partitions paused,
so that the loop can go on polling (group membership, rebalance callbacks) without taking
records; they resume once half the buffer is free. Pausing at once, every time, made a backlog
drain 5 to 10 times slower through a small buffer: librdkafka drops a paused partition's
fetched records (librdkafka#1447, #5343), and fetches them again after the resume.
"""

from __future__ import annotations

import enum

BATCH_TAKE = 500
"""Records taken from the consumer at most per turn: the loop answers calls between takes."""


class Mode(enum.Enum):
    """What the loop does about fetching this turn."""

    TAKE = "take"
    """Take up to :meth:`FlowControl.room` records."""
    HOLD = "hold"
    """The buffer is full: take nothing, wait for calls to finish."""
    PAUSED = "paused"
    """Fetching is paused: poll only for membership and rebalance callbacks."""


class Change(enum.Enum):
    """What the loop must tell the consumer."""

    NONE = "none"
    PAUSE = "pause"
    RESUME = "resume"


class FlowControl:
    """The take / hold / pause state machine of the buffer.

    Args:
        max_buffered: ``pipeline.max_buffered_records``.
        pause_after_s: How long the buffer stays full before fetching is paused.
    """

    def __init__(self, max_buffered: int, pause_after_s: float = 1.0) -> None:
        self.max_buffered = max_buffered
        self.pause_after_s = pause_after_s
        self.paused = False
        self.full_since: float | None = None

    def update(self, buffered: int, now: float) -> Change:
        """Follow the buffer's fill at ``now``; says whether to pause or resume fetching."""
        if buffered < self.max_buffered - 1:
            self.full_since = None
        elif self.full_since is None:
            self.full_since = now
        if (
            not self.paused
            and self.full_since is not None
            and now - self.full_since >= self.pause_after_s
        ):
            self.paused = True
            return Change.PAUSE
        if self.paused and buffered < self.max_buffered // 2:
            self.paused = False
            return Change.RESUME
        return Change.NONE

    @property
    def mode(self) -> Mode:
        """What to do about fetching until the next :meth:`update`."""
        if self.paused:
            return Mode.PAUSED
        return Mode.HOLD if self.full_since is not None else Mode.TAKE

    def room(self, buffered: int) -> int:
        """How many records may be taken now (at least 1 while taking)."""
        return max(1, min(BATCH_TAKE, self.max_buffered - buffered))


def commit_due(since_s: float, interval_s: float, finished: int, max_buffered: int) -> bool:
    """Whether to commit now, ``since_s`` after the last commit.

    On the interval (``pipeline.commit_interval_ms``), or early, at most every 50 ms (a commit
    is a broker round trip), when ``finished`` records not yet committed hold a quarter of the
    buffer: committing them frees room to take more.
    """
    return since_s >= interval_s or (since_s >= 0.05 and finished >= max_buffered // 4)

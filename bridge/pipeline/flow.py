"""Flow control: when to stop taking records, and when to pause and resume fetching. Pure.

What is consumed and not committed is bounded by ``pipeline.max_buffered_records``, and what is
consumed and not finished by a budget in bytes (:mod:`bridge.source.budget`: the container's
memory limit, or ``pipeline.max_buffered_bytes``); a single record larger than the budget still
passes, alone. When the
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

from bridge.source.budget import fetch_count

BATCH_TAKE = 500
"""Records taken from the consumer at most per turn: the loop answers calls between takes."""

FIRST_TAKE = 8
"""Records taken at most while none has been seen, when bytes bound the buffer: the loop
cannot know their size before it has them. A first take of :data:`BATCH_TAKE` at a guessed
4 KiB each held 33 records of 900 KB (61 MB) under a 16 MiB budget; 8 records of at most
librdkafka's 1 MB ``message.max.bytes`` (about 2 MB each, mapped) overshoot by 16 MB at most,
and the next turn takes what fits at their measured size."""


POLL_RESERVE_PER = 30
POLL_RESERVE_MAX = 100
"""Records of ``max_buffered_records`` left out of the takes for the polls of a full buffer
(:meth:`FlowControl.polls`): one per 30, 1 to 100 (10 of 300, 100 of 10,000). A poll may return
a record fetched ahead; it is taken, and the polls stop when the reserve is used up, so the
buffer never goes over its bound (the suite saw 303 of 300 before the reserve)."""


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
        max_bytes: The records' memory budget in bytes (None: records alone bound it).
    """

    def __init__(
        self, max_buffered: int, pause_after_s: float = 1.0, max_bytes: int | None = None
    ) -> None:
        self.max_buffered = max_buffered
        # Left by takes for the polls of a full buffer (see polls): a poll may return a record.
        self.reserve = max(1, min(POLL_RESERVE_MAX, max_buffered // POLL_RESERVE_PER))
        self.max_bytes = max_bytes
        self.pause_after_s = pause_after_s
        self.paused = False
        self.full_since: float | None = None
        self._mean_cost: float | None = None  # unknown until records were seen

    def update(self, buffered: int, now: float, held_bytes: int = 0, unfinished: int = 0) -> Change:
        """Follow the buffer at ``now``; says whether to pause or resume fetching.

        Args:
            buffered: Records consumed and not committed.
            now: The clock.
            held_bytes: The estimated bytes of records consumed and not finished.
            unfinished: How many records those bytes are (for their mean size).
        """
        if unfinished:
            self._mean_cost = held_bytes / unfinished
        budget = self.max_bytes
        bytes_full = budget is not None and held_bytes > 0 and held_bytes >= budget
        if buffered < self.max_buffered - self.reserve and not bytes_full:
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
        below_half = budget is None or held_bytes < budget // 2
        if self.paused and buffered < self.max_buffered // 2 and below_half:
            self.paused = False
            return Change.RESUME
        return Change.NONE

    @property
    def mode(self) -> Mode:
        """What to do about fetching until the next :meth:`update`."""
        if self.paused:
            return Mode.PAUSED
        return Mode.HOLD if self.full_since is not None else Mode.TAKE

    def polls(self, answer_awaited: bool, buffered: int) -> bool:
        """Whether to poll the consumer while not taking records: when paused (membership,
        rebalance callbacks), and when full while the answer of an asynchronous commit is
        awaited (librdkafka serves it only in a consume or poll, and it frees the buffer: what
        it covers stops counting), as long as the reserve left by the takes is not used up: the
        poll may also return a record fetched ahead, which is taken."""
        if self.paused:
            return True
        return self.full_since is not None and answer_awaited and buffered < self.max_buffered

    def room(self, buffered: int, held_bytes: int = 0) -> int:
        """How many records may be taken now (at least 1 while taking): what the count bound
        leaves, and what fits in the byte budget at the mean size of the records held."""
        room = max(1, min(BATCH_TAKE, self.max_buffered - self.reserve - buffered))
        if self.max_bytes is None:
            return room
        if self._mean_cost is None:
            return min(room, FIRST_TAKE)
        return min(room, max(1, fetch_count(held_bytes, self.max_bytes, self._mean_cost, room)))

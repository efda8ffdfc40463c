"""What travels through the pipeline: one record's work item, and the run's counters."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.offsets.tracker import TopicPartition as TP


class Work:
    """One record on its way: the message, its entry, and how often it was sent.

    Attributes:
        attempts: Sends that count toward ``retry.max_attempts``.
        held: Sends failed for a reason not the entry's (an outage, the quota): not counted.
        epoch: The ownership epoch of its partition when it was consumed; an answer for an
            older epoch is ignored (see :mod:`bridge.pipeline.ownership`).
    """

    __slots__ = ("attempts", "entry", "epoch", "held", "msg", "offset", "size", "tp")

    def __init__(self, msg: Any, tp: TP, epoch: int) -> None:
        self.msg = msg
        self.tp = tp
        self.offset: int = msg.offset()
        self.epoch = epoch
        self.entry: dict[str, Any] = {}
        self.size = 0
        self.attempts = 0
        self.held = 0

    def retry_later(self, held: bool) -> None:
        """The entry goes to the retry schedule; a ``held`` send (the failure was not the
        entry's) is moved from ``attempts`` to ``held``."""
        if held:
            self.attempts -= 1
            self.held += 1

    def __repr__(self) -> str:
        return f"Work({self.tp[0]}/{self.tp[1]}@{self.offset}, attempts={self.attempts})"


Adapt = Callable[[Any], Any]
"""What a message is mapped as, given the message: ``bridge redrive`` maps the record a dead
letter carries (:mod:`bridge.redrive.view`) and raises ``FilteredOut`` for one it skips. The
work item keeps the message's own offset: that is what is committed."""


@dataclass
class Stats:
    """Counters of the run, read by tests, the demo and the progress log."""

    consumed: int = 0
    delivered: int = 0
    deduplicated: int = 0
    """Of ``delivered``: answered DEDUPLICATED (published by an earlier send)."""
    dead_lettered: int = 0
    mapping_failures: int = 0
    filtered: int = 0
    send_failures: int = 0
    retries: int = 0
    calls: int = 0
    call_failures: int = 0
    dlq_write_failures: int = 0
    commits: int = 0
    """Offset commits made: accepted (synchronous) or sent (asynchronous)."""
    committed: dict[TP, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Runtime:
    """What the loop takes from the world: time, waiting and chance (tests pass their own).

    Attributes:
        clock: Monotonic seconds.
        sleep: How to wait while no call is in flight.
        rng: The jitter of retry delays.
    """

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

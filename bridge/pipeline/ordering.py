"""Ordering per event group: a dispatch rule. Pure: no clock, no I/O.

A bus that keeps the order of an event group (the new bus's FIFO subscribers) keeps the order in
which the events were *published*. Sending a group's entries in two concurrent calls, or sending
one again after a later one succeeded, publishes them out of Kafka's order. So, for entries with
a group id, an entry is not started while an earlier entry of its group from the same partition
is unfinished: in flight, waiting for a retry, or being dead-lettered. Each (partition, group)
is a line: only its first entry may be sent; the next one goes when the first is finished
(delivered, or its dead letter acknowledged). Lines do not wait for each other, and entries
without a group id are not in any line (today's unordered, concurrent sending).

When an entry of a line is dead-lettered, ``group_on_dead_letter`` says what becomes of the rest:
``continue`` sends them (the bus publishes the group with a gap), ``hold`` dead-letters them too
(:data:`~bridge.codes.GROUP_HELD`), so the bus never publishes the group past the gap. A held
line is remembered until its partition is revoked or the bridge restarts.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Container
from typing import Any

from bridge.codes import GROUP_HELD
from bridge.dlq.writer import Reason
from bridge.offsets.tracker import TopicPartition as TP
from bridge.pipeline.work import Work

Line = tuple[TP, str]


def group_of(work: Work) -> str | None:
    """The event group of a work item's entry (``SystemMetadata.EventGroupId``, as the new bus's
    wire form carries it), or None: not ordered."""
    system: Any = work.entry.get("SystemMetadata")
    return system.get("EventGroupId") if system else None


class Turn(enum.Enum):
    """What to do with an entry now."""

    GO = "go"
    """Send it."""
    WAIT = "wait"
    """An earlier entry of its line is unfinished: it is released by :meth:`Ordering.finish`."""
    HOLD = "hold"
    """Its line is held after a dead letter: dead-letter it too (:meth:`Ordering.held_reason`)."""


class Ordering:
    """The lines of unfinished ordered entries.

    Args:
        on_dead_letter: ``continue`` or ``hold`` (``pipeline.group_on_dead_letter``).
    """

    def __init__(self, on_dead_letter: str = "continue") -> None:
        if on_dead_letter not in ("continue", "hold"):
            raise ValueError(f"on_dead_letter must be 'continue' or 'hold', not {on_dead_letter!r}")
        self._hold = on_dead_letter == "hold"
        self._lines: dict[Line, deque[Work]] = {}
        self._held: dict[Line, int] = {}
        """Held lines -> the offset whose dead letter held them."""
        self.waiting = 0
        """Entries waiting for an earlier entry of their line."""

    def __len__(self) -> int:
        """Entries in lines (the first of each included)."""
        return sum(len(line) for line in self._lines.values())

    def admit(self, work: Work) -> Turn:
        """Whether ``work`` (a new entry, or the first of its line sent again) may go now.

        A new entry joins the end of its line (entries come in offset order per partition).
        """
        group = group_of(work)
        if group is None:
            return Turn.GO
        key = (work.tp, group)
        line = self._lines.get(key)
        if line is None:
            self._lines[key] = deque((work,))
            return Turn.HOLD if key in self._held else Turn.GO
        if line[0] is work:
            return Turn.GO  # the first of its line, due again (a retry)
        line.append(work)
        self.waiting += 1
        return Turn.WAIT

    def finish(self, work: Work) -> tuple[Work, Turn] | None:
        """``work`` is finished (delivered, or its dead letter acknowledged): the next entry of
        its line and what to do with it, if there is one."""
        group = group_of(work)
        if group is None:
            return None
        key = (work.tp, group)
        line = self._lines.get(key)
        if not line or line[0] is not work:
            return None  # not in a line (a mapping failure), or of a partition given up since
        line.popleft()
        if not line:
            del self._lines[key]
            return None
        self.waiting -= 1
        return line[0], Turn.HOLD if key in self._held else Turn.GO

    def dead_lettered(self, work: Work) -> None:
        """``work`` is being dead-lettered: with ``hold``, the rest of its line is held."""
        group = group_of(work)
        if self._hold and group is not None:
            self._held.setdefault((work.tp, group), work.offset)

    def held_reason(self, work: Work) -> Reason:
        """The dead-letter reason of an entry of a held line."""
        group = group_of(work) or ""
        first = self._held.get((work.tp, group))
        topic, partition = work.tp
        return Reason(
            "send",
            GROUP_HELD,
            f"event group {group[:128]!r} of {topic}/{partition} is held: offset {first} was"
            " dead-lettered (pipeline.group_on_dead_letter: hold)",
            0,
        )

    def drop(self, tps: Container[TP]) -> None:
        """Forget the lines (and held lines) of partitions ``tps`` (revoked, restarted)."""
        for key in [k for k in self._lines if k[0] in tps]:
            self.waiting -= len(self._lines.pop(key)) - 1
        for key in [k for k in self._held if k[0] in tps]:
            del self._held[key]

    def clear(self) -> None:
        """Forget everything (the bridge is closing)."""
        self._lines.clear()
        self._held.clear()
        self.waiting = 0

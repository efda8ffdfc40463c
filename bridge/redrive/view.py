"""A dead letter seen as the record it was, and the end of a redrive.

The pipeline reads the dead-letter topic; each message goes through :class:`Adapter` before it
is mapped. A selected dead letter becomes a :class:`DeadLetterView`: the original topic,
partition and offset (so record ids and everything derived from them are the original's), the
original key, value, timestamp and headers. The offset tracker and the commits stay on the
dead letter's own coordinates: that is the redrive's progress. A dead letter not selected is
finished at once (:class:`~bridge.errors.FilteredOut` with the skip reason).

:class:`BoundedConsumer` hides what lies at or beyond the end offsets the dead-letter topic had
when the redrive started (dead letters written since, its own among them, are for the next
redrive) and asks the pipeline to stop once every partition was read to that end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from bridge.errors import FilteredOut
from bridge.redrive.select import DeadLetterInfo, Selection, parse_dead_letter

TP = tuple[str, int]


class DeadLetterView:
    """The original record of a dead letter, as :class:`~bridge.mapping.record.RecordLike`.

    Attributes:
        redrive_count: What the ``__bridge.errors.redrive_count`` header says if this record is
            dead-lettered again: one more than the dead letter's.
    """

    __slots__ = ("_headers", "_msg", "info", "redrive_count")

    def __init__(self, msg: Any, info: DeadLetterInfo) -> None:
        self._msg = msg
        self.info = info
        self._headers = list(info.original_headers) or None
        self.redrive_count = info.redrive_count + 1

    def topic(self) -> str:
        return self.info.topic

    def partition(self) -> int:
        return self.info.partition

    def offset(self) -> int:
        return self.info.offset

    def key(self) -> bytes | None:
        result: bytes | None = self._msg.key()
        return result

    def value(self) -> bytes | None:
        result: bytes | None = self._msg.value()
        return result

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return None if self._headers is None else list(self._headers)

    def timestamp(self) -> tuple[int, int]:
        """The dead letter's timestamp: the writer gave it the original record's."""
        result: tuple[int, int] = self._msg.timestamp()
        return result

    def error(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._msg)

    def __repr__(self) -> str:
        i = self.info
        return f"DeadLetterView({i.topic}/{i.partition}@{i.offset}, code={i.code})"


class Adapter:
    """The pipeline's ``adapt`` hook: a dead letter -> its original record, or skipped.

    Counts what it saw: ``selected`` by code, ``skipped`` by reason.
    """

    def __init__(self, selection: Selection) -> None:
        self.selection = selection
        self.selected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.codes_seen: Counter[str] = Counter()

    def __call__(self, msg: Any) -> DeadLetterView:
        """Raises:
        FilteredOut: Not selected; the reason is one of :data:`~bridge.redrive.select.SKIP_REASONS`.
        """
        info = parse_dead_letter(msg.headers())
        if info is not None:
            self.codes_seen[info.code] += 1
        reason = self.selection.skip_reason(info)
        if reason is not None:
            self.skipped[reason] += 1
            raise FilteredOut(reason)
        assert info is not None  # skip_reason(None) is never None
        self.selected[info.code] += 1
        return DeadLetterView(msg, info)


class Bounds:
    """How far a redrive reads: each partition from where it starts to the end it had at start.

    Args:
        starts: Per partition, the first offset this redrive reads (its group's committed offset,
            else the partition's first).
        ends: Per partition, the end offset (high watermark) when the redrive started.
    """

    def __init__(self, starts: dict[TP, int], ends: dict[TP, int]) -> None:
        self.ends = dict(ends)
        self._start = {tp: min(max(starts.get(tp, 0), 0), end) for tp, end in ends.items()}
        self._next = dict(self._start)
        self.total = sum(end - self._start[tp] for tp, end in ends.items())

    def admit(self, tp: TP, offset: int) -> bool:
        """Whether a message at ``tp``/``offset`` belongs to this redrive (and note it read)."""
        end = self.ends.get(tp)
        if end is None or offset >= end:
            return False
        self._next[tp] = max(self._next[tp], offset + 1)
        return True

    def advance(self, tp: TP, position: int) -> None:
        """The consumer's position on ``tp``: every offset before it was handed out (offsets
        without a record, such as transaction markers, are passed over this way)."""
        if tp in self._next and position >= 0:
            self._next[tp] = max(self._next[tp], min(position, self.ends[tp]))

    def committed_to_end(self, committed: dict[TP, int]) -> bool:
        """Whether ``committed`` (next offsets) reaches the end of every partition with
        something to read: the redrive is over, not only read."""
        return all(
            committed.get(tp, -1) >= end for tp, end in self.ends.items() if end > self._start[tp]
        )

    def starts(self) -> dict[TP, int]:
        """Per partition, where this redrive started reading."""
        return dict(self._start)

    @property
    def read(self) -> int:
        """Offsets read so far (of :attr:`total`)."""
        return sum(self._next[tp] - self._start[tp] for tp in self.ends)

    @property
    def done(self) -> bool:
        """Every partition read up to its end."""
        return all(self._next[tp] >= end for tp, end in self.ends.items())


class BoundedConsumer:
    """A consumer that hands out only what :class:`Bounds` admits, and calls ``on_done`` once
    everything was handed out. Every other method is the wrapped consumer's."""

    def __init__(
        self,
        consumer: Any,
        bounds: Bounds,
        on_done: Callable[[], None],
        on_read: Callable[[], None] | None = None,
    ) -> None:
        self._consumer = consumer
        self.bounds = bounds
        self._on_done = on_done
        self._on_read = on_read
        self._told = False

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        return self._admitted(self._consumer.consume(num_messages, timeout))

    def poll(self, timeout: float = -1) -> Any:
        msg = self._consumer.poll(timeout)
        got = self._admitted([msg] if msg is not None else [])
        return got[0] if got else None

    def _admitted(self, messages: list[Any]) -> list[Any]:
        out = [
            m
            for m in messages
            if m.error() is not None or self.bounds.admit((m.topic(), m.partition()), m.offset())
        ]
        if not messages:
            advance_to_position(self._consumer, self.bounds)
        if self._on_read is not None:
            self._on_read()
        if self.bounds.done and not self._told:
            self._told = True
            self._on_done()
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def advance_to_position(consumer: Any, bounds: Bounds) -> None:
    """Move ``bounds`` to the consumer's positions on its assigned partitions."""
    assigned = consumer.assignment()
    if not assigned:
        return
    for tp in consumer.position(assigned):
        bounds.advance((tp.topic, tp.partition), tp.offset)

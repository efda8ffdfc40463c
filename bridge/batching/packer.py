"""Packing entries into PutEvents calls within the API's limits. Pure: no I/O, no clock.

A batch never holds more than ``max_entries`` items nor more than ``max_bytes`` by AWS's entry
size formula. Items are emitted in the order they were added; none is dropped or duplicated.
An item larger than ``max_bytes`` alone is refused (the mapper dead-letters such entries first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, Protocol, TypeVar


class HasSize(Protocol):
    """Anything with a ``size`` in bytes by AWS's formula."""

    @property
    def size(self) -> int: ...


T = TypeVar("T", bound=HasSize)


class Packer(Generic[T]):
    """Accumulates items; hands out the open batch as soon as the next item would not fit.

    Args:
        max_entries: Items per batch (PutEvents: 10).
        max_bytes: Sum of item sizes per batch (PutEvents: 256 KiB by default).
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: list[T] = []
        self._bytes = 0
        self.opened_at: float | None = None
        """When the first item of the open batch was added (the caller's clock), for linger."""

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    @property
    def pending_bytes(self) -> int:
        """Bytes in the open batch."""
        return self._bytes

    def add(self, item: T, now: float = 0.0) -> list[T] | None:
        """Add ``item``; return the previous batch if ``item`` did not fit in it, else None.

        A batch that reaches ``max_entries`` exactly is returned at once.

        Raises:
            ValueError: ``item.size`` exceeds ``max_bytes``; it can never be sent.
        """
        size = item.size
        if size > self.max_bytes:
            raise ValueError(f"item of {size} bytes exceeds the batch limit of {self.max_bytes}")
        full: list[T] | None = None
        if self._items and self._bytes + size > self.max_bytes:
            full = self.flush()
        if not self._items:
            self.opened_at = now
        self._items.append(item)
        self._bytes += size
        if len(self._items) >= self.max_entries:
            if full is not None:  # cannot happen with max_entries >= 1, kept for clarity
                raise AssertionError("two batches closed by one item")
            return self.flush()
        return full

    def flush(self) -> list[T]:
        """Close the open batch and return it (possibly empty)."""
        items, self._items, self._bytes, self.opened_at = self._items, [], 0, None
        return items

    def due(self, now: float, linger_s: float) -> bool:
        """Whether the open batch has waited ``linger_s`` since its first item."""
        return self.opened_at is not None and now - self.opened_at >= linger_s

    def remove_if(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take out of the open batch the items matching ``predicate`` (revoked partitions)."""
        kept = [i for i in self._items if not predicate(i)]
        removed = [i for i in self._items if predicate(i)]
        self._items = kept
        self._bytes = sum(i.size for i in kept)
        if not kept:
            self.opened_at = None
        return removed


def pack(items: Iterable[T], max_entries: int, max_bytes: int) -> list[list[T]]:
    """All ``items`` in order, packed greedily into batches within the limits."""
    packer: Packer[T] = Packer(max_entries, max_bytes)
    batches = [b for item in items if (b := packer.add(item))]
    last = packer.flush()
    if last:
        batches.append(last)
    return batches

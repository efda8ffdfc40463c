"""What every sink declares, so that packing, retries, dead letters and offsets stay shared.

A sink turns the mapper's neutral entry (PutEvents-shaped: Source, DetailType, Detail,
Resources, Time, EventBusName, TraceHeader, and for some buses Subject) into its wire form once
per record, says how big that is by its bus's formula, and sends batches, judging each index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.mapping.record import RecordLike
from bridge.sink.outcome import Outcome


@dataclass(frozen=True, slots=True)
class SinkLimits:
    """The hard limits of a bus's API; the packer never builds a call beyond them.

    Attributes:
        max_entries: Entries per call.
        max_request_bytes: Sum of entry sizes per call, by the sink's size function.
        max_entry_bytes: Largest single entry; larger ones are dead-lettered (EntryTooLarge).
    """

    max_entries: int
    max_request_bytes: int
    max_entry_bytes: int


class Sink(Protocol):
    """One bus API."""

    name: str
    limits: SinkLimits

    def prepare(self, entry: dict[str, Any], record: RecordLike) -> dict[str, Any]:
        """The wire form of ``entry`` (raises MappingError if this bus refuses it)."""
        ...

    def entry_size(self, wire: dict[str, Any]) -> int:
        """Size of a prepared entry by the bus's formula."""
        ...

    def send(self, wires: Sequence[dict[str, Any]]) -> list[Outcome]:
        """One call; the outcome of each entry in order. Never raises for service failures."""
        ...


def record_id(record: RecordLike) -> str:
    """A deterministic id of a record: the same on every (re)delivery, unique per record."""
    return f"{record.topic()}-{record.partition()}-{record.offset()}"

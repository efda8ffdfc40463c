"""The record as mapping sees it: a narrow view of ``confluent_kafka.Message``."""

from __future__ import annotations

from typing import Protocol

# confluent_kafka timestamp types (TIMESTAMP_NOT_AVAILABLE, CREATE_TIME, LOG_APPEND_TIME).
TIMESTAMP_NOT_AVAILABLE = 0


class RecordLike(Protocol):
    """The methods of ``confluent_kafka.Message`` the bridge reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...


def where(record: RecordLike) -> str:
    """``topic/partition@offset``, the way errors and logs name a record."""
    return f"{record.topic()}/{record.partition()}@{record.offset()}"

"""Dead letters read back, and which ones a redrive selects. Pure: no Kafka, no clock.

A dead letter carries the original record's key, value and headers, then the bridge's
``__bridge.errors.*`` headers (see :func:`bridge.dlq.writer.reason_headers`): where the record
came from, the stage and code of the failure, when it was dead-lettered, and, for a record that
failed again in a redrive, how many redrives it went through.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.dlq.writer import HEADER_PREFIX

Headers = Sequence[tuple[str, bytes | None]]

REDRIVE_COUNT = "redrive_count"
"""The header (after :data:`HEADER_PREFIX`) counting the redrives a dead letter went through."""

NO_BRIDGE_HEADERS = "no_bridge_headers"
OTHER_CODE = "other_code"
OTHER_STAGE = "other_stage"
OTHER_TOPIC = "other_source_topic"
BEFORE_SINCE = "before_since"
AFTER_UNTIL = "after_until"
NO_DEAD_LETTER_TIME = "no_dead_letter_time"
SKIP_REASONS = (
    NO_BRIDGE_HEADERS,
    OTHER_CODE,
    OTHER_STAGE,
    OTHER_TOPIC,
    BEFORE_SINCE,
    AFTER_UNTIL,
    NO_DEAD_LETTER_TIME,
)
"""Why a dead letter is skipped (bounded: also a metric label)."""

STAGES = ("decode", "map", "validate", "offload", "send")
"""The stages a dead letter names (:class:`~bridge.dlq.writer.Reason`)."""

_REQUIRED = ("topic", "partition", "offset", "stage", "code")


@dataclass(frozen=True, slots=True)
class DeadLetterInfo:
    """What the bridge's headers say about a dead letter.

    Attributes:
        topic, partition, offset: Where the original record was read.
        stage, code, message: Why it was dead-lettered (the last time).
        attempts: Sends that counted toward ``retry.max_attempts``.
        dead_lettered_ms: When it was written, epoch milliseconds (None if not recorded).
        redrive_count: Redrives it failed in before (0: dead-lettered by ``bridge run``).
        original_headers: The record's own headers, in order, the bridge's left out.
    """

    topic: str
    partition: int
    offset: int
    stage: str
    code: str
    message: str = ""
    attempts: int = 0
    dead_lettered_ms: int | None = None
    redrive_count: int = 0
    original_headers: tuple[tuple[str, bytes | None], ...] = ()


def parse_dead_letter(headers: Headers | None) -> DeadLetterInfo | None:
    """Read a dead letter's headers; None if the bridge's own are missing or unreadable.

    A name repeated (a record that carried the bridge's headers already) counts by its last value.
    """
    bridge: dict[str, str] = {}
    original: list[tuple[str, bytes | None]] = []
    for name, value in headers or ():
        if name.startswith(HEADER_PREFIX):
            try:
                bridge[name[len(HEADER_PREFIX) :]] = (value or b"").decode("utf-8")
            except UnicodeDecodeError:
                return None
        else:
            original.append((name, value))
    if any(not bridge.get(k) for k in _REQUIRED):
        return None
    try:
        partition, offset = int(bridge["partition"]), int(bridge["offset"])
        attempts = _int_or(bridge.get("attempts"), 0)
        timestamp = _int_or(bridge.get("timestamp"), None)
        count = _int_or(bridge.get(REDRIVE_COUNT), 0)
    except ValueError:
        return None
    if partition < 0 or offset < 0 or (count is not None and count < 0):
        return None
    return DeadLetterInfo(
        topic=bridge["topic"],
        partition=partition,
        offset=offset,
        stage=bridge["stage"],
        code=bridge["code"],
        message=bridge.get("message", ""),
        attempts=attempts or 0,
        dead_lettered_ms=timestamp,
        redrive_count=count or 0,
        original_headers=tuple(original),
    )


def _int_or(text: str | None, default: int | None) -> int | None:
    return default if text is None or text == "" else int(text)


@dataclass(frozen=True)
class Selection:
    """Which dead letters a redrive sends again; an empty set selects every value.

    Attributes:
        codes, stages, source_topics: Accepted reason codes, stages and original topics.
        since_ms, until_ms: Dead-letter time window, epoch milliseconds, ``since`` included,
            ``until`` excluded.
    """

    codes: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    source_topics: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None

    def skip_reason(self, info: DeadLetterInfo | None) -> str | None:
        """None if ``info`` is selected, else the first reason (of :data:`SKIP_REASONS`) why not."""
        if info is None:
            return NO_BRIDGE_HEADERS
        if self.codes and info.code not in self.codes:
            return OTHER_CODE
        if self.stages and info.stage not in self.stages:
            return OTHER_STAGE
        if self.source_topics and info.topic not in self.source_topics:
            return OTHER_TOPIC
        if self.since_ms is None and self.until_ms is None:
            return None
        if info.dead_lettered_ms is None:
            return NO_DEAD_LETTER_TIME
        if self.since_ms is not None and info.dead_lettered_ms < self.since_ms:
            return BEFORE_SINCE
        if self.until_ms is not None and info.dead_lettered_ms >= self.until_ms:
            return AFTER_UNTIL
        return None

    def digest(self) -> str:
        """8 hex digits naming this selection (the same flags in any order give the same)."""
        canonical = json.dumps(
            [
                sorted(self.codes),
                sorted(self.stages),
                sorted(self.source_topics),
                self.since_ms,
                self.until_ms,
            ]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:8]

    def describe(self) -> str:
        """The selection in words, for the start line and the summary."""
        parts = [
            f"{name} in {', '.join(sorted(values))}"
            for name, values in (
                ("code", self.codes),
                ("stage", self.stages),
                ("source topic", self.source_topics),
            )
            if values
        ]
        if self.since_ms is not None:
            parts.append(f"dead-lettered at or after {format_ms(self.since_ms)}")
        if self.until_ms is not None:
            parts.append(f"dead-lettered before {format_ms(self.until_ms)}")
        return "; ".join(parts) if parts else "every dead letter"


def parse_time(text: str, option: str) -> int:
    """``--since``/``--until`` as epoch milliseconds: ISO 8601 (UTC unless an offset is given)
    or epoch milliseconds.

    Raises:
        ValueError: Neither; the message names ``option``.
    """
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    try:
        when = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{option} {text!r} is not a time: give ISO 8601 (2026-12-07T17:00:00Z) or epoch"
            " milliseconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def format_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC."""
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def close_code(code: str, known: Iterable[str]) -> str | None:
    """A known code ``code`` is probably a typo of (same letters but for case, or one or two
    edits away), or None."""
    import difflib

    known = sorted(known)
    for candidate in known:
        if candidate.lower() == code.lower():
            return candidate
    found = difflib.get_close_matches(code, known, n=1, cutoff=0.85)
    return found[0] if found else None

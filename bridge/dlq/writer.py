"""The dead-letter topic: the original record byte for byte, plus headers saying why.

A record counts as finished only when the broker acknowledged its dead-letter write: the
delivery report, not the ``produce`` call, is what lets its offset be committed (as KIP-610 asks
of Kafka Connect).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException

from bridge.mapping.record import TIMESTAMP_NOT_AVAILABLE, RecordLike

HEADER_PREFIX = "__bridge.errors."


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a record was dead-lettered.

    Attributes:
        stage: ``decode``, ``map``, ``validate`` or ``send``.
        code: The bridge's reason code or AWS's ErrorCode.
        message: A sentence naming what is wrong.
        attempts: Sends of the entry that counted toward ``retry.max_attempts`` (0 if never sent).
    """

    stage: str
    code: str
    message: str
    attempts: int = 0


class ProducerLike(Protocol):
    """The methods of ``confluent_kafka.Producer`` used here."""

    def produce(self, topic: str, **kwargs: Any) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...


def reason_headers(record: RecordLike, reason: Reason) -> list[tuple[str, bytes | None]]:
    """The original headers, then the ``__bridge.errors.*`` headers.

    A record sent again by ``bridge redrive`` (a view of a dead letter, see
    :mod:`bridge.redrive.view`) has a ``redrive_count``: written as ``redrive_count``.
    """
    original: list[tuple[str, bytes | None]] = list(record.headers() or ())
    fields = {
        "topic": record.topic() or "",
        "partition": str(record.partition()),
        "offset": str(record.offset()),
        "stage": reason.stage,
        "code": reason.code,
        "message": reason.message[:4000],
        "attempts": str(reason.attempts),
        "timestamp": str(int(time.time() * 1000)),
    }
    redrives = getattr(record, "redrive_count", 0)
    if redrives:
        fields["redrive_count"] = str(redrives)
    return original + [(HEADER_PREFIX + k, v.encode("utf-8")) for k, v in fields.items()]


def write_size(record: RecordLike, reason: Reason) -> int:
    """Bytes of a dead-letter write: key, value and headers (the broker adds some framing)."""
    size = len(record.key() or b"") + len(record.value() or b"")
    for name, value in reason_headers(record, reason):
        size += len(name) + len(value or b"")
    return size


def failure_hint(err: Any, topic: str, size: int) -> str | None:
    """What to do about a failed dead-letter write, for the codes an operator can fix."""
    code = err.code() if isinstance(err, KafkaError) else None
    if code == KafkaError.MSG_SIZE_TOO_LARGE:
        return (
            f"the write ({size} bytes) is larger than the dead-letter topic {topic!r} accepts:"
            " raise that topic's max.message.bytes (and dlq.producer message.max.bytes if"
            " it is set lower)"
        )
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        return f"the dead-letter topic {topic!r} does not exist: create it (dlq.topic)"
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return f"the bridge's principal may not write to {topic!r}: grant it WRITE on the topic"
    return None


class DeadLetterWriter:
    """Writes records to the dead-letter topic and reports acknowledgements.

    Args:
        producer: A ``confluent_kafka.Producer`` (acks=all).
        topic: The dead-letter topic.
        on_result: Called from ``poll``/``flush`` with ``(token, error)`` per write; ``error`` is
            None when the broker acknowledged it.
    """

    def __init__(
        self,
        producer: ProducerLike,
        topic: str,
        on_result: Callable[[Any, Any], None],
    ) -> None:
        self._producer = producer
        self.topic = topic
        self._on_result = on_result
        self.in_flight = 0

    def write(self, record: RecordLike, reason: Reason, token: Any) -> None:
        """Queue the write of ``record`` with ``reason``; ``token`` comes back in ``on_result``."""
        ts_type, ts = record.timestamp()
        kwargs: dict[str, Any] = {
            "key": record.key(),
            "value": record.value(),
            "headers": reason_headers(record, reason),
            "on_delivery": lambda err, _msg, t=token: self._done(t, err),
        }
        if ts_type != TIMESTAMP_NOT_AVAILABLE:
            kwargs["timestamp"] = ts
        while True:
            try:
                self._producer.produce(self.topic, **kwargs)
                break
            except BufferError:  # local queue full: serve delivery reports, then try again
                self._producer.poll(0.1)
            except KafkaException as exc:
                # Refused before it was queued (topic known not to exist, record over the
                # producer's message.max.bytes): a failed write like any other, reported the
                # same way, so the offset is held and the write tried again; never a crash.
                self.in_flight += 1
                self._done(token, exc.args[0] if exc.args else exc)
                return
        self.in_flight += 1

    def _done(self, token: Any, err: Any) -> None:
        self.in_flight -= 1
        self._on_result(token, err)

    def poll(self) -> None:
        """Serve delivery reports that arrived."""
        self._producer.poll(0)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every write to be answered; True if all were."""
        return self._producer.flush(timeout) == 0

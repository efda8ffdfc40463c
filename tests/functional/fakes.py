"""In-memory fakes of the three clients the pipeline talks to: no broker, no AWS, no network.

* :class:`FakeConsumer` - a consumer group member holding per-partition logs of real
  ``confluent_kafka.Message`` objects; serves rebalance callbacks from inside ``consume``/``poll``
  the way librdkafka does (pause flags kept across revoke and re-assign, too), and records every
  hand-out and every commit.
* :class:`FakeProducer` - the dead-letter producer: ``produce`` queues, ``poll``/``flush`` deliver
  (successfully, or with an error while ``broken``; not at all while ``hold``).
* :class:`FakeEventsClient` - ``put_events`` answered by a test-supplied function, optionally
  blocked behind a ``threading.Event`` gate to keep calls in flight.

Each record's value is ``{"p": partition, "o": offset}`` unless the test gives another one, so
an entry's ``Detail`` says which record it carries (:func:`ident`).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

TP = tuple[str, int]
TIMESTAMP_CREATE_TIME = 1
BASE_TS_MS = 1_700_000_000_000


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.002)


def ident(entry: dict[str, Any]) -> tuple[int, int]:
    """(partition, offset) of the record an entry was mapped from (default record values)."""
    detail = json.loads(entry["Detail"])
    return detail["p"], detail["o"]


# --------------------------------------------------------------------------------------- consumer
@dataclass
class CommitAttempt:
    """One call of ``consumer.commit``."""

    offsets: dict[TP, int]
    ok: bool
    assigned: frozenset[TP]
    in_rebalance: bool


@dataclass
class _Scheduled:
    tps: list[TP]
    after_consumed: int
    kind: str  # "revoke", "lost" or "assign"


class FakeConsumer:
    """A group member that gets every partition of ``topic`` on its first ``consume``.

    Args:
        topic: The topic.
        partitions: How many partitions it has (all assigned to this member).
    """

    def __init__(self, topic: str = "orders", partitions: int = 2) -> None:
        self.topic = topic
        self._lock = threading.RLock()
        self._logs: dict[TP, list[Message]] = {(topic, p): [] for p in range(partitions)}
        self._positions: dict[TP, int] = {}
        self._assignment: list[TP] = []
        self._paused: set[TP] = set()
        self._callbacks: dict[str, Callable[..., Any] | None] = {}
        self._subscribed = False
        self._assigned_once = False
        self._scheduled: list[_Scheduled] = []
        self._in_rebalance = False
        self.fail_commits = 0
        """Commits still to fail with REBALANCE_IN_PROGRESS."""
        self.handed_out: list[Message] = []
        self.handout_log: list[tuple[int, int]] = []
        """After each non-empty hand-out: (records handed out so far, records committed so far)."""
        self.commit_attempts: list[CommitAttempt] = []
        self.committed_offsets: dict[TP, int] = {}
        self.committed_metadata: dict[TP, str] = {}
        self.revocations: list[list[TP]] = []
        self.pause_calls = 0
        self.ever_paused = False
        self.closed = False
        self.on_commit: Callable[[Any, list[TopicPartition]], None] | None = None
        """librdkafka's ``on_commit``: set, asynchronous commits are answered through it in the
        next consume or poll (the broker has taken them at once)."""
        self._answers: list[tuple[Any, list[TopicPartition]]] = []

    # ---------------------------------------------------------------- test side
    def add(
        self,
        partition: int,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> Message:
        """Append a record to ``partition``; its value defaults to ``{"p": .., "o": ..}``."""
        with self._lock:
            log = self._logs[(self.topic, partition)]
            offset = len(log)
            if value is None:
                value = json.dumps({"p": partition, "o": offset}).encode()
            msg = Message(
                topic=self.topic,
                partition=partition,
                offset=offset,
                key=key if key is not None else f"k{partition}-{offset}".encode(),
                value=value,
                headers=headers,
                timestamp=(TIMESTAMP_CREATE_TIME, BASE_TS_MS + offset),
            )
            log.append(msg)
            return msg

    def add_many(self, partition: int, count: int) -> list[Message]:
        """Append ``count`` default records to ``partition``."""
        return [self.add(partition) for _ in range(count)]

    def rewind(self, partition: int, offset: int) -> None:
        """Move the fetch position back, as an offset reset by librdkafka would."""
        with self._lock:
            self._positions[(self.topic, partition)] = offset

    def end(self, partition: int) -> int:
        """The log end offset of ``partition``."""
        with self._lock:
            return len(self._logs[(self.topic, partition)])

    def schedule_revoke(
        self, partitions: Iterable[int], after_consumed: int = 0, lost: bool = False
    ) -> None:
        """Revoke (or lose) ``partitions`` inside the first ``consume``/``poll`` that starts once
        ``after_consumed`` records were handed out in total."""
        with self._lock:
            tps = [(self.topic, p) for p in partitions]
            self._scheduled.append(_Scheduled(tps, after_consumed, "lost" if lost else "revoke"))

    def schedule_assign(self, partitions: Iterable[int], after_consumed: int = 0) -> None:
        """Assign ``partitions`` back (an incremental assign) inside the first ``consume``/``poll``
        that starts once ``after_consumed`` records were handed out in total; fetching resumes
        at their committed offsets, unless they are still paused (see :meth:`pause`)."""
        with self._lock:
            tps = [(self.topic, p) for p in partitions]
            self._scheduled.append(_Scheduled(tps, after_consumed, "assign"))

    @property
    def paused(self) -> set[TP]:
        with self._lock:
            return set(self._paused)

    @property
    def assigned(self) -> list[TP]:
        with self._lock:
            return list(self._assignment)

    @property
    def committed_total(self) -> int:
        with self._lock:
            return sum(self.committed_offsets.values())

    def commits(self) -> list[CommitAttempt]:
        """A snapshot of every commit attempt so far."""
        with self._lock:
            return list(self.commit_attempts)

    def handed_out_ids(self) -> list[tuple[int, int]]:
        with self._lock:
            return [(m.partition() or 0, m.offset() or 0) for m in self.handed_out]

    # ---------------------------------------------------------------- consumer API
    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[..., Any] | None = None,
        on_revoke: Callable[..., Any] | None = None,
        on_lost: Callable[..., Any] | None = None,
    ) -> None:
        assert self.topic in topics, (self.topic, topics)
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self._subscribed = True

    def _serve_rebalance(self) -> None:
        """Rebalance callbacks, from the calling thread, outside the lock (as librdkafka)."""
        if self._subscribed and not self._assigned_once:
            with self._lock:
                self._assigned_once = True
                tps = list(self._logs)
                self._assignment = list(tps)
                for tp in tps:
                    self._positions.setdefault(tp, self.committed_offsets.get(tp, 0))
            callback = self._callbacks.get("assign")
            if callback is not None:
                self._call_back(callback, tps)
        while True:
            with self._lock:
                due = next(
                    (s for s in self._scheduled if len(self.handed_out) >= s.after_consumed),
                    None,
                )
                if due is None:
                    return
                self._scheduled.remove(due)
                if due.kind == "assign":
                    tps = [tp for tp in due.tps if tp not in self._assignment]
                else:
                    tps = [tp for tp in due.tps if tp in self._assignment]
            callback = self._callbacks.get(due.kind)
            if callback is not None and tps:
                self._call_back(callback, tps)
            with self._lock:
                if due.kind == "assign":
                    # After the callback, as confluent-kafka's incremental_assign.
                    self._assignment += tps
                    for tp in tps:
                        self._positions[tp] = self.committed_offsets.get(tp, 0)
                    continue
                self.revocations.append(tps)
                self._assignment = [tp for tp in self._assignment if tp not in tps]
                # The pause flags stay: librdkafka keeps them across revoke and re-assign.
                for tp in tps:
                    self._positions.pop(tp, None)

    def _call_back(self, callback: Callable[..., Any], tps: list[TP]) -> None:
        self._in_rebalance = True
        try:
            callback(self, [TopicPartition(t, p) for t, p in tps])
        finally:
            self._in_rebalance = False

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if self.closed:
            raise RuntimeError("Consumer closed")
        self._serve_rebalance()
        answers, self._answers = self._answers, []
        for err, offsets in answers:
            assert self.on_commit is not None
            self.on_commit(err, offsets)
        out: list[Message] = []
        with self._lock:
            active = [tp for tp in self._assignment if tp not in self._paused]
            progressed = True
            while len(out) < num_messages and progressed:
                progressed = False
                for tp in active:
                    if len(out) >= num_messages:
                        break
                    log = self._logs[tp]
                    position = self._positions[tp]
                    if position < len(log):
                        out.append(log[position])
                        self._positions[tp] = position + 1
                        progressed = True
            if out:
                self.handed_out.extend(out)
                done = sum(self.committed_offsets.values())
                self.handout_log.append((len(self.handed_out), done))
        if not out and timeout > 0:
            time.sleep(min(timeout, 0.005))
        return out

    def poll(self, timeout: float = -1) -> Message | None:
        got = self.consume(1, timeout)
        return got[0] if got else None

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The next offset each of ``partitions`` hands out (-1001 for one not assigned)."""
        with self._lock:
            return [
                TopicPartition(
                    p.topic, p.partition, self._positions.get((p.topic, p.partition), -1001)
                )
                for p in partitions
            ]

    def assignment(self) -> list[TopicPartition]:
        with self._lock:
            return [TopicPartition(t, p) for t, p in self._assignment]

    def pause(self, partitions: list[TopicPartition]) -> None:
        """Stop fetching ``partitions``. As librdkafka (librdkafka#1849), the flag belongs to
        the partition, not to the assignment: it survives a revoke and a later re-assign until
        :meth:`resume` clears it."""
        with self._lock:
            self.pause_calls += 1
            for p in partitions:
                self._paused.add((p.topic, p.partition))
                self.ever_paused = True

    def resume(self, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for p in partitions:
                self._paused.discard((p.topic, p.partition))

    def commit(
        self,
        message: Any = None,
        offsets: list[TopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> list[TopicPartition] | None:
        if self.closed:
            raise RuntimeError("Consumer closed")
        assert offsets is not None, "the bridge commits explicit offsets"
        if asynchronous:
            assert self.on_commit is not None, "no answer can come without on_commit"
            try:
                self.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                self._answers.append((exc.args[0], offsets))
            else:
                self._answers.append((None, offsets))
            return None
        positions = {(o.topic, o.partition): o.offset for o in offsets}
        metadata = {(o.topic, o.partition): o.metadata or "" for o in offsets}
        with self._lock:
            ok = self.fail_commits <= 0
            self.commit_attempts.append(
                CommitAttempt(positions, ok, frozenset(self._assignment), self._in_rebalance)
            )
            if not ok:
                self.fail_commits -= 1
                raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
            self.committed_offsets.update(positions)
            self.committed_metadata.update(metadata)
        return offsets

    def committed(
        self, partitions: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]:
        """The committed offsets (and metadata) of ``partitions``, as the group coordinator
        answers: OFFSET_INVALID (-1001) for a partition never committed."""
        with self._lock:
            out = []
            for p in partitions:
                tp = (p.topic, p.partition)
                answer = TopicPartition(p.topic, p.partition, self.committed_offsets.get(tp, -1001))
                if self.committed_metadata.get(tp):
                    answer = TopicPartition(
                        p.topic, p.partition, answer.offset, metadata=self.committed_metadata[tp]
                    )
                out.append(answer)
            return out

    def close(self) -> None:
        self.closed = True


# --------------------------------------------------------------------------------------- producer
@dataclass
class Produced:
    """One dead-letter write."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int | None
    on_delivery: Callable[[Any, Any], None] | None = field(repr=False, default=None)

    def header(self, name: str) -> bytes | None:
        """The last header called ``name`` (``__bridge.errors.`` prefix added for short names)."""
        full = name if name.startswith("__") else "__bridge.errors." + name
        found = [v for k, v in self.headers if k == full]
        return found[-1] if found else None


class FakeProducer:
    """The dead-letter producer. ``broken``: every delivery fails; ``hold``: none is served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.broken = False
        self.hold = False
        self.pending: list[Produced] = []
        self.written: list[Produced] = []
        self.failed: list[Produced] = []
        self.produced = 0
        self._offsets = itertools.count()

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: Callable[[Any, Any], None] | None = None,
        timestamp: int | None = None,
        **_: Any,
    ) -> None:
        with self._lock:
            self.produced += 1
            self.pending.append(
                Produced(topic, key, value, list(headers or []), timestamp, on_delivery)
            )

    def _deliver(self) -> int:
        with self._lock:
            if self.hold:
                return 0
            batch, self.pending = self.pending, []
            broken = self.broken
            for record in batch:
                (self.failed if broken else self.written).append(record)
        for record in batch:
            if record.on_delivery is None:
                continue
            if broken:
                record.on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
            else:
                msg = Message(
                    topic=record.topic,
                    partition=0,
                    offset=next(self._offsets),
                    key=record.key,
                    value=record.value,
                    headers=list(record.headers),
                )
                record.on_delivery(None, msg)
        return len(batch)

    def poll(self, timeout: float = 0) -> int:
        served = self._deliver()
        if not served and timeout and timeout > 0:
            time.sleep(min(timeout, 0.005))
        return served

    def flush(self, timeout: float = -1) -> int:
        """Serve what can be served now (nothing changes with waiting: no waiting)."""
        self._deliver()
        with self._lock:
            return len(self.pending)

    def __len__(self) -> int:
        with self._lock:
            return len(self.pending)

    def written_snapshot(self) -> list[Produced]:
        with self._lock:
            return list(self.written)


# --------------------------------------------------------------------------------------- events
Respond = Callable[[list[dict[str, Any]], int], Any]


def accept_all(entries: Sequence[dict[str, Any]], call_no: int) -> dict[str, Any]:
    """Every entry delivered."""
    return response(entries, {}, call_no)


def response(
    entries: Sequence[dict[str, Any]], errors: dict[int, str], call_no: int = 0
) -> dict[str, Any]:
    """A PutEvents 200 answer: ``errors`` maps an index to its ErrorCode, the rest get EventIds."""
    results: list[dict[str, Any]] = []
    for index in range(len(entries)):
        code = errors.get(index)
        if code:
            results.append({"ErrorCode": code, "ErrorMessage": f"{code} at index {index}"})
        else:
            results.append({"EventId": f"evt-{call_no}-{index}"})
    return {"FailedEntryCount": len(errors), "Entries": results}


def per_entry(judge: Callable[[tuple[int, int], int], str | None]) -> Respond:
    """A ``respond`` deciding each entry alone: ``judge((partition, offset), call_no)`` returns
    None (delivered) or an ErrorCode."""

    def respond(entries: list[dict[str, Any]], call_no: int) -> dict[str, Any]:
        errors = {i: judge(ident(e), call_no) for i, e in enumerate(entries)}
        return response(entries, {i: c for i, c in errors.items() if c}, call_no)

    return respond


class FakeEventsClient:
    """``put_events`` for the sink; thread-safe (the pipeline calls it from its pool).

    Args:
        respond: ``respond(entries, call_no)`` -> a response dict, or an exception to raise.
        gate: When given, each call is recorded and then waits for the gate to be set.
    """

    def __init__(self, respond: Respond | None = None, gate: threading.Event | None = None) -> None:
        self.respond: Respond = respond or accept_all
        self.gate = gate
        self.gate_timeout = 20.0
        self._lock = threading.Lock()
        self.calls: list[list[dict[str, Any]]] = []
        self.answered: list[dict[str, Any] | BaseException] = []
        self.answers_by_call: dict[int, dict[str, Any] | BaseException] = {}
        self.waiting = 0
        self.gate_timeouts = 0

    def put_events(self, *, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
        entries = [dict(e) for e in Entries]
        with self._lock:
            call_no = len(self.calls)
            self.calls.append(entries)
            self.waiting += 1
        try:
            if self.gate is not None and not self.gate.wait(self.gate_timeout):
                with self._lock:
                    self.gate_timeouts += 1
            answer = self.respond(list(entries), call_no)
        finally:
            with self._lock:
                self.waiting -= 1
        with self._lock:
            self.answered.append(answer)
            self.answers_by_call[call_no] = answer
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[no-any-return]

    def snapshot(self) -> list[list[dict[str, Any]]]:
        """The entries of every call so far, in call order."""
        with self._lock:
            return [list(c) for c in self.calls]

    def ids(self) -> list[list[tuple[int, int]]]:
        """(partition, offset) of each entry of each call."""
        return [[ident(e) for e in call] for call in self.snapshot()]

    def delivered(self) -> list[tuple[int, int]]:
        """(partition, offset) of every entry that got an EventId, in answer order."""
        with self._lock:
            items = sorted(self.answers_by_call.items())
            calls = list(self.calls)
        out: list[tuple[int, int]] = []
        for call_no, answer in items:
            if isinstance(answer, BaseException):
                continue
            results = answer.get("Entries") or []
            if len(results) != len(calls[call_no]):
                continue
            for entry, result in zip(calls[call_no], results, strict=True):
                if result.get("EventId") and not result.get("ErrorCode"):
                    out.append(ident(entry))
        return out

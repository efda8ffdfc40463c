"""The audit of a run: committed offsets sampled against what was finished at that time.

Also :class:`Fault`, what the audit measures recovery against: when a fault started and ended,
the bound on what it may make the bridge send twice, how many records were sent twice after it,
and how long the bridge took to resume and to catch up.

The committed offsets are read with their metadata: the bridge records there which offsets above
the committed one are finished (``bridge.offsets.metadata``), and promises not to send them
again. The audit decodes it, leaves those offsets out of what a crash may make the bridge send
again (:meth:`Audit.delivered_uncommitted`), and counts any that were sent again all the same
(:attr:`Audit.resent_recorded`).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bridge.offsets import metadata
from testbed.endpoint import LocalEventBridge

from .accounting import coordinates

TP = tuple[str, int]


def quiet(conf: dict[str, Any]) -> dict[str, Any]:
    """No librdkafka chatter on stderr while a broker is down or a topic deleted."""
    import logging

    silent = logging.getLogger("reliability.librdkafka")
    silent.addHandler(logging.NullHandler())
    silent.propagate = False
    return {**conf, "logger": silent}


# ------------------------------------------------------------------------------- the faults
@dataclass
class Fault:
    """One fault: when it started and ended, and what the bridge did after.

    ``bound``: how many records this fault may make the bridge send twice (an int, or a
    function evaluated at the end, e.g. the entries of calls whose answer the endpoint lost).
    ``resume_s``: from the end of the fault to the first record delivered that had not been
    before. ``catch_up_s``: from the end of the fault until every record produced before that
    end is committed. None: not reached before the next fault started (or the run ended).
    ``duplicates``: records received or dead-lettered again (a repeat of a finished offset)
    by calls made, or dead letters written, after this fault ended and before the next one
    ended: what this fault made the bridge send twice.
    """

    kind: str
    started: float
    bound: int | Callable[[], int] = 0
    cleared: float | None = None
    backlog: dict[TP, int] | None = None
    seen_at_clear: int = 0
    resume_s: float | None = None
    catch_up_s: float | None = None
    interrupted: bool = False
    duplicates: int = 0

    def bound_value(self) -> int:
        return self.bound() if callable(self.bound) else self.bound


# -------------------------------------------------------------------------------- the audit
class Audit:
    """Samples committed offsets during a run and checks them against what was finished then.

    Each sample reads the group's committed offsets first, then the dead-letter topic up to
    its high watermark and the endpoint's received entries: whatever was finished before the
    commit is in what is read after it. An offset below a committed position that is neither
    received nor dead-lettered is a violation: the commit passed an unfinished record.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        dlq: str,
        group: str,
        endpoint: LocalEventBridge,
        interval: float = 0.2,
    ) -> None:
        self._bootstrap = bootstrap
        self.topic = topic
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]
        self._dlq = dlq
        self._group = group
        self._endpoint = endpoint
        self._interval = interval
        self._offsets = Consumer(
            quiet({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        )
        self._dlq_reader: Consumer | None = None
        self.dlq_lock = threading.Lock()
        self.dlq_paused = False
        self.dead: list[Any] = []  # every dead letter read, across dead-letter topic lifetimes
        self._dlq_generations: list[list[Any]] = [[]]
        self._received_seen = 0
        self.received: list[dict[str, Any]] = []
        self._finished: dict[int, set[int]] = {p: set() for p in range(partitions)}
        # Offsets the committed metadata recorded finished, and when the audit first read that.
        self._recorded: dict[int, dict[int, float]] = {p: {} for p in range(partitions)}
        self.repeats = 0
        self.unattributed_repeats = 0  # repeats before any fault ended
        self.resent_recorded: list[tuple[int, int]] = []  # (partition, offset) sent again
        self.distinct_delivered = 0
        self._verified: dict[int, int] = {}
        self._last_positions: dict[int, int] = {}
        self.violations: list[str] = []
        self.notes: list[str] = []
        self.samples = 0
        self.skipped = 0
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="audit", daemon=True)

    # -- reading
    def positions(self, timeout: float = 5) -> dict[int, int]:
        """Committed position per partition (-1001 when none)."""
        return {p: position for p, (position, _) in self.committed(timeout).items()}

    def committed(self, timeout: float = 5) -> dict[int, tuple[int, frozenset[int]]]:
        """Per partition: the committed position (-1001 when none) and the offsets above it
        that the commit's metadata records finished (empty when it records none or is not
        the bridge's); the recorded offsets are remembered with the time they were read."""
        now = time.time()
        found = self._offsets.committed(self._tps, timeout=timeout)
        out: dict[int, tuple[int, frozenset[int]]] = {}
        for tp in found:
            recorded = frozenset()
            if tp.offset >= 0 and tp.metadata:
                recorded = metadata.decode(tp.offset, tp.metadata).offsets
            known = self._recorded[tp.partition]
            for offset in recorded:
                known.setdefault(offset, now)
            out[tp.partition] = (tp.offset, recorded)
        return out

    def end_offsets(self, timeout: float = 5) -> dict[int, int]:
        return {
            tp.partition: self._offsets.get_watermark_offsets(tp, timeout=timeout)[1]
            for tp in self._tps
        }

    def _reader(self) -> Consumer:
        if self._dlq_reader is None:
            reader = Consumer(
                quiet(
                    {
                        "bootstrap.servers": self._bootstrap,
                        "group.id": "audit-" + uuid.uuid4().hex,
                        "enable.auto.commit": False,
                        "enable.partition.eof": True,
                    }
                )
            )
            meta = reader.list_topics(self._dlq, timeout=5).topics[self._dlq]
            if meta.error is not None:
                reader.close()
                raise RuntimeError(f"dead-letter topic: {meta.error}")
            reader.assign([TopicPartition(self._dlq, p, 0) for p in meta.partitions])
            self._dlq_reader = reader
        return self._dlq_reader

    def _read_dlq(self) -> None:
        """Read the dead-letter topic up to its current high watermark."""
        reader = self._reader()
        targets = {
            tp.partition: reader.get_watermark_offsets(tp, timeout=5)[1]
            for tp in reader.assignment()
        }
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            positions = {tp.partition: tp.offset for tp in reader.position(reader.assignment())}
            if all(positions.get(p, -1) >= end or end <= 0 for p, end in targets.items()):
                return
            for msg in reader.consume(500, 0.2):
                if msg.error() is not None:
                    continue
                self._add_dead(msg)
        raise RuntimeError("could not read the dead-letter topic to its high watermark")

    def _add_dead(self, msg: Any) -> None:
        self.dead.append(msg)
        self._dlq_generations[-1].append(msg)
        headers = dict(msg.headers() or [])
        try:
            topic = headers["__bridge.errors.topic"].decode()
            partition = int(headers["__bridge.errors.partition"])
            offset = int(headers["__bridge.errors.offset"])
        except (KeyError, ValueError):
            return
        if topic == self.topic and partition in self._finished:
            if offset in self._finished[partition]:
                # The record keeps its own timestamp; the header says when it was dead-lettered.
                made = headers.get("__bridge.errors.timestamp", b"")
                at = int(made) / 1000 if made.isdigit() else time.time()
                self._repeat(partition, offset, at)
            self._finished[partition].add(offset)

    def _repeat(self, partition: int, offset: int, at: float) -> None:
        """A finished offset received or dead-lettered again by a call (a write) made at ``at``:
        a duplicate, put down to the last fault that had ended by then."""
        self.repeats += 1
        ended = [f for f in self.faults if f.cleared is not None and f.cleared <= at]
        if ended:
            ended[-1].duplicates += 1
        else:
            self.unattributed_repeats += 1
        recorded = self._recorded[partition].get(offset)
        if recorded is not None and at > recorded:
            self.resent_recorded.append((partition, offset))
            self.notes.append(
                f"partition {partition} offset {offset}: recorded finished in a commit read at"
                f" {recorded:.3f}, sent again by a call at {at:.3f}"
            )

    def _read_received(self) -> None:
        entries = self._endpoint.received()[self._received_seen :]
        if not entries:
            return
        calls = {c.call: c.time for c in self._endpoint.calls()[-20_000:]}
        for item in entries:
            self.received.append(item.entry)
            where = coordinates(item.entry)
            if where is None or where[0] != self.topic or where[1] not in self._finished:
                continue
            seen = self._finished[where[1]]
            at = calls.get(item.call, time.time())
            if where[2] in seen:
                self._repeat(where[1], where[2], at)
                continue
            seen.add(where[2])
            self.distinct_delivered += 1
            for fault in self.faults:
                pending = fault.cleared is not None and fault.resume_s is None
                if pending and not fault.interrupted and at >= fault.cleared:
                    fault.resume_s = max(0.0, at - fault.cleared)
        self._received_seen += len(entries)

    def delivered_uncommitted(self) -> int:
        """Records finished (received or dead-lettered) at or past the committed position now
        and not recorded finished in the commit's metadata: what a bridge that lost its state
        would send again (with the metadata: what was unfinished at the last commit, in flight
        or waiting for a retry, and has finished since, plus what was delivered after it)."""
        with self._lock:
            committed = self.committed(10)
            with contextlib.suppress(Exception):
                if not self.dlq_paused:
                    self._read_dlq()
            self._read_received()
            total = 0
            for p, done in self._finished.items():
                position, recorded = committed.get(p, (0, frozenset()))
                total += sum(1 for o in done if o >= max(position, 0) and o not in recorded)
            return total

    # -- the sampling loop
    def _sample(self) -> None:
        with self._lock, self.dlq_lock:
            positions = self.positions()
            if not self.dlq_paused:
                self._read_dlq()
            self._read_received()
            now = time.time()
            for p, position in positions.items():
                if position < 0:
                    continue
                last = self._last_positions.get(p, -1)
                if position < last:
                    self.notes.append(
                        f"partition {p}: committed offset went back {last}->{position}"
                    )
                self._last_positions[p] = position
                start = self._verified.get(p, 0)
                for offset in range(start, position):
                    if offset not in self._finished[p]:
                        self.violations.append(
                            f"partition {p}: committed position {position} passes offset {offset},"
                            " which was neither received by the endpoint nor dead-lettered"
                        )
                        break
                else:
                    self._verified[p] = max(start, position)
            self.caught_up(positions, now)
            self.samples += 1

    def caught_up(self, positions: Mapping[int, int], now: float) -> None:
        """Faults whose backlog ``positions`` (committed at ``now``) cover have caught up."""
        for fault in self.faults:
            if fault.cleared is None or fault.catch_up_s is not None or fault.interrupted:
                continue
            if fault.backlog is not None and all(
                positions.get(p, -1) >= end for p, end in fault.backlog.items()
            ):
                fault.catch_up_s = now - fault.cleared

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._sample()
            except Exception as exc:  # broker down, dead-letter topic deleted: next time
                self.skipped += 1
                if self.skipped < 5:
                    self.notes.append(f"sample skipped: {exc!r:.200}")

    def start(self) -> Audit:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    # -- the dead-letter topic's lifetimes
    def dlq_gone(self) -> None:
        """The dead-letter topic is about to be deleted: read it all first, then stop reading."""
        with self.dlq_lock:
            self._read_dlq()
            self.dlq_paused = True
            if self._dlq_reader is not None:
                self._dlq_reader.close()
                self._dlq_reader = None

    def dlq_back(self) -> None:
        """The dead-letter topic exists again (empty): read it from its start."""
        self._dlq_generations.append([])
        self.dlq_paused = False

    def final(self) -> None:
        """Read everything one last time."""
        self.stop()
        with self._lock:
            self._read_dlq()
            self._read_received()

    def close(self) -> None:
        self.stop()
        for consumer in (self._offsets, self._dlq_reader):
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()

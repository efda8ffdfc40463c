"""The reliability harness: a scenario on the real broker, its faults, and its figures.

A :class:`Run` owns one scenario: a fresh source topic and dead-letter topic, the bridge
processes (``python -m bridge run``, as users run it), a producer :class:`Stream`, and an
:class:`~audit.Audit` that samples the group's committed offsets while the scenario runs and
checks each against what was finished *at that time* (received by the endpoint or in the
dead-letter topic). Faults are announced with :meth:`Run.fault`, which measures how long the
bridge takes to resume and to catch up once the fault is over, and carries the bound on what the
fault may make the bridge send twice. :meth:`Run.finish` drains, stops the bridges (exit 0),
runs the one accounting check of :mod:`accounting`, prints the scenario's figures and adds them
to the session's table (printed at the end by ``conftest.py``). While the run lasts, a thread
reads each bridge process's peak RSS (the kernel's ``VmHWM`` in ``/proc/<pid>/status``) every
half second, so a process killed mid-run still counts up to its last reading; the table shows
the largest of any one process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Producer

from testbed.endpoint import LocalEventBridge

from .accounting import BAD_PREFIX, Coord, Expect, account, coordinates, default_expect, mapping
from .audit import Audit, Fault, quiet

# The integration tier's helpers (topics, config, child-process bridge) are reused, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from kafkatest import BridgeProcess, Topics, bridge_config, read_all, wait_until


# ------------------------------------------------------------------------------- the table
@dataclass
class Row:
    """One scenario's figures."""

    scenario: str
    records: int
    faults: int
    delivered: int
    dead_lettered: int
    lost: int
    duplicated: int
    duplicate_bound: int
    resume_s: float | None
    catch_up_s: float | None
    seconds: float
    notes: str = ""
    kill_duplicates: tuple[int, ...] = ()
    """Duplicates after each SIGKILL (the audit's attribution: sent by the processes started
    after it), one per kill; empty when the scenario killed nothing."""

    def per_kill(self) -> str:
        """Mean duplicates per kill, and the most after one kill ("-" without kills)."""
        if not self.kill_duplicates:
            return "-"
        mean = sum(self.kill_duplicates) / len(self.kill_duplicates)
        return f"{mean:.1f} (max {max(self.kill_duplicates)})"

    peak_rss_mb: float | None = None
    """The largest peak RSS (VmHWM) of any one bridge process of the scenario, in MB."""


RESULTS: list[Row] = []
"""Every scenario's row of this session, in order (the conftest prints them as a table)."""

HEADER = (
    "| scenario | records | faults | delivered | dead-lettered | lost | duplicated (bound) |"
    " duplicates per kill (max) | resume s (max) | catch-up s (max) | peak RSS MB | run s |"
)


def table(rows: Iterable[Row]) -> str:
    """The rows as a Markdown table (the doc pastes it)."""

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [HEADER, "|" + "---|" * 12]
    for r in rows:
        rss = "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}"
        lines.append(
            f"| {r.scenario} | {r.records} | {r.faults} | {r.delivered} | {r.dead_lettered} |"
            f" {r.lost} | {r.duplicated} ({r.duplicate_bound}) | {r.per_kill()} |"
            f" {secs(r.resume_s)} | {secs(r.catch_up_s)} | {rss} | {r.seconds:.0f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the stream
class Stream:
    """Produces JSON records at ``rate`` per second in a thread, ``bad_every``-th not JSON.

    Record ``i`` goes to partition ``i % partitions`` with key ``k<i>`` and value
    ``{"id": i, "pad": ...}``. Sending survives a broker outage (the producer queues and
    retries), so what was produced is read back from the topic at the end, not counted here.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        rate: float,
        total: int | None = None,
        bad_every: int = 0,
        pad: int = 40,
    ) -> None:
        self.topic = topic
        self._partitions = partitions
        self._rate = rate
        self._total = total
        self._bad_every = bad_every
        self._pad = pad
        self._producer = Producer(
            quiet(
                {
                    "bootstrap.servers": bootstrap,
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "message.timeout.ms": 600_000,
                }
            )
        )
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._thread = threading.Thread(target=self._run, name=f"stream-{topic}", daemon=True)
        self._thread.start()

    def value(self, i: int) -> bytes:
        if self._bad_every and i % self._bad_every == self._bad_every - 1:
            return BAD_PREFIX + str(i).encode()
        return json.dumps({"id": i, "pad": "x" * (i % self._pad)}).encode()

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def _run(self) -> None:
        started = time.monotonic()
        i = 0
        while not self._stop.is_set() and (self._total is None or i < self._total):
            if not self._running.wait(0.1):
                started = time.monotonic() - i / self._rate  # no burst after a pause
                continue
            due = started + i / self._rate
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(min(delay, 0.05))
                self._producer.poll(0)
                continue
            try:
                self._producer.produce(
                    self.topic,
                    key=f"k{i}".encode(),
                    value=self.value(i),
                    partition=i % self._partitions,
                    on_delivery=self._on_delivery,
                )
            except BufferError:
                self._producer.poll(0.1)
                continue
            i += 1
            self.sent = i
        self._producer.flush(120)

    def pause(self) -> None:
        """Stop producing until :meth:`resume`; what was sent is flushed."""
        self._running.clear()
        self._producer.flush(60)

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        """Stop (a stream of ``total`` records first sends them all); wait for every ack."""
        if self._total is None:
            self._stop.set()
        self._running.set()
        self._thread.join(180)
        assert not self._thread.is_alive(), "the producer did not finish"
        assert not self.errors, f"producing failed: {self.errors[:3]}"


def produce_all(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]],
    **conf: Any,
) -> None:
    """Produce ``(key, value, partition, headers)`` records and wait for every ack."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, **conf})
    errors: list[Any] = []
    for key, value, partition, headers in records:
        while True:
            try:
                producer.produce(
                    topic,
                    key=key,
                    value=value,
                    partition=partition,
                    headers=headers or None,
                    on_delivery=lambda err, _m: errors.append(err) if err else None,
                )
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0
    assert not errors, errors[:3]


# ----------------------------------------------------------------------- the bridge process
class Bridge(BridgeProcess):
    """A bridge child process, with its own environment when given one."""

    def __init__(
        self, config: dict[str, Any], workdir: Path, name: str, env: Mapping[str, str] | None
    ) -> None:
        super().__init__(config, workdir, name)
        self.env = dict(env) if env is not None else None
        self.stopped_on_purpose = False
        self.run_offset = 0

    def kill(self) -> None:
        self.stopped_on_purpose = True
        super().kill()

    def terminate(self, timeout: float = 60) -> int:
        self.stopped_on_purpose = True
        return super().terminate(timeout)

    def died(self) -> bool:
        """Exited without being told to."""
        return (
            self.proc is not None and self.proc.poll() is not None and not self.stopped_on_purpose
        )

    def start(self) -> Bridge:
        self.stopped_on_purpose = False
        import subprocess

        from kafkatest import ROOT

        log = self.log_path.open("ab")
        # The file keeps the lines of earlier runs (a restart appends): this run's start here.
        self.run_offset = log.seek(0, os.SEEK_END)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=None if self.env is None else {**os.environ, **self.env},
        )
        log.close()
        self.starts += 1
        return self

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def run_events(self) -> list[dict[str, Any]]:
        """The JSON log lines of the current run only (:meth:`log_events`: every run's)."""
        with self.log_path.open("rb") as file:
            file.seek(self.run_offset)
            text = file.read().decode(errors="replace")
        events = []
        for line in text.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    events.append(json.loads(line))
        return events

    def _started_event(self) -> dict[str, Any] | None:
        return next((e for e in self.run_events() if e.get("event") == "bridge started"), None)

    def wait_started(self, timeout: float = 60) -> None:
        """Wait until the current run logged its start (its signal handlers are in place by
        then), or exited."""
        wait_until(
            lambda: self._started_event() is not None or not self.alive(),
            timeout,
            f"{self.name} to start",
            interval=0.1,
        )

    def peak_rss_mb(self) -> float | None:
        """The process's peak RSS so far (``VmHWM``), in MB; None when it is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return vm_hwm_mb(self.proc.pid)

    def port(self) -> int | None:
        """The health/metrics port the current run logged at start (None before)."""
        event = self._started_event()
        return None if event is None else event.get("observability_port")


def vm_hwm_mb(pid: int) -> float | None:
    """``VmHWM`` (the kernel's peak resident set size) of process ``pid`` in MB, None if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


# ---------------------------------------------------------------------------------- the run
class Run:
    """One scenario: topics, endpoint, bridges, faults, and the accounting at the end."""

    def __init__(
        self,
        name: str,
        *,
        bootstrap: str,
        topics: Topics,
        endpoint: LocalEventBridge,
        workdir: Path,
        session_timeout_ms: int = 6000,
        partitions: int = 3,
        max_buffered: int = 300,
        topic_config: dict[str, str] | None = None,
        dlq_config: dict[str, str] | None = None,
        mapping_overrides: dict[str, Any] | None = None,
        kafka_properties: dict[str, Any] | None = None,
        **sections: Any,
    ) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.endpoint = endpoint
        self.workdir = workdir
        self.partitions = partitions
        self.max_buffered = max_buffered
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:30]
        self.topic = topics.create(f"rel-{slug}", partitions=partitions, config=topic_config)
        self.dlq = topics.create(f"rel-{slug}-dlq", config=dlq_config)
        pipeline = {"max_buffered_records": max_buffered, "commit_interval_ms": 200}
        pipeline |= sections.pop("pipeline", {})
        self.config = bridge_config(
            bootstrap,
            endpoint.url,
            [mapping(self.topic, **(mapping_overrides or {}))],
            self.dlq,
            pipeline=pipeline,
            **sections,
        )
        # A dead member's partitions wait out its session: short here, so a scenario of 20
        # SIGKILLs measures the bridge rather than the group coordinator's patience.
        self.config["kafka"]["properties"] |= {
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(100, session_timeout_ms // 10),
        } | (kafka_properties or {})
        self.group = self.config["kafka"]["group_id"]
        self.audit = Audit(bootstrap, self.topic, partitions, self.dlq, self.group, endpoint)
        self.bridges: list[Bridge] = []
        self.streams: list[Stream] = []
        self.started = time.monotonic()
        self.audit.start()
        self.peak_rss: dict[int, float] = {}  # pid -> MB
        self._rss_stop = threading.Event()
        self._rss_thread = threading.Thread(target=self._sample_rss, daemon=True)
        self._rss_thread.start()

    def _sample_rss(self) -> None:
        while not self._rss_stop.wait(0.5):
            self.read_rss()

    def read_rss(self) -> None:
        """Read every running bridge's peak RSS now."""
        for b in list(self.bridges):
            mb = b.peak_rss_mb()
            if mb is not None and b.proc is not None:
                self.peak_rss[b.proc.pid] = max(mb, self.peak_rss.get(b.proc.pid, 0.0))

    def peak_rss_mb(self) -> float | None:
        """The largest peak RSS of any one bridge process so far, in MB."""
        self.read_rss()
        return max(self.peak_rss.values(), default=None)

    # -- parts
    def bridge(self, name: str = "bridge", env: Mapping[str, str] | None = None) -> Bridge:
        process = Bridge(self.config, self.workdir, name, env)
        self.bridges.append(process)
        return process

    def stream(self, rate: float, total: int | None = None, bad_every: int = 0) -> Stream:
        stream = Stream(self.bootstrap, self.topic, self.partitions, rate, total, bad_every)
        self.streams.append(stream)
        return stream

    @property
    def faults(self) -> list[Fault]:
        return self.audit.faults

    def fault(self, kind: str, bound: int | Callable[[], int] = 0) -> Fault:
        """A fault starts now; any earlier one not yet recovered is marked interrupted."""
        for earlier in self.faults:
            if earlier.resume_s is None or earlier.catch_up_s is None:
                earlier.interrupted = True
        fault = Fault(kind, time.time(), bound)
        self.faults.append(fault)
        return fault

    def clear(self, fault: Fault) -> None:
        """The fault is over: from now, resume and catch-up are measured."""
        fault.cleared = time.time()
        fault.seen_at_clear = self.audit.distinct_delivered
        try:
            fault.backlog = self.audit.end_offsets(10)
        except Exception:
            fault.backlog = None

    def wait_resumed(self, fault: Fault, timeout: float = 60) -> None:
        """Wait until the bridge delivers a new record after ``fault`` ended."""
        wait_until(
            lambda: fault.resume_s is not None or not any(b.alive() for b in self.bridges),
            timeout,
            f"{self.name}: deliveries to resume after {fault.kind}",
            interval=0.05,
        )
        self.assert_alive()

    def wait_recovered(self, fault: Fault, timeout: float = 90) -> None:
        """Wait until every record produced before ``fault`` ended is committed."""
        wait_until(
            lambda: fault.catch_up_s is not None or not any(b.alive() for b in self.bridges),
            timeout,
            f"{self.name}: catching up after {fault.kind}",
            interval=0.1,
        )
        self.assert_alive()

    def wait_caught_up(self, timeout: float = 90) -> None:
        """Wait until the committed offsets reach the end offsets (with the stream paused)."""

        def caught_up() -> bool:
            if not any(b.alive() for b in self.bridges):
                return True
            return self.audit.positions(10) == self.audit.end_offsets(10)

        wait_until(caught_up, timeout, f"{self.name}: committed offsets at the end", 0.25)
        self.assert_alive()

    def delivered(self) -> int:
        """Records received so far (distinct)."""
        return len({coordinates(r.entry) for r in self.endpoint.received()})

    def wait_delivering(self, at_least: int = 1, timeout: float = 60) -> None:
        wait_until(
            lambda: self.delivered() >= at_least or not any(b.alive() for b in self.bridges),
            timeout,
            f"{at_least} records delivered",
            interval=0.05,
        )
        self.assert_alive()

    def assert_alive(self) -> None:
        """Fail if a bridge exited that was not stopped on purpose."""
        for b in self.bridges:
            if b.died():
                assert b.proc is not None
                raise AssertionError(
                    f"{b.name} exited with {b.proc.returncode}; log tail:\n{b.tail()}"
                )

    # -- the end
    def finish(
        self,
        expect: Callable[[Any], Expect] = default_expect,
        send_codes: Iterable[str] = (),
        max_attempts: int | None = None,
        drain_timeout: float = 120,
        notes: str = "",
        record: bool = True,
        bound_each_fault: bool = False,
        keep_recorded_finished: bool = False,
    ) -> Row:
        """Drain, stop every bridge (exit 0), account for every record, print, record.

        Args:
            bound_each_fault: Hold each fault to its own bound (the duplicates the audit puts
                down to it), not only the run to the sum of the bounds.
            keep_recorded_finished: No offset the committed metadata recorded finished may be
                received or dead-lettered again after the audit read that commit.
        """
        for stream in self.streams:
            stream.stop()
        ends = self.audit.end_offsets(10)
        running = [b for b in self.bridges if b.alive()]
        assert running, "no bridge is running at the end of the scenario"

        def drained() -> bool:
            if not any(b.alive() for b in running):
                return True
            positions = self.audit.positions(10)
            self.audit.caught_up(positions, time.time())
            return positions == ends

        wait_until(drained, drain_timeout, f"{self.name}: committed offsets reach {ends}", 0.25)
        for b in running:
            if not b.alive():
                raise AssertionError(f"{b.name} died; log tail:\n{b.tail()}")
        peak_rss = self.peak_rss_mb()
        self._rss_stop.set()
        for b in running:
            b.wait_started()
            code = b.terminate(timeout=60)
            assert code == 0, f"{b.name} exited with {code} on SIGTERM:\n{b.tail()}"
        self.audit.final()
        final_positions = self.audit.positions(10)
        for fault in self.faults:
            if fault.resume_s is None or fault.catch_up_s is None:
                fault.interrupted = True
        seconds = time.monotonic() - self.started

        produced: dict[Coord, Any] = {
            (m.topic(), m.partition(), m.offset()): m for m in read_all(self.bootstrap, self.topic)
        }
        result = account(
            produced, self.audit.received, self.audit.dead, expect, send_codes, max_attempts
        )
        bound = sum(f.bound_value() for f in self.faults)
        resumes = [f.resume_s for f in self.faults if f.resume_s is not None]
        catch_ups = [f.catch_up_s for f in self.faults if f.catch_up_s is not None]
        row = Row(
            scenario=self.name,
            records=result.records,
            faults=len(self.faults),
            delivered=result.delivered,
            dead_lettered=result.dead_lettered,
            lost=len(result.lost),
            duplicated=result.duplicates,
            duplicate_bound=bound,
            resume_s=max(resumes) if resumes else None,
            catch_up_s=max(catch_ups) if catch_ups else None,
            seconds=seconds,
            notes=notes,
            kill_duplicates=tuple(f.duplicates for f in self.faults if "SIGKILL" in f.kind),
            peak_rss_mb=peak_rss,
        )
        print(
            f"\n[{self.name}] records={row.records} faults={row.faults}"
            f" delivered={row.delivered} dead_lettered={row.dead_lettered} lost={row.lost}"
            f" duplicated={row.duplicated} (bound {bound}; delivered+dead-lettered"
            f" {result.delivered_and_dead_lettered}) resume_max={row.resume_s}"
            f" catch_up_max={row.catch_up_s} samples={self.audit.samples}"
            f" skipped_samples={self.audit.skipped} dlq_codes={dict(result.dead_letter_codes)}"
            f" per_kill={row.per_kill()} repeats_before_any_fault={self.audit.unattributed_repeats}"
            f" resent_recorded_finished={len(self.audit.resent_recorded)}"
            f" peak_rss_mb={peak_rss} time={seconds:.1f}s"
        )
        for fault in self.faults:
            print(
                f"    fault {fault.kind}: duplicates={fault.duplicates} bound={fault.bound_value()}"
                f" resume={fault.resume_s} catch_up={fault.catch_up_s}"
                f" interrupted={fault.interrupted}"
            )
        for note in self.audit.notes[:5]:
            print(f"    note: {note}")
        if record:
            RESULTS.append(row)

        problems = list(self.audit.violations[:20]) + result.problems
        if final_positions != ends:
            problems.append(f"committed {final_positions} != end offsets {ends} at the end")
        if result.duplicates > bound:
            problems.append(
                f"{result.duplicates} duplicates, more than the {bound} records in flight at the"
                f" faults ({[(f.kind, f.bound_value()) for f in self.faults]})"
            )
        if bound_each_fault:
            if self.audit.repeats != result.duplicates:
                problems.append(
                    f"the audit saw {self.audit.repeats} repeats, the accounting"
                    f" {result.duplicates} duplicates: the attribution to faults is incomplete"
                )
            if self.audit.unattributed_repeats:
                problems.append(f"{self.audit.unattributed_repeats} duplicates before any fault")
            for fault in self.faults:
                if fault.duplicates > fault.bound_value():
                    problems.append(
                        f"{fault.kind} at {fault.started:.1f}: {fault.duplicates} duplicates after"
                        f" it, more than its bound {fault.bound_value()}"
                    )
        if keep_recorded_finished and self.audit.resent_recorded:
            problems.append(
                f"{len(self.audit.resent_recorded)} offsets sent again after a commit recorded"
                f" them finished, e.g. (partition, offset) {self.audit.resent_recorded[:10]}"
            )
        if self.endpoint.violations:
            problems.append(f"calls over the limits: {self.endpoint.violations[:3]}")
        for b in self.bridges:
            text = b.log_path.read_text(errors="replace") if b.log_path.exists() else ""
            if "Traceback" in text:
                problems.append(
                    f"{b.name} logged a traceback:\n{text[text.index('Traceback') :][:2000]}"
                )
        assert not problems, f"{self.name}: " + "\n".join(problems)
        return row

    def close(self) -> None:
        """Kill whatever still runs (after a failure)."""
        for stream in self.streams:
            with contextlib.suppress(Exception):
                stream._stop.set()
                stream._running.set()
        self._rss_stop.set()
        for b in self.bridges:
            if b.alive():
                b.kill()
        self.audit.close()


ROOT = Path(__file__).resolve().parents[2]


def run_refused(config_path: Path) -> str:
    """``bridge run --config config_path`` as a child process with the current environment: it
    must refuse at once (exit 2, one ``error: ...``, no traceback); returns its output."""
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(config_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, f"exit {result.returncode}:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert output.startswith("error: "), output[-3000:]
    return output

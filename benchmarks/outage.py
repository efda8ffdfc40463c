"""Outage benchmark: the bridge's memory and calls while EventBridge is down, then its catch-up.

    .venv/bin/python benchmarks/outage.py                         # 1 KB, 100 KB, 900 KB; 120 s
    .venv/bin/python benchmarks/outage.py --sizes 100 --records 2000 --outage-s 20   # a smoke run
    .venv/bin/python benchmarks/outage.py --container 512Mi       # as in a 512Mi container

For each record size: produces the records to a fresh topic of a real broker, puts the local
EventBridge endpoint into an outage (every call answered ``503 ServiceUnavailable``, or with
``--outage-mode close`` every connection dropped), starts ``bridge run`` with default settings
(only the endpoint, the group, the topics and a free metrics port are set; for records over
256 KB ``batch.max_bytes`` is 1 MiB, else they are dead-lettered as too large), keeps the
outage for ``--outage-s`` seconds after the first call reaches the endpoint, then ends it and
waits until every record has arrived. It prints, per size:

- peak RSS of the bridge (sampled every 0.2 s, and the kernel's high-water mark) against the
  container's limit;
- calls the endpoint saw during the outage, and per second;
- seconds from the end of the outage to the first delivery, and to the last (catch-up);
- lost (produced, never received), duplicates, dead-lettered (records in the dead-letter
  topic), and the bridge's warning/error log lines during the outage.

``--container 512Mi`` runs the bridge as a container with that memory limit would: a fake
cgroup tree holding ``memory.max`` = 512Mi is written and the bridge is pointed at it with
``BRIDGE_CGROUP_ROOT`` (:data:`bridge.source.budget.CGROUP_ROOT_ENV`), so it derives its whole
budget (records, librdkafka prefetch, in-flight reservation) from that limit exactly as in a
container; this machine's own cgroup is not touched. Without it the bridge derives its budget
from this machine's cgroup, as it does anywhere. The bridge's "memory budget" start-up line
and its outage start/end lines are printed. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.source.budget import CGROUP_ROOT_ENV, MiB  # noqa: E402
from testbed.endpoint import Faults, LocalEventBridge  # noqa: E402

DEFAULT_RECORDS = {1: 100_000, 100: 12_000, 900: 1_400}
ID = re.compile(rb'"id":(\d+)')


@dataclass
class Run:
    """What one size measured."""

    size_kb: int
    records: int
    limit: int | None = None
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (s, MB)
    peak_rss_mb: float = 0.0
    outage_peak_rss_mb: float = 0.0
    outage_calls: int = 0
    outage_s: float = 0.0
    first_delivery_s: float | None = None
    catch_up_s: float | None = None
    received: int = 0
    duplicates: int = 0
    lost: int = 0
    dead_lettered: int = 0
    outage_log_lines: int = 0
    outage_starts: int = 0
    outage_ends: int = 0
    budget_line: dict[str, Any] = field(default_factory=dict)
    over_line: dict[str, Any] = field(default_factory=dict)
    log: str = ""


def proc_rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def value_of(i: int, size: int) -> bytes:
    head = json.dumps({"id": i, "type": "order.created", "pad": ""}).encode()
    return head[:-2] + b"x" * max(0, size - len(head)) + b'"}'


def produce(bootstrap: str, topic: str, count: int, size: int) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "acks": 1,
            "message.max.bytes": 2_000_000,
            "queue.buffering.max.kbytes": 262_144,
        }
    )
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=value_of(i, size))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(300)


def count_topic(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` (sum of its partitions' high watermarks; nothing is deleted)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4()}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


class Drain:
    """Takes the endpoint's recordings as they come (it would otherwise keep every 900 KB
    entry in memory): record ids received, and the calls with their times."""

    def __init__(self, endpoint: LocalEventBridge) -> None:
        self.endpoint = endpoint
        self.ids: dict[int, int] = {}
        self.first_received_at: float | None = None
        self.last_received_at: float | None = None
        self.calls: list[tuple[float, int, str | None]] = []  # (time, status, fault)

    def take(self) -> None:
        ep = self.endpoint
        with ep._lock:
            received = list(ep._received)
            ep._received.clear()
            calls = list(ep._calls)
            ep._calls.clear()
        times = {c.call: c.time for c in calls}
        self.calls += [(c.time, c.status, c.fault) for c in calls if c.operation == "PutEvents"]
        for r in received:
            match = ID.search(r.entry["Detail"][:64].encode())
            if match is None:
                continue
            i = int(match.group(1))
            self.ids[i] = self.ids.get(i, 0) + 1
            at = times.get(r.call, time.time())
            if self.first_received_at is None or at < self.first_received_at:
                self.first_received_at = at
            if self.last_received_at is None or at > self.last_received_at:
                self.last_received_at = at


def bridge_config(bootstrap: str, endpoint: str, topic: str, size: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"outage-{uuid.uuid4().hex[:8]}"},
        "aws": {"endpoint_url": endpoint},
        "dlq": {"topic": f"{topic}-dlq"},
        "observability": {"port": 0},
        "logging": {"format": "json", "level": "info"},
        "mappings": [{"topic": topic, "source": "com.example.outage", "detail_type": "Order"}],
    }
    request_bytes = 262_144
    if size > 200 * 1024:
        request_bytes = 1_048_576
        config["batch"] = {"max_bytes": request_bytes}
    return config


def fake_cgroup(workdir: Path, limit: int) -> Path:
    """A cgroup tree whose ``memory.max`` (v2, read for any cgroup path: the walk up ends at
    the root) and ``memory/memory.limit_in_bytes`` (v1) say ``limit``."""
    root = workdir / "cgroup"
    (root / "memory").mkdir(parents=True, exist_ok=True)
    (root / "memory.max").write_text(f"{limit}\n")
    (root / "memory" / "memory.limit_in_bytes").write_text(f"{limit}\n")
    return root


def run_size(
    bootstrap: str, size_kb: int, records: int, args: argparse.Namespace, workdir: Path
) -> Run:
    run = Run(size_kb, records, quantity_bytes(args.container) if args.container else None)
    size = size_kb * 1024
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"outage-{size_kb}k-{uuid.uuid4().hex[:6]}"
    topics = [
        NewTopic(topic, args.partitions, 1, config={"max.message.bytes": "2000000"}),
        NewTopic(f"{topic}-dlq", 1, 1, config={"max.message.bytes": "3000000"}),
    ]
    for future in admin.create_topics(topics).values():
        future.result(30)
    print(f"\n== {size_kb} KB x {records} records -> {topic}", flush=True)
    began = time.monotonic()
    produce(bootstrap, topic, records, size)
    print(f"   produced in {time.monotonic() - began:.0f}s", flush=True)
    mode = args.outage_mode
    with LocalEventBridge(
        max_request_bytes=1_048_576, faults=Faults(outage=True, outage_mode=mode)
    ) as endpoint:
        drain = Drain(endpoint)
        config = bridge_config(bootstrap, endpoint.url, topic, size)
        for item in args.set:
            key, _, text = item.partition("=")
            section, _, name = key.partition(".")
            config.setdefault(section, {})[name] = yaml.safe_load(text)
        path = workdir / f"{topic}.yaml"
        path.write_text(yaml.safe_dump(config))
        log_path = workdir / f"{topic}.log"
        run.log = str(log_path)
        env = dict(os.environ)
        env.setdefault("AWS_ACCESS_KEY_ID", "bench")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        if run.limit is not None:
            env[CGROUP_ROOT_ENV] = str(fake_cgroup(workdir, run.limit))
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run", "--config", str(path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )
        started = time.monotonic()
        outage_began: float | None = None  # wall clock (the endpoint's call times)
        outage_ended: float | None = None
        log_mark = 0
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set() and proc.poll() is None:
                try:
                    rss = proc_rss_mb(proc.pid)
                except (FileNotFoundError, ProcessLookupError):
                    return
                run.rss_samples.append((time.monotonic() - started, rss))
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            deadline = started + args.outage_s + args.timeout_s + 60
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"bridge exited {proc.returncode}; see {log_path}")
                drain.take()
                now = time.time()
                if outage_began is None and drain.calls:
                    outage_began = drain.calls[0][0]
                    print("   first call reached the endpoint: the outage starts", flush=True)
                if (
                    outage_began is not None
                    and outage_ended is None
                    and now - outage_began >= args.outage_s
                ):
                    run.outage_peak_rss_mb = max((r for _, r in run.rss_samples), default=0.0)
                    print(
                        f"   outage over after {now - outage_began:.0f}s; peak RSS so far"
                        f" {run.outage_peak_rss_mb:.0f} MB",
                        flush=True,
                    )
                    log_mark = log_path.stat().st_size
                    endpoint.set_faults(Faults())
                    outage_ended = time.time()
                if len(drain.ids) >= records:
                    break
                time.sleep(0.5)
            time.sleep(2)  # late duplicates
            drain.take()
        finally:
            stop.set()
            hwm = proc_rss_mb(proc.pid, "VmHWM") if proc.poll() is None else 0.0
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        run.peak_rss_mb = max([hwm] + [r for _, r in run.rss_samples])
        samples = workdir / f"{topic}-rss.csv"
        samples.write_text("".join(f"{t:.1f},{r:.1f}\n" for t, r in run.rss_samples))
        if outage_began is not None:
            end = outage_ended or time.time()
            run.outage_s = end - outage_began
            run.outage_calls = sum(1 for t, _, _ in drain.calls if outage_began <= t < end)
        if outage_ended is not None and drain.first_received_at is not None:
            run.first_delivery_s = drain.first_received_at - outage_ended
            if len(drain.ids) >= records and drain.last_received_at is not None:
                run.catch_up_s = drain.last_received_at - outage_ended
        run.received = len(drain.ids)
        run.duplicates = sum(n - 1 for n in drain.ids.values())
        run.lost = records - len(drain.ids)
        run.dead_lettered = count_topic(bootstrap, f"{topic}-dlq")
        lines = log_path.read_bytes()[: log_mark or None].splitlines()
        run.outage_log_lines = sum(
            1 for line in lines if b'"level": "warning"' in line or b'"level": "error"' in line
        )
        for line in log_path.read_bytes().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            text = str(event.get("event", ""))
            if text == "memory budget":
                run.budget_line = event
            elif text.startswith("EVENTBRIDGE OUTAGE"):
                run.outage_starts += 1
            elif text.startswith("EventBridge outage over"):
                run.outage_ends += 1
                run.over_line = event
    for future in admin.delete_topics([topic, f"{topic}-dlq"]).values():
        try:
            future.result(30)
        except Exception as exc:  # the figures matter more than the clean-up
            print(f"   (could not delete {topic}: {exc})")
    return run


def report(runs: list[Run], args: argparse.Namespace) -> None:
    limit = f"{args.container} container" if args.container else "this machine's cgroup"
    print(f"\nOutage of {args.outage_s:.0f}s ({args.outage_mode}), budget from {limit}:")
    print(
        f"{'size':>6} {'records':>8} {'peak RSS':>9} {'in outage':>9} {'calls':>6} {'calls/s':>8}"
        f" {'1st s':>6} {'catch-up s':>10} {'lost':>5} {'dup':>5} {'DLQ':>5} {'log lines':>9}"
    )
    for r in runs:
        first = f"{r.first_delivery_s:.1f}" if r.first_delivery_s is not None else "-"
        catch = f"{r.catch_up_s:.1f}" if r.catch_up_s is not None else "-"
        rate = r.outage_calls / r.outage_s if r.outage_s else 0.0
        print(
            f"{r.size_kb:>4}KB {r.records:>8} {r.peak_rss_mb:>7.0f}MB"
            f" {r.outage_peak_rss_mb:>7.0f}MB {r.outage_calls:>6}"
            f" {rate:>8.2f} {first:>6} {catch:>10} {r.lost:>5} {r.duplicates:>5}"
            f" {r.dead_lettered:>5} {r.outage_log_lines:>9}"
        )
        b = r.budget_line
        over = {k: r.over_line.get(k) for k in ("outage_s", "probes", "held_records", "held_bytes")}
        print(
            f"       budget: records {b.get('records_bytes', 0) / MiB:.1f} MiB, prefetch"
            f" {b.get('prefetch_bytes', 0) / MiB:.1f} MiB, calls"
            f" {b.get('in_flight_bytes', 0) / MiB:.1f} MiB,"
            f" limit {b.get('container_limit_bytes')}"
            f" ({b.get('source')}); outage lines: {r.outage_starts} start, {r.outage_ends} end"
            f" {over}"
        )
        if r.limit is not None and r.peak_rss_mb * MiB > r.limit:
            print(f"       ^ over the {r.limit / MiB:.0f} MiB limit: a container would be killed")
    print("logs: " + ", ".join(r.log for r in runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100,900", help="record sizes in KB")
    parser.add_argument("--records", type=int, default=0, help="per size (default: by size)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--outage-s", type=float, default=120)
    parser.add_argument("--outage-mode", choices=["503", "close"], default="503")
    parser.add_argument("--timeout-s", type=float, default=600, help="catch-up time allowed")
    parser.add_argument("--container", default="", help="e.g. 512Mi: budget as in that limit")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a bridge setting (YAML value), e.g. pipeline.max_buffered_records=1000",
    )
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("set KAFKA_BOOTSTRAP_SERVERS to a broker (e.g. 127.0.0.1:19092)")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="outage-"))
    runs = []
    for size_kb in (int(s) for s in args.sizes.split(",")):
        records = args.records or DEFAULT_RECORDS.get(size_kb, 12_000)
        runs.append(run_size(bootstrap, size_kb, records, args, workdir))
    report(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

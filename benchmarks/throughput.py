"""Throughput benchmark: the bridge against a naive loop, on a real broker and a real endpoint.

    .venv/bin/python benchmarks/throughput.py            # the default run (a few minutes)
    .venv/bin/python benchmarks/throughput.py --quick    # smaller, for a smoke check

Produces 1 KB JSON records to a real Kafka broker (LogAppendTime, so record timestamps are the
append times), runs ``bridge run`` in a child process against the project's EventBridge-compatible
endpoint answering after a set latency (25 ms by default), and prints for the bridge and for a
naive baseline (one ``put_events`` call at a time with the retry loop of AWS's guide, seed 004):
events/s, bridge CPU microseconds per event, peak RSS, and p50/p99 latency from Kafka append to
the PutEvents answer at a fixed produce rate (started once the bridge delivered a warm-up, so
that its start-up is not counted as latency). It also writes a PNG of throughput against the
number of calls in flight. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
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

from testbed.endpoint import Faults, LocalEventBridge  # noqa: E402
from testbed.kafka import LocalKafka  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
DETAIL = "${ {v: value, p: partition, o: offset, ts: timestamp} }"
WARMUP = 200  # records the bridge delivers before the latency run's timed produce starts


@dataclass
class Result:
    """What one run measured."""

    name: str
    events: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    rss_samples_mb: list[float] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_topic(bootstrap: str, partitions: int) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"message.timestamp.type": "LogAppendTime"}
    admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(30)
    return name


def record_value(i: int) -> bytes:
    pad = "x" * (1024 - 120)
    return json.dumps({"id": i, "type": "order.created", "amount": i * 1.25, "pad": pad}).encode()


def produce(bootstrap: str, topic: str, count: int, start: int = 0, rate: float = 0.0) -> None:
    """Produce ``count`` ~1 KB JSON records; at ``rate`` records/s when set, else flat out."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000, "acks": 1}
    )
    began = time.monotonic()
    for n in range(count):
        i = start + n
        if rate:
            due = began + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=record_value(i))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)


def bridge_config(
    bootstrap: str, endpoint: str, topic: str, in_flight: int, fixed: bool = False
) -> dict[str, Any]:
    """``in_flight`` is the ceiling of the adaptive concurrency, or with ``fixed`` the number of
    calls in flight (adaptive concurrency off, as before it existed)."""
    pipeline: dict[str, Any] = {"max_in_flight_calls": in_flight, "max_buffered_records": 20_000}
    if fixed:
        pipeline["adaptive_concurrency"] = False
    return {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{uuid.uuid4().hex[:8]}"},
        "aws": {"endpoint_url": endpoint, "check_event_bus": False},
        "batch": {"linger_ms": 5},
        "retry": {"max_attempts": 50, "initial_backoff_ms": 20, "max_backoff_ms": 1000},
        "dlq": {"topic": f"{topic}-dlq"},
        "pipeline": pipeline,
        "observability": {"enabled": False},
        "logging": {"format": "json", "level": "warning"},
        "mappings": [{"topic": topic, "source": "com.example.bench", "detail_type": "Order",
                      "detail": DETAIL}],
    }


def run_child(
    argv: list[str], endpoint: LocalEventBridge, target: int, name: str, timeout: float,
    rate_producer: threading.Thread | None = None, warmup: int = 0,
) -> Result:
    """Run a sender process until the endpoint holds ``target`` entries; measure it.

    With ``rate_producer``, the ``warmup`` records produced beforehand (ids below ``warmup``)
    must arrive first: the producer starts then, so the sender's start-up (imports, joining the
    group) is not counted as latency of records produced meanwhile. Figures count from then.
    """
    endpoint.reset()
    safe = "".join(c if c.isalnum() else "-" for c in name)
    log = tempfile.NamedTemporaryFile(prefix=f"{safe}-", suffix=".log", delete=False)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    result = Result(name)
    first_at = cpu_at_first = None
    first_count = 0
    deadline = time.monotonic() + timeout
    waiting_for_warmup = rate_producer is not None
    last_rss = 0.0
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}; see {log.name}")
            count = len(endpoint._received)  # no copy: this loop runs every 20 ms
            now = time.monotonic()
            if waiting_for_warmup and count >= warmup:
                assert rate_producer is not None
                rate_producer.start()
                waiting_for_warmup = False
                first_at, cpu_at_first, first_count = now, proc_cpu(proc.pid), count
            if first_at is None and count > 0 and not waiting_for_warmup:
                first_at, cpu_at_first, first_count = now, proc_cpu(proc.pid), count
            if now - last_rss >= 1:
                result.rss_samples_mb.append(proc_rss_mb(proc.pid))
                last_rss = now
            if count >= target:
                result.seconds = now - (first_at or now)
                result.cpu_seconds = proc_cpu(proc.pid) - (cpu_at_first or 0.0)
                result.events = count - first_count
                result.peak_rss_mb = proc_rss_mb(proc.pid, "VmHWM")
                break
            time.sleep(0.02)
        else:
            raise RuntimeError(f"{name}: {len(endpoint.received())}/{target} after {timeout}s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    answered = {c.call: c.time for c in endpoint.calls()}
    for r in endpoint.received():
        detail = json.loads(r.entry["Detail"])
        if detail["v"]["id"] < warmup:
            continue
        result.latencies_ms.append((answered[r.call] - detail["ts"] / 1000) * 1000)
    return result


def soak(bootstrap: str, endpoint: LocalEventBridge, args: argparse.Namespace, workdir: Path) -> int:
    """Run the bridge at a steady rate for ``args.soak`` seconds; print its RSS over time."""
    topic = make_topic(bootstrap, args.partitions)
    count = int(args.rate * args.soak)
    producer = threading.Thread(
        target=produce, args=(bootstrap, topic, count, 0, args.rate), daemon=True
    )
    config = bridge_config(bootstrap, endpoint.url, topic, args.in_flight)
    log = workdir / "soak.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(bridge_argv(config, workdir), stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT)
    producer.start()
    samples: list[tuple[float, float]] = []
    delivered = 0
    began = time.monotonic()
    try:
        while time.monotonic() - began < args.soak:
            time.sleep(5)
            delivered += len(endpoint._received)
            endpoint.reset()  # the endpoint keeps counts only: its memory must not grow either
            samples.append((time.monotonic() - began, proc_rss_mb(proc.pid)))
            print(f"  {samples[-1][0]:6.0f}s RSS {samples[-1][1]:6.1f} MB, {delivered} delivered",
                  flush=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    half = [rss for t, rss in samples if t >= args.soak / 2]
    slope = (half[-1] - half[0]) / (args.soak / 2 / 60) if len(half) > 1 else 0.0
    print(f"\nsoak {args.soak:.0f}s at {args.rate:.0f}/s: {delivered} delivered; RSS first"
          f" {samples[0][1]:.0f} MB, max {max(r for _, r in samples):.0f} MB, last"
          f" {samples[-1][1]:.0f} MB; second half {slope:+.2f} MB/min")
    return 0


def bridge_argv(config: dict[str, Any], workdir: Path) -> list[str]:
    path = workdir / f"bridge-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "bridge", "run", "--config", str(path)]


def naive_argv(bootstrap: str, endpoint: str, topic: str) -> list[str]:
    return [sys.executable, str(Path(__file__).with_name("naive.py")), bootstrap, endpoint, topic]


def report(results: list[Result], baseline: Result) -> None:
    print(f"\n{'run':34} {'events/s':>10} {'CPU µs/ev':>10} {'peak RSS':>9}"
          f" {'p50 ms':>8} {'p99 ms':>8}")
    for r in results + [baseline]:
        print(f"{r.name:34} {r.events_per_s:10.0f} {r.cpu_us_per_event:10.1f}"
              f" {r.peak_rss_mb:7.0f}MB {r.pct(0.5):8.0f} {r.pct(0.99):8.0f}")


def plot(points: list[tuple[int, float]], naive: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, marker="o", label="bridge")
    ax.axhline(naive, color="grey", linestyle="--", label=f"naive baseline ({naive:.0f}/s)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("PutEvents calls in flight (pipeline.max_in_flight_calls)")
    ax.set_ylabel("events/s end to end")
    ax.set_title("Throughput vs calls in flight (endpoint latency 25 ms, 1 KB records)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--latency-ms", type=float, default=25)
    parser.add_argument("--in-flight", type=int, default=48)
    parser.add_argument(
        "--fixed", action="store_true", help="fixed concurrency --in-flight (adaptive off)"
    )
    parser.add_argument("--sweep", default="1,4,16,32,64")
    parser.add_argument("--sweep-records", type=int, default=30_000)
    parser.add_argument("--rate", type=float, default=5000, help="produce rate of the latency run")
    parser.add_argument("--rate-seconds", type=float, default=20)
    parser.add_argument("--naive-records", type=int, default=3000)
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "throughput.png")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument(
        "--soak", type=float, default=0, help="instead: run at --rate for this many seconds"
        " and print the bridge's RSS over time (e.g. --soak 600 --rate 3000)"
    )
    args = parser.parse_args()
    if args.quick:
        args.records, args.sweep_records, args.naive_records = 20_000, 5_000, 500
        args.sweep, args.rate_seconds = "1,16", 5

    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if given else LocalKafka(auto_create_topics=True).start()
    bootstrap = given or broker.bootstrap_servers  # type: ignore[union-attr]
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    print(f"broker {bootstrap}; endpoint latency {args.latency_ms} ms; {os.cpu_count()} cores")
    try:
        with LocalEventBridge(faults=Faults(latency_ms=args.latency_ms)) as endpoint:
            if args.soak:
                return soak(bootstrap, endpoint, args, workdir)
            results = []
            # 1. throughput from a backlog
            topic = make_topic(bootstrap, args.partitions)
            produce(bootstrap, topic, args.records)
            config = bridge_config(bootstrap, endpoint.url, topic, args.in_flight, args.fixed)
            mode = "fixed" if args.fixed else "adaptive, ceiling"
            results.append(run_child(bridge_argv(config, workdir), endpoint, args.records,
                                     f"bridge, backlog, {mode} {args.in_flight}", 600))
            # 2. latency at a fixed rate, once the bridge is up (a warm-up got through)
            topic = make_topic(bootstrap, args.partitions)
            count = int(args.rate * args.rate_seconds)
            produce(bootstrap, topic, WARMUP)
            producer = threading.Thread(
                target=produce, args=(bootstrap, topic, count, WARMUP, args.rate), daemon=True
            )
            config = bridge_config(bootstrap, endpoint.url, topic, args.in_flight, args.fixed)
            results.append(run_child(bridge_argv(config, workdir), endpoint, WARMUP + count,
                                     f"bridge, {args.rate:.0f}/s produced", 600, producer,
                                     warmup=WARMUP))
            # 3. the naive baseline
            topic = make_topic(bootstrap, args.partitions)
            produce(bootstrap, topic, args.naive_records)
            baseline = run_child(naive_argv(bootstrap, endpoint.url, topic), endpoint,
                                 args.naive_records, "naive (1 call at a time)", 900)
            report(results, baseline)
            ratio = results[0].events_per_s / baseline.events_per_s
            print(f"\nbridge / naive events/s: {ratio:.1f}x")
            rss = results[0].rss_samples_mb
            if rss:
                print(f"bridge RSS over the backlog run: first {rss[0]:.0f} MB, max {max(rss):.0f}"
                      f" MB, last {rss[-1]:.0f} MB ({len(rss)} samples, 1/s)")
            # 4. the sweep, for the plot
            points = []
            for in_flight in [int(x) for x in args.sweep.split(",")]:
                topic = make_topic(bootstrap, args.partitions)
                produce(bootstrap, topic, args.sweep_records)
                config = bridge_config(bootstrap, endpoint.url, topic, in_flight, args.fixed)
                r = run_child(bridge_argv(config, workdir), endpoint, args.sweep_records,
                              f"sweep {in_flight}", 600)
                points.append((in_flight, r.events_per_s))
                print(f"  in flight {in_flight:3}: {r.events_per_s:8.0f} events/s,"
                      f" {r.cpu_us_per_event:6.1f} CPU µs/event")
            plot(points, baseline.events_per_s, args.plot)
            print(f"plot written to {args.plot}")
            print(f"median latency of the rate run: {statistics.median(results[1].latencies_ms):.0f} ms")
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

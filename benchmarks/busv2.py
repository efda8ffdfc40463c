"""New-bus benchmark: ``sink: event_bus_v2`` with its DEFAULT settings, lean client and boto3.

    .venv/bin/python benchmarks/busv2.py            # the default run (a few minutes, 2 cores)
    .venv/bin/python benchmarks/busv2.py --quick    # smaller, for a smoke check

Produces ~1 KB JSON records to a real Kafka broker, runs ``bridge run`` in a child process
against the project's local Custom Event Bus endpoint (smithy-rpc-v2-cbor, in this process)
answering after 25 ms, and prints events/s and the bridge's CPU µs per event (from /proc) for:

- (a) unordered: no ``event_group_id``;
- (b) ordered over 10,000 keys: ``event_group_id: ${key}``;
- (c) ordered over 10 keys: the same with 10 keys. :mod:`bridge.pipeline.ordering` sends only
  the first unfinished entry of each (partition, group) line: one entry per group per round
  trip, so the ceiling is ``keys x 1 entry / round trip``; the table prints it beside the
  measured rate, with the mean round trip the endpoint saw.

each with ``aws.client: lean`` (the default) and ``aws.client: boto3``. The bridge's settings are
its defaults (adaptive concurrency, ``max_in_flight_calls`` 128 as its ceiling, ``linger_ms``
20, 100 entries / 1 MiB per request); only the endpoint, the bus ARN, the dead-letter topic and
the mapping are set, and the metrics port is off. The endpoint counts the calls it is serving at
once (mean over time, and maximum): the concurrency the bridge reached. Figures only: nothing
here asserts a rate.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from throughput import DETAIL, make_topic, proc_cpu, record_value  # noqa: E402

from testbed.base import Faults  # noqa: E402
from testbed.eventbus_v2 import BUS_ARN, LocalEventBusV2  # noqa: E402
from testbed.kafka import LocalKafka  # noqa: E402


class CountingBus(LocalEventBusV2):
    """The local bus, counting the calls it serves at once (time-weighted mean and maximum)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gauge = threading.Lock()
        self.clear_gauge()

    def clear_gauge(self) -> None:
        """Start measuring afresh (the calls being served now still count)."""
        with self._gauge:
            self._now = getattr(self, "_now", 0)
            self.peak = self._now
            self._area = 0.0
            self._since = self._last = time.monotonic()

    def _move(self, step: int) -> None:
        with self._gauge:
            now = time.monotonic()
            self._area += self._now * (now - self._last)
            self._last = now
            self._now += step
            self.peak = max(self.peak, self._now)

    def mean_in_flight(self) -> float:
        with self._gauge:
            span = self._last - self._since
            return self._area / span if span > 0 else 0.0

    def serve(self, operation: str, body: bytes, headers: Mapping[str, str]) -> Any:
        self._move(+1)
        try:
            return super().serve(operation, body, headers)
        finally:
            self._move(-1)


@dataclass
class Scenario:
    name: str
    keys: int | None  # None: unordered
    records: int
    target: str


@dataclass
class Result:
    scenario: Scenario
    client: str
    events: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    calls: int = 0
    entries_per_call: float = 0.0
    mean_in_flight: float = 0.0
    peak_in_flight: int = 0
    round_trip_ms: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else 0.0


def produce_keyed(bootstrap: str, topic: str, count: int, keys: int | None) -> None:
    """``count`` ~1 KB JSON records; record ``i`` has key ``i % keys`` (or ``i``)."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000, "acks": 1}
    )
    for i in range(count):
        key = str(i % keys if keys else i).encode()
        while True:
            try:
                producer.produce(topic, key=key, value=record_value(i))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)


def bridge_config(
    bootstrap: str,
    endpoint: str,
    topic: str,
    client: str,
    ordered: bool,
    fixed: int | None = None,
    linger_ms: int | None = None,
) -> dict[str, Any]:
    """What the run needs; everything else (pipeline, batch, retry) is the bridge's default.
    ``fixed`` (a fixed number of calls in flight, adaptive concurrency off) and ``linger_ms``
    are for a diagnosis only, never in the default table."""
    mapping: dict[str, Any] = {
        "topic": topic,
        "source": "com.example.bench",
        "detail_type": "Order",
        "detail": DETAIL,
    }
    if ordered:
        mapping["event_group_id"] = "${key}"
    config: dict[str, Any] = {
        "sink": "event_bus_v2",
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"bench-{uuid.uuid4().hex[:8]}"},
        "aws": {"endpoint_url": endpoint, "event_bus_arn": BUS_ARN, "client": client},
        "dlq": {"topic": f"{topic}-dlq"},
        "observability": {"enabled": False},  # its port may be taken on a shared machine
        # info: the progress line (concurrency_limit, rate_limit) every 10 s
        "logging": {"format": "json", "level": "info"},
        "mappings": [mapping],
    }
    if fixed is not None:
        config["pipeline"] = {"adaptive_concurrency": False, "max_in_flight_calls": fixed}
    if linger_ms is not None:
        config["batch"] = {"linger_ms": linger_ms}
    return config


def run(
    bus: CountingBus,
    bootstrap: str,
    scenario: Scenario,
    client: str,
    workdir: Path,
    topic: str,
    profile: bool = False,
    fixed: int | None = None,
    linger_ms: int | None = None,
) -> Result:
    """One ``bridge run`` child until the bus has published every record; measured from the
    first entry published (start-up and joining the group not counted). With ``profile``,
    py-spy samples the child meanwhile (collapsed stacks written beside its log)."""
    bus.reset()
    config = bridge_config(
        bootstrap, bus.url, topic, client, scenario.keys is not None, fixed, linger_ms
    )
    path = workdir / f"{scenario.name.split()[0]}-{client}-{uuid.uuid4().hex[:4]}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = path.with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    label = (
        client
        + (f", fixed {fixed}" if fixed else "")
        + (f", linger {linger_ms}" if linger_ms is not None else "")
    )
    result = Result(scenario, label)
    spy: subprocess.Popen[bytes] | None = None
    first_at = None
    cpu_first = 0.0
    count_first = 0
    deadline = time.monotonic() + 900
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bridge exited {proc.returncode}; see {log}")
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"{len(bus._received)}/{scenario.records}; see {log}")
            count = len(bus._received)  # no copy: this loop runs every 20 ms
            if first_at is None and count > 0:
                first_at, cpu_first, count_first = now, proc_cpu(proc.pid), count
                bus.clear_gauge()
                if profile:
                    spy = subprocess.Popen(
                        [
                            str(Path(sys.executable).with_name("py-spy")),
                            "record",
                            "--pid",
                            str(proc.pid),
                            "--rate",
                            "200",
                            "--format",
                            "raw",
                            "--nonblocking",
                            "-o",
                            str(log.with_suffix(".spy")),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
            if count >= scenario.records:
                result.seconds = now - (first_at or now)
                result.cpu_seconds = proc_cpu(proc.pid) - cpu_first
                result.events = count - count_first
                break
            time.sleep(0.02)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(60)
            print_profile(log.with_suffix(".spy"))
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    calls = [c for c in bus.calls() if c.operation == "PutEvents"]
    result.calls = len(calls)
    result.entries_per_call = sum(c.entries for c in calls) / len(calls) if calls else 0.0
    result.mean_in_flight = bus.mean_in_flight()
    result.peak_in_flight = bus.peak
    # Little's law: calls in flight = call rate x time in flight.
    call_rate = result.calls / result.seconds if result.seconds else 0.0
    result.round_trip_ms = result.mean_in_flight / call_rate * 1000 if call_rate else 0.0
    published = len({r.deduplication_id for r in bus.received()})
    if published != scenario.records:
        raise RuntimeError(f"{published} records published of {scenario.records}; see {log}")
    return result


def print_profile(path: Path, top: int = 25) -> None:
    """The functions the samples were in (own time, and with what they called)."""
    if not path.exists():
        print(f"  no profile at {path} (is py-spy installed?)")
        return
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    print(f"  profile {path} ({samples} samples): own time")
    for frame, n in own.most_common(top):
        print(f"    {n / samples:6.1%} {frame}")
    print("  including what they called")
    for frame, n in total.most_common(top):
        print(f"    {n / samples:6.1%} {frame}")


def report(results: list[Result], latency_ms: float) -> None:
    print(
        f"\n{'scenario':26} {'client':15} {'records':>8} {'events/s':>9} {'CPU µs/ev':>10}"
        f" {'calls':>6} {'ent/call':>8} {'in flight':>10} {'target':>9}"
    )
    for r in results:
        flight = f"{r.mean_in_flight:.1f}/{r.peak_in_flight}"
        print(
            f"{r.scenario.name:26} {r.client:15} {r.scenario.records:8} {r.events_per_s:9.0f}"
            f" {r.cpu_us_per_event:10.1f} {r.calls:6} {r.entries_per_call:8.1f} {flight:>10}"
            f" {r.scenario.target:>9}"
        )
    print("in flight: calls the endpoint served at once, time-weighted mean / maximum")
    for r in results:
        if r.scenario.keys is not None and r.scenario.keys <= 100:
            # One entry per (partition, group) line per round trip (bridge/pipeline/ordering.py).
            ceiling = r.scenario.keys / (latency_ms / 1000)
            print(
                f"{r.scenario.name} ({r.client}): ceiling {r.scenario.keys} keys x 1 entry /"
                f" {latency_ms:.0f} ms = {ceiling:.0f} events/s at the endpoint's latency;"
                f" measured {r.events_per_s:.0f}/s in {r.entries_per_call:.1f} entries per call,"
                f" a call every {r.scenario.keys / r.events_per_s * 1000:.0f} ms per key"
                f" (mean time in flight {r.round_trip_ms:.0f} ms)"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--few-keys-records", type=int, default=6_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--latency-ms", type=float, default=25)
    parser.add_argument("--clients", default="lean,boto3")
    parser.add_argument("--only", default="", help="a,b,c: the scenarios to run (default all)")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--profile", action="store_true", help="py-spy the bridge (if installed)")
    parser.add_argument(
        "--fixed", type=int, default=None, help="diagnosis: N calls in flight, adaptive off"
    )
    parser.add_argument("--linger-ms", type=int, default=None, help="diagnosis: batch.linger_ms")
    args = parser.parse_args()
    if args.quick:
        args.records, args.few_keys_records = 40_000, 2_000
    scenarios = {
        "a": Scenario("(a) unordered", None, args.records, ">= 20000"),
        "b": Scenario("(b) ordered, 10,000 keys", 10_000, args.records, ">= 10000"),
        "c": Scenario("(c) ordered, 10 keys", 10, args.few_keys_records, "measured"),
    }
    chosen = [scenarios[k] for k in (args.only.split(",") if args.only else scenarios)]
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if given else LocalKafka(auto_create_topics=True).start()
    bootstrap = given or broker.bootstrap_servers  # type: ignore[union-attr]
    workdir = Path(tempfile.mkdtemp(prefix="bench-busv2-"))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    print(
        f"broker {bootstrap}; CBOR endpoint latency {args.latency_ms:.0f} ms; {os.cpu_count()}"
        f" cores; logs in {workdir}"
    )
    results: list[Result] = []
    try:
        with CountingBus(faults=Faults(latency_ms=args.latency_ms)) as bus:
            for scenario in chosen:
                for client in args.clients.split(","):
                    topic = make_topic(bootstrap, args.partitions)
                    produce_keyed(bootstrap, topic, scenario.records, scenario.keys)
                    result = run(
                        bus,
                        bootstrap,
                        scenario,
                        client,
                        workdir,
                        topic,
                        profile=args.profile,
                        fixed=args.fixed,
                        linger_ms=args.linger_ms,
                    )
                    results.append(result)
                    print(
                        f"  {scenario.name} {client}: {result.events_per_s:.0f} events/s,"
                        f" {result.cpu_us_per_event:.1f} CPU µs/event",
                        flush=True,
                    )
    finally:
        if broker is not None:
            broker.stop()
    report(results, args.latency_ms)
    print(
        json.dumps(
            [
                {
                    "scenario": r.scenario.name,
                    "client": r.client,
                    "events_per_s": round(r.events_per_s),
                    "cpu_us_per_event": round(r.cpu_us_per_event, 1),
                    "calls": r.calls,
                    "entries_per_call": round(r.entries_per_call, 1),
                    "mean_in_flight": round(r.mean_in_flight, 1),
                    "peak_in_flight": r.peak_in_flight,
                }
                for r in results
            ]
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

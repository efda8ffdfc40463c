"""Adaptive concurrency and throttling benchmark: the bridge with its DEFAULT settings.

    .venv/bin/python benchmarks/adaptive.py            # the full run (~10-15 minutes, 2 cores)
    .venv/bin/python benchmarks/adaptive.py --quick    # smaller, ~3 minutes, a smoke check

Runs ``bridge run`` in child processes against a real broker and the project's local EventBridge
endpoint (in this process), the way benchmarks/throughput.py does, and prints one table:

- 25 ms endpoint latency, no faults: default settings (adaptive concurrency, ceiling 128) against
  fixed concurrency 4, 48 and the best of a short sweep of fixed values;
- 5 ms and 100 ms: default against the best of a sweep;
- 10% of entries throttled at random whatever the rate: default, against default unthrottled;
- an account quota of 2,400 entries/s at the endpoint: one bridge; three bridges in one group;
  one bridge while a competing sender (a plain boto3 loop in its own process) takes about half
  the quota for a while and then stops: seconds until the bridge is back to >= 90% of it.

For each run: events/s, bridge CPU µs per event (all bridge processes), entries throttled (from
the endpoint's counters), whether every produced record id reached the endpoint and how many
records were dead-lettered (the dead-letter topic's size), and the bridge's last progress line
(concurrency_limit, rate_limit). Writes a PNG of entries/s over time for the quota runs (the
endpoint's received counter, sampled every 0.5 s). Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from throughput import DETAIL, make_topic, proc_cpu, produce  # noqa: E402

from testbed.endpoint import Faults, LocalEventBridge  # noqa: E402
from testbed.kafka import LocalKafka  # noqa: E402

QUOTA = 2400.0
SCENARIOS = ("25ms", "5ms", "100ms", "random", "quota1", "quota3", "competitor")
SAMPLE_S = 0.5
LOG_LEVEL = "info"  # --debug: "debug", each limit change and why in the bridges' logs


@dataclass
class Run:
    """What one run measured."""

    name: str
    events: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    throttled: int = 0
    attempted: int = 0
    missing: int = 0
    dead_lettered: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (s since start, received)
    attempts: list[tuple[float, int, int]] = field(default_factory=list)
    """(s since start, entries the bridges sent, of which failed), from the endpoint's calls."""
    by_key: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    progress: list[dict[str, Any]] = field(default_factory=list)  # last progress line each
    note: str = ""

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else 0.0

    @property
    def throttled_pct(self) -> float:
        return 100 * self.throttled / self.attempted if self.attempted else 0.0

    def throttled_pct_between(self, start: float, end: float) -> float:
        """Entries throttled (failed) among those sent between two times, in %."""
        inside = [(t, n, f) for t, n, f in self.attempts if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        (_, n0, f0), (_, n1, f1) = inside[0], inside[-1]
        return 100 * (f1 - f0) / (n1 - n0) if n1 > n0 else 0.0

    def sustained(self, low: float = 0.05, high: float = 0.95) -> float:
        """Events/s from when ``low`` to when ``high`` of the records had arrived: the rate
        without the start and the tail (the last records' retries, after backoff)."""
        first = next(((t, n) for t, n in self.samples if n >= low * self.events), None)
        last = next(((t, n) for t, n in self.samples if n >= high * self.events), None)
        if first is None or last is None or last[0] <= first[0]:
            return 0.0
        return (last[1] - first[1]) / (last[0] - first[0])

    def limits(self) -> str:
        return " ".join(
            f"c={p.get('concurrency_limit')}/r={_num(p.get('rate_limit'))}" for p in self.progress
        )


def _num(value: Any) -> str:
    return f"{value:.0f}" if isinstance(value, float | int) else str(value)


def config(
    bootstrap: str, endpoint: str, topic: str, group: str, fixed: int | None
) -> dict[str, Any]:
    """The bridge's configuration: only what the run needs; everything else is the default.

    ``fixed`` sets a fixed number of calls in flight (adaptive concurrency off); None keeps the
    defaults (adaptive concurrency, ``max_in_flight_calls`` 128 as its ceiling, adaptive rate).
    """
    cfg: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group},
        "aws": {"endpoint_url": endpoint, "check_event_bus": False},
        "dlq": {"topic": f"{topic}-dlq"},
        # Off only because three processes would share its port; it costs little.
        "observability": {"enabled": False},
        # info: the progress line (concurrency_limit, rate_limit) every 10 s.
        "logging": {"format": "json", "level": LOG_LEVEL},
        "mappings": [
            {
                "topic": topic,
                "source": "com.example.bench",
                "detail_type": "Order",
                "detail": DETAIL,
            }
        ],
    }
    if fixed is not None:
        cfg["pipeline"] = {"adaptive_concurrency": False, "max_in_flight_calls": fixed}
    return cfg


COMPETITOR = textwrap.dedent("""
    import sys, threading, time, boto3
    url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    threads = 8  # one call at a time each: enough calls in flight for the rate at 25-100 ms
    entry = {"Source": "com.example.other", "DetailType": "Other", "Detail": '{"x": 1}'}

    def send(client, began):
        n = 0
        while time.monotonic() - began < seconds:
            delay = began + n * 10 * threads / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            client.put_events(Entries=[entry] * 10)  # throttled entries are dropped
            n += 1

    clients = [boto3.client("events", endpoint_url=url, region_name="us-east-1")
               for _ in range(threads)]
    began = time.monotonic()
    workers = [threading.Thread(target=send, args=(c, began + i * 10 / rate))
               for i, c in enumerate(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
""")


class Bench:
    """The broker, the endpoint and the runs."""

    def __init__(self, bootstrap: str, endpoint: LocalEventBridge, workdir: Path, partitions: int):
        self.bootstrap = bootstrap
        self.endpoint = endpoint
        self.workdir = workdir
        self.partitions = partitions
        self._topics: dict[int, str] = {}
        self._seen = self._mine = 0

    def topic(self, records: int) -> str:
        """A topic holding ``records`` records with ids 0..records-1 (made once per size)."""
        if records not in self._topics:
            name = make_topic(self.bootstrap, self.partitions)
            # The dead-letter topic exists, so that a record dead-lettered is counted (and does
            # not hold its partition back waiting for the topic).
            admin = AdminClient({"bootstrap.servers": self.bootstrap})
            admin.create_topics([NewTopic(f"{name}-dlq", 1, 1)])[f"{name}-dlq"].result(30)
            produce(self.bootstrap, name, records)
            self._topics[records] = name
        return self._topics[records]

    def dead_lettered(self, topic: str) -> int:
        """Records in ``topic``'s dead-letter topic (0 if it does not exist)."""
        dlq = f"{topic}-dlq"
        meta = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=10)
        if dlq not in meta.topics:
            return 0
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-dlq-count"})
        try:
            total = 0
            for p in meta.topics[dlq].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(dlq, p), timeout=10)
                total += high - low
            return total
        finally:
            consumer.close()

    def run(
        self,
        name: str,
        records: int,
        *,
        processes: int = 1,
        fixed: int | None = None,
        competitor: tuple[float, float, float] | None = None,
        timeout: float = 600,
    ) -> Run:
        """Run ``processes`` bridges in one group until the endpoint holds every record.

        ``competitor`` is (start after s, entries/s, for s): a boto3 loop sending meanwhile.
        """
        topic = self.topic(records)
        group = f"bench-{uuid.uuid4().hex[:8]}"
        self.endpoint.reset()
        self._seen = self._mine = 0
        procs, logs = [], []
        for i in range(processes):
            path = self.workdir / f"{name.replace(' ', '-').replace('/', '_')}-{i}.yaml"
            path.write_text(
                yaml.safe_dump(config(self.bootstrap, self.endpoint.url, topic, group, fixed))
            )
            log = self.workdir / f"{path.stem}.log"
            logs.append(log)
            env = dict(os.environ, AWS_ACCESS_KEY_ID=f"bridge{i}")
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bridge", "run", "--config", str(path)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                        env=env,
                    )
                )
        run = Run(name)
        other: subprocess.Popen[bytes] | None = None
        keys: Counter[str] = Counter()
        sent = failed = 0
        seen_calls = 0
        began = time.monotonic()
        first_at: float | None = None
        cpu_first = 0.0
        next_sample = began
        try:
            while True:
                now = time.monotonic()
                if now - began > timeout:
                    raise RuntimeError(
                        f"{name}: {len(self.endpoint._received)}/{records}"
                        f" after {timeout}s; see {self.workdir}"
                    )
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"{name}: a bridge exited {p.returncode}; see {logs}")
                if competitor and other is None and first_at and now - first_at >= competitor[0]:
                    other = subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            COMPETITOR,
                            self.endpoint.url,
                            str(competitor[1]),
                            str(competitor[2]),
                        ],
                        env=dict(os.environ, AWS_ACCESS_KEY_ID="other"),
                    )
                mine = self._bridge_entries()
                if first_at is None and mine > 0:
                    first_at, cpu_first = now, sum(proc_cpu(p.pid) for p in procs)
                    next_sample = now  # samples from the first entry on, SAMPLE_S apart
                if now >= next_sample and first_at is not None:
                    calls = self.endpoint._calls
                    for c in calls[seen_calls : len(calls)]:
                        if c.operation == "PutEvents" and c.status == 200:
                            keys[c.access_key_id] += c.entries - c.failed_entries
                            if c.access_key_id.startswith("bridge"):
                                sent += c.entries
                                failed += c.failed_entries
                    seen_calls = len(calls)
                    t = now - first_at
                    run.samples.append((t, mine))
                    run.attempts.append((t, sent, failed))
                    for key, count in keys.items():
                        run.by_key.setdefault(key, []).append((t, count))
                    next_sample += SAMPLE_S
                if mine >= records:
                    if first_at is not None and (
                        not run.samples or now > first_at + run.samples[-1][0]
                    ):
                        run.samples.append((now - first_at, mine))  # the end, between samples
                    run.seconds = now - (first_at or now)
                    run.cpu_seconds = sum(proc_cpu(p.pid) for p in procs) - cpu_first
                    run.events = mine
                    break
                time.sleep(0.05)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
            if other is not None:
                other.kill()
                other.wait()
        stats = self.endpoint.stats()
        failed = stats["entries_failed"]
        run.throttled = sum(v for k, v in failed.items() if "Throttl" in k)
        run.attempted = stats["entries_received"] + sum(failed.values())
        ids = set()
        for r in self.endpoint.received():
            if r.entry.get("Source") == "com.example.bench":
                ids.add(json.loads(r.entry["Detail"])["v"]["id"])
        run.missing = records - len(ids & set(range(records)))
        run.dead_lettered = self.dead_lettered(topic)
        for log in logs:
            last: dict[str, Any] = {}
            for line in log.read_text(errors="replace").splitlines():
                if '"progress"' in line:
                    with contextlib.suppress(ValueError):
                        last = json.loads(line)
            run.progress.append(last)
        return run

    def _bridge_entries(self) -> int:
        """Entries the endpoint accepted from the bridges (not from the competitor), counted
        incrementally: the list only grows between resets."""
        received = self.endpoint._received
        if len(received) < self._seen:  # reset
            self._seen = self._mine = 0
        end = len(received)
        self._mine += sum(
            1 for r in received[self._seen : end] if r.entry.get("Source") == "com.example.bench"
        )
        self._seen = end
        return self._mine


def rate_between(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Entries/s between two times, from (time, cumulative count) samples."""
    inside = [(t, n) for t, n in samples if start <= t <= end]
    if len(inside) < 2:
        return 0.0
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="per latency run")
    parser.add_argument("--slow-records", type=int, default=12_000, help="fixed 4 at 25 ms")
    parser.add_argument("--quota-records", type=int, default=72_000)
    parser.add_argument("--competitor-records", type=int, default=96_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--sweep-25", default="16,32,64,96,128")
    parser.add_argument("--sweep-5", default="8,16,32,64")
    parser.add_argument("--sweep-100", default="64,128,192,256")
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "adaptive.png")
    parser.add_argument("--quick", action="store_true", help="small sizes, ~3 minutes")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios among {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="bridges log each limit change (and why)"
    )
    args = parser.parse_args()
    if args.debug:
        global LOG_LEVEL
        LOG_LEVEL = "debug"
    only = set(args.only.split(","))
    if only - set(SCENARIOS):
        parser.error(f"--only: unknown scenario(s) {sorted(only - set(SCENARIOS))}")
    if args.quick:
        args.records, args.slow_records = 15_000, 3_000
        args.quota_records, args.competitor_records = 24_000, 40_000
        args.sweep_25, args.sweep_5, args.sweep_100 = "32", "16", "128"

    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if given else LocalKafka(auto_create_topics=True).start()
    bootstrap = given or broker.bootstrap_servers  # type: ignore[union-attr]
    workdir = Path(tempfile.mkdtemp(prefix="bench-adaptive-"))
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    print(
        f"broker {bootstrap}; {os.cpu_count()} cores; logs in {workdir};"
        f" load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows: list[tuple[Run, str]] = []

    def show(run: Run, verdict: str = "") -> Run:
        rows.append((run, verdict))
        print(
            f"  {run.name}: {run.events_per_s:.0f}/s, {run.cpu_us_per_event:.1f} µs/ev,"
            f" throttled {run.throttled_pct:.1f}%, missing {run.missing}, DLQ"
            f" {run.dead_lettered}; {run.limits()} {verdict}",
            flush=True,
        )
        return run

    try:
        with LocalEventBridge(faults=Faults(latency_ms=25)) as endpoint:
            bench = Bench(bootstrap, endpoint, workdir, args.partitions)
            n = args.records
            # 1. 25 ms, no faults: default, fixed 4 and 48, the sweep.
            default25: Run | None = None
            if "25ms" in only:
                default25 = bench.run("25ms default", n)
                fixed4 = show(bench.run("25ms fixed 4", args.slow_records, fixed=4))
                sweep = {48: show(bench.run("25ms fixed 48", n, fixed=48))}
                for c in [int(x) for x in args.sweep_25.split(",")]:
                    if c not in sweep:
                        sweep[c] = show(bench.run(f"25ms fixed {c}", n, fixed=c))
                best = max(sweep.values(), key=lambda r: r.events_per_s)
                share = default25.events_per_s / best.events_per_s
                show(
                    default25,
                    f"= {share:.0%} of best ({best.name});"
                    f" {default25.events_per_s / fixed4.events_per_s:.1f}x fixed 4"
                    f" [target >= 90% and >= 10,000/s]",
                )
            # 2. 5 ms and 100 ms: default against the best of a sweep.
            for latency, sweep_arg in ((5, args.sweep_5), (100, args.sweep_100)):
                if f"{latency}ms" not in only:
                    continue
                endpoint.set_faults(Faults(latency_ms=latency))
                tuned = [
                    show(bench.run(f"{latency}ms fixed {c}", n, fixed=c))
                    for c in [int(x) for x in sweep_arg.split(",")]
                ]
                best = max(tuned, key=lambda r: r.events_per_s)
                run = bench.run(f"{latency}ms default", n)
                show(
                    run,
                    f"= {run.events_per_s / best.events_per_s:.0%} of best ({best.name})"
                    " [target >= 90%]",
                )
            # 3. 10% of entries throttled at random, whatever the rate.
            if "random" in only:
                if default25 is None:
                    endpoint.set_faults(Faults(latency_ms=25))
                    default25 = show(bench.run("25ms default", n))
                endpoint.set_faults(
                    Faults(latency_ms=25, per_entry_failures={"ThrottlingException": 0.1})
                )
                run = bench.run("25ms default, 10% throttled at random", n)
                show(
                    run,
                    f"= {run.events_per_s / default25.events_per_s:.0%} of unthrottled default"
                    f" over the whole run; sustained (5%..95% of the records)"
                    f" {run.sustained():.0f}/s vs {default25.sustained():.0f}/s ="
                    f" {run.sustained() / max(1.0, default25.sustained()):.0%}"
                    " [target >= 80%]",
                )
            # 4. the quota: one bridge, three, one with a competitor.
            endpoint.set_faults(Faults(latency_ms=25))
            endpoint.set_quota(QUOTA)
            quota_runs = []
            if "quota1" in only:
                run = bench.run(f"quota {QUOTA:.0f}/s, 1 bridge", args.quota_records)
                steady = rate_between(run.samples, 5, run.seconds)
                quota_runs.append(
                    show(
                        run,
                        f"steady (after 5 s) {steady:.0f}/s ="
                        f" {steady / QUOTA:.0%} of quota, throttled"
                        f" {run.throttled_pct_between(5, run.seconds):.1f}% [target >= 90%,"
                        " <= 5% throttled]",
                    )
                )
            if "quota3" in only:
                run = bench.run(f"quota {QUOTA:.0f}/s, 3 bridges", args.quota_records, processes=3)
                # From when every bridge delivers (after the group settled) to when the first
                # one runs out of records.
                starts = [next((t for t, c in v if c > 0), 0.0) for v in run.by_key.values()]
                ends = [next((t for t, c in v if c == v[-1][1]), 0.0) for v in run.by_key.values()]
                begin, end = max(starts) + 3, min(ends)
                steady = rate_between(run.samples, begin, end)
                shares = [rate_between(s, begin, end) for k, s in sorted(run.by_key.items())]
                fair = QUOTA / 3
                quota_runs.append(
                    show(
                        run,
                        f"steady ({begin:.0f} s..{end:.0f} s) {steady:.0f}/s ="
                        f" {steady / QUOTA:.0%} of quota, throttled"
                        f" {run.throttled_pct_between(begin, end):.1f}%; per bridge "
                        + "/".join(f"{s:.0f}" for s in shares)
                        + f" (lowest {min(shares, default=0) / fair:.0%} of fair share)"
                        " [target >= 90%, none < 20%]",
                    )
                )
            start, length = (10.0, 15.0) if not args.quick else (5.0, 8.0)
            stop = start + length
            if "competitor" in only:
                run = bench.run(
                    f"quota {QUOTA:.0f}/s, competitor",
                    args.competitor_records,
                    competitor=(start, QUOTA / 2, length),
                )
                during = rate_between(run.samples, start + 3, stop)
                other = rate_between(run.by_key.get("other", []), start + 3, stop)
                back = next(
                    (
                        t
                        for t, _ in run.samples
                        if t >= stop and rate_between(run.samples, t - 2, t) >= 0.9 * QUOTA
                    ),
                    None,
                )
                recovery = "never" if back is None else f"{back - stop:.1f} s"
                quota_runs.append(
                    show(
                        run,
                        f"bridge {during:.0f}/s while other took {other:.0f}/s;"
                        f" back to >= 90% (2 s window) {recovery} after it stopped"
                        " [target <= 15 s]",
                    )
                )
    finally:
        if broker is not None:
            broker.stop()
    print(
        f"\nload average (1/5/15 min) at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"\n{'run':42} {'events/s':>9} {'CPU µs/ev':>9} {'thr %':>6} {'lost':>5} {'DLQ':>4}"
        "  last progress (concurrency/rate limit)"
    )
    for run, verdict in rows:
        print(
            f"{run.name:42} {run.events_per_s:9.0f} {run.cpu_us_per_event:9.1f}"
            f" {run.throttled_pct:6.1f} {run.missing:5} {run.dead_lettered:4}  {run.limits()}"
        )
        if verdict:
            print(f"{'':44}{verdict}")
    if quota_runs:  # after the table: a failure to plot must not hide the figures
        plot(quota_runs, args.plot, (start, stop))
        print(f"plot written to {args.plot}")
    return 0


def rates(samples: list[tuple[float, int]]) -> tuple[list[float], list[float]]:
    """(times, entries/s between consecutive samples), skipping samples taken at the same time."""
    ts, rs = [], []
    for (t0, n0), (t1, n1) in itertools.pairwise(samples):
        if t1 > t0:
            ts.append(t1)
            rs.append((n1 - n0) / (t1 - t0))
    return ts, rs


def plot(runs: list[Run], path: Path, competitor: tuple[float, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(len(runs), 1, figsize=(8, 3 * len(runs)), squeeze=False)
    axes = grid[:, 0]
    for ax, run in zip(axes, runs, strict=True):
        ax.plot(*rates(run.samples), label="bridge(s), total", linewidth=1)
        for key, samples in sorted(run.by_key.items()):
            if len(run.by_key) > 1:
                ax.plot(*rates(samples), label=key, linewidth=0.8, alpha=0.7)
        ax.axhline(QUOTA, color="grey", linestyle="--", label="quota")
        if "competitor" in run.name:
            ax.axvspan(*competitor, color="orange", alpha=0.15, label="competitor sending")
        ax.set_title(run.name)
        ax.set_ylabel("entries/s (0.5 s)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[-1].set_xlabel("seconds since the first entry")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())

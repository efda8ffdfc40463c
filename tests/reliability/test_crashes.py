"""Crashes: the bridge killed with SIGKILL at random moments; the Kafka broker stopped and killed.

Builds on ``tests/integration/test_crash_restart.py`` (three kills at fixed points of a topic
produced in advance): here records keep arriving while the bridge is killed at random moments
(some before it even joined its group), 1% of them must be dead-lettered, and every committed
offset seen during the run is checked against what was finished at that time.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from testbed.endpoint import Faults, LocalEventBridge

from .conftest import Cluster
from .harness import Bridge, Row, Run

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(1200)]


def test_bridge_sigkilled_at_random_moments_and_restarted(
    scenario: Callable[..., Run], long_mode: bool
) -> None:
    kills = 20 if long_mode else 5
    run = scenario(f"bridge SIGKILL x{kills}, restarted", partitions=3, max_buffered=300)
    run.endpoint.set_faults(Faults(latency_ms=10, latency_jitter_ms=10))
    run.stream(rate=600 if long_mode else 400, bad_every=100)
    bridge = run.bridge().start()
    run.wait_delivering(1)
    rng = random.Random(20)
    fault = None
    for _ in range(kills):
        if fault is not None and rng.random() < 0.8:
            run.wait_resumed(fault)  # most kills hit a bridge at full speed ...
        time.sleep(rng.uniform(0.0, 2.0))  # ... the others during its start-up
        run.assert_alive()
        fault = run.fault("SIGKILL")
        bridge.kill()
        time.sleep(0.3)  # the endpoint answers what was in flight; the dead commit nothing
        # Exact: what the next process reads again is what is finished and not committed now.
        fault.bound = run.audit.delivered_uncommitted()
        bridge.start()
        run.clear(fault)
    run.finish()
    assert bridge.starts == kills + 1


RETRYABLE_FIRST = {"ThrottlingException": 0.05, "InternalFailure": 0.05}
PERMANENT = {"InvalidArgument": 0.01, "MalformedDetail": 0.01}
REPEATED = {"InternalFailure": 0.01}


def unfinished_at_commit(bridge: Bridge) -> str:
    """The bridge's ``bridge_unfinished_at_commit`` gauge ("?" when it cannot be read)."""
    port = bridge.port()
    if port is None:
        return "?"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return "?"
    found = re.search(r"^bridge_unfinished_at_commit (\S+)$", text, re.MULTILINE)
    return "?" if found is None else str(int(float(found.group(1))))


def sigkill_run(
    scenario: Callable[..., Run],
    endpoint: LocalEventBridge,
    kills: int,
    records: int,
    recorded: bool,
    seed: int,
    waiting_heads: bool = False,
) -> Row:
    """Issue #14's run: ``records`` produced at 600/s, 10% of entries failing their first
    attempt (throttling, InternalFailure), 2% of sends failing for good (dead-lettered), the
    bridge SIGKILLed ``kills`` times at random moments while it works through them and
    restarted at once; ``recorded``: ``pipeline.finished_offsets_in_commit``.
    ``waiting_heads``: 1% more of the entries fail their first 4 attempts (InternalFailure),
    so that a partition's oldest unfinished record often waits ~1.5 s for its retries (100,
    200, 400, 800 ms), as in the issue's run: what plain offsets send again after a kill is
    then everything delivered behind it.

    The bridge's own defaults for retries (10 attempts, 100 ms to 20 s), for
    ``max_buffered_records`` (10,000) and for the adaptive rate, so that a partition's
    committed offset waits for its oldest retry as it does for users. The endpoint throttles
    5% of entries at random, whatever the rate. The bridge's default commit cadence (a commit
    as soon as 50 ms have passed since the last one, ``pipeline.commit_min_gap_ms``; the
    suite's 200 ms ``commit_interval_ms`` only matters with nothing new); the suite's linger
    (5 ms) and session timeout (3 s on its own broker, 6 s on a given one: a killed member's
    partitions move on quickly, which shortens the run).
    """
    label = "finished offsets in the commit" if recorded else "plain offsets"
    if waiting_heads:
        label = f"1% failing 4 attempts, {label}"
    # The same seed, nothing received nor seen yet (the same first-attempt draws), before the
    # run's audit starts reading what the endpoint received.
    endpoint.reset()
    run = scenario(
        f"SIGKILL x{kills}, 10%+2% failing, {label}",
        partitions=3,
        max_buffered=10_000,
        pipeline={"finished_offsets_in_commit": recorded},
        retry={"max_attempts": 10, "initial_backoff_ms": 100, "max_backoff_ms": 20_000},
    )
    run.endpoint.set_faults(
        Faults(
            latency_ms=10,
            latency_jitter_ms=10,
            first_attempt_failures=RETRYABLE_FIRST,
            per_entry_failures=PERMANENT,
            repeated_failures=REPEATED if waiting_heads else {},
            repeated_attempts=4,
        )
    )
    run.stream(rate=600, total=records)
    bridge = run.bridge().start()
    run.wait_delivering(1)
    rng = random.Random(seed)
    fault = None
    for _ in range(kills):
        # Most kills hit a bridge at full speed, the others during its start-up. A bridge that
        # has already delivered what it can (the rest is dead-lettered or finished) has nothing
        # new to resume with: waiting for it would only time out, so the kill comes at once.
        at_speed = rng.random() < 0.8
        if fault is not None and at_speed and run.delivered() < records * 0.95:
            run.wait_resumed(fault)
        time.sleep(rng.uniform(0.0, 2.0))
        run.assert_alive()
        # The bridge's own figure, for the record: entries unfinished at its last commit.
        fault = run.fault(
            f"SIGKILL (unfinished at the last commit: {unfinished_at_commit(bridge)})"
        )
        bridge.kill()
        time.sleep(0.3)  # the endpoint answers what was in flight; the dead commit nothing
        # What the next process sends again: finished, at or past the committed offset, and not
        # recorded finished in the commit's metadata (the audit decodes it).
        fault.bound = run.audit.delivered_uncommitted()
        bridge.start()
        run.clear(fault)
    row = run.finish(
        send_codes=PERMANENT,
        bound_each_fault=True,
        keep_recorded_finished=recorded,
        drain_timeout=600,
    )
    assert bridge.starts == kills + 1
    return row


@pytest.mark.parametrize("waiting_heads", [False, True], ids=["quick retries", "waiting heads"])
def test_finished_offsets_in_the_commit_cut_what_sigkills_send_twice(
    scenario: Callable[..., Run], endpoint: LocalEventBridge, long_mode: bool, waiting_heads: bool
) -> None:
    """The same run twice, the same seeds: with the finished offsets in the commit (the
    default) and with plain offsets. Each kill's duplicates stay within its own bound (what
    was sent and unfinished at the last commit, and what finished after it): the harness
    checks it. Plain offsets also send again everything delivered behind the oldest
    unfinished record: with quick retries (one failure, retried after 100-200 ms) that is
    little, so the two ways differ by a small factor (issue #14 asked 20x: see
    docs/reliability.md); with heads waiting ~1.5 s for their retries, at least 20x in the
    long mode."""
    kills, records = (20, 22_000) if long_mode else (4, 3_000)
    rows = {
        r: sigkill_run(scenario, endpoint, kills, records, r, 14, waiting_heads)
        for r in (True, False)
    }
    with_metadata, plain = rows[True], rows[False]
    print(
        f"\n    duplicates: {with_metadata.duplicated} with the finished offsets in the commit"
        f" ({with_metadata.per_kill()} per kill, {with_metadata.records} records),"
        f" {plain.duplicated} with plain offsets ({plain.per_kill()} per kill,"
        f" {plain.records} records)"
    )
    if long_mode:
        assert with_metadata.records >= 20_000 and plain.records >= 20_000
        factor = 20 if waiting_heads else 1
        assert with_metadata.duplicated * factor <= plain.duplicated, (with_metadata, plain)
    elif plain.duplicated >= 50:
        # Four kills: with commits every 50 ms both ways often leave only a call or two to send
        # again (22 against 19 in one run), and a comparison of two such small counts is noise.
        # Each kill's bound (checked by the harness) holds either way; the ratio is long mode's.
        assert with_metadata.duplicated < plain.duplicated, (with_metadata, plain)


def test_kafka_broker_stopped_and_restarted_mid_stream(
    scenario: Callable[..., Run], cluster: Cluster, long_mode: bool
) -> None:
    kafka = cluster.kafka
    if kafka is None:
        pytest.skip("needs the suite's own broker (KAFKA_BOOTSTRAP_SERVERS is set)")
    cycles = [("stop", 5.0)]
    if long_mode:
        cycles += [("kill", 0.0), ("stop", 20.0), ("kill", 10.0), ("stop", 2.0)]
    run = scenario(f"Kafka broker stopped/killed x{len(cycles)}", partitions=3, max_buffered=300)
    run.stream(rate=300, bad_every=100)
    run.bridge().start()
    run.wait_delivering(200)
    fault = None
    for kind, down in cycles:
        if fault is not None:
            run.wait_resumed(fault)
        time.sleep(2)
        run.assert_alive()
        # The bridge may lose its partitions while the coordinator is away and read again
        # what it had not committed: at most max_buffered_records.
        fault = run.fault(f"broker {kind} {down:.0f}s", bound=run.max_buffered)
        try:
            if kind == "stop":
                kafka.stop(keep_data=True)
            else:
                kafka.kill()
            time.sleep(down)
        finally:
            kafka.start()
        run.clear(fault)
    run.finish(drain_timeout=180)


def console_script() -> list[str]:
    """What the ``bridge`` script pip generates from pyproject.toml runs (the image's entry
    point): the installed script of this virtualenv may predate a change of the entry point."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    module, func = pyproject["project"]["scripts"]["bridge"].split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


@pytest.mark.parametrize("launcher", ["python -m bridge", "bridge console script"])
def test_sigterm_during_start_up_exits_0(tmp_path: Path, cluster: Cluster, launcher: str) -> None:
    config = {
        "kafka": {"bootstrap_servers": cluster.bootstrap},
        "aws": {"check_event_bus": False, "endpoint_url": "http://127.0.0.1:9"},
        "observability": {"enabled": False},
        "mappings": [{"topic": "t", "source": "com.example.t", "detail_type": "T"}],
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    module = launcher.startswith("python")
    command = [sys.executable, "-m", "bridge"] if module else console_script()
    codes = []
    for delay in (0.1, 0.2):
        proc = subprocess.Popen(
            [*command, "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        codes.append(proc.wait(60))
    assert codes == [0, 0]

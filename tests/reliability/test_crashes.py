"""Crashes: the bridge killed with SIGKILL at random moments; the Kafka broker stopped and killed.

Builds on ``tests/integration/test_crash_restart.py`` (three kills at fixed points of a topic
produced in advance): here records keep arriving while the bridge is killed at random moments
(some before it even joined its group), 1% of them must be dead-lettered, and every committed
offset seen during the run is checked against what was finished at that time.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from testbed.endpoint import Faults

from .conftest import Cluster
from .harness import Run

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

"""The memory budget of a real ``bridge run`` process, read from a cgroup limit.

``BRIDGE_CGROUP_ROOT`` points the bridge's reader at a fake cgroup tree: a container's limit
(cgroup v2 ``memory.max``, or v1 ``memory/memory.limit_in_bytes`` alone) must change the budget
the bridge logs at start ("memory budget": records_bytes, prefetch_bytes, in_flight_bytes,
container_limit_bytes, source) to what :func:`bridge.source.budget.derive_budget` gives for
that limit, and the bridge must still deliver under it. Without the variable the bridge reads this
machine's real cgroup, the same figure the test process reads (the real read is exercised
wherever the machine has a limit; here, often, it has none).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafkatest import ROOT, Topics, bridge_config, produce, wait_until

from bridge.config.load import config_from_dict
from bridge.source.budget import (
    CGROUP_ROOT_ENV,
    MiB,
    derive_budget,
    in_flight_bytes,
    read_memory_limit,
)
from testbed.endpoint import LocalEventBridge

pytestmark = pytest.mark.integration


def start(config: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp_path / "bridge.log").open("wb")
    environ = {k: v for k, v in os.environ.items() if k != CGROUP_ROOT_ENV} | env
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=environ,
    )


def events(tmp_path: Path) -> list[dict[str, Any]]:
    found = []
    for line in (tmp_path / "bridge.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def logged_budget(tmp_path: Path) -> dict[str, Any] | None:
    return next((e for e in events(tmp_path) if e.get("event") == "memory budget"), None)


def expected(config: dict[str, Any], limit: int | None) -> dict[str, Any]:
    model = config_from_dict(config)
    reserved = in_flight_bytes(model.pipeline.max_in_flight_calls, model.packing()[1])
    budget = derive_budget(limit, in_flight_bytes=reserved)
    return {
        "records_bytes": budget.records,
        "prefetch_bytes": budget.prefetch,
        "in_flight_bytes": budget.in_flight,
        "container_limit_bytes": budget.limit,
        "source": budget.source,
    }


def run_and_read_budget(
    kafka_bootstrap: str,
    topics: Topics,
    endpoint: LocalEventBridge,
    tmp_path: Path,
    env: dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a bridge with ``env``, see it deliver 20 records, stop it (exit 0); returns its
    logged budget and its configuration."""
    topic = topics.create("budget")
    dlq = topics.create("budget-dlq")
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [{"topic": topic, "source": "com.example.budget", "detail_type": "Budget"}],
        dlq,
    )
    produce(kafka_bootstrap, topic, [(None, json.dumps({"i": i}).encode(), 0) for i in range(20)])
    proc = start(config, tmp_path, env)
    try:
        wait_until(lambda: len(endpoint.received()) >= 20 or proc.poll() is not None, 60, "20")
        assert proc.poll() is None, (tmp_path / "bridge.log").read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    line = logged_budget(tmp_path)
    assert line is not None, (tmp_path / "bridge.log").read_text()[-3000:]
    return line, config


def fake_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"memory.max": str(512 * MiB)}, 512 * MiB),
        ({"memory.max": str(2048 * MiB)}, 2048 * MiB),
        ({"memory.max": "max"}, None),
    ],
    ids=["v2-512Mi", "v2-2Gi", "v2-no-limit"],
)
def test_a_fake_cgroup_limit_sets_the_bridge_budget(
    kafka_bootstrap: str,
    topics: Topics,
    endpoint: LocalEventBridge,
    tmp_path: Path,
    files: dict[str, str],
    limit: int | None,
) -> None:
    root = fake_tree(tmp_path / "cgroup", files)
    line, config = run_and_read_budget(
        kafka_bootstrap, topics, endpoint, tmp_path, {CGROUP_ROOT_ENV: str(root)}
    )
    want = expected(config, limit)
    assert {k: line.get(k) for k in want} == want
    if limit is not None:
        assert line["records_bytes"] + line["prefetch_bytes"] < limit


def test_a_v1_limit_alone_is_read_when_the_process_has_a_v1_memory_cgroup(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, tmp_path: Path
) -> None:
    """A tree with only cgroup v1's file: read when this process's /proc/self/cgroup names a
    memory controller (else the bridge has no limit, as it should)."""
    proc_lines = Path("/proc/self/cgroup").read_text().splitlines()
    has_v1 = any("memory" in line.split(":")[1].split(",") for line in proc_lines if ":" in line)
    root = fake_tree(tmp_path / "cgroup", {"memory/memory.limit_in_bytes": str(768 * MiB)})
    line, config = run_and_read_budget(
        kafka_bootstrap, topics, endpoint, tmp_path, {CGROUP_ROOT_ENV: str(root)}
    )
    want = expected(config, 768 * MiB if has_v1 else None)
    assert {k: line.get(k) for k in want} == want


def test_without_the_variable_the_bridge_reads_this_machines_cgroup(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, tmp_path: Path
) -> None:
    line, config = run_and_read_budget(kafka_bootstrap, topics, endpoint, tmp_path, {})
    want = expected(config, read_memory_limit())
    assert {k: line.get(k) for k in want} == want

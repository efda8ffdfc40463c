"""Health probes and metrics of a real run, and a SIGTERM in the middle of a busy one."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kafkatest import (
    BridgeProcess,
    Topics,
    bridge_config,
    committed,
    dead_letter_codes,
    dlq_headers,
    end_offsets,
    produce,
    read_all,
    wait_committed,
    wait_until,
)

from testbed.endpoint import Faults, LocalEventBridge

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def total(metrics: dict[str, float], prefix: str, **labels: str) -> float:
    """Sum of the samples of ``prefix`` whose labels include ``labels``."""
    found = 0.0
    for name, value in metrics.items():
        if not (name == prefix or name.startswith(prefix + "{")):
            continue
        if all(f'{k}="{v}"' in name for k, v in labels.items()):
            found += value
    return found


def test_probes_and_metrics_match_what_was_received_and_dead_lettered(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, run_bridge: Any
) -> None:
    topic = topics.create("obs", partitions=3)
    dlq = topics.create("obs-dlq")
    records = [(str(i).encode(), json.dumps({"i": i}).encode(), None) for i in range(600)]
    records += [(b"bad", b"{not json", None) for _ in range(7)]
    produce(kafka_bootstrap, topic, records)
    endpoint.set_faults(
        Faults(per_entry_failures={"ThrottlingException": 0.2, "MalformedDetail": 0.02})
    )
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [{"topic": topic, "source": "com.example.obs", "detail_type": "Obs"}],
        dlq,
    )
    bridge = run_bridge(config)
    base = f"http://127.0.0.1:{bridge.bridge.server.port}"
    assert get(base + "/healthz")[0] == 200
    wait_until(lambda: get(base + "/readyz")[0] == 200, 30, "readiness once in the group")
    assert get(base + "/nope")[0] == 404

    ends = wait_committed(config, topic)
    # scraped during the run: the bridge is still up and in its group
    status, text = get(base + "/metrics")
    assert status == 200
    m = samples(text)
    received = endpoint.received()
    dead = read_all(kafka_bootstrap, dlq)
    dead_codes = Counter(dlq_headers(msg)["code"] for msg in dead)

    assert total(m, "bridge_records_consumed_total", topic=topic) == 607
    assert total(m, "bridge_entries_total", outcome="delivered") == len(received)
    assert total(m, "bridge_dead_lettered_total") == len(dead)
    assert total(m, "bridge_dead_lettered_total", reason="ValueNotJson", stage="decode") == 7
    assert (
        total(m, "bridge_dead_lettered_total", reason="MalformedDetail")
        == dead_codes["MalformedDetail"]
    )
    failed = endpoint.stats()["entries_failed"]
    assert total(m, "bridge_throttled_total") == failed.get("ThrottlingException", 0)
    assert total(m, "bridge_entries_total", outcome="retried") == total(m, "bridge_retries_total")
    assert total(m, "bridge_put_events_duration_seconds_count") == len(
        [c for c in endpoint.calls() if c.operation == "PutEvents"]
    )
    assert total(m, "bridge_batch_entries_sum") == len(received) + sum(failed.values())
    for (t, p), end in ends.items():
        assert m[f'bridge_committed_offset{{partition="{p}",topic="{t}"}}'] == end
    assert total(m, "bridge_in_flight_entries") == 0
    assert total(m, "bridge_rebalances_total", kind="assign") >= 1
    for name in m:  # no unbounded or secret label values
        assert not re.search(r'="[^"]*(testing|\{|\\")', name), name

    bridge.stop()


def test_readiness_fails_while_no_broker_answers(
    topics: Topics, endpoint: LocalEventBridge, run_bridge: Any
) -> None:
    config = bridge_config(
        "127.0.0.1:1",  # nothing listens there
        endpoint.url,
        [{"topic": "t", "source": "s", "detail_type": "d"}],
        "dlq",
    )
    bridge = run_bridge(config)
    base = f"http://127.0.0.1:{bridge.bridge.server.port}"
    status, _body = wait_until(
        lambda: (r := get(base + "/readyz"))[1].startswith("all brokers") and r, 30, "not ready"
    )
    assert status == 503
    assert get(base + "/healthz")[0] == 200, "the loop itself is alive"
    bridge.stop()


def test_sigterm_during_a_busy_run_exits_0_and_commits_exactly_what_finished(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    with LocalEventBridge(seed=3) as endpoint:
        endpoint.set_faults(
            Faults(
                latency_ms=30,
                per_entry_failures={"ThrottlingException": 0.1, "InvalidArgument": 0.02},
            )
        )
        topic = topics.create("term", partitions=4)
        dlq = topics.create("term-dlq")
        records = [(str(i).encode(), json.dumps({"i": i}).encode(), None) for i in range(5000)]
        produce(kafka_bootstrap, topic, records)
        config = bridge_config(
            kafka_bootstrap,
            endpoint.url,
            [
                {
                    "topic": topic,
                    "source": "com.example.term",
                    "detail_type": "T",
                    "detail": "${ {v: value, p: partition, o: offset} }",
                }
            ],
            dlq,
            # a bounded buffer is what makes a drain short: at most 300 records to finish
            pipeline={
                "shutdown_timeout_s": 10,
                "max_in_flight_calls": 4,
                "max_buffered_records": 300,
            },
        )
        proc = BridgeProcess(config, tmp_path).start()
        wait_until(lambda: len(endpoint.received()) >= 800, 90, "the run to be busy")
        assert proc.proc is not None
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        code = proc.proc.wait(40)
        took = time.monotonic() - started
        assert code == 0, proc.log_path.read_text()[-3000:]
        assert took < 10 + 5, f"stopped in {took:.1f}s; the deadline is 10s"
        stopped = [e for e in proc.log_events() if e.get("event") == "stopped"]
        assert stopped and stopped[-1]["unfinished_records"] == 0, "the drain finished its work"

        group = config["kafka"]["group_id"]
        positions = committed(kafka_bootstrap, group, topic)
        finished: dict[int, set[int]] = {p: set() for p in range(4)}
        for r in endpoint.received():
            detail = json.loads(r.entry["Detail"])
            finished[detail["p"]].add(detail["o"])
        for p, o in dead_letter_codes(read_all(kafka_bootstrap, dlq)):
            finished[p].add(o)
        received_count = len(endpoint.received())
        for p in range(4):
            position = max(0, positions[(topic, p)])  # -1001: nothing committed yet
            prefix = 0
            while prefix in finished[p]:
                prefix += 1
            # the commit covers exactly the finished prefix: nothing past an unfinished record,
            # nothing finished left uncommitted
            assert position == prefix, (p, position, prefix)
        ends = end_offsets(kafka_bootstrap, topic)
        print(
            f"\nSIGTERM: {received_count} received: exit 0 in {took:.2f}s, committed"
            f" {sum(max(0, v) for v in positions.values())}/{sum(ends.values())}"
        )

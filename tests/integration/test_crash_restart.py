"""A bridge process killed with SIGKILL mid-run, restarted in the same group: nothing is lost.

What a crash may send twice is bounded: only records consumed and not yet committed when the
process died (at most ``pipeline.max_buffered_records``) are read again by the next process.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from kafkatest import (
    DETAIL,
    BridgeProcess,
    Topics,
    bridge_config,
    committed,
    committed_finished,
    coordinates,
    end_offsets,
    produce,
    read_all,
    wait_until,
)

from testbed.endpoint import Faults, LocalEventBridge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

RECORDS = 3000
PARTITIONS = 3
MAX_BUFFERED = 300
KILL_AT = (0.25, 0.50, 0.75)  # fractions of RECORDS received when the process is killed


def test_sigkill_and_restart_loses_nothing_and_resends_at_most_the_buffer(
    kafka_bootstrap: str, topics: Topics, endpoint: LocalEventBridge, tmp_path: Path
) -> None:
    topic = topics.create("crash", partitions=PARTITIONS)
    dlq = topics.create("crash-dlq")
    produce(
        kafka_bootstrap,
        topic,
        [
            (f"k{i}".encode(), json.dumps({"id": i, "n": "x" * (i % 50)}).encode(), i % PARTITIONS)
            for i in range(RECORDS)
        ],
    )
    ends = end_offsets(kafka_bootstrap, topic)
    assert sum(ends.values()) == RECORDS

    endpoint.set_faults(Faults(latency_ms=20))
    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [{"topic": topic, "source": "com.example.crash", "detail_type": "Crash", "detail": DETAIL}],
        dlq,
        pipeline={"max_buffered_records": MAX_BUFFERED, "commit_interval_ms": 200},
    )
    group = config["kafka"]["group_id"]
    bridge = BridgeProcess(config, tmp_path)
    started = time.monotonic()
    bridge.start()

    at_risk: list[int] = []  # per kill: delivered but not committed when the process died
    try:
        for fraction in KILL_AT:
            threshold = int(RECORDS * fraction)

            def reached(threshold: int = threshold) -> bool:
                return len(endpoint.received()) >= threshold or not bridge.alive()

            wait_until(reached, 60, f"{threshold} entries received before the kill", interval=0.02)
            assert bridge.alive(), f"bridge exited early:\n{bridge.log_path.read_text()[-3000:]}"
            assert bridge.proc is not None
            bridge.kill()
            assert bridge.proc.returncode == -signal.SIGKILL, bridge.proc.returncode
            assert not bridge.alive()
            time.sleep(0.5)  # let the endpoint answer the calls that were in flight at the kill
            # The dead process commits nothing more: what the next one resends is fixed now:
            # delivered, not committed, and not recorded finished in the commit's metadata.
            points = committed_finished(kafka_bootstrap, group, topic)
            delivered = {coordinates(r.entry) for r in endpoint.received()}
            risky = sum(
                1
                for (t, p, o) in delivered
                if o >= max(points[(t, p)][0], 0) and o not in points[(t, p)][1]
            )
            at_risk.append(risky)
            assert risky <= MAX_BUFFERED, (
                f"kill at {fraction:.0%}: {risky} delivered records were neither committed nor"
                f" recorded finished, more than max_buffered_records={MAX_BUFFERED};"
                f" committed={points}"
            )
            bridge.start()

        wait_until(
            lambda: committed(kafka_bootstrap, group, topic) == ends or not bridge.alive(),
            90,
            "committed offsets to reach the end offsets after the last restart",
            interval=0.5,
        )
        assert bridge.alive(), f"bridge exited early:\n{bridge.log_path.read_text()[-3000:]}"
        assert committed(kafka_bootstrap, group, topic) == ends
        code = bridge.terminate(timeout=40)
        assert code == 0, f"exit code {code}:\n{bridge.log_path.read_text()[-3000:]}"
    finally:
        if bridge.alive():
            bridge.kill()
    elapsed = time.monotonic() - started

    produced = {
        (m.topic(), m.partition(), m.offset()): m.value() for m in read_all(kafka_bootstrap, topic)
    }
    assert len(produced) == RECORDS
    received = endpoint.received()
    by_record = Counter(coordinates(r.entry) for r in received)
    for r in received:
        where = coordinates(r.entry)
        assert json.loads(r.entry["Detail"])["order"] == json.loads(produced[where])
    dead = read_all(kafka_bootstrap, dlq)
    assert dead == [], "no record should be dead-lettered: no failures were injected"
    lost = set(produced) - set(by_record)
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:5]}"
    assert set(by_record) <= set(produced)
    duplicates = sum(n - 1 for n in by_record.values())
    assert duplicates <= sum(at_risk), (
        f"{duplicates} duplicates, but only {sum(at_risk)} records were delivered-not-committed"
        f" at the kills ({at_risk})"
    )
    assert duplicates <= len(KILL_AT) * MAX_BUFFERED
    assert bridge.starts == len(KILL_AT) + 1
    assert endpoint.violations == []
    events = bridge.log_events()
    assert any(e.get("event") == "stopped" for e in events), "the last process logged no stop"
    print(
        f"\ncrash-restart: records={RECORDS} received={len(received)} distinct={len(by_record)}"
        f" duplicates={duplicates} uncommitted_at_kills={at_risk}"
        f" max_buffered={MAX_BUFFERED} kills={len(KILL_AT)} dead_lettered={len(dead)}"
        f" time={elapsed:.1f}s"
    )

"""A dead-letter topic the broker refuses to write to: offsets stop at the failed record.

The topic exists but its ``max.message.bytes`` (200) is smaller than any dead-letter record with
its ``__bridge.errors.*`` headers, so each write is refused (MSG_SIZE_TOO_LARGE) whatever the
broker's auto-create setting. The bridge must keep delivering the good records, commit nothing
past the record it could not dead-letter, say so loudly, keep writing, and catch up once the
topic accepts the records.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from kafkatest import (
    DETAIL,
    BridgeProcess,
    Topics,
    bridge_config,
    committed,
    coordinates,
    dlq_headers,
    end_offsets,
    produce,
    read_all,
    wait_until,
)

from testbed.endpoint import LocalEventBridge

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

RECORDS = 200
BAD = (50, 120)


def test_unwritable_dead_letter_topic_holds_offsets_until_it_accepts_writes(
    kafka_bootstrap: str,
    admin: AdminClient,
    topics: Topics,
    endpoint: LocalEventBridge,
    tmp_path: Path,
) -> None:
    topic = topics.create("unwritable", partitions=1)
    dlq = topics.create("unwritable-dlq", config={"max.message.bytes": "200"})
    records: list[tuple[bytes | None, bytes | None, int | None]] = []
    for i in range(RECORDS):
        value = b"not json {" + str(i).encode() if i in BAD else json.dumps({"id": i}).encode()
        records.append((f"k{i}".encode(), value, 0))
    produce(kafka_bootstrap, topic, records)
    ends = end_offsets(kafka_bootstrap, topic)
    assert ends == {(topic, 0): RECORDS}

    config = bridge_config(
        kafka_bootstrap,
        endpoint.url,
        [{"topic": topic, "source": "com.example.dlq", "detail_type": "Dlq", "detail": DETAIL}],
        dlq,
        dlq={"producer": {"message.timeout.ms": 2000}, "retry_backoff_ms": 300},
    )
    group = config["kafka"]["group_id"]
    started = time.monotonic()
    # A child process, as a user runs it: its JSON log lines land in a file of its own.
    bridge = BridgeProcess(config, tmp_path).start()

    def failed_writes() -> list[dict[str, Any]]:
        return [
            e
            for e in bridge.log_events()
            if str(e.get("event", "")).startswith("DEAD-LETTER WRITE FAILED")
        ]

    try:
        good = {(topic, 0, i) for i in range(RECORDS) if i not in BAD}
        wait_until(
            lambda: {coordinates(r.entry) for r in endpoint.received()} >= good,
            60,
            "the 198 good records delivered while the dead-letter topic refuses writes",
        )
        wait_until(failed_writes, 30, "a failed dead-letter write in the log")

        # For a while, nothing past offset 50 (the first record that could not be dead-lettered)
        # may be committed: its offset is not finished.
        held: list[int] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            position = committed(kafka_bootstrap, group, topic)[(topic, 0)]
            held.append(position)
            assert position <= BAD[0], f"committed {position} past the unwritten dead letter at 50"
            assert bridge.alive(), f"bridge died:\n{bridge.log_path.read_text()[-3000:]}"
            time.sleep(0.25)
        assert BAD[0] in held, f"the finished prefix 0..49 should be committed: {sorted(set(held))}"
        failures_while_refused = len(failed_writes())
        assert failures_while_refused >= 2 * len(BAD), "each write is retried while refused"
        assert read_all(kafka_bootstrap, dlq) == []

        # Make the topic writable: the retried dead-letter writes now succeed and offsets catch up.
        resource = ConfigResource(
            ResourceType.TOPIC,
            dlq,
            incremental_configs=[
                ConfigEntry(
                    "max.message.bytes",
                    "1048576",
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        admin.incremental_alter_configs([resource])[resource].result(30)
        fixed_at = time.monotonic()
        wait_until(
            lambda: committed(kafka_bootstrap, group, topic) == ends,
            60,
            "committed offset to reach the end (200) once the dead-letter topic accepts writes",
            interval=0.25,
        )
        caught_up_s = time.monotonic() - fixed_at
        code = bridge.terminate(timeout=40)
        assert code == 0, f"exit code {code}:\n{bridge.log_path.read_text()[-3000:]}"
    finally:
        if bridge.alive():
            bridge.kill()
    elapsed = time.monotonic() - started

    produced = {m.offset(): (m.key(), m.value()) for m in read_all(kafka_bootstrap, topic)}
    assert len(produced) == RECORDS
    received = endpoint.received()
    by_record = Counter(coordinates(r.entry) for r in received)
    assert not [k for k, n in by_record.items() if n > 1], "a record was delivered twice"
    assert set(by_record) == good

    dead = read_all(kafka_bootstrap, dlq)
    dead_at: dict[int, dict[str, str]] = {}
    for msg in dead:
        h = dlq_headers(msg)
        assert (h["topic"], h["partition"]) == (topic, "0")
        offset = int(h["offset"])
        assert offset not in dead_at, f"offset {offset} dead-lettered twice"
        dead_at[offset] = h
        assert (msg.key(), msg.value()) == produced[offset], "dead letter keeps the original bytes"
        assert (h["stage"], h["code"]) == ("decode", "ValueNotJson"), h
        assert h["message"]
    assert sorted(dead_at) == list(BAD)
    lost = set(produced) - {o for (_, _, o) in by_record} - set(dead_at)
    assert not lost, f"records lost: {sorted(lost)}"

    # The run's counters, as the bridge logs them when it stops.
    stats = [e for e in bridge.log_events() if e.get("event") == "progress"][-1]
    assert stats["dead_lettered"] == len(BAD)
    assert stats["delivered"] == len(good)
    assert stats["dlq_write_failures"] >= failures_while_refused > 0
    failed_lines = failed_writes()
    assert len(failed_lines) == stats["dlq_write_failures"], "each failed write logged once"
    assert all(e["level"] == "error" and e["dlq_topic"] == dlq for e in failed_lines)
    assert {e["offset"] for e in failed_lines} == set(BAD)
    assert any("too large" in e["error"].lower() for e in failed_lines), failed_lines[0]
    print(
        f"\ndead-letter-unwritable: records={RECORDS} delivered={len(by_record)}"
        f" dead_lettered={len(dead_at)} dlq_write_failures={stats['dlq_write_failures']}"
        f" (before fix {failures_while_refused}) committed_while_refused={sorted(set(held))}"
        f" caught_up={caught_up_s:.1f}s time={elapsed:.1f}s"
    )
